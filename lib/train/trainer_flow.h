// When the HF Trainer logs, evaluates and saves: transformers' DefaultFlowCallback (on_step_end,
// on_epoch_end) as Trainer._maybe_log_save_evaluate applies it (transformers 5.24). A run is
// `total_steps` optimizer steps, `steps_per_epoch` to an epoch; the last step also ends an epoch
// (the Trainer calls on_epoch_end after breaking out of a cut-short epoch).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "config/train_args.h"

namespace ftl::train {

// HF's "steps" intervals (--logging_steps, --eval_steps, --save_steps): a value below 1 is a
// ratio of the total steps, rounded up, at least 1.
int64_t steps_interval(double value, int64_t total_steps);

struct StepActions {
    bool log = false;       // a log_history entry with the loss since the last one
    bool evaluate = false;
    bool save = false;      // checkpoint-<step>; --save_strategy best decides after evaluating
};

class TrainerFlow {
public:
    TrainerFlow(const config::TrainArgs& args, int64_t total_steps, int64_t steps_per_epoch);

    // After optimizer step `done` (1-based):
    //   log       --logging_first_step at step 1; "steps" every logging_every; "epoch" at epoch ends
    //   evaluate  "steps" every eval_every and at the last step; "epoch" at epoch ends; neither
    //             before --eval_delay (a step, or under "epoch" an epoch)
    //   save      "steps" every save_every and at the last step; "epoch" at epoch ends
    StepActions after_step(int64_t done) const;
    bool epoch_end(int64_t done) const { return done % steps_per_epoch_ == 0 || done == total_steps_; }
    // The Trainer's state.epoch after `done` steps: a fraction of epochs.
    double epoch_at(int64_t done) const { return static_cast<double>(done) / static_cast<double>(steps_per_epoch_); }

    const int64_t logging_every;
    const int64_t eval_every;   // --eval_steps, else --logging_steps (TrainingArguments' rule)
    const int64_t save_every;

private:
    const config::TrainArgs& args_;
    int64_t total_steps_;
    int64_t steps_per_epoch_;
};

// transformers' speed_metrics: {split}_runtime (seconds, 4 decimals), and for each count given
// {split}_samples_per_second, {split}_steps_per_second, {split}_tokens_per_second (3 decimals;
// left out when the runtime is 0).
struct SpeedCounts {
    std::optional<double> samples, steps, tokens;
};
nlohmann::json speed_metrics(const std::string& split, double runtime_seconds, const SpeedCounts& counts);

// The Trainer's closing log_history entry (Trainer._finalize_training): speed over this run's
// steps (from `first_step`, the resumed step, to `total_steps`), total_flos, and train_loss = the
// summed per-step losses of those steps over their count. Samples as the Trainer counts them:
// max_steps x the global batch, else the training rows x the epochs, in the share of steps run.
struct RunTotals {
    int64_t first_step = 0, total_steps = 0;
    int64_t train_rows = 0;
    int world_size = 1;
    double runtime_seconds = 0.0, loss_total = 0.0, total_flos = 0.0, epoch = 0.0;
};
nlohmann::json closing_entry(const config::TrainArgs& args, const RunTotals& totals);

}  // namespace ftl::train
