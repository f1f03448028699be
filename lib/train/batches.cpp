#include "train/batches.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace ftl::train {

std::vector<int64_t> length_grouped_order(const std::vector<int64_t>& lengths, int64_t batch_size, at::Generator generator) {
    const auto n = static_cast<int64_t>(lengths.size());
    const int64_t mega = std::max<int64_t>(1, std::min<int64_t>(n / (batch_size * 4), 50));
    const at::Tensor perm = at::randperm(n, generator, at::TensorOptions().dtype(at::kLong));
    const int64_t* p = perm.data_ptr<int64_t>();
    std::vector<int64_t> order(p, p + n);
    const int64_t size = mega * batch_size;
    auto longer = [&](int64_t a, int64_t b) { return lengths[static_cast<size_t>(a)] > lengths[static_cast<size_t>(b)]; };
    size_t longest_start = 0;  // the first megabatch whose first (longest) row is the longest of all
    for (int64_t begin = 0; begin < n; begin += size) {
        const auto first = order.begin() + begin, last = order.begin() + std::min(n, begin + size);
        std::stable_sort(first, last, longer);
        if (longer(*first, order[longest_start])) longest_start = static_cast<size_t>(begin);
    }
    if (n > 0) std::swap(order[0], order[longest_start]);
    return order;
}

BatchPlan::BatchPlan(size_t rows, int per_device, int accumulation, int rank, int world_size, uint64_t seed, bool drop_last,
                     Sampling sampling, std::vector<int64_t> lengths)
    : rows_(rows), per_device_(per_device), accumulation_(accumulation), rank_(rank), world_size_(world_size),
      drop_last_(drop_last), sampling_(sampling), lengths_(std::move(lengths)), seed_(seed) {
    if (sampling == Sampling::kGroupByLength && lengths_.size() != rows)
        fail(ErrorKind::kInternal, "BatchPlan: group_by_length needs one length per row");
    if (per_device <= 0)
        fail(ErrorKind::kConfig, "--per_device_train_batch_size: must be positive (got " + std::to_string(per_device) + ")");
    if (accumulation <= 0)
        fail(ErrorKind::kConfig, "--gradient_accumulation_steps: must be positive (got " + std::to_string(accumulation) + ")");
    if (rows == 0) fail(ErrorKind::kConfig, "the training split has no rows");
    if (micro_batches_per_epoch() == 0)
        fail(ErrorKind::kConfig, "--dataloader_drop_last True: the " + std::to_string(rows) +
                                     " training rows make fewer full batches of --per_device_train_batch_size " +
                                     std::to_string(per_device) + " than there are ranks (" + std::to_string(world_size) +
                                     "), so no full batch is left to train on");
}

int64_t BatchPlan::micro_batches_per_epoch() const {
    return shard_count(static_cast<int64_t>(rows_), per_device_, world_size_, drop_last_);
}

void BatchPlan::start_epoch() {
    ++epoch_;
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed_ + static_cast<uint64_t>(epoch_));
    std::vector<int64_t> epoch_order;
    if (sampling_ == Sampling::kGroupByLength) {
        epoch_order = length_grouped_order(lengths_, int64_t{per_device_} * accumulation_, generator);
    } else {
        const auto rows = static_cast<int64_t>(rows_);
        const at::Tensor perm = sampling_ == Sampling::kRandom
                                    ? at::randperm(rows, generator, at::TensorOptions().dtype(at::kLong))
                                    : at::arange(rows, at::TensorOptions().dtype(at::kLong));
        epoch_order.assign(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + rows);
    }
    batches_ = shard_batches(epoch_order, per_device_, rank_, world_size_, drop_last_);
    cursor_ = 0;
}

std::vector<int64_t> BatchPlan::next_micro_batch() {
    if (epoch_ < 0 || cursor_ >= batches_.size()) start_epoch();
    return batches_[cursor_++];
}

std::vector<int64_t> row_lengths(const std::vector<data::Row>& rows) {
    std::vector<int64_t> lengths;
    lengths.reserve(rows.size());
    for (const data::Row& row : rows) lengths.push_back(static_cast<int64_t>(row.input_ids.size()));
    return lengths;
}

std::vector<int64_t> evaluation_order(const std::vector<int64_t>& lengths, int batch_size,
                                      std::optional<uint64_t> group_seed) {
    if (group_seed)
        return length_grouped_order(lengths, batch_size, at::make_generator<at::CPUGeneratorImpl>(*group_seed));
    std::vector<int64_t> order(lengths.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
    return order;
}

int64_t shard_count(int64_t rows, int batch_size, int world_size, bool drop_last) {
    const int64_t b = batch_size, world = world_size;
    const int64_t batches = drop_last ? rows / b : (rows + b - 1) / b;
    if (world == 1) return batches;
    return drop_last ? batches / world : (batches + world - 1) / world;
}

std::vector<std::vector<int64_t>> shard_batches(const std::vector<int64_t>& order, int batch_size, int rank,
                                                int world_size, bool drop_last) {
    const int64_t b = batch_size, world = world_size, rows = static_cast<int64_t>(order.size());
    const int64_t full = rows / b, batches = drop_last ? full : (rows + b - 1) / b;
    auto slice = [&](int64_t begin, int64_t end) {
        return std::vector<int64_t>(order.begin() + begin, order.begin() + std::min(rows, end));
    };
    auto batch_at = [&](int64_t g) { return slice(g * b, g * b + b); };
    std::vector<std::vector<int64_t>> mine;
    if (world == 1) {
        for (int64_t g = 0; g < batches; ++g) mine.push_back(batch_at(g));
        return mine;
    }
    const int64_t rounds = full / world;  // rounds of world full batches
    for (int64_t k = 0; k < rounds; ++k) mine.push_back(batch_at(k * world + rank));
    if (drop_last) return mine;
    // The rest: the remaining batches, the short one topped up and batches up to the round's end
    // made, from the start of the order.
    std::vector<int64_t> start = slice(0, world * b);
    while (static_cast<int64_t>(start.size()) < world * b) start.insert(start.end(), start.begin(), start.end());
    size_t cycle = 0;
    for (int64_t g = rounds * world; g < batches || g % world != 0; ++g) {
        std::vector<int64_t> batch = g < batches ? batch_at(g) : std::vector<int64_t>{};
        const size_t missing = static_cast<size_t>(b) - batch.size();
        batch.insert(batch.end(), start.begin() + static_cast<long>(cycle), start.begin() + static_cast<long>(cycle + missing));
        cycle += missing;
        if (g % world == rank) mine.push_back(std::move(batch));
    }
    return mine;
}

namespace {

// Host tensors bound for `device`: pinned when it is a GPU, so that the copy is asynchronous (a copy
// from pageable memory waits for all work queued on the stream before it).
at::TensorOptions staging_options(at::ScalarType type, const at::Device& device) {
    return at::TensorOptions().dtype(type).pinned_memory(device.is_cuda());
}

template <class T>
at::Tensor to_device(const std::vector<T>& values, at::ScalarType type, const at::Device& device) {
    at::Tensor host = at::empty({static_cast<int64_t>(values.size())}, staging_options(type, device));
    std::copy(values.begin(), values.end(), host.data_ptr<T>());
    return host.to(device, /*non_blocking=*/true);
}

}  // namespace

model::Batch collate(const std::vector<data::Row>& rows, const std::vector<int64_t>& indices, int32_t pad_id,
                     bool packed, const at::Device& device) {
    size_t length = 0;
    for (int64_t i : indices) length = std::max(length, rows[static_cast<size_t>(i)].input_ids.size());
    const int64_t b = static_cast<int64_t>(indices.size()), t = static_cast<int64_t>(length);
    const auto options = staging_options(at::kLong, device);
    at::Tensor ids = at::full({b, t}, pad_id, options), labels = at::full({b, t}, -100, options);
    at::Tensor mask = at::zeros({b, t}, options), positions = at::zeros({b, t}, options);
    auto ids_a = ids.accessor<int64_t, 2>(), labels_a = labels.accessor<int64_t, 2>();
    auto mask_a = mask.accessor<int64_t, 2>(), pos_a = positions.accessor<int64_t, 2>();
    for (int64_t r = 0; r < b; ++r) {
        const data::Row& row = rows[static_cast<size_t>(indices[static_cast<size_t>(r)])];
        for (size_t j = 0; j < row.input_ids.size(); ++j) {
            ids_a[r][static_cast<int64_t>(j)] = row.input_ids[j];
            labels_a[r][static_cast<int64_t>(j)] = row.labels[j];
            mask_a[r][static_cast<int64_t>(j)] = 1;
            pos_a[r][static_cast<int64_t>(j)] = row.position_ids[j];
        }
        // Padding continues the positions so a packed row's padding never looks like a new document
        // start that attends to real tokens; it is masked out anyway.
        for (int64_t j = static_cast<int64_t>(row.input_ids.size()); j < t; ++j)
            pos_a[r][j] = j == 0 ? 0 : pos_a[r][j - 1] + 1;
    }
    model::Batch batch;
    // The loss's targets: flattened position r*t+j predicts labels[r][j+1] when that counts.
    // The attention spans: a document starts where a row's positions restart at 0 (only a packed
    // row has more than one); the row's padding follows as one span.
    std::vector<int64_t> target_positions, target_ids;
    std::vector<int32_t> span_starts{0};
    auto end_span = [&](int64_t end) {
        batch.longest_span = std::max<int64_t>(batch.longest_span, end - span_starts.back());
        span_starts.push_back(static_cast<int32_t>(end));
    };
    for (int64_t r = 0; r < b; ++r) {
        const data::Row& row = rows[static_cast<size_t>(indices[static_cast<size_t>(r)])];
        for (size_t j = 1; j < row.labels.size(); ++j)
            if (row.labels[j] != -100) {
                target_positions.push_back(r * t + static_cast<int64_t>(j) - 1);
                target_ids.push_back(row.labels[j]);
            }
        const int64_t real = static_cast<int64_t>(row.input_ids.size());
        for (int64_t j = 1; j < real; ++j)
            if (packed && row.position_ids[static_cast<size_t>(j)] == 0) end_span(r * t + j);
        if (real > 0) end_span(r * t + real);
        if (real < t) end_span((r + 1) * t);
        batch.real_tokens += real;
    }
    if (static_cast<int64_t>(span_starts.back()) != b * t || b * t > INT32_MAX)
        fail(ErrorKind::kInternal, "collate: attention spans do not cover the batch's " + std::to_string(b * t) + " tokens");
    batch.padded = batch.real_tokens < b * t;
    batch.span_starts = to_device(span_starts, at::kInt, device);
    batch.target_positions = to_device(target_positions, at::kLong, device);
    batch.target_ids = to_device(target_ids, at::kLong, device);
    batch.host_input_ids = ids;
    batch.input_ids = ids.to(device, /*non_blocking=*/true);
    batch.labels = labels.to(device, /*non_blocking=*/true);
    batch.attention_mask = mask.to(device, /*non_blocking=*/true);
    batch.position_ids = positions.to(device, /*non_blocking=*/true);
    batch.packed = packed;
    return batch;
}

PaddedRows pad_rows(const std::vector<const std::vector<int32_t>*>& rows, int32_t pad_id, bool left) {
    size_t longest = 0;
    for (const auto* row : rows) longest = std::max(longest, row->size());
    const int64_t b = static_cast<int64_t>(rows.size()), l = static_cast<int64_t>(longest);
    at::Tensor ids = at::full({b, l}, pad_id, at::kLong), mask = at::zeros({b, l}, at::kLong);
    auto ids_a = ids.accessor<int64_t, 2>(), mask_a = mask.accessor<int64_t, 2>();
    for (int64_t r = 0; r < b; ++r) {
        const std::vector<int32_t>& row = *rows[static_cast<size_t>(r)];
        const int64_t offset = left ? l - static_cast<int64_t>(row.size()) : 0;
        for (size_t j = 0; j < row.size(); ++j) {
            ids_a[r][offset + static_cast<int64_t>(j)] = row[j];
            mask_a[r][offset + static_cast<int64_t>(j)] = 1;
        }
    }
    return {ids, mask};
}

at::Tensor clip_grad_norm(std::vector<at::Tensor>& grads, double max_norm) {
    at::NoGradGuard no_grad;
    if (grads.empty()) return at::zeros({});
    // As torch's clip_grad_norm_ with foreach: one multi-tensor norm kernel on a GPU (per tensor on
    // the CPU), the coefficient as a device tensor, one multi-tensor multiply.
    const at::Tensor total = at::linalg_vector_norm(at::stack(at::_foreach_norm(grads, 2.0)), 2.0);
    if (max_norm > 0) at::_foreach_mul_(grads, at::clamp_max(max_norm / (total + 1e-6), 1.0));
    return total;
}

}  // namespace ftl::train
