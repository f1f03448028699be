// Shared by the launching subcommands (a job, `test`): decide whether this process is a worker
// or the launcher, and in the launcher start the workers of a plan.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "config/accelerate_config.h"
#include "launch/plan.h"
#include "launch/worker_env.h"
#include "util/log.h"

namespace ftl::app {

// This process's identity if it runs as a worker (started by ftlaunch, mpirun, srun, torchrun).
std::optional<launch::WorkerIdentity> worker_identity(const config::AccelerateConfig& accelerate);

// "cuda" or "cpu" for a worker: the launcher's choice (FTLAUNCH_DEVICE) or, under mpirun/srun,
// use_cpu and whether a GPU is visible.
std::string worker_device(const config::AccelerateConfig& accelerate);

// Installs this worker's SIGUSR1 handler and returns the function that reports, once per
// signal, whether a status block was asked for (train::RankContext::status_requested).
std::function<bool()> status_requests();

// Installs this worker's SIGTERM handler and returns the function that reports whether SIGTERM
// has arrived (train::RankContext::stop_requested): the run saves a checkpoint and stops.
std::function<bool()> stop_requests();

// Starts the plan's workers running `argv` (the launcher's own command line) and waits.
// Returns the exit code; reports a failed worker through `log`. `watchdog`: see
// launch::run_local_workers (mpirun runs are not watched).
int launch_workers(const launch::LaunchPlan& plan, const std::vector<std::string>& argv, const Log& log,
                   std::optional<std::chrono::seconds> watchdog = std::nullopt);

}  // namespace ftl::app
