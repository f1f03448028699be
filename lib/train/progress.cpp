#include "train/progress.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace ftl::train {
namespace {

// m:ss, or h:mm:ss past an hour.
std::string clock_text(double seconds) {
    const auto total = static_cast<long long>(std::max(0.0, std::round(seconds)));
    char out[32];
    if (total >= 3600)
        std::snprintf(out, sizeof out, "%lld:%02lld:%02lld", total / 3600, total / 60 % 60, total % 60);
    else
        std::snprintf(out, sizeof out, "%02lld:%02lld", total / 60, total % 60);
    return out;
}

// Seconds left at the rate of this run's steps so far.
double remaining_seconds(int64_t done, int64_t total, int64_t first, double elapsed_seconds) {
    const int64_t run_steps = done - first;
    return run_steps > 0 ? elapsed_seconds / static_cast<double>(run_steps) * static_cast<double>(total - done) : 0.0;
}

}  // namespace

std::string progress_line(int64_t done, int64_t total, int64_t first, double elapsed_seconds,
                          std::optional<double> loss, double tokens_per_second) {
    constexpr int kWidth = 20;
    const double fraction = total > 0 ? std::clamp(static_cast<double>(done) / static_cast<double>(total), 0.0, 1.0) : 1.0;
    const int filled = static_cast<int>(fraction * kWidth);
    const double remaining = remaining_seconds(done, total, first, elapsed_seconds);
    std::string line = "\r" + std::to_string(done) + "/" + std::to_string(total) + " ";
    char percent[8];
    std::snprintf(percent, sizeof percent, "%3d%%", static_cast<int>(fraction * 100));
    line += percent;
    line += "|" + std::string(static_cast<size_t>(filled), '#') + std::string(static_cast<size_t>(kWidth - filled), ' ') + "| ";
    line += clock_text(elapsed_seconds) + "<" + clock_text(remaining);
    char tail[64];
    if (loss) {
        std::snprintf(tail, sizeof tail, ", loss %.4g", *loss);
        line += tail;
    }
    std::snprintf(tail, sizeof tail, ", %.0f tok/s", tokens_per_second);
    return line + tail;
}

std::string status_block(int64_t done, int64_t total, int64_t first, double elapsed_seconds, std::optional<double> loss,
                         double tokens_per_second, const std::vector<int64_t>& peak_memory_bytes) {
    const int percent = total > 0 ? static_cast<int>(100 * done / total) : 100;
    char loss_text[32] = "-";
    if (loss) std::snprintf(loss_text, sizeof loss_text, "%.6g", *loss);
    char text[256];
    std::snprintf(text, sizeof text, "[ftlaunch status] step %lld/%lld (%d%%), elapsed %s, ETA %s\n  loss %s (last logged), %.0f tokens/s (all ranks)\n",
                  static_cast<long long>(done), static_cast<long long>(total), percent, clock_text(elapsed_seconds).c_str(),
                  clock_text(remaining_seconds(done, total, first, elapsed_seconds)).c_str(), loss_text, tokens_per_second);
    std::string block = text;
    block += "  peak memory:";
    for (size_t r = 0; r < peak_memory_bytes.size(); ++r) {
        std::snprintf(text, sizeof text, "%s rank %zu %.2f GiB", r ? "," : "", r,
                      static_cast<double>(peak_memory_bytes[r]) / (1024.0 * 1024.0 * 1024.0));
        block += text;
    }
    return block + "\n";
}

}  // namespace ftl::train
