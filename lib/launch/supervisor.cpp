#include "launch/supervisor.h"

#include <fstream>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>

#include "util/error.h"
#include "util/heartbeat.h"

extern char** environ;

namespace ftl::launch {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kGraceBeforeKill = std::chrono::seconds(5);
constexpr size_t kTailLines = 20;

struct Child {
    std::string name;          // "rank 3" or the command
    pid_t pid = -1;
    int out_fd = -1, err_fd = -1;
    std::string out_partial, err_partial;
    std::deque<std::string> tail;
    bool exited = false;
    int status = 0;
    std::string heartbeat;     // the file its phases go to (util/heartbeat.h); "" when unwatched
};

// "rank 1: step 12: micro-batch 1/1: forward of decoder layer 3 (14 s ago)", or why not known.
std::string last_phase(const Child& c, int64_t now_ms) {
    const auto record = c.heartbeat.empty() ? std::nullopt : read_heartbeat(c.heartbeat);
    if (!record) return c.name + ": no phase reported";
    return c.name + ": " + record->phase + " (" + std::to_string((now_ms - record->unix_ms) / 1000) + " s ago)";
}

// When the child last reported a phase (ms since the epoch), or 0.
int64_t heartbeat_ms(const Child& c) {
    const auto record = c.heartbeat.empty() ? std::nullopt : read_heartbeat(c.heartbeat);
    return record ? record->unix_ms : 0;
}

// Whether the process is stopped (SIGSTOP, a debugger): state T or t in /proc/PID/stat.
bool process_stopped(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string text;
    std::getline(in, text);
    const size_t close = text.rfind(')');  // the command name may hold spaces and parentheses
    return close != std::string::npos && close + 2 < text.size() && (text[close + 2] == 'T' || text[close + 2] == 't');
}

// The rank to blame once one has been silent in a watched phase for `limit`: a stopped rank
// silent for half of it if there is one (the others are waiting for it in a collective, and one
// of them may have entered that wait a moment earlier), else the longest silent.
const Child* stalled_child(const std::vector<Child>& children, std::chrono::milliseconds limit, int64_t now_ms) {
    const Child* oldest = nullptr;
    int64_t oldest_ms = now_ms;
    for (const auto& c : children) {
        if (c.exited || c.heartbeat.empty()) continue;
        const auto record = read_heartbeat(c.heartbeat);
        if (!record || !record->watched || record->unix_ms >= oldest_ms) continue;
        oldest = &c;
        oldest_ms = record->unix_ms;
    }
    if (!oldest || now_ms - oldest_ms <= static_cast<int64_t>(limit.count())) return nullptr;
    for (const auto& c : children) {
        if (c.exited || c.heartbeat.empty() || !process_stopped(c.pid)) continue;
        const auto record = read_heartbeat(c.heartbeat);
        if (record && record->watched && now_ms - record->unix_ms > static_cast<int64_t>(limit.count()) / 2) return &c;
    }
    return oldest;
}

std::vector<std::string> merged_environment(const std::map<std::string, std::string>& extra) {
    std::map<std::string, std::string> env;
    for (char** e = environ; *e; ++e) {
        std::string entry(*e);
        auto eq = entry.find('=');
        if (eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
    }
    for (const auto& [k, v] : extra) env[k] = v;
    std::vector<std::string> out;
    for (const auto& [k, v] : env) out.push_back(k + "=" + v);
    return out;
}

// fork + exec with stdout/stderr on pipes, in its own process group, dying with the parent.
void spawn(Child& child, const std::vector<std::string>& argv, const std::map<std::string, std::string>& extra_env,
           const sigset_t& parent_mask) {
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0)
        ftl::fail(ErrorKind::kIo, std::string("pipe(): ") + std::strerror(errno));
    const std::vector<std::string> env = merged_environment(extra_env);
    std::vector<char*> c_argv, c_env;
    for (const auto& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
    c_argv.push_back(nullptr);
    for (const auto& e : env) c_env.push_back(const_cast<char*>(e.c_str()));
    c_env.push_back(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) ftl::fail(ErrorKind::kIo, std::string("fork(): ") + std::strerror(errno));
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);  // the launcher died before prctl took effect
        dup2(out[1], STDOUT_FILENO);
        dup2(err[1], STDERR_FILENO);
        // Ignored across exec until the worker installs its status handler, so an early status
        // request (SIGUSR1) cannot kill a worker that is still starting.
        signal(SIGUSR1, SIG_IGN);
        sigprocmask(SIG_SETMASK, &parent_mask, nullptr);
        execve(c_argv[0], c_argv.data(), c_env.data());
        const std::string message = "ftlaunch: cannot exec " + argv[0] + ": " + std::strerror(errno) + "\n";
        (void)!write(STDERR_FILENO, message.data(), message.size());
        _exit(127);
    }
    setpgid(pid, pid);
    close(out[1]);
    close(err[1]);
    child.pid = pid;
    child.out_fd = out[0];
    child.err_fd = err[0];
}

// What the launcher's terminal shows: a worker's progress line ("\r..." on its stdout, sent only
// when FTLAUNCH_PROGRESS is set) is redrawn in place; any other line first clears it.
struct Screen {
    bool progress_shown = false;
};

// Passes complete lines through to our own stream and keeps the last few for the report.
void emit_lines(Child& child, std::string& partial, int target, bool final, Screen& screen) {
    if (final && !partial.empty() && partial.back() != '\n') partial += '\n';
    size_t start = 0;
    for (size_t nl; (nl = partial.find('\n', start)) != std::string::npos; start = nl + 1) {
        if (partial[start] == '\r') {
            const std::string line = partial.substr(start, nl - start) + "\x1b[K";  // erase the rest of the old bar
            (void)!write(STDOUT_FILENO, line.data(), line.size());
            screen.progress_shown = true;
            continue;
        }
        if (screen.progress_shown) {
            (void)!write(STDOUT_FILENO, "\r\x1b[K", 4);
            screen.progress_shown = false;
        }
        (void)!write(target, partial.data() + start, nl - start + 1);
        child.tail.push_back(partial.substr(start, nl - start));
        if (child.tail.size() > kTailLines) child.tail.pop_front();
    }
    partial.erase(0, start);
}

// Reads what one of the child's pipes has; closes it at end of file.
void drain(Child& child, bool is_out, Screen& screen) {
    int& fd = is_out ? child.out_fd : child.err_fd;
    std::string& partial = is_out ? child.out_partial : child.err_partial;
    const int target = is_out ? STDOUT_FILENO : STDERR_FILENO;
    char buffer[65536];
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n > 0) {
        partial.append(buffer, static_cast<size_t>(n));
        emit_lines(child, partial, target, false, screen);
        return;
    }
    emit_lines(child, partial, target, true, screen);
    close(fd);
    fd = -1;
}

std::string describe_status(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status))
        return std::string("was killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
               strsignal(WTERMSIG(status)) + ")";
    return "ended with wait status " + std::to_string(status);
}

void signal_all(std::vector<Child>& children, int sig) {
    for (auto& c : children)
        if (!c.exited) kill(-c.pid, sig);
}

SupervisorResult supervise(std::vector<Child>& children, const std::vector<std::vector<std::string>>& argvs,
                           const std::vector<std::map<std::string, std::string>>& envs, const Log& log,
                           std::optional<std::chrono::seconds> watchdog = std::nullopt) {
    // Block the signals we handle and read them from a signalfd: no handler, no global flag.
    sigset_t handled, previous;
    sigemptyset(&handled);
    sigaddset(&handled, SIGCHLD);
    sigaddset(&handled, SIGINT);
    sigaddset(&handled, SIGTERM);
    sigaddset(&handled, SIGHUP);
    sigaddset(&handled, SIGUSR1);
    sigprocmask(SIG_BLOCK, &handled, &previous);
    const int sfd = signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) ftl::fail(ErrorKind::kIo, std::string("signalfd(): ") + std::strerror(errno));

    for (size_t i = 0; i < children.size(); ++i) spawn(children[i], argvs[i], envs[i], previous);
    Screen screen;

    SupervisorResult result;
    Clock::time_point kill_at = Clock::time_point::max();  // when the remaining workers get SIGKILL
    int forwarded_signal = 0;
    const Child* first_failure = nullptr;
    std::string stall;  // the watchdog's finding
    Clock::time_point next_watch = Clock::now();
    size_t running = children.size();
    while (running > 0 || std::any_of(children.begin(), children.end(),
                                      [](const Child& c) { return c.out_fd >= 0 || c.err_fd >= 0; })) {
        std::vector<pollfd> fds{{sfd, POLLIN, 0}};
        std::vector<std::pair<Child*, bool>> owners{{nullptr, false}};
        for (auto& c : children) {
            if (c.out_fd >= 0) { fds.push_back({c.out_fd, POLLIN, 0}); owners.push_back({&c, true}); }
            if (c.err_fd >= 0) { fds.push_back({c.err_fd, POLLIN, 0}); owners.push_back({&c, false}); }
        }
        poll(fds.data(), fds.size(), 100);
        for (size_t i = 1; i < fds.size(); ++i)
            if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) drain(*owners[i].first, owners[i].second, screen);
        signalfd_siginfo info;
        while (read(sfd, &info, sizeof(info)) == sizeof(info)) {
            if (info.ssi_signo == SIGCHLD) continue;
            if (info.ssi_signo == SIGUSR1) {  // a status request: rank 0 prints a block, nobody stops
                signal_all(children, SIGUSR1);
                continue;
            }
            if (!forwarded_signal) {
                forwarded_signal = static_cast<int>(info.ssi_signo);
                log.warn(std::string("received ") + strsignal(forwarded_signal) + ": passing it to the workers");
                signal_all(children, forwarded_signal);
                // SIGTERM is a scheduler's notice (SLURM --signal=TERM@120): training workers finish
                // the step and save a checkpoint, and the scheduler keeps its own deadline. Other
                // signals get 10 s.
                if (forwarded_signal != SIGTERM) kill_at = Clock::now() + std::chrono::seconds(10);
            } else {
                signal_all(children, SIGKILL);
            }
        }
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            for (auto& c : children) {
                if (c.pid != pid) continue;
                c.exited = true;
                c.status = status;
                --running;
                const bool failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
                if (failed && !first_failure && !forwarded_signal && stall.empty()) {
                    first_failure = &c;
                    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                    signal_all(children, SIGTERM);
                    kill_at = Clock::now() + kGraceBeforeKill;
                    // A rank that gave up waiting (a collective timeout) points at one that stopped
                    // moving: a rank silent for half the timeout is named as the cause.
                    const int64_t now_ms = unix_milliseconds();
                    if (watchdog && stall.empty())
                        if (const Child* stuck = stalled_child(children, *watchdog / 2, now_ms)) {
                            stall = stuck->name + " made no progress for " + std::to_string((now_ms - heartbeat_ms(*stuck)) / 1000) +
                                    " s and " + c.name + " stopped waiting for it: " + last_phase(*stuck, now_ms);
                            signal_all(children, SIGKILL);  // the silent rank heeds nothing else
                        }
                }
            }
        }
        if (watchdog && !first_failure && !forwarded_signal && stall.empty() && Clock::now() >= next_watch) {
            next_watch = Clock::now() + std::chrono::seconds(1);
            const int64_t now_ms = unix_milliseconds();
            if (const Child* stuck = stalled_child(children, *watchdog, now_ms)) {
                stall = stuck->name + " made no progress for more than " + std::to_string(watchdog->count()) +
                        " s (--ddp_timeout): " + last_phase(*stuck, now_ms) + "; the job is stopped";
                result.exit_code = 1;
                signal_all(children, SIGKILL);  // a stopped or deadlocked rank heeds nothing else
            }
        }
        if (Clock::now() >= kill_at) {
            signal_all(children, SIGKILL);
            kill_at = Clock::time_point::max();
        }
    }
    close(sfd);
    sigprocmask(SIG_SETMASK, &previous, nullptr);
    if (screen.progress_shown) (void)!write(STDOUT_FILENO, "\n", 1);
    const int64_t end_ms = unix_milliseconds();
    auto phases = [&] {
        std::string out = "\n  where each rank was:";
        for (const auto& c : children)
            if (!c.heartbeat.empty()) out += "\n    " + last_phase(c, end_ms);
        return out;
    };
    if (!stall.empty() && !first_failure) {
        result.failure = stall + phases();
    } else if (first_failure) {
        if (!stall.empty()) result.failure = stall + "\n  ";
        // Built once every pipe is drained, so the failing worker's last lines are complete.
        result.failure += first_failure->name + " (pid " + std::to_string(first_failure->pid) + ") " +
                         describe_status(first_failure->status) + "; its last output lines:";
        for (const auto& line : first_failure->tail) result.failure += "\n    " + line;
        for (const auto& c : children)
            if (&c != first_failure) result.failure += "\n  " + c.name + " " + describe_status(c.status);
        result.failure += phases();
    } else if (forwarded_signal) {
        const bool all_preempted = std::all_of(children.begin(), children.end(), [](const Child& c) {
            return WIFEXITED(c.status) && WEXITSTATUS(c.status) == kExitPreempted;
        });
        result.exit_code = all_preempted ? kExitPreempted : 128 + forwarded_signal;
        result.failure = all_preempted ? std::string("stopped by ") + strsignal(forwarded_signal) +
                                             " after every rank saved a checkpoint; rerun with "
                                             "--resume_from_checkpoint auto to continue"
                                       : std::string("stopped by ") + strsignal(forwarded_signal);
    }
    return result;
}

}  // namespace

SupervisorResult run_local_workers(const LaunchPlan& plan, const std::vector<std::string>& argv, const Log& log,
                                   std::optional<std::chrono::seconds> watchdog) {
    std::vector<Child> children(plan.local_ranks.size());
    // One heartbeat file per rank in a private folder, removed when the workers are done.
    std::string heartbeat_dir;
    if (watchdog) {
        const char* tmp = std::getenv("TMPDIR");
        std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/ftlaunch-heartbeat-XXXXXX";
        if (!mkdtemp(pattern.data())) ftl::fail(ErrorKind::kIo, pattern + ": cannot create the heartbeat folder: " + std::strerror(errno));
        heartbeat_dir = pattern;
    }
    std::vector<std::vector<std::string>> argvs;
    std::vector<std::map<std::string, std::string>> envs;
    for (size_t i = 0; i < plan.local_ranks.size(); ++i) {
        children[i].name = "rank " + std::to_string(plan.local_ranks[i].rank);
        argvs.push_back(argv);
        envs.push_back(plan.local_ranks[i].env);
        // A terminal gets rank 0's progress bar; a pipe or file gets plain log lines.
        if (isatty(STDOUT_FILENO)) envs.back()["FTLAUNCH_PROGRESS"] = "1";
        if (watchdog) {
            children[i].heartbeat = heartbeat_dir + "/rank" + std::to_string(plan.local_ranks[i].rank);
            envs.back()["FTLAUNCH_HEARTBEAT"] = children[i].heartbeat;
        }
    }
    SupervisorResult result = supervise(children, argvs, envs, log, watchdog);
    if (!heartbeat_dir.empty()) {
        std::error_code ec;
        std::filesystem::remove_all(heartbeat_dir, ec);
    }
    return result;
}

SupervisorResult run_foreground(const std::vector<std::string>& argv, const Log& log) {
    std::vector<Child> children(1);
    children[0].name = argv.empty() ? "command" : argv[0];
    return supervise(children, {argv}, {{}}, log);
}

}  // namespace ftl::launch
