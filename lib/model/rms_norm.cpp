#include "model/rms_norm.h"

#include <torch/csrc/autograd/custom_function.h>

#ifdef FTL_WITH_CUDA
#include "model/kernel_launch.h"
#include "model/rms_norm_cuda.h"
#endif

namespace ftl::model {

at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps) {
    at::Tensor x32 = x.to(at::kFloat);
    at::Tensor normed = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
    return weight * normed.to(x.scalar_type());
}

at::Tensor unit_offset_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
    at::Tensor x32 = x.to(at::kFloat);
    at::Tensor normed = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
    return (normed * (weight.to(at::kFloat) + 1.0)).to(x.scalar_type());
}

at::Tensor weight_in_fp32_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
    at::Tensor x32 = x.to(at::kFloat);
    at::Tensor normed = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
    return (weight * normed).to(x.scalar_type());
}

#ifdef FTL_WITH_CUDA
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

cuda::RmsNormArgs kernel_args(const at::Tensor& rows, const at::Tensor& weight, double eps) {
    cuda::RmsNormArgs args;
    args.x = rows.data_ptr();
    args.weight = weight.data_ptr();
    args.rows = rows.size(0);
    args.hidden = rows.size(1);
    args.eps = static_cast<float>(eps);
    args.type = *cuda::element_type_of(rows.scalar_type());
    return args;
}

struct FusedRmsNorm : public torch::autograd::Function<FusedRmsNorm> {
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, double eps) {
        const at::Tensor rows = x.reshape({-1, x.size(-1)}).contiguous();
        const at::Tensor w = weight.contiguous();
        at::Tensor y = at::empty_like(rows);
        at::Tensor rstd = at::empty({rows.size(0)}, rows.options().dtype(at::kFloat));
        cuda::check_launch(cuda::launch_rms_norm_forward(kernel_args(rows, w, eps), y.data_ptr(), rstd.data_ptr<float>(),
                                                         cuda::current_stream(rows)),
                           "RMSNorm forward");
        ctx->save_for_backward({rows, w, rstd});
        ctx->saved_data["eps"] = eps;
        return y.view(x.sizes());
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        const auto saved = ctx->get_saved_variables();
        const at::Tensor& rows = saved[0];
        const at::Tensor& w = saved[1];
        const at::Tensor& rstd = saved[2];
        const at::Tensor grad = grad_outputs[0].reshape({-1, rows.size(1)}).contiguous();
        at::Tensor grad_x;
        if (ctx->needs_input_grad(0)) {
            grad_x = at::empty_like(rows);
            cuda::check_launch(cuda::launch_rms_norm_backward(kernel_args(rows, w, ctx->saved_data["eps"].toDouble()),
                                                              grad.data_ptr(), rstd.data_ptr<float>(), grad_x.data_ptr(),
                                                              cuda::current_stream(rows)),
                               "RMSNorm backward");
            grad_x = grad_x.view(grad_outputs[0].sizes());
        }
        at::Tensor grad_weight;
        if (ctx->needs_input_grad(1)) {  // full fine-tuning: sum over rows of grad * normed
            const at::Tensor normed = (rows.to(at::kFloat) * rstd.unsqueeze(1)).to(rows.scalar_type());
            grad_weight = (grad.to(at::kFloat) * normed.to(at::kFloat)).sum(0).to(w.scalar_type());
        }
        return {grad_x, grad_weight, at::Tensor()};
    }
};

// Whether the kernels take these tensors: on one GPU, of one type they handle.
bool fused_kernels_take(const at::Tensor& x, const at::Tensor& weight) {
    return x.is_cuda() && weight.device() == x.device() && weight.scalar_type() == x.scalar_type() &&
           cuda::element_type_of(x.scalar_type()) && weight.dim() == 1 && x.dim() >= 1 &&
           weight.size(0) == x.size(-1) && x.numel() > 0;
}

}  // namespace
#endif

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
#ifdef FTL_WITH_CUDA
    if (fused_kernels_take(x, weight)) return FusedRmsNorm::apply(x, weight, eps);
#endif
    return rms_norm_reference(x, weight, eps);
}

}  // namespace ftl::model
