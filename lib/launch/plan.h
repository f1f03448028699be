// The launch plan: which ranks this machine starts, with which environment, on which devices,
// and how they meet (MASTER_ADDR:MASTER_PORT, where global rank 0 hosts the c10d TCPStore).
// `--dry_run` prints it; the supervisor executes it.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "config/accelerate_config.h"
#include "config/deepspeed_config.h"

namespace ftl::launch {

enum class LaunchMode {
    kLocalWorkers,  // fork+exec one worker per local rank (static rendezvous)
    kMpirun,        // deepspeed_multinode_launcher: openmpi — ftlaunch runs `mpirun` with the hostfile
};

struct RankSpec {
    int rank = 0;
    int local_rank = 0;
    std::map<std::string, std::string> env;  // added to the launcher's environment
};

struct LaunchPlan {
    LaunchMode mode = LaunchMode::kLocalWorkers;
    int world_size = 1;
    int num_machines = 1;
    int machine_rank = 0;
    int processes_per_machine = 1;
    std::string master_addr = "127.0.0.1";
    int master_port = 29500;
    std::string device = "cpu";        // "cuda" or "cpu"
    std::string backend = "cpu";       // "nccl" or "cpu" (the socket communicator)
    int visible_gpus = 0;
    std::vector<RankSpec> local_ranks; // this machine's ranks (kLocalWorkers)
    std::vector<std::string> mpirun_argv;  // the mpirun command line (kMpirun), worker argv appended at run time
    std::vector<std::string> notes;    // decisions the user should see (device fallback, port choice)

    nlohmann::json to_json() const;
};

// Inputs that come from the machine, not the config (tests fake them).
struct MachineFacts {
    int visible_gpus = 0;   // CUDA devices this process can see
    int cpu_cores = 1;
    bool omp_num_threads_set = false;  // the user chose OMP_NUM_THREADS
};
MachineFacts probe_machine();

// Builds the plan. Throws ftl::Error(kConfig) when the config cannot run (an openmpi launch
// without a hostfile, port 0 across machines). With `for_real` it also checks this machine:
// more processes than GPUs, or a busy main_process_port on machine_rank 0, are errors; in a dry
// run (for_real = false) they become notes, since plans are often made away from the cluster.
LaunchPlan make_launch_plan(const config::AccelerateConfig& accelerate, const config::DeepSpeedConfig* deepspeed,
                            bool uses_deepspeed, config::MixedPrecision mixed_precision,
                            const MachineFacts& machine, bool for_real);

// A free TCP port on this machine (bind to port 0 and read it back).
int find_free_port();

}  // namespace ftl::launch
