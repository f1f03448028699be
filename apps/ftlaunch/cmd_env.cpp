// `ftlaunch env`: what a bug report needs, like `accelerate env`.
#include <ATen/Context.h>
#include <sys/utsname.h>
#include <torch/version.h>

#include <cstdio>
#include <fstream>
#include <iostream>

#include "commands.h"
#include "config/run_config.h"
#include "launch/plan.h"

namespace ftl::app {

namespace {

std::string command_output(const std::string& command) {
    std::string out;
    if (FILE* pipe = popen((command + " 2>/dev/null").c_str(), "r")) {
        char buffer[256];
        if (fgets(buffer, sizeof(buffer), pipe)) out = buffer;
        pclose(pipe);
    }
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    return out.empty() ? "not found" : out;
}

std::string memory_total() {
    std::ifstream meminfo("/proc/meminfo");
    std::string key;
    long long kib = 0;
    while (meminfo >> key >> kib)
        if (key == "MemTotal:") {
            char text[64];
            std::snprintf(text, sizeof(text), "%.2f GB", static_cast<double>(kib) / (1 << 20));
            return text;
        }
    return "unknown";
}

}  // namespace

int run_env(const Invocation& inv, const Log& log) {
    utsname u{};
    uname(&u);
    const auto machine = launch::probe_machine();
    std::cout << "Copy-and-paste the text below in your GitHub issue\n\n"
              << "- `ftlaunch` version: " << FTLAUNCH_VERSION << "\n"
              << "- Platform: " << u.sysname << " " << u.release << " " << u.machine << "\n"
              << "- LibTorch version: " << TORCH_VERSION << " (CUDA in this build: "
              << (at::globalContext().hasCUDA() ? "yes" : "no") << ")\n"
              << "- CUDA devices visible: " << machine.visible_gpus << "\n"
              << "- GPU type: " << command_output("nvidia-smi --query-gpu=name --format=csv,noheader") << "\n"
              << "- CPU cores: " << machine.cpu_cores << "\n"
              << "- System RAM: " << memory_total() << "\n"
              << "- mpirun: " << command_output("mpirun --version") << "\n"
              << "- srun: " << command_output("srun --version") << "\n";
    const std::string path = inv.flags.config_file.value_or(config::default_accelerate_config_path());
    std::ifstream probe(path);
    if (!probe) {
        std::cout << "- `ftlaunch` config: Not found (" << path << ")\n";
        return 0;
    }
    const auto parsed = config::load_accelerate_config(path);
    for (const auto& w : parsed.warnings) log.warn(w);
    std::cout << "- `ftlaunch` config passed (" << path << "):\n";
    const nlohmann::json config = parsed.config.to_json();  // kept alive while iterating
    for (const auto& [key, value] : config.items())
        std::cout << "\t- " << key << ": " << (value.is_string() ? value.get<std::string>() : value.dump()) << "\n";
    return 0;
}

}  // namespace ftl::app
