// Evaluation: the next-token loss over a split as TRL's SFTTrainer reports it (eval_loss: the
// mean over rows of their batch's loss, each batch's loss its mean over that batch's own targets,
// plus a MoE model's weighted load-balancing loss; batches as shard_batches deals them), and its
// perplexity exp(loss). `progress` hears where each forward is (model::ForwardOptions::progress).
#pragma once

#include <optional>
#include <vector>

#include "data/examples.h"
#include "model/decoder.h"
#include "model/loss.h"
#include "config/run_config.h"
#include "train/rank_context.h"

namespace ftl::train {

struct EvalResult {
    double loss = 0.0;
    double perplexity = 0.0;
    int64_t tokens = 0;  // the split's target tokens
    // TRL's eval_entropy and eval_mean_token_accuracy: per step, over the targets of all ranks'
    // batches (as accelerate's gather_for_metrics keeps them), then averaged over the steps.
    double entropy = 0.0, mean_token_accuracy = 0.0;
};

// How the Trainer's evaluation DataLoader batches a split: --per_device_eval_batch_size rows a
// batch; with `group_by_length_seed` the rows in train::evaluation_order's length-grouped order
// (--train_sampling_strategy group_by_length; the seed is --data_seed, else --seed), else in order;
// `drop_last` (--dataloader_drop_last, which the Trainer applies to evaluation too) leaves out the
// short last batch, or on several ranks the last incomplete round.
struct EvalBatching {
    int batch_size = 1;
    std::optional<uint64_t> group_by_length_seed;
    bool drop_last = false;
};
EvalBatching evaluation_batching(const config::TrainArgs& args);

// ftl::Error(kConfig) when `batching` leaves none of the `rows` rows of split `split` to evaluate
// on `world_size` ranks (--dataloader_drop_last with fewer full batches than ranks; the Trainer
// would report no eval_loss). Checked before training, so that no evaluation fails mid-run.
void check_evaluation_batches(size_t rows, const EvalBatching& batching, int world_size, const std::string& split);

// `options`: the forward passes' residency (ZeRO-3), progress report and kernels; they run
// without training (no dropout, no recompute) whatever `options` says of that. drop_non_finite
// (--logging_nan_inf_filter): batches whose loss is NaN or infinite are left out of the mean
// unless all are. `token_loss`: --loss_type's (TRL applies it in evaluation too).
EvalResult evaluate(const model::CausalLM& model, const std::vector<data::Row>& rows, const EvalBatching& batching,
                    int32_t pad_id, bool packed, const at::Device& device, std::optional<at::ScalarType> autocast,
                    const model::ForwardOptions& options, bool drop_non_finite, model::TokenLoss token_loss,
                    const RankContext& rank);

}  // namespace ftl::train

namespace ftl::train {

// `ftlaunch evaluate`: the model (with --adapter_path applied when given) on the last split named
// in --splits; rank 0 prints {"split", "eval_loss", "eval_perplexity", "eval_tokens"} as one JSON
// line on stdout.
void run_evaluate(const config::RunConfig& run, const RankContext& rank);

}  // namespace ftl::train
