// The DeepSpeed config's "optimizer" and "scheduler" sections (internal to lib/config): read
// (deepspeed/runtime/engine.py's _configure_basic_optimizer and lr_schedules.py say which keys each
// type takes), filled from the flags where "auto" as the HF Trainer fills them
// (transformers/integrations/deepspeed.py, trainer_config_process), and written back.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <vector>

#include "config/deepspeed_config.h"
#include "config/json_reader.h"

namespace ftl::config {

// Throws kConfig naming the key for a type ftlaunch does not build, a parameter the type does not
// take, or a value out of range.
DeepSpeedOptimizerConfig read_optimizer_section(const JsonReader& r, const nlohmann::json& section);
DeepSpeedSchedulerConfig read_scheduler_section(const JsonReader& r, const nlohmann::json& section);

// HF's fill_match for one value: "auto" (nullopt) takes the flag's `hf_value`; a concrete value
// that differs from it is recorded in HF's words ("- ds <ds_key>=.. vs hf <hf_key>=..") when
// `check` (the key was named in the section, or the flag given).
template <typename T>
void fill_match(Auto<T>& slot, bool check, const std::string& ds_key, std::type_identity_t<T> hf_value,
                const std::string& hf_key, std::vector<std::string>& mismatches) {
    if (!slot) slot = hf_value;
    else if (check && *slot != hf_value)
        mismatches.push_back("- ds " + ds_key + "=" + nlohmann::json(*slot).dump() + " vs hf " + hf_key + "=" +
                             nlohmann::json(hf_value).dump());
}

// Throws kConfig with HF's message listing `mismatches` (naming `source`), if there are any.
void fail_on_mismatches(const std::string& source, const std::vector<std::string>& mismatches);

// HF's fill_match for the params the sections name: "auto" takes the flag, a concrete value that
// differs from it adds "- ds optimizer.params.lr=.. vs hf learning_rate=.." to `mismatches`.
void fill_optimizer_from_flags(DeepSpeedOptimizerConfig& o, const TrainArgs& a, std::vector<std::string>& mismatches);
void fill_scheduler_from_flags(DeepSpeedSchedulerConfig& s, const TrainArgs& a, std::vector<std::string>& mismatches);

// DeepSpeed's layout, {"type": .., "params": {..}}, with the values ftlaunch uses for the params
// the section named (checks-only keys such as bias_correction left out).
nlohmann::json to_json(const DeepSpeedOptimizerConfig& o);
nlohmann::json to_json(const DeepSpeedSchedulerConfig& s);

}  // namespace ftl::config
