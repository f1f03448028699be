// Who this process is in the job. A worker learns its rank from the environment that started
// it: ftlaunch's own launcher (FTLAUNCH_WORKER=1 with RANK, LOCAL_RANK, WORLD_SIZE, ...),
// `mpirun` (OMPI_COMM_WORLD_*), SLURM `srun` (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, ...)
// or torchrun (RANK/LOCAL_RANK/WORLD_SIZE with TORCHELASTIC_RUN_ID).
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace ftl::launch {

// Reads one environment variable; nullopt when unset. Tests pass a fake.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup process_env();

enum class WorkerSource { kFtlaunch, kMpirun, kSrun, kTorchrun };
std::string to_string(WorkerSource source);

struct WorkerIdentity {
    WorkerSource source = WorkerSource::kFtlaunch;
    int rank = 0;
    int local_rank = 0;
    int world_size = 1;
    int local_world_size = 1;
    std::string master_addr;  // where global rank 0 hosts the TCPStore
    int master_port = 29500;
};

// Detects a worker environment. Returns nullopt when this process is a plain command-line
// invocation (it should then plan and launch workers itself). `fallback_master_addr` /
// `fallback_master_port` (from main_process_ip/port) are used where the environment does not
// say: mpirun gives no rank-0 address, so one machine means 127.0.0.1 and several need
// MASTER_ADDR or main_process_ip. Throws ftl::Error(kConfig) on a malformed environment.
std::optional<WorkerIdentity> detect_worker(const EnvLookup& env,
                                            const std::optional<std::string>& fallback_master_addr,
                                            const std::optional<int>& fallback_master_port);

// The first host of a SLURM hostlist: "node[03-05,9],gpu7" -> "node03".
std::string first_slurm_host(const std::string& nodelist);

}  // namespace ftl::launch
