#include "model/generate.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "model/config_reader.h"
#include "util/error.h"
#include "util/files.h"

namespace ftl::model {

namespace {

// generation_config.json over `c` (the model config's values) when the file is there.
GenerationConfig read_over(const std::string& model_dir, GenerationConfig c) {
    const std::string path = model_dir + "/generation_config.json";
    const auto text = read_text_file(path);
    if (!text) return c;
    const nlohmann::json j = parse_json_object(*text, path);
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
    c.max_length = r.integer("max_length", c.max_length, 2);
    c.num_beams = r.integer("num_beams", 1);
    c.no_repeat_ngram_size = r.integer("no_repeat_ngram_size", 0, 0);
    c.min_length = r.integer("min_length", 0, 0);
    if (r.boolean("do_sample", false)) r.bad("do_sample", "must be false: sampling is not in this build (greedy and beam search are)");
    if (r.number("repetition_penalty", 1.0) != 1.0) r.bad("repetition_penalty", "must be 1.0 in this build");
    // Processors this decoder does not apply, each with the value that leaves the output unchanged.
    if (r.integer("min_new_tokens", 0, 0) != 0) r.bad("min_new_tokens", "must be 0 in this build (min_length is applied)");
    if (r.integer("encoder_no_repeat_ngram_size", 0, 0) != 0) r.bad("encoder_no_repeat_ngram_size", "must be 0 in this build");
    if (r.integer("num_beam_groups", 1) != 1) r.bad("num_beam_groups", "must be 1: diverse beam search is not in this build");
    if (r.has("bad_words_ids") && !(j.at("bad_words_ids").is_array() && j.at("bad_words_ids").empty()))
        r.bad("bad_words_ids", "must be empty in this build");
    c.length_penalty = r.number("length_penalty", 1.0);
    if (r.has("early_stopping")) {
        const auto& early = j.at("early_stopping");
        if (early.is_boolean())
            c.early_stopping = early.get<bool>() ? GenerationConfig::EarlyStopping::kTrue : GenerationConfig::EarlyStopping::kFalse;
        else if (early.is_string() && early.get<std::string>() == "never")
            c.early_stopping = GenerationConfig::EarlyStopping::kNever;
        else
            r.bad("early_stopping", "must be true, false or \"never\"");
    }
    return c;
}

}  // namespace

int64_t GenerationConfig::new_tokens(int64_t start_length) const {
    const int64_t n = max_new_tokens ? *max_new_tokens : max_length - start_length;
    if (n < 1)
        fail(ErrorKind::kConfig, "generation: max_length " + std::to_string(max_length) + " leaves no room after a start of " +
                                     std::to_string(start_length) + " tokens; set max_new_tokens");
    return n;
}

GenerationConfig read_generation_config(const std::string& model_dir, const BartConfig& model) {
    GenerationConfig c;
    c.decoder_start_token_id = model.decoder_start_token_id;
    c.eos_token_ids = {model.eos_token_id};
    c.pad_token_id = model.pad_token_id;
    c.forced_eos_token_id = model.forced_eos_token_id;
    return read_over(model_dir, c);
}

GenerationConfig read_generation_config(const std::string& model_dir, const DecoderConfig& model) {
    constexpr int64_t kNoPad = -1;  // neither file names a pad token
    GenerationConfig c;
    c.eos_token_ids.clear();
    if (model.eos_token_id) c.eos_token_ids.push_back(*model.eos_token_id);
    c.pad_token_id = model.pad_token_id.value_or(kNoPad);
    c = read_over(model_dir, c);
    if (c.eos_token_ids.empty())
        fail(ErrorKind::kConfig, model_dir + ": no eos_token_id in config.json or generation_config.json (generation stops at it)");
    if (c.pad_token_id == kNoPad) c.pad_token_id = c.eos_token_ids.front();
    return c;
}

namespace {

// transformers' NoRepeatNGramLogitsProcessor: for each sequence (a row of `sequences` [N, L]),
// the tokens that would complete an n-gram it already holds are banned (-inf in `scores` [N, V]).
void ban_repeated_ngrams(at::Tensor& scores, const at::Tensor& sequences, int64_t n) {
    const int64_t length = sequences.size(1);
    if (n <= 0 || length + 1 < n) return;
    const at::Tensor host = sequences.to(at::kCPU, at::kLong).contiguous();
    const auto ids = host.accessor<int64_t, 2>();
    std::vector<std::pair<int64_t, int64_t>> banned;  // (row, token)
    for (int64_t row = 0; row < host.size(0); ++row)
        for (int64_t start = 0; start + n <= length; ++start) {
            bool same = true;  // does this n-gram's prefix equal the sequence's last n-1 tokens?
            for (int64_t k = 0; k + 1 < n && same; ++k) same = ids[row][start + k] == ids[row][length - n + 1 + k];
            if (same) banned.emplace_back(row, ids[row][start + n - 1]);
        }
    for (const auto& [row, token] : banned) scores[row][token] = -std::numeric_limits<float>::infinity();
}

// Logits processors transformers applies here, in its order: no repeated n-gram, minimum length,
// forced BOS at the first step, forced EOS at the last allowed one. `scores` [N, V] for the
// sequences [N, length] so far.
void apply_processors(at::Tensor& scores, const at::Tensor& sequences, int64_t max_length, const GenerationConfig& config) {
    const int64_t length = sequences.size(1);
    ban_repeated_ngrams(scores, sequences, config.no_repeat_ngram_size);
    if (length < config.min_length)
        for (int64_t eos : config.eos_token_ids) scores.select(1, eos).fill_(-std::numeric_limits<float>::infinity());
    auto force = [&](int64_t token) {
        scores = at::full_like(scores, -std::numeric_limits<float>::infinity());
        scores.select(1, token).fill_(0.0);
    };
    if (config.forced_bos_token_id && length == 1) force(*config.forced_bos_token_id);
    if (config.forced_eos_token_id && length == max_length - 1) force(*config.forced_eos_token_id);
}

// transformers' _gather_beams: tensor [B, n, ...] indexed along dim 1 by indices [B, m].
at::Tensor gather_beams(const at::Tensor& tensor, const at::Tensor& indices) {
    at::Tensor index = indices;
    while (index.dim() < tensor.dim()) index = index.unsqueeze(-1);
    std::vector<int64_t> shape = tensor.sizes().vec();
    shape[1] = indices.size(1);
    return tensor.gather(1, index.expand(shape));
}

// The model side of decoding: the logits [N, V] (fp32) at the last position of sequences [N, L].
using NextLogits = std::function<at::Tensor(const at::Tensor& sequences)>;
// Beam search tells a model side holding per-row state (a key/value cache) that row i now
// continues row rows[i] ([N] int64).
using ReorderRows = std::function<void(const at::Tensor& rows)>;

at::Tensor greedy(const at::Tensor& start, const NextLogits& next_logits, const GenerationConfig& config,
                  const AllFinished& all_finished) {
    const int64_t rows = start.size(0), max_length = start.size(1) + config.new_tokens(start.size(1));
    at::Tensor sequences = start;
    at::Tensor unfinished = at::ones({rows}, start.options());
    const at::Tensor eos = at::tensor(config.eos_token_ids, start.options());
    bool finished = false;
    for (int64_t length = start.size(1); length < max_length; ++length) {
        at::Tensor scores = next_logits(sequences);
        if (!finished) {
            apply_processors(scores, sequences, max_length, config);
            at::Tensor next = scores.argmax(-1);
            next = next * unfinished + config.pad_token_id * (1 - unfinished);
            sequences = at::cat({sequences, next.unsqueeze(1)}, 1);
            unfinished = unfinished * at::isin(next, eos).logical_not().to(unfinished.scalar_type());
            finished = unfinished.max().item<int64_t>() == 0 || sequences.size(1) >= max_length;
        }
        if (all_finished ? all_finished(finished) : finished) break;
    }
    return sequences;
}

// Names follow transformers' _beam_search; shapes [B, K] for B rows and K beams, [B, keep] for
// the continuations kept each step.
at::Tensor beam_search(const at::Tensor& start, const NextLogits& next_logits, const ReorderRows& reorder, int64_t vocab,
                       const GenerationConfig& config, const AllFinished& all_finished) {
    using Early = GenerationConfig::EarlyStopping;
    const int64_t rows = start.size(0), beams = config.num_beams, prompt = start.size(1);
    const int64_t max_length = prompt + config.new_tokens(prompt);
    const auto ids = start.options();
    const auto floats = ids.dtype(at::kFloat);
    const at::Tensor eos = at::tensor(config.eos_token_ids, ids);
    const int64_t keep = std::max<int64_t>(2, 1 + eos.numel()) * beams;
    const at::Tensor top_num_beam_mask = at::cat({at::ones({beams}, ids.dtype(at::kBool)), at::zeros({keep - beams}, ids.dtype(at::kBool))});
    // transformers fills with `pad_token_id or eos_token_id[0]`: a pad id of 0 falls through.
    const int64_t fill = config.pad_token_id != 0 ? config.pad_token_id : config.eos_token_ids.front();
    at::Tensor running_sequences = at::full({rows, beams, max_length}, fill, ids);
    running_sequences.narrow(2, 0, prompt).copy_(start.unsqueeze(1).expand({rows, beams, prompt}));
    at::Tensor sequences = running_sequences.clone();
    at::Tensor running_beam_scores = at::zeros({rows, beams}, floats);
    running_beam_scores.narrow(1, 1, beams - 1).fill_(-1e9);
    at::Tensor beam_scores = at::full({rows, beams}, -1e9, floats);
    at::Tensor is_sent_finished = at::zeros({rows, beams}, ids.dtype(at::kBool));
    at::Tensor improvement_possible = at::ones({rows, 1}, ids.dtype(at::kBool));  // is_early_stop_heuristic_unsatisfied
    at::Tensor running_beam_indices = at::full({rows, beams, max_length - prompt}, -1, ids);
    at::Tensor beam_indices = running_beam_indices.clone();
    const at::Tensor batch_offset = at::arange(rows, ids).view({-1, 1}) * beams;
    bool finished = false;
    for (int64_t length = prompt;;) {
        const at::Tensor flat = running_sequences.narrow(2, 0, length).reshape({rows * beams, length});
        at::Tensor log_probs = at::log_softmax(next_logits(flat), -1);
        if (finished) {  // only keeping step with the other ranks
            if (all_finished(true)) break;
            continue;
        }
        apply_processors(log_probs, flat, max_length, config);
        log_probs = (log_probs.view({rows, beams, vocab}) + running_beam_scores.unsqueeze(2)).reshape({rows, -1});
        // the top `keep` continuations over all beams of a row
        auto [topk_log_probs, topk_indices] = at::topk(log_probs, keep);
        const at::Tensor topk_current_beam_indices = topk_indices.div(vocab, "floor");
        at::Tensor topk_running_beam_indices = gather_beams(running_beam_indices, topk_current_beam_indices);
        at::Tensor topk_running_sequences = gather_beams(running_sequences, topk_current_beam_indices);
        const at::Tensor topk_ids = topk_indices.remainder(vocab);
        topk_running_sequences.select(2, length).copy_(topk_ids);
        topk_running_beam_indices.select(2, length - prompt).copy_(topk_current_beam_indices + batch_offset);
        // stopping criteria: an EOS, or the length limit
        const at::Tensor hits = at::isin(topk_ids, eos).logical_or(at::full_like(topk_ids, length + 1 >= max_length, ids.dtype(at::kBool)));
        // the best unfinished continuations run on
        const at::Tensor topk_running_log_probs = topk_log_probs + hits.to(at::kFloat) * -1e9;
        const at::Tensor next_topk = std::get<1>(at::topk(topk_running_log_probs, beams));
        running_sequences = gather_beams(topk_running_sequences, next_topk);
        running_beam_scores = gather_beams(topk_running_log_probs, next_topk);
        running_beam_indices = gather_beams(topk_running_beam_indices, next_topk);
        if (reorder) reorder((gather_beams(topk_current_beam_indices, next_topk) + batch_offset).reshape({-1}));
        // finished ones among the first `beams` join the finished set if they beat it
        const at::Tensor just_finished = hits.logical_and(top_num_beam_mask.unsqueeze(0));
        at::Tensor finished_scores =
            topk_log_probs / std::pow(static_cast<double>(length + 1 - prompt), config.length_penalty);
        const bool early_true = config.early_stopping == Early::kTrue;
        finished_scores = finished_scores + (is_sent_finished.all(-1, true).logical_and(at::scalar_tensor(early_true, ids.dtype(at::kBool))))
                                                    .to(at::kFloat) * -1e9;
        finished_scores = finished_scores + improvement_possible.logical_not().to(at::kFloat) * -1e9;
        finished_scores = finished_scores + just_finished.logical_not().to(at::kFloat) * -1e9;
        const at::Tensor merged_sequences = at::cat({sequences, topk_running_sequences}, 1);
        const at::Tensor merged_scores = at::cat({beam_scores, finished_scores}, 1);
        const at::Tensor merged_indices = at::cat({beam_indices, topk_running_beam_indices}, 1);
        const at::Tensor merged_finished = at::cat({is_sent_finished, just_finished}, 1);
        const at::Tensor best = std::get<1>(at::topk(merged_scores, beams));
        sequences = gather_beams(merged_sequences, best);
        beam_scores = gather_beams(merged_scores, best);
        beam_indices = gather_beams(merged_indices, best);
        is_sent_finished = gather_beams(merged_finished, best);
        ++length;
        // can a running beam still beat the worst finished one?
        const int64_t hypothetical = config.early_stopping == Early::kNever && config.length_penalty > 0.0
                                         ? max_length - prompt
                                         : length - prompt;
        const at::Tensor best_running = running_beam_scores.narrow(1, 0, 1) /
                                        std::pow(static_cast<double>(hypothetical), config.length_penalty);
        const at::Tensor worst_finished = at::where(is_sent_finished, std::get<0>(beam_scores.min(1, true)),
                                                    at::full_like(beam_scores, -1e9));
        improvement_possible = improvement_possible.logical_and((best_running > worst_finished).any(-1, true));
        const bool open_beam = !(is_sent_finished.all().item<bool>() && early_true);
        const bool valid_continuations = !hits.all().item<bool>();
        finished = !(improvement_possible.any().item<bool>() && open_beam && valid_continuations);
        if (all_finished ? all_finished(finished) : finished) break;
    }
    // the best sequence of each row, cut after the longest generated part
    const at::Tensor best_sequences = sequences.select(1, 0);
    const int64_t generated = (beam_indices.select(1, 0) + 1).to(at::kBool).sum(1).max().item<int64_t>();
    return best_sequences.narrow(1, 0, prompt + generated).contiguous();
}

}  // namespace

at::Tensor generate(const Seq2SeqLM& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                    const GenerationConfig& config, const ForwardOptions& options, const AllFinished& all_finished) {
    at::NoGradGuard no_grad;
    if (config.num_beams < 1) fail(ErrorKind::kConfig, "num_beams " + std::to_string(config.num_beams) + ": must be >= 1");
    // Every row's encoder states, once per beam; the decoder fed only the tokens its key/value
    // cache has not seen (a step run again after the end, to keep ranks in step, replaces the last).
    const at::Tensor source_mask = attention_mask.repeat_interleave(config.num_beams, 0);
    const at::Tensor encoded = model.encode(input_ids.repeat_interleave(config.num_beams, 0), source_mask, options);
    DecoderCache cache;
    const NextLogits next_logits = [&](const at::Tensor& sequences) {
        const int64_t length = sequences.size(1), seen = cache.self.resume(length);
        const at::Tensor states = model.decode_step(sequences.narrow(1, seen, length - seen), cache, encoded, source_mask, options);
        return model.logits(states.narrow(1, states.size(1) - 1, 1), options).select(1, 0).to(at::kFloat);
    };
    const at::Tensor start = at::full({input_ids.size(0), 1}, config.decoder_start_token_id, input_ids.options());
    return config.num_beams == 1
               ? greedy(start, next_logits, config, all_finished)
               : beam_search(start, next_logits, [&](const at::Tensor& rows) { cache.keep_rows(rows); },
                             model.config().vocab_size, config, all_finished);
}

at::Tensor generate(const CausalLM& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                    const GenerationConfig& config, const ForwardOptions& options, const AllFinished& all_finished) {
    at::NoGradGuard no_grad;
    if (config.num_beams < 1) fail(ErrorKind::kConfig, "num_beams " + std::to_string(config.num_beams) + ": must be >= 1");
    const at::Tensor prompt_mask = attention_mask.repeat_interleave(config.num_beams, 0);
    KeyValueCache cache;
    const NextLogits next_logits = [&](const at::Tensor& sequences) {
        // Generated tokens are attended to; positions count the real tokens before each one
        // (transformers: attention_mask.cumsum(-1) - 1, padding at 1). Only the tokens the cache
        // has not seen are run (a step repeated to keep ZeRO-3 ranks in step replaces the last).
        const int64_t length = sequences.size(1), seen = cache.resume(length);
        const int64_t generated = length - prompt_mask.size(1);
        const at::Tensor mask = at::cat({prompt_mask, at::ones({sequences.size(0), generated}, prompt_mask.options())}, 1);
        const at::Tensor positions = (mask.to(at::kLong).cumsum(-1) - 1).masked_fill(mask == 0, 1);
        const at::Tensor hidden = model.decode_step(sequences.narrow(1, seen, length - seen), mask,
                                                    positions.narrow(1, seen, length - seen), cache, options);
        return model.head(hidden.select(1, hidden.size(1) - 1), options).to(at::kFloat);
    };
    return config.num_beams == 1
               ? greedy(input_ids, next_logits, config, all_finished)
               : beam_search(input_ids, next_logits, [&](const at::Tensor& rows) { cache.keep_rows(rows); },
                             model.config().vocab_size, config, all_finished);
}

}  // namespace ftl::model
