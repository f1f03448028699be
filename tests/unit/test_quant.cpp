// The 4-bit pieces on their own: code tables and decisions, packing, the zero block, dequantised
// round trips within half a code step, the 4-bit linear's gradient against a dense linear, and the
// checks on a saved 4-bit weight; LLM.int8's linear gradient and saved-weight checks. Bit-for-bit
// agreement with bitsandbytes is tests/parity/test_quant.py and test_int8.py.
#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <vector>

#include "quant/blockwise.h"
#include "quant/codes.h"
#include "quant/eight_bit.h"
#include "quant/four_bit.h"
#include "quant/int8.h"
#include "quant/mxfp4.h"
#include "util/error.h"
#include "catch.h"  // last: replaces c10's CHECK macro

using namespace ftl;

TEST_CASE("each 4-bit table value times absmax comes back as its own code", "[quant]") {
    for (quant::QuantType type : {quant::QuantType::kNf4, quant::QuantType::kFp4}) {
        const auto& table = quant::code_table(type);
        std::vector<float> x(64);
        for (size_t i = 0; i < x.size(); ++i) x[i] = table[i % 16] * 3.5f;
        x[15] = 3.5f;  // NF4 and FP4 both hold +1.0: make it the block's absmax
        std::vector<uint8_t> packed(32);
        float absmax = 0;
        quant::quantize_4bit(x.data(), 64, 64, type, packed.data(), &absmax);
        CHECK(absmax == 3.5f);
        for (size_t i = 0; i < x.size(); ++i) {
            const uint8_t code = i % 2 == 0 ? packed[i / 2] >> 4 : packed[i / 2] & 15;
            CHECK(table[code] * absmax == x[i]);  // -0 and +0 compare equal
        }
    }
}

TEST_CASE("an odd count pads with the code of zero; a zero block stays zero", "[quant]") {
    const std::vector<float> x = {0.5f, -1.0f, 0.25f};
    std::vector<uint8_t> packed(2);
    float absmax = 0;
    quant::quantize_4bit(x.data(), 3, 64, quant::QuantType::kNf4, packed.data(), &absmax);
    CHECK((packed[1] & 15) == 7);  // NF4 index 7 is 0.0
    const std::vector<float> zeros(64, 0.0f);
    std::vector<uint8_t> zero_packed(32);
    quant::quantize_4bit(zeros.data(), 64, 64, quant::QuantType::kNf4, zero_packed.data(), &absmax);
    CHECK(absmax == 0.0f);
    for (uint8_t b : zero_packed) CHECK(b == 0x77);
}

TEST_CASE("dequantised weights are within half a code step of the originals", "[quant]") {
    at::manual_seed(3);
    const at::Tensor w = at::randn({37, 29});  // 1073 elements: a short last block, an odd count
    for (bool nested : {false, true}) {
        quant::FourBitConfig config;
        config.nested = nested;
        const quant::FourBitWeight q = quant::FourBitQuantizer(config, at::kCPU).quantize(w, "w");
        const at::Tensor back = quant::dequantize_4bit(q.packed, *q.state);
        REQUIRE(back.sizes() == w.sizes());
        // NF4's widest gap is -1 .. -0.6962 (half: 0.1519); nested absmax adds its 8-bit error.
        const at::Tensor scales = quant::block_absmax(*q.state).repeat_interleave(64).narrow(0, 0, w.numel());
        const at::Tensor error = (back - w).abs().reshape({-1}) / scales;
        CHECK(error.max().item<float>() <= (nested ? 0.16f : 0.1520f));
    }
}

TEST_CASE("a 4-bit linear's input gradient equals a dense linear's with the dequantised weight", "[quant]") {
    at::manual_seed(5);
    quant::FourBitConfig config;
    config.nested = true;
    const quant::FourBitWeight q = quant::FourBitQuantizer(config, at::kCPU).quantize(at::randn({12, 64}), "w");
    const at::Tensor dense = quant::dequantize_4bit(q.packed, *q.state);
    const at::Tensor x = at::randn({3, 5, 64}).requires_grad_(true);
    const at::Tensor x_dense = x.detach().clone().requires_grad_(true);
    const at::Tensor y = quant::linear_4bit(x, q.packed, q.state, at::Tensor());
    const at::Tensor y_dense = at::linear(x_dense, dense);
    CHECK(at::allclose(y, y_dense));
    (y * y).sum().backward();
    (y_dense * y_dense).sum().backward();
    CHECK(at::allclose(x.grad(), x_dense.grad(), 1e-5, 1e-6));
}

TEST_CASE("a saved 4-bit weight whose sizes do not fit is refused, naming it", "[quant]") {
    quant::FourBitConfig config;
    const quant::FourBitWeight q = quant::FourBitQuantizer(config, at::kCPU).quantize(at::randn({8, 64}), "w");
    const std::string meta = R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [8, 64]})";
    std::map<std::string, at::Tensor> saved = {
        {"w", q.packed.narrow(0, 0, 100)},  // 100 of the 256 packed bytes
        {"w.absmax", q.state->absmax},
        {"w.quant_state.bitsandbytes__nf4",
         at::from_blob(const_cast<char*>(meta.data()), {static_cast<int64_t>(meta.size())}, at::kByte).clone()}};
    auto lookup = [&](const std::string& key) { return saved.count(key) ? saved.at(key) : at::Tensor(); };
    CHECK_THROWS_WITH(quant::read_saved_four_bit("w", lookup, at::kFloat, at::kCPU, "model.safetensors"),
                      Catch::Matchers::Contains("model.safetensors: 4-bit weight 'w': 100 packed bytes"));
    saved["w"] = q.packed;
    CHECK(quant::read_saved_four_bit("w", lookup, at::kFloat, at::kCPU, "model.safetensors").has_value());
    CHECK_FALSE(quant::read_saved_four_bit("absent", lookup, at::kFloat, at::kCPU, "model.safetensors").has_value());
}

TEST_CASE("an 8-bit linear's input gradient is grad_y times the dequantised weight, both ways of multiplying", "[quant]") {
    at::manual_seed(6);
    const quant::Int8Weight q = quant::quantize_int8(at::randn({12, 64}), 6.0, at::kCPU);
    const at::Tensor dense = q.codes.to(at::kFloat) * (q.state->scales * (1.0 / 127.0)).unsqueeze(1);
    for (bool dequantized : {true, false}) {
        at::Tensor x_values = at::randn({3, 5, 64});
        x_values.select(2, 9).mul_(20.0);  // an outlier column for the int8 product
        const at::Tensor x = x_values.clone().requires_grad_(true);
        const at::Tensor x_dense = x_values.clone().requires_grad_(true);
        const at::Tensor bias = at::randn({12});
        const at::Tensor y = quant::linear_int8(x, q.codes, q.state, bias, dequantized);
        const at::Tensor y_dense = at::linear(x_dense, dense, bias);
        CHECK(y.sizes() == y_dense.sizes());
        // The int8 product rounds the activations to 8 bits (outlier column aside): ~1% of |y|.
        CHECK(at::allclose(y, y_dense, dequantized ? 1e-5 : 3e-2, dequantized ? 1e-5 : 0.5));
        const at::Tensor grad = at::randn_like(y);
        y.backward(grad);
        y_dense.backward(grad);
        CHECK(at::allclose(x.grad(), x_dense.grad(), 1e-5, 1e-6));
    }
}

TEST_CASE("a saved 8-bit weight without its row scales, or in a GPU tile layout, is refused, naming it", "[quant]") {
    const quant::Int8Weight q = quant::quantize_int8(at::randn({8, 16}), 6.0, at::kCPU);
    std::map<std::string, at::Tensor> saved = {{"l.weight", q.codes}};
    auto lookup = [&](const std::string& key) { return saved.count(key) ? saved.at(key) : at::Tensor(); };
    FTL_REQUIRE_ERROR(quant::read_saved_int8("l.weight", lookup, 6.0, at::kCPU, "model.safetensors"), ErrorKind::kConfig,
                      "model.safetensors: 8-bit weight 'l.weight'", "l.SCB");
    saved["l.SCB"] = q.state->scales.narrow(0, 0, 5);
    FTL_REQUIRE_ERROR(quant::read_saved_int8("l.weight", lookup, 6.0, at::kCPU, "model.safetensors"), ErrorKind::kConfig,
                      "5 values for 8 rows");
    saved["l.SCB"] = q.state->scales;
    saved["l.weight_format"] = at::full({}, 1, at::kByte);
    FTL_REQUIRE_ERROR(quant::read_saved_int8("l.weight", lookup, 6.0, at::kCPU, "model.safetensors"), ErrorKind::kConfig,
                      "weight_format 1");
    saved["l.weight_format"] = at::full({}, 0, at::kByte);
    const auto back = quant::read_saved_int8("l.weight", lookup, 6.0, at::kCPU, "model.safetensors");
    REQUIRE(back.has_value());
    CHECK(at::equal(back->codes, q.codes));
    CHECK(back->state->threshold == 6.0);
    saved["f.weight"] = at::randn({8, 16});
    CHECK_FALSE(quant::read_saved_int8("f.weight", lookup, 6.0, at::kCPU, "model.safetensors").has_value());
}

TEST_CASE("8-bit blockwise as ATen ops gives bitsandbytes' CPU quantizer's codes and absmax", "[quant]") {
    at::manual_seed(11);
    for (const bool is_signed : {true, false}) {
        const at::Tensor code = quant::dynamic_map(is_signed);
        REQUIRE(code.numel() == 256);
        CHECK((code.min().item<float>() < 0.0f) == is_signed);
        CHECK(code.max().item<float>() == 1.0f);
        const quant::EightBitLut lut = quant::eight_bit_lut(code.data_ptr<float>());
        const quant::EightBitBlockwise blockwise(code, 256, at::kCPU);
        for (const int64_t n : {int64_t{1}, int64_t{255}, int64_t{256}, int64_t{4097}, int64_t{70000}}) {
            // Moments' magnitudes span decades; the second moment is never negative.
            at::Tensor x = at::randn({n}) * at::pow(10.0, at::randint(-8, 2, {n}).to(at::kFloat));
            if (!is_signed) x = x.abs();
            if (n > 512) x.narrow(0, 256, 256).zero_();  // a zero block
            const int64_t blocks = (n + 255) / 256;
            std::vector<uint8_t> expected(static_cast<size_t>(n));
            std::vector<float> expected_absmax(static_cast<size_t>(blocks));
            quant::quantize_8bit(x.data_ptr<float>(), n, 256, lut, expected.data(), expected_absmax.data());
            at::Tensor codes = at::empty({n}, at::kByte), absmax = at::empty({blocks}, at::kFloat);
            blockwise.quantize(x, codes, absmax);
            CHECK(std::equal(expected.begin(), expected.end(), codes.data_ptr<uint8_t>()));
            CHECK(std::equal(expected_absmax.begin(), expected_absmax.end(), absmax.data_ptr<float>()));
            const at::Tensor back = blockwise.dequantize(codes, absmax);
            const at::Tensor reference =
                code.index_select(0, codes.to(at::kLong)) *
                absmax.repeat_interleave(256).narrow(0, 0, n);
            CHECK(at::equal(back, reference));
        }
    }
}

TEST_CASE("MXFP4: E2M1 codes low nibble first, scaled by 2^(scale - 127); bad shapes named", "[quant]") {
    // Byte 0x21: low code 1 (0.5), high code 2 (1.0); 0xF8: low -0.0, high -6.0 (code 15).
    at::Tensor blocks = at::zeros({2, 1, 16}, at::kByte);
    blocks[0][0][0] = 0x21;
    blocks[1][0][1] = 0xF8;
    const at::Tensor scales = at::tensor(std::vector<uint8_t>{128, 125}).view({2, 1});
    const at::Tensor out = quant::dequantize_mxfp4(blocks, scales, at::kBFloat16, "w");
    REQUIRE(out.sizes() == at::IntArrayRef({2, 32}));
    CHECK((out[0][0].item<float>() == 1.0F && out[0][1].item<float>() == 2.0F));       // x 2^1
    CHECK((out[1][2].item<float>() == 0.0F && out[1][3].item<float>() == -1.5F));      // -6 x 2^-2
    CHECK(out.abs().sum().item<float>() == 1.0F + 2.0F + 1.5F);
    FTL_REQUIRE_ERROR(quant::dequantize_mxfp4(blocks, scales.view({1, 2}), at::kFloat, "model.layers.0.mlp.experts.down_proj"),
                      ErrorKind::kConfig, "model.layers.0.mlp.experts.down_proj", "MXFP4");
}
