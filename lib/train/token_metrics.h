// TRL's SFTTrainer token metrics, logged with the loss: `entropy` (of the predicted distribution
// at each target position), `mean_token_accuracy` (targets that are its argmax) and `num_tokens`
// (real input tokens trained on so far, all ranks). SFTTrainer.compute_loss gathers each
// micro-batch's sums over the ranks and appends sum / targets; the log averages those per
// micro-batch values over the logging interval. Here each micro-batch's sums stay on the device
// and are reduced over the ranks only when a step logs (one collective, no wait within a step).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

#include "dist/comm.h"

namespace ftl::train {

class TokenMetrics {
public:
    // One micro-batch on this rank: model::LossResult::token_stats [2] (entropy sum, argmax
    // hits), its counted targets and its real (non-padding) input tokens.
    void add(const at::Tensor& token_stats, int64_t targets, int64_t real_tokens);

    struct Logged {
        double entropy = 0.0, mean_token_accuracy = 0.0;
        int64_t num_tokens = 0;
    };
    // Collective (every rank calls it at the same logging step): the interval's metrics, the
    // interval emptied; nullopt when no micro-batch was added since the last call.
    std::optional<Logged> take(dist::Comm* comm);
    // Collective: the real input tokens of all ranks so far (TRL's num_tokens, as an evaluation logs it).
    int64_t num_tokens(dist::Comm* comm) const;

private:
    std::vector<at::Tensor> micro_batches_;  // [3] fp64 each: entropy sum, hits, targets
    int64_t pending_tokens_ = 0;             // this rank's real tokens not yet reduced
    int64_t num_tokens_ = 0;                 // all ranks' tokens reduced so far
};

}  // namespace ftl::train
