// Decoding as transformers' generate(do_sample=False) runs it, for encoder-decoder models (BART:
// the decoder starts from decoder_start_token_id) and decoder-only ones (the decoder family: the
// sequences start as the left-padded prompts; generated tokens are attended to, positions count
// real tokens only, as transformers derives them from the attention mask). P is the start's
// length (1 for an encoder-decoder model); sequences grow to at most P + max_new_tokens.
//
// Greedy (num_beams 1): at each step the last position's logits pass transformers' logits
// processors in its order (no repeated n-gram, minimum length, forced BOS when the sequence is one
// token long, forced EOS at the last allowed step), the argmax is appended, and a row that
// produced an EOS gets pad_token_id from then on; decoding stops when every row has finished or
// the length limit is reached.
//
// Beam search (num_beams > 1), transformers 5's vectorised form: each step adds the log-softmax of
// every beam's next-token logits (after the same processors) to the beam's score and keeps the
// top (max(2, 1 + #EOS) x num_beams) continuations; those ending in EOS (or at the length limit)
// among the first num_beams are offered to the finished set with score / generated_length^
// length_penalty, the best num_beams unfinished ones run on. It stops when no running beam can beat
// the worst finished one (early_stopping false: judged at the current length; "never": at the
// longest when length_penalty > 0), every beam finished (early_stopping true), or every
// continuation hit a stop. The best finished sequence of each row is returned.
//
// The encoder (BART) runs once; the decoder keeps a key/value cache and runs one new token per
// step.
#pragma once

#include <ATen/ATen.h>

#include <functional>
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
    std::optional<int64_t> max_new_tokens;  // else max_length - P
    int64_t max_length = 20;                // start included, as transformers counts it
    int64_t num_beams = 1;
    int64_t no_repeat_ngram_size = 0;  // > 0: no n-gram of this size appears twice in a sequence
    int64_t min_length = 0;            // EOS banned while the sequence (start token included) is shorter
    double length_penalty = 1.0;
    enum class EarlyStopping { kFalse, kTrue, kNever } early_stopping = EarlyStopping::kFalse;

    // The tokens to generate after a start of `start_length` tokens (at least 1).
    int64_t new_tokens(int64_t start_length) const;
};

// generation_config.json of `model_dir` when present (transformers' keys), else the model
// config's values (a decoder model without a pad token pads with its first EOS, as transformers).
// Settings this decoder does not have (sampling, repetition penalty, ...) are ftl::Error(kConfig)
// naming the key rather than a different output.
GenerationConfig read_generation_config(const std::string& model_dir, const BartConfig& model);
GenerationConfig read_generation_config(const std::string& model_dir, const DecoderConfig& model);

// ZeRO-3 (transformers' synced_gpus): every rank must run the same number of decoder passes, as
// each gathers weights with the others. Called once per decoding step with whether this rank's
// rows are done; returns whether every rank's are (an all-reduce). A rank that is done keeps
// running passes whose results it drops until then.
using AllFinished = std::function<bool(bool this_rank_finished)>;

// Token ids [B, L]: the decoder start token, then at most max_new_tokens generated ones, rows
// that finished early padded with pad_token_id; greedy or beam search by config.num_beams.
// `options` (eval mode: no dropout) carries the residency under ZeRO-3; `all_finished` then
// keeps the ranks in step.
at::Tensor generate(const Seq2SeqLM& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                    const GenerationConfig& config, const ForwardOptions& options = {},
                    const AllFinished& all_finished = {});
// Decoder-only: `input_ids` [B, P] left-padded prompts with `attention_mask`; returns [B, P + n].
at::Tensor generate(const CausalLM& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                    const GenerationConfig& config, const ForwardOptions& options = {},
                    const AllFinished& all_finished = {});

}  // namespace ftl::model
