// The ftlaunch subcommands. main.cpp parses the command line and calls one of these; each
// returns the process exit code and lets ftl::Error propagate to main, which reports it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/run_config.h"
#include "util/log.h"

namespace ftl::app {

// What main learnt from the command line.
struct Invocation {
    std::vector<std::string> argv;         // the full original command line (argv[0] = program)
    config::LauncherFlags flags;           // launcher flags before the job token / subcommand
    std::string job_token;                 // train, train.py, <script>.py ("" for subcommands)
    std::vector<std::string> job_argv;     // the job's own flags
    int test_repeat = 1;                   // `ftlaunch test --repeat N`
};

// `ftlaunch [flags] train|train.py|script.py ...`: plan, then dry-run, spawn workers, or (inside
// a worker) run the job.
int run_launch(const Invocation& inv, const Log& log);

// `ftlaunch [launcher flags] estimate-memory [train flags] [--json]`: the per-rank memory table of
// the run those flags describe, by ZeRO stage and offload, and DeepSpeed's estimates; starts nothing.
int run_estimate_memory(const Invocation& inv, const Log& log);

// `ftlaunch test`: the distributed sanity check on every rank.
int run_test(const Invocation& inv, const Log& log);

// `ftlaunch config [--config_file F] [--default]`: the accelerate questionnaire.
int run_config(const std::string& config_file, bool write_default, const Log& log);

// `ftlaunch env`: versions, devices, communication libraries, the config in use.
int run_env(const Invocation& inv, const Log& log);

// `ftlaunch merge`: its flags.
struct MergeInvocation {
    std::string model_name_or_path;
    std::string adapter_path;
    std::string output_dir;
    std::string torch_dtype = "auto";   // auto = keep each tensor's dtype
    std::string max_shard_size = "5GB";
};
// Writes the base model with the adapter merged into output_dir (a folder transformers loads).
int run_merge(const MergeInvocation& merge, const Log& log);

// `ftlaunch generate`: its flags.
struct GenerateInvocation {
    std::string model_name_or_path;
    std::string adapter_path;             // a PEFT LoRA adapter folder, or none
    std::string prompts_file;             // one prompt per line, or .jsonl with "prompt" or "messages"
    std::string output;                   // JSON lines; "" = stdout
    std::optional<int64_t> max_new_tokens;  // else generation_config.json's
    std::optional<int64_t> num_beams;
    int batch_size = 8;
    std::string device = "cpu";           // cpu | cuda
};
// One JSON line per prompt ({"prompt", "completion", "ids"}), greedy or beam search as
// transformers' generate(do_sample=False).
int run_generate(const GenerateInvocation& generate, const Log& log);

// `ftlaunch report OUTPUT_DIR`: writes OUTPUT_DIR/report.html from OUTPUT_DIR/metrics.jsonl.
int run_report(const std::string& output_dir, const Log& log);

// `ftlaunch verify CHECKPOINT_DIR`: the checkpoint's files against its manifest; prints what it
// checked, or throws Error(kConfig) naming the file that differs.
int run_verify(const std::string& checkpoint_dir, const Log& log);

}  // namespace ftl::app
