// Rank 0's progress bar, as HF Trainer's tqdm bar shows it: steps done of total, percent,
// elapsed and estimated remaining time, the last logged loss and tokens/s. Shown only when the
// launcher's stdout is a terminal (it sets FTLAUNCH_PROGRESS=1 and redraws lines that start with
// '\r' in place); otherwise the run prints plain log lines at --logging_steps.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace ftl::train {

// "\r12/100  12%|##                  | 00:10<01:13, loss 6.53, 2150 tok/s" (one line, no
// newline). `first` = the step this run started from (resumed runs): the remaining time is
// estimated from the rate of this run's steps.
std::string progress_line(int64_t done, int64_t total, int64_t first, double elapsed_seconds,
                          std::optional<double> loss, double tokens_per_second);

}  // namespace ftl::train
