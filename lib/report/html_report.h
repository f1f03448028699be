// `ftlaunch report OUTPUT_DIR` and the report the trainer refreshes at each checkpoint and at
// the end: output_dir/report.html, one self-contained file (inline CSS and SVG, no scripts, no
// network) built from output_dir/metrics.jsonl: status and times, loss and eval curves, learning
// rate, gradient norm, tokens/s and MFU, peak memory per rank, and the resolved configuration and
// launch plan the run started with.
#pragma once

#include <string>

#include "report/metrics_log.h"

namespace ftl::report {

// The page for `metrics` (read from `source`, which the page names).
std::string build_report_html(const MetricsFile& metrics, const std::string& source);

// Reads output_dir/metrics.jsonl and writes output_dir/report.html atomically; returns its path.
// Throws ftl::Error naming the file when metrics.jsonl is missing or malformed.
std::string write_report(const std::string& output_dir);

}  // namespace ftl::report
