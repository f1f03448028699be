#include "model/batch.h"

namespace ftl::model {

at::Tensor positions_of(const Batch& batch) {
    if (batch.position_ids.defined()) return batch.position_ids;
    const int64_t rows = batch.input_ids.size(0), length = batch.input_ids.size(1);
    return at::arange(length, batch.input_ids.options().dtype(at::kLong)).unsqueeze(0).expand({rows, length});
}

bool has_padding(const Batch& batch) {
    if (batch.padded) return *batch.padded;
    return batch.attention_mask.defined() && !batch.attention_mask.all().item<bool>();
}

at::Tensor attention_mask_for(const Batch& batch, std::optional<int64_t> window) {
    const int64_t length = batch.input_ids.size(1);
    const bool padded = has_padding(batch);
    const bool windowed = window && *window < length;
    if (!padded && !batch.packed && !windowed) return {};

    auto long_options = batch.input_ids.options().dtype(at::kLong);
    at::Tensor index = at::arange(length, long_options);
    at::Tensor query = index.view({1, length, 1});
    at::Tensor key = index.view({1, 1, length});
    at::Tensor mask = (key <= query);  // [1, T, T]
    if (windowed) mask = mask.logical_and(query - key < *window);
    if (batch.packed) {
        // Document index = running count of position resets; equal indices share a document.
        at::Tensor starts = (positions_of(batch) == 0).to(at::kLong);
        at::Tensor document = starts.cumsum(1);  // [B, T]
        mask = mask.logical_and(document.unsqueeze(2) == document.unsqueeze(1));
    }
    if (padded) mask = mask.logical_and(batch.attention_mask.to(at::kBool).unsqueeze(1));
    // A query with no visible key (a left-padding position) would give NaN rows that poison the
    // backward pass through 0 * NaN; let it see itself. Its output is never used.
    at::Tensor blind = mask.logical_not().all(-1, /*keepdim=*/true);
    mask = mask.logical_or(blind.logical_and(query == key));
    return mask.unsqueeze(1);  // [B|1, 1, T, T]
}

}  // namespace ftl::model
