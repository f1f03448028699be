// Mixed precision as HF Trainer runs it (accelerate wraps each forward in torch.autocast): matmuls
// in bf16/fp16, weights kept in the dtype they were loaded in, backward outside the scope. Ending
// the scope clears autocast's cache of low-precision copies of the weights, so the next forward
// casts the values the optimizer has just written (a scope spanning several steps would keep
// training on the first step's copies).
#pragma once

#include <ATen/autocast_mode.h>

#include <optional>

#include "config/train_args.h"

namespace ftl::train {

// --bf16 / --fp16 -> the autocast dtype; nullopt for fp32.
inline std::optional<at::ScalarType> autocast_dtype(const config::TrainArgs& args) {
    if (args.bf16) return at::kBFloat16;
    if (args.fp16) return at::kHalf;
    return std::nullopt;
}

class AutocastScope {
public:
    AutocastScope(std::optional<at::ScalarType> dtype, const at::Device& device) {
        if (!dtype) return;
        type_ = device.type();
        previous_enabled_ = at::autocast::is_autocast_enabled(type_);
        previous_dtype_ = at::autocast::get_autocast_dtype(type_);
        at::autocast::set_autocast_enabled(type_, true);
        at::autocast::set_autocast_dtype(type_, *dtype);
        active_ = true;
    }
    ~AutocastScope() {
        if (!active_) return;
        at::autocast::set_autocast_enabled(type_, previous_enabled_);
        at::autocast::set_autocast_dtype(type_, previous_dtype_);
        at::autocast::clear_cache();
    }
    AutocastScope(const AutocastScope&) = delete;
    AutocastScope& operator=(const AutocastScope&) = delete;

private:
    at::DeviceType type_ = at::kCPU;
    bool previous_enabled_ = false;
    at::ScalarType previous_dtype_ = at::kBFloat16;
    bool active_ = false;
};

}  // namespace ftl::train
