// Test helper for tests/parity/test_quant.py: quantises every tensor of a safetensors file with
// ftlaunch's 4-bit scheme and writes what the Python side compares against bitsandbytes.
//
//   ftl_quant_probe INPUTS OUTPUT --type nf4|fp4 --nested 0|1 --storage uint8|bfloat16|float16|float32
//                   [--blocksize N]
// For each input tensor X, OUTPUT holds X.packed (the packed weight as stored), X.absmax,
// X.dequantized (in X's dtype), and when nested X.nested_absmax, X.nested_code and X.offset [1];
// plus dynamic_map [256].
//
//   ftl_quant_probe INPUTS OUTPUT --eight_bit 1
// 8-bit blockwise instead (blocksize 256, quant::EightBitBlockwise): X.signed_codes and
// X.signed_absmax of X with the signed dynamic map, X.unsigned_codes and X.unsigned_absmax of |X|
// with the unsigned one; plus dynamic_map and unsigned_dynamic_map.
//
//   ftl_quant_probe INPUTS OUTPUT --int8 THRESHOLD
// LLM.int8 (quant/int8.h) of each 2-D X: X.codes, X.scales and X.dequantized as a weight
// (quantize_int8: row-wise from float16, no threshold), and X.row_codes, X.row_absmax and
// X.outlier_columns as an activation (quantize_rows_int8 of X in float16 at THRESHOLD).
#include <cstdio>
#include <optional>
#include <string>
#include <tuple>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "model/tensor_io.h"
#include "quant/eight_bit.h"
#include "quant/four_bit.h"
#include "quant/int8.h"
#include "util/error.h"

using namespace ftl;

int main(int argc, char** argv) try {
    if (argc < 3) {
        std::fprintf(stderr, "usage: ftl_quant_probe INPUTS OUTPUT --type T --nested 0|1 --storage D [--blocksize N]\n");
        return 2;
    }
    quant::FourBitConfig config;
    bool eight_bit = false;
    std::optional<double> int8_threshold;
    for (int i = 3; i + 1 < argc; i += 2) {
        const std::string flag = argv[i], value = argv[i + 1];
        if (flag == "--eight_bit") eight_bit = value == "1";
        else if (flag == "--int8") int8_threshold = std::stod(value);
        else if (flag == "--type") config.type = quant::parse_quant_type(value, "--type");
        else if (flag == "--nested") config.nested = value == "1";
        else if (flag == "--storage") config.storage_dtype = quant::parse_storage_dtype(value, "--storage");
        else if (flag == "--blocksize") config.blocksize = std::stoll(value);
        else fail(ErrorKind::kUsage, "unknown flag " + flag);
    }
    const quant::FourBitQuantizer quantizer(config, at::kCPU);
    auto inputs = io::SafetensorsFile::open(argv[1]);
    std::vector<std::pair<std::string, at::Tensor>> outputs;
    outputs.emplace_back("dynamic_map", quant::dynamic_map(true));
    if (eight_bit) outputs.emplace_back("unsigned_dynamic_map", quant::dynamic_map(false));
    const quant::EightBitBlockwise signed_code(quant::dynamic_map(true), 256, at::kCPU);
    const quant::EightBitBlockwise unsigned_code(quant::dynamic_map(false), 256, at::kCPU);
    for (const io::TensorEntry& entry : inputs->header().tensors) {
        const std::string& name = entry.name;
        const at::Tensor weight = model::tensor_from_view(inputs->tensor(name));
        if (int8_threshold) {
            const quant::Int8Weight w = quant::quantize_int8(weight, *int8_threshold, at::kCPU);
            outputs.emplace_back(name + ".codes", w.codes);
            outputs.emplace_back(name + ".scales", w.state->scales);
            outputs.emplace_back(name + ".dequantized", quant::dequantize_int8(w.codes, w.state->scales));
            const quant::RowQuantized a = quant::quantize_rows_int8(weight.to(at::kHalf), *int8_threshold);
            outputs.emplace_back(name + ".row_codes", a.codes);
            outputs.emplace_back(name + ".row_absmax", a.absmax);
            outputs.emplace_back(name + ".outlier_columns", a.outlier_columns);
            continue;
        }
        if (eight_bit) {
            const at::Tensor x = weight.to(at::kFloat);
            for (const auto& [prefix, code, values] : {std::tuple{"signed", &signed_code, x}, std::tuple{"unsigned", &unsigned_code, x.abs()}}) {
                at::Tensor codes = at::empty(x.sizes(), at::kByte), absmax = at::empty({code->blocks(x.numel())}, at::kFloat);
                code->quantize(values, codes, absmax);
                outputs.emplace_back(name + "." + prefix + "_codes", codes);
                outputs.emplace_back(name + "." + prefix + "_absmax", absmax);
            }
            continue;
        }
        const quant::FourBitWeight q = quantizer.quantize(weight, name);
        outputs.emplace_back(name + ".packed", q.packed);
        outputs.emplace_back(name + ".absmax", q.state->absmax);
        outputs.emplace_back(name + ".dequantized", quant::dequantize_4bit(q.packed, *q.state));
        if (q.state->nested()) {
            outputs.emplace_back(name + ".nested_absmax", q.state->nested_absmax);
            outputs.emplace_back(name + ".nested_code", q.state->nested_code);
            outputs.emplace_back(name + ".offset", at::full({1}, q.state->offset, at::kFloat));
        }
    }
    io::write_safetensors(argv[2], model::cpu_views(outputs).views);
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "ftl_quant_probe: %s\n", e.what());
    return 1;
}
