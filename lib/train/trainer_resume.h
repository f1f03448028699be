// The HF Trainer's own resume files in an ftlaunch checkpoint, so that
// Trainer.train(resume_from_checkpoint=<checkpoint>) continues where ftlaunch stopped:
//   optimizer.pt  torch.optim.AdamW.state_dict() as the Trainer's optimizer holds it: two groups
//                 (weight decay, then none: Trainer.get_decay_parameter_names' rule), parameters
//                 numbered in PeftModel.named_parameters() order, each with step (fp32 scalar),
//                 exp_avg and exp_avg_sq;
//   scheduler.pt  the LambdaLR.state_dict() of transformers' get_scheduler after as many steps.
// Written with torch.save's zip layout and only the types torch.load(weights_only=True) takes
// (dicts, lists, tuples, numbers, strings, None, tensors). ftlaunch resumes from its own
// optimizer.safetensors; these are for the HF stack.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "config/run_config.h"
#include "optim/adamw.h"

namespace ftl::train {

// What the files need beyond the optimizer's state: the AdamW settings and the schedule's base
// and current rates.
struct TrainerResumeFacts {
    optim::AdamWOptions options;  // betas, eps, weight_decay (group 1), fused
    double initial_lr = 0.0;      // the schedule's base (--learning_rate)
    double current_lr = 0.0;      // the rate of the next step
    int64_t steps = 0;            // optimizer steps taken
};

// Whether a run's optimizer is one the Trainer would rebuild identically from the same flags:
// LoRA adapters only, torch's AdamW (--optim adamw_torch or adamw_torch_fused), no DeepSpeed (it
// saves its own layout), no fp16 loss scaling, a LambdaLR schedule (not reduce_lr_on_plateau).
bool trainer_can_resume(const config::RunConfig& run);

// Writes optimizer.pt and scheduler.pt into `dir`. `state`: the optimizer's named state
// (optim::AdamW::state(): exp_avg.<name>, exp_avg_sq.<name>, step) for `parameters`, the adapter
// tensors in PEFT's order (peft::adapter_parameters).
void write_trainer_resume_files(const std::string& dir, const std::vector<std::pair<std::string, at::Tensor>>& parameters,
                                const std::vector<std::pair<std::string, at::Tensor>>& state,
                                const TrainerResumeFacts& facts);

}  // namespace ftl::train
