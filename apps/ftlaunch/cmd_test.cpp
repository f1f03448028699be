// `ftlaunch test`: like `accelerate test`, start the configured ranks and check that every
// collective gives exact results on each of them, then report a bandwidth figure.
#include <iostream>

#include "commands.h"
#include "dist/comm_check.h"
#include "launch/plan.h"
#include "workers.h"

namespace ftl::app {

namespace {

int run_test_worker(const config::AccelerateConfig& accelerate, const launch::WorkerIdentity& id, int repeat) {
    const std::string device = worker_device(accelerate);
    dist::CommOptions options;
    options.rank = id.rank;
    options.world_size = id.world_size;
    options.master_addr = id.master_addr;
    options.master_port = id.master_port;
    options.backend = device == "cuda" ? "nccl" : "cpu";
    options.device_index = id.local_rank;
    options.timeout = std::chrono::minutes(5);
    auto comm = dist::make_comm(options);
    dist::CommCheckReport report = dist::run_comm_check(*comm, device);
    for (int round = 1; round < repeat && report.all_passed(); ++round) report = dist::run_comm_check(*comm, device);
    if (id.rank == 0) {
        std::cout << report.table(comm->backend_name() + " (" + launch::to_string(id.source) + ")", id.world_size)
                  << std::flush;
    }
    return report.all_passed() ? 0 : 1;
}

}  // namespace

int run_test(const Invocation& inv, const Log& log) {
    auto resolved = config::resolve_accelerate_config(inv.flags);
    if (auto id = worker_identity(resolved.config)) return run_test_worker(resolved.config, *id, inv.test_repeat);
    for (const auto& warning : resolved.warnings) log.warn(warning);
    const auto plan = launch::make_launch_plan(resolved.config, nullptr, false,
                                               resolved.config.mixed_precision.value_or(config::MixedPrecision::kNo),
                                               launch::probe_machine(), !inv.flags.dry_run);
    if (inv.flags.dry_run) {
        std::cout << plan.to_json().dump(2) << std::endl;
        return 0;
    }
    return launch_workers(plan, inv.argv, log);
}

}  // namespace ftl::app
