// GPU check of the fused RMSNorm kernels (scripts/gpu_check.sh; needs a CUDA device):
//   1. correct: for fp32/bf16/fp16 on awkward shapes, fresh random inputs each case, outputs
//      poisoned with NaN before the launch: y and dx against HF's composite in float64 on the CPU
//      (autograd for dx), ||out - ref|| / ||ref|| <= 1e-5 (fp32) or 1e-2 (bf16, fp16), every element
//      written; model::rms_norm's autograd path gives the launchers' results bit for bit;
//   2. speed: 8192 x 4096 bf16 (the 8B bench shape's rows), forward + backward against the
//      composite of ATen ops (what runs without the kernels), and the bytes moved per second
//      against a device-to-device copy.
// Prints one line per part; exits 1 on any failure.
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdio>

#include "cuda_timing.h"
#include <limits>

#include "model/rms_norm.h"
#include "model/rms_norm_cuda.h"

using namespace ftl;
using bench::seconds_per_call;

namespace {

constexpr double kEps = 1e-5;

double relative_error(const at::Tensor& out, const at::Tensor& ref) {
    const at::Tensor o = out.to(at::kCPU, at::kDouble);
    return (o - ref).norm().item<double>() / ref.norm().item<double>();
}

model::cuda::RmsNormArgs args_for(const at::Tensor& x, const at::Tensor& w) {
    model::cuda::RmsNormArgs a;
    a.x = x.data_ptr();
    a.weight = w.data_ptr();
    a.rows = x.numel() / x.size(-1);
    a.hidden = x.size(-1);
    a.eps = static_cast<float>(kEps);
    a.type = x.scalar_type() == at::kBFloat16 ? model::cuda::ElementType::kBFloat16
             : x.scalar_type() == at::kHalf   ? model::cuda::ElementType::kFloat16
                                              : model::cuda::ElementType::kFloat32;
    return a;
}

// One case; returns whether it passed, printing a line when it did not.
bool check_case(const std::vector<int64_t>& shape, at::ScalarType dtype, const at::Device& gpu) {
    const int64_t hidden = shape.back();
    const at::Tensor x = (at::randn(shape, at::kDouble) * 3.0).to(gpu, dtype);
    const at::Tensor w = (1.0 + 0.2 * at::randn({hidden}, at::kDouble)).to(gpu, dtype);
    const at::Tensor g = at::randn(shape, at::kDouble).to(gpu, dtype);
    // The reference: the composite in float64 on the inputs as rounded to `dtype`.
    const at::Tensor x64 = x.to(at::kCPU, at::kDouble).requires_grad_(true);
    const at::Tensor y64 = model::rms_norm_reference(x64, w.to(at::kCPU, at::kDouble), kEps);
    y64.backward(g.to(at::kCPU, at::kDouble));
    // The launchers on NaN-poisoned outputs.
    const auto nan = std::numeric_limits<double>::quiet_NaN();
    at::Tensor y = at::full(shape, nan, x.options()), dx = at::full(shape, nan, x.options());
    at::Tensor rstd = at::full({x.numel() / hidden}, nan, x.options().dtype(at::kFloat));
    void* stream = c10::cuda::getCurrentCUDAStream(gpu.index()).stream();
    const model::cuda::RmsNormArgs a = args_for(x, w);
    int status = model::cuda::launch_rms_norm_forward(a, y.data_ptr(), rstd.data_ptr<float>(), stream);
    if (status == 0) status = model::cuda::launch_rms_norm_backward(a, g.data_ptr(), rstd.data_ptr<float>(), dx.data_ptr(), stream);
    c10::cuda::device_synchronize();
    const double bound = dtype == at::kFloat ? 1e-5 : 1e-2;
    const double y_error = relative_error(y, y64.detach()), dx_error = relative_error(dx, x64.grad());
    const bool written = at::isfinite(y).all().item<bool>() && at::isfinite(dx).all().item<bool>() &&
                         at::isfinite(rstd).all().item<bool>();
    // The autograd path (what the model runs) gives the same bits.
    const at::Tensor xa = x.clone().requires_grad_(true);
    const at::Tensor ya = model::rms_norm(xa, w, kEps);
    ya.backward(g);
    const bool same = at::equal(ya.detach(), y) && at::equal(xa.grad(), dx);
    const bool ok = status == 0 && written && y_error <= bound && dx_error <= bound && same;
    if (!ok) {
        std::printf("FAILED rms_norm %s [", c10::toString(dtype));
        for (int64_t s : shape) std::printf(" %lld", static_cast<long long>(s));
        std::printf(" ]: launch %d, all written %d, y error %.2e, dx error %.2e (bound %.0e), autograd path same %d\n", status,
                    written, y_error, dx_error, bound, same);
    }
    return ok;
}

}  // namespace

int main() try {
    const at::Device gpu(at::kCUDA, 0);
    at::manual_seed(5);
    int cases = 0, passed = 0;
    for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{{3, 64}, {37, 1000}, {2, 5, 4096}, {513, 2048}, {4, 8192}})
        for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
            ++cases;
            passed += check_case(shape, dtype, gpu) ? 1 : 0;
        }
    std::printf("rms_norm CUDA vs float64 composite: %d of %d cases within bounds, every element written\n", passed, cases);

    const at::Tensor x = at::randn({8192, 4096}, at::TensorOptions().device(gpu).dtype(at::kBFloat16)).requires_grad_(true);
    const at::Tensor w = (1.0 + 0.1 * at::randn({4096}, x.options())).detach();
    const at::Tensor g = at::randn_like(x).detach();
    auto pass = [&](bool fused) {
        x.mutable_grad() = at::Tensor();
        const at::Tensor y = fused ? model::rms_norm(x, w, kEps) : model::rms_norm_reference(x, w, kEps);
        y.backward(g);
    };
    const double fused = seconds_per_call([&] { pass(true); }, 50);
    const double composite = seconds_per_call([&] { pass(false); }, 50);
    at::Tensor copy_target = at::empty_like(g);
    const double copy = seconds_per_call([&] { copy_target.copy_(g); }, 50);
    // Bytes: forward reads x, writes y; backward reads x and g, writes dx (weight and rstd are small).
    const double bytes = 5.0 * static_cast<double>(x.nbytes()), copy_bytes = 2.0 * static_cast<double>(g.nbytes());
    std::printf("rms_norm 8192x4096 bf16 forward+backward: fused %.1f us, composite %.1f us (%.2fx); fused %.0f GB/s, "
                "d2d copy %.0f GB/s: %.0f%% of copy\n",
                fused * 1e6, composite * 1e6, composite / fused, bytes / fused / 1e9, copy_bytes / copy / 1e9,
                100.0 * (bytes / fused) / (copy_bytes / copy));
    return passed == cases ? 0 : 1;
} catch (const std::exception& e) {
    std::fprintf(stderr, "ftl_bench_rms_norm: %s\n", e.what());
    return 1;
}
