#include "report/html_report.h"

#include <cmath>
#include <ctime>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "io/atomic_file.h"
#include "report/charts.h"

namespace ftl::report {
namespace {

using nlohmann::json;

const char* const kStyle = R"(body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1360px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}table.summary td{padding:2px 12px 2px 0}
.charts{display:flex;flex-wrap:wrap;gap:12px}svg.chart{border:1px solid #ddd;background:#fff}
svg .title{font-size:14px;font-weight:600}svg .tick,svg .legend{font-size:11px}svg .axis{font-size:12px}
svg .grid{stroke:#eee}svg .frame{fill:none;stroke:#999}svg .empty{fill:#999}
.completed{color:#1a7f37}.failed{color:#cf222e}.unknown{color:#9a6700}
pre{background:#f6f8fa;padding:12px;overflow:auto;font-size:12px})";

std::string utc(double unix_seconds) {
    const std::time_t t = static_cast<std::time_t>(unix_seconds);
    std::tm parts{};
    gmtime_r(&t, &parts);
    char text[40];
    std::strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S UTC", &parts);
    return text;
}

std::string duration(double seconds) {
    std::ostringstream out;
    if (seconds < 60) {
        out.precision(3);
        out << seconds << " s";
        return out.str();
    }
    const auto s = static_cast<int64_t>(seconds);
    out << s / 3600 << "h " << (s / 60) % 60 << "m " << s % 60 << "s";
    return out.str();
}

// Records of one kind keyed by step, the latest record of a step winning (a resumed run logs
// again the steps after its checkpoint).
std::map<int64_t, json> by_step(const std::vector<json>& records, const std::string& kind) {
    std::map<int64_t, json> out;
    for (const json& r : records)
        if (r.value("kind", "") == kind && r.contains("step")) out[r["step"].get<int64_t>()] = r;
    return out;
}

// A record's number, NaN when it is absent or not a number (a NaN loss is written as null).
double number_or_nan(const json& record, const std::string& field) {
    const auto it = record.find(field);
    return it != record.end() && it->is_number() ? it->get<double>() : NAN;
}

Series series_of(const std::string& name, const std::map<int64_t, json>& records, const std::string& field,
                 double scale = 1.0) {
    Series s{name, {}};
    for (const auto& [step, r] : records)
        if (r.contains(field) && r[field].is_number())
            s.points.emplace_back(static_cast<double>(step), r[field].get<double>() * scale);
    return s;
}

// One series per rank from the records' peak_memory_bytes arrays, in GiB.
std::vector<Series> memory_series(const std::map<int64_t, json>& records) {
    std::vector<Series> ranks;
    for (const auto& [step, r] : records) {
        if (!r.contains("peak_memory_bytes") || !r["peak_memory_bytes"].is_array()) continue;
        const json& bytes = r["peak_memory_bytes"];
        for (size_t i = 0; i < bytes.size(); ++i) {
            if (ranks.size() <= i) ranks.push_back({"memory/rank" + std::to_string(i), {}});
            if (bytes[i].is_number())
                ranks[i].points.emplace_back(static_cast<double>(step), bytes[i].get<double>() / (1024.0 * 1024.0 * 1024.0));
        }
    }
    return ranks;
}

void row(std::ostringstream& html, const std::string& name, const std::string& value, const std::string& css = "") {
    html << "<tr><td>" << html_escape(name) << "</td><td" << (css.empty() ? "" : " class=\"" + css + "\"") << ">"
         << html_escape(value) << "</td></tr>\n";
}

std::string format(double v) {
    std::ostringstream s;
    s.precision(6);
    s << v;
    return s.str();
}

}  // namespace

std::string build_report_html(const MetricsFile& metrics, const std::string& source) {
    const std::vector<json>& records = metrics.records;
    std::optional<json> first_start, last_start, schedule, end;
    for (const json& r : records) {
        const std::string kind = r.value("kind", "");
        if (kind == "start") {
            if (!first_start) first_start = r;
            last_start = r;
            schedule.reset();  // records before the latest start belong to an earlier attempt
            end.reset();
        } else if (kind == "schedule") {
            schedule = r;
        } else if (kind == "end") {
            end = r;
        }
    }
    const auto train = by_step(records, "train");
    const auto eval = by_step(records, "eval");

    std::ostringstream html;
    html << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ftlaunch run report</title><style>"
         << kStyle << "</style></head><body>\n<h1>ftlaunch run report</h1>\n<p>From <code>" << html_escape(source)
         << "</code>" << (metrics.incomplete_last_line ? " (its last line was cut off and is left out)" : "") << ".</p>\n";

    html << "<h2>Run</h2>\n<table class=\"summary\">\n";
    if (end) {
        const std::string status = end->value("status", "unknown");
        row(html, "status", status + " (exit code " + std::to_string(end->value("exit_code", -1)) + ")",
            status == "completed" ? "completed" : status == "preempted" ? "unknown" : "failed");
        if (end->contains("error")) row(html, "error", end->value("error", ""), "failed");
    } else {
        row(html, "status", last_start ? "no end record: still running, or killed" : "no start record", "unknown");
    }
    if (first_start) row(html, "started", utc(first_start->value("time", 0.0)));
    if (schedule && schedule->value("resumed_from_step", 0) > 0)
        row(html, "resumed", utc(last_start->value("time", 0.0)) + " from step " +
                                 std::to_string(schedule->value("resumed_from_step", 0)));
    if (end) row(html, "ended", utc(end->value("time", 0.0)));
    if (first_start) {
        const double last_time = end ? end->value("time", 0.0) : records.back().value("time", 0.0);
        row(html, "wall time", duration(last_time - first_start->value("time", 0.0)));
    }
    if (last_start) row(html, "ranks", std::to_string(last_start->value("world_size", 1)));
    if (schedule)
        row(html, "steps logged", (train.empty() ? "0" : std::to_string(train.rbegin()->first)) + " of " +
                                      std::to_string(schedule->value("total_steps", int64_t{0})));
    if (!train.empty()) row(html, "last train loss", format(number_or_nan(train.rbegin()->second, "loss")));
    if (!eval.empty()) row(html, "last eval loss", format(number_or_nan(eval.rbegin()->second, "eval_loss")));
    html << "</table>\n";

    std::vector<Chart> charts;
    charts.push_back({"Loss", "step", "loss", {series_of("train/loss", train, "loss"), series_of("eval/loss", eval, "eval_loss")}});
    charts.push_back({"Learning rate", "step", "learning rate", {series_of("train/learning_rate", train, "learning_rate")}});
    charts.push_back({"Gradient norm (before clipping)", "step", "norm", {series_of("train/grad_norm", train, "grad_norm")}});
    charts.push_back({"Throughput", "step", "tokens/s (all ranks)", {series_of("train/tokens_per_second", train, "tokens_per_second")}});
    charts.push_back({"Model FLOPs utilisation", "step", "% of peak", {series_of("train/mfu", train, "mfu", 100.0)}});
    charts.push_back({"Peak memory per rank", "step", "GiB", memory_series(train)});
    if (!eval.empty()) charts.push_back({"Eval perplexity", "step", "perplexity", {series_of("eval/perplexity", eval, "eval_perplexity")}});
    html << "<h2>Curves</h2>\n<div class=\"charts\">\n";
    for (const Chart& chart : charts) html << render_svg(chart) << "\n";
    html << "</div>\n";

    if (last_start && last_start->contains("run")) {
        const json& run = (*last_start)["run"];
        if (run.contains("launch_plan"))
            html << "<h2>Launch plan</h2>\n<pre>" << html_escape(run["launch_plan"].dump(2)) << "</pre>\n";
        if (run.contains("deepspeed_config"))
            html << "<h2>DeepSpeed configuration (resolved)</h2>\n<pre>" << html_escape(run["deepspeed_config"].dump(2)) << "</pre>\n";
        html << "<h2>Resolved configuration</h2>\n<pre>" << html_escape(run.dump(2)) << "</pre>\n";
    }
    html << "</body></html>\n";
    return html.str();
}

std::string write_report(const std::string& output_dir) {
    const std::string source = output_dir + "/metrics.jsonl";
    const std::string page = build_report_html(read_metrics(source), source);
    const std::string path = output_dir + "/report.html";
    io::write_file_atomically(path, [&](std::ostream& out) { out << page; });
    return path;
}

}  // namespace ftl::report
