#include "train/throughput.h"

#include <ATen/ATen.h>

#include <chrono>

#include "zero/memory_estimate.h"

#ifdef FTL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace ftl::train {
namespace {

// Dense tensor-core peaks from NVIDIA's datasheets (SXM parts), FLOP/s: 16-bit, then fp32
// without TF32 (LibTorch's default for float32 matmuls).
struct DatasheetPeak {
    const char* name_part;
    double half, single;
};
constexpr DatasheetPeak kDatasheets[] = {
    {"H200", 989.4e12, 66.9e12},
    {"H100", 989.4e12, 66.9e12},
    {"A100", 312e12, 19.5e12},
};

std::optional<PeakFlops> datasheet_peak(const c10::Device& device, c10::ScalarType compute) {
#ifdef FTL_WITH_CUDA
    if (!device.is_cuda()) return std::nullopt;
    const std::string name = at::cuda::getDeviceProperties(device.index() < 0 ? 0 : device.index())->name;
    for (const DatasheetPeak& sheet : kDatasheets)
        if (name.find(sheet.name_part) != std::string::npos) {
            const bool half = compute == at::kBFloat16 || compute == at::kHalf;
            return PeakFlops{half ? sheet.half : sheet.single, name + " datasheet, " + (half ? "16-bit" : "fp32") + " dense"};
        }
#else
    (void)device;
    (void)compute;
#endif
    return std::nullopt;
}

PeakFlops measured_peak(const c10::Device& device, c10::ScalarType compute) {
    const int64_t n = device.is_cuda() ? 4096 : 512;
    const auto options = at::TensorOptions().dtype(compute).device(device);
    const at::Tensor a = at::randn({n, n}, options), b = at::randn({n, n}, options);
    at::Tensor c = at::matmul(a, b);
    c.sum().item<double>();  // warm up (and wait for the device)
    const double flops = 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n);
    double best = 0.0, spent = 0.0;
    for (int round = 0; round < 20 && spent < 0.2; ++round) {
        const auto begin = std::chrono::steady_clock::now();
        constexpr int kRepeats = 4;
        for (int i = 0; i < kRepeats; ++i) c = at::matmul(a, b);
        c.sum().item<double>();
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
        spent += seconds;
        best = std::max(best, kRepeats * flops / seconds);
    }
    return {best, "measured: " + std::to_string(n) + "x" + std::to_string(n) + " " + c10::toString(compute) +
                      " matmuls on " + device.str()};
}

}  // namespace

int64_t recomputed_layer_count(int64_t layers, bool partitioned, bool checkpointing, int64_t every, int64_t kept) {
    if (partitioned) return layers;
    if (!checkpointing) return 0;
    return every > 1 ? (layers + every - 1) / every : layers - kept;
}

ModelShape model_shape(const model::DecoderConfig& config, int64_t frozen, int64_t trainable, int64_t recomputed_layers) {
    const int64_t layers = config.num_layers;
    const int64_t layer_params = zero::count_parameters(config).per_layer + (frozen > 0 ? trainable / layers : 0);
    return {frozen, trainable, layers, config.hidden_size, recomputed_layers * layer_params, recomputed_layers};
}

double training_flops_per_token(const ModelShape& shape, int64_t sequence_length) {
    // Attention's forward per layer: 4·H·S a token.
    const double attention_forward = 4.0 * static_cast<double>(shape.hidden) * static_cast<double>(sequence_length);
    const double recompute = 2.0 * static_cast<double>(shape.recomputed_params) +
                             static_cast<double>(shape.recomputed_layers) * attention_forward;
    return 4.0 * static_cast<double>(shape.frozen_params) + 6.0 * static_cast<double>(shape.trainable_params) +
           3.0 * static_cast<double>(shape.layers) * attention_forward + recompute;
}

PeakFlops device_peak_flops(const c10::Device& device, c10::ScalarType compute, std::optional<double> given_tflops) {
    if (given_tflops) return {*given_tflops * 1e12, "FTLAUNCH_PEAK_TFLOPS"};
    if (auto sheet = datasheet_peak(device, compute)) return *sheet;
    return measured_peak(device, compute);
}

void RankTotal::store(dist::Comm* comm) {
    at::Tensor sum = at::full({1}, pending_, at::TensorOptions().dtype(at::kDouble));
    if (comm) comm->all_reduce(sum, dist::ReduceOp::kSum);
    total_ += sum.item<double>();
    pending_ = 0.0;
}

}  // namespace ftl::train
