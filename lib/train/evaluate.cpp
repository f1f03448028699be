#include "train/evaluate.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>

#include <iostream>
#include <nlohmann/json.hpp>

#include "model/loss.h"
#include "model/router_balance.h"
#include "peft/lora.h"
#include "train/autocast.h"
#include "train/batches.h"
#include "train/inputs.h"
#include "util/error.h"
#include "util/strings.h"

namespace ftl::train {

EvalBatching evaluation_batching(const config::TrainArgs& args) {
    EvalBatching batching;
    batching.batch_size = args.per_device_eval_batch_size;
    if (args.train_sampling_strategy == "group_by_length")
        batching.group_by_length_seed = static_cast<uint64_t>(args.data_seed.value_or(args.seed));
    batching.drop_last = args.dataloader_drop_last;
    return batching;
}

void check_evaluation_batches(size_t rows, const EvalBatching& batching, int world_size, const std::string& split) {
    if (!batching.drop_last || shard_count(static_cast<int64_t>(rows), batching.batch_size, world_size, true) > 0) return;
    fail(ErrorKind::kConfig, "--dataloader_drop_last True: the " + std::to_string(rows) + " rows of split '" + split +
                                 "' make fewer full batches of --per_device_eval_batch_size " +
                                 std::to_string(batching.batch_size) + " than there are ranks (" +
                                 std::to_string(world_size) + "), so nothing is left to evaluate (lower the batch size)");
}

EvalResult evaluate(const model::CausalLM& model, const std::vector<data::Row>& rows, const EvalBatching& batching,
                    int32_t pad_id, bool packed, const at::Device& device, std::optional<at::ScalarType> autocast,
                    const model::ForwardOptions& options, bool drop_non_finite, model::TokenLoss token_loss,
                    const RankContext& rank) {
    at::NoGradGuard no_grad;
    const int batch_size = batching.batch_size;
    // Every rank runs as many batches as every other (a forward under ZeRO-3 gathers with all).
    const std::vector<std::vector<int64_t>> batches =
        shard_batches(evaluation_order(row_lengths(rows), batch_size, batching.group_by_length_seed), batch_size,
                      rank.rank, rank.world_size, batching.drop_last);
    const int64_t steps = static_cast<int64_t>(batches.size());
    model::ForwardOptions forward;
    forward.residency = options.residency;
    forward.progress = options.progress;
    forward.fused_kernels = options.fused_kernels;
    forward.router_balance = options.router_balance;
    // Each batch's summed loss stays on the device (read once at the end: a read waits for the
    // device); its targets are counted on the host. A MoE model's weighted load-balancing loss
    // joins each batch's loss as TRL's compute_loss adds it in evaluation (coefficient · aux).
    at::Tensor loss_sums = at::zeros({steps}, at::TensorOptions().dtype(at::kDouble).device(device));
    at::Tensor weighted_aux = at::zeros({steps}, at::TensorOptions().dtype(at::kDouble).device(device));
    at::Tensor token_stats = at::zeros({steps, 3}, at::TensorOptions().dtype(at::kDouble).device(device));
    at::Tensor targets = at::zeros({steps}, at::TensorOptions().dtype(at::kDouble));
    for (int64_t s = 0; s < steps; ++s) {
        model::Batch inputs = collate(rows, batches[static_cast<size_t>(s)], pad_id, packed, device);
        model::LossOptions sum;
        sum.divisor = 1.0;
        sum.token_loss = token_loss;
        const AutocastScope precision(autocast, device);
        const model::LossResult result = model::causal_lm_loss(model, inputs, sum, forward);
        loss_sums[s].copy_(result.loss.detach().to(at::kDouble));
        targets[s] = static_cast<double>(result.counted_tokens);
        token_stats[s].narrow(0, 0, 2).copy_(result.token_stats.to(at::kDouble));
        token_stats[s][2].fill_(static_cast<double>(result.counted_tokens));
        if (forward.router_balance)
            weighted_aux[s].copy_(forward.router_balance->loss().to(at::kDouble) * forward.router_balance->coefficient());
    }
    // TRL's SFTTrainer.prediction_step (1.16) asks compute_loss for step s's loss without
    // num_items_in_batch: on rank r, the mean over that rank's own batch targets (clamped to >= 1)
    // plus coefficient x aux; transformers' evaluation_loop (5.24) repeats it
    // per_device_eval_batch_size times and gathers the copies, the last step's cut to the rows
    // left over (rows % (world x batch)), so the wrapped-around rows drop out (accelerate's
    // gather_for_metrics; it cuts nothing when the DataLoader drops the last batch, for then every
    // batch is whole); eval_loss is the mean of the copies, the non-finite ones left out when some
    // are finite (--logging_nan_inf_filter). (transformers.Trainer's own prediction_step divides by
    // all ranks' targets instead: with several ranks the two differ.)
    const at::Tensor sums = loss_sums.cpu(), aux = weighted_aux.cpu();
    const int64_t left_over =
        batching.drop_last ? 0 : static_cast<int64_t>(rows.size()) % (rank.world_size * batch_size);
    double finite_sum = 0.0, finite_count = 0.0, all_sum = 0.0, all_count = 0.0;
    for (int64_t s = 0; s < steps; ++s) {
        int64_t count = batch_size;
        if (s + 1 == steps && left_over > 0) count = std::clamp<int64_t>(left_over - rank.rank * batch_size, 0, batch_size);
        if (count == 0) continue;
        const double loss = sums[s].item<double>() / std::max(1.0, targets[s].item<double>()) + aux[s].item<double>();
        all_sum += static_cast<double>(count) * loss;
        all_count += static_cast<double>(count);
        if (std::isfinite(loss)) {
            finite_sum += static_cast<double>(count) * loss;
            finite_count += static_cast<double>(count);
        }
    }
    // The token metrics' sums per step over the ranks whose values gather_for_metrics keeps (at
    // the last step, when rows are left over, the first `left_over` ranks' scalars).
    at::Tensor stats = token_stats.cpu();
    if (left_over > 0 && rank.rank >= left_over && steps > 0) stats[steps - 1].zero_();
    at::Tensor copies = at::cat({at::tensor(std::vector<double>{finite_sum, finite_count, all_sum, all_count}, at::kDouble),
                                 stats.reshape({-1})});
    if (rank.comm) rank.comm->all_reduce(copies, dist::ReduceOp::kSum);
    EvalResult out;
    for (int64_t s = 0; s < steps; ++s) {
        const double counted = copies[4 + 3 * s + 2].item<double>();
        if (counted <= 0) continue;  // TRL appends 0.0 for a step without targets
        out.entropy += copies[4 + 3 * s].item<double>() / counted;
        out.mean_token_accuracy += copies[4 + 3 * s + 1].item<double>() / counted;
    }
    if (steps > 0) {
        out.entropy /= static_cast<double>(steps);
        out.mean_token_accuracy /= static_cast<double>(steps);
    }
    const bool finite_only = drop_non_finite && copies[1].item<double>() > 0;
    out.loss = finite_only ? copies[0].item<double>() / copies[1].item<double>()
                           : copies[2].item<double>() / copies[3].item<double>();
    out.perplexity = std::exp(out.loss);
    for (const data::Row& row : rows)
        for (size_t j = 1; j < row.labels.size(); ++j) out.tokens += row.labels[j] != -100;
    return out;
}

void run_evaluate(const config::RunConfig& run, const RankContext& rank) {
    const config::TrainArgs& args = run.train;
    const JobInputs inputs = resolve_job_inputs(args);
    const std::vector<std::string> splits = split(args.splits, ',');
    const std::string split_name = trim(splits.back());
    const std::vector<data::Row> rows = split_rows(args, inputs, split_name, packs_rows(args, true));
    const EvalBatching batching = evaluation_batching(args);
    check_evaluation_batches(rows.size(), batching, rank.world_size, split_name);
    const at::Device device = rank.torch_device();
    JobModel job_model = load_job_model(inputs, device);
    if (!args.adapter_path.empty()) peft::load_adapter(args.adapter_path, job_model.loaded.model);
    model::ForwardOptions forward;
    forward.fused_kernels = args.fused_kernels;
    forward.router_balance = router_balance_for(args, job_model.loaded.model.config());
    const EvalResult result = evaluate(job_model.loaded.model, rows, batching, inputs.tokenizer.pad_id().value_or(0),
                                       packs_rows(args, true), device, autocast_dtype(args), forward,
                                       args.logging_nan_inf_filter, token_loss_for(args), rank);
    if (rank.rank == 0)
        std::cout << nlohmann::json{{"split", split_name},
                                    {"eval_loss", result.loss},
                                    {"eval_perplexity", result.perplexity},
                                    {"eval_entropy", result.entropy},
                                    {"eval_mean_token_accuracy", result.mean_token_accuracy},
                                    {"eval_tokens", result.tokens}}
                         .dump()
                  << std::endl;
}

}  // namespace ftl::train
