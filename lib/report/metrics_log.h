// output_dir/metrics.jsonl: the run's record, one JSON object per line, for `tail -f`, scripts
// and `ftlaunch report`. Every line has "schema" (kMetricsSchema), "kind" and "time" (unix
// seconds). Kinds and their fields, as the trainer writes them:
//   start       run (the resolved configuration and launch plan), world_size
//   schedule    resumed_from_step, total_steps, steps_per_epoch
//   train       step, epoch, loss, grad_norm, learning_rate, tokens_per_second, mfu,
//               peak_memory_bytes (one entry per rank: device peak, or VmHWM on CPU),
//               host_memory_bytes (one entry per rank: resident set size at that step)
//   eval        step, epoch, eval_loss, eval_perplexity, peak_memory_bytes
//   checkpoint  step, path
//   end         status ("completed" | "preempted" | "failed"), exit_code, error (when failed)
// Each line reaches the file with one write(2) on an O_APPEND descriptor as soon as it is made,
// so a crash, even SIGKILL, loses at most the line being written.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ftl::report {

inline constexpr int kMetricsSchema = 1;

class MetricsLog {
public:
    // Opens `path`, appending (a resumed run continues its record) or starting it anew. Throws
    // ftl::Error(kIo) naming the file when it cannot be opened.
    MetricsLog(const std::string& path, bool append);
    ~MetricsLog();
    MetricsLog(const MetricsLog&) = delete;
    MetricsLog& operator=(const MetricsLog&) = delete;

    // Adds schema and time to `record` (which must have "kind") and writes it as one line.
    void write(nlohmann::json record);

private:
    std::string path_;
    int fd_ = -1;
};

struct MetricsFile {
    std::vector<nlohmann::json> records;
    bool incomplete_last_line = false;  // the writer died mid-line; that line is left out
};

// Reads a metrics.jsonl. A last line without its newline (cut off by a crash) is left out and
// flagged; any other line that is not a JSON object is an error naming the file and line number.
MetricsFile read_metrics(const std::string& path);

}  // namespace ftl::report
