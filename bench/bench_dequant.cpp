// GPU check of the 4-bit dequantisation kernel (scripts/gpu_check.sh; needs a CUDA device):
//   1. bit for bit: the CUDA kernel's output equals the CPU path's (itself bit-identical to
//      bitsandbytes, tests/parity/test_quant.py) for NF4/FP4, nested or not, fp32/bf16/fp16
//      outputs, on awkward shapes (odd counts, short last blocks);
//   2. bandwidth: an 8192 x 8192 NF4 nested weight dequantised to bf16, bytes moved (packed codes
//      + absmax read, bf16 written) per second, against a device-to-device copy of the bf16
//      weight (read + write) timed the same way. Target: >= 70% of the copy rate.
// Prints one line per part; exits 1 on any mismatch.
#include <c10/cuda/CUDAFunctions.h>

#include <cstdio>

#include "cuda_timing.h"

#include "quant/four_bit.h"

using namespace ftl;
using bench::seconds_per_call;

namespace {

bool same_bits(const at::Tensor& a, const at::Tensor& b) {
    if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
    const at::Tensor x = a.contiguous().view(at::kByte), y = b.contiguous().view(at::kByte);
    return at::equal(x, y);
}

quant::FourBitState on_device(const quant::FourBitState& s, const at::Device& device) {
    quant::FourBitState out = s;
    out.absmax = s.absmax.to(device);
    if (s.nested()) {
        out.nested_absmax = s.nested_absmax.to(device);
        out.nested_code = s.nested_code.to(device);
    }
    return out;
}

}  // namespace

int main() try {
    const at::Device gpu(at::kCUDA, 0);
    at::manual_seed(11);
    int cases = 0, mismatches = 0;
    for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{{37, 29}, {3, 1000}, {300, 257}, {1024, 4096}})
        for (quant::QuantType type : {quant::QuantType::kNf4, quant::QuantType::kFp4})
            for (bool nested : {false, true})
                for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
                    quant::FourBitConfig config;
                    config.type = type;
                    config.nested = nested;
                    const quant::FourBitWeight q = quant::FourBitQuantizer(config, at::kCPU).quantize(at::randn(shape).to(dtype), "w");
                    const at::Tensor cpu = quant::dequantize_4bit(q.packed, *q.state);
                    const at::Tensor cuda = quant::dequantize_4bit(q.packed.to(gpu), on_device(*q.state, gpu)).cpu();
                    ++cases;
                    if (!same_bits(cpu, cuda)) {
                        ++mismatches;
                        std::printf("MISMATCH %s nested=%d %s [%lld, %lld]\n", quant::quant_type_name(type).c_str(), nested,
                                    c10::toString(dtype), static_cast<long long>(shape[0]), static_cast<long long>(shape[1]));
                    }
                }
    std::printf("dequant_4bit CUDA vs CPU: %d of %d cases bit-identical\n", cases - mismatches, cases);

    quant::FourBitConfig config;
    config.nested = true;
    const quant::FourBitWeight q =
        quant::FourBitQuantizer(config, gpu).quantize(at::randn({8192, 8192}).to(at::kBFloat16), "w");
    const quant::FourBitState state = *q.state;
    const double dequant = seconds_per_call([&] { (void)quant::dequantize_4bit(q.packed, state); }, 50);
    const at::Tensor dense = quant::dequantize_4bit(q.packed, state);
    at::Tensor copy_target = at::empty_like(dense);
    const double copy = seconds_per_call([&] { copy_target.copy_(dense); }, 50);
    const double dequant_bytes = static_cast<double>(q.packed.nbytes() + state.absmax.nbytes() + dense.nbytes());
    const double copy_bytes = 2.0 * static_cast<double>(dense.nbytes());
    const double dequant_rate = dequant_bytes / dequant / 1e9, copy_rate = copy_bytes / copy / 1e9;
    std::printf("dequant_4bit 8192x8192 nf4 nested -> bf16: %.0f GB/s, d2d copy %.0f GB/s: %.0f%% of copy (target >= 70%%)\n",
                dequant_rate, copy_rate, 100.0 * dequant_rate / copy_rate);
    return mismatches == 0 ? 0 : 1;
} catch (const std::exception& e) {
    std::fprintf(stderr, "ftl_bench_dequant: %s\n", e.what());
    return 1;
}
