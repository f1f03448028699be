// The SFT job (the seed's train.py: TRL SFTTrainer + PEFT LoRA + HF Trainer), one rank's view.
// Read it top to bottom in sft.cpp: resolve inputs, build tokenizer, model, adapters and data,
// then the optimizer-step loop, then save.
#pragma once

#include "config/run_config.h"
#include "train/rank_context.h"
#include "util/log.h"

namespace ftl::train {

// Runs the job; writes the adapter (or, without LoRA, nothing but the state) and
// trainer_state.json into --output_dir on rank 0. Throws ftl::Error on bad input, before the
// first step whenever the input can be checked up front.
void run_sft(const config::RunConfig& run, const RankContext& rank, const Log& log);

}  // namespace ftl::train
