// Learning-rate schedules: the rate of each optimizer step.
//
// The HF Trainer's (--lr_scheduler_type with --lr_scheduler_kwargs; transformers/optimization.py,
// get_scheduler): LambdaLR multipliers of --learning_rate, step s using lambda(s):
//   constant                   1
//   constant_with_warmup       s / warmup while warming up, then 1
//   linear                     warmup, then (total - s) / (total - warmup), floored at 0
//   cosine                     warmup, then 0.5 * (1 + cos(2 pi num_cycles p)), p = (s - warmup) / (total - warmup);
//                              num_cycles 0.5
//   cosine_with_restarts       warmup, then 0.5 * (1 + cos(pi * ((num_cycles p) mod 1))), 0 from p >= 1; num_cycles 1
//   polynomial                 warmup, then ((lr - lr_end) (1 - p)^power + lr_end) / lr, lr_end / lr after total;
//                              lr_end 1e-7, power 1
//   inverse_sqrt               warmup, then 1 / sqrt((s + timescale - warmup) / timescale); timescale = warmup or 1e4
//   cosine_with_min_lr         cosine scaled into [min_lr_rate, 1] (min_lr_rate or min_lr / lr, exactly one given)
//   cosine_warmup_with_min_lr  the same with a warmup from (s + 1) / warmup (or from warmup_lr_rate) and the decay
//                              one step ahead, p = (s - warmup + 1) / (total - warmup)
//   warmup_stable_decay        warmup (linear, cosine or 1-sqrt) from min_lr_ratio to 1, num_stable_steps at 1,
//                              num_decay_steps decaying (linear, cosine or 1-sqrt) to min_lr_ratio, then min_lr_ratio
// where "warmup" is s / max(1, warmup) for s < warmup.
//
// DeepSpeed's, built from a DeepSpeed config's "scheduler" section (deepspeed/runtime/lr_schedules.py).
// DeepSpeed's engine steps them after each applied optimizer step, starting from iteration -1, so
// step s uses iteration i = s - 1 and the first step the starting rate:
//   WarmupLR        min_lr + (max_lr - min_lr) * g, g = log(i + 1) / log(W) ("log") or i / W ("linear")
//                   for i < W, then 1; W = max(2, warmup_num_steps); min_lr at i = -1
//   WarmupDecayLR   the same, then g = max(0, (total - i) / max(1, total - W))
//   WarmupCosineLR  lr * r: warmup r = warmup_min_ratio + (1 - warmup_min_ratio) g, then
//                   r = cos_min_ratio + (1 - cos_min_ratio) (1 + cos(pi min(1, (i - W + 1) / max(1, total - W)))) / 2;
//                   0 at i = -1
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace ftl::optim {

// The learning rate of the optimizer step taken after `steps_done` applied steps (a step skipped
// for an fp16 overflow does not count: neither scheduler advances then).
using LearningRateSchedule = std::function<double(int64_t steps_done)>;

// TrainingArguments.get_warmup_steps: warmup_steps when > 0 (a value in (0, 1) is a ratio of
// the total, as transformers 5 reads it), else ceil(total * warmup_ratio).
int64_t warmup_steps_for(int64_t total_steps, double warmup_steps, double warmup_ratio);

// The Trainer's schedule `type` over `total_steps` optimizer steps, `warmup_steps` of them warming
// up, from `learning_rate`. `kwargs` is --lr_scheduler_kwargs (a JSON object; numbers may be given
// as text, as TrainingArguments converts them). Throws kConfig naming --lr_scheduler_type or the
// --lr_scheduler_kwargs key for an unknown type, an unknown or missing key, or a value out of range.
LearningRateSchedule trainer_schedule(const std::string& type, const nlohmann::json& kwargs, double learning_rate,
                                      int64_t warmup_steps, int64_t total_steps);

// A DeepSpeed config's "scheduler" section with every value resolved (config::resolve_deepspeed_scheduler).
struct DeepSpeedSchedule {
    enum class Type { kWarmupLR, kWarmupDecayLR, kWarmupCosineLR };
    Type type = Type::kWarmupLR;
    double warmup_min_lr = 0.0;   // WarmupLR, WarmupDecayLR
    double warmup_max_lr = 0.0;   // WarmupLR, WarmupDecayLR
    double warmup_min_ratio = 0.0;   // WarmupCosineLR
    double cos_min_ratio = 0.0;      // WarmupCosineLR
    int64_t warmup_num_steps = 1000;
    int64_t total_num_steps = 0;     // WarmupDecayLR, WarmupCosineLR
    bool log_warmup = true;          // warmup_type "log"; false: "linear"
};

// `learning_rate`: the optimizer's rate (WarmupCosineLR scales it).
LearningRateSchedule deepspeed_schedule(const DeepSpeedSchedule& schedule, double learning_rate);

// The Trainer's reduce_lr_on_plateau: torch.optim.lr_scheduler.ReduceLROnPlateau with
// --lr_scheduler_kwargs (mode min|max, factor 0.1 (< 1), patience 10, threshold 1e-4,
// threshold_mode rel|abs, cooldown 0, min_lr 0, eps 1e-8), stepped with the evaluation metric. The
// rate starts at `learning_rate` (no warmup); an evaluation is better when it beats the best by
// the threshold (rel: best * (1 -/+ threshold), abs: best -/+ threshold); after more than
// `patience` evaluations that are not, the rate is multiplied by factor, not below min_lr (a
// change of eps or less is skipped), and the next `cooldown` evaluations count no bad ones.
class PlateauSchedule {
public:
    // Throws kConfig naming the --lr_scheduler_kwargs key for an unknown key or a bad value.
    PlateauSchedule(const nlohmann::json& kwargs, double learning_rate);
    double rate() const { return lr_; }
    void observe(double metric);  // after an evaluation
    // The state a checkpoint keeps (scheduler.pt's fields) as plateau.<field> float64 scalars among
    // the optimizer's entries; load_state takes them from those entries.
    std::vector<std::pair<std::string, at::Tensor>> state() const;
    void load_state(const std::vector<std::pair<std::string, at::Tensor>>& state);

private:
    bool better(double value) const;
    bool maximize_ = false, absolute_threshold_ = false;
    double factor_ = 0.1, threshold_ = 1e-4, min_lr_ = 0.0, eps_ = 1e-8;
    int64_t patience_ = 10, cooldown_ = 0;
    double lr_, best_;
    int64_t bad_evaluations_ = 0, cooldown_left_ = 0, evaluations_ = 0;
};

}  // namespace ftl::optim
