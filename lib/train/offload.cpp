#include "train/offload.h"

#include "util/error.h"

namespace ftl::train {

io::AioOptions aio_options(const config::AioConfig& aio) {
    io::AioOptions out;
    out.block_size = static_cast<uint64_t>(aio.block_size);
    out.queue_depth = aio.queue_depth;
    out.thread_count = aio.thread_count;
    out.single_submit = aio.single_submit;
    return out;
}

std::optional<zero::OptimizerOffload> optimizer_offload_for(const config::RunConfig& run) {
    const auto& zero = run.deepspeed.zero_optimization;
    const auto& offload = zero.offload_optimizer;
    if (!run.uses_deepspeed || offload.device == config::OffloadDevice::kNone) return std::nullopt;
    if (zero.stage == 0)
        fail(ErrorKind::kConfig, "zero_optimization.offload_optimizer.device " + config::to_string(offload.device) +
                                     " needs zero_optimization.stage 1, 2 or 3 (got 0): offload moves the partitioned "
                                     "optimizer state");
    zero::OptimizerOffload out;
    out.nvme = offload.device == config::OffloadDevice::kNvme;
    out.nvme_path = offload.nvme_path;
    out.pin_memory = offload.pin_memory;
    out.aio = aio_options(run.deepspeed.aio);
    out.sub_group_size = zero.sub_group_size;
    return out;
}

std::optional<zero::ParameterOffload> parameter_offload_for(const config::RunConfig& run, bool offloaded) {
    if (!offloaded) return std::nullopt;
    const auto& offload = run.deepspeed.zero_optimization.offload_param;
    zero::ParameterOffload out;
    out.nvme = offload.device == config::OffloadDevice::kNvme;
    out.nvme_path = offload.nvme_path;
    out.aio = aio_options(run.deepspeed.aio);
    out.max_in_cpu = offload.max_in_cpu;
    return out;
}

}  // namespace ftl::train
