#include "train/best_model.h"

#include <filesystem>

#include "util/strings.h"

namespace ftl::train {

using nlohmann::json;

BestModelTracker::BestModelTracker(const config::TrainArgs& args)
    : greater_is_better_(args.greater_is_better.value_or(false)),
      load_at_end_(args.load_best_model_at_end),
      saves_(args.save_strategy != "no") {
    if (!args.metric_for_best_model.empty())
        metric_ = starts_with(args.metric_for_best_model, "eval_") ? args.metric_for_best_model
                                                                   : "eval_" + args.metric_for_best_model;
}

std::optional<double> BestModelTracker::metric(const EvalResult& eval) const {
    if (metric_.empty()) return std::nullopt;
    return metric_ == "eval_loss" ? eval.loss : eval.perplexity;
}

bool BestModelTracker::observe(const EvalResult& eval, int64_t step) {
    if (metric_.empty()) return false;
    const double value = *metric(eval);
    const bool better = !best_metric_ || (greater_is_better_ ? value > *best_metric_ : value < *best_metric_);
    if (!better) return false;
    best_metric_ = value;
    if (saves_) best_step_ = step;  // as _determine_best_metric: a step only where checkpoints are saved
    return true;
}

void BestModelTracker::saving(int64_t step, const std::string& dir) {
    if (best_step_ && *best_step_ == step) best_checkpoint_ = dir;
}

std::optional<std::string> BestModelTracker::finish(int64_t total_steps) const {
    if (!load_at_end_ || !best_step_ || *best_step_ == total_steps) return std::nullopt;
    return best_checkpoint_;
}

void BestModelTracker::add_to(json& trainer_state) const {
    trainer_state["best_metric"] = best_metric_ ? json(*best_metric_) : json(nullptr);
    trainer_state["best_global_step"] = best_step_ ? json(*best_step_) : json(nullptr);
    trainer_state["best_model_checkpoint"] = best_checkpoint_ ? json(*best_checkpoint_) : json(nullptr);
}

void BestModelTracker::restore(const json& trainer_state) {
    auto number = [&](const char* key) { return trainer_state.contains(key) && trainer_state[key].is_number(); };
    if (number("best_metric")) best_metric_ = trainer_state["best_metric"].get<double>();
    if (number("best_global_step")) best_step_ = trainer_state["best_global_step"].get<int64_t>();
    // A best checkpoint removed since is forgotten, as the Trainer does on resuming.
    if (trainer_state.contains("best_model_checkpoint") && trainer_state["best_model_checkpoint"].is_string() &&
        std::filesystem::is_directory(trainer_state["best_model_checkpoint"].get<std::string>()))
        best_checkpoint_ = trainer_state["best_model_checkpoint"].get<std::string>();
}

std::string BestModelTracker::describe() const {
    if (!best_metric_) return "no evaluation";
    return metric_ + " " + json(*best_metric_).dump() + (best_step_ ? " at step " + std::to_string(*best_step_) : "");
}

}  // namespace ftl::train
