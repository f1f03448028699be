#include "peft/merge_experts.h"

#include <ATen/core/grad_mode.h>

#include "model/decoder.h"
#include "model/tensor_io.h"
#include "peft/moe_lora.h"
#include "quant/mxfp4.h"
#include "util/error.h"
#include "util/strings.h"

namespace ftl::peft {
namespace {

// (checkpoint name, shape) of a tensor held as transformers holds it, in the base checkpoint's layout.
std::vector<std::pair<std::string, std::vector<int64_t>>> checkpoint_shapes(const model::DecoderConfig& config,
                                                                            const std::string& name,
                                                                            const std::vector<int64_t>& shape) {
    std::vector<std::pair<std::string, std::vector<int64_t>>> out;
    const at::Tensor meta = at::empty(shape, at::TensorOptions().device(at::kMeta));
    for (const auto& [n, t] : model::checkpoint_weights(config, {{name, meta}})) out.emplace_back(n, t.sizes().vec());
    return out;
}

}  // namespace

ExpertMerge::ExpertMerge(const std::string& model_dir, const LoraConfig& lora, const io::Checkpoint& base,
                         const io::Checkpoint& adapter)
    : config_(model::read_decoder_config(model_dir)), base_(base), adapter_(adapter) {
    const std::string adapter_config = adapter.dir() + "/adapter_config.json";
    if (!config_.moe)
        fail(ErrorKind::kConfig, adapter_config + ": target_parameters (" + join(lora.target_parameters, ", ") + ") adapt "
                                 "a mixture-of-experts model's experts, but " + model_dir + " is a " + config_.model_type +
                                 " model without experts (another base model?)");
    const MoeTargets targets = resolve_moe_targets(config_, lora);
    const LoraConfig drawn = with_moe_targets(lora, targets);
    const int64_t experts = config_.moe->num_experts, width = config_.moe->expert_intermediate_size,
                  hidden = config_.hidden_size;
    bool mxfp4 = false, adapted = false;
    for (size_t i = 0; i < static_cast<size_t>(config_.num_layers); ++i) {
        if (!config_.is_moe_layer(i)) continue;
        const std::string layer = config_.module_prefix() + "layers." + std::to_string(i) + ".";
        const std::string down_key = moe_parameter_key(config_, i, "mlp.experts.down_proj", true);
        const bool down_adapted = adapts_parameter(targets, down_key);
        for (const bool gate_up : {true, false}) {
            Stack s;
            s.name = gate_up ? moe_parameter_key(config_, i, "mlp.experts.gate_up_proj", true) : down_key;
            s.shape = gate_up ? std::vector<int64_t>{experts, 2 * width, hidden} : std::vector<int64_t>{experts, hidden, width};
            if (adapts_parameter(targets, s.name)) {
                const std::string module = layer + experts_adapter_module(gate_up, down_adapted);
                s.lora_a = "base_model.model." + module + ".lora_A.weight";
                s.lora_b = "base_model.model." + module + ".lora_B.weight";
                const int64_t r = drawn.rank_for(s.name);
                const std::vector<int64_t> a_shape{experts * r, s.shape[2]}, b_shape{s.shape[1], r * experts};
                for (const auto& [tensor, expected] : {std::pair{s.lora_a, a_shape}, std::pair{s.lora_b, b_shape}}) {
                    if (!adapter.contains(tensor))
                        fail(ErrorKind::kConfig, adapter.dir() + "/adapter_model.safetensors: no tensor '" + tensor +
                                                     "' for target_parameters' " + s.name);
                    if (adapter.tensor(tensor).shape != expected)
                        fail(ErrorKind::kConfig, adapter.dir() + "/adapter_model.safetensors: '" + tensor + "' is " +
                                                     model::shape_text(adapter.tensor(tensor).shape) + ", but " + s.name + " of " +
                                                     model_dir + " takes " + model::shape_text(expected) + " at r=" +
                                                     std::to_string(r) + " (another base model?)");
                    adapter_tensors_.insert(tensor);
                }
                s.scaling = drawn.scaling_for(s.name);
                adapted = true;
            }
            const size_t index = stacks_.size();
            bool found = false;
            for (const auto& [name, shape] : checkpoint_shapes(config_, s.name, s.shape))
                if (base.contains(name)) stack_of_[name] = index, found = true;
            if (base.contains(s.name)) stack_of_[s.name] = index, found = true;  // transformers 5's stacks
            if (base.contains(s.name + "_blocks")) {
                stack_of_[s.name + "_blocks"] = stack_of_[s.name + "_scales"] = index;
                mxfp4 = found = true;
            }
            if (!found && !s.lora_a.empty())
                fail(ErrorKind::kConfig, model_dir + ": no tensors for " + s.name + " (per expert, stacked or MXFP4), which "
                                         "the adapter " + adapter.dir() + " adapts (another base model?)");
            stacks_.push_back(std::move(s));
        }
    }
    dequantize_ = mxfp4 && adapted;
}

std::string ExpertMerge::checkpoint_name(const std::string& name) const {
    const auto names = checkpoint_shapes(config_, name, {1, 1});
    return names.size() == 1 ? names.front().first : name;
}

at::ScalarType ExpertMerge::dequantized_dtype() const {
    return config_.torch_dtype.empty() || config_.torch_dtype == "auto"
               ? at::kBFloat16
               : model::parse_float_dtype(config_.torch_dtype, "config.json torch_dtype");
}

std::optional<ExpertMerge::Output> ExpertMerge::output_of(const std::string& name) const {
    const auto found = stack_of_.find(name);
    if (found == stack_of_.end()) return std::nullopt;
    const Stack& s = stacks_[found->second];
    const bool quantized = ends_with(name, "_blocks") || ends_with(name, "_scales");
    if (quantized ? !dequantize_ : s.lora_a.empty()) return std::nullopt;  // copied as it is
    if (ends_with(name, "_scales")) return Output{};                       // folded into the _blocks' output
    if (!quantized) return Output{name, base_.tensor(name).shape, true};
    for (const auto& [n, shape] : checkpoint_shapes(config_, s.name, s.shape))
        if (n == s.name) return Output{s.name, shape, !s.lora_a.empty()};
    fail(ErrorKind::kInternal, "merge: " + s.name + " has no single-tensor checkpoint layout to dequantise into");
}

at::Tensor ExpertMerge::delta(size_t stack) {
    if (const auto found = cached_.find(stack); found != cached_.end()) return found->second;
    if (cached_.size() >= 2) cached_.erase(cached_.begin());  // a layer's two stacks at most
    const Stack& s = stacks_[stack];
    const int64_t experts = s.shape[0];
    const at::Tensor a = model::mapped_tensor(adapter_.shared_file_of(s.lora_a), s.lora_a).to(at::kFloat);
    const at::Tensor b = model::mapped_tensor(adapter_.shared_file_of(s.lora_b), s.lora_b).to(at::kFloat);
    // A [E·r, in] -> [E, r, in]; B [out, r·E] -> [out, r, E] -> [E, out, r] (rank-major columns).
    const at::Tensor a_e = a.reshape({experts, -1, a.size(1)});
    const at::Tensor b_e = b.reshape({b.size(0), -1, experts}).permute({2, 0, 1});
    return cached_[stack] = at::bmm(b_e, a_e) * s.scaling;
}

at::Tensor ExpertMerge::merged(const std::string& name) {
    at::NoGradGuard no_grad;
    const size_t index = stack_of_.at(name);
    const Stack& s = stacks_[index];
    const bool adapted = !s.lora_a.empty();
    if (ends_with(name, "_blocks")) {  // [E, out, in] dequantised, plus the delta, in the checkpoint's layout
        const std::string scales = s.name + "_scales";
        at::Tensor w = quant::dequantize_mxfp4(model::mapped_tensor(base_.shared_file_of(name), name),
                                               model::mapped_tensor(base_.shared_file_of(scales), scales), at::kFloat, s.name);
        if (adapted) w += delta(index);
        for (const auto& [n, piece] : model::checkpoint_weights(config_, {{s.name, w}}))
            if (n == s.name) return piece.contiguous();
        fail(ErrorKind::kInternal, "merge: " + s.name + " has no single-tensor checkpoint layout");
    }
    const at::Tensor w = model::mapped_tensor(base_.shared_file_of(name), name).to(at::kFloat);
    const at::Tensor d = delta(index);
    for (const auto& [n, piece] : model::checkpoint_weights(config_, {{s.name, d}}))
        if (n == name) return w + piece;
    return w + d;  // transformers 5's stacked layout is the one it holds
}

}  // namespace ftl::peft
