// Process memory as the seed's TorchTracemalloc reports it for the CPU side: resident set size at
// the start, at the end and at the peak of a phase, in MiB truncated toward zero (b2mb). The peak
// is the kernel's high-water mark (VmHWM), reset at the start of the phase through
// /proc/self/clear_refs, so no polling thread is needed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ftl {

class CpuMemoryPhase {
public:
    CpuMemoryPhase();  // records the start and resets the peak gauge
    // The seed's four CPU lines for `phase` ("train" or "eval"):
    //   CPU Memory before entering the train : B
    //   CPU Memory consumed at the end of the train (end-begin): E
    //   CPU Peak Memory consumed during the train (max-begin): P
    //   CPU Total Peak Memory consumed during the train (max): P + B
    std::vector<std::string> report(const std::string& phase) const;

private:
    int64_t begin_bytes_ = 0;
};

// Resident set size and its high-water mark, in bytes, from /proc/self/status (0 if unreadable).
int64_t resident_bytes();
int64_t peak_resident_bytes();
// Host memory the kernel could give processes now without swapping (MemAvailable), in bytes.
int64_t available_host_bytes();
// Starts a new high-water mark at the current resident set size.
void reset_peak_resident();

}  // namespace ftl
