#include "train/resume.h"

#include <ATen/core/grad_mode.h>

#include <cstdio>
#include <map>
#include <sstream>

#include "io/checkpoint.h"
#include "model/tensor_io.h"
#include "util/checksum.h"
#include "util/error.h"
#include "util/files.h"

namespace ftl::train {

using nlohmann::json;

void restore_weights(const std::string& dir, const std::string& stem,
                     std::vector<std::pair<std::string, at::Tensor>>& trainable) {
    const io::Checkpoint ckpt = io::Checkpoint::open(dir, stem);
    at::NoGradGuard no_grad;
    for (auto& [name, t] : trainable) {
        if (!ckpt.contains(name))
            fail(ErrorKind::kConfig, dir + ": the checkpoint has no '" + name +
                                         "' for this run (a checkpoint of another model or LoRA configuration?)");
        const at::Tensor saved = model::mapped_tensor(ckpt.shared_file_of(name), name);
        if (saved.sizes() != t.sizes()) {
            std::ostringstream shapes;
            shapes << saved.sizes() << " in the checkpoint but " << t.sizes() << " in this run";
            fail(ErrorKind::kConfig, dir + ": '" + name + "' has shape " + shapes.str() +
                                         " (a checkpoint of another model or LoRA configuration?)");
        }
        t.copy_(saved);
    }
}

void restore_partitioned_weights(const std::string& dir, const std::string& stem, zero::Sharding& sharding) {
    const io::Checkpoint ckpt = io::Checkpoint::open(dir, stem);
    std::map<std::string, at::Tensor> by_name;
    for (const std::string& name : ckpt.names()) by_name.emplace(name, model::mapped_tensor(ckpt.shared_file_of(name), name));
    sharding.write_parameters(
        sharding.local_of(by_name, "", dir + " (a checkpoint of another model or LoRA configuration?)"));
}

json run_identity(const config::TrainArgs& args, const JobInputs& inputs, model::CausalLM& lm, int world_size,
                  int zero_stage) {
    const std::string config_text = read_text_file(inputs.model_dir + "/config.json").value_or("");
    char crc[9];
    std::snprintf(crc, sizeof crc, "%08x", crc32c(config_text.data(), config_text.size()));
    json adapter = nullptr;
    if (args.use_peft_lora)
        adapter = {{"r", args.lora_r}, {"lora_alpha", args.lora_alpha}, {"target_modules", args.lora_target_modules},
                   {"use_rslora", args.use_rslora}, {"use_dora", args.use_dora}};
    if (args.use_peft_lora && !args.lora_target_parameters.empty())  // absent otherwise: older checkpoints resume
        adapter["target_parameters"] = args.lora_target_parameters;
    return {{"base_model", args.model_name_or_path},
            {"base_config_crc32c", crc},
            {"vocab_size", lm.config().vocab_size},
            {"adapter", adapter},
            {"four_bit", args.use_4bit_quantization ? json(args.bnb_4bit_quant_type) : json(nullptr)},
            {"eight_bit", args.use_8bit_quantization ? json(true) : json(nullptr)},
            {"world_size", world_size},
            {"zero_stage", zero_stage}};
}

void check_same_run(const json& saved, const json& current, const std::string& dir) {
    auto base_model = [](const json& identity) {
        const json name = identity.value("base_model", json());
        return name.is_string() ? name.get<std::string>() : name.dump();
    };
    for (const char* key : {"base_config_crc32c", "vocab_size", "adapter", "four_bit", "eight_bit"}) {
        const json mine = current.value(key, json()), theirs = saved.value(key, json());
        if (mine == theirs) continue;
        const std::string what = std::string(key) == "base_config_crc32c"
                                     ? "another base model (config.json differs: the checkpoint's is " +
                                           base_model(saved) + ", this run's " + base_model(current) + ")"
                                     : std::string(key) + " " + theirs.dump() + " in the checkpoint, " + mine.dump() + " in this run";
        fail(ErrorKind::kConfig, dir + ": a checkpoint of another run: " + what +
                                     "; resume with the run's own settings, or start afresh without --resume_from_checkpoint");
    }
}

}  // namespace ftl::train
