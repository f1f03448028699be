#include "train/token_metrics.h"

namespace ftl::train {

void TokenMetrics::add(const at::Tensor& token_stats, int64_t targets, int64_t real_tokens) {
    const at::Tensor count = at::full({1}, static_cast<double>(targets), token_stats.options().dtype(at::kDouble));
    micro_batches_.push_back(at::cat({token_stats.detach().to(at::kDouble), count}));
    pending_tokens_ += real_tokens;
}

std::optional<TokenMetrics::Logged> TokenMetrics::take(dist::Comm* comm) {
    if (micro_batches_.empty()) return std::nullopt;
    const int64_t count = static_cast<int64_t>(micro_batches_.size());
    // [micro-batches x 3 sums, this rank's pending tokens] in one collective.
    at::Tensor sums = at::cat({at::stack(micro_batches_).cpu().reshape({-1}),
                               at::full({1}, static_cast<double>(pending_tokens_), at::kDouble)});
    micro_batches_.clear();
    pending_tokens_ = 0;
    if (comm) comm->all_reduce(sums, dist::ReduceOp::kSum);
    const auto values = sums.accessor<double, 1>();
    Logged out;
    for (int64_t m = 0; m < count; ++m) {
        const double targets = values[3 * m + 2];  // TRL: 0.0 for a micro-batch without targets
        out.entropy += targets > 0 ? values[3 * m] / targets : 0.0;
        out.mean_token_accuracy += targets > 0 ? values[3 * m + 1] / targets : 0.0;
    }
    out.entropy /= static_cast<double>(count);
    out.mean_token_accuracy /= static_cast<double>(count);
    num_tokens_ += static_cast<int64_t>(values[3 * count]);
    out.num_tokens = num_tokens_;
    return out;
}

int64_t TokenMetrics::num_tokens(dist::Comm* comm) const {
    at::Tensor pending = at::full({1}, static_cast<double>(pending_tokens_), at::kDouble);
    if (comm) comm->all_reduce(pending, dist::ReduceOp::kSum);
    return num_tokens_ + static_cast<int64_t>(pending.item<double>());
}

}  // namespace ftl::train
