#include "train/seq2seq.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "data/seq2seq.h"
#include "io/atomic_file.h"
#include "io/hub.h"
#include "model/bart.h"
#include "model/generate.h"
#include "optim/schedule.h"
#include "peft/lora.h"
#include "train/batches.h"
#include "train/gpu_memory.h"
#include "train/inputs.h"
#include "train/offload.h"
#include "train/optimizer_step.h"
#include "zero/partitioned_weights.h"
#include "util/error.h"
#include "util/memory.h"
#include "util/strings.h"

namespace ftl::train {
namespace {

// ---- how the example prints (Python and torch reprs) ----

std::string python_str(const std::string& s) {  // repr(str): single quotes unless the text holds one
    const char quote = s.find('\'') != std::string::npos && s.find('"') == std::string::npos ? '"' : '\'';
    std::string out(1, quote);
    for (char c : s) {
        if (c == '\\' || c == quote) out += '\\';
        if (c == '\n') out += "\\n";
        else out += c;
    }
    return out + quote;
}

std::string python_list(const std::vector<std::string>& items) {
    std::vector<std::string> quoted;
    for (const auto& item : items) quoted.push_back(python_str(item));
    return "[" + join(quoted, ", ") + "]";
}

std::string python_float(double v) {  // repr(float): the shortest text that reads back the same
    char buffer[64];
    const auto end = std::to_chars(buffer, buffer + sizeof buffer, v).ptr;
    std::string text(buffer, end);
    if (text.find_first_of(".en") == std::string::npos) text += ".0";
    return text;
}

std::string torch_scalar(double v, const at::Device& device) {  // repr of a 0-d tensor, torch's 4 decimals
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "%.4f", v);
    return "tensor(" + std::string(buffer) + (device.is_cuda() ? ", device='" + device.str() + "')" : ")");
}

std::string with_thousands(int64_t n) {  // Python's {:,d}
    std::string digits = std::to_string(n), out;
    for (size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
        out += digits[i];
    }
    return out;
}

// ---- data ----

struct Seq2SeqBatch {
    at::Tensor input_ids, attention_mask, labels;  // [B, S], [B, S], [B, T]
};

// tokenizer.pad(padding="longest"): sources right-padded with pad_id (mask 0); labels stacked
// (all max_target long).
Seq2SeqBatch collate(const std::vector<data::Seq2SeqRow>& rows, const std::vector<int64_t>& indices, int32_t pad_id,
                     const at::Device& device) {
    std::vector<const std::vector<int32_t>*> sources;
    std::vector<int64_t> labels;
    for (int64_t i : indices) {
        const data::Seq2SeqRow& row = rows[static_cast<size_t>(i)];
        sources.push_back(&row.input_ids);
        labels.insert(labels.end(), row.labels.begin(), row.labels.end());
    }
    const PaddedRows padded = pad_rows(sources, pad_id, /*left=*/false);
    const at::Tensor targets = at::tensor(labels, at::kLong).view({static_cast<int64_t>(indices.size()), -1});
    return {padded.ids.to(device), padded.mask.to(device), targets.to(device)};
}

// BartForConditionalGeneration(labels=...).loss: the decoder reads shift_tokens_right(labels);
// mean cross-entropy over the labels that are not -100.
at::Tensor seq2seq_loss(const model::Seq2SeqLM& model, const Seq2SeqBatch& batch, const model::ForwardOptions& options) {
    const model::BartConfig& c = model.config();
    const at::Tensor encoded = model.encode(batch.input_ids, batch.attention_mask, options);
    const at::Tensor decoder_ids = model::shift_tokens_right(batch.labels, c.pad_token_id, c.decoder_start_token_id);
    const at::Tensor logits = model.logits(model.decode(decoder_ids, at::Tensor(), encoded, batch.attention_mask, options), options);
    return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}).to(at::kFloat), batch.labels.reshape({-1}),
                                  std::nullopt, at::Reduction::Mean, -100);
}

struct Split {
    std::vector<data::Seq2SeqText> texts;
    std::vector<data::Seq2SeqRow> rows;
};

// "<dataset> [<split>]", how messages name a split.
std::string split_label(const config::TrainArgs& args, const std::string& split) {
    return args.dataset_name + " [" + split + "]";
}

std::vector<data::Seq2SeqText> read_texts(const config::TrainArgs& args, const std::string& dataset_dir,
                                          const std::string& split, const std::vector<std::string>& classes) {
    return data::seq2seq_texts(data::read_split(dataset_dir, split), args.text_column, args.label_column, classes,
                               split_label(args, split));
}

// The split's texts tokenized; cut sources or targets are warned about on rank 0.
Split tokenized(std::vector<data::Seq2SeqText> texts, const std::string& where, const tokenizer::HfTokenizer& tokenizer,
                const data::Seq2SeqLengths& lengths, int32_t pad_id, bool main_rank, const Log& log) {
    Split out;
    out.texts = std::move(texts);
    data::Seq2SeqRows rows = data::tokenize_seq2seq(out.texts, tokenizer, lengths, pad_id);
    if (main_rank && rows.truncated_sources)
        log.warn(where + ": " + std::to_string(rows.truncated_sources) + " source texts cut to " +
                 std::to_string(lengths.max_source) + " tokens (--max_source_length)");
    if (main_rank && rows.truncated_targets)
        log.warn(where + ": " + std::to_string(rows.truncated_targets) + " targets cut to " +
                 std::to_string(lengths.max_target) + " tokens (--max_target_length): the model cannot learn their ends");
    out.rows = std::move(rows.rows);
    return out;
}

// The texts the model generates for `rows`, in order, every rank's share gathered: rank r
// generates the r-th of world_size equal contiguous chunks (the last padded with repeats, dropped
// afterwards, as gather_for_metrics drops them), batch by batch; every rank runs the same number
// of batches (ZeRO-3 gathers in each).
std::vector<std::string> generate_texts(const model::Seq2SeqLM& model, const model::GenerationConfig& generation,
                                        const model::ForwardOptions& options, const model::AllFinished& all_finished,
                                        const std::vector<data::Seq2SeqRow>& rows, int batch_size, int32_t pad_id,
                                        const tokenizer::HfTokenizer& tokenizer, const RankContext& rank,
                                        const at::Device& device) {
    const int64_t n = static_cast<int64_t>(rows.size()), chunk = (n + rank.world_size - 1) / rank.world_size;
    const int64_t width = 1 + generation.new_tokens(1);
    at::Tensor mine = at::full({chunk, width}, pad_id, at::kLong);
    for (int64_t first = 0; first < chunk; first += batch_size) {
        std::vector<int64_t> indices;
        for (int64_t k = first; k < std::min(chunk, first + batch_size); ++k)
            indices.push_back(std::min(n - 1, rank.rank * chunk + k));
        const Seq2SeqBatch batch = collate(rows, indices, pad_id, device);
        const at::Tensor sequences =
            model::generate(model, batch.input_ids, batch.attention_mask, generation, options, all_finished).cpu();
        mine.narrow(0, first, sequences.size(0)).narrow(1, 0, sequences.size(1)).copy_(sequences);
    }
    at::Tensor all = mine;
    if (rank.comm) {
        all = at::empty({rank.world_size * chunk, width}, mine.options().device(device));
        rank.comm->all_gather(all, mine.to(device));
        all = all.cpu();
    }
    std::vector<std::string> texts;
    for (int64_t i = 0; i < n; ++i) {
        const at::Tensor row = all[i].contiguous();
        const std::vector<int32_t> ids(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + width);
        texts.push_back(tokenizer.decode(ids, /*skip_special_tokens=*/true));
    }
    return texts;
}

void print_lines(const std::vector<std::string>& lines) {
    for (const auto& line : lines) std::cout << line << "\n";
    std::cout.flush();
}

}  // namespace

int run_seq2seq_example(const config::RunConfig& run, const RankContext& rank, const Log& log) {
    const config::TrainArgs& args = run.train;
    const bool main_rank = rank.rank == 0;
    const at::Device device = rank.torch_device();
    const auto& zero = run.deepspeed.zero_optimization;
    const int zero_stage = run.uses_deepspeed ? zero.stage : 0;
    if (run.mixed_precision != config::MixedPrecision::kNo)
        fail(ErrorKind::kConfig, "mixed_precision " + config::to_string(run.mixed_precision) +
                                     ": the seq2seq example runs in fp32 in this build (its config says mixed_precision: 'no')");
    // The script builds its own AdamW and schedule, which accelerate refuses next to the config's.
    if (run.uses_deepspeed && run.deepspeed.optimizer)
        fail(ErrorKind::kConfig, run.deepspeed.source + ": optimizer: You cannot specify an optimizer in the config file and in "
                                 "the code at the same time (the seq2seq example creates torch.optim.AdamW). Please remove "
                                 "the optimizer from the config file.");
    if (run.uses_deepspeed && run.deepspeed.scheduler)
        fail(ErrorKind::kConfig, run.deepspeed.source + ": scheduler: You cannot specify a scheduler in the config file and in "
                                 "the code at the same time (the seq2seq example creates a linear schedule). Please remove "
                                 "the scheduler from the config file.");
    // ZeRO-3: BART's frozen weights partitioned (each rank reads only its slices from the files),
    // optionally offloaded to host memory or NVMe (offload_param).
    const bool partition_weights = zero_stage == 3;
    const bool offload_param = partition_weights && zero.offload_param.device != config::OffloadDevice::kNone;

    // ---- data: the example's preprocess_function ----
    const io::HubCache hub = io::HubCache::from_environment();
    const std::string model_dir = io::resolve_repo_dir(args.model_name_or_path, hub, io::RepoType::kModel, args.model_revision);
    const std::string dataset_dir = resolve_dataset_dir(args.dataset_name);
    const tokenizer::HfTokenizer tokenizer = tokenizer::HfTokenizer::load(model_dir);
    if (!tokenizer.pad_id())
        fail(ErrorKind::kConfig, model_dir + ": the tokenizer has no pad token (labels are padded with it)");
    const int32_t pad_id = *tokenizer.pad_id();
    const model::BartConfig bart = model::read_bart_config(model_dir);
    const std::vector<std::string> classes = data::class_names(dataset_dir, args.label_column);
    const std::vector<std::string> splits = split(args.splits, ',');
    const std::string train_split = trim(splits.at(0)), eval_split = splits.size() > 1 ? trim(splits[1]) : train_split;
    data::Seq2SeqLengths lengths;
    lengths.max_source = args.max_source_length.value_or(
        static_cast<int>(std::min(tokenizer.model_max_length().value_or(bart.max_position_embeddings), bart.max_position_embeddings)));
    if (lengths.max_source > bart.max_position_embeddings)
        fail(ErrorKind::kConfig, "--max_source_length " + std::to_string(lengths.max_source) + ": the model has " +
                                     std::to_string(bart.max_position_embeddings) + " positions (max_position_embeddings)");
    std::vector<data::Seq2SeqText> train_texts = read_texts(args, dataset_dir, train_split, classes);
    if (args.max_target_length) {
        lengths.max_target = *args.max_target_length;
    } else if (!classes.empty()) {  // the example's target_max_length: the longest class name
        lengths.max_target = data::longest_target(classes, tokenizer);
    } else {  // text labels: the longest in the training split
        std::vector<std::string> targets;
        for (const auto& t : train_texts) targets.push_back(t.target);
        lengths.max_target = data::longest_target(targets, tokenizer);
    }
    const Split train = tokenized(std::move(train_texts), split_label(args, train_split), tokenizer, lengths, pad_id, main_rank, log);
    const Split eval = eval_split == train_split
                           ? train
                           : tokenized(read_texts(args, dataset_dir, eval_split, classes), split_label(args, eval_split), tokenizer,
                                       lengths, pad_id, main_rank, log);

    // ---- model and adapters ----
    model::LoadOptions load;
    load.dtype = at::kFloat;
    load.device = device;
    load.keep_mapped = partition_weights;
    model::LoadedSeq2Seq loaded = model::load_bart(model_dir, load);
    model::Seq2SeqLM& model = loaded.model;
    if (main_rank && !loaded.unused_tensors.empty())
        log.warn(model_dir + ": " + std::to_string(loaded.unused_tensors.size()) + " tensors not used (first: " +
                 loaded.unused_tensors.front() + ")");
    const model::GenerationConfig generation = model::read_generation_config(model_dir, bart);
    peft::LoraConfig lora = lora_config(args);
    lora.task_type = "SEQ_2_SEQ_LM";
    at::Generator init = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(args.seed));
    peft::attach_lora(model.linears(), "bart", lora, init, device);
    auto trainable = peft::adapter_parameters(model.linears());
    int64_t trainable_count = 0, all_count = 0;
    for (auto& [name, t] : trainable) {
        t.requires_grad_(true);
        trainable_count += t.numel();
    }
    for (const auto& [name, t] : model.named_weights()) all_count += t.numel();
    all_count += trainable_count;
    std::optional<zero::PartitionedWeights> partitioned;
    if (partition_weights) {
        // DeepSpeed's stage3_param_persistence_threshold; "auto" is 10 x hidden_size, as HF resolves it.
        const int64_t persistence = zero.stage3_param_persistence_threshold
                                        ? static_cast<int64_t>(*zero.stage3_param_persistence_threshold)
                                        : 10 * bart.d_model;
        partitioned.emplace(model.weight_parts(), rank.comm, rank.rank, rank.world_size, at::kFloat, device, persistence,
                            parameter_offload_for(run, offload_param));
        // DeepSpeed's stage3_prefetch_bucket_size ("auto": 0.9 x hidden_size^2); 0 turns prefetch off.
        if (!zero.stage3_prefetch_bucket_size || *zero.stage3_prefetch_bucket_size > 0)
            partitioned->enable_prefetch(zero.stage3_max_live_parameters);
        if (main_rank)
            log.info("ZeRO-3: this rank holds " + std::to_string(partitioned->slice_bytes()) + " bytes" +
                     (offload_param ? " (offload_param: in " + partitioned->slice_placement() + ")" : std::string()) +
                     " of the " + std::to_string(partitioned->full_bytes()) + " bytes of partitioned frozen weights, and " +
                     std::to_string(partitioned->persistent_bytes()) + " bytes of tensors under " +
                     std::to_string(persistence) + " elements whole");
    }
    if (main_rank)
        print_lines({"trainable params: " + with_thousands(trainable_count) + " || all params: " + with_thousands(all_count) +
                     " || trainable%: " + [&] {
                         char pct[32];
                         std::snprintf(pct, sizeof pct, "%.4f", 100.0 * static_cast<double>(trainable_count) / static_cast<double>(all_count));
                         return std::string(pct);
                     }()});

    // ---- optimizer and schedule ----
    // The script's torch.optim.AdamW(model.parameters()): one group, weight decay on every adapter.
    OptimizerChoice script_adamw;
    script_adamw.options = {args.adam_beta1, args.adam_beta2, args.adam_epsilon, args.weight_decay};
    script_adamw.trainer_groups = false;
    TrainOptimizer optimizer(trainable, script_adamw, optimizer_layout_for(run, bart.d_model), rank);
    if (main_rank && zero_stage > 0) log.info("ZeRO stage " + std::to_string(zero_stage) + ": the optimizer state is in " + optimizer.placement());
    const int accumulation = args.gradient_accumulation_steps;
    // The script's DataLoader(shuffle=True) keeps the short last batch.
    BatchPlan plan(train.rows.size(), args.per_device_train_batch_size, accumulation, rank.rank, rank.world_size,
                   static_cast<uint64_t>(args.seed), /*drop_last=*/false, Sampling::kRandom);
    const int64_t micro_per_epoch = plan.micro_batches_per_epoch();
    const int64_t steps_per_epoch = (micro_per_epoch + accumulation - 1) / accumulation;
    const auto epochs = static_cast<int64_t>(std::ceil(args.num_train_epochs));
    const int64_t total_steps = steps_per_epoch * epochs;
    const optim::LearningRateSchedule schedule = learning_rate_schedule_for(run, args, total_steps, args.learning_rate);
    const double clip = run.uses_deepspeed && run.deepspeed.gradient_clipping ? *run.deepspeed.gradient_clipping : args.max_grad_norm;
    model::ForwardOptions forward;
    forward.training = true;
    forward.generator = dropout_generator(device, static_cast<uint64_t>(args.seed) + 1);
    forward.residency = partitioned ? &*partitioned : nullptr;
    forward.recompute_layers = args.gradient_checkpointing;
    model::ForwardOptions generating;  // eval mode
    generating.residency = forward.residency;
    model::AllFinished all_finished;  // ZeRO-3 on several ranks: decoding steps in lock-step
    if (partitioned && rank.comm)
        all_finished = [&rank, &device](bool finished) {
            at::Tensor open = at::full({1}, finished ? 0.0 : 1.0, at::TensorOptions().dtype(at::kFloat).device(device));
            rank.comm->all_reduce(open, dist::ReduceOp::kSum);
            return open.item<float>() == 0.0f;
        };
    auto beat = [&](const std::string& what) {
        if (rank.heartbeat) rank.heartbeat->phase(what);
    };

    // ---- per epoch: train, then generate over the evaluation split ----
    nlohmann::json evaluations = nlohmann::json::array();  // <output_dir>/eval_predictions.json
    if (main_rank) {
        std::error_code ec;
        std::filesystem::create_directories(args.output_dir, ec);
        if (ec) fail(ErrorKind::kConfig, "--output_dir: cannot create '" + args.output_dir + "' (" + ec.message() + ")");
    }
    for (int64_t epoch = 0; epoch < epochs; ++epoch) {
        std::optional<GpuMemoryPhase> gpu_train;
        if (device.is_cuda()) gpu_train.emplace(device);
        const CpuMemoryPhase cpu_train;
        // Summed on the device (the seed's loop: total_loss += loss.detach().float()), read once per epoch.
        at::Tensor total_loss = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
        for (int64_t micro = 0; micro < micro_per_epoch; ++micro) {
            const std::string at = "epoch " + std::to_string(epoch) + " batch " + std::to_string(micro + 1) + ": ";
            beat(at + "forward and backward");
            const Seq2SeqBatch batch = collate(train.rows, plan.next_micro_batch(), pad_id, device);
            const at::Tensor loss = seq2seq_loss(model, batch, forward);
            if ((micro + 1) % accumulation == 0 || micro + 1 == micro_per_epoch) optimizer.reduce_during_next_backward();
            // DeepSpeed averages gradients over ranks and accumulation steps.
            (loss / static_cast<double>(accumulation * rank.world_size)).backward();
            total_loss += loss.detach().to(at::kDouble);
            if ((micro + 1) % accumulation == 0 || micro + 1 == micro_per_epoch) {
                beat(at + "optimizer step (reduces gradients)");
                const double lr = schedule(optimizer.steps());
                optimizer.step(lr, clip, nullptr);
                optimizer.zero_grad();
            }
        }
        at::Tensor epoch_loss = (total_loss / static_cast<double>(micro_per_epoch)).reshape({1});
        if (rank.comm) {
            rank.comm->all_reduce(epoch_loss, dist::ReduceOp::kSum);
            epoch_loss = epoch_loss.cpu() / rank.world_size;
        }
        if (main_rank) {
            if (gpu_train) print_lines(gpu_train->report("train"));
            print_lines(cpu_train.report("train"));
            const double mean = epoch_loss.item<double>();
            char precise[64];
            std::snprintf(precise, sizeof precise, "%.9g", mean);
            log.info("epoch " + std::to_string(epoch) + ": mean train loss " + precise + " over " +
                     std::to_string(micro_per_epoch) + " batches per rank");
            print_lines({"epoch=" + std::to_string(epoch) + ": train_ppl=" + torch_scalar(std::exp(mean), device) +
                         " train_epoch_loss=" + torch_scalar(mean, device)});
        }

        beat("epoch " + std::to_string(epoch) + ": generating over the evaluation split");
        std::optional<GpuMemoryPhase> gpu_eval;
        if (device.is_cuda()) gpu_eval.emplace(device);
        const CpuMemoryPhase cpu_eval;
        const std::vector<std::string> predictions = generate_texts(model, generation, generating, all_finished, eval.rows,
                                                                    args.per_device_eval_batch_size, pad_id, tokenizer, rank, device);
        if (main_rank) {
            if (gpu_eval) print_lines(gpu_eval->report("eval"));
            print_lines(cpu_eval.report("eval"));
            int64_t correct = 0;
            std::vector<std::string> labels;
            for (size_t i = 0; i < predictions.size(); ++i) {
                correct += trim(predictions[i]) == trim(eval.texts[i].target);
                labels.push_back(eval.texts[i].target);
            }
            const double accuracy = static_cast<double>(correct) / static_cast<double>(predictions.size()) * 100.0;
            const size_t shown = std::min<size_t>(10, predictions.size());
            // Every prediction of every epoch (the example prints the first ten), rewritten whole
            // each epoch so the file is never half written.
            evaluations.push_back({{"epoch", epoch}, {"split", eval_split}, {"accuracy", accuracy},
                                   {"predictions", predictions}, {"labels", labels}});
            io::write_file_atomically(args.output_dir + "/eval_predictions.json",
                                      [&](std::ostream& out) { out << evaluations.dump(1) << "\n"; });
            print_lines({"accuracy=" + python_float(accuracy),
                         "eval_preds[:10]=" + python_list({predictions.begin(), predictions.begin() + static_cast<std::ptrdiff_t>(shown)}),
                         "dataset['" + eval_split + "'][label_column][:10]=" +
                             python_list({labels.begin(), labels.begin() + static_cast<std::ptrdiff_t>(shown)})});
        }
    }

    if (main_rank && partitioned && (rank.comm || offload_param)) log.info(partitioned->describe_prefetch());

    // ---- the adapter, as model.save_pretrained(peft_model_id) ----
    if (main_rank) {
        peft::save_adapter(args.output_dir, model.linears(), lora);
        log.info("adapter saved to " + args.output_dir);
    }
    if (rank.comm) rank.comm->barrier();
    return 0;
}

}  // namespace ftl::train
