#include "peft/lora.h"

#include <ATen/core/grad_mode.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <map>
#include <regex>
#include <set>

#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/safetensors_writer.h"
#include "model/tensor_io.h"
#include "peft/moe_lora.h"
#include "util/files.h"
#include "util/error.h"
#include "util/strings.h"

namespace ftl::peft {
namespace {

using nlohmann::json;

// Whether a layer's linear at `path` (inside the layer, or the whole module path) is one of a MoE
// block's parameters (experts' stacks, router: mlp.gate, gpt_oss's mlp.router).
bool is_moe_parameter(const model::Linear& linear, const std::string& path) {
    return linear.weight.dim() == 3 || ends_with(path, "mlp.gate") || ends_with(path, "mlp.router");
}

// (module path, linear) for every linear LoRA can target, in PEFT's creation order: a gemma3
// checkpoint's vision tower first (transformers registers it before the language model), then the
// decoder's layers under DecoderConfig::module_prefix. On a MoE model PEFT adapts the modules of
// every layer first, then each layer's parameters (experts' gate_up_proj, down_proj, router, in
// DecoderLayerWeights::linears() order), whose adapters it names after its nested ParamWrappers:
// mlp.experts for the outer one (down_proj, or gate_up_proj alone), mlp.experts.base_layer for
// gate_up_proj inside it.
std::vector<std::pair<std::string, model::Linear*>> target_candidates(model::CausalLM& model) {
    std::vector<std::pair<std::string, model::Linear*>> out, parameters;
    for (auto& [path, linear] : model.weights().vision_linears) out.emplace_back(path, &linear);
    auto& layers = model.weights().layers;
    const std::string layer_prefix = model.config().module_prefix() + "layers.";
    for (size_t i = 0; i < layers.size(); ++i) {
        const std::string prefix = layer_prefix + std::to_string(i) + ".";
        for (auto& [path, linear] : layers[i].linears()) {
            if (!is_moe_parameter(*linear, path)) {
                out.emplace_back(prefix + path, linear);
                continue;
            }
            const std::string module = path == layers[i].router_path
                                           ? path
                                           : experts_adapter_module(linear == &layers[i].experts_gate_up,
                                                                    layers[i].experts_down.adapter.has_value());
            parameters.emplace_back(prefix + module, linear);
        }
    }
    out.insert(out.end(), parameters.begin(), parameters.end());
    return out;
}

std::vector<std::string> target_names(const LoraConfig& config) {
    std::vector<std::string> names;
    for (const auto& n : split(config.target_modules, ','))
        if (!trim(n).empty()) names.push_back(trim(n));
    return names;
}

bool matches(const std::string& path, const LoraConfig& config, const std::vector<std::string>& names,
             const std::regex* pattern) {
    if (to_lower(config.target_modules) == "all-linear") return true;  // lm_head is never a candidate
    if (pattern) return std::regex_match(path, *pattern);
    for (const auto& n : names)
        if (path == n || ends_with(path, "." + n)) return true;
    return false;
}

// torch.nn.init.kaiming_uniform_(w, a) for a [out, in] weight: bound = gain * sqrt(3 / fan_in),
// gain = sqrt(2 / (1 + a^2)); computed in the same order as torch so the bound is bit-identical.
void kaiming_uniform(at::Tensor& w, double a, at::Generator& generator) {
    const double gain = std::sqrt(2.0 / (1.0 + a * a));
    const double std_dev = gain / std::sqrt(static_cast<double>(w.size(1)));
    const double bound = std::sqrt(3.0) * std_dev;
    w.uniform_(-bound, bound, generator);
}

// A new adapter of `rank` for a linear (out, in), drawn as PEFT draws it: nn.Linear(in, rank) and
// nn.Linear(rank, out) take their default kaiming-uniform weights, then A is redrawn
// (reset_lora_parameters) and B zeroed. For an experts' stack `rank` is r x E (ParamWrapper's).
model::LowRankAdapter new_adapter(int64_t out, int64_t in, int64_t rank, double scaling, double dropout,
                                  at::Generator& generator, const at::Device& device) {
    auto options = at::TensorOptions().dtype(at::kFloat);  // drawn on CPU, as torch's CPU generator does
    at::Tensor a = at::empty({rank, in}, options);
    at::Tensor b = at::empty({out, rank}, options);
    kaiming_uniform(a, std::sqrt(5.0), generator);  // nn.Linear(in, r) default init
    kaiming_uniform(b, std::sqrt(5.0), generator);  // nn.Linear(r, out) default init
    kaiming_uniform(a, std::sqrt(5.0), generator);  // reset_lora_parameters
    b.zero_();
    return model::LowRankAdapter{a.to(device), b.to(device), scaling, dropout, {}};
}

// attach_lora on a MoE model (peft/moe_lora.h's reading of the targets).
std::vector<std::string> attach_moe_lora(model::CausalLM& model, const LoraConfig& config, at::Generator& generator,
                                         std::optional<at::Device> device, bool magnitudes_later) {
    config.validate();
    const model::DecoderConfig& c = model.config();
    const MoeTargets targets = resolve_moe_targets(c, config);
    const LoraConfig drawn = with_moe_targets(config, targets);
    std::vector<std::string> adapted;
    at::NoGradGuard no_grad;
    // `key`: the path PEFT's rank and alpha patterns are matched against.
    auto adapt = [&](const std::string& path, const std::string& key, model::Linear& linear, double dropout) {
        const auto [out, in] = model::linear_features(linear);
        const int64_t stacked = linear.weight.dim() == 3 ? linear.weight.size(0) : 1;
        linear.adapter = new_adapter(out, in, drawn.rank_for(key) * stacked, drawn.scaling_for(key), dropout, generator,
                                     device.value_or(linear.weight.device()));
        adapted.push_back(path);
    };
    std::set<std::string> matched;
    auto& layers = model.weights().layers;
    for (size_t i = 0; i < layers.size(); ++i)
        for (auto& [path, linear] : layers[i].linears()) {
            const std::string leaf = path.substr(path.rfind('.') + 1);
            if (is_moe_parameter(*linear, path) || !adapts_module(c, targets, leaf)) continue;
            matched.insert(leaf);
            const std::string module = c.module_prefix() + "layers." + std::to_string(i) + "." + path;
            adapt(module, module, *linear, config.dropout);
            if (config.use_dora)
                linear->adapter->magnitude = magnitudes_later ? at::empty({linear->weight.size(0)}, linear->adapter->A.options())
                                                              : model::dora_magnitude(*linear);
        }
    for (const std::string& name : targets.module_names)
        if (!matched.count(name))
            fail(ErrorKind::kConfig, "--lora_target_modules: '" + name + "' matches no linear layer of this " + c.model_type +
                                         " model (its attention's q_proj, k_proj, v_proj, o_proj; its experts' and router's "
                                         "names as PEFT maps them; or all-linear)");
    // Then the parameters, layer by layer (PEFT's _inject_parameters runs after the modules').
    for (size_t i = 0; i < layers.size(); ++i) {
        if (!layers[i].moe) continue;
        for (auto& [path, linear] : layers[i].linears()) {
            if (!is_moe_parameter(*linear, path)) continue;
            const std::string key = moe_parameter_key(c, i, path, linear->weight.dim() == 3);
            if (adapts_parameter(targets, key))
                adapt(c.module_prefix() + "layers." + std::to_string(i) + "." + path, key, *linear, 0.0);
        }
    }
    if (adapted.empty())
        fail(ErrorKind::kConfig, "--lora_target_modules: '" + config.target_modules + "' matches no linear layer");
    return adapted;
}

}  // namespace

double LoraConfig::scaling() const {
    return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

namespace {

// The value of the first pattern matching the end of `path` (peft.utils.other.get_pattern_key), or `otherwise`.
template <class Value>
Value pattern_value(const std::vector<std::pair<std::string, Value>>& patterns, const std::string& path, Value otherwise,
                    const char* field) {
    for (const auto& [pattern, value] : patterns) {
        std::regex whole;
        try {
            whole = std::regex("(.*\\.)?(" + pattern + ")");
        } catch (const std::regex_error& e) {
            fail(ErrorKind::kConfig, std::string(field) + ": invalid regex '" + pattern + "': " + e.what());
        }
        if (std::regex_match(path, whole)) return value;
    }
    return otherwise;
}

}  // namespace

int64_t LoraConfig::rank_for(const std::string& path) const {
    return pattern_value(rank_pattern, path, r, "rank_pattern");
}

double LoraConfig::scaling_for(const std::string& path) const {
    LoraConfig here = *this;
    here.r = rank_for(path);
    here.alpha = pattern_value(alpha_pattern, path, alpha, "alpha_pattern");
    return here.scaling();
}

void LoraConfig::validate() const {
    if (r <= 0) fail(ErrorKind::kConfig, "--lora_r: must be a positive integer (got " + std::to_string(r) + ")");
    if (!(dropout >= 0.0 && dropout < 1.0))
        fail(ErrorKind::kConfig, "--lora_dropout: must be in [0, 1) (got " + std::to_string(dropout) + ")");
    if (target_modules.empty()) fail(ErrorKind::kConfig, "--lora_target_modules: must name at least one module");
    for (const auto& [pattern, rank] : rank_pattern)
        if (rank <= 0)
            fail(ErrorKind::kConfig, "rank_pattern: '" + pattern + "' must map to a positive rank (got " + std::to_string(rank) + ")");
}

namespace {

bool matches_some(const LinearPaths& candidates, const std::string& name) {
    for (const auto& [path, linear] : candidates)
        if (path == name || ends_with(path, "." + name)) return true;
    return false;
}

// `name` matches nothing but a linear of the model fuses it (phi3's).
bool fused_away(const LinearPaths& candidates, const std::string& name) {
    static const std::map<std::string, std::string> fused_into{{"q_proj", "qkv_proj"}, {"k_proj", "qkv_proj"},
                                                               {"v_proj", "qkv_proj"}, {"gate_proj", "gate_up_proj"},
                                                               {"up_proj", "gate_up_proj"}};
    const auto it = fused_into.find(name);
    return it != fused_into.end() && !matches_some(candidates, name) && matches_some(candidates, it->second);
}

}  // namespace

std::optional<std::string> ignored_targets_warning(model::CausalLM& model, const LoraConfig& config) {
    if (config.targets_are_regex || to_lower(config.target_modules) == "all-linear") return std::nullopt;
    const std::string family = model.config().model_type;
    if (model.config().moe) {
        const MoeTargets targets = resolve_moe_targets(model.config(), config);
        if (targets.absent.empty()) return std::nullopt;
        const std::string experts = model.config().moe->mixtral_names
                                        ? "whose experts' linears PEFT calls w1, w3 (gate_up_proj) and w2 (down_proj)"
                                        : "whose experts and router are parameters, not linear modules";
        return "--lora_target_modules: " + join(targets.absent, ", ") + " name no linear of this " + family + " model, " +
               experts + "; as PEFT does, only the targets it has are adapted";
    }
    std::vector<std::string> fused;
    const LinearPaths candidates = target_candidates(model);
    for (const auto& name : target_names(config))
        if (fused_away(candidates, name)) fused.push_back(name);
    if (fused.empty()) return std::nullopt;
    return "--lora_target_modules: " + join(fused, ", ") + " are fused into this " + family +
           " model's qkv_proj / gate_up_proj, so (as PEFT does) only the targets it has are adapted; name qkv_proj and "
           "gate_up_proj, or all-linear, to adapt those";
}

std::vector<std::string> attach_lora(model::CausalLM& model, const LoraConfig& config, at::Generator& generator,
                                     std::optional<at::Device> device, bool magnitudes_later) {
    if (model.config().moe) return attach_moe_lora(model, config, generator, device, magnitudes_later);
    return attach_lora(target_candidates(model), model.config().model_type, config, generator, device, magnitudes_later);
}

std::vector<std::string> attach_lora(const LinearPaths& candidates, const std::string& model_type,
                                     const LoraConfig& config, at::Generator& generator, std::optional<at::Device> device,
                                     bool magnitudes_later) {
    config.validate();
    if (!config.target_parameters.empty())
        fail(ErrorKind::kConfig, "--lora_target_parameters (" + join(config.target_parameters, ", ") + "): PEFT's parameter "
                                 "targets adapt the experts and routers of mixture-of-experts models (qwen3_moe, mixtral, "
                                 "gpt_oss), not a " + model_type + " model's linears (name those in --lora_target_modules)");
    const auto names = target_names(config);
    std::unique_ptr<std::regex> pattern;
    if (config.targets_are_regex) {
        try {
            pattern = std::make_unique<std::regex>(config.target_modules);
        } catch (const std::regex_error& e) {
            fail(ErrorKind::kConfig, "--lora_target_modules: invalid regex '" + config.target_modules + "': " + e.what());
        }
    }
    // Every listed name must match something (PEFT raises only when nothing matches; a name that
    // matches nothing is a typo here), except names the model fuses into one linear.
    if (!pattern && to_lower(config.target_modules) != "all-linear") {
        std::set<std::string> known;
        for (const auto& [path, linear] : candidates) known.insert(path.substr(path.rfind('.') + 1));
        for (const auto& n : names) {
            if (!matches_some(candidates, n) && !fused_away(candidates, n))
                fail(ErrorKind::kConfig, "--lora_target_modules: '" + n + "' matches no linear layer of this " +
                                             model_type + " model (its linears: " +
                                             join(std::vector<std::string>(known.begin(), known.end()), ", ") +
                                             "; or all-linear)" +
                                             did_you_mean(n, std::vector<std::string>(known.begin(), known.end())));
        }
    }
    at::NoGradGuard no_grad;
    std::vector<std::string> adapted;
    for (const auto& [path, linear] : candidates) {
        if (!matches(path, config, names, pattern.get())) continue;
        const auto [out, in] = model::linear_features(*linear);
        // A carried vision tower's linears are shapes only (meta): their adapters live on the host.
        const bool shape_only = linear->weight.is_meta();
        if (shape_only && config.use_dora)
            fail(ErrorKind::kConfig, "--use_dora True: DoRA's magnitudes need the weights of " + path + ", in the vision "
                                     "tower ftlaunch does not load; target the language model's linears only (a regex "
                                     "such as '.*language_model.*(q_proj|v_proj)')");
        const at::Device on = device.value_or(shape_only ? at::Device(at::kCPU) : linear->weight.device());
        linear->adapter = new_adapter(out, in, config.rank_for(path), config.scaling_for(path), config.dropout, generator, on);
        if (config.use_dora)
            linear->adapter->magnitude = magnitudes_later ? at::empty({out}, at::TensorOptions().dtype(at::kFloat).device(on))
                                                          : model::dora_magnitude(*linear).to(on);
        adapted.push_back(path);
    }
    if (adapted.empty())
        fail(ErrorKind::kConfig, "--lora_target_modules: '" + config.target_modules + "' matches no linear layer");
    return adapted;
}

std::vector<std::pair<std::string, at::Tensor>> adapter_parameters(model::CausalLM& model) {
    return adapter_parameters(target_candidates(model));
}

std::vector<std::pair<std::string, at::Tensor>> adapter_parameters(const LinearPaths& candidates) {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const auto& [path, linear] : candidates) {
        if (!linear->adapter) continue;
        out.emplace_back("base_model.model." + path + ".lora_A.weight", linear->adapter->A);
        out.emplace_back("base_model.model." + path + ".lora_B.weight", linear->adapter->B);
        if (linear->adapter->magnitude.defined())  // PEFT saves DoRA's vector without ".weight"
            out.emplace_back("base_model.model." + path + ".lora_magnitude_vector", linear->adapter->magnitude);
    }
    return out;
}

std::vector<std::pair<std::string, at::Tensor>> embedding_tensors(model::CausalLM& model) {
    model::DecoderWeights& w = model.weights();
    return {{"base_model.model." + model.config().module_prefix() + "embed_tokens.weight", w.embed_tokens},
            {"base_model.model.lm_head.weight", w.lm_head.defined() ? w.lm_head : w.embed_tokens}};
}

namespace {

void write_adapter(const std::string& dir, const LinearPaths& candidates, const LoraConfig& config,
                   const std::vector<std::pair<std::string, at::Tensor>>& full_tensors, bool moe);

}  // namespace

void save_adapter(const std::string& dir, model::CausalLM& model, const LoraConfig& config,
                  const std::vector<std::pair<std::string, at::Tensor>>& full_tensors) {
    const bool moe = model.config().moe.has_value();
    write_adapter(dir, target_candidates(model), moe ? with_moe_targets(config, resolve_moe_targets(model.config(), config)) : config,
                  full_tensors, moe);
}

void save_adapter(const std::string& dir, const LinearPaths& candidates, const LoraConfig& config,
                  const std::vector<std::pair<std::string, at::Tensor>>& full_tensors) {
    write_adapter(dir, candidates, config, full_tensors, /*moe=*/false);
}

namespace {

// save_adapter; `moe` for a MoE model, whose parameter targets adapter_config.json lists in
// target_parameters, apart from its module targets.
void write_adapter(const std::string& dir, const LinearPaths& candidates, const LoraConfig& config,
                   const std::vector<std::pair<std::string, at::Tensor>>& full_tensors, bool moe) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) fail(ErrorKind::kIo, dir + ": cannot create the adapter folder: " + ec.message());
    std::set<std::string> targets;
    for (const auto& [path, linear] : candidates)
        if (linear->adapter && !(moe && is_moe_parameter(*linear, path)))  // those: target_parameters
            targets.insert(path.substr(path.rfind('.') + 1));
    std::vector<std::pair<std::string, at::Tensor>> saved = adapter_parameters(candidates);
    saved.insert(saved.end(), full_tensors.begin(), full_tensors.end());
    const model::CpuTensorViews weights = model::cpu_views(saved);
    io::write_safetensors(dir + "/adapter_model.safetensors", weights.views, {{"format", "pt"}});
    json cfg = {{"peft_type", "LORA"},
                {"task_type", config.task_type},
                {"base_model_name_or_path", config.base_model_name_or_path},
                {"r", config.r},
                {"lora_alpha", config.alpha},
                {"lora_dropout", config.dropout},
                {"use_rslora", config.use_rslora},
                {"bias", "none"},
                {"fan_in_fan_out", false},
                {"inference_mode", true},
                {"init_lora_weights", true},
                {"modules_to_save", nullptr},
                {"use_dora", config.use_dora},
                {"target_modules", std::vector<std::string>(targets.begin(), targets.end())}};
    cfg["target_parameters"] = config.target_parameters.empty() ? json(nullptr) : json(config.target_parameters);
    cfg["rank_pattern"] = json::object();
    cfg["alpha_pattern"] = json::object();
    for (const auto& [pattern, rank] : config.rank_pattern) cfg["rank_pattern"].emplace(pattern, rank);
    for (const auto& [pattern, alpha] : config.alpha_pattern) cfg["alpha_pattern"].emplace(pattern, alpha);
    io::write_file_atomically(dir + "/adapter_config.json", [&](std::ostream& out) { out << cfg.dump(2) << "\n"; });
}

}  // namespace

LoraConfig read_adapter_config(const std::string& dir) {
    const std::string config_path = dir + "/adapter_config.json";
    const auto text = read_text_file(config_path);
    if (!text) fail(ErrorKind::kConfig, config_path + ": cannot read (is " + dir + " a PEFT adapter folder?)");
    // ordered: PEFT applies the first rank / alpha pattern that matches, in the file's order.
    const nlohmann::ordered_json cfg = nlohmann::ordered_json::parse(*text, nullptr, false);
    if (cfg.is_discarded() || !cfg.is_object()) fail(ErrorKind::kConfig, config_path + ": not a JSON object");
    if (cfg.value("peft_type", "") != "LORA")
        fail(ErrorKind::kConfig, config_path + ": peft_type: only LORA adapters are read (got " +
                                     cfg.value("peft_type", nlohmann::ordered_json("missing")).dump() + ")");
    LoraConfig config;
    try {
        config.r = cfg.at("r").get<int64_t>();
        config.alpha = cfg.value("lora_alpha", 8.0);
        config.dropout = cfg.value("lora_dropout", 0.0);
        config.use_rslora = cfg.value("use_rslora", false);
        config.use_dora = cfg.value("use_dora", false);
        if (cfg.contains("task_type") && cfg["task_type"].is_string()) config.task_type = cfg["task_type"].get<std::string>();
        config.base_model_name_or_path = cfg.value("base_model_name_or_path", nlohmann::ordered_json("")).is_string()
                                             ? cfg.value("base_model_name_or_path", "")
                                             : "";
        const nlohmann::ordered_json& targets = cfg.at("target_modules");
        if (targets.is_string()) {
            config.target_modules = targets.get<std::string>();
            config.targets_are_regex = to_lower(config.target_modules) != "all-linear";
        } else {
            config.target_modules = join(targets.get<std::vector<std::string>>(), ",");
        }
        if (cfg.contains("target_parameters") && cfg["target_parameters"].is_array())
            config.target_parameters = cfg["target_parameters"].get<std::vector<std::string>>();
    } catch (const nlohmann::ordered_json::exception& e) {
        fail(ErrorKind::kConfig, config_path + ": r / target_modules missing or of the wrong type (" + e.what() + ")");
    }
    for (const char* field : {"rank_pattern", "alpha_pattern"}) {
        if (!cfg.contains(field) || cfg[field].is_null()) continue;
        if (!cfg[field].is_object())
            fail(ErrorKind::kConfig, config_path + ": " + field + ": expected an object of pattern -> number (got " +
                                         cfg[field].dump() + ")");
        for (const auto& [pattern, value] : cfg[field].items()) {
            if (!value.is_number() || (std::string(field) == "rank_pattern" && !value.is_number_integer()))
                fail(ErrorKind::kConfig, config_path + ": " + field + "['" + pattern + "']: expected " +
                                             (std::string(field) == "rank_pattern" ? "an integer rank" : "a number") +
                                             " (got " + value.dump() + ")");
            if (std::string(field) == "rank_pattern") config.rank_pattern.emplace_back(pattern, value.get<int64_t>());
            else config.alpha_pattern.emplace_back(pattern, value.get<double>());
        }
    }
    return config;
}

namespace {

// The adapter's tensors copied into the attached adapters (of `parameters`, PEFT names).
void load_adapter_weights(const std::string& dir, const io::Checkpoint& ckpt, const LoraConfig& config,
                          const std::vector<std::pair<std::string, at::Tensor>>& parameters) {
    at::NoGradGuard no_grad;
    for (const auto& [name, param] : parameters) {
        if (!ckpt.contains(name))
            fail(ErrorKind::kConfig, dir + "/adapter_model.safetensors: no tensor '" + name + "' for the adapter config's targets");
        at::Tensor loaded = model::mapped_tensor(ckpt.shared_file_of(name), name);
        if (loaded.sizes() != param.sizes())
            fail(ErrorKind::kConfig, dir + "/adapter_model.safetensors: '" + name + "' does not fit the model (adapter r=" +
                                         std::to_string(config.r) + ")");
        at::Tensor target = param;
        target.copy_(loaded);
    }
}

}  // namespace

LoraConfig load_adapter(const std::string& dir, const LinearPaths& candidates, const std::string& model_type) {
    const LoraConfig config = read_adapter_config(dir);
    at::Generator unused = at::make_generator<at::CPUGeneratorImpl>(0);
    attach_lora(candidates, model_type, config, unused);
    const io::Checkpoint ckpt = io::Checkpoint::open(dir, "adapter_model");
    load_adapter_weights(dir, ckpt, config, adapter_parameters(candidates));
    return config;
}

LoraConfig load_adapter(const std::string& dir, model::CausalLM& model) {
    const LoraConfig config = read_adapter_config(dir);
    at::Generator unused = at::make_generator<at::CPUGeneratorImpl>(0);
    attach_lora(model, config, unused);
    const io::Checkpoint ckpt = io::Checkpoint::open(dir, "adapter_model");
    load_adapter_weights(dir, ckpt, config, adapter_parameters(model));
    at::NoGradGuard no_grad;
    // An adapter trained with added tokens carries the whole resized embeddings (and head): the
    // model takes their row count first, as the training run resized it.
    const std::string embeddings = embedding_tensors(model).front().first;
    if (ckpt.contains(embeddings)) {
        const int64_t rows = model::mapped_tensor(ckpt.shared_file_of(embeddings), embeddings).size(0);
        if (rows != model.config().vocab_size) model.resize_token_embeddings(rows);
    }
    for (auto& [name, weight] : embedding_tensors(model)) {
        if (!ckpt.contains(name)) continue;
        const at::Tensor loaded = model::mapped_tensor(ckpt.shared_file_of(name), name);
        if (loaded.sizes() != weight.sizes())
            fail(ErrorKind::kConfig, dir + "/adapter_model.safetensors: '" + name + "' has " + std::to_string(loaded.size(0)) +
                                         " rows but the model's vocabulary is " + std::to_string(weight.size(0)) +
                                         " (resize the model's embeddings as the training run did)");
        weight.copy_(loaded);
    }
    return config;
}

}  // namespace ftl::peft
