// GPU check of the model's fused kernels, RMSNorm, SwiGLU and RoPE, and of variable-length flash
// attention over collate's spans (scripts/gpu_check.sh; needs a CUDA device):
//   1. correct: for fp32/bf16/fp16 on awkward shapes, fresh random inputs each case, outputs
//      poisoned with NaN before the launch, every element must be written, and
//      - against the composite in float64 on the CPU (autograd for the gradients):
//        ||out - ref|| / ||ref|| <= 1e-5 (fp32) or 1e-2 (bf16, fp16);
//      - RoPE against the composite of ATen's CUDA ops bit for bit (products and sums rounded as
//        they round; the unit tests hold the formula to it on the CPU);
//      - the model's autograd path (model::rms_norm, swiglu, apply_rope) gives the launchers'
//        results bit for bit;
//      - input embeddings looked up in a pinned host table (LoRA's frozen embeddings kept off the
//        device) equal the device lookup bit for bit, from host ids and from a copy of device ids;
//      - attention over the spans of packed, padded rows (train::collate) against SDPA with
//        attention_mask_for's mask in fp32: output at real tokens and q/k/v gradients (upstream
//        gradient zero at padding, whose outputs nothing uses) within 1e-2 (bf16);
//   2. speed, forward + backward against the composite of ATen ops (what runs without the
//      kernels) on the 8B bench shape's tensors (batch 4 x 2048 tokens), and the bytes moved per
//      second against a device-to-device copy; attention over spans against the masked SDPA.
// Prints one line per part; exits 1 on any failure.
#include <c10/cuda/CUDAFunctions.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <tuple>

#include "cuda_timing.h"
#include "data/examples.h"
#include "model/attention.h"
#include "model/decoder.h"
#include "model/kernel_launch.h"
#include "model/pointwise_cuda.h"
#include "model/rms_norm.h"
#include "model/rms_norm_cuda.h"
#include "model/rope.h"
#include "model/swiglu.h"
#include "train/batches.h"

using namespace ftl;
using bench::seconds_per_call;

namespace {

constexpr double kEps = 1e-5;
const double kNan = std::numeric_limits<double>::quiet_NaN();

double relative_error(const at::Tensor& out, const at::Tensor& ref) {
    const at::Tensor o = out.to(at::kCPU, at::kDouble), r = ref.to(at::kCPU, at::kDouble);
    return (o - r).norm().item<double>() / r.norm().item<double>();
}

bool all_written(std::initializer_list<at::Tensor> outputs) {
    for (const at::Tensor& t : outputs)
        if (!at::isfinite(t).all().item<bool>()) return false;
    return true;
}

double bound_for(at::ScalarType dtype) { return dtype == at::kFloat ? 1e-5 : 1e-2; }

std::string describe(const char* kernel, at::ScalarType dtype, const std::vector<int64_t>& shape) {
    std::string text = std::string(kernel) + " " + c10::toString(dtype) + " [";
    for (int64_t s : shape) text += " " + std::to_string(s);
    return text + " ]";
}

at::Tensor cpu_double(const at::Tensor& t) { return t.to(at::kCPU, at::kDouble); }

bool check_rms_norm(const std::vector<int64_t>& shape, at::ScalarType dtype, const at::Device& gpu) {
    const int64_t hidden = shape.back();
    const at::Tensor x = (at::randn(shape, at::kDouble) * 3.0).to(gpu, dtype);
    const at::Tensor w = (1.0 + 0.2 * at::randn({hidden}, at::kDouble)).to(gpu, dtype);
    const at::Tensor g = at::randn(shape, at::kDouble).to(gpu, dtype);
    const at::Tensor x64 = cpu_double(x).requires_grad_(true);
    const at::Tensor y64 = model::rms_norm_reference(x64, cpu_double(w), kEps);
    y64.backward(cpu_double(g));

    at::Tensor y = at::full(shape, kNan, x.options()), dx = at::full(shape, kNan, x.options());
    at::Tensor rstd = at::full({x.numel() / hidden}, kNan, x.options().dtype(at::kFloat));
    model::cuda::RmsNormArgs a;
    a.x = x.data_ptr();
    a.weight = w.data_ptr();
    a.rows = x.numel() / hidden;
    a.hidden = hidden;
    a.eps = static_cast<float>(kEps);
    a.type = *model::cuda::element_type_of(dtype);
    void* stream = model::cuda::current_stream(x);
    int status = model::cuda::launch_rms_norm_forward(a, y.data_ptr(), rstd.data_ptr<float>(), stream);
    if (status == 0) status = model::cuda::launch_rms_norm_backward(a, g.data_ptr(), rstd.data_ptr<float>(), dx.data_ptr(), stream);
    c10::cuda::device_synchronize();

    const at::Tensor xa = x.clone().requires_grad_(true);
    const at::Tensor ya = model::rms_norm(xa, w, kEps);
    ya.backward(g);
    const double bound = bound_for(dtype);
    const double y_error = relative_error(y, y64.detach()), dx_error = relative_error(dx, x64.grad());
    const bool written = all_written({y, dx, rstd}), same = at::equal(ya.detach(), y) && at::equal(xa.grad(), dx);
    const bool ok = status == 0 && written && y_error <= bound && dx_error <= bound && same;
    if (!ok)
        std::printf("FAILED %s: launch %d, all written %d, y error %.2e, dx error %.2e (bound %.0e), autograd path same %d\n",
                    describe("rms_norm", dtype, shape).c_str(), status, written, y_error, dx_error, bound, same);
    return ok;
}

bool check_swiglu(const std::vector<int64_t>& shape, at::ScalarType dtype, const at::Device& gpu) {
    const at::Tensor gate = (at::randn(shape, at::kDouble) * 4.0).to(gpu, dtype);
    const at::Tensor up = at::randn(shape, at::kDouble).to(gpu, dtype);
    const at::Tensor g = at::randn(shape, at::kDouble).to(gpu, dtype);
    const at::Tensor gate64 = cpu_double(gate).requires_grad_(true), up64 = cpu_double(up).requires_grad_(true);
    model::swiglu_reference(gate64, up64).backward(cpu_double(g));

    at::Tensor y = at::full(shape, kNan, gate.options()), dgate = at::full(shape, kNan, gate.options()),
               dup = at::full(shape, kNan, gate.options());
    model::cuda::SwigluArgs a;
    a.gate = gate.data_ptr();
    a.up = up.data_ptr();
    a.count = gate.numel();
    a.type = *model::cuda::element_type_of(dtype);
    void* stream = model::cuda::current_stream(gate);
    int status = model::cuda::launch_swiglu_forward(a, y.data_ptr(), stream);
    if (status == 0)
        status = model::cuda::launch_swiglu_backward(a, g.data_ptr(), dgate.data_ptr(), dup.data_ptr(), stream);
    c10::cuda::device_synchronize();

    const at::Tensor ga = gate.clone().requires_grad_(true), ua = up.clone().requires_grad_(true);
    const at::Tensor ya = model::swiglu(ga, ua);
    ya.backward(g);
    const double bound = bound_for(dtype);
    const at::Tensor y64 = model::swiglu_reference(gate64.detach(), up64.detach());
    const double y_error = relative_error(y, y64), dgate_error = relative_error(dgate, gate64.grad()),
                 dup_error = relative_error(dup, up64.grad());
    const bool written = all_written({y, dgate, dup});
    const bool same = at::equal(ya.detach(), y) && at::equal(ga.grad(), dgate) && at::equal(ua.grad(), dup);
    const bool ok = status == 0 && written && y_error <= bound && dgate_error <= bound && dup_error <= bound && same;
    if (!ok)
        std::printf("FAILED %s: launch %d, all written %d, errors y %.2e dgate %.2e dup %.2e (bound %.0e), autograd path same %d\n",
                    describe("swiglu", dtype, shape).c_str(), status, written, y_error, dgate_error, dup_error, bound, same);
    return ok;
}

// shape: x [B, T, heads, d]; the tables [B, T, d] as transformers makes them (cos/sin of angles).
bool check_rope(const std::vector<int64_t>& shape, at::ScalarType dtype, const at::Device& gpu) {
    const at::Tensor angles = at::rand({shape[0], shape[1], shape[3] / 2}, at::kDouble) * 100.0;
    const at::Tensor emb = at::cat({angles, angles}, -1);
    const model::RopeTables tables{emb.cos().to(gpu, dtype), emb.sin().to(gpu, dtype)};
    const at::Tensor x = (at::randn(shape, at::kDouble) * 3.0).to(gpu, dtype);
    const at::Tensor g = at::randn(shape, at::kDouble).to(gpu, dtype);
    const at::Tensor x64 = cpu_double(x).requires_grad_(true);
    const at::Tensor y64 =
        model::apply_rope_reference(x64, model::RopeTables{cpu_double(tables.cos), cpu_double(tables.sin)});
    y64.backward(cpu_double(g));
    const at::Tensor xc = x.clone().requires_grad_(true);
    const at::Tensor yc = model::apply_rope_reference(xc, tables);  // ATen's CUDA ops
    yc.backward(g);

    at::Tensor y = at::full(shape, kNan, x.options()), dx = at::full(shape, kNan, x.options());
    model::cuda::RopeArgs a;
    a.cos = tables.cos.data_ptr();
    a.sin = tables.sin.data_ptr();
    a.tokens = shape[0] * shape[1];
    a.heads = shape[2];
    a.head_dim = shape[3];
    a.type = *model::cuda::element_type_of(dtype);
    void* stream = model::cuda::current_stream(x);
    int status = model::cuda::launch_rope(a, x.data_ptr(), y.data_ptr(), /*backward=*/false, stream);
    if (status == 0) status = model::cuda::launch_rope(a, g.data_ptr(), dx.data_ptr(), /*backward=*/true, stream);
    c10::cuda::device_synchronize();

    const at::Tensor xa = x.clone().requires_grad_(true);
    const at::Tensor ya = model::apply_rope(xa, tables);
    ya.backward(g);
    const double bound = bound_for(dtype);
    const double y_error = relative_error(y, y64.detach()), dx_error = relative_error(dx, x64.grad());
    const bool written = all_written({y, dx});
    const bool as_aten = at::equal(yc.detach(), y) && at::equal(xc.grad(), dx);
    const bool same = at::equal(ya.detach(), y) && at::equal(xa.grad(), dx);
    const bool ok = status == 0 && written && y_error <= bound && dx_error <= bound && as_aten && same;
    if (!ok)
        std::printf("FAILED %s: launch %d, all written %d, y error %.2e, dx error %.2e (bound %.0e), ATen's bits %d, "
                    "autograd path same %d\n",
                    describe("rope", dtype, shape).c_str(), status, written, y_error, dx_error, bound, as_aten, same);
    return ok;
}

// Forward + backward of `fused` and `composite` on the same inputs; `bytes` the fused pair moves.
void report_speed(const char* what, const std::function<void(bool)>& pass, double bytes, const at::Tensor& like) {
    const double fused = seconds_per_call([&] { pass(true); }, 50);
    const double composite = seconds_per_call([&] { pass(false); }, 50);
    const at::Tensor source = at::randn_like(like);
    at::Tensor target = at::empty_like(like);
    const double copy = seconds_per_call([&] { target.copy_(source); }, 50);
    const double copy_rate = 2.0 * static_cast<double>(like.nbytes()) / copy;
    std::printf("%s forward+backward: fused %.1f us, composite %.1f us (%.2fx); fused %.0f GB/s, d2d copy %.0f GB/s: %.0f%% of copy\n",
                what, fused * 1e6, composite * 1e6, composite / fused, bytes / fused / 1e9, copy_rate / 1e9,
                100.0 * (bytes / fused) / copy_rate);
}

void measure_speed(const at::Device& gpu) {
    const auto bf16 = at::TensorOptions().device(gpu).dtype(at::kBFloat16);
    {
        const at::Tensor x = at::randn({8192, 4096}, bf16).requires_grad_(true);
        const at::Tensor w = (1.0 + 0.1 * at::randn({4096}, bf16)).detach(), g = at::randn_like(x).detach();
        // Forward reads x, writes y; backward reads x and g, writes dx (weight and rstd are small).
        report_speed("rms_norm 8192x4096 bf16", [&](bool fused) {
            x.mutable_grad() = at::Tensor();
            (fused ? model::rms_norm(x, w, kEps) : model::rms_norm_reference(x, w, kEps)).backward(g);
        }, 5.0 * static_cast<double>(x.nbytes()), x);
    }
    {
        const at::Tensor gate = at::randn({8192, 14336}, bf16).requires_grad_(true);
        const at::Tensor up = at::randn_like(gate).requires_grad_(true), g = at::randn_like(gate).detach();
        // Forward reads gate and up, writes y; backward reads gate, up and g, writes both gradients.
        report_speed("swiglu 8192x14336 bf16", [&](bool fused) {
            gate.mutable_grad() = at::Tensor();
            up.mutable_grad() = at::Tensor();
            (fused ? model::swiglu(gate, up) : model::swiglu_reference(gate, up)).backward(g);
        }, 8.0 * static_cast<double>(gate.nbytes()), gate);
    }
    {
        const at::Tensor q = at::randn({4, 2048, 32, 128}, bf16).requires_grad_(true), g = at::randn_like(q).detach();
        const model::RopeTables tables{at::randn({4, 2048, 128}, bf16), at::randn({4, 2048, 128}, bf16)};
        // Forward reads x, writes out; backward reads g, writes dx (the tables are read from cache).
        report_speed("rope q 4x2048x32x128 bf16", [&](bool fused) {
            q.mutable_grad() = at::Tensor();
            (fused ? model::apply_rope(q, tables) : model::apply_rope_reference(q, tables)).backward(g);
        }, 4.0 * static_cast<double>(q.nbytes()), q);
    }
}

// Packed rows of random documents, the last row padded: the batch collate makes, on the GPU.
model::Batch packed_batch(int64_t rows, int64_t length, const at::Device& gpu) {
    std::vector<data::Row> data_rows(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
        data::Row& row = data_rows[static_cast<size_t>(r)];
        const int64_t filled = r + 1 == rows ? length - length / 5 : length;
        while (static_cast<int64_t>(row.input_ids.size()) < filled) {
            const int64_t document = std::min<int64_t>(filled - static_cast<int64_t>(row.input_ids.size()),
                                                       1 + at::randint(length / 2, {1}).item<int64_t>());
            for (int64_t j = 0; j < document; ++j) {
                row.input_ids.push_back(1);
                row.labels.push_back(1);
                row.position_ids.push_back(static_cast<int32_t>(j));
            }
        }
    }
    std::vector<int64_t> indices(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) indices[static_cast<size_t>(r)] = r;
    return train::collate(data_rows, indices, 0, /*packed=*/true, gpu);
}

bool check_attention_over_spans(int64_t heads, int64_t kv_heads, int64_t head_dim, const at::Device& gpu) {
    const int64_t rows = 3, length = 300;
    const model::Batch batch = packed_batch(rows, length, gpu);
    const model::AttentionPattern spans = model::attention_pattern(batch, std::nullopt, gpu, at::kBFloat16, head_dim);
    model::AttentionPattern masked;
    masked.mask = model::attention_mask_for(batch, std::nullopt);
    const auto bf16 = at::TensorOptions().device(gpu).dtype(at::kBFloat16);
    const at::Tensor q = at::randn({rows, length, heads, head_dim}, bf16), k = at::randn({rows, length, kv_heads, head_dim}, bf16),
                     v = at::randn({rows, length, kv_heads, head_dim}, bf16);
    const at::Tensor real = batch.attention_mask.to(at::kBool).unsqueeze(2);  // [B, T, 1]
    const at::Tensor g = at::randn({rows, length, heads * head_dim}, bf16).masked_fill(real.logical_not(), 0);
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
    auto run = [&](const model::AttentionPattern& pattern, at::ScalarType type) {
        std::vector<at::Tensor> in{q.to(type).requires_grad_(true), k.to(type).requires_grad_(true), v.to(type).requires_grad_(true)};
        const at::Tensor out = model::causal_attention(in[0], in[1], in[2], pattern, scale);
        out.backward(g.to(type));
        return std::vector<at::Tensor>{out.detach().masked_fill(real.logical_not(), 0), in[0].grad(), in[1].grad(), in[2].grad()};
    };
    const std::vector<at::Tensor> ours = run(spans, at::kBFloat16), reference = run(masked, at::kFloat);
    double worst = 0;
    for (size_t i = 0; i < ours.size(); ++i) worst = std::max(worst, relative_error(ours[i], reference[i]));
    const bool ok = spans.span_starts.defined() && worst <= 1e-2;
    if (!ok)
        std::printf("FAILED attention over spans, heads %lld/%lld, head_dim %lld: spans used %d, worst error %.2e (bound 1e-2)\n",
                    static_cast<long long>(heads), static_cast<long long>(kv_heads), static_cast<long long>(head_dim),
                    spans.span_starts.defined(), worst);
    return ok;
}

void measure_attention_speed(const at::Device& gpu) {
    const int64_t rows = 4, length = 2048, heads = 32, kv_heads = 8, head_dim = 128;
    const model::Batch batch = packed_batch(rows, length, gpu);
    const model::AttentionPattern spans = model::attention_pattern(batch, std::nullopt, gpu, at::kBFloat16, head_dim);
    model::AttentionPattern masked;
    masked.mask = model::attention_mask_for(batch, std::nullopt);
    const auto bf16 = at::TensorOptions().device(gpu).dtype(at::kBFloat16);
    const at::Tensor q = at::randn({rows, length, heads, head_dim}, bf16).requires_grad_(true);
    const at::Tensor k = at::randn({rows, length, kv_heads, head_dim}, bf16).requires_grad_(true);
    const at::Tensor v = at::randn({rows, length, kv_heads, head_dim}, bf16).requires_grad_(true);
    const at::Tensor g = at::randn({rows, length, heads * head_dim}, bf16);
    auto pass = [&](const model::AttentionPattern& pattern) {
        for (const at::Tensor& t : {q, k, v}) t.mutable_grad() = at::Tensor();
        model::causal_attention(q, k, v, pattern, 0.088).backward(g);
    };
    const double over_spans = seconds_per_call([&] { pass(spans); }, 20);
    const double with_mask = seconds_per_call([&] { pass(masked); }, 20);
    std::printf("attention 4x2048 packed, 32/8 heads of 128, bf16, forward+backward: over spans %.1f us, masked SDPA %.1f us (%.2fx)\n",
                over_spans * 1e6, with_mask * 1e6, with_mask / over_spans);
}

bool check_embeddings_from_host(const at::Device& gpu) {
    model::DecoderConfig config;
    config.vocab_size = 1000;
    config.hidden_size = 96;
    model::DecoderWeights weights;
    weights.embed_tokens = at::randn({config.vocab_size, config.hidden_size}, at::kBFloat16).pin_memory();
    weights.lm_head = at::randn({config.vocab_size, config.hidden_size}, at::kBFloat16);
    const model::CausalLM lm(config, weights);
    const at::Tensor host_ids = at::randint(config.vocab_size, {3, 17}, at::kLong);
    const at::Tensor ids = host_ids.to(gpu);
    const at::Tensor reference = at::embedding(weights.embed_tokens.to(gpu), ids);
    const at::Tensor from_host_ids = lm.embed(ids, host_ids), from_device_ids = lm.embed(ids);
    const bool ok = from_host_ids.device() == gpu && at::equal(from_host_ids, reference) && at::equal(from_device_ids, reference);
    std::printf("%s: embeddings from a pinned host table equal the device lookup bit for bit\n", ok ? "ok" : "FAILED");
    return ok;
}

// Runs `check` over shapes x dtypes; prints the count; returns whether all passed.
bool run_cases(const char* kernel, const std::vector<std::vector<int64_t>>& shapes,
               const std::function<bool(const std::vector<int64_t>&, at::ScalarType, const at::Device&)>& check,
               const at::Device& gpu) {
    int cases = 0, passed = 0;
    for (const std::vector<int64_t>& shape : shapes)
        for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
            ++cases;
            passed += check(shape, dtype, gpu) ? 1 : 0;
        }
    std::printf("%s CUDA vs float64 composite: %d of %d cases within bounds, every element written\n", kernel, passed, cases);
    return passed == cases;
}

}  // namespace

int main() try {
    const at::Device gpu(at::kCUDA, 0);
    at::manual_seed(5);
    bool ok = run_cases("rms_norm", {{3, 64}, {37, 1000}, {2, 5, 4096}, {513, 2048}, {4, 8192}}, check_rms_norm, gpu);
    ok = run_cases("swiglu", {{1}, {3, 65}, {37, 1001}, {2, 5, 14336}, {1000, 4097}}, check_swiglu, gpu) && ok;
    ok = run_cases("rope (and ATen's CUDA composite bit for bit)", {{1, 1, 1, 2}, {2, 5, 3, 64}, {3, 33, 8, 128}, {1, 257, 32, 128}},
                   check_rope, gpu) && ok;
    int attention_passed = 0;
    for (const auto& [heads, kv_heads, head_dim] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{8, 2, 64}, {4, 4, 128}, {6, 3, 72}})
        attention_passed += check_attention_over_spans(heads, kv_heads, head_dim, gpu) ? 1 : 0;
    std::printf("attention over collate's spans vs masked SDPA in fp32: %d of 3 cases within bounds\n", attention_passed);
    ok = ok && attention_passed == 3;
    ok = check_embeddings_from_host(gpu) && ok;
    measure_speed(gpu);
    measure_attention_speed(gpu);
    return ok ? 0 : 1;
} catch (const std::exception& e) {
    std::fprintf(stderr, "ftl_bench_model_kernels: %s\n", e.what());
    return 1;
}
