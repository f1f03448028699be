#include "quant/four_bit.h"

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <nlohmann/json.hpp>
#include <numeric>

#include "quant/blockwise.h"
#include "quant/eight_bit.h"
#include "util/error.h"

#ifdef FTL_WITH_CUDA
#include <c10/cuda/CUDAStream.h>

#include "quant/dequantize_cuda.h"
#endif

namespace ftl::quant {
namespace {

constexpr int64_t kNestedBlocksize = 256;

void check_blocksize(int64_t blocksize) {
    for (int64_t allowed : {32, 64, 128, 256, 512, 1024, 2048, 4096})
        if (blocksize == allowed) return;
    fail(ErrorKind::kConfig, "4-bit blocksize " + std::to_string(blocksize) +
                                 " is not one bitsandbytes supports (32, 64, 128, 256, 512, 1024, 2048 or 4096)");
}

int64_t blocks_of(int64_t n, int64_t blocksize) { return (n + blocksize - 1) / blocksize; }

at::Tensor table_tensor(QuantType type, const at::Device& device) {
    const auto& table = code_table(type);
    return at::tensor(at::ArrayRef<float>(table.data(), table.size()), at::kFloat).to(device);
}

// The backward of linear_4bit: grad_x = grad_y W, with W dequantised again.
struct FourBitLinearBackward : public torch::autograd::Node {
    at::Tensor packed;
    std::shared_ptr<const FourBitState> state;
    at::ScalarType input_dtype = at::kFloat;

    torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
        const at::Tensor& grad = grads.at(0);
        if (!grad.defined()) return {at::Tensor()};
        const at::Tensor weight = dequantize_4bit(packed, *state).to(state->compute_dtype);
        return {at::matmul(grad.to(state->compute_dtype), weight).to(input_dtype)};
    }
};

}  // namespace

at::ScalarType parse_storage_dtype(const std::string& text, const std::string& key) {
    if (text == "uint8") return at::kByte;
    if (text == "bfloat16") return at::kBFloat16;
    if (text == "float16") return at::kHalf;
    if (text == "float32") return at::kFloat;
    fail(ErrorKind::kUsage, key + ": '" + text + "' is not a 4-bit storage dtype (uint8, bfloat16, float16 or float32)");
}

int64_t FourBitState::numel() const {
    return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<int64_t>());
}

int64_t FourBitState::bytes() const {
    int64_t total = absmax.nbytes();
    if (nested()) total += nested_absmax.nbytes() + static_cast<int64_t>(sizeof(offset));
    return total;
}

FourBitQuantizer::FourBitQuantizer(const FourBitConfig& config, const at::Device& device)
    : config_(config), device_(device) {
    check_blocksize(config.blocksize);
    if (config.nested) {
        const at::Tensor code = dynamic_map(true);
        nested_search_ = eight_bit_lut(code.data_ptr<float>());
        nested_code_ = code.to(device);
    }
}

FourBitWeight FourBitQuantizer::quantize(const at::Tensor& weight, const std::string& name) const {
    const FourBitConfig& config = config_;
    const at::Device& device = device_;
    if (!at::isFloatingType(weight.scalar_type()))
        fail(ErrorKind::kConfig, name + ": 4-bit quantisation needs a floating-point weight, not " +
                                     std::string(c10::toString(weight.scalar_type())));
    const int64_t n = weight.numel(), bytes = (n + 1) / 2, blocks = blocks_of(n, config.blocksize);
    const int64_t storage_size = static_cast<int64_t>(c10::elementSize(config.storage_dtype));
    if (bytes % storage_size != 0)
        fail(ErrorKind::kConfig, name + ": " + std::to_string(n) + " elements pack into " + std::to_string(bytes) +
                                     " bytes, not a multiple of the " + std::to_string(storage_size) + "-byte " +
                                     c10::toString(config.storage_dtype) +
                                     " quant storage; use --bnb_4bit_quant_storage_dtype uint8");
    at::NoGradGuard no_grad;
    const at::Tensor source = weight.detach().to(at::kCPU, at::kFloat).contiguous();
    at::Tensor packed = at::empty({bytes}, at::kByte);
    at::Tensor absmax = at::empty({blocks}, at::kFloat);
    const float* x = source.data_ptr<float>();
    uint8_t* codes = packed.data_ptr<uint8_t>();
    float* scales = absmax.data_ptr<float>();
    const int64_t blocksize = config.blocksize;
    // Whole blocks per task; each block is independent.
    at::parallel_for(0, blocks, std::max<int64_t>(1, 16384 / blocksize), [&](int64_t first, int64_t last) {
        const int64_t begin = first * blocksize, end = std::min(n, last * blocksize);
        quantize_4bit(x + begin, end - begin, blocksize, config.type, codes + begin / 2, scales + first);
    });

    auto state = std::make_shared<FourBitState>();
    state->type = config.type;
    state->blocksize = blocksize;
    state->shape = weight.sizes().vec();
    state->dtype = weight.scalar_type();
    state->compute_dtype = config.compute_dtype;
    if (config.nested) {
        // bitsandbytes: offset = absmax.mean(); quantize_blockwise(absmax - offset, blocksize=256).
        const at::Tensor offset = absmax.mean();
        const at::Tensor centred = (absmax - offset).contiguous();
        at::Tensor quantized = at::empty({blocks}, at::kByte);
        at::Tensor nested_absmax = at::empty({blocks_of(blocks, kNestedBlocksize)}, at::kFloat);
        quantize_8bit(centred.data_ptr<float>(), blocks, kNestedBlocksize, nested_search_, quantized.data_ptr<uint8_t>(),
                      nested_absmax.data_ptr<float>());
        state->absmax = quantized.to(device);
        state->nested_absmax = nested_absmax.to(device);
        state->nested_code = nested_code_;
        state->offset = offset.item<float>();
    } else {
        state->absmax = absmax.to(device);
    }
    return {packed.view(config.storage_dtype).unsqueeze(1).to(device), std::move(state)};
}

at::Tensor block_absmax(const FourBitState& state) {
    if (!state.nested()) return state.absmax;
    // dequantize_blockwise(absmax codes, nested state) + offset, in fp32.
    const int64_t blocks = state.absmax.numel();
    const at::Tensor scales = state.nested_absmax.repeat_interleave(kNestedBlocksize).narrow(0, 0, blocks);
    return state.nested_code.index_select(0, state.absmax.to(at::kLong)) * scales + state.offset;
}

#ifdef FTL_WITH_CUDA
// dequantize_4bit for tensors on a GPU: one kernel (quant/dequantize_cuda.h).
at::Tensor dequantize_on_gpu(const at::Tensor& packed, const FourBitState& state) {
    at::Tensor out = at::empty(state.shape, packed.options().dtype(state.dtype));
    const at::Tensor bytes = packed.contiguous().view(at::kByte);
    cuda::DequantizeArgs args;
    args.packed = bytes.data_ptr<uint8_t>();
    const at::Tensor absmax = state.absmax.contiguous();
    if (state.nested()) {
        args.absmax_codes = absmax.data_ptr<uint8_t>();
        args.nested_absmax = state.nested_absmax.data_ptr<float>();
        args.nested_code = state.nested_code.data_ptr<float>();
        args.offset = state.offset;
    } else {
        args.absmax = absmax.data_ptr<float>();
    }
    const auto& table = code_table(state.type);
    std::copy(table.begin(), table.end(), args.table);
    args.n = state.numel();
    args.blocksize = state.blocksize;
    args.out = out.data_ptr();
    args.out_type = state.dtype == at::kBFloat16 ? cuda::OutType::kBFloat16
                    : state.dtype == at::kHalf  ? cuda::OutType::kFloat16
                                                : cuda::OutType::kFloat32;
    const int status = cuda::launch_dequantize_4bit(args, c10::cuda::getCurrentCUDAStream(packed.device().index()).stream());
    if (status != 0)
        fail(ErrorKind::kInternal, "4-bit dequantisation kernel failed to launch (CUDA error " + std::to_string(status) + ")");
    return out;
}
#endif

at::Tensor dequantize_4bit(const at::Tensor& packed, const FourBitState& state) {
    at::NoGradGuard no_grad;
#ifdef FTL_WITH_CUDA
    if (packed.is_cuda()) return dequantize_on_gpu(packed, state);
#endif
    const int64_t n = state.numel();
    const at::Tensor bytes = packed.contiguous().view(at::kByte).reshape({-1});
    const at::Tensor codes = at::stack({bytes.bitwise_right_shift(4), bytes.bitwise_and(15)}, 1)
                                 .reshape({-1})
                                 .narrow(0, 0, n)
                                 .to(at::kLong);
    const at::Tensor values = table_tensor(state.type, packed.device()).index_select(0, codes);
    const at::Tensor scales = block_absmax(state).repeat_interleave(state.blocksize).narrow(0, 0, n);
    return (values * scales).view(state.shape).to(state.dtype);
}

at::Tensor linear_4bit(const at::Tensor& x, const at::Tensor& packed, const std::shared_ptr<const FourBitState>& state,
                       const at::Tensor& bias) {
    if (bias.defined() && bias.requires_grad())
        fail(ErrorKind::kInternal, "linear_4bit: the bias of a 4-bit linear is frozen with its weight");
    at::Tensor y;
    {
        at::NoGradGuard no_grad;
        const at::Tensor weight = dequantize_4bit(packed, *state).to(state->compute_dtype);
        const at::Tensor input = x.to(state->compute_dtype);
        y = (bias.defined() ? at::linear(input, weight, bias.to(state->compute_dtype)) : at::linear(input, weight))
                .to(x.scalar_type());
    }
    if (!at::GradMode::is_enabled() || !x.requires_grad()) return y;
    auto node = std::shared_ptr<FourBitLinearBackward>(new FourBitLinearBackward(), torch::autograd::deleteNode);
    node->packed = packed;
    node->state = state;
    node->input_dtype = x.scalar_type();
    node->set_next_edges(torch::autograd::collect_next_edges(x));
    torch::autograd::create_gradient_edge(y, node);
    return y;
}

std::optional<FourBitWeight> read_saved_four_bit(const std::string& name,
                                                 const std::function<at::Tensor(const std::string&)>& tensor,
                                                 at::ScalarType compute_dtype, const at::Device& device,
                                                 const std::string& source) {
    at::Tensor json_bytes;
    for (QuantType type : {QuantType::kNf4, QuantType::kFp4}) {
        const at::Tensor found = tensor(name + ".quant_state.bitsandbytes__" + quant_type_name(type));
        if (found.defined()) json_bytes = found;
    }
    if (!json_bytes.defined()) return std::nullopt;
    auto bad = [&](const std::string& what) {
        fail(ErrorKind::kConfig, source + ": 4-bit weight '" + name + "': " + what);
    };
    const at::Tensor bytes = json_bytes.contiguous().to(at::kCPU).view(at::kByte);
    const std::string text(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), static_cast<size_t>(bytes.numel()));
    const nlohmann::json meta = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!meta.is_object()) bad("its quant_state is not a JSON object");
    auto state = std::make_shared<FourBitState>();
    try {
        state->type = parse_quant_type(meta.at("quant_type").get<std::string>(), name + " quant_type");
        state->blocksize = meta.at("blocksize").get<int64_t>();
        state->shape = meta.at("shape").get<std::vector<int64_t>>();
        const std::string dtype = meta.at("dtype").get<std::string>();
        state->dtype = dtype == "bfloat16" ? at::kBFloat16 : dtype == "float16" ? at::kHalf : at::kFloat;
        if (dtype != "bfloat16" && dtype != "float16" && dtype != "float32") bad("dtype '" + dtype + "' is not a float type");
        if (meta.contains("nested_blocksize") && meta.at("nested_blocksize").get<int64_t>() != kNestedBlocksize)
            bad("nested_blocksize " + meta.at("nested_blocksize").dump() + " (bitsandbytes writes 256)");
        state->offset = meta.value("nested_offset", 0.0f);
    } catch (const nlohmann::json::exception& e) {
        bad(std::string("quant_state is missing a field or has one of the wrong type (") + e.what() + ")");
    }
    check_blocksize(state->blocksize);
    state->compute_dtype = compute_dtype;
    const int64_t n = state->numel(), blocks = blocks_of(n, state->blocksize);
    const at::Tensor packed = tensor(name);
    const at::Tensor absmax = tensor(name + ".absmax");
    const at::Tensor quant_map = tensor(name + ".quant_map");
    if (!packed.defined() || !absmax.defined()) bad("the packed weight or its absmax is missing");
    if (packed.nbytes() != static_cast<size_t>((n + 1) / 2))
        bad(std::to_string(packed.nbytes()) + " packed bytes for a weight of " + std::to_string(n) + " elements");
    if (quant_map.defined() && !at::equal(quant_map.to(at::kCPU, at::kFloat), table_tensor(state->type, at::kCPU)))
        bad("its quant_map is not bitsandbytes' " + quant_type_name(state->type) + " table");
    if (absmax.numel() != blocks) bad(std::to_string(absmax.numel()) + " absmax values for " + std::to_string(blocks) + " blocks");
    const at::Tensor nested_absmax = tensor(name + ".nested_absmax");
    if (nested_absmax.defined()) {
        const at::Tensor nested_code = tensor(name + ".nested_quant_map");
        if (!nested_code.defined() || nested_code.numel() != 256 || absmax.scalar_type() != at::kByte ||
            nested_absmax.numel() != blocks_of(blocks, kNestedBlocksize))
            bad("its nested state (uint8 absmax, nested_absmax, a 256-entry nested_quant_map) does not fit");
        state->absmax = absmax.to(device);
        state->nested_absmax = nested_absmax.to(device, at::kFloat);
        state->nested_code = nested_code.to(device, at::kFloat);
    } else {
        state->absmax = absmax.to(device, at::kFloat);
    }
    return FourBitWeight{packed.to(device), std::move(state)};
}

}  // namespace ftl::quant
