#include "train/trainer_flow.h"

#include <algorithm>
#include <cmath>

namespace ftl::train {

int64_t steps_interval(double value, int64_t total_steps) {
    if (value < 1) return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(value * static_cast<double>(total_steps))));
    return static_cast<int64_t>(value);
}

TrainerFlow::TrainerFlow(const config::TrainArgs& args, int64_t total_steps, int64_t steps_per_epoch)
    : logging_every(steps_interval(args.logging_steps, total_steps)),
      eval_every(steps_interval(args.eval_steps.value_or(args.logging_steps), total_steps)),
      save_every(steps_interval(args.save_steps, total_steps)),
      args_(args),
      total_steps_(total_steps),
      steps_per_epoch_(steps_per_epoch) {}

StepActions TrainerFlow::after_step(int64_t done) const {
    const bool last = done == total_steps_;
    const bool epoch = epoch_end(done);
    StepActions actions;
    actions.log = (done == 1 && args_.logging_first_step) ||
                  (args_.logging_strategy == "steps" && done % logging_every == 0) ||
                  (args_.logging_strategy == "epoch" && epoch);
    actions.evaluate = (args_.eval_strategy == "steps" && (done % eval_every == 0 || last) &&
                        args_.eval_delay <= static_cast<double>(done)) ||
                       (args_.eval_strategy == "epoch" && epoch && args_.eval_delay <= epoch_at(done));
    actions.save = (args_.save_strategy == "steps" && (done % save_every == 0 || last)) ||
                   (args_.save_strategy == "epoch" && epoch);
    return actions;
}

nlohmann::json speed_metrics(const std::string& split, double runtime_seconds, const SpeedCounts& counts) {
    auto rounded = [](double v, double scale) { return std::round(v * scale) / scale; };
    nlohmann::json metrics = {{split + "_runtime", rounded(runtime_seconds, 1e4)}};
    if (runtime_seconds == 0) return metrics;
    if (counts.samples) metrics[split + "_samples_per_second"] = rounded(*counts.samples / runtime_seconds, 1e3);
    if (counts.steps) metrics[split + "_steps_per_second"] = rounded(*counts.steps / runtime_seconds, 1e3);
    if (counts.tokens) metrics[split + "_tokens_per_second"] = rounded(*counts.tokens / runtime_seconds, 1e3);
    return metrics;
}

nlohmann::json closing_entry(const config::TrainArgs& args, const RunTotals& totals) {
    const double steps_run = static_cast<double>(totals.total_steps - totals.first_step);
    const double samples = args.max_steps > 0 ? static_cast<double>(args.max_steps) * args.per_device_train_batch_size *
                                                    args.gradient_accumulation_steps * totals.world_size
                                              : static_cast<double>(totals.train_rows) * args.num_train_epochs;
    nlohmann::json entry = speed_metrics(
        "train", totals.runtime_seconds,
        {samples * steps_run / static_cast<double>(std::max<int64_t>(totals.total_steps, 1)), steps_run, std::nullopt});
    entry["total_flos"] = totals.total_flos;
    entry["train_loss"] = totals.loss_total / std::max(steps_run, 0.001);
    entry["epoch"] = totals.epoch;
    entry["step"] = totals.total_steps;
    return entry;
}

}  // namespace ftl::train
