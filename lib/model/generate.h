// Greedy decoding for encoder-decoder models, as transformers' generate(num_beams=1,
// do_sample=False) runs it: the decoder starts from decoder_start_token_id; at each step the last
// position's logits pass transformers' logits processors in its order (forced BOS at the first
// step, forced EOS at the last allowed step), the argmax is appended, and a row that produced an
// EOS gets pad_token_id from then on; decoding stops when every row has finished or the length
// reaches 1 + max_new_tokens. The encoder runs once; the decoder runs over the whole prefix at
// each step (no key/value cache yet).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

#include "model/bart.h"

namespace ftl::model {

struct GenerationConfig {
    int64_t decoder_start_token_id = 2;
    std::vector<int64_t> eos_token_ids{2};
    int64_t pad_token_id = 1;
    std::optional<int64_t> forced_bos_token_id;
    std::optional<int64_t> forced_eos_token_id;
    int64_t max_new_tokens = 20;
};

// generation_config.json of `model_dir` when present (transformers' keys), else the model
// config's values; max_new_tokens from the file's max_new_tokens, or max_length - 1, else 20.
GenerationConfig read_generation_config(const std::string& model_dir, const BartConfig& model);

// Token ids [B, L]: the decoder start token, then at most max_new_tokens generated ones, rows
// that finished early padded with pad_token_id.
at::Tensor greedy_generate(const Seq2SeqLM& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                           const GenerationConfig& config);

}  // namespace ftl::model
