#include "peft/merge.h"

#include <ATen/core/grad_mode.h>

#include <filesystem>
#include <map>

#include "io/checkpoint.h"
#include "io/safetensors_writer.h"
#include "model/save.h"
#include "model/tensor_io.h"
#include "peft/merge_experts.h"
#include "util/error.h"
#include "util/strings.h"

namespace ftl::peft {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPeftPrefix = "base_model.model.";

// What the adapter holds for one base tensor.
struct AdapterEntry {
    std::string module;          // the adapted module's path (what rank_pattern / alpha_pattern match)
    std::string lora_a, lora_b;  // LoRA pair (names in adapter_model.safetensors)
    std::string magnitude;       // DoRA's magnitude vector, when the adapter has one
    std::string replacement;     // or a full tensor saved in the adapter
};

// Base tensor name -> its adapter entry, from adapter_model.safetensors' names:
// base_model.model.<module>.lora_A.weight / .lora_B.weight pair up into <module>.weight;
// base_model.model.<name> without lora_ is a full tensor (embed_tokens, lm_head).
std::map<std::string, AdapterEntry> adapter_entries(const io::Checkpoint& adapter) {
    std::map<std::string, AdapterEntry> entries;
    for (const std::string& name : adapter.names()) {
        if (!starts_with(name, kPeftPrefix))
            fail(ErrorKind::kConfig, adapter.dir() + "/adapter_model.safetensors: '" + name +
                                         "' is not a PEFT name (base_model.model.<module>...)");
        const std::string rest = name.substr(std::string(kPeftPrefix).size());
        for (const std::string kind : {".lora_A.weight", ".lora_B.weight"})
            if (ends_with(rest, kind)) {
                const std::string module = rest.substr(0, rest.size() - kind.size());
                entries[module + ".weight"].module = module;
                (kind == ".lora_A.weight" ? entries[module + ".weight"].lora_a : entries[module + ".weight"].lora_b) = name;
            }
        const std::string magnitude = ".lora_magnitude_vector";
        if (ends_with(rest, magnitude)) entries[rest.substr(0, rest.size() - magnitude.size()) + ".weight"].magnitude = name;
        if (rest.find(".lora_") == std::string::npos) entries[rest].replacement = name;
    }
    for (const auto& [base, entry] : entries)
        if (entry.replacement.empty() && (entry.lora_a.empty() || entry.lora_b.empty()))
            fail(ErrorKind::kConfig, adapter.dir() + "/adapter_model.safetensors: '" + base +
                                         "' has only one of lora_A and lora_B");
    return entries;
}

// transformers 5 names a gemma3 checkpoint's modules (model.language_model.*, model.vision_tower.*)
// apart from the hub's files (language_model.model.*, vision_tower[.vision_model].*): an adapter's
// tensor name as `base` holds it (unchanged when the base has it, or has none of the renames).
std::string name_in_base(const std::string& name, const io::Checkpoint& base) {
    if (base.contains(name)) return name;
    const std::vector<std::pair<std::string, std::vector<std::string>>> renames = {
        {"model.language_model.", {"language_model.model."}},
        {"model.vision_tower.", {"vision_tower.vision_model.", "vision_tower."}}};
    for (const auto& [from, candidates] : renames)
        if (starts_with(name, from))
            for (const std::string& to : candidates)
                if (base.contains(to + name.substr(from.size()))) return to + name.substr(from.size());
    return name;
}

void copy_if_present(const std::string& from_dir, const std::string& to_dir, const std::string& file) {
    const fs::path from = fs::path(from_dir) / file;
    if (!fs::exists(from)) return;
    std::error_code ec;
    fs::copy_file(from, fs::path(to_dir) / file, fs::copy_options::overwrite_existing, ec);
    if (ec) fail(ErrorKind::kIo, "cannot copy " + from.string() + " into " + to_dir + ": " + ec.message());
}

void check_distinct(const MergeOptions& o) {
    std::error_code ec;
    for (const std::string& input : {o.model_dir, o.adapter_dir})
        if (fs::exists(o.output_dir) && fs::equivalent(o.output_dir, input, ec))
            fail(ErrorKind::kUsage, "--output_dir " + o.output_dir + " is an input folder (" + input +
                                        "); give a new folder for the merged model");
}

}  // namespace

MergeSummary merge_adapter(const MergeOptions& options) {
    check_distinct(options);
    const LoraConfig lora = read_adapter_config(options.adapter_dir);
    const io::Checkpoint base = io::Checkpoint::open(options.model_dir, "model");
    const io::Checkpoint adapter = io::Checkpoint::open(options.adapter_dir, "adapter_model");
    std::optional<ExpertMerge> experts;  // PEFT's target_parameters: experts' stacks, routers
    if (!lora.target_parameters.empty()) experts.emplace(options.model_dir, lora, base, adapter);
    std::map<std::string, AdapterEntry> entries;
    for (auto& [name, entry] : adapter_entries(adapter)) {
        if (experts && experts->owns_adapter_tensor(entry.lora_a)) continue;
        std::string in_base = name_in_base(name, base);
        if (experts && !base.contains(in_base)) in_base = experts->checkpoint_name(name);  // mixtral's router
        entries[in_base] = std::move(entry);
    }

    // The plan: every base tensor, in the base's order, with its output name, dtype and shape
    // (an MXFP4 stack's blocks become the stack in floating point, its scales go).
    std::vector<io::TensorSpec> specs;
    std::vector<std::string> sources;  // the base tensor each spec is made from
    std::vector<bool> from_experts;
    MergeSummary summary;
    for (const std::string& name : base.names()) {
        const io::TensorView view = base.tensor(name);
        io::TensorSpec spec{name, options.dtype ? model::dtype_of(*options.dtype) : view.dtype, view.shape};
        const auto expert_output = experts ? experts->output_of(name) : std::nullopt;
        const auto entry = entries.find(name);
        if (expert_output) {
            if (expert_output->name.empty()) continue;
            spec.name = expert_output->name;
            spec.shape = expert_output->shape;
            if (ends_with(name, "_blocks") && !options.dtype) spec.dtype = model::dtype_of(experts->dequantized_dtype());
            if (expert_output->adapted) ++summary.merged_linears;
        } else if (entry != entries.end() && !entry->second.replacement.empty()) {
            spec.shape = adapter.tensor(entry->second.replacement).shape;
            ++summary.replaced_tensors;
        } else if (entry != entries.end()) {
            const io::TensorView a = adapter.tensor(entry->second.lora_a), b = adapter.tensor(entry->second.lora_b);
            if (view.shape.size() != 2 || a.shape.size() != 2 || b.shape.size() != 2 || b.shape[0] != view.shape[0] ||
                a.shape[1] != view.shape[1] || a.shape[0] != b.shape[1])
                fail(ErrorKind::kConfig, options.adapter_dir + "/adapter_model.safetensors: the LoRA pair for '" + name +
                                             "' does not fit the base weight's shape (another base model?)");
            ++summary.merged_linears;
        }
        specs.push_back(spec);
        sources.push_back(name);
        from_experts.push_back(expert_output.has_value());
    }
    for (const auto& [name, entry] : entries)
        if (name.find(".mlp.experts.") != std::string::npos && !base.contains(name))
            fail(ErrorKind::kConfig, options.adapter_dir + ": the adapter trains the experts of a mixture-of-experts model "
                                     "('" + name + "') but its adapter_config.json lists no target_parameters naming them");
        else if (!base.contains(name) && !(name == "lm_head.weight" && !entry.replacement.empty()))  // tied: no lm_head
            fail(ErrorKind::kConfig, options.adapter_dir + ": the adapter changes '" + name + "', which " +
                                         options.model_dir + " does not have (another base model?)");

    std::error_code ec;
    fs::create_directories(options.output_dir, ec);
    if (ec) fail(ErrorKind::kIo, "--output_dir " + options.output_dir + ": cannot create it: " + ec.message());
    at::Tensor current;  // the tensor being written; one at a time
    at::NoGradGuard no_grad;
    auto produce = [&](size_t i) {
        const io::TensorSpec& spec = specs[i];
        const at::ScalarType out_type = model::scalar_type_of(spec.dtype);
        const auto entry = entries.find(sources[i]);
        if (from_experts[i]) {
            current = experts->merged(sources[i]).to(out_type).contiguous();
        } else if (entry == entries.end()) {
            current = model::mapped_tensor(base.shared_file_of(sources[i]), sources[i]).to(out_type).contiguous();
        } else if (!entry->second.replacement.empty()) {
            const std::string& from = entry->second.replacement;
            current = model::mapped_tensor(adapter.shared_file_of(from), from).to(out_type).contiguous();
        } else {
            const at::Tensor a = model::mapped_tensor(adapter.shared_file_of(entry->second.lora_a), entry->second.lora_a);
            const at::Tensor b = model::mapped_tensor(adapter.shared_file_of(entry->second.lora_b), entry->second.lora_b);
            const at::Tensor w = model::mapped_tensor(base.shared_file_of(sources[i]), sources[i]);
            const double scaling = lora.scaling_for(entry->second.module);
            at::Tensor merged = w.to(at::kFloat) + at::matmul(b.to(at::kFloat), a.to(at::kFloat)) * scaling;
            if (!entry->second.magnitude.empty()) {  // DoRA: each row rescaled to its magnitude (PEFT's merge_safe)
                const std::string& m = entry->second.magnitude;
                const at::Tensor magnitude = model::mapped_tensor(adapter.shared_file_of(m), m).to(at::kFloat);
                const at::Tensor norm = at::linalg_vector_norm(merged, 2, at::IntArrayRef{1});
                merged = (magnitude / norm).view({-1, 1}) * merged;
            }
            current = merged.to(out_type).contiguous();
        }
        return model::view_of(current);
    };
    summary.files = io::write_sharded_safetensors(options.output_dir, specs, produce, options.max_shard_bytes, "model",
                                                  {{"format", "pt"}});
    current = at::Tensor();

    // config.json: the base's, with the dtype written and the vocabulary of replaced embeddings.
    std::optional<int64_t> vocab_size;
    if (const auto e = entries.find("model.embed_tokens.weight"); e != entries.end() && !e->second.replacement.empty())
        vocab_size = adapter.tensor(e->second.replacement).shape.at(0);
    model::write_model_config(options.model_dir, options.output_dir, vocab_size, options.dtype,
                              /*floating_point_weights=*/experts && experts->dequantizes());
    for (const char* file : {"generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                             "tokenizer.model", "added_tokens.json", "chat_template.jinja"}) {
        copy_if_present(options.model_dir, options.output_dir, file);
        copy_if_present(options.adapter_dir, options.output_dir, file);
    }
    return summary;
}

}  // namespace ftl::peft
