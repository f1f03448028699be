// Test helper for the BART parity test (tests/parity/test_bart_parity.py): loads a BART folder,
// runs one batch read from a safetensors file, and writes what the Python side compares.
//
//   ftl_seq2seq_probe MODEL_DIR INPUTS OUTPUT [--generate MAX_NEW_TOKENS NUM_BEAMS]
// INPUTS holds input_ids [B,S], attention_mask [B,S] and labels [B,T] (int64, -100 = ignored).
// With --generate: OUTPUT receives sequences [B,L] (greedy or beam search, the model's
// generation_config.json with max_new_tokens and num_beams replaced), and labels are not read.
// The decoder reads shift_tokens_right(labels), as BartForConditionalGeneration does. OUTPUT
// receives logits [B,T,V] fp32, loss [] (mean cross-entropy over the counted labels) and
// grad.<hf weight name> for every trained weight.
#include <cstdio>
#include <string>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "model/bart.h"
#include "model/generate.h"
#include "model/tensor_io.h"

using namespace ftl;

int main(int argc, char** argv) try {
    const bool generate = argc == 7 && std::string(argv[4]) == "--generate";
    if (argc != 4 && !generate) {
        std::fprintf(stderr, "usage: ftl_seq2seq_probe MODEL_DIR INPUTS OUTPUT [--generate MAX_NEW_TOKENS NUM_BEAMS]\n");
        return 2;
    }
    auto loaded = model::load_bart(argv[1]);
    model::Seq2SeqLM& bart = loaded.model;
    auto inputs = io::SafetensorsFile::open(argv[2]);
    auto read = [&](const std::string& name) { return model::tensor_from_view(inputs->tensor(name)); };
    if (generate) {
        model::GenerationConfig config = model::read_generation_config(argv[1], bart.config());
        config.max_new_tokens = std::stoll(argv[5]);
        config.num_beams = std::stoll(argv[6]);
        const at::Tensor sequences = model::generate(bart, read("input_ids"), read("attention_mask"), config);
        io::write_safetensors(argv[3], model::cpu_views({{"sequences", sequences.contiguous()}}).views);
        return 0;
    }
    const at::Tensor input_ids = read("input_ids"), attention_mask = read("attention_mask"), labels = read("labels");
    const at::Tensor decoder_ids =
        model::shift_tokens_right(labels, bart.config().pad_token_id, bart.config().decoder_start_token_id);
    auto weights = bart.named_weights();
    for (auto& [name, w] : weights) w.requires_grad_(true);
    const at::Tensor encoded = bart.encode(input_ids, attention_mask);
    const at::Tensor logits = bart.logits(bart.decode(decoder_ids, at::Tensor(), encoded, attention_mask));
    const at::Tensor loss = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), labels.reshape({-1}),
                                                   std::nullopt, at::Reduction::Mean, -100);
    loss.backward();
    std::vector<std::pair<std::string, at::Tensor>> outputs{{"logits", logits.detach().contiguous()},
                                                            {"loss", loss.detach().contiguous()}};
    for (auto& [name, w] : weights) outputs.emplace_back("grad." + name, w.grad().contiguous());
    io::write_safetensors(argv[3], model::cpu_views(outputs).views);
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "ftl_seq2seq_probe: %s\n", e.what());
    return 1;
}
