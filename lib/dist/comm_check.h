// The distributed sanity check behind `ftlaunch test` (accelerate's `accelerate test`): every
// rank runs all-reduce, all-gather, reduce-scatter, broadcast and barrier on known inputs
// (several dtypes, sizes that do not divide evenly) and checks the exact results, then times an
// all-reduce for a bus-bandwidth figure. Results are agreed across ranks, so every rank knows
// whether any rank saw a failure.
#pragma once

#include <string>
#include <vector>

#include "dist/comm.h"

namespace ftl::dist {

struct CheckResult {
    std::string name;
    bool passed_everywhere = false;  // on every rank
    std::string detail;              // this rank's first mismatch, if any
};

struct CommCheckReport {
    std::vector<CheckResult> checks;
    double bandwidth_bytes = 0;      // all-reduce message size timed
    double bus_bandwidth_gbps = 0;   // 2(n-1)/n * bytes / seconds, in GB/s (1e9)
    double seconds_per_all_reduce = 0;
    bool all_passed() const;
    std::string table(const std::string& backend, int world_size) const;  // for rank 0 to print
};

// `device`: "cpu" or "cuda" (tensors are made there). Collective: every rank must call it.
CommCheckReport run_comm_check(Comm& comm, const std::string& device);

}  // namespace ftl::dist
