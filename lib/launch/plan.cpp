#include "launch/plan.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "util/error.h"
#include "util/strings.h"

namespace ftl::launch {

namespace {

// Counts CUDA devices through the driver API, loaded at run time so that the launcher links
// no CUDA library and runs on machines without one. Honours CUDA_VISIBLE_DEVICES.
int count_cuda_devices() {
    void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return 0;
    using InitFn = int (*)(unsigned);
    using CountFn = int (*)(int*);
    auto init = reinterpret_cast<InitFn>(dlsym(lib, "cuInit"));
    auto count_fn = reinterpret_cast<CountFn>(dlsym(lib, "cuDeviceGetCount"));
    int count = 0;
    if (!init || !count_fn || init(0) != 0 || count_fn(&count) != 0) count = 0;
    dlclose(lib);
    return count;
}

bool port_is_free(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return true;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    close(fd);
    return ok;
}

std::string bool_word(bool v) { return v ? "true" : "false"; }

// The ACCELERATE_* variables `accelerate launch` exports to DeepSpeed workers, so tools that
// read them see the same picture (research/seed-systems.md §3.5), plus the nvme paths that
// accelerate forgets to export.
void add_accelerate_env(const config::AccelerateConfig& c, const config::DeepSpeedConfig* ds, bool uses_deepspeed,
                        config::MixedPrecision mp, std::map<std::string, std::string>& env) {
    env["ACCELERATE_MIXED_PRECISION"] = config::to_string(mp);
    if (c.debug) env["ACCELERATE_DEBUG_MODE"] = "true";
    if (c.enable_cpu_affinity) env["ACCELERATE_CPU_AFFINITY"] = "1";
    if (!uses_deepspeed || !ds) return;
    env["ACCELERATE_USE_DEEPSPEED"] = "true";
    std::vector<std::string> fields = c.deepspeed.keys_in_file;
    if (c.mixed_precision_from_file) fields.push_back("mixed_precision");
    env["ACCELERATE_CONFIG_DS_FIELDS"] = to_lower(join(fields, ","));
    const auto& z = ds->zero_optimization;
    env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] = std::to_string(z.stage);
    if (ds->gradient_accumulation_steps)
        env["ACCELERATE_GRADIENT_ACCUMULATION_STEPS"] = std::to_string(*ds->gradient_accumulation_steps);
    if (ds->gradient_clipping) env["ACCELERATE_GRADIENT_CLIPPING"] = nlohmann::json(*ds->gradient_clipping).dump();
    env["ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE"] = config::to_string(z.offload_optimizer.device);
    env["ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE"] = config::to_string(z.offload_param.device);
    if (!z.offload_optimizer.nvme_path.empty())
        env["ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_NVME_PATH"] = z.offload_optimizer.nvme_path;
    if (!z.offload_param.nvme_path.empty())
        env["ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_NVME_PATH"] = z.offload_param.nvme_path;
    env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] = bool_word(ds->zero3_init_flag);
    env["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] = bool_word(z.stage3_gather_16bit_weights_on_model_save);
    if (c.deepspeed.deepspeed_config_file) env["ACCELERATE_DEEPSPEED_CONFIG_FILE"] = *c.deepspeed.deepspeed_config_file;
}

}  // namespace

MachineFacts probe_machine() {
    MachineFacts facts;
    facts.visible_gpus = count_cuda_devices();
    facts.cpu_cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    facts.omp_num_threads_set = std::getenv("OMP_NUM_THREADS") != nullptr;
    return facts;
}

int find_free_port() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) ftl::fail(ErrorKind::kIo, std::string("socket(): ") + std::strerror(errno));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        close(fd);
        ftl::fail(ErrorKind::kIo, std::string("cannot find a free port: ") + std::strerror(errno));
    }
    close(fd);
    return ntohs(addr.sin_port);
}

LaunchPlan make_launch_plan(const config::AccelerateConfig& c, const config::DeepSpeedConfig* ds, bool uses_deepspeed,
                            config::MixedPrecision mp, const MachineFacts& machine, bool for_real) {
    LaunchPlan plan;
    plan.world_size = *c.num_processes;
    plan.num_machines = c.num_machines;
    plan.machine_rank = c.machine_rank;
    plan.processes_per_machine = plan.world_size / plan.num_machines;
    plan.master_addr = c.main_process_ip.value_or("127.0.0.1");
    plan.visible_gpus = machine.visible_gpus;
    const std::string where = c.source.empty() ? "launcher flags" : c.source;

    int port = c.main_process_port.value_or(29500);
    if (port == 0) {
        if (plan.num_machines > 1)
            ftl::fail(ErrorKind::kConfig, where + ": main_process_port: 0 (a free port) works on one machine only; "
                                                  "give every machine the same port");
        port = find_free_port();
        plan.notes.push_back("main_process_port 0: using free port " + std::to_string(port));
    } else if (for_real && plan.machine_rank == 0 && plan.world_size > 1 && !port_is_free(port)) {
        ftl::fail(ErrorKind::kConfig, where + ": main_process_port: port " + std::to_string(port) +
                                          " is in use by another process; pass --main_process_port with a free "
                                          "port, or 0 to pick one");
    }
    plan.master_port = port;

    if (c.use_cpu) {
        plan.device = "cpu";
    } else if (machine.visible_gpus == 0) {
        plan.device = "cpu";
        plan.notes.push_back("no CUDA device is visible: running on CPU (set use_cpu: true to say so and "
                             "silence this note)");
    } else {
        plan.device = "cuda";
        if (machine.visible_gpus < plan.processes_per_machine) {
            const std::string shortage = where + ": num_processes: " + std::to_string(plan.processes_per_machine) +
                                         " processes per machine but only " + std::to_string(machine.visible_gpus) +
                                         " GPU(s) are visible; lower num_processes or set use_cpu: true";
            if (for_real) ftl::fail(ErrorKind::kConfig, shortage);
            plan.notes.push_back(shortage);
        }
    }
    plan.backend = plan.device == "cuda" ? "nccl" : "cpu";

    const bool openmpi = c.num_machines > 1 && c.deepspeed.deepspeed_multinode_launcher &&
                         *c.deepspeed.deepspeed_multinode_launcher == config::MultinodeLauncher::kOpenmpi;
    if (openmpi) {
        plan.mode = LaunchMode::kMpirun;
        if (!c.deepspeed.deepspeed_hostfile)
            ftl::fail(ErrorKind::kConfig, where + ": deepspeed_config.deepspeed_hostfile: required with "
                                                  "deepspeed_multinode_launcher: openmpi (rows 'hostname slots=N')");
        plan.mpirun_argv = {"mpirun", "--hostfile", *c.deepspeed.deepspeed_hostfile,
                            "-n", std::to_string(plan.world_size),
                            "--npernode", std::to_string(plan.processes_per_machine),
                            "-x", "MASTER_ADDR=" + plan.master_addr,
                            "-x", "MASTER_PORT=" + std::to_string(plan.master_port)};
        return plan;
    }

    std::map<std::string, std::string> common;
    add_accelerate_env(c, ds, uses_deepspeed, mp, common);
    common["FTLAUNCH_WORKER"] = "1";
    common["WORLD_SIZE"] = std::to_string(plan.world_size);
    common["LOCAL_WORLD_SIZE"] = std::to_string(plan.processes_per_machine);
    common["GROUP_RANK"] = std::to_string(plan.machine_rank);
    common["MASTER_ADDR"] = plan.master_addr;
    common["MASTER_PORT"] = std::to_string(plan.master_port);
    common["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "1";
    if (c.gpu_ids && *c.gpu_ids != "all") common["CUDA_VISIBLE_DEVICES"] = *c.gpu_ids;
    // Share the cores among the local ranks, as torchrun does, unless the user chose.
    if (!machine.omp_num_threads_set)
        common["OMP_NUM_THREADS"] = std::to_string(std::max(1, machine.cpu_cores / plan.processes_per_machine));
    for (int local = 0; local < plan.processes_per_machine; ++local) {
        RankSpec spec;
        spec.local_rank = local;
        spec.rank = plan.machine_rank * plan.processes_per_machine + local;
        spec.env = common;
        spec.env["RANK"] = std::to_string(spec.rank);
        spec.env["LOCAL_RANK"] = std::to_string(local);
        plan.local_ranks.push_back(std::move(spec));
    }
    return plan;
}

nlohmann::json LaunchPlan::to_json() const {
    nlohmann::json ranks = nlohmann::json::array();
    for (const auto& r : local_ranks) ranks.push_back({{"rank", r.rank}, {"local_rank", r.local_rank}, {"env", r.env}});
    nlohmann::json j = {
        {"mode", mode == LaunchMode::kMpirun ? "mpirun" : "local_workers"},
        {"world_size", world_size},
        {"num_machines", num_machines},
        {"machine_rank", machine_rank},
        {"processes_per_machine", processes_per_machine},
        {"master_addr", master_addr},
        {"master_port", master_port},
        {"device", device},
        {"backend", backend},
        {"visible_gpus", visible_gpus},
        {"local_ranks", ranks},
        {"notes", notes},
    };
    if (mode == LaunchMode::kMpirun) j["mpirun_argv"] = mpirun_argv;
    return j;
}

}  // namespace ftl::launch
