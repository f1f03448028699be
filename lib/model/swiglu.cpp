#include "model/swiglu.h"

#ifdef FTL_WITH_CUDA
#include <torch/csrc/autograd/custom_function.h>

#include "model/kernel_launch.h"
#include "model/pointwise_cuda.h"
#endif

namespace ftl::model {

at::Tensor swiglu_reference(const at::Tensor& gate, const at::Tensor& up) { return at::silu(gate) * up; }

at::Tensor gelu_tanh_gated(const at::Tensor& gate, const at::Tensor& up) { return at::gelu(gate, "tanh") * up; }

#ifdef FTL_WITH_CUDA
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

cuda::SwigluArgs kernel_args(const at::Tensor& gate, const at::Tensor& up) {
    cuda::SwigluArgs args;
    args.gate = gate.data_ptr();
    args.up = up.data_ptr();
    args.count = gate.numel();
    args.type = *cuda::element_type_of(gate.scalar_type());
    return args;
}

struct FusedSwiglu : public torch::autograd::Function<FusedSwiglu> {
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
        const at::Tensor g = gate.contiguous(), u = up.contiguous();
        at::Tensor y = at::empty_like(g, at::MemoryFormat::Contiguous);
        cuda::check_launch(cuda::launch_swiglu_forward(kernel_args(g, u), y.data_ptr(), cuda::current_stream(g)),
                           "SwiGLU forward");
        ctx->save_for_backward({g, u});
        return y;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        const auto saved = ctx->get_saved_variables();
        const at::Tensor& g = saved[0];
        const at::Tensor& u = saved[1];
        const at::Tensor grad = grad_outputs[0].contiguous();
        at::Tensor grad_gate = at::empty_like(g, at::MemoryFormat::Contiguous);
        at::Tensor grad_up = at::empty_like(u, at::MemoryFormat::Contiguous);
        cuda::check_launch(cuda::launch_swiglu_backward(kernel_args(g, u), grad.data_ptr(), grad_gate.data_ptr(),
                                                        grad_up.data_ptr(), cuda::current_stream(g)),
                           "SwiGLU backward");
        return {ctx->needs_input_grad(0) ? grad_gate : at::Tensor(), ctx->needs_input_grad(1) ? grad_up : at::Tensor()};
    }
};

// Whether the kernels take these tensors: on one GPU, of one shape and a type they handle.
bool fused_kernels_take(const at::Tensor& gate, const at::Tensor& up) {
    return gate.is_cuda() && up.device() == gate.device() && up.scalar_type() == gate.scalar_type() &&
           cuda::element_type_of(gate.scalar_type()) && gate.sizes() == up.sizes() && gate.numel() > 0;
}

}  // namespace
#endif

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) {
#ifdef FTL_WITH_CUDA
    if (fused_kernels_take(gate, up)) return FusedSwiglu::apply(gate, up);
#endif
    return swiglu_reference(gate, up);
}

}  // namespace ftl::model
