#include "model/generate.h"

#include <ATen/core/grad_mode.h>

#include <limits>
#include <nlohmann/json.hpp>

#include "model/config_reader.h"
#include "util/error.h"
#include "util/files.h"

namespace ftl::model {

GenerationConfig read_generation_config(const std::string& model_dir, const BartConfig& model) {
    GenerationConfig c;
    c.decoder_start_token_id = model.decoder_start_token_id;
    c.eos_token_ids = {model.eos_token_id};
    c.pad_token_id = model.pad_token_id;
    c.forced_eos_token_id = model.forced_eos_token_id;
    const std::string path = model_dir + "/generation_config.json";
    const auto text = read_text_file(path);
    if (!text) return c;
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(*text);
    } catch (const nlohmann::json::parse_error& e) {
        fail(ErrorKind::kConfig, path + ": not valid JSON: " + e.what());
    }
    if (!j.is_object()) fail(ErrorKind::kConfig, path + ": expected a JSON object");
    const ConfigReader r(j, path);
    c.decoder_start_token_id = r.integer("decoder_start_token_id", c.decoder_start_token_id, 0);
    if (r.has("eos_token_id")) {
        const auto& eos = j.at("eos_token_id");
        c.eos_token_ids.clear();
        if (eos.is_array()) {
            for (const auto& id : eos) {
                if (!id.is_number_integer()) r.bad("eos_token_id", "must be a token id or a list of them");
                c.eos_token_ids.push_back(id.get<int64_t>());
            }
        } else {
            c.eos_token_ids.push_back(r.integer("eos_token_id", std::nullopt, 0));
        }
    }
    c.pad_token_id = r.integer("pad_token_id", c.pad_token_id, 0);
    if (r.has("forced_bos_token_id")) c.forced_bos_token_id = r.integer("forced_bos_token_id", std::nullopt, 0);
    if (r.has("forced_eos_token_id")) c.forced_eos_token_id = r.integer("forced_eos_token_id", std::nullopt, 0);
    if (r.has("max_new_tokens")) c.max_new_tokens = r.integer("max_new_tokens");
    else if (r.has("max_length")) c.max_new_tokens = r.integer("max_length", std::nullopt, 2) - 1;
    return c;
}

at::Tensor greedy_generate(const Seq2SeqLM& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                           const GenerationConfig& config) {
    at::NoGradGuard no_grad;
    const int64_t rows = input_ids.size(0), max_length = 1 + config.max_new_tokens;
    const at::Tensor encoded = model.encode(input_ids, attention_mask);
    at::Tensor sequences = at::full({rows, 1}, config.decoder_start_token_id, input_ids.options());
    at::Tensor unfinished = at::ones({rows}, input_ids.options());
    const at::Tensor eos = at::tensor(config.eos_token_ids, input_ids.options());
    const float minus_infinity = -std::numeric_limits<float>::infinity();
    while (sequences.size(1) < max_length) {
        const int64_t length = sequences.size(1);
        at::Tensor scores =
            model.logits(model.decode(sequences, at::Tensor(), encoded, attention_mask)).select(1, length - 1).to(at::kFloat);
        // transformers' processors, in its order: forced BOS (first step), forced EOS (last step).
        auto force = [&](int64_t token) {
            scores = at::full_like(scores, minus_infinity);
            scores.select(1, token).fill_(0.0);
        };
        if (config.forced_bos_token_id && length == 1) force(*config.forced_bos_token_id);
        if (config.forced_eos_token_id && length == max_length - 1) force(*config.forced_eos_token_id);
        at::Tensor next = scores.argmax(-1);
        next = next * unfinished + config.pad_token_id * (1 - unfinished);
        sequences = at::cat({sequences, next.unsqueeze(1)}, 1);
        unfinished = unfinished * at::isin(next, eos).logical_not().to(unfinished.scalar_type());
        if (unfinished.max().item<int64_t>() == 0) break;
    }
    return sequences;
}

}  // namespace ftl::model
