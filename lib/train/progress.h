// Rank 0's progress bar, as HF Trainer's tqdm bar shows it: steps done of total, percent,
// elapsed and estimated remaining time, the last logged loss and tokens/s. Shown only when the
// launcher's stdout is a terminal (it sets FTLAUNCH_PROGRESS=1 and redraws lines that start with
// '\r' in place); otherwise the run prints plain log lines at --logging_steps.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ftl::train {

// "\r12/100  12%|##                  | 00:10<01:13, loss 6.53, 2150 tok/s" (one line, no
// newline). `first` = the step this run started from (resumed runs): the remaining time is
// estimated from the rate of this run's steps.
std::string progress_line(int64_t done, int64_t total, int64_t first, double elapsed_seconds,
                          std::optional<double> loss, double tokens_per_second);

// The block rank 0 prints on SIGUSR1, without stopping training:
//   [ftlaunch status] step 12/100 (12%), elapsed 00:10, ETA 01:13
//     loss 6.53 (last logged), 2150 tokens/s (all ranks)
//     peak memory: rank 0 1.21 GiB, rank 1 1.19 GiB
// (the loss is read from the device only at logging steps; "-" before the first).
std::string status_block(int64_t done, int64_t total, int64_t first, double elapsed_seconds, std::optional<double> loss,
                         double tokens_per_second, const std::vector<int64_t>& peak_memory_bytes);

}  // namespace ftl::train
