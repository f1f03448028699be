// What the decoder consumes, and the attention pattern a batch implies.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace ftl::model {

// One micro-batch, all tensors [B, T] on the model's device.
//  - input_ids: int64 token ids.
//  - attention_mask: optional, 1 = real token, 0 = padding (keys that nobody attends to).
//  - position_ids: optional int64; default 0..T-1 per row. A packed row (several documents back to
//    back) gives each document positions restarting at 0: a 0 after the first token starts a new
//    document, and no token attends across a document border (HF's DataCollatorWithFlattening
//    convention).
//  - labels: optional int64 next-token targets before the shift; -100 = ignored.
struct Batch {
    at::Tensor input_ids;
    at::Tensor attention_mask;
    at::Tensor position_ids;
    at::Tensor labels;
    bool packed = false;  // true: documents are delimited by position_ids restarting at 0
    // Optional, made on the host (train::collate) so that a step reads nothing back from the
    // device (each read waits for all work queued before):
    //  - target_positions [N] int64: the positions of the flattened [B*T] rows whose next-token
    //    label counts, and target_ids [N] int64 those labels (what the loss gathers);
    //  - padded: whether any position is padding; real_tokens: how many are not;
    //  - span_starts [spans + 1] int32 and longest_span: the flattened [B*T] tokens cut into the
    //    runs that attend only within themselves, causally: each document of a row, then the row's
    //    padding as one run (whose outputs nothing uses). Variable-length flash attention takes
    //    them instead of a [B, 1, T, T] mask; on the device.
    //  - host_input_ids: input_ids in host memory, where a table of embeddings kept on the host
    //    looks them up (CausalLM::embed);
    at::Tensor target_positions, target_ids;
    at::Tensor host_input_ids;
    std::optional<bool> padded;
    int64_t real_tokens = 0;
    at::Tensor span_starts;
    int64_t longest_span = 0;
};

// Whether any position is padding: batch.padded when collate said so on the host, else read from
// the attention mask (a read that waits for the device).
bool has_padding(const Batch& batch);

// The positions to use: batch.position_ids, or 0..T-1 broadcast to [B, T].
at::Tensor positions_of(const Batch& batch);

// Boolean attention mask [B, 1, T, T] (true = may attend), or an undefined tensor when plain
// causal attention is exact (no padding, no packing, window longer than T) so the caller can use
// the fused causal kernels. Rules: key k is visible to query q when k <= q, both are in the same
// document, the key is not padding, and q - k < window (when a window is given). A query that
// would see nothing (left padding) sees itself, so its row stays finite (its output is unused).
at::Tensor attention_mask_for(const Batch& batch, std::optional<int64_t> window);

}  // namespace ftl::model
