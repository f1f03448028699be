// What a job reads before it computes anything, shared by training and evaluation: the model and
// dataset folders (local or hub cache), the tokenizer as train.py sets it up, the model on its
// device, and the rows of a split.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/run_config.h"
#include "config/train_args.h"
#include "data/examples.h"
#include "model/load.h"
#include "model/loss.h"
#include "peft/lora.h"
#include "quant/four_bit.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/chat_renderer.h"
#include "tokenizer/hf_tokenizer.h"
#include "train/rank_context.h"
#include "zero/partitioned_weights.h"
#include "util/log.h"

namespace ftl::train {

struct JobInputs {
    std::string model_dir;
    std::string dataset_dir;
    std::optional<tokenizer::ChatFormat> chat_format;
    tokenizer::HfTokenizer tokenizer;
    // Renders conversations: the chat format, or (--chat_template_format none) the tokenizer's template.
    std::shared_ptr<const tokenizer::ChatRenderer> chat;
};

// --dataset_name as a folder: a local path, or a hub dataset (org/name) in the hub cache; with
// "org/name:subset" (RAFT's "ought/raft:twitter_complaints") the subset's folder in it (<subset>
// or data/<subset>). Throws ftl::Error(kConfig) naming what was looked for.
std::string resolve_dataset_dir(const std::string& dataset_name);

// The generator dropout (LoRA's, the model's) draws from in training, on the device the masks
// are made on (a CUDA tensor cannot draw from a CPU generator), seeded so runs repeat.
at::Generator dropout_generator(const at::Device& device, uint64_t seed);

// Resolves the folders and loads the tokenizer: a chat format adds its special tokens (train.py's
// from_pretrained overrides); without one, pad = eos.
JobInputs resolve_job_inputs(const config::TrainArgs& args);

// Whether the chat format's tokens make the tokenizer larger than config.json's vocabulary (the
// model's embeddings are then resized for them).
bool resizes_vocabulary(const JobInputs& inputs, const model::DecoderConfig& config);

// Whether the frozen input embeddings stay in host memory (--embeddings_on_host, on by default):
// LoRA on a GPU, the weights not partitioned by ZeRO-3 (which gathers them per use), the table
// neither resized (its new rows are saved with the adapter) nor tied to lm_head (which needs it on
// the device). Each micro-batch's rows are then gathered on the host and copied up
// (model::CausalLM::embed): vocab x hidden x 2 bytes less on the device (1 GiB for Llama 3 8B).
bool embeddings_stay_on_host(const config::TrainArgs& args, const at::Device& device, bool partitioned,
                             const model::CausalLM& model, bool resized);

// The types the model's tensors are kept in: float32 for full fine-tuning (the trained weights);
// with LoRA the frozen base in config::frozen_base_dtype, the decoder's linears and an untied head
// in the autocast type under --bf16/--fp16. When the vocabulary is resized the embeddings, the head
// and the norms stay float32 (the new rows are fp32 means the adapter file saves) and only the
// linears follow those rules.
zero::SliceTypes model_types(const config::RunConfig& run, const JobInputs& inputs, const model::DecoderConfig& config);

// The model on `device` in `types`, its embeddings resized (to a multiple of 8) when the chat
// tokens made the vocabulary larger. `mapped` (ZeRO-3, 4-bit): the weights stay views of the
// mapped files, in the files' dtype, for zero::PartitionedWeights or quantisation to convert
// (resized embeddings are converted whole, to fp32). `stack_experts_late` (mapped, frozen base):
// a MoE checkpoint's experts are stacked layer by layer as they are partitioned or quantised
// (model::LoadOptions::stack_experts_late).
struct JobModel {
    model::LoadedModel loaded;
    std::optional<int64_t> resized_to;  // the new vocabulary size when resized
};
JobModel load_job_model(const JobInputs& inputs, const at::Device& device, bool mapped = false,
                        const zero::SliceTypes& types = {}, bool stack_experts_late = false);

// The --lora_* flags (and the base model's name) as PEFT's LoraConfig.
peft::LoraConfig lora_config(const config::TrainArgs& args);

// --loss_type (TRL's): nll, or dft (chunked_nll, deprecated in TRL, is nll).
model::TokenLoss token_loss_for(const config::TrainArgs& args);

// TRL's MoE load-balancing loss for this run (model/router_balance.h), as SFTTrainer decides it:
// on a MoE model with a coefficient (--router_aux_loss_coef, else config.json's
// router_aux_loss_coef) other than 0; else null. --router_aux_loss_coef other than 0 on a dense
// model is ftl::Error(kConfig), as TRL raises.
std::shared_ptr<model::RouterBalance> router_balance_for(const config::TrainArgs& args,
                                                         const model::DecoderConfig& config);

// --use_4bit_quantization True: the 4-bit scheme the --bnb_4bit_* flags and --use_nested_quant
// choose (blocksize 64, as bitsandbytes); nullopt without it.
std::optional<quant::FourBitConfig> four_bit_config(const config::TrainArgs& args);

// Whether a split's rows are packed: --packing for training; for evaluation --eval_packing, which
// follows --packing when not given (SFTConfig's eval_packing).
bool packs_rows(const config::TrainArgs& args, bool evaluation);

// The rows of one split: tokenized with the job's text options, packed (by --packing_strategy) or
// one per example.
std::vector<data::Row> split_rows(const config::TrainArgs& args, const JobInputs& inputs, const std::string& split,
                                  bool packed);

// Every token id of `rows` indexes one of the model's `vocab_rows` embedding rows; else
// ftl::Error(kConfig) naming `source`, the row, the id and the model's vocabulary size (a
// pre-tokenized dataset made with another tokenizer, or a tokenizer larger than the model).
void check_token_ids(const std::vector<data::Row>& rows, int64_t vocab_rows, const std::string& source);

// split_rows, run once per job: rank 0 tokenises and stores the rows in
// <output_dir>/tokenized/<split>-<key>.safetensors (data/row_cache.h) unless a run with the same
// key already did, then publishes the key in the store; the other ranks wait for that signal
// however long tokenising takes (no collective, so no timeout) and read the file. Where the file
// is not there for them (output_dir not on a shared filesystem) they tokenise for themselves,
// which gives the same rows. An error on rank 0 is published too, so every rank stops with it.
std::vector<data::Row> prepared_split_rows(const config::TrainArgs& args, const JobInputs& inputs,
                                           const std::string& split, bool packed, const RankContext& rank,
                                           const Log& log);

struct Splits {
    std::vector<data::Row> train, eval;
};

// The rows of the training split (and the evaluation split when `need_eval`), every id checked
// against the model's `vocab_rows` embedding rows.
Splits prepare_splits(const config::TrainArgs& args, const JobInputs& inputs, bool need_eval, int64_t vocab_rows,
                      const RankContext& rank, const Log& log);

}  // namespace ftl::train
