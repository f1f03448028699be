// What rank 0 records about a run, for people watching it: output_dir/metrics.jsonl always,
// TensorBoard event files with --report_to tensorboard|all (tags as transformers'
// TensorBoardCallback writes them: train/loss, train/learning_rate, train/grad_norm, train/epoch,
// eval/loss, plus train/tokens_per_second, train/mfu, eval/perplexity and
// memory/rank<i>_peak_gib), and output_dir/report.html at each checkpoint and at the end. On
// other ranks every call does nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "config/train_args.h"
#include "report/event_file.h"
#include "report/metrics_log.h"
#include "train/rank_context.h"
#include "util/log.h"

namespace ftl::train {

struct StepMetrics {
    int64_t step = 0;
    double epoch = 0, loss = 0, grad_norm = 0, learning_rate = 0;
    double tokens_per_second = 0;               // all ranks together
    std::optional<double> mfu;                  // fraction of the ranks' peak FLOP/s
    std::vector<int64_t> peak_memory_bytes;     // one per rank: the device's peak (host: VmHWM)
    std::vector<int64_t> host_memory_bytes;     // one per rank: resident set size (VmRSS) now
};

struct EvalMetrics {
    int64_t step = 0;
    double epoch = 0, loss = 0, perplexity = 0;
};

class RunRecorder {
public:
    // Rank 0 opens output_dir/metrics.jsonl (appending when `resumed`, else anew) and, when
    // --report_to asks for TensorBoard, an event file in the logging folder (--logging_dir,
    // else output_dir/runs/<Mon>DD_HH-MM-SS_<host> as transformers names it).
    RunRecorder(const config::TrainArgs& args, bool resumed, const RankContext& rank, const Log& log);

    // The start record, before anything heavy runs: the resolved configuration and launch plan.
    void start(const nlohmann::json& resolved);
    // The schedule record, once the data is read and a checkpoint (if any) restored.
    void schedule(int64_t resumed_from_step, int64_t total_steps, int64_t steps_per_epoch);
    void train_step(const StepMetrics& m);
    void eval(const EvalMetrics& m);
    // A checkpoint was saved in `dir`; the report is refreshed.
    void checkpoint(int64_t step, const std::string& dir);
    // The end record and the final report: status completed (exit 0), preempted (kExitPreempted,
    // checkpoint saved) or failed (`error` not empty).
    void finish(int exit_code, const std::string& error);

private:
    void refresh_report();
    std::string output_dir_;
    const Log& log_;
    std::unique_ptr<report::MetricsLog> metrics_;
    std::unique_ptr<report::EventFileWriter> events_;
};

}  // namespace ftl::train
