#include "workers.h"

#include <unistd.h>

#include <climits>
#include <csignal>
#include <cstdlib>

#include "launch/supervisor.h"
#include "util/error.h"

namespace ftl::app {

namespace {

std::string own_executable() {
    char path[PATH_MAX];
    const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
    if (n <= 0) ftl::fail(ErrorKind::kIo, "cannot find the ftlaunch executable (/proc/self/exe)");
    return std::string(path, static_cast<size_t>(n));
}

// A signal handler can only set a flag: these are the process-wide variables ftlaunch has, set
// by the SIGUSR1 and SIGTERM handlers and read through status_requests() and stop_requests().
volatile std::sig_atomic_t status_signal_pending = 0;
volatile std::sig_atomic_t stop_signal_received = 0;

void on_status_signal(int) { status_signal_pending = 1; }
void on_stop_signal(int) { stop_signal_received = 1; }

void install(int signal, void (*handler)(int)) {
    struct sigaction action {};
    action.sa_handler = handler;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(signal, &action, nullptr);
}

}  // namespace

std::function<bool()> stop_requests() {
    install(SIGTERM, on_stop_signal);
    return [] { return stop_signal_received != 0; };
}

std::function<bool()> status_requests() {
    install(SIGUSR1, on_status_signal);
    return [] {
        if (!status_signal_pending) return false;
        status_signal_pending = 0;
        return true;
    };
}

std::optional<launch::WorkerIdentity> worker_identity(const config::AccelerateConfig& accelerate) {
    return launch::detect_worker(launch::process_env(), accelerate.main_process_ip, accelerate.main_process_port);
}

std::string worker_device(const config::AccelerateConfig& accelerate) {
    if (const char* chosen = std::getenv("FTLAUNCH_DEVICE"); chosen && *chosen) return chosen;
    if (accelerate.use_cpu) return "cpu";
    return launch::probe_machine().visible_gpus > 0 ? "cuda" : "cpu";
}

int launch_workers(const launch::LaunchPlan& plan, const std::vector<std::string>& argv, const Log& log,
                   std::optional<std::chrono::seconds> watchdog) {
    for (const auto& note : plan.notes) log.info(note);
    std::vector<std::string> worker_argv = argv;
    worker_argv[0] = own_executable();
    launch::SupervisorResult result;
    if (plan.mode == launch::LaunchMode::kMpirun) {
        std::vector<std::string> command = plan.mpirun_argv;
        command.insert(command.end(), worker_argv.begin(), worker_argv.end());
        log.info("starting " + std::to_string(plan.world_size) + " ranks with mpirun");
        result = launch::run_foreground(command, log);
    } else {
        launch::LaunchPlan with_device = plan;
        for (auto& rank : with_device.local_ranks) rank.env["FTLAUNCH_DEVICE"] = plan.device;
        result = launch::run_local_workers(with_device, worker_argv, log, watchdog);
    }
    if (result.exit_code != 0) log.error(result.failure);
    return result.exit_code;
}

}  // namespace ftl::app
