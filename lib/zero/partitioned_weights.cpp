#include "zero/partitioned_weights.h"

#include <algorithm>
#include <numeric>

#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include "util/error.h"

namespace ftl::zero {
namespace {

// The backward of a trainable part's gather: the gradient of the gathered [padded] vector, summed
// over ranks, reduce-scattered into this rank's [shard] slice.
struct GatherBackward : public torch::autograd::Node {
    dist::Comm* comm = nullptr;
    int64_t shard = 0;
    at::Device slice_device = at::kCPU;  // where the slice lives (host memory under offload_param)

    torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
        const at::Tensor& full = grads.at(0);
        if (!full.defined()) return {at::Tensor()};
        at::Tensor slice = at::empty({shard}, full.options());
        if (comm) comm->reduce_scatter(slice, full.contiguous(), dist::ReduceOp::kSum);
        else slice.copy_(full);
        return {slice.to(slice_device)};
    }
};

}  // namespace

// Trainable partitions as zero::Sharding sees them: this rank's slices of every part, in forward
// order, one after another.
class PartitionedWeights::TrainableSlices : public Sharding {
public:
    explicit TrainableSlices(PartitionedWeights& owner) : owner_(owner) {
        for (int id : owner.order_) {
            const auto it = owner.parts_.find(id);
            if (it == owner.parts_.end()) continue;
            for (Group& group : it->second) {
                groups_.push_back(&group);
                local_numel_ += group.layout.shard();
            }
        }
    }
    int64_t local_numel() const override { return local_numel_; }
    // Where the slices live: the device, or host memory under offload_param (the update runs there).
    at::TensorOptions options() const override {
        return at::TensorOptions().dtype(at::kFloat).device(owner_.slice_options_.device());
    }
    at::Tensor local_parameters() const override {
        std::vector<at::Tensor> slices;
        for (const Group* group : groups_) slices.push_back(group->slice.detach().to(at::kFloat));
        return at::cat(slices);
    }
    at::Tensor reduced_gradients() override {  // reduced already, by GatherBackward
        std::vector<at::Tensor> grads;
        for (const Group* group : groups_) {
            const at::Tensor& grad = group->slice.grad();
            grads.push_back(grad.defined() ? grad.to(at::kFloat) : at::zeros({group->layout.shard()}, options()));
        }
        return at::cat(grads);
    }
    void write_parameters(const at::Tensor& updated) override {
        owner_.drop_prefetch();  // gathered from the slices before this update
        at::NoGradGuard no_grad;
        int64_t offset = 0;
        for (Group* group : groups_) {
            group->slice.detach().copy_(updated.narrow(0, offset, group->layout.shard()));
            offset += group->layout.shard();
        }
    }
    void zero_grad() override {
        for (Group* group : groups_)
            if (group->slice.grad().defined()) group->slice.mutable_grad() = at::Tensor();
    }
    NamedTensors whole(const at::Tensor& local) const override {
        NamedTensors out;
        int64_t offset = 0;
        for (const Group* group : groups_) {
            const at::Tensor full = gather_segment(owner_.comm_, group->layout, local, offset, options().device(owner_.device_));
            offset += group->layout.shard();
            if (owner_.rank_ != 0) continue;
            for (size_t i = 0; i < group->names.size(); ++i) {
                at::Tensor t = at::empty(group->shapes[i], options());
                group->layout.unflatten_into(full, i, t);
                out.emplace_back(group->names[i], t);
            }
        }
        return out;
    }
    at::Tensor local_of(const std::map<std::string, at::Tensor>& by_name, const std::string& prefix,
                        const std::string& source) const override {
        std::vector<at::Tensor> slices;
        for (const Group* group : groups_)
            slices.push_back(group->layout.local_of(find_whole(by_name, prefix, group->names, group->shapes, source), options()));
        return at::cat(slices);
    }

    std::vector<std::pair<int64_t, int64_t>> local_ranges(const std::function<bool(const std::string&)>& selected) const override {
        std::vector<std::pair<int64_t, int64_t>> ranges;
        int64_t offset = 0;
        for (const Group* group : groups_) {
            std::vector<bool> picked;
            for (const std::string& name : group->names) picked.push_back(selected(name));
            for (const auto& [begin, end] : group->layout.shard_ranges(picked)) ranges.emplace_back(offset + begin, offset + end);
            offset += group->layout.shard();
        }
        return ranges;
    }

private:
    PartitionedWeights& owner_;
    std::vector<Group*> groups_;
    int64_t local_numel_ = 0;
};

PartitionedWeights::PartitionedWeights(model::CausalLM& model, dist::Comm* comm, int rank, int world_size,
                                       const SliceTypes& types, const at::Device& device, int64_t persistence_threshold,
                                       const std::function<void(int layer)>& prepare_layer,
                                       const std::optional<ParameterOffload>& offload, Partitioned which)
    : decoder_(&model.weights()),
      tied_(model.weights().lm_head.is_same(model.weights().embed_tokens)),
      comm_(comm),
      device_(device),
      rank_(rank),
      world_size_(world_size),
      persistence_threshold_(which == Partitioned::kTrainable ? 0 : persistence_threshold),
      which_(which) {
    if (which == Partitioned::kTrainable && ((offload && offload->nvme) || types.base != at::kFloat || types.linears || types.head))
        fail(ErrorKind::kInternal, "PartitionedWeights: trainable partitions are fp32, on the device or in host memory");
    const at::ScalarType dtype = types.base;
    const auto options = at::TensorOptions().dtype(dtype).device(device);
    std::vector<at::Tensor> frozen;
    for (const auto& [name, t] : model.named_weights()) {
        if (t.defined() && !t.requires_grad()) frozen.push_back(t);
        if (t.defined()) names_.emplace(t.unsafeGetTensorImpl(), name);
    }
    place_slices(offload, frozen, dtype, 2 * decoder_->layers.size() + 4);
    add_part(kEmbeddings, model::part_name(kEmbeddings), {{&decoder_->embed_tokens, {}}}, options);
    for (size_t i = 0; i < decoder_->layers.size(); ++i) {
        if (prepare_layer) prepare_layer(static_cast<int>(i));
        model::DecoderLayerWeights& l = decoder_->layers[i];
        std::vector<Slot> slots;
        for (auto& [path, norm] : l.norms()) slots.push_back({norm, {}});
        for (auto& [path, linear] : l.linears()) {
            if (linear->int8)
                fail(ErrorKind::kConfig, "model.layers." + std::to_string(i) + "." + path +
                                             ": 8-bit (LLM.int8) weights under ZeRO stage 3: their per-row scales cannot be "
                                             "partitioned with them; use ZeRO stage 0-2, or a 4-bit model with a 16-bit "
                                             "--bnb_4bit_quant_storage_dtype");
            slots.push_back({&linear->weight, linear->four_bit ? linear->weight.scalar_type() : types.linears});
            slots.push_back({&linear->bias, types.linears});
        }
        add_part(static_cast<int>(i), model::part_name(static_cast<int>(i)), slots, options);
    }
    add_part(kFinalNorm, model::part_name(kFinalNorm), {{&decoder_->final_norm, {}}}, options);
    if (tied_) decoder_->lm_head = at::Tensor();  // shared with embed_tokens: gathered with it
    else add_part(kHead, model::part_name(kHead), {{&decoder_->lm_head, types.head}}, options);
    names_.clear();
    if (which == Partitioned::kTrainable) trainable_ = std::make_unique<TrainableSlices>(*this);
}

PartitionedWeights::~PartitionedWeights() {
    try {
        drop_prefetch();
    } catch (const std::exception&) {  // the run is ending with the error that mattered
    }
}

Sharding* PartitionedWeights::sharding() { return trainable_.get(); }

PartitionedWeights::PartitionedWeights(const std::vector<model::WeightPart>& parts, dist::Comm* comm, int rank,
                                       int world_size, at::ScalarType dtype, const at::Device& device,
                                       int64_t persistence_threshold, const std::optional<ParameterOffload>& offload)
    : comm_(comm), device_(device), rank_(rank), world_size_(world_size), persistence_threshold_(persistence_threshold) {
    std::vector<at::Tensor> frozen;
    for (const auto& part : parts)
        for (const Slot& slot : part.slots)
            if (slot.tensor->defined() && !slot.tensor->requires_grad()) frozen.push_back(*slot.tensor);
    place_slices(offload, frozen, dtype, 2 * parts.size());
    const auto options = at::TensorOptions().dtype(dtype).device(device);
    for (const auto& part : parts) add_part(part.id, part.name, part.slots, options);
}

void PartitionedWeights::place_slices(const std::optional<ParameterOffload>& offload, const std::vector<at::Tensor>& frozen,
                                      at::ScalarType dtype, size_t parts) {
    slices_on_host_ = offload.has_value();
    if (offload) {
        slice_options_ = at::TensorOptions().device(at::kCPU).pinned_memory(device_.is_cuda() && !offload->nvme);
        transfer_ = std::make_unique<TransferStream>(device_);
    } else {
        slice_options_ = at::TensorOptions().device(device_);
    }
    if (!offload || !offload->nvme) return;
    nvme_ = true;
    host_budget_ = offload->max_in_cpu;
    // At most: every frozen tensor's share at the wider of its and the target's element size,
    // plus a page of padding per slice (parts x dtypes). No swap when max_in_cpu holds it all.
    uint64_t capacity = 0;
    int64_t share = 0;
    for (const at::Tensor& t : frozen) {
        share += (t.numel() + world_size_ - 1) / world_size_;
        capacity += static_cast<uint64_t>((t.numel() + world_size_ - 1) / world_size_) *
                    std::max<uint64_t>(t.element_size(), c10::elementSize(dtype));
    }
    if (share <= host_budget_) return;
    swap_ = std::make_unique<SliceSwap>(offload->nvme_path, capacity + parts * io::kDirectAlignment, offload->aio, rank_);
}

void PartitionedWeights::add_part(int id, const std::string& name, const std::vector<Slot>& candidates,
                                  const at::TensorOptions& options) {
    order_.push_back(id);
    std::map<at::ScalarType, std::pair<std::vector<at::Tensor*>, std::vector<at::Tensor>>> by_dtype;
    at::NoGradGuard no_grad;
    for (const Slot& candidate : candidates) {
        at::Tensor* slot = candidate.tensor;
        if (!slot->defined() || slot->requires_grad() != (which_ == Partitioned::kTrainable)) continue;
        const at::TensorOptions target = candidate.dtype ? options.dtype(*candidate.dtype) : options;
        if (slot->numel() < persistence_threshold_) {  // small: whole on every rank, never gathered
            *slot = slot->to(target).contiguous();
            persistent_bytes_ += slot->numel() * slot->element_size();
            continue;
        }
        auto& [slots, tensors] = by_dtype[c10::typeMetaToScalarType(target.dtype())];
        slots.push_back(slot);
        tensors.push_back(slot->detach());
    }
    std::vector<Group> groups;
    for (auto& [dtype, entry] : by_dtype) {
        auto& [slots, tensors] = entry;
        std::vector<int64_t> numels;
        std::vector<std::vector<int64_t>> shapes;
        for (const auto& t : tensors) {
            numels.push_back(t.numel());
            shapes.push_back(t.sizes().vec());
        }
        const int64_t total = std::accumulate(numels.begin(), numels.end(), int64_t{0});
        if (total < world_size_)
            fail(ErrorKind::kConfig, "ZeRO stage 3: " + name + " has " + std::to_string(total) +
                                         (which_ == Partitioned::kTrainable ? " parameters" : " frozen parameters") +
                                         (by_dtype.size() > 1 ? std::string(" stored as ") + c10::toString(dtype) : "") +
                                         ", fewer than the " +
                                         std::to_string(world_size_) + " ranks, so some ranks would hold none of it; run at most " +
                                         std::to_string(total) + " ranks, or zero_optimization.stage 2 (frozen weights whole on every rank)");
        Group group{slots, shapes, FlatPartition(numels, rank_, world_size_), dtype, {}, false, 0, {}};
        group.slice = group.layout.local_of(tensors, slice_options_.dtype(dtype));
        if (which_ == Partitioned::kTrainable) {
            group.slice.requires_grad_(true);
            for (const at::Tensor* slot : slots) group.names.push_back(names_.at(slot->unsafeGetTensorImpl()));
        }
        for (at::Tensor* slot : slots) *slot = at::Tensor();
        if (swap_ && group.layout.shard() > host_budget_) {
            group.swapped = swap_->store(group.slice);
            group.slice = at::Tensor();
            group.on_disk = true;
        } else if (nvme_) {
            host_budget_ -= group.layout.shard();
            kept_in_host_ += group.layout.shard();
        }
        groups.push_back(std::move(group));
    }
    if (!groups.empty()) parts_.emplace(id, std::move(groups));
}

PartitionedWeights::Gather PartitionedWeights::start_gather(int id, bool wait) {
    Gather gather;
    gather.part = id;
    const std::vector<Group>& groups = parts_.at(id);
    const std::vector<size_t> indices = disk_indices(groups);
    const std::vector<at::Tensor> swapped_in = indices.empty() ? std::vector<at::Tensor>() : swap_->load(indices);
    size_t next_swapped = 0;
    at::NoGradGuard no_grad;
    auto enqueue = [&] {
        for (size_t g = 0; g < groups.size(); ++g) {
            const Group& group = groups[g];
            const at::Tensor slice = group.on_disk ? swapped_in.at(next_swapped++) : group.slice.detach();
            const at::Tensor local = slice.device() == device_ ? slice : slice.to(device_, /*non_blocking=*/true);
            at::Tensor full;
            if (!comm_ && !local.is_same(slice)) full = local;  // one rank: the upload is the whole part
            else full = at::empty({group.layout.padded()}, at::TensorOptions().dtype(group.dtype).device(device_));
            if (!comm_) {
                if (!full.is_same(local)) full.copy_(local, /*non_blocking=*/true);
            } else if (wait) comm_->all_gather(full, local);
            else gather.pending.push_back(comm_->start_all_gather(full, local));
            gather.locals.push_back(local);
            gather.fulls.push_back(full);
        }
    };
    // Ahead of use, offloaded slices upload beside the computation; a gather in use is enqueued
    // where it is used.
    if (!wait && transfer_) gather.uploaded = transfer_->run(enqueue);
    else enqueue();
    return gather;
}

void PartitionedWeights::drop_prefetch() {
    if (!ahead_) return;
    for (auto& pending : ahead_->pending) pending->wait();  // every rank completes it, used or not
    ahead_.reset();
    ++prefetch_count_.dropped;
}

void PartitionedWeights::fill_part(int id) {
    const auto it = parts_.find(id);
    if (it == parts_.end()) return;
    Gather gather;
    ++prefetch_count_.gathers;
    if (ahead_ && ahead_->part == id) {
        for (auto& pending : ahead_->pending) pending->wait();
        if (transfer_) transfer_->wait(ahead_->uploaded, ahead_->fulls);
        gather = std::move(*ahead_);
        ahead_.reset();
        ++prefetch_count_.ahead;
    } else {
        drop_prefetch();
        gather = start_gather(id, /*wait=*/true);
    }
    for (size_t g = 0; g < it->second.size(); ++g) {
        Group& group = it->second[g];
        at::Tensor& full = gather.fulls[g];
        if (group.slice.defined() && group.slice.requires_grad() && at::GradMode::is_enabled()) {
            auto node = std::shared_ptr<GatherBackward>(new GatherBackward(), torch::autograd::deleteNode);
            node->comm = comm_;
            node->shard = group.layout.shard();
            node->slice_device = group.slice.device();
            node->set_next_edges(torch::autograd::collect_next_edges(group.slice));
            torch::autograd::create_gradient_edge(full, node);
        }
        for (size_t i = 0; i < group.slots.size(); ++i)
            *group.slots[i] = full.narrow(0, group.layout.offset(i), group.layout.numel(i)).view(group.shapes[i]);
    }
}

int64_t PartitionedWeights::part_numel(int id) const {
    const auto it = parts_.find(id);
    int64_t numel = 0;
    if (it != parts_.end())
        for (const Group& group : it->second) numel += group.layout.total();
    return numel;
}

void PartitionedWeights::acquire(int id) {
    const int gathered = stored_as(id);
    fill_part(gathered);
    if (tied_ && id == kHead) decoder_->lm_head = decoder_->embed_tokens;
    // Look ahead to the part expected next: with offload_param nvme, read its slices from disk;
    // with prefetch, start its gather so that it runs while this part computes.
    if (!decoder_ && previous_ && before_previous_) successor_[{*before_previous_, *previous_}] = id;
    const std::optional<int> next = predicted_after(id);
    before_previous_ = previous_;
    previous_ = id;
    last_acquired_ = id;
    if (!next) return;
    const int next_gathered = stored_as(*next);
    const auto found = parts_.find(next_gathered);
    if (found == parts_.end() || next_gathered == gathered) return;
    const std::vector<size_t> on_disk = disk_indices(found->second);
    if (!on_disk.empty()) {
        swap_->prefetch(on_disk);
    } else if (prefetch_ && (comm_ || transfer_) && !ahead_ &&
               part_numel(gathered) + part_numel(next_gathered) <= max_live_parameters_) {
        ahead_ = start_gather(next_gathered, /*wait=*/false);
    }
}

std::string PartitionedWeights::describe_prefetch() const {
    const PrefetchCount& count = prefetch_count_;
    return "ZeRO-3 gathers: " + std::to_string(count.gathers) + ", of which " + std::to_string(count.ahead) +
           " were started ahead of their use (prefetch) and " + std::to_string(count.dropped) + " started ahead were not used";
}

void PartitionedWeights::enable_prefetch(int64_t max_live_parameters) {
    prefetch_ = true;
    max_live_parameters_ = max_live_parameters;
}

std::optional<int> PartitionedWeights::predicted_after(int part) const {
    if (!decoder_) {
        if (previous_)
            if (const auto known = successor_.find({*previous_, part}); known != successor_.end()) return known->second;
        // Not seen yet: the list order; in backward (the part after this one came last) the one before.
        const auto at = std::find(order_.begin(), order_.end(), part);
        if (at == order_.end()) return std::nullopt;
        const bool backward = at + 1 != order_.end() && *(at + 1) == last_acquired_;
        if (backward) return at == order_.begin() ? std::nullopt : std::optional<int>(*(at - 1));
        return at + 1 == order_.end() ? std::nullopt : std::optional<int>(*(at + 1));
    }
    const int layers = static_cast<int>(decoder_->layers.size());
    if (part == kEmbeddings) return layers > 0 ? 0 : kFinalNorm;
    if (part == kFinalNorm) return kHead;
    if (part == kHead) {  // in training backward starts at the top layer; else the next pass starts
        if (!at::GradMode::is_enabled()) return kEmbeddings;
        return layers > 0 ? std::optional<int>(layers - 1) : std::nullopt;
    }
    const bool backward = last_acquired_ == part + 1 || last_acquired_ == kHead;
    if (backward) return part > 0 ? std::optional<int>(part - 1) : std::nullopt;
    return part + 1 < layers ? part + 1 : kFinalNorm;
}

std::vector<size_t> PartitionedWeights::disk_indices(const std::vector<Group>& groups) const {
    std::vector<size_t> out;
    for (const Group& group : groups)
        if (group.on_disk) out.push_back(group.swapped);
    return out;
}

std::string PartitionedWeights::slice_placement() const {
    const std::string kept = std::to_string(kept_in_host_) + " elements";
    if (swap_)
        return kept_in_host_ > 0 ? "host memory for " + kept + " (offload_param.max_in_cpu) and " + swap_->describe() +
                                       " for the rest"
                                 : swap_->describe();
    if (nvme_) return "host memory (all " + kept + " within offload_param.max_in_cpu; nothing on NVMe)";
    return slices_on_host_ ? (device_.is_cuda() ? "host memory (pinned)" : "host memory") : "device memory";
}

void PartitionedWeights::release(int id) {
    const auto it = parts_.find(id);
    if (it != parts_.end())
        for (Group& group : it->second)
            for (at::Tensor* slot : group.slots) *slot = at::Tensor();
    if (tied_ && id == kHead) {
        decoder_->lm_head = at::Tensor();
        release(kEmbeddings);
    }
}

std::vector<at::Tensor> PartitionedWeights::gradient_sources(int id) const {
    std::vector<at::Tensor> out;
    if (which_ != Partitioned::kTrainable) return out;
    const auto it = parts_.find(stored_as(id));
    if (it != parts_.end())
        for (const Group& group : it->second) out.push_back(group.slice);
    return out;
}

bool PartitionedWeights::gathers(int id) const {
    if (!comm_) return false;
    return parts_.count(stored_as(id)) > 0;
}

int64_t PartitionedWeights::slice_bytes() const {
    int64_t bytes = 0;
    for (const auto& [id, groups] : parts_)
        for (const Group& group : groups) bytes += group.layout.shard() * static_cast<int64_t>(c10::elementSize(group.dtype));
    return bytes;
}

int64_t PartitionedWeights::full_bytes() const {
    int64_t bytes = 0;
    for (const auto& [id, groups] : parts_)
        for (const Group& group : groups) bytes += group.layout.total() * static_cast<int64_t>(c10::elementSize(group.dtype));
    return bytes;
}

int64_t PartitionedWeights::largest_part_bytes() const {
    int64_t largest = 0;
    for (const auto& [id, groups] : parts_) {
        int64_t bytes = 0;
        for (const Group& group : groups) bytes += group.layout.padded() * static_cast<int64_t>(c10::elementSize(group.dtype));
        largest = std::max(largest, bytes);
    }
    return largest;
}

}  // namespace ftl::zero
