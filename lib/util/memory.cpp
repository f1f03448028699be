#include "util/memory.h"

#include <fstream>
#include <sstream>

namespace ftl {
namespace {

// A "Key:   123 kB" field of a /proc file, in KiB (0 when absent).
int64_t proc_kib(const char* file, const std::string& key) {
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(key + ":", 0) != 0) continue;
        std::istringstream fields(line.substr(key.size() + 1));
        int64_t kib = 0;
        fields >> kib;
        return kib;
    }
    return 0;
}

int64_t b2mb(int64_t bytes) { return bytes / (int64_t{1} << 20); }  // truncates toward zero, as int() does

}  // namespace

int64_t resident_bytes() { return proc_kib("/proc/self/status", "VmRSS") * 1024; }
int64_t peak_resident_bytes() { return proc_kib("/proc/self/status", "VmHWM") * 1024; }
int64_t available_host_bytes() { return proc_kib("/proc/meminfo", "MemAvailable") * 1024; }

void reset_peak_resident() {
    std::ofstream("/proc/self/clear_refs") << "5";  // VmHWM := current RSS (Linux >= 4.0)
}

CpuMemoryPhase::CpuMemoryPhase() {
    reset_peak_resident();
    begin_bytes_ = resident_bytes();
}

std::vector<std::string> CpuMemoryPhase::report(const std::string& phase) const {
    const int64_t end = resident_bytes(), peak = std::max(peak_resident_bytes(), end);
    const int64_t begin_mb = b2mb(begin_bytes_), peaked = b2mb(peak - begin_bytes_);
    return {"CPU Memory before entering the " + phase + " : " + std::to_string(begin_mb),
            "CPU Memory consumed at the end of the " + phase + " (end-begin): " + std::to_string(b2mb(end - begin_bytes_)),
            "CPU Peak Memory consumed during the " + phase + " (max-begin): " + std::to_string(peaked),
            "CPU Total Peak Memory consumed during the " + phase + " (max): " + std::to_string(peaked + begin_mb)};
}

}  // namespace ftl
