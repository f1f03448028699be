#include "zero/partitioned_weights.h"

#include <numeric>

#include <ATen/core/grad_mode.h>

#include "util/error.h"

namespace ftl::zero {

PartitionedWeights::PartitionedWeights(model::CausalLM& model, dist::Comm* comm, int rank, int world_size,
                                       at::ScalarType dtype, const at::Device& device, int64_t persistence_threshold)
    : weights_(model.weights()),
      tied_(model.weights().lm_head.is_same(model.weights().embed_tokens)),
      comm_(comm),
      rank_(rank),
      world_size_(world_size),
      persistence_threshold_(persistence_threshold) {
    const auto options = at::TensorOptions().dtype(dtype).device(device);
    add_part(kEmbeddings, {&weights_.embed_tokens}, options);
    for (size_t i = 0; i < weights_.layers.size(); ++i) {
        model::DecoderLayerWeights& l = weights_.layers[i];
        std::vector<at::Tensor*> slots{&l.input_norm, &l.post_attention_norm};
        for (model::Linear* linear : {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj}) {
            slots.push_back(&linear->weight);
            slots.push_back(&linear->bias);
        }
        add_part(static_cast<int>(i), slots, options);
    }
    add_part(kFinalNorm, {&weights_.final_norm}, options);
    if (tied_) weights_.lm_head = at::Tensor();  // shared with embed_tokens: gathered with it
    else add_part(kHead, {&weights_.lm_head}, options);
}

void PartitionedWeights::add_part(int id, const std::vector<at::Tensor*>& candidates, const at::TensorOptions& options) {
    std::vector<at::Tensor*> slots;
    std::vector<at::Tensor> tensors;
    at::NoGradGuard no_grad;
    for (at::Tensor* slot : candidates) {
        if (!slot->defined() || slot->requires_grad()) continue;
        if (slot->numel() < persistence_threshold_) {  // small: whole on every rank, never gathered
            *slot = slot->to(options).contiguous();
            persistent_bytes_ += slot->numel() * slot->element_size();
            continue;
        }
        slots.push_back(slot);
        tensors.push_back(*slot);
    }
    if (slots.empty()) return;
    std::vector<int64_t> numels;
    std::vector<std::vector<int64_t>> shapes;
    for (const auto& t : tensors) {
        numels.push_back(t.numel());
        shapes.push_back(t.sizes().vec());
    }
    const int64_t total = std::accumulate(numels.begin(), numels.end(), int64_t{0});
    if (total < world_size_) {
        const std::string name = id == kEmbeddings ? "embeddings"
                                 : id == kHead     ? "lm_head"
                                 : id == kFinalNorm ? "final norm"
                                                   : "decoder layer " + std::to_string(id);
        fail(ErrorKind::kConfig, "ZeRO stage 3: the part '" + name + "' has " + std::to_string(total) +
                                     " frozen parameters, fewer than the " + std::to_string(world_size_) +
                                     " ranks, so some ranks would hold none of it; run at most " + std::to_string(total) +
                                     " ranks, or zero_optimization.stage 2 (frozen weights whole on every rank)");
    }
    Part part{slots, shapes, FlatPartition(numels, rank_, world_size_), {}};
    // Only the elements of [begin, end) are read: each tensor's overlap with this rank's slice.
    part.slice = at::zeros({part.layout.shard()}, options);
    const int64_t begin = part.layout.shard_begin(), end = begin + part.layout.shard();
    for (size_t i = 0; i < tensors.size(); ++i) {
        const int64_t first = std::max(begin, part.layout.offset(i));
        const int64_t last = std::min(end, part.layout.offset(i) + part.layout.numel(i));
        if (first >= last) continue;
        part.slice.narrow(0, first - begin, last - first)
            .copy_(tensors[i].reshape({-1}).narrow(0, first - part.layout.offset(i), last - first));
    }
    for (at::Tensor* slot : slots) *slot = at::Tensor();
    parts_.emplace(id, std::move(part));
}

void PartitionedWeights::acquire(int id) {
    if (tied_ && id == kHead) acquire(kEmbeddings);
    const auto it = parts_.find(id);
    if (it != parts_.end()) {
        Part& part = it->second;
        at::Tensor full = at::empty({part.layout.padded()}, part.slice.options());
        if (comm_) comm_->all_gather(full, part.slice);
        else full.copy_(part.slice);
        for (size_t i = 0; i < part.slots.size(); ++i)
            *part.slots[i] = full.narrow(0, part.layout.offset(i), part.layout.numel(i)).view(part.shapes[i]);
    }
    if (tied_ && id == kHead) weights_.lm_head = weights_.embed_tokens;
}

void PartitionedWeights::release(int id) {
    const auto it = parts_.find(id);
    if (it != parts_.end())
        for (at::Tensor* slot : it->second.slots) *slot = at::Tensor();
    if (tied_ && id == kHead) {
        weights_.lm_head = at::Tensor();
        release(kEmbeddings);
    }
}

int64_t PartitionedWeights::slice_bytes() const {
    int64_t bytes = 0;
    for (const auto& [id, part] : parts_) bytes += part.slice.numel() * part.slice.element_size();
    return bytes;
}

int64_t PartitionedWeights::full_bytes() const {
    int64_t bytes = 0;
    for (const auto& [id, part] : parts_) bytes += part.layout.total() * part.slice.element_size();
    return bytes;
}

int64_t PartitionedWeights::largest_part_bytes() const {
    int64_t bytes = 0;
    for (const auto& [id, part] : parts_) bytes = std::max(bytes, part.layout.padded() * part.slice.element_size());
    return bytes;
}

}  // namespace ftl::zero
