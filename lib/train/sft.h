// The SFT job (the seed's train.py: TRL SFTTrainer + PEFT LoRA + HF Trainer), one rank's view.
// Read it top to bottom in sft.cpp: resolve inputs, build tokenizer, model, adapters and data,
// then the optimizer-step loop, then save.
#pragma once

#include <c10/core/Device.h>

#include <functional>
#include <string>

#include "config/run_config.h"
#include "dist/comm.h"
#include "util/log.h"

namespace ftl::train {

struct RankContext {
    int rank = 0;
    int world_size = 1;
    std::string device = "cpu";  // "cpu" | "cuda"
    int device_index = 0;
    dist::Comm* comm = nullptr;  // null on a single rank

    // The torch device this rank computes on: cuda:<device_index> or cpu.
    c10::Device torch_device() const {
        return device == "cuda" ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device_index))
                                : c10::Device(c10::kCPU);
    }
    // Tests of crash safety: called with the step while that checkpoint is half written (the
    // test kills the process there). Empty in normal runs.
    std::function<void(int64_t step)> during_checkpoint_save;
};

// Runs the job; writes the adapter (or, without LoRA, nothing but the state) and
// trainer_state.json into --output_dir on rank 0. Throws ftl::Error on bad input, before the
// first step whenever the input can be checked up front.
void run_sft(const config::RunConfig& run, const RankContext& rank, const Log& log);

}  // namespace ftl::train
