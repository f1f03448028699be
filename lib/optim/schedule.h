// Learning-rate schedules as transformers' get_scheduler builds them (optimization.py): the
// multiplier of the base rate after `step` optimizer steps (LambdaLR's lr_lambda).
//   constant               1
//   constant_with_warmup   step / warmup while warming up, then 1
//   linear                 warmup, then (total - step) / (total - warmup), floored at 0
//   cosine                 warmup, then 0.5 * (1 + cos(pi * progress)), progress = (step - warmup) / (total - warmup)
#pragma once

#include <cstdint>
#include <string>

namespace ftl::optim {

enum class ScheduleType { kConstant, kConstantWithWarmup, kLinear, kCosine };

// "linear" -> kLinear ...; throws naming --lr_scheduler_type and the choices otherwise.
ScheduleType parse_schedule_type(const std::string& name);

// TrainingArguments.get_warmup_steps: warmup_steps when > 0 (a value in (0, 1) is a ratio of
// the total, as transformers 5 reads it), else ceil(total * warmup_ratio).
int64_t warmup_steps_for(int64_t total_steps, double warmup_steps, double warmup_ratio);

double lr_multiplier(ScheduleType type, int64_t step, int64_t warmup_steps, int64_t total_steps);

}  // namespace ftl::optim
