// Test helper for the BART parity test (tests/parity/test_bart_parity.py): loads a BART folder,
// runs one batch read from a safetensors file, and writes what the Python side compares.
//
//   ftl_seq2seq_probe MODEL_DIR INPUTS OUTPUT [--generate MAX_NEW_TOKENS NUM_BEAMS] [--lora R ALPHA SEED TARGETS]
// INPUTS holds input_ids [B,S], attention_mask [B,S] and labels [B,T] (int64, -100 = ignored).
// With --generate: OUTPUT receives sequences [B,L] (greedy or beam search, the model's
// generation_config.json with max_new_tokens and num_beams replaced), and labels are not read.
// With --lora: adapters attached first as PEFT does (CPU generator seeded SEED; TARGETS as
// --lora_target_modules); OUTPUT also receives init.<PEFT name> (the adapters as created), and
// the gradients are the adapters' only.
// The decoder reads shift_tokens_right(labels), as BartForConditionalGeneration does. OUTPUT
// receives logits [B,T,V] fp32, loss [] (mean cross-entropy over the counted labels) and
// grad.<hf weight name> for every trained weight.
#include <cstdio>
#include <optional>
#include <string>

#include <ATen/CPUGeneratorImpl.h>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "model/bart.h"
#include "model/generate.h"
#include "model/tensor_io.h"
#include "peft/lora.h"
#include "util/error.h"

using namespace ftl;

int main(int argc, char** argv) try {
    if (argc < 4) {
        std::fprintf(stderr, "usage: ftl_seq2seq_probe MODEL_DIR INPUTS OUTPUT [--generate MAX_NEW_TOKENS NUM_BEAMS] "
                             "[--lora R ALPHA SEED TARGETS]\n");
        return 2;
    }
    std::optional<std::pair<int64_t, int64_t>> generation;  // (max_new_tokens, num_beams)
    std::optional<peft::LoraConfig> lora;
    uint64_t seed = 0;
    for (int i = 4; i < argc;) {
        const std::string flag = argv[i];
        if (flag == "--generate" && i + 2 < argc) {
            generation.emplace(std::stoll(argv[i + 1]), std::stoll(argv[i + 2]));
            i += 3;
        } else if (flag == "--lora" && i + 4 < argc) {
            lora.emplace();
            lora->r = std::stoll(argv[i + 1]);
            lora->alpha = std::stod(argv[i + 2]);
            seed = std::stoull(argv[i + 3]);
            lora->target_modules = argv[i + 4];
            i += 5;
        } else {
            fail(ErrorKind::kUsage, "unknown or incomplete flag " + flag);
        }
    }
    auto loaded = model::load_bart(argv[1]);
    model::Seq2SeqLM& bart = loaded.model;
    std::vector<std::pair<std::string, at::Tensor>> outputs;
    if (lora) {
        at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
        peft::attach_lora(bart.linears(), "bart", *lora, generator);
        for (auto& [name, t] : peft::adapter_parameters(bart.linears())) outputs.emplace_back("init." + name, t.clone());
    }
    auto inputs = io::SafetensorsFile::open(argv[2]);
    auto read = [&](const std::string& name) { return model::tensor_from_view(inputs->tensor(name)); };
    if (generation) {
        model::GenerationConfig config = model::read_generation_config(argv[1], bart.config());
        config.max_new_tokens = generation->first;
        config.num_beams = generation->second;
        const at::Tensor sequences = model::generate(bart, read("input_ids"), read("attention_mask"), config);
        io::write_safetensors(argv[3], model::cpu_views({{"sequences", sequences.contiguous()}}).views);
        return 0;
    }
    const at::Tensor input_ids = read("input_ids"), attention_mask = read("attention_mask"), labels = read("labels");
    const at::Tensor decoder_ids =
        model::shift_tokens_right(labels, bart.config().pad_token_id, bart.config().decoder_start_token_id);
    // With adapters only they train (the base frozen, as PEFT leaves it); else every weight.
    auto weights = lora ? peft::adapter_parameters(bart.linears()) : bart.named_weights();
    for (auto& [name, w] : weights) w.requires_grad_(true);
    const at::Tensor encoded = bart.encode(input_ids, attention_mask);
    const at::Tensor logits = bart.logits(bart.decode(decoder_ids, at::Tensor(), encoded, attention_mask));
    const at::Tensor loss = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), labels.reshape({-1}),
                                                   std::nullopt, at::Reduction::Mean, -100);
    loss.backward();
    outputs.emplace_back("logits", logits.detach().contiguous());
    outputs.emplace_back("loss", loss.detach().contiguous());
    for (auto& [name, w] : weights) outputs.emplace_back("grad." + name, w.grad().contiguous());
    io::write_safetensors(argv[3], model::cpu_views(outputs).views);
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "ftl_seq2seq_probe: %s\n", e.what());
    return 1;
}
