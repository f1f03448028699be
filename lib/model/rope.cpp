#include "model/rope.h"

#include <cmath>

#ifdef FTL_WITH_CUDA
#include <torch/csrc/autograd/custom_function.h>

#include "model/kernel_launch.h"
#include "model/pointwise_cuda.h"
#endif

namespace ftl::model {

at::Tensor rope_inverse_frequencies(const DecoderConfig& config, const RopeConfig& rope, int64_t max_position,
                                    const at::Device& device) {
    const int64_t dim = config.rotary_dim();
    double base = rope.theta;
    if (rope.type == RopeType::kDynamic) {
        // NTK-aware base rescaling (HF _compute_dynamic_ntk_parameters).
        const double seq_len = std::max<double>(static_cast<double>(max_position + 1),
                                                static_cast<double>(config.max_position_embeddings));
        base = base * std::pow(rope.factor * seq_len / static_cast<double>(config.max_position_embeddings) -
                                   (rope.factor - 1.0),
                               static_cast<double>(dim) / static_cast<double>(dim - 2));
    }
    auto options = at::TensorOptions().dtype(at::kFloat).device(device);
    at::Tensor exponents = at::arange(0, dim, 2, at::TensorOptions().dtype(at::kLong).device(device))
                               .to(at::kFloat) / static_cast<double>(dim);
    // base^(2i/d), each frequency's wavelength over 2 pi.
    const at::Tensor pos_freqs = at::pow(at::scalar_tensor(base, options), exponents);
    if (rope.type == RopeType::kLongrope) {
        // HF _compute_longrope_parameters: 1 / (factors * base^(2i/d)), the long factors once the
        // batch reaches past the original context (its longrope_frequency_update).
        const bool long_context = max_position + 1 > rope.original_max_position_embeddings;
        const std::vector<double>& factors = long_context ? rope.long_factor : rope.short_factor;
        const at::Tensor ext = at::tensor(at::ArrayRef<double>(factors), at::TensorOptions().dtype(at::kDouble)).to(options);
        return 1.0 / (ext * pos_freqs);
    }
    at::Tensor inv_freq = 1.0 / pos_freqs;
    if (rope.type == RopeType::kLinear) inv_freq = inv_freq / rope.factor;
    if (rope.type == RopeType::kYarn) {
        // HF _compute_yarn_parameters, op for op: the original frequencies kept where the original
        // context turns more than beta_fast times, divided by factor where it turns less than
        // beta_slow times, blended linearly between.
        const at::Tensor& extrapolation = inv_freq;
        const at::Tensor interpolation = 1.0 / (rope.factor * pos_freqs);
        const double original = static_cast<double>(rope.original_max_position_embeddings);
        auto correction_dim = [&](double rotations) {
            return (static_cast<double>(dim) * std::log(original / (rotations * 2 * M_PI))) / (2 * std::log(base));
        };
        double low = correction_dim(rope.beta_fast), high = correction_dim(rope.beta_slow);
        if (rope.truncate) {
            low = std::floor(low);
            high = std::ceil(high);
        }
        low = std::max(low, 0.0);
        high = std::min(high, static_cast<double>(dim - 1));
        if (low == high) high += 0.001;  // transformers' guard against a zero-width ramp
        const at::Tensor ramp = at::clamp((at::arange(dim / 2, options) - low) / (high - low), 0, 1);
        const at::Tensor extrapolated_share = 1 - ramp;
        inv_freq = interpolation * (1 - extrapolated_share) + extrapolation * extrapolated_share;
    }
    if (rope.type == RopeType::kLlama3) {
        // Llama 3.1: long wavelengths divided by factor, short kept, the band between smoothly
        // interpolated (HF _compute_llama3_parameters).
        const double old_len = static_cast<double>(rope.original_max_position_embeddings);
        const double low_freq_wavelen = old_len / rope.low_freq_factor;
        const double high_freq_wavelen = old_len / rope.high_freq_factor;
        at::Tensor wavelen = 2 * M_PI / inv_freq;
        at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq);
        at::Tensor smooth = (old_len / wavelen - rope.low_freq_factor) /
                            (rope.high_freq_factor - rope.low_freq_factor);
        at::Tensor smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled;
        at::Tensor medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
        inv_freq = at::where(medium, smoothed, scaled);
    }
    return inv_freq;
}

RopeTables rope_tables(const DecoderConfig& config, const RopeConfig& rope, const at::Tensor& position_ids,
                       at::ScalarType dtype) {
    // Only the dynamic and longrope types depend on the largest position; reading it syncs a GPU stream.
    const bool dynamic = rope.type == RopeType::kDynamic || rope.type == RopeType::kLongrope;
    const int64_t max_position = dynamic && position_ids.numel() ? position_ids.max().item<int64_t>() : 0;
    at::Tensor inv_freq = rope_inverse_frequencies(config, rope, max_position, position_ids.device());
    // [B, T, 1] * [d/2] -> [B, T, d/2]; HF computes this as a batched matmul in fp32.
    at::Tensor angles = at::matmul(inv_freq.view({1, -1, 1}).expand({position_ids.size(0), -1, 1}),
                                   position_ids.to(at::kFloat).unsqueeze(1))
                            .transpose(1, 2);
    at::Tensor emb = at::cat({angles, angles}, -1);
    if (rope.type == RopeType::kLongrope || rope.type == RopeType::kYarn)  // scaled in fp32 before the cast, as HF's forward does
        return {(emb.cos() * rope.attention_factor).to(dtype), (emb.sin() * rope.attention_factor).to(dtype)};
    return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

namespace {

// Partial rotation (phi3's partial_rotary_factor): tables narrower than x's heads rotate the
// leading dims and pass the rest, concatenated as transformers' apply_rotary_pos_emb does.
template <class Rotate>
at::Tensor rotate_leading(const at::Tensor& x, const RopeTables& tables, Rotate rotate) {
    const int64_t width = tables.cos.size(-1), d = x.size(-1);
    return at::cat({rotate(x.narrow(-1, 0, width).contiguous(), tables), x.narrow(-1, width, d - width)}, -1);
}

}  // namespace

at::Tensor apply_rope_reference(const at::Tensor& x, const RopeTables& tables) {
    if (tables.cos.size(-1) < x.size(-1)) return rotate_leading(x, tables, apply_rope_reference);
    const int64_t half = x.size(-1) / 2;
    at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
    return x * tables.cos.unsqueeze(2) + rotated * tables.sin.unsqueeze(2);
}

#ifdef FTL_WITH_CUDA
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// x or its gradient [B, T, heads, d], contiguous; the tables [B, T, d], contiguous.
cuda::RopeArgs kernel_args(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    cuda::RopeArgs args;
    args.cos = cos.data_ptr();
    args.sin = sin.data_ptr();
    args.tokens = x.size(0) * x.size(1);
    args.heads = x.size(2);
    args.head_dim = x.size(3);
    args.type = *cuda::element_type_of(x.scalar_type());
    return args;
}

struct FusedRope : public torch::autograd::Function<FusedRope> {
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
        const at::Tensor in = x.contiguous(), c = cos.contiguous(), s = sin.contiguous();
        at::Tensor out = at::empty_like(in, at::MemoryFormat::Contiguous);
        cuda::check_launch(cuda::launch_rope(kernel_args(in, c, s), in.data_ptr(), out.data_ptr(), /*backward=*/false,
                                             cuda::current_stream(in)),
                           "RoPE forward");
        ctx->save_for_backward({c, s});
        return out;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        const auto saved = ctx->get_saved_variables();
        const at::Tensor grad = grad_outputs[0].contiguous();
        at::Tensor grad_x = at::empty_like(grad, at::MemoryFormat::Contiguous);
        cuda::check_launch(cuda::launch_rope(kernel_args(grad, saved[0], saved[1]), grad.data_ptr(), grad_x.data_ptr(),
                                             /*backward=*/true, cuda::current_stream(grad)),
                           "RoPE backward");
        return {grad_x, at::Tensor(), at::Tensor()};
    }
};

// Whether the kernels take these tensors: on one GPU, of one type they handle, tables [B, T, d]
// matching x [B, T, heads, d] (d even), and tables that need no gradient.
bool fused_kernels_take(const at::Tensor& x, const RopeTables& tables) {
    const at::Tensor& cos = tables.cos;
    const at::Tensor& sin = tables.sin;
    return x.is_cuda() && x.dim() == 4 && x.size(3) % 2 == 0 && x.numel() > 0 &&
           cuda::element_type_of(x.scalar_type()) && cos.device() == x.device() && sin.device() == x.device() &&
           cos.scalar_type() == x.scalar_type() && sin.scalar_type() == x.scalar_type() &&
           cos.sizes() == sin.sizes() && cos.dim() == 3 && cos.size(0) == x.size(0) && cos.size(1) == x.size(1) &&
           cos.size(2) == x.size(3) && !cos.requires_grad() && !sin.requires_grad();
}

}  // namespace
#endif

at::Tensor apply_rope(const at::Tensor& x, const RopeTables& tables) {
    if (tables.cos.size(-1) < x.size(-1)) return rotate_leading(x, tables, apply_rope);
#ifdef FTL_WITH_CUDA
    if (fused_kernels_take(x, tables)) return FusedRope::apply(x, tables.cos, tables.sin);
#endif
    return apply_rope_reference(x, tables);
}

}  // namespace ftl::model
