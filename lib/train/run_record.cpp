#include "train/run_record.h"


#include <cmath>
#include <ctime>

#include "report/html_report.h"
#include "util/error.h"
#include "util/system.h"

namespace ftl::train {
namespace {

// transformers' default_logdir(): runs/<%b%d_%H-%M-%S>_<hostname>, in local time.
std::string default_logging_dir(const std::string& output_dir) {
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char stamp[32];
    std::strftime(stamp, sizeof(stamp), "%b%d_%H-%M-%S", &local);
    return output_dir + "/runs/" + stamp + "_" + host_name();
}

}  // namespace

RunRecorder::RunRecorder(const config::TrainArgs& args, bool resumed, const RankContext& rank, const Log& log)
    : output_dir_(args.output_dir), log_(log) {
    if (rank.rank != 0) return;
    metrics_ = std::make_unique<report::MetricsLog>(output_dir_ + "/metrics.jsonl", resumed);
    if (config::report_targets(args.report_to).tensorboard) {
        const std::string dir = args.logging_dir.empty() ? default_logging_dir(output_dir_) : args.logging_dir;
        events_ = std::make_unique<report::EventFileWriter>(dir);
        log.info("TensorBoard events: " + events_->path());
    }
}

void RunRecorder::start(const nlohmann::json& resolved) {
    if (!metrics_) return;
    metrics_->write({{"kind", "start"}, {"run", resolved}, {"world_size", resolved.value("world_size", 1)}});
}

void RunRecorder::schedule(int64_t resumed_from_step, int64_t total_steps, int64_t steps_per_epoch) {
    if (!metrics_) return;
    metrics_->write({{"kind", "schedule"},
                     {"resumed_from_step", resumed_from_step},
                     {"total_steps", total_steps},
                     {"steps_per_epoch", steps_per_epoch}});
}

void RunRecorder::train_step(const StepMetrics& m) {
    if (!metrics_) return;
    nlohmann::json record = {{"kind", "train"},
                             {"step", m.step},
                             {"epoch", m.epoch},
                             {"loss", m.loss},
                             {"grad_norm", m.grad_norm},
                             {"learning_rate", m.learning_rate},
                             {"tokens_per_second", m.tokens_per_second},
                             {"peak_memory_bytes", m.peak_memory_bytes},
                             {"host_memory_bytes", m.host_memory_bytes}};
    if (m.mfu) record["mfu"] = *m.mfu;
    metrics_->write(record);
    if (!events_) return;
    const double now = unix_seconds();
    events_->add_scalar("train/loss", m.loss, m.step, now);
    events_->add_scalar("train/grad_norm", m.grad_norm, m.step, now);
    events_->add_scalar("train/learning_rate", m.learning_rate, m.step, now);
    events_->add_scalar("train/epoch", m.epoch, m.step, now);
    events_->add_scalar("train/tokens_per_second", m.tokens_per_second, m.step, now);
    if (m.mfu) events_->add_scalar("train/mfu", *m.mfu, m.step, now);
    for (size_t r = 0; r < m.peak_memory_bytes.size(); ++r)
        events_->add_scalar("memory/rank" + std::to_string(r) + "_peak_gib",
                            static_cast<double>(m.peak_memory_bytes[r]) / std::pow(1024.0, 3), m.step, now);
    for (size_t r = 0; r < m.host_memory_bytes.size(); ++r)
        events_->add_scalar("memory/rank" + std::to_string(r) + "_host_gib",
                            static_cast<double>(m.host_memory_bytes[r]) / std::pow(1024.0, 3), m.step, now);
}

void RunRecorder::eval(const EvalMetrics& m) {
    if (!metrics_) return;
    metrics_->write({{"kind", "eval"},
                     {"step", m.step},
                     {"epoch", m.epoch},
                     {"eval_loss", m.loss},
                     {"eval_perplexity", m.perplexity}});
    if (!events_) return;
    const double now = unix_seconds();
    events_->add_scalar("eval/loss", m.loss, m.step, now);
    events_->add_scalar("eval/perplexity", m.perplexity, m.step, now);
}

void RunRecorder::checkpoint(int64_t step, const std::string& dir) {
    if (!metrics_) return;
    metrics_->write({{"kind", "checkpoint"}, {"step", step}, {"path", dir}});
    refresh_report();
}

void RunRecorder::finish(int exit_code, const std::string& error) {
    if (!metrics_) return;
    const std::string status = !error.empty() ? "failed" : exit_code == kExitPreempted ? "preempted" : "completed";
    nlohmann::json record = {{"kind", "end"}, {"status", status}, {"exit_code", exit_code}};
    if (!error.empty()) record["error"] = error;
    metrics_->write(record);
    refresh_report();
}

// The report is a view of metrics.jsonl: failing to write it must not fail the run.
void RunRecorder::refresh_report() {
    try {
        report::write_report(output_dir_);
    } catch (const Error& e) {
        log_.warn(std::string("could not write report.html: ") + e.what());
    }
}

}  // namespace ftl::train
