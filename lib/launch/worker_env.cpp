#include "launch/worker_env.h"

#include <cstdlib>

#include "util/error.h"
#include "util/strings.h"

namespace ftl::launch {

namespace {

int int_var(const EnvLookup& env, const std::string& name) {
    auto text = env(name);
    auto value = text ? parse_int(*text) : std::nullopt;
    if (!value || *value < 0)
        ftl::fail(ErrorKind::kConfig, "environment variable " + name + " must be a non-negative integer (got '" +
                                          text.value_or("") + "')");
    return static_cast<int>(*value);
}

int port_var(const EnvLookup& env, const std::optional<int>& fallback) {
    if (env("MASTER_PORT")) return int_var(env, "MASTER_PORT");
    return fallback.value_or(29500);
}

}  // namespace

EnvLookup process_env() {
    return [](const std::string& name) -> std::optional<std::string> {
        const char* v = std::getenv(name.c_str());
        if (!v) return std::nullopt;
        return std::string(v);
    };
}

std::string to_string(WorkerSource source) {
    switch (source) {
        case WorkerSource::kFtlaunch: return "ftlaunch";
        case WorkerSource::kMpirun: return "mpirun";
        case WorkerSource::kSrun: return "srun";
        case WorkerSource::kTorchrun: return "torchrun";
    }
    return "?";
}

std::string first_slurm_host(const std::string& nodelist) {
    // Cut at the first comma outside brackets, then expand the first range element.
    int depth = 0;
    size_t end = nodelist.size();
    for (size_t i = 0; i < nodelist.size(); ++i) {
        if (nodelist[i] == '[') ++depth;
        else if (nodelist[i] == ']') --depth;
        else if (nodelist[i] == ',' && depth == 0) { end = i; break; }
    }
    const std::string first = nodelist.substr(0, end);
    const size_t open = first.find('[');
    if (open == std::string::npos) return first;
    const size_t close = first.find(']', open);
    if (close == std::string::npos)
        ftl::fail(ErrorKind::kConfig, "SLURM_NODELIST '" + nodelist + "': unbalanced '['");
    std::string range = first.substr(open + 1, close - open - 1);
    range = range.substr(0, range.find(','));
    range = range.substr(0, range.find('-'));
    return first.substr(0, open) + range + first.substr(close + 1);
}

std::optional<WorkerIdentity> detect_worker(const EnvLookup& env,
                                            const std::optional<std::string>& fallback_master_addr,
                                            const std::optional<int>& fallback_master_port) {
    WorkerIdentity id;
    if (env("FTLAUNCH_WORKER") || env("TORCHELASTIC_RUN_ID")) {
        id.source = env("FTLAUNCH_WORKER") ? WorkerSource::kFtlaunch : WorkerSource::kTorchrun;
        id.rank = int_var(env, "RANK");
        id.local_rank = int_var(env, "LOCAL_RANK");
        id.world_size = int_var(env, "WORLD_SIZE");
        id.local_world_size = env("LOCAL_WORLD_SIZE") ? int_var(env, "LOCAL_WORLD_SIZE") : id.world_size;
        id.master_addr = env("MASTER_ADDR").value_or(fallback_master_addr.value_or("127.0.0.1"));
        id.master_port = port_var(env, fallback_master_port);
    } else if (env("OMPI_COMM_WORLD_RANK")) {
        id.source = WorkerSource::kMpirun;
        id.rank = int_var(env, "OMPI_COMM_WORLD_RANK");
        id.world_size = int_var(env, "OMPI_COMM_WORLD_SIZE");
        id.local_rank = int_var(env, "OMPI_COMM_WORLD_LOCAL_RANK");
        id.local_world_size = int_var(env, "OMPI_COMM_WORLD_LOCAL_SIZE");
        if (auto addr = env("MASTER_ADDR")) id.master_addr = *addr;
        else if (fallback_master_addr) id.master_addr = *fallback_master_addr;
        else if (id.local_world_size == id.world_size) id.master_addr = "127.0.0.1";
        else
            ftl::fail(ErrorKind::kConfig,
                      "under mpirun across machines the address of rank 0 is unknown: set main_process_ip in "
                      "the config, or pass it with `mpirun -x MASTER_ADDR=<host of rank 0>`");
        id.master_port = port_var(env, fallback_master_port);
    } else if (env("SLURM_PROCID") && env("SLURM_STEP_ID")) {
        // Inside an srun step (the batch script itself has SLURM_PROCID but no step id).
        id.source = WorkerSource::kSrun;
        id.rank = int_var(env, "SLURM_PROCID");
        id.world_size = int_var(env, "SLURM_NTASKS");
        id.local_rank = int_var(env, "SLURM_LOCALID");
        if (auto per_node = env("SLURM_NTASKS_PER_NODE"); per_node && parse_int(*per_node))
            id.local_world_size = int_var(env, "SLURM_NTASKS_PER_NODE");
        else if (auto nodes = env("SLURM_STEP_NUM_NODES"); nodes && parse_int(*nodes))
            id.local_world_size = id.world_size / std::max(1, int_var(env, "SLURM_STEP_NUM_NODES"));
        else
            id.local_world_size = id.world_size;
        if (auto addr = env("MASTER_ADDR")) id.master_addr = *addr;
        else if (auto nodes = env("SLURM_STEP_NODELIST")) id.master_addr = first_slurm_host(*nodes);
        else if (auto nodes = env("SLURM_NODELIST")) id.master_addr = first_slurm_host(*nodes);
        else id.master_addr = fallback_master_addr.value_or("127.0.0.1");
        id.master_port = port_var(env, fallback_master_port);
    } else {
        return std::nullopt;
    }
    if (id.world_size < 1 || id.rank >= id.world_size || id.local_rank >= std::max(1, id.local_world_size))
        ftl::fail(ErrorKind::kConfig, "worker environment from " + to_string(id.source) + " is inconsistent: rank " +
                                          std::to_string(id.rank) + ", world size " + std::to_string(id.world_size) +
                                          ", local rank " + std::to_string(id.local_rank) + " of " +
                                          std::to_string(id.local_world_size));
    return id;
}

}  // namespace ftl::launch
