// HF Trainer-style checkpoints: output_dir/checkpoint-<step>/ holding the adapter, the optimizer
// state, the random generators and trainer_state.json. A checkpoint is written into a temporary
// folder next to it, every file fsynced, then renamed into place, so a crash at any moment leaves
// either the whole checkpoint or none (temporary folders are removed at the next start). The last
// file written is manifest.json (io/manifest.h): sizes and CRC-32C of every file and the
// checkpoint's identity; loading verifies it first.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace ftl::train {

struct CheckpointContents {
    int64_t global_step = 0;
    nlohmann::json trainer_state;  // HF's trainer_state.json fields (log_history, ...)
    std::vector<std::pair<std::string, at::Tensor>> optimizer;
    // Every rank's dropout generator state (at::Generator::get_state()), in rank order: as HF
    // saves rng_state_<rank>.pth per process, each rank resumes its own stream.
    std::vector<at::Tensor> dropout_rng_states;
    // What the checkpoint belongs to (base model, adapter configuration, ...), kept in its
    // manifest; a resume compares it with its own run (see sft.cpp).
    nlohmann::json identity = nlohmann::json::object();
    // --save_only_model: the weights and trainer_state.json only, no optimizer.safetensors nor
    // rng_state.safetensors (a resume from it is refused).
    bool model_only = false;
};

// Checked before anything heavy runs: the output folder can be created and written; throws
// kConfig naming --output_dir otherwise.
void check_output_dir(const std::string& dir);

// output_dir/checkpoint-<step>.
std::string checkpoint_dir(const std::string& output_dir, int64_t step);

// Writes checkpoint-<step> under output_dir. `write_model` writes the weights into the folder it
// is given (the adapter, or the trainable weights). `crash_hook`, when set, runs after the first
// file is written and before the rename (tests kill the process there). Then removes the oldest
// checkpoints beyond save_total_limit, never the newest nor `keep` (the best model's).
std::string save_checkpoint(const std::string& output_dir, const CheckpointContents& contents,
                            const std::function<void(const std::string&)>& write_model,
                            std::optional<int> save_total_limit, const std::function<void()>& crash_hook = {},
                            const std::optional<std::string>& keep = std::nullopt);

// The end of a run with save_total_limit 1 and a best checkpoint: every other checkpoint-<N> goes,
// the newest too (transformers' Trainer._finalize_training).
void keep_only_checkpoint(const std::string& output_dir, const std::string& kept);

// "True"/"true"/"last" -> the newest complete checkpoint in output_dir; a path -> that folder;
// "auto" -> the newest checkpoint if there is one, else "" (start afresh: a requeued job's rerun).
// Throws naming what was looked for when there is none. Also removes leftover temporary folders.
std::string find_checkpoint(const std::string& resume_from, const std::string& output_dir);

// Reads what save_checkpoint wrote (the weights are read by the caller from the same folder),
// after verifying the folder against its manifest: a missing, changed, extra or truncated file is
// ftl::Error(kConfig) naming it.
CheckpointContents load_checkpoint(const std::string& dir);

}  // namespace ftl::train
