#include "zero/memory_estimate.h"

#include <algorithm>
#include <regex>
#include <tuple>

#include "model/loss.h"
#include "peft/moe_lora.h"
#include "util/error.h"
#include "util/strings.h"

namespace ftl::zero {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

struct LinearShape {
    std::string name;  // q_proj, ..., down_proj
    int64_t in, out;
};

// A layer's linears; a MoE layer's (DecoderConfig::is_moe_layer) MLP as its router and its experts'
// two stacks, each counted as one linear of E times the rows.
std::vector<LinearShape> layer_linears(const model::DecoderConfig& c, bool moe_layer = false) {
    const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
    if (moe_layer) {
        const int64_t experts = c.moe->num_experts, width = c.moe->expert_intermediate_size;
        return {{"self_attn.q_proj", c.hidden_size, q},  {"self_attn.k_proj", c.hidden_size, kv},
                {"self_attn.v_proj", c.hidden_size, kv}, {"self_attn.o_proj", q, c.hidden_size},
                {"mlp.gate", c.hidden_size, experts},    {"mlp.experts.gate_up_proj", c.hidden_size, experts * 2 * width},
                {"mlp.experts.down_proj", width, experts * c.hidden_size}};
    }
    if (c.fused_projections)  // phi3
        return {{"self_attn.qkv_proj", c.hidden_size, q + 2 * kv}, {"self_attn.o_proj", q, c.hidden_size},
                {"mlp.gate_up_proj", c.hidden_size, 2 * c.intermediate_size}, {"mlp.down_proj", c.intermediate_size, c.hidden_size}};
    return {{"self_attn.q_proj", c.hidden_size, q},           {"self_attn.k_proj", c.hidden_size, kv},
            {"self_attn.v_proj", c.hidden_size, kv},          {"self_attn.o_proj", q, c.hidden_size},
            {"mlp.gate_proj", c.hidden_size, c.intermediate_size}, {"mlp.up_proj", c.hidden_size, c.intermediate_size},
            {"mlp.down_proj", c.intermediate_size, c.hidden_size}};
}

// Bytes per frozen parameter: fp32 as ftlaunch keeps base weights, or bitsandbytes' 4-bit layout
// (two codes per byte, an fp32 absmax per 64-value block; nested: an 8-bit absmax per block plus
// an fp32 scale per 256 absmax values), or LLM.int8's (a code per byte and an fp32 scale per row,
// rows counted as `hidden_size` long: exact for every linear but down_proj, whose longer rows it
// overcounts by (intermediate / hidden - 1) x 4 bytes a row).
double base_bytes_per_parameter(BaseWeights w, int64_t hidden_size) {
    switch (w) {
        case BaseWeights::kNf4: return 0.5 + 4.0 / 64;
        case BaseWeights::kNf4Nested: return 0.5 + 1.0 / 64 + 4.0 / (64 * 256);
        case BaseWeights::kInt8: return 1.0 + 4.0 / static_cast<double>(hidden_size);
        case BaseWeights::kFloat32: break;
    }
    return 4.0;
}

// Activation bytes of one decoder layer kept for backward.
// On a GPU whose 16-bit base runs the fused kernels and flash attention (model/rms_norm.h,
// swiglu.h, rope.h, attention.h), what they keep per token: 5 tensors of width h (the normed
// input, the rotated q, attention's output, which is o_proj's input, the residual sum, the second
// normed input), 2 of the key/value width (the rotated k, v), 3 of the MLP's (gate, up, their
// product), and flash's fp32 log-sum-exp per head; no attention matrix exists.
// Elsewhere: Korthikanti et al. 2022 (Reducing Activation Recomputation in Large Transformer
// Models), s·b·h·(34 + 5·a·s/h) bytes at 16 bits, or, when larger (short sequences, where the
// attention matrix it counts is small), what the composite of ATen ops keeps per token: 7 tensors
// of width h (the normed inputs, q and its rotation, attention's output and the o_proj input, the
// residual sum, the second normed input), 3 of the key/value width (k, its rotation, v) and 4 of
// the MLP's (gate, up, silu(gate), their product).
// Either way qwen3's q/k norms keep their inputs (the projections' outputs) as well: one more
// tensor of q's width and one of the key/value width.
double layer_activation_bytes(const EstimateInputs& in, bool on_gpu) {
    const double b = static_cast<double>(in.micro_batch), s = static_cast<double>(in.sequence_length);
    const double h = static_cast<double>(in.model.hidden_size), a = static_cast<double>(in.model.num_heads);
    const double kv = static_cast<double>(in.model.num_kv_heads * in.model.head_dim);
    const double mlp = static_cast<double>(in.model.intermediate_size);
    const double head_norm_inputs =
        in.model.qk_norm ? static_cast<double>(in.model.num_heads * in.model.head_dim) + kv : 0.0;
    // The Gemmas' and OLMo's norms and gated GELU run as composites (no fused kernels): the
    // composite's figure, with gemma2 and gemma3's sandwich norms keeping 3 more tensors of width h,
    // OLMo's post norms 2.
    const bool fused = in.fused_kernels && !in.model.unit_offset_norms && !in.model.weight_in_fp32_norms;
    if (on_gpu && fused && in.activation_bytes == 2 && in.frozen_base_16bit)
        return s * b * ((5.0 * h + 2.0 * kv + 3.0 * mlp + head_norm_inputs) * 2.0 + 4.0 * a);
    const double sandwich = in.model.sandwich_norms ? 3.0 * h : in.model.post_norms ? 2.0 * h : 0.0;
    const double kept_tensors =
        s * b * (7.0 * h + sandwich + 3.0 * kv + 4.0 * mlp + head_norm_inputs) * in.activation_bytes;
    // gemma2's capped attention keeps no attention matrix, only an fp32 log-sum-exp per head
    // (model/eager_attention.h).
    if (in.model.attn_logit_softcapping) return kept_tensors + s * b * 4.0 * a;
    const double korthikanti = s * b * h * (34.0 + 5.0 * a * s / h) * in.activation_bytes / 2.0;
    return std::max(korthikanti, kept_tensors);
}

// The weights and biases of a layer's linears; `largest` grows to the largest module's own
// parameters (DeepSpeed's largest_layer_params: an experts module holds both stacks).
int64_t linear_parameters(const model::DecoderConfig& c, bool moe_layer, int64_t& largest) {
    int64_t total = 0, experts = 0;
    for (const LinearShape& l : layer_linears(c, moe_layer)) {
        int64_t n = l.in * l.out;
        const bool attention_qkv = l.name == "self_attn.q_proj" || l.name == "self_attn.k_proj" ||
                                   l.name == "self_attn.v_proj" || l.name == "self_attn.qkv_proj";
        if ((attention_qkv && c.qkv_bias) || (l.name == "self_attn.o_proj" && c.o_bias) ||
            (starts_with(l.name, "mlp.") && (moe_layer ? c.moe->biases : c.mlp_bias)))
            n += l.out;
        total += n;
        if (starts_with(l.name, "mlp.experts.")) experts += n;
        else largest = std::max(largest, n);
    }
    largest = std::max(largest, experts);
    return total;
}

// A MoE layer's router and experts' stacks, with gpt_oss's biases.
int64_t moe_mlp_parameters(const model::DecoderConfig& c) {
    int64_t total = 0;
    for (const LinearShape& l : layer_linears(c, /*moe_layer=*/true))
        if (starts_with(l.name, "mlp.")) total += l.in * l.out + (c.moe->biases ? l.out : 0);
    return total;
}

// lora_parameters on a MoE model, whose targets PEFT maps (peft/moe_lora.h): the module targets
// on the other linears, the adapted experts' stacks at E x r (gate_up_proj at twice the rank when
// mapped from names), the routers.
int64_t moe_lora_parameters(const model::DecoderConfig& c, int64_t r, const std::string& target_modules,
                            const std::vector<std::string>& target_parameters) {
    peft::LoraConfig lora;
    lora.r = r;
    lora.target_modules = target_modules;
    lora.target_parameters = target_parameters;
    const peft::MoeTargets targets = peft::resolve_moe_targets(c, lora);
    const peft::LoraConfig drawn = peft::with_moe_targets(lora, targets);
    const int64_t experts = c.moe->num_experts, width = c.moe->expert_intermediate_size, h = c.hidden_size;
    int64_t total = 0;
    for (int64_t i = 0; i < c.num_layers; ++i) {
        const bool moe_layer = c.is_moe_layer(static_cast<size_t>(i));
        for (const LinearShape& l : layer_linears(c, moe_layer)) {
            const std::string leaf = l.name.substr(l.name.rfind('.') + 1);
            if (moe_layer && starts_with(l.name, "mlp.")) continue;  // the MoE parameters, below
            if (peft::adapts_module(c, targets, leaf)) total += r * (l.in + l.out);
        }
        if (!moe_layer) continue;
        // (path inside the layer, stacked, in + out of one expert's or the router's matrix)
        const std::vector<std::tuple<std::string, bool, int64_t>> parameters = {
            {"mlp.experts.gate_up_proj", true, h + 2 * width},
            {"mlp.experts.down_proj", true, width + h},
            {"mlp." + c.moe->router_name, false, h + experts}};
        for (const auto& [path, stacked, in_out] : parameters) {
            const std::string key = peft::moe_parameter_key(c, static_cast<size_t>(i), path, stacked);
            if (peft::adapts_parameter(targets, key)) total += (stacked ? experts : 1) * drawn.rank_for(key) * in_out;
        }
    }
    return total;
}

}  // namespace

ParameterCounts count_parameters(const model::DecoderConfig& c) {
    ParameterCounts p;
    p.embeddings = c.vocab_size * c.hidden_size;
    int64_t largest = p.embeddings;
    // qwen3 and gemma3 add q/k norms over head_dim, OLMo over the whole projections (and has no
    // input norm but a feed-forward one); gemma2 and gemma3 two feed-forward norms.
    const int64_t qk_norms = !c.qk_norm         ? 0
                             : c.qk_norm_whole ? (c.num_heads + c.num_kv_heads) * c.head_dim
                                               : 2 * c.head_dim;
    // gpt_oss's attention sinks count here too: a vector per layer.
    p.per_layer_norms = (c.sandwich_norms ? 4 : 2) * c.hidden_size + qk_norms + (c.attention_sinks ? c.num_heads : 0);
    // Layers differ only where qwen3_moe keeps some dense: per_layer is the largest.
    int64_t layers_total = 0;
    for (int64_t i = 0; i < c.num_layers; ++i) {
        const bool moe_layer = c.is_moe_layer(static_cast<size_t>(i));
        const int64_t linears = linear_parameters(c, moe_layer, largest);
        const int64_t layer = p.per_layer_norms + linears;
        layers_total += layer;
        p.layer_linears += linears;
        if (moe_layer) p.moe_mlp += moe_mlp_parameters(c);
        p.per_layer = std::max(p.per_layer, layer);
    }
    p.head = c.hidden_size + (c.tie_word_embeddings ? 0 : c.vocab_size * c.hidden_size);
    if (c.vision) {
        const model::VisionTower& v = *c.vision;
        p.vision = v.parameters(c.hidden_size);
        const int64_t patches = (v.image_size / v.patch_size) * (v.image_size / v.patch_size);
        largest = std::max({largest, v.hidden_size * c.hidden_size, patches * v.hidden_size,
                            v.num_channels * v.patch_size * v.patch_size * v.hidden_size + v.hidden_size,
                            v.intermediate_size * v.hidden_size + v.intermediate_size});
    }
    p.total = p.embeddings + layers_total + p.head + p.vision;
    p.largest_tensor = largest;
    return p;
}

int64_t lora_parameters(const model::DecoderConfig& c, int64_t r, const std::string& target_modules,
                        bool targets_are_regex, bool use_dora, const std::vector<std::string>& target_parameters) {
    if (c.moe) return moe_lora_parameters(c, r, target_modules, target_parameters);
    if (!target_parameters.empty())
        fail(ErrorKind::kConfig, "--lora_target_parameters (" + join(target_parameters, ", ") + "): PEFT's parameter "
                                 "targets adapt the experts and routers of mixture-of-experts models, not a " +
                                 c.model_type + " model's linears (name those in --lora_target_modules)");
    const bool all = to_lower(trim(target_modules)) == "all-linear";
    std::vector<std::string> names;
    for (const std::string& n : split(target_modules, ',')) names.push_back(trim(n));
    std::regex pattern(targets_are_regex ? target_modules : std::string("x"));
    int64_t total = 0;
    // Adds a linear's adapter when the targets match its module path (leaf: its last name).
    auto count = [&](const std::string& path, const std::string& leaf, int64_t in, int64_t out) {
        bool hit = all;
        if (targets_are_regex) hit = std::regex_match(path, pattern);
        else
            for (const std::string& n : names) hit = hit || n == leaf || n == path || ends_with(path, "." + n);
        if (hit) total += r * (in + out) + (use_dora ? out : 0);
    };
    // A gemma3 checkpoint's vision tower linears (all-linear adapts them too).
    if (c.vision)
        for (int64_t layer = 0; layer < c.vision->num_layers; ++layer)
            for (const model::VisionTower::LinearShape& l : c.vision->layer_linears())
                count("model.vision_tower.encoder.layers." + std::to_string(layer) + "." + l.path,
                      l.path.substr(l.path.find('.') + 1), l.in, l.out);
    for (int64_t layer = 0; layer < c.num_layers; ++layer)
        for (const LinearShape& l : layer_linears(c))
            count(c.module_prefix() + "layers." + std::to_string(layer) + "." + l.name, l.name.substr(l.name.find('.') + 1),
                  l.in, l.out);
    return total;
}

RankMemory estimate_rank_memory(const EstimateInputs& in, bool on_gpu) {
    const ParameterCounts p = count_parameters(in.model);
    const int64_t n = std::max(1, in.world_size);
    const int64_t trainable =
        in.lora ? lora_parameters(in.model, in.lora_r, in.lora_target_modules, /*targets_are_regex=*/false, in.lora_dora,
                                  in.lora_target_parameters)
                : p.total;
    RankMemory m;
    const int64_t largest_part = std::max({p.embeddings, p.per_layer, p.head});
    if (in.lora) {
        // 4-bit and 8-bit apply to the decoder layers' linear weights but MoE routers and experts.
        // The decoder's linears (4-bit, 8-bit, 16-bit or fp32), an untied head (16-bit or fp32),
        // and the embeddings and norms in the frozen base's type, as train::model_types and
        // model::quantize_model keep them.
        const int64_t quantizable = p.layer_linears - p.moe_mlp;
        const int64_t head = in.model.tie_word_embeddings ? 0 : p.head - in.model.hidden_size;
        const double sixteen_or_32 = in.frozen_linears_16bit || in.frozen_base_16bit ? 2.0 : 4.0;
        const double linear_bytes =
            in.base_weights == BaseWeights::kFloat32 ? sixteen_or_32 : base_bytes_per_parameter(in.base_weights, in.model.hidden_size);
        const double bytes = static_cast<double>(quantizable) * linear_bytes +
                             static_cast<double>(head + p.moe_mlp) * sixteen_or_32 +
                             static_cast<double>(p.total - p.vision - p.layer_linears - head) * (in.frozen_base_16bit ? 2.0 : 4.0);
        const bool partitioned = in.zero_stage == 3;
        m.base_weights = static_cast<int64_t>(bytes / static_cast<double>(partitioned ? n : 1));
        if (on_gpu && in.embeddings_on_host && !partitioned && !in.model.tie_word_embeddings) {
            const auto embeddings = static_cast<int64_t>(static_cast<double>(p.embeddings) * (in.frozen_base_16bit ? 2.0 : 4.0));
            m.base_weights -= embeddings;
            m.host += embeddings;
        }
        if (partitioned) {
            // A part is gathered whole while it runs; the next one may be gathered before the
            // last is freed (backward's recompute), hence two.
            m.gather_buffers = static_cast<int64_t>(2.0 * static_cast<double>(largest_part) * bytes / static_cast<double>(p.total));
            if (in.offload_params) {
                m.host += m.base_weights;
                m.base_weights = 0;
            }
        }
    }
    m.trainable = 4 * trainable;  // fp32 (adapters, or the weights of full fine-tuning)
    m.gradients = 4 * trainable;  // whole during backward, then reduced (stage >= 2: scattered)
    if (!in.lora && in.zero_stage == 3) {
        // Full fine-tuning under stage 3: fp32 weights and their gradients in 1/world slices; two
        // parts gathered at a time, and one part's whole gradient while it is reduce-scattered.
        m.trainable = 4 * trainable / n;
        m.gradients = 4 * trainable / n + 4 * largest_part;
        m.gather_buffers = 2 * 4 * largest_part;
        if (in.offload_params) {  // the slices and their gradients in host memory
            m.host += m.trainable + 4 * trainable / n;
            m.trainable = 0;
            m.gradients = 4 * largest_part;
        }
    }
    m.optimizer = in.zero_stage == 0 ? 8 * trainable : 12 * trainable / n;  // moments; partitioned: + fp32 master slice
    if (in.eight_bit_optimizer) {
        const int64_t kept_32bit = in.lora ? 0 : in.model.vocab_size * in.model.hidden_size;
        m.optimizer = 8 * kept_32bit + 2 * (trainable - kept_32bit) + 2 * 4 * ((trainable - kept_32bit + 255) / 256);
    }
    if (in.offload_optimizer) {
        m.host += m.optimizer;
        m.optimizer = 0;
    }
    const double layer = layer_activation_bytes(in, on_gpu);
    // Recompute keeps each layer's input: the residual stream, in the embeddings' type.
    const double saved_inputs = static_cast<double>(in.micro_batch * in.sequence_length * in.model.hidden_size) *
                                (in.lora && in.frozen_base_16bit ? 2.0 : 4.0);
    const bool recompute = in.gradient_checkpointing || in.zero_stage == 3;  // ZeRO-3 always recomputes
    const double layers = static_cast<double>(in.model.num_layers);
    // A chunk of fp32 logits, their exponentials and their 16-bit (or fp32) gradient.
    const double logits = static_cast<double>(std::min(in.micro_batch * in.sequence_length, model::loss_chunk_rows(in.model.vocab_size)) *
                                              in.model.vocab_size) * (8.0 + in.activation_bytes);
    // Recomputed layers keep their input; kept ones (--gradient_checkpointing auto) their activations;
    // backward of a recomputed layer holds one layer's activations again.
    const double kept = in.zero_stage == 3 ? 0.0 : static_cast<double>(std::clamp<int64_t>(in.kept_layers, 0, in.model.num_layers));
    m.activations = static_cast<int64_t>(
        (recompute ? (layers - kept) * saved_inputs + kept * layer + layer : layers * layer) + logits);
    m.runtime = on_gpu ? kGiB : kGiB / 2;
    return m;
}

int64_t layers_to_keep(EstimateInputs in, bool on_gpu, int64_t available) {
    if (!in.gradient_checkpointing || in.zero_stage == 3) return 0;
    const double budget = 0.9 * static_cast<double>(available);
    int64_t kept = 0;
    for (int64_t k = 1; k <= in.model.num_layers; ++k) {
        in.kept_layers = k;
        if (static_cast<double>(estimate_rank_memory(in, on_gpu).device_total()) > budget) break;
        kept = k;
    }
    return kept;
}

EstimateInputs estimate_inputs(const config::RunConfig& run, const model::DecoderConfig& model) {
    const config::TrainArgs& a = run.train;
    EstimateInputs in;
    in.model = model;
    in.world_size = run.world_size;
    in.ranks_per_machine = run.processes_per_machine;
    in.zero_stage = run.uses_deepspeed ? run.deepspeed.zero_optimization.stage : 0;
    const auto& z = run.deepspeed.zero_optimization;
    if (run.uses_deepspeed && in.zero_stage > 0)
        in.offload_optimizer = z.offload_optimizer.device != config::OffloadDevice::kNone;
    // Parameters are offloaded when stage 3 partitions them (with LoRA the frozen base weights,
    // else the trained ones).
    if (run.uses_deepspeed)
        in.offload_params = z.offload_param.device != config::OffloadDevice::kNone && in.zero_stage == 3;
    in.lora = a.use_peft_lora;
    in.lora_r = a.lora_r;
    in.lora_target_modules = a.lora_target_modules;
    in.lora_target_parameters = a.lora_target_parameters_list();
    in.lora_dora = a.use_dora;
    if (a.use_4bit_quantization) in.base_weights = a.use_nested_quant ? BaseWeights::kNf4Nested : BaseWeights::kNf4;
    if (a.use_8bit_quantization || model.llm_int8_threshold) in.base_weights = BaseWeights::kInt8;
    if (!model.bnb_4bit_compute_dtype.empty())  // a bitsandbytes 4-bit checkpoint, loaded as it is
        in.base_weights = model.bnb_4bit_nested ? BaseWeights::kNf4Nested : BaseWeights::kNf4;
    in.micro_batch = a.per_device_train_batch_size;
    in.sequence_length = a.max_seq_length;
    in.eight_bit_optimizer = config::bitsandbytes_state_bits(a.optim) == 8 && !(run.uses_deepspeed && run.deepspeed.optimizer);
    in.gradient_checkpointing = a.gradient_checkpointing;
    // every_n_layers: the layers whose index is not a multiple of n keep their activations.
    const int64_t n = a.checkpoint_every_n_layers;
    if (n > 1) in.kept_layers = model.num_layers - (model.num_layers + n - 1) / n;
    in.activation_bytes = (a.bf16 || a.fp16) ? 2 : 4;
    in.frozen_linears_16bit = a.use_peft_lora && (a.bf16 || a.fp16);
    in.frozen_base_16bit = a.use_peft_lora && config::frozen_base_dtype(run, model.torch_dtype) != "float32";
    in.embeddings_on_host = a.use_peft_lora && a.embeddings_on_host;
    in.fused_kernels = a.fused_kernels;
    return in;
}

std::vector<DeepSpeedEstimate> deepspeed_estimates(int stage, const ParameterCounts& params, int gpus_per_node,
                                                   int nodes, double buffer) {
    const double total = static_cast<double>(params.total), gpus = static_cast<double>(gpus_per_node * nodes);
    const double per_node = static_cast<double>(gpus_per_node);
    std::vector<DeepSpeedEstimate> out;
    if (stage < 3) {
        out.push_back({"offload_optimizer=cpu", total * std::max(4.0 * gpus, 16.0) * buffer, 2.0 * total});
        out.push_back({"offload_optimizer=none", total * 4.0 * per_node * buffer,
                       2.0 * total + static_cast<double>(static_cast<int64_t>(18.0 * total / gpus))});
        return out;
    }
    const double nodes_factor = 1.0 / nodes, largest = 4.0 * static_cast<double>(params.largest_tensor);
    for (bool offload_optimizer : {true, false})
        for (bool offload_params : {true, false}) {
            if (!offload_optimizer && offload_params) continue;
            for (bool zero_init : {true, false}) {
                DeepSpeedEstimate e;
                e.options = std::string("offload_param=") + (offload_params ? "cpu" : "none") +
                            ", offload_optimizer=" + (offload_optimizer ? "cpu" : "none") +
                            ", zero_init=" + (zero_init ? "1" : "0");
                if (offload_optimizer && offload_params) {
                    e.per_gpu = largest;
                    e.per_cpu = total * (zero_init ? 18.0 * nodes_factor : std::max(4.0 * per_node, 18.0 * nodes_factor)) * buffer;
                } else if (offload_optimizer) {
                    e.per_gpu = largest + static_cast<double>(static_cast<int64_t>(2.0 * total / gpus));
                    e.per_cpu = total * (zero_init ? 16.0 * nodes_factor : std::max(4.0 * per_node, 16.0 * nodes_factor)) * buffer;
                } else {
                    e.per_gpu = largest + static_cast<double>(static_cast<int64_t>(18.0 * total / gpus));
                    e.per_cpu = (zero_init ? static_cast<double>(params.largest_tensor) : total) * 4.0 * per_node * buffer;
                }
                out.push_back(e);
            }
        }
    return out;
}

std::vector<std::string> settings_that_fit(const EstimateInputs& in, bool on_gpu, int64_t available) {
    // Candidates in groups; the first fitting one of a group is the mildest change of its kind.
    struct Candidate {
        int group;
        std::string what;
        EstimateInputs inputs;
    };
    std::vector<Candidate> candidates;
    auto with = [&](int group, const std::string& what, auto change) {
        EstimateInputs c = in;
        change(c);
        candidates.push_back({group, what, c});
    };
    if (in.zero_stage < 3) with(0, "zero_stage 3", [](EstimateInputs& c) { c.zero_stage = 3; });
    for (int factor : {2, 4, 8})
        with(1, "--num_processes " + std::to_string(in.world_size * factor) + " (more ranks" +
                    (in.zero_stage == 3 ? "" : ", with zero_stage 3") + ")",
             [factor](EstimateInputs& c) {
                 c.world_size *= factor;
                 c.zero_stage = 3;
             });
    if (!in.gradient_checkpointing)
        with(2, "--gradient_checkpointing True", [](EstimateInputs& c) { c.gradient_checkpointing = true; });
    for (int64_t b = in.micro_batch / 2; b >= 1; b /= 2)
        with(3, "--per_device_train_batch_size " + std::to_string(b) + " and " + std::to_string(in.micro_batch / b) +
                    "x the --gradient_accumulation_steps (the same batch)",
             [b](EstimateInputs& c) { c.micro_batch = b; });
    if (!in.offload_optimizer)
        with(4, std::string("offload_optimizer_device cpu") + (in.zero_stage == 0 ? " with zero_stage 1" : ""),
             [](EstimateInputs& c) {
                 c.offload_optimizer = true;
                 c.zero_stage = std::max(c.zero_stage, 1);
             });
    if (!in.offload_params)
        with(5, "zero_stage 3 with offload_param_device cpu", [](EstimateInputs& c) {
            c.zero_stage = 3;
            c.offload_params = true;
        });
    if (in.lora && in.base_weights == BaseWeights::kFloat32)
        with(6, "--use_4bit_quantization True --use_nested_quant True",
             [](EstimateInputs& c) { c.base_weights = BaseWeights::kNf4Nested; });
    std::vector<std::string> fits;
    std::vector<bool> group_done(7, false);
    for (const Candidate& c : candidates) {
        if (group_done[static_cast<size_t>(c.group)]) continue;
        const int64_t need = estimate_rank_memory(c.inputs, on_gpu).device_total();
        if (need > available) continue;
        fits.push_back(c.what + ": " + std::to_string(need / (1 << 20)) + " MiB per rank");
        group_done[static_cast<size_t>(c.group)] = true;
    }
    return fits;
}

}  // namespace ftl::zero
