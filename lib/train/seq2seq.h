// The seed's third job: peft's examples/conditional_generation/
// peft_lora_seq2seq_accelerate_ds_zero3_offload.py (BART + LoRA on RAFT's twitter_complaints,
// under the launch config's DeepSpeed settings), one rank's view. Read it top to bottom in
// seq2seq.cpp: data, model and adapters, then per epoch the training loop with its memory report
// and train_ppl / train_epoch_loss, generation over the evaluation split with its memory report,
// accuracy and the first ten predictions beside the labels; the adapter saved at the end.
//
// The example's semantics, kept: AdamW (weight decay 0.01, torch's default) with a linear
// schedule without warmup over every step of every epoch; each rank's loss is BART's mean
// cross-entropy over its batch's labels, gradients averaged over ranks; clipping only from
// DeepSpeed's gradient_clipping; evaluation generates with the model's generation_config.json
// and counts exact matches after stripping spaces. Differences: the train order is the HF
// Trainer's seeded sampler (train/batches.h), not the DataLoader's global-RNG shuffle; the logged
// train loss is the mean over ranks (the example prints rank 0's).
#pragma once

#include "config/run_config.h"
#include "train/rank_context.h"
#include "util/log.h"

namespace ftl::train {

// Runs the job; rank 0 prints the example's report lines on stdout and writes the adapter into
// --output_dir. Throws ftl::Error on bad input (before the first step where it can be checked).
int run_seq2seq_example(const config::RunConfig& run, const RankContext& rank, const Log& log);

}  // namespace ftl::train
