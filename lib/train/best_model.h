// The HF Trainer's best-model tracking (--metric_for_best_model, --greater_is_better,
// --load_best_model_at_end, --save_strategy best; transformers' Trainer._determine_best_metric and
// _save_checkpoint): the best evaluation so far, its step, and the checkpoint that holds its
// weights. Every rank keeps the same tracker (evaluation results are all-reduced; checkpoint
// folders are named by step), so every rank can take part in loading the best weights back.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "config/train_args.h"
#include "train/evaluate.h"

namespace ftl::train {

class BestModelTracker {
public:
    // Tracks nothing when the run names no metric (config::TrainArgs fills it in for
    // --load_best_model_at_end and --save_strategy best).
    explicit BestModelTracker(const config::TrainArgs& args);

    // After an evaluation at `step`: true when it is a new best (strictly better, as np.greater /
    // np.less compare).
    bool observe(const EvalResult& eval, int64_t step);
    // The tracked metric's value in `eval` (none when the run names no metric).
    std::optional<double> metric(const EvalResult& eval) const;
    // Before checkpoint-<step> is written to `dir`: it holds the best weights when the best
    // evaluation is at this step.
    void saving(int64_t step, const std::string& dir);
    // The checkpoint to protect from save_total_limit's rotation.
    std::optional<std::string> checkpoint() const { return best_checkpoint_; }
    // At the end of `total_steps`: the checkpoint whose weights --load_best_model_at_end loads, or
    // none when the final weights are the best (the last step's checkpoint holds them: every save
    // strategy saves at the last step, TrainerFlow) or nothing was evaluated.
    std::optional<std::string> finish(int64_t total_steps) const;

    // trainer_state.json's best_metric, best_global_step and best_model_checkpoint.
    void add_to(nlohmann::json& trainer_state) const;
    void restore(const nlohmann::json& trainer_state);
    std::string describe() const;  // "eval_loss 1.234 at step 40"

private:
    std::string metric_;  // "eval_loss" or "eval_perplexity"; empty: not tracking
    bool greater_is_better_ = false;
    bool load_at_end_ = false;
    bool saves_ = false;  // a save strategy other than "no": only then is the best's step recorded
    std::optional<double> best_metric_;
    std::optional<int64_t> best_step_;
    std::optional<std::string> best_checkpoint_;
};

}  // namespace ftl::train
