// ZeRO-Offload / ZeRO-Infinity for the optimizer (DeepSpeed's offload_optimizer): a rank's fp32
// shard of the master weights and AdamW moments lives in host memory (device cpu) or in a swap
// file on NVMe (device nvme) instead of on the accelerator, and the update runs on the CPU
// (optim/cpu_adamw.h). The device keeps only the reduced gradient slice and receives the updated
// weights for the all-gather.
//
// NVMe: the shard is cut into sub-groups of sub_group_size elements (DeepSpeed's key); the swap
// file holds, per sub-group, [master | exp_avg | exp_avg_sq], each padded to 4096 bytes. A step
// streams the sub-groups through two aligned host buffers: sub-group i+1 is read while i is
// updated and i-1 is written back, so host memory holds two sub-groups, not the shard. Each
// sub-group's CRC-32C is kept when written and checked on every read: a swap file changed under
// the run stops it with an error naming the file, the sub-group and the bytes.
//
// Host memory: the update runs in chunks of min(sub_group_size, 16M) elements so that transfers
// overlap the CPU's work (DeepSpeed's CPU Adam does it in tiles): chunk k+1's gradient downloads
// into a staging buffer while the CPU updates chunk k, and chunk k's updated master uploads while
// the CPU updates chunk k+1 (zero/transfer_stream.h; on CPU ranks all of it runs in order).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/direct_file.h"
#include "optim/adamw.h"
#include "zero/transfer_stream.h"

namespace ftl::zero {

struct OptimizerOffload {
    bool nvme = false;              // false: host memory
    std::string nvme_path;          // the folder for the swap file (nvme)
    bool pin_memory = false;        // host tensors page-locked (with CUDA), for asynchronous copies
    io::AioOptions aio;
    int64_t sub_group_size = 1'000'000'000;  // elements per swapped sub-group (nvme)
};

class OffloadedAdamWState {
public:
    enum Tensor { kMaster = 0, kExpAvg = 1, kExpAvgSq = 2 };

    // `master`: this rank's fp32 slice [n] (any device); the moments start at zero. `rank` names
    // the swap file (<nvme_path>/ftlaunch-rank<rank>-optimizer.swap, removed on destruction).
    OffloadedAdamWState(const at::Tensor& master, const OptimizerOffload& offload, int rank);
    ~OffloadedAdamWState();

    // One AdamW update at 1-based `step` with `grad` [n] fp32 (any device), weight decay where
    // `decay` applies it; the updated master slice is copied into `updated` [n] (any device).
    void step(const at::Tensor& grad, at::Tensor& updated, int64_t step, double lr, const optim::AdamWOptions& options,
              const optim::DecayMask& decay = {});

    // The whole state, [n] fp32 on the host each, indexed by Tensor: for checkpoints, in one pass
    // over the swap file.
    std::array<at::Tensor, 3> read_all() const;
    // Replaces the whole state (resume), in one pass of writes (nothing read back).
    void write_all(const at::Tensor& master, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq);

    // "host memory (pinned)" or "<file> on NVMe, 3 sub-groups of ..., kernel AIO".
    std::string describe() const;
    // What the swap file needs on disk for a shard of `n` elements.
    static uint64_t swap_bytes(int64_t n, int64_t sub_group_size);

private:
    struct SubGroup {
        int64_t begin = 0, size = 0;  // elements of the shard
        uint64_t offset = 0;          // bytes into the swap file
        uint32_t crc32c = 0;          // of its 3 sections as last written
    };
    uint64_t section_bytes(const SubGroup& group) const { return io::direct_size(static_cast<uint64_t>(group.size) * 4); }
    void read_group(size_t index, io::AlignedBuffer& into) const;
    void verify_group(size_t index, const io::AlignedBuffer& buffer) const;
    void write_group(size_t index, const io::AlignedBuffer& from, bool wait);

    // The host-memory update, pipelined as the header says.
    void step_in_host_memory(const at::Tensor& grad, at::Tensor& updated, int64_t step, double lr,
                             const optim::AdamWOptions& options, const optim::DecayMask& decay);

    int64_t numel_;
    OptimizerOffload offload_;
    std::vector<at::Tensor> host_;  // kHost: [master, exp_avg, exp_avg_sq]
    int64_t chunk_ = 0;             // elements per pipelined chunk (host memory)
    at::Tensor staged_grad_[2];     // [chunk_] each: gradient chunks downloaded ahead
    std::unique_ptr<TransferStream> transfer_;
    std::unique_ptr<io::DirectFile> swap_;
    std::vector<SubGroup> groups_;
    io::AlignedBuffer buffers_[2];
};

}  // namespace ftl::zero
