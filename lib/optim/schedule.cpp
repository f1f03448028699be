#include "optim/schedule.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace ftl::optim {

ScheduleType parse_schedule_type(const std::string& name) {
    if (name == "linear") return ScheduleType::kLinear;
    if (name == "cosine") return ScheduleType::kCosine;
    if (name == "constant") return ScheduleType::kConstant;
    if (name == "constant_with_warmup") return ScheduleType::kConstantWithWarmup;
    fail(ErrorKind::kConfig, "--lr_scheduler_type: '" + name +
                                 "' is not supported (use linear, cosine, constant or constant_with_warmup)");
}

int64_t warmup_steps_for(int64_t total_steps, double warmup_steps, double warmup_ratio) {
    if (warmup_steps >= 1) return static_cast<int64_t>(warmup_steps);
    if (warmup_steps > 0) return static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * warmup_steps));
    return static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * warmup_ratio));
}

double lr_multiplier(ScheduleType type, int64_t step, int64_t warmup, int64_t total) {
    if (type == ScheduleType::kConstant) return 1.0;
    if (step < warmup) return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
    if (type == ScheduleType::kConstantWithWarmup) return 1.0;
    const double remaining = static_cast<double>(std::max<int64_t>(1, total - warmup));
    if (type == ScheduleType::kLinear)
        return std::max(0.0, static_cast<double>(total - step) / remaining);
    const double progress = static_cast<double>(step - warmup) / remaining;
    return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * 0.5 * 2.0 * progress)));
}

}  // namespace ftl::optim
