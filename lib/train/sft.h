// The SFT job (the seed's train.py: TRL SFTTrainer + PEFT LoRA + HF Trainer), one rank's view.
// Read it top to bottom in sft.cpp: resolve inputs, build tokenizer, model, adapters and data,
// then the optimizer-step loop, then save.
#pragma once

#include <nlohmann/json.hpp>

#include "config/run_config.h"
#include "train/rank_context.h"
#include "util/log.h"

namespace ftl::train {

// Runs the job; writes the adapter (or, without LoRA, the trained weights) and
// trainer_state.json into --output_dir on rank 0, and the run's record (metrics.jsonl, report.html,
// TensorBoard events: train/run_record.h) with `launch_plan` in its start record. Throws
// ftl::Error on bad input, before the first step whenever the input can be checked up front; a
// failure is recorded in metrics.jsonl and the report before it propagates.
// Returns 0, or kExitPreempted when SIGTERM stopped it after saving a checkpoint.
int run_sft(const config::RunConfig& run, const RankContext& rank, const Log& log, const nlohmann::json& launch_plan);

}  // namespace ftl::train
