// Test helper for the model parity tests (tests/parity/test_model_parity.py): loads a model folder,
// runs one batch read from a safetensors file, and writes what the Python side compares.
//
//   ftl_model_probe MODEL_DIR INPUTS OUTPUT [--dtype D] [--chunk_rows N] [--resize_to N --pad_to_multiple_of M]
//                   [--adapter PEFT_ADAPTER_DIR] [--four_bit nf4|fp4 --nested 0|1 --storage D --compute D]
//                   [--int8 THRESHOLD] [--train_mode 0|1]
// INPUTS holds input_ids [B,T] and optionally attention_mask, position_ids, labels (int64), and a
// tensor named "packed" (any content) to mark a packed batch. OUTPUT receives logits [B,T,V] fp32,
// and with labels: loss [] fp32 and grad.<hf weight name> (fp32) for every weight. With --resize_to,
// the embeddings are resized first (resize_token_embeddings) and also written as resized.<name>.
// With --four_bit the decoder's linears are quantised after loading (QLoRA), with --int8 to 8-bit
// (LLM.int8 at that outlier threshold). With quantised linears (quantised here or read from a
// bitsandbytes checkpoint) gradients are written for the adapter's tensors (grad.<PEFT name>)
// only, the base being frozen. --train_mode 1 runs the loss's forward as training does (an 8-bit
// linear then multiplies dequantised on a CPU, as bitsandbytes' Linear8bitLt in train mode);
// the logits always come from an evaluation forward.
#include <cstdio>
#include <optional>
#include <string>

#include <ATen/core/grad_mode.h>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "model/load.h"
#include "model/loss.h"
#include "model/quantize.h"
#include "model/tensor_io.h"
#include "peft/lora.h"
#include "util/error.h"

using namespace ftl;

int main(int argc, char** argv) try {
    if (argc < 4) {
        std::fprintf(stderr, "usage: ftl_model_probe MODEL_DIR INPUTS OUTPUT [--dtype D] [--chunk_rows N]\n");
        return 2;
    }
    model::LoadOptions load;
    model::LossOptions loss_options;
    int64_t resize_to = 0, pad_to_multiple_of = 1;
    std::string adapter;
    std::optional<quant::FourBitConfig> four_bit;
    std::optional<double> int8_threshold;
    model::ForwardOptions loss_forward;
    auto four_bit_config = [&]() -> quant::FourBitConfig& {
        if (!four_bit) four_bit.emplace();
        return *four_bit;
    };
    for (int i = 4; i + 1 < argc; i += 2) {
        const std::string flag = argv[i], value = argv[i + 1];
        if (flag == "--dtype") load.dtype = model::parse_float_dtype(value, "--dtype");
        else if (flag == "--chunk_rows") loss_options.chunk_rows = std::stoll(value);
        else if (flag == "--resize_to") resize_to = std::stoll(value);
        else if (flag == "--pad_to_multiple_of") pad_to_multiple_of = std::stoll(value);
        else if (flag == "--adapter") adapter = value;
        else if (flag == "--four_bit") four_bit_config().type = quant::parse_quant_type(value, flag);
        else if (flag == "--nested") four_bit_config().nested = value == "1";
        else if (flag == "--storage") four_bit_config().storage_dtype = quant::parse_storage_dtype(value, flag);
        else if (flag == "--compute") four_bit_config().compute_dtype = model::parse_float_dtype(value, flag);
        else if (flag == "--int8") int8_threshold = std::stod(value);
        else if (flag == "--train_mode") loss_forward.training = value == "1";
        else fail(ErrorKind::kUsage, "unknown flag " + flag);
    }
    auto loaded = model::load_causal_lm(argv[1], load);
    model::CausalLM& lm = loaded.model;
    std::vector<std::pair<std::string, at::Tensor>> outputs;
    if (four_bit)
        model::quantize_model(lm, model::four_bit_linears(quant::FourBitQuantizer(*four_bit, at::kCPU)),
                              lm.weights().final_norm.scalar_type(), at::kCPU);
    if (int8_threshold)
        model::quantize_model(lm, model::int8_linears(*int8_threshold, at::kCPU), lm.weights().final_norm.scalar_type(),
                              at::kCPU);
    if (!adapter.empty()) peft::load_adapter(adapter, lm);
    if (resize_to > 0) {
        lm.resize_token_embeddings(resize_to, pad_to_multiple_of);
        outputs.emplace_back("resized.embed_tokens", lm.weights().embed_tokens.to(at::kFloat).contiguous());
        outputs.emplace_back("resized.lm_head", lm.weights().lm_head.to(at::kFloat).contiguous());
    }

    auto inputs = io::SafetensorsFile::open(argv[2]);
    auto read = [&](const std::string& name) {
        return inputs->contains(name) ? model::tensor_from_view(inputs->tensor(name)) : at::Tensor();
    };
    model::Batch batch;
    batch.input_ids = read("input_ids");
    batch.attention_mask = read("attention_mask");
    batch.position_ids = read("position_ids");
    batch.labels = read("labels");
    batch.packed = inputs->contains("packed");

    {
        at::NoGradGuard no_grad;
        outputs.emplace_back("logits", lm.logits(batch).to(at::kFloat).contiguous());
    }
    if (batch.labels.defined()) {
        auto weights = model::has_quantized_linears(lm) ? peft::adapter_parameters(lm) : lm.named_weights();
        for (auto& [name, w] : weights) w.requires_grad_(true);
        model::LossResult result = model::causal_lm_loss(lm, batch, loss_options, loss_forward);
        result.loss.backward();
        outputs.emplace_back("loss", result.loss.detach().contiguous());
        std::vector<std::pair<std::string, at::Tensor>> grads;
        for (auto& [name, w] : weights) grads.emplace_back(name, w.grad().to(at::kFloat));
        // gpt_oss's stacks as transformers holds them ([E, in, out]); other experts stay stacked.
        const model::DecoderConfig& config = lm.config();
        if (config.moe && config.moe->stacks_in_out) grads = model::checkpoint_weights(config, grads);
        for (auto& [name, g] : grads) outputs.emplace_back("grad." + name, g.contiguous());
    }
    io::write_safetensors(argv[3], model::cpu_views(outputs).views);
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "ftl_model_probe: %s\n", e.what());
    return 1;
}
