// Typed errors for everything below apps/. Library code throws ftl::Error and never exits;
// only apps/ftlaunch turns an Error into a message and an exit code.
#pragma once

#include <stdexcept>
#include <string>

namespace ftl {

enum class ErrorKind {
    kUsage,     // bad command line: unknown flag, bad value
    kConfig,    // bad configuration file content or an inconsistent combination
    kIo,        // a file that cannot be read or written
    kDist,      // rendezvous or collective failure
    kWorker,    // a worker process failed
    kInternal,  // a broken invariant: a bug in ftlaunch
};

class Error : public std::runtime_error {
public:
    Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
    ErrorKind kind() const { return kind_; }

private:
    ErrorKind kind_;
};

// Exit status for an error of this kind: 2 for bad input (usage, config), 1 otherwise.
int exit_code_for(ErrorKind kind);

// Exit status of a run stopped by SIGTERM (preemption) after it saved a checkpoint: EX_TEMPFAIL,
// "try again later" -- the sbatch example requeues on it and the rerun resumes.
inline constexpr int kExitPreempted = 75;

// Builds the message, throws Error(kind, message). For call sites that read like checks.
[[noreturn]] void fail(ErrorKind kind, const std::string& message);

}  // namespace ftl
