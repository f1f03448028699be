// A rank's last reported phase, for the launcher's watchdog (launch/supervisor.h): the launcher
// names a file per rank (FTLAUNCH_HEARTBEAT in the worker's environment); the worker rewrites one
// fixed-size record in it at each phase change (one pwrite, no allocation on the reader's side),
// and the launcher reads how long ago each rank last moved and where it was.
//
// Record (kRecordBytes, space-padded, '\n'-terminated): "<unix ms> <W|U> <phase text>". W: a
// watched phase (a training step, an evaluation: the watchdog stops a rank that stays in one too
// long); U: unwatched (loading, tokenising: may legitimately take long).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace ftl {

class Heartbeat {
public:
    static constexpr size_t kRecordBytes = 256;

    Heartbeat() = default;  // disabled: phase() does nothing
    // Writes to `path` (created); an empty path gives a disabled heartbeat.
    explicit Heartbeat(const std::string& path);
    // The file FTLAUNCH_HEARTBEAT names, or disabled when it is unset.
    static Heartbeat from_environment();
    ~Heartbeat();
    Heartbeat(Heartbeat&& other) noexcept;
    Heartbeat& operator=(Heartbeat&& other) noexcept;
    Heartbeat(const Heartbeat&) = delete;
    Heartbeat& operator=(const Heartbeat&) = delete;

    // Records that the rank entered `what` now ("step 12: forward and backward"). Longer texts
    // are cut to fit the record. Never throws (a failed write only loses the report).
    void phase(const std::string& what) const { write(what, true); }
    // The same for a phase the watchdog leaves alone.
    void unwatched(const std::string& what) const { write(what, false); }

private:
    void write(const std::string& what, bool watched) const;
    int fd_ = -1;
};

struct HeartbeatRecord {
    int64_t unix_ms = 0;
    bool watched = false;
    std::string phase;
};

// The record in `path`; nullopt when the file is missing, empty or being rewritten.
std::optional<HeartbeatRecord> read_heartbeat(const std::string& path);

// Milliseconds since the epoch (the records' clock).
int64_t unix_milliseconds();

}  // namespace ftl
