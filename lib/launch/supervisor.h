// Starts this machine's workers (fork + exec of the ftlaunch binary with each rank's
// environment) and supervises them: their output is passed through line by line; when one
// exits non-zero or is killed, the others get SIGTERM and, 5 s later, SIGKILL; SIGINT/SIGTERM
// sent to the launcher are passed on. Workers die with the launcher (PR_SET_PDEATHSIG), so no
// orphan outlives it. The launcher holds no global state: signals arrive through a signalfd.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "launch/plan.h"
#include "util/log.h"

namespace ftl::launch {

struct SupervisorResult {
    int exit_code = 0;        // 0 when every worker exited 0
    std::string failure;      // "" or the message naming the rank, its status and last lines
};

// Runs `argv` (argv[0] = the program to exec) once per local rank of `plan`, each with the
// parent's environment plus the rank's env. Returns when all workers have exited.
// `watchdog` (training: --ddp_timeout): each worker reports its phase to a heartbeat file
// (FTLAUNCH_HEARTBEAT, util/heartbeat.h); a rank that stays in one watched phase longer than this
// stops the job, named with its phase (a SIGSTOPped or deadlocked rank never answers, so every
// worker gets SIGKILL). Any failure message lists where each rank was.
SupervisorResult run_local_workers(const LaunchPlan& plan, const std::vector<std::string>& argv, const Log& log,
                                   std::optional<std::chrono::seconds> watchdog = std::nullopt);

// Runs one command (mpirun) in the foreground with the same signal forwarding; returns its
// exit code.
SupervisorResult run_foreground(const std::vector<std::string>& argv, const Log& log);

}  // namespace ftl::launch
