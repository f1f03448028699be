#include "optim/cpu_adamw.h"

#include <ATen/Parallel.h>

#include <cmath>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "util/error.h"

namespace ftl::optim {
namespace {

// The update's constants, each rounded to fp32 as ATen rounds a double scalar for fp32 tensors.
struct Constants {
    float decay;           // 1 - lr * wd
    float weight;          // lerp weight 1 - beta1
    float one_minus_weight;
    bool low_weight;       // weight < 0.5: ATen's first lerp form
    float beta2;
    float one_minus_beta2;
    float bias_correction2_sqrt;
    float eps;
    float neg_step_size;   // -lr / (1 - beta1^t)
};

Constants constants_for(int64_t step, double lr, const AdamWOptions& o) {
    const double t = static_cast<double>(step);
    Constants c{};
    c.decay = static_cast<float>(1.0 - lr * o.weight_decay);
    c.weight = static_cast<float>(1.0 - o.beta1);
    c.one_minus_weight = 1.0f - c.weight;
    c.low_weight = std::abs(c.weight) < 0.5f;
    c.beta2 = static_cast<float>(o.beta2);
    c.one_minus_beta2 = static_cast<float>(1.0 - o.beta2);
    c.bias_correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(o.beta2, t)));
    c.eps = static_cast<float>(o.eps);
    c.neg_step_size = static_cast<float>(-(lr / (1.0 - std::pow(o.beta1, t))));
    return c;
}

inline void update_one(float& p, float g, float& m, float& v, const Constants& c) {
    p = p * c.decay;
    m = c.low_weight ? m + c.weight * (g - m) : g - (g - m) * c.one_minus_weight;
    v = v * c.beta2 + (c.one_minus_beta2 * g) * g;
    const float denom = std::sqrt(v) / c.bias_correction2_sqrt + c.eps;
    p = p + c.neg_step_size * (m / denom);
}

void update_scalar(float* p, const float* g, float* m, float* v, int64_t n, const Constants& c) {
    for (int64_t i = 0; i < n; ++i) update_one(p[i], g[i], m[i], v[i], c);
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) void update_avx2(float* p, const float* g, float* m, float* v, int64_t n,
                                                 const Constants& c) {
    const __m256 decay = _mm256_set1_ps(c.decay), weight = _mm256_set1_ps(c.weight),
                 one_minus_weight = _mm256_set1_ps(c.one_minus_weight), beta2 = _mm256_set1_ps(c.beta2),
                 one_minus_beta2 = _mm256_set1_ps(c.one_minus_beta2),
                 bias_correction2_sqrt = _mm256_set1_ps(c.bias_correction2_sqrt), eps = _mm256_set1_ps(c.eps),
                 neg_step_size = _mm256_set1_ps(c.neg_step_size);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        __m256 pv = _mm256_mul_ps(_mm256_loadu_ps(p + i), decay);
        __m256 mv = _mm256_loadu_ps(m + i);
        const __m256 diff = _mm256_sub_ps(gv, mv);
        mv = c.low_weight ? _mm256_add_ps(mv, _mm256_mul_ps(weight, diff))
                          : _mm256_sub_ps(gv, _mm256_mul_ps(diff, one_minus_weight));
        __m256 vv = _mm256_loadu_ps(v + i);
        vv = _mm256_add_ps(_mm256_mul_ps(vv, beta2), _mm256_mul_ps(_mm256_mul_ps(one_minus_beta2, gv), gv));
        const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vv), bias_correction2_sqrt), eps);
        pv = _mm256_add_ps(pv, _mm256_mul_ps(neg_step_size, _mm256_div_ps(mv, denom)));
        _mm256_storeu_ps(p + i, pv);
        _mm256_storeu_ps(m + i, mv);
        _mm256_storeu_ps(v + i, vv);
    }
    update_scalar(p + i, g + i, m + i, v + i, n - i, c);
}

__attribute__((target("avx512f"))) void update_avx512(float* p, const float* g, float* m, float* v, int64_t n,
                                                      const Constants& c) {
    const __m512 decay = _mm512_set1_ps(c.decay), weight = _mm512_set1_ps(c.weight),
                 one_minus_weight = _mm512_set1_ps(c.one_minus_weight), beta2 = _mm512_set1_ps(c.beta2),
                 one_minus_beta2 = _mm512_set1_ps(c.one_minus_beta2),
                 bias_correction2_sqrt = _mm512_set1_ps(c.bias_correction2_sqrt), eps = _mm512_set1_ps(c.eps),
                 neg_step_size = _mm512_set1_ps(c.neg_step_size);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 gv = _mm512_loadu_ps(g + i);
        __m512 pv = _mm512_mul_ps(_mm512_loadu_ps(p + i), decay);
        __m512 mv = _mm512_loadu_ps(m + i);
        const __m512 diff = _mm512_sub_ps(gv, mv);
        mv = c.low_weight ? _mm512_add_ps(mv, _mm512_mul_ps(weight, diff))
                          : _mm512_sub_ps(gv, _mm512_mul_ps(diff, one_minus_weight));
        __m512 vv = _mm512_loadu_ps(v + i);
        vv = _mm512_add_ps(_mm512_mul_ps(vv, beta2), _mm512_mul_ps(_mm512_mul_ps(one_minus_beta2, gv), gv));
        const __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vv), bias_correction2_sqrt), eps);
        pv = _mm512_add_ps(pv, _mm512_mul_ps(neg_step_size, _mm512_div_ps(mv, denom)));
        _mm512_storeu_ps(p + i, pv);
        _mm512_storeu_ps(m + i, mv);
        _mm512_storeu_ps(v + i, vv);
    }
    update_scalar(p + i, g + i, m + i, v + i, n - i, c);
}
#endif

}  // namespace

bool cpu_supports(CpuIsa isa) {
    switch (isa) {
        case CpuIsa::kScalar: return true;
#if defined(__x86_64__)
        case CpuIsa::kAvx2: return __builtin_cpu_supports("avx2");
        case CpuIsa::kAvx512: return __builtin_cpu_supports("avx512f");
#else
        case CpuIsa::kAvx2:
        case CpuIsa::kAvx512: return false;
#endif
    }
    return false;
}

CpuIsa best_cpu_isa() {
    if (cpu_supports(CpuIsa::kAvx512)) return CpuIsa::kAvx512;
    if (cpu_supports(CpuIsa::kAvx2)) return CpuIsa::kAvx2;
    return CpuIsa::kScalar;
}

std::string isa_name(CpuIsa isa) {
    switch (isa) {
        case CpuIsa::kScalar: return "scalar";
        case CpuIsa::kAvx2: return "AVX2";
        case CpuIsa::kAvx512: return "AVX-512";
    }
    return "?";
}

void cpu_adamw_update(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, int64_t step,
                      double lr, const AdamWOptions& options, CpuIsa isa) {
    if (!cpu_supports(isa)) fail(ErrorKind::kInternal, "cpu_adamw_update: this CPU has no " + isa_name(isa));
    const Constants c = constants_for(step, lr, options);
    switch (isa) {
#if defined(__x86_64__)
        case CpuIsa::kAvx512: update_avx512(param, grad, exp_avg, exp_avg_sq, n, c); return;
        case CpuIsa::kAvx2: update_avx2(param, grad, exp_avg, exp_avg_sq, n, c); return;
#endif
        default: update_scalar(param, grad, exp_avg, exp_avg_sq, n, c); return;
    }
}

void cpu_adamw_update(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                      int64_t step, double lr, const AdamWOptions& options, CpuIsa isa) {
    for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&param, &grad, &exp_avg, &exp_avg_sq})
        if (!t->device().is_cpu() || t->scalar_type() != at::kFloat || !t->is_contiguous() || t->numel() != param.numel())
            fail(ErrorKind::kInternal, "cpu_adamw_update: needs contiguous fp32 CPU tensors of one size");
    float* p = param.data_ptr<float>();
    const float* g = grad.data_ptr<float>();
    float* m = exp_avg.data_ptr<float>();
    float* v = exp_avg_sq.data_ptr<float>();
    // 64 Ki elements a task: 1 MiB of the four buffers, well above the threads' start-up cost.
    at::parallel_for(0, param.numel(), int64_t{1} << 16, [&](int64_t begin, int64_t end) {
        cpu_adamw_update(p + begin, g + begin, m + begin, v + begin, end - begin, step, lr, options, isa);
    });
}

}  // namespace ftl::optim
