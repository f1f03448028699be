#include "quant/int8.h"

#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include "util/error.h"

namespace ftl::quant {

namespace {

// codes.to(dtype) * (scales * (1/127)), as MatMul8bitFp and MatMul8bitLt's backward form W:
// the product rounded to `dtype` once.
at::Tensor weight_in(const at::Tensor& codes, const at::Tensor& scales, at::ScalarType dtype) {
    return codes.to(dtype).mul_((scales * (1.0 / 127.0)).unsqueeze(1));
}

// The backward of linear_int8: grad_x = grad_y W, W as weight_in forms it.
struct Int8LinearBackward : public torch::autograd::Node {
    at::Tensor codes;
    std::shared_ptr<const Int8State> state;
    at::ScalarType input_dtype = at::kFloat;
    std::vector<int64_t> input_shape;

    torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
        const at::Tensor& grad = grads.at(0);
        if (!grad.defined()) return {at::Tensor()};
        const at::Tensor weight = weight_in(codes, state->scales, input_dtype);
        return {at::matmul(grad.reshape({-1, grad.size(-1)}).to(input_dtype), weight).view(input_shape)};
    }
};

// MatMul8bitLt's forward on x2 [rows, in] (no gradient).
at::Tensor outlier_split_matmul(const at::Tensor& x2, const at::Tensor& codes, const Int8State& state, const at::Tensor& bias) {
    const RowQuantized a = quantize_rows_int8(x2.to(at::kHalf), state.threshold);
    // The int32 product, exact: every partial sum of int8 x int8 products is an integer below 2^53.
    const at::Tensor product = at::matmul(a.codes.to(at::kDouble), codes.to(at::kDouble).t()).to(at::kInt);
    // int8_mm_dequant: int32 * (row x column scales) * 1/127^2 (bitsandbytes writes 6.200124e-05).
    at::Tensor out = product * (a.absmax.unsqueeze(1) * state.scales.unsqueeze(0)) * 6.200124e-05;
    if (bias.defined()) out += bias;
    out = out.to(x2.scalar_type());
    if (a.outlier_columns.numel() > 0) {
        const at::Tensor columns = x2.index_select(1, a.outlier_columns).contiguous();
        const at::Tensor weights =
            dequantize_int8(codes.index_select(1, a.outlier_columns).contiguous(), state.scales).to(x2.scalar_type());
        out = out.addmm(columns, weights.t());
    }
    return out;
}

}  // namespace

RowQuantized quantize_rows_int8(const at::Tensor& half_rows, double threshold) {
    at::Tensor a = half_rows;
    RowQuantized out;
    if (threshold > 0.0) {
        const at::Tensor outliers = a.abs() >= threshold;
        out.outlier_columns = at::nonzero(outliers.any(0)).view(-1);
        if (out.outlier_columns.numel() > 0) a = a.masked_fill(outliers, 0);
    } else {
        out.outlier_columns = at::empty({0}, a.options().dtype(at::kLong));
    }
    out.absmax = std::get<0>(a.abs().max(1)).to(at::kFloat);
    // 127 / absmax as Python's `127.0 / tensor` computes it (reciprocal, then times 127) in fp32,
    // times a (promoted to fp32), rounded half to even; a zero row gives 0 * inf = NaN, which
    // bitsandbytes' int8 cast turns into 0: made 0 explicitly here.
    at::Tensor scaled = at::round(a * (out.absmax.reciprocal() * 127.0).unsqueeze(-1));
    scaled = at::nan_to_num(scaled, 0.0, 0.0, 0.0);
    out.codes = scaled.to(at::kChar);
    if (a.size(0) > 1 && out.outlier_columns.numel() > 0) out.codes.index_fill_(1, out.outlier_columns, 0);
    return out;
}

Int8Weight quantize_int8(const at::Tensor& weight, double threshold, const at::Device& device) {
    at::NoGradGuard no_grad;
    const RowQuantized q = quantize_rows_int8(weight.to(device, at::kHalf), 0.0);
    auto state = std::make_shared<Int8State>();
    state->scales = q.absmax;
    state->threshold = threshold;
    return {q.codes, state};
}

at::Tensor dequantize_int8(const at::Tensor& codes, const at::Tensor& scales) {
    return codes * scales.view({-1, 1}) * 7.874015718698502e-3;
}

at::Tensor linear_int8(const at::Tensor& x, const at::Tensor& codes, const std::shared_ptr<const Int8State>& state,
                       const at::Tensor& bias, bool dequantized) {
    if (bias.defined() && bias.requires_grad())
        fail(ErrorKind::kInternal, "linear_int8: the bias of an 8-bit linear is frozen with its weight");
    at::Tensor y;
    {
        at::NoGradGuard no_grad;
        // Linear8bitLt casts its bias to the input's type first.
        const at::Tensor input_bias = bias.defined() ? bias.to(x.scalar_type()) : bias;
        if (dequantized) {
            const at::Tensor weight = weight_in(codes, state->scales, x.scalar_type());
            y = input_bias.defined() ? at::linear(x, weight, input_bias) : at::linear(x, weight);
        } else {
            std::vector<int64_t> shape = x.sizes().vec();
            shape.back() = codes.size(0);
            y = outlier_split_matmul(x.reshape({-1, x.size(-1)}), codes, *state, input_bias).view(shape);
        }
    }
    if (!at::GradMode::is_enabled() || !x.requires_grad()) return y;
    auto node = std::shared_ptr<Int8LinearBackward>(new Int8LinearBackward(), torch::autograd::deleteNode);
    node->codes = codes;
    node->state = state;
    node->input_dtype = x.scalar_type();
    node->input_shape = x.sizes().vec();
    node->set_next_edges(torch::autograd::collect_next_edges(x));
    torch::autograd::create_gradient_edge(y, node);
    return y;
}

std::optional<Int8Weight> read_saved_int8(const std::string& name, const std::function<at::Tensor(const std::string&)>& tensor,
                                          double threshold, const at::Device& device, const std::string& source) {
    const at::Tensor codes = tensor(name);
    if (!codes.defined() || codes.scalar_type() != at::kChar) return std::nullopt;
    const std::string prefix = name.substr(0, name.size() - std::string(".weight").size());
    auto bad = [&](const std::string& what) { fail(ErrorKind::kConfig, source + ": 8-bit weight '" + name + "': " + what); };
    const at::Tensor scales = tensor(prefix + ".SCB");
    if (codes.dim() != 2) bad("expected an int8 [out, in] matrix");
    if (!scales.defined()) bad("its row scales '" + prefix + ".SCB' are missing");
    if (scales.dim() != 1 || scales.size(0) != codes.size(0))
        bad("'" + prefix + ".SCB' has " + std::to_string(scales.numel()) + " values for " + std::to_string(codes.size(0)) + " rows");
    const at::Tensor format = tensor(prefix + ".weight_format");
    if (format.defined() && format.numel() == 1 && format.to(at::kCPU, at::kLong).item<int64_t>() != 0)
        bad("weight_format " + std::to_string(format.to(at::kCPU, at::kLong).item<int64_t>()) +
            " is a GPU tile layout of bitsandbytes < 0.45; only row-major (0) int8 weights load");
    auto state = std::make_shared<Int8State>();
    state->scales = scales.to(device, at::kFloat).contiguous();
    state->threshold = threshold;
    return Int8Weight{codes.to(device).contiguous(), state};
}

}  // namespace ftl::quant
