// One rank's place in a job: its rank, the ranks in all, its device and its communicator,
// passed explicitly to everything that needs them (no globals).
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "dist/comm.h"
#include "dist/counting_comm.h"
#include "util/heartbeat.h"

namespace ftl::train {

struct RankContext {
    int rank = 0;
    int world_size = 1;
    std::string device = "cpu";  // "cpu" | "cuda"
    int device_index = 0;
    dist::Comm* comm = nullptr;  // null on a single rank
    const dist::CommVolume* comm_volume = nullptr;  // what `comm` has moved so far (a CountingComm's)

    // The torch device this rank computes on: cuda:<device_index> or cpu.
    c10::Device torch_device() const {
        return device == "cuda" ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device_index))
                                : c10::Device(c10::kCPU);
    }
    // Rank 0 draws a progress bar (the launcher's stdout is a terminal: FTLAUNCH_PROGRESS=1).
    bool progress_bar = false;
    // The device's peak TFLOP/s for MFU when the user gives it (FTLAUNCH_PEAK_TFLOPS); else a
    // datasheet figure or a measurement (train/throughput.h).
    std::optional<double> peak_tflops;
    // The memory this rank may use, in bytes, when the user states it (FTLAUNCH_MEMORY_PER_RANK);
    // else the pre-flight check asks the device (train/preflight.h).
    std::optional<int64_t> memory_per_rank;
    // True once SIGTERM arrived (a scheduler's preemption notice): the ranks agree on it after the
    // current step, save a checkpoint and stop with kExitPreempted. Empty: never asked.
    std::function<bool()> stop_requested;
    // True once after someone asked for a status block (SIGUSR1 to the launcher or the worker);
    // rank 0 then prints one (train/progress.h). Empty: never asked.
    std::function<bool()> status_requested;
    // Tests of crash safety: called with the step while that checkpoint is half written (the
    // test kills the process there). Empty in normal runs.
    std::function<void(int64_t step)> during_checkpoint_save;
    // Tests of failure in the middle of a step: called with the step (1-based) after its first
    // micro-batch's backward, before its gradients are reduced. Empty in normal runs.
    std::function<void(int64_t step)> during_step;
    // Where the rank is, for the launcher's watchdog (util/heartbeat.h). Null: nobody watches.
    const Heartbeat* heartbeat = nullptr;
    // Tests of the watchdog: called with each watched phase after the heartbeat records it (the
    // test stops the process in a chosen one). Empty in normal runs.
    std::function<void(const std::string& phase)> entered_phase;
};

}  // namespace ftl::train
