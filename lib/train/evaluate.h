// Evaluation: the next-token loss over a split, every target token weighted equally across all
// ranks (each rank takes rows r, r + world, ...; sums and counts are all-reduced), and its
// perplexity exp(loss). transformers' Trainer averages per-batch mean losses instead; the two
// agree when batches hold equal numbers of targets. `progress` hears where each forward is
// (model::ForwardOptions::progress).
#pragma once

#include <optional>
#include <vector>

#include "data/examples.h"
#include "model/decoder.h"
#include "config/run_config.h"
#include "train/rank_context.h"

namespace ftl::train {

struct EvalResult {
    double loss = 0.0;
    double perplexity = 0.0;
    int64_t tokens = 0;
};

// `options`: the forward passes' residency (ZeRO-3), progress report and kernels; they run
// without training (no dropout, no recompute) whatever `options` says of that.
EvalResult evaluate(const model::CausalLM& model, const std::vector<data::Row>& rows, int batch_size, int32_t pad_id,
                    bool packed, const at::Device& device, std::optional<at::ScalarType> autocast,
                    const model::ForwardOptions& options, const RankContext& rank);

}  // namespace ftl::train

namespace ftl::train {

// `ftlaunch evaluate`: the model (with --adapter_path applied when given) on the last split named
// in --splits; rank 0 prints {"split", "eval_loss", "eval_perplexity", "eval_tokens"} as one JSON
// line on stdout.
void run_evaluate(const config::RunConfig& run, const RankContext& rank);

}  // namespace ftl::train
