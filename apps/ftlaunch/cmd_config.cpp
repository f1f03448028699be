// `ftlaunch config`: accelerate's questionnaire (the DeepSpeed path of
// accelerate/commands/config/cluster.py, restricted to what ftlaunch runs), answered on stdin,
// written as YAML. `--default` writes a single-machine config without asking.
#include <filesystem>
#include <fstream>
#include <iostream>

#include "commands.h"
#include "config/accelerate_config.h"
#include "launch/plan.h"
#include "util/error.h"
#include "util/strings.h"

namespace ftl::app {

namespace {

using config::AccelerateConfig;

// Reads answers from a stream; every question re-asks until the answer is valid.
class Questions {
public:
    explicit Questions(std::istream& in) : in_(in) {}

    std::string line(const std::string& prompt) {
        std::cout << prompt << std::flush;
        std::string answer;
        if (!std::getline(in_, answer))
            ftl::fail(ErrorKind::kUsage, "no answer on standard input for: " + trim(prompt) +
                                             " (run `ftlaunch config` in a terminal, or --default)");
        return trim(answer);
    }
    bool yes_no(const std::string& prompt, bool fallback) {
        while (true) {
            const std::string a = line(prompt);
            if (a.empty()) return fallback;
            const std::string lower = to_lower(a);
            if (lower == "yes" || lower == "y") return true;
            if (lower == "no" || lower == "n") return false;
            std::cout << "Please enter yes or no.\n";
        }
    }
    int integer(const std::string& prompt, int fallback, int min) {
        while (true) {
            const std::string a = line(prompt);
            if (a.empty()) return fallback;
            if (auto v = parse_int(a); v && *v >= min && *v < (1 << 20)) return static_cast<int>(*v);
            std::cout << "Please enter an integer" << (min > 0 ? " of at least " + std::to_string(min) : "") << ".\n";
        }
    }
    std::string text(const std::string& prompt, const std::string& fallback) {
        const std::string a = line(prompt);
        return a.empty() ? fallback : a;
    }
    // A menu: answer with the index or the option itself.
    std::string choose(const std::string& prompt, const std::vector<std::string>& options, size_t fallback) {
        std::cout << prompt << "\n";
        for (size_t i = 0; i < options.size(); ++i) std::cout << "  [" << i << "] " << options[i] << "\n";
        while (true) {
            const std::string a = line("Please select a choice by number or name [" + std::to_string(fallback) + "]: ");
            if (a.empty()) return options[fallback];
            if (auto v = parse_int(a); v && *v >= 0 && static_cast<size_t>(*v) < options.size()) return options[*v];
            for (const auto& o : options)
                if (to_lower(o) == to_lower(a)) return o;
            std::cout << "Please select one of the options above.\n";
        }
    }

private:
    std::istream& in_;
};

AccelerateConfig ask(Questions& q) {
    AccelerateConfig c;
    const std::string machine = q.choose("Which type of machine are you using?",
                                         {"No distributed training", "multi-CPU", "multi-GPU"}, 0);
    const bool multi = machine != "No distributed training";
    c.distributed_type = machine == "multi-CPU" ? config::DistributedType::kMultiCpu
                         : multi                ? config::DistributedType::kMultiGpu
                                                : config::DistributedType::kNo;
    c.use_cpu = machine == "multi-CPU";
    if (multi) {
        c.num_machines = q.integer("How many different machines will you use (use more than 1 for multi-node training)? [1]: ", 1, 1);
        if (c.num_machines > 1) {
            c.machine_rank = q.integer("What is the rank of this machine? [0]: ", 0, 0);
            c.main_process_ip = q.text("What is the IP address of the machine that will host the main process? ", "");
            c.main_process_port = q.integer("What is the port you will use to communicate with the main process? [29500]: ", 29500, 0);
            c.same_network = q.yes_no("Are all the machines on the same local network? [YES/no]: ", true);
        }
        c.debug = q.yes_no("Should distributed operations be checked while running for errors? This can avoid "
                           "timeout issues but will be slower. [yes/NO]: ", false);
    } else {
        c.use_cpu = q.yes_no("Do you want to run your training on CPU only (even if a GPU is available)? [yes/NO]: ", false);
    }
    const bool deepspeed = machine != "multi-CPU" && !c.use_cpu && q.yes_no("Do you want to use DeepSpeed? [yes/NO]: ", false);
    bool json_file = false;
    if (deepspeed) {
        c.distributed_type = config::DistributedType::kDeepSpeed;
        auto& ds = c.deepspeed;
        json_file = q.yes_no("Do you want to specify a json file to a DeepSpeed config? [yes/NO]: ", false);
        if (json_file) {
            ds.deepspeed_config_file = q.text("Please enter the path to the json DeepSpeed config file: ", "");
        } else {
            ds.zero_stage = std::stoi(q.choose("What should be your DeepSpeed's ZeRO optimization stage?", {"0", "1", "2", "3"}, 2));
            if (*ds.zero_stage >= 2) {
                ds.offload_optimizer_device = *config::parse_offload_device(
                    q.choose("Where to offload optimizer states?", {"none", "cpu", "nvme"}, 0));
                if (*ds.offload_optimizer_device == config::OffloadDevice::kNvme)
                    ds.offload_optimizer_nvme_path = q.text("Nvme Path to offload optimizer states? [/nvme]: ", "/nvme");
            }
            if (*ds.zero_stage == 3) {
                ds.offload_param_device = *config::parse_offload_device(
                    q.choose("Where to offload parameters?", {"none", "cpu", "nvme"}, 0));
                if (*ds.offload_param_device == config::OffloadDevice::kNvme)
                    ds.offload_param_nvme_path = q.text("Nvme Path to offload parameters? [/nvme]: ", "/nvme");
            }
            ds.gradient_accumulation_steps =
                q.integer("How many gradient accumulation steps you're passing in your script? [1]: ", 1, 1);
            if (q.yes_no("Do you want to use gradient clipping? [yes/NO]: ", false)) {
                const std::string v = q.text("What is the gradient clipping value? [1.0]: ", "1.0");
                auto clip = parse_double(v);
                if (!clip || *clip <= 0) ftl::fail(ErrorKind::kUsage, "gradient clipping value must be a positive number (got '" + v + "')");
                ds.gradient_clipping = *clip;
            }
            if (*ds.zero_stage == 3)
                ds.zero3_save_16bit_model =
                    q.yes_no("Do you want to save 16-bit model weights when using ZeRO Stage-3? [yes/NO]: ", false);
        }
        if (json_file || *ds.zero_stage == 3)
            ds.zero3_init_flag = q.yes_no("Do you want to enable `deepspeed.zero.Init` when using ZeRO Stage-3 for "
                                          "constructing massive models? [yes/NO]: ", false);
        if (c.num_machines > 1) {
            ds.deepspeed_multinode_launcher = *config::parse_multinode_launcher(
                q.choose("Which Type of launcher do you want to use?", {"standard", "openmpi"}, 0));
            if (*ds.deepspeed_multinode_launcher == config::MultinodeLauncher::kOpenmpi)
                ds.deepspeed_hostfile = q.text("Please specify the location of hostfile (rows 'hostname slots=N'): ", "");
        }
    }
    if (multi || deepspeed)
        c.num_processes = q.integer(std::string("How many ") + (c.use_cpu ? "processes" : "GPU(s)") +
                                        " should be used for distributed training (all machines together)? [1]: ", 1, 1);
    else
        c.num_processes = 1;
    if (!json_file) {
        c.mixed_precision = *config::parse_mixed_precision(
            q.choose("Do you wish to use mixed precision?", {"no", "fp16", "bf16", "fp8"}, 0));
        c.mixed_precision_from_file = true;
    }
    return c;
}

AccelerateConfig default_config() {
    AccelerateConfig c;
    const int gpus = launch::probe_machine().visible_gpus;
    c.distributed_type = gpus > 1 ? config::DistributedType::kMultiGpu : config::DistributedType::kNo;
    c.num_processes = std::max(1, gpus);
    c.use_cpu = gpus == 0;
    c.mixed_precision = config::MixedPrecision::kNo;
    return c;
}

// Writes through a temporary file and a rename, so a failure leaves any old file whole.
void write_atomically(const std::string& path, const std::string& text) {
    const std::filesystem::path target(path);
    if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path());
    const std::string temp = path + ".tmp";
    {
        std::ofstream out(temp, std::ios::trunc);
        out << text;
        out.flush();
        if (!out) ftl::fail(ErrorKind::kIo, temp + ": cannot be written");
    }
    std::filesystem::rename(temp, target);
}

}  // namespace

int run_config(const std::string& config_file, bool write_default, const Log& log) {
    const std::string path = config_file.empty() ? config::default_accelerate_config_path() : config_file;
    AccelerateConfig c;
    if (write_default) {
        if (std::filesystem::exists(path))
            ftl::fail(ErrorKind::kUsage, "Configuration already exists at " + path +
                                             ", will not override. Run `ftlaunch config` manually or pass a different --config_file.");
        c = default_config();
    } else {
        Questions q(std::cin);
        c = ask(q);
    }
    const std::string yaml = config::to_yaml(c);
    // What we write must read back: parse it before replacing anything.
    config::parse_accelerate_config(yaml, path);
    write_atomically(path, yaml);
    log.info("ftlaunch configuration saved at " + path);
    return 0;
}

}  // namespace ftl::app
