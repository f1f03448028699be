// ftlaunch: the command line. Launching looks like accelerate:
//   ftlaunch [launcher flags] train|train.py|<seed script>.py [job flags]
// and the tools are subcommands: config, test, env. Everything before the job token is a
// launcher flag (parsed by CLI11); everything after it belongs to the job (parsed by
// config::parse_train_args, HfArgumentParser-style). Errors become messages and exit codes
// here and nowhere else: 2 for bad input, 1 for failures.
#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include <cstdio>
#include <iostream>

#include "commands.h"
#include "config/train_args.h"
#include "launch/worker_env.h"
#include "util/error.h"
#include "util/strings.h"

namespace {

using ftl::config::LauncherFlags;

// Index of the job token (train, evaluate, train.py, *.py) in argv, or argv.size() if none.
size_t find_job_token(const std::vector<std::string>& argv) {
    for (size_t i = 1; i < argv.size(); ++i) {
        const std::string& a = argv[i];
        if (a == "--") return i + 1 < argv.size() ? i + 1 : argv.size();
        const bool after_value_flag = i > 1 && ftl::starts_with(argv[i - 1], "--") &&
                                      argv[i - 1].find('=') == std::string::npos;
        if ((a == "train" || a == "evaluate" || a == "estimate-memory" || ftl::ends_with(a, ".py")) && !(after_value_flag && ftl::ends_with(a, ".py") &&
                                                             argv[i - 1] == "--config_file"))
            return i;
    }
    return argv.size();
}

void add_launcher_flags(CLI::App& app, LauncherFlags& f) {
    auto str = [&app](const std::string& names, std::optional<std::string>& slot, const std::string& help) {
        app.add_option_function<std::string>(names, [&slot](const std::string& v) { slot = v; }, help);
    };
    auto integer = [&app](const std::string& names, std::optional<int>& slot, const std::string& help) {
        app.add_option_function<int>(names, [&slot](const int& v) { slot = v; }, help);
    };
    auto boolean = [&app](const std::string& names, std::optional<bool>& slot, const std::string& help) {
        app.add_option_function<std::string>(
            names,
            [&slot, names](const std::string& v) {
                auto b = ftl::parse_bool(v);
                if (!b) throw CLI::ValidationError(names, "must be true or false (got '" + v + "')");
                slot = *b;
            },
            help);
    };
    auto flag = [&app](const std::string& names, std::optional<bool>& slot, const std::string& help) {
        app.add_flag_callback(names, [&slot] { slot = true; }, help);
    };
    str("--config_file,--config-file", f.config_file, "accelerate config file (YAML or JSON)");
    app.add_flag("--dry_run,--dry-run", f.dry_run, "print the resolved launch plan as JSON and start nothing");
    flag("--cpu,--use_cpu", f.use_cpu, "run on CPU even if GPUs are visible");
    flag("--multi_gpu,--multi-gpu", f.multi_gpu, "multi-GPU data parallel (distributed_type MULTI_GPU)");
    flag("--use_deepspeed,--use-deepspeed", f.use_deepspeed, "use DeepSpeed ZeRO (distributed_type DEEPSPEED)");
    flag("--debug", f.debug, "check distributed operations (ACCELERATE_DEBUG_MODE)");
    integer("--num_processes,--num-processes", f.num_processes, "total processes over all machines");
    integer("--num_machines,--num-machines", f.num_machines, "number of machines");
    integer("--machine_rank,--machine-rank", f.machine_rank, "rank of this machine, 0..num_machines-1");
    str("--main_process_ip,--main-process-ip", f.main_process_ip, "address of machine_rank 0");
    integer("--main_process_port,--main-process-port", f.main_process_port, "rendezvous port (0 = any free one)");
    str("--mixed_precision,--mixed-precision", f.mixed_precision, "no, fp16, bf16 or fp8");
    str("--gpu_ids,--gpu-ids", f.gpu_ids, "GPUs to use: 'all' or '0,1,...'");
    str("--rdzv_backend,--rdzv-backend", f.rdzv_backend, "static or c10d");
    boolean("--same_network,--same-network", f.same_network, "all machines on one local network");
    str("--deepspeed_config_file,--deepspeed-config-file", f.deepspeed_config_file, "DeepSpeed JSON config");
    str("--deepspeed_hostfile,--deepspeed-hostfile", f.deepspeed_hostfile, "hostfile: rows 'hostname slots=N'");
    str("--deepspeed_multinode_launcher,--deepspeed-multinode-launcher", f.deepspeed_multinode_launcher,
        "standard (static rendezvous) or openmpi (ftlaunch runs mpirun)");
    integer("--zero_stage,--zero-stage", f.zero_stage, "ZeRO stage 0-3");
    integer("--gradient_accumulation_steps,--gradient-accumulation-steps", f.gradient_accumulation_steps,
            "micro-steps per optimizer step");
    app.add_option_function<double>("--gradient_clipping,--gradient-clipping",
                                    [&f](const double& v) { f.gradient_clipping = v; }, "global-norm clip value");
    str("--offload_optimizer_device,--offload-optimizer-device", f.offload_optimizer_device, "none, cpu or nvme");
    str("--offload_param_device,--offload-param-device", f.offload_param_device, "none, cpu or nvme");
    str("--offload_optimizer_nvme_path,--offload-optimizer-nvme-path", f.offload_optimizer_nvme_path,
        "NVMe folder for optimizer states");
    str("--offload_param_nvme_path,--offload-param-nvme-path", f.offload_param_nvme_path, "NVMe folder for parameters");
    boolean("--zero3_init_flag,--zero3-init-flag", f.zero3_init_flag, "build the model straight into ZeRO-3 shards");
    boolean("--zero3_save_16bit_model,--zero3-save-16bit-model", f.zero3_save_16bit_model,
            "save gathered 16-bit weights under ZeRO-3");
}

int parse_with(CLI::App& app, const std::vector<std::string>& args) {
    std::vector<const char*> c_args;
    for (const auto& a : args) c_args.push_back(a.c_str());
    app.parse(static_cast<int>(c_args.size()), c_args.data());
    return 0;
}

int dispatch(const std::vector<std::string>& argv, const ftl::Log& log) {
    ftl::app::Invocation inv;
    inv.argv = argv;
    const size_t job_at = find_job_token(argv);
    std::vector<std::string> launcher_args(argv.begin(), argv.begin() + static_cast<long>(job_at));

    CLI::App app{"ftlaunch: LoRA/QLoRA fine-tuning across GPUs and machines, in one native binary.\n"
                 "  ftlaunch --config_file deepspeed_config.yaml train --model_name_or_path ... (train.py flags)",
                 "ftlaunch"};
    app.fallthrough();
    add_launcher_flags(app, inv.flags);
    std::string config_out;
    bool config_default = false;
    auto* config_cmd = app.add_subcommand("config", "ask accelerate's questions and write the config YAML");
    config_cmd->add_flag("--default", config_default, "write a sane single-machine config without asking");
    auto* test_cmd = app.add_subcommand("test", "check collectives and bandwidth on every rank");
    test_cmd->add_option("--repeat", inv.test_repeat, "run the checks this many times (a soak test)")
        ->check(CLI::PositiveNumber);
    auto* env_cmd = app.add_subcommand("env", "print versions, devices and the config in use");
    ftl::app::MergeInvocation merge;
    auto* merge_cmd = app.add_subcommand("merge", "fold a LoRA adapter into its base model (PEFT's merge_and_unload)");
    merge_cmd->add_option("--model_name_or_path", merge.model_name_or_path, "the base model folder or hub name")->required();
    merge_cmd->add_option("--adapter_path", merge.adapter_path, "the PEFT adapter folder (a run's output_dir)")->required();
    merge_cmd->add_option("--output_dir", merge.output_dir, "where the merged model goes (a new folder)")->required();
    merge_cmd->add_option("--torch_dtype", merge.torch_dtype, "auto (keep), float32, bfloat16 or float16");
    merge_cmd->add_option("--max_shard_size", merge.max_shard_size, "largest weight file, e.g. 5GB (as save_pretrained)");
    ftl::app::GenerateInvocation generate;
    auto* generate_cmd = app.add_subcommand("generate", "complete prompts with a model (and adapter): greedy or beam search");
    generate_cmd->add_option("--model_name_or_path", generate.model_name_or_path, "the model folder or hub name")->required();
    generate_cmd->add_option("--adapter_path", generate.adapter_path, "a PEFT LoRA adapter folder");
    generate_cmd->add_option("--prompts", generate.prompts_file, "one prompt per line, or .jsonl with \"prompt\" or \"messages\" (a conversation in the model's chat template)")->required();
    generate_cmd->add_option("--output", generate.output, "JSON lines file (default: stdout)");
    generate_cmd->add_option("--max_new_tokens", generate.max_new_tokens, "tokens to generate (default: generation_config.json)")
        ->check(CLI::PositiveNumber);
    generate_cmd->add_option("--num_beams", generate.num_beams, "1 = greedy (default: generation_config.json)")
        ->check(CLI::PositiveNumber);
    generate_cmd->add_option("--batch_size", generate.batch_size, "prompts per batch")->check(CLI::PositiveNumber);
    generate_cmd->add_option("--device", generate.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
    std::string report_dir;
    auto* report_cmd = app.add_subcommand("report", "write OUTPUT_DIR/report.html from a run's metrics.jsonl");
    report_cmd->add_option("output_dir", report_dir, "the run's --output_dir")->required();
    std::string verify_dir;
    auto* verify_cmd = app.add_subcommand("verify", "check a checkpoint folder's files against its manifest.json");
    verify_cmd->add_option("checkpoint_dir", verify_dir, "OUTPUT_DIR/checkpoint-<step>")->required();
    app.footer("Jobs: " + ftl::join(ftl::config::known_job_tokens(), ", ") +
               "; their flags follow the job token (see README).");
    try {
        parse_with(app, launcher_args);
    } catch (const CLI::ParseError& e) {
        const int code = app.exit(e);
        return code == 0 ? 0 : 2;
    }
    if (job_at < argv.size()) {
        if (config_cmd->parsed() || test_cmd->parsed() || env_cmd->parsed() || report_cmd->parsed() || merge_cmd->parsed() ||
            verify_cmd->parsed() || generate_cmd->parsed())
            ftl::fail(ftl::ErrorKind::kUsage, "'" + argv[job_at] + "' cannot follow a subcommand");
        inv.job_token = argv[job_at];
        inv.job_argv.assign(argv.begin() + static_cast<long>(job_at) + 1, argv.end());
        return ftl::app::run_launch(inv, log);
    }
    if (config_cmd->parsed()) return ftl::app::run_config(inv.flags.config_file.value_or(""), config_default, log);
    if (test_cmd->parsed()) return ftl::app::run_test(inv, log);
    if (env_cmd->parsed()) return ftl::app::run_env(inv, log);
    if (report_cmd->parsed()) return ftl::app::run_report(report_dir, log);
    if (merge_cmd->parsed()) return ftl::app::run_merge(merge, log);
    if (generate_cmd->parsed()) return ftl::app::run_generate(generate, log);
    if (verify_cmd->parsed()) return ftl::app::run_verify(verify_dir, log);
    std::cout << app.help();
    ftl::fail(ftl::ErrorKind::kUsage, "nothing to run: give a job (train ...) or a subcommand (config, test, env, merge, generate, report, verify)");
}

// "ftlaunch" for the launcher, "ftlaunch rank 3" in a worker, so every line says who wrote it.
std::string log_prefix() {
    try {
        if (auto id = ftl::launch::detect_worker(ftl::launch::process_env(), std::nullopt, std::nullopt))
            return "ftlaunch rank " + std::to_string(id->rank);
    } catch (const ftl::Error&) {
        // A malformed worker environment is reported by the command itself.
    }
    return "ftlaunch";
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv, argv + argc);
    ftl::Log log(log_prefix());
    try {
        return dispatch(args, log);
    } catch (const ftl::Error& e) {
        log.error(e.what());
        return ftl::exit_code_for(e.kind());
    } catch (const c10::Error& e) {
        log.error(std::string("LibTorch: ") + e.what_without_backtrace());
        return 1;
    } catch (const std::exception& e) {
        log.error(std::string("internal error: ") + e.what());
        return 1;
    }
}
