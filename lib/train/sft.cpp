#include "train/sft.h"

#include <ATen/autocast_mode.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/dataset.h"
#include "data/examples.h"
#include "io/atomic_file.h"
#include "io/hub.h"
#include "model/load.h"
#include "model/loss.h"
#include "optim/adamw.h"
#include "optim/schedule.h"
#include "peft/lora.h"
#include "tokenizer/chat_format.h"
#include "train/batches.h"
#include "util/error.h"
#include "util/strings.h"

namespace ftl::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Checked before anything heavy runs: the output folder can be written.
void check_output_dir(const std::string& dir) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    const std::string probe = dir + "/.ftlaunch-write-test";
    std::ofstream out(probe);
    if (ec || !out)
        fail(ErrorKind::kConfig, "--output_dir: cannot write to '" + dir + "'" + (ec ? " (" + ec.message() + ")" : ""));
    out.close();
    fs::remove(probe, ec);
}

std::string format_number(double v) {
    std::ostringstream s;
    s.precision(6);
    s << v;
    return s.str();
}

// Enables autocast for the run's precision on the device while it lives (HF Trainer's
// mixed precision: weights stay as loaded, matmuls run in bf16/fp16).
class AutocastScope {
public:
    AutocastScope(const config::TrainArgs& args, const std::string& device) {
        if (!args.bf16 && !args.fp16) return;
        type_ = device == "cuda" ? at::kCUDA : at::kCPU;
        previous_ = at::autocast::is_autocast_enabled(type_);
        at::autocast::set_autocast_enabled(type_, true);
        at::autocast::set_autocast_dtype(type_, args.bf16 ? at::kBFloat16 : at::kHalf);
        active_ = true;
    }
    ~AutocastScope() {
        if (!active_) return;
        at::autocast::set_autocast_enabled(type_, previous_);
        at::autocast::clear_cache();
    }

private:
    at::DeviceType type_ = at::kCPU;
    bool previous_ = false;
    bool active_ = false;
};

}  // namespace

void run_sft(const config::RunConfig& run, const RankContext& rank, const Log& log) {
    const config::TrainArgs& args = run.train;
    const bool main_rank = rank.rank == 0;
    if (args.fp16) fail(ErrorKind::kConfig, "--fp16: fp16 training (loss scaling) is not in this build yet; use --bf16 or fp32");
    if (main_rank) check_output_dir(args.output_dir);

    // ---- inputs ----
    const io::HubCache hub = io::HubCache::from_environment();
    const std::string model_dir = io::resolve_repo_dir(args.model_name_or_path, hub, io::RepoType::kModel,
                                                       args.model_revision);
    const std::string dataset_dir = io::resolve_repo_dir(args.dataset_name, hub, io::RepoType::kDataset);

    // ---- tokenizer (train.py: chat formats add their special tokens; otherwise pad = eos) ----
    std::optional<tokenizer::ChatFormat> chat_format;
    if (args.chat_template_format != "none")
        chat_format = tokenizer::parse_chat_format(args.chat_template_format, "--chat_template_format");
    auto tok = tokenizer::HfTokenizer::load(
        model_dir, chat_format ? tokenizer::chat_special_tokens(*chat_format) : tokenizer::SpecialTokenOverrides{});
    if (!chat_format) tok.set_pad_to_eos();
    const int32_t pad_id = tok.pad_id().value_or(0);

    // ---- data ----
    const std::vector<std::string> splits = split(args.splits, ',');
    data::TextOptions text{args.dataset_text_field, chat_format, args.add_special_tokens, args.append_concat_token};
    const std::string train_source = args.dataset_name + " [" + trim(splits.at(0)) + "]";
    auto train_examples =
        data::tokenize_records(data::read_split(dataset_dir, trim(splits.at(0))), tok, text, train_source);
    const std::vector<data::Row> rows = args.packing
                                            ? data::pack_examples(train_examples, args.max_seq_length)
                                            : data::unpacked_rows(train_examples, args.max_seq_length, train_source);

    // ---- model and adapters ----
    const at::Device device = rank.device == "cuda" ? at::Device(at::kCUDA, static_cast<int8_t>(rank.device_index))
                                                    : at::Device(at::kCPU);
    model::LoadOptions load;
    load.dtype = at::kFloat;  // train.py loads fp32 unless a 4-bit storage dtype says otherwise
    load.device = device;
    auto loaded = model::load_causal_lm(model_dir, load);
    model::CausalLM& lm = loaded.model;
    if (chat_format && tok.size() > lm.config().vocab_size) {
        const int64_t size = lm.resize_token_embeddings(tok.size(), 8);
        if (main_rank) log.info("resized the embeddings to " + std::to_string(size) + " rows for the chat tokens");
    }
    std::vector<std::pair<std::string, at::Tensor>> trainable;
    peft::LoraConfig lora;
    if (args.use_peft_lora) {
        lora.r = args.lora_r;
        lora.alpha = args.lora_alpha;
        lora.dropout = args.lora_dropout;
        lora.target_modules = args.lora_target_modules;
        lora.use_rslora = args.use_rslora;
        lora.base_model_name_or_path = args.model_name_or_path;
        at::Generator init = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(args.seed));
        peft::attach_lora(lm, lora, init);
        trainable = peft::adapter_parameters(lm);
    } else {
        trainable = lm.named_weights();
    }
    for (auto& [name, t] : trainable) t.requires_grad_(true);
    int64_t trainable_count = 0, all_count = 0;
    for (auto& [name, t] : trainable) trainable_count += t.numel();
    for (auto& [name, t] : lm.named_weights()) all_count += t.numel();
    if (main_rank)
        log.info("trainable params: " + std::to_string(trainable_count) + " || all params: " +
                 std::to_string(all_count + (args.use_peft_lora ? trainable_count : 0)));

    // ---- schedule ----
    BatchPlan plan(rows.size(), args.per_device_train_batch_size, args.gradient_accumulation_steps, rank.rank,
                   rank.world_size, static_cast<uint64_t>(args.seed));
    const int64_t steps_per_epoch = std::max<int64_t>(1, plan.micro_batches_per_epoch() / args.gradient_accumulation_steps);
    const int64_t total_steps = args.max_steps > 0
                                    ? args.max_steps
                                    : static_cast<int64_t>(std::ceil(args.num_train_epochs * static_cast<double>(steps_per_epoch)));
    const auto schedule = optim::parse_schedule_type(args.lr_scheduler_type);
    const int64_t warmup = optim::warmup_steps_for(total_steps, args.warmup_steps, args.warmup_ratio);
    const int64_t logging_every = args.logging_steps < 1 ? std::max<int64_t>(1, static_cast<int64_t>(std::ceil(args.logging_steps * total_steps)))
                                                         : static_cast<int64_t>(args.logging_steps);
    optim::AdamW optimizer(trainable, {args.adam_beta1, args.adam_beta2, args.adam_epsilon, args.weight_decay});
    if (main_rank)
        log.info("***** Running training *****  examples " + std::to_string(rows.size()) + ", epochs " +
                 format_number(args.num_train_epochs) + ", batch per device " +
                 std::to_string(args.per_device_train_batch_size) + ", accumulation " +
                 std::to_string(args.gradient_accumulation_steps) + ", ranks " + std::to_string(rank.world_size) +
                 ", optimization steps " + std::to_string(total_steps));

    // ---- the loop: one iteration = one optimizer step ----
    json log_history = json::array();
    AutocastScope autocast(args, rank.device);
    model::ForwardOptions forward;
    forward.training = true;
    forward.generator = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(args.seed) + 1);
    double logged_loss = 0.0;
    int64_t logged_steps = 0;
    const auto started = std::chrono::steady_clock::now();
    int64_t tokens_seen = 0;
    for (int64_t step = 0; step < total_steps; ++step) {
        std::vector<model::Batch> micro;
        for (int i = 0; i < args.gradient_accumulation_steps; ++i)
            micro.push_back(collate(rows, plan.next_micro_batch(), pad_id, args.packing, device));
        // transformers >= 4.46: every micro-batch's summed loss is divided by the target tokens of
        // the whole accumulated batch over all ranks, so the curve does not depend on the split.
        at::Tensor counted = at::zeros({1}, at::TensorOptions().dtype(at::kDouble));
        for (const auto& b : micro) counted += count_targets(b);
        if (rank.comm) rank.comm->all_reduce(counted, dist::ReduceOp::kSum);
        const double num_items = counted.item<double>();
        double step_loss = 0.0;
        for (const auto& b : micro) {
            model::LossOptions loss_options;
            loss_options.divisor = num_items;
            // ranks each contribute sum_r / N; grads are summed across ranks below
            at::Tensor loss = model::causal_lm_loss(lm, b, loss_options).loss;
            loss.backward();
            step_loss += loss.item<double>();
            tokens_seen += b.input_ids.numel();
        }
        std::vector<at::Tensor> grads;
        for (auto& [name, t] : trainable)
            if (t.grad().defined()) grads.push_back(t.mutable_grad());
        if (rank.comm) {
            for (auto& g : grads) rank.comm->all_reduce(g, dist::ReduceOp::kSum);
            at::Tensor l = at::full({1}, step_loss, at::TensorOptions().dtype(at::kDouble));
            rank.comm->all_reduce(l, dist::ReduceOp::kSum);
            step_loss = l.item<double>();
        }
        const double grad_norm = clip_grad_norm(grads, args.max_grad_norm);
        const double lr = args.learning_rate * optim::lr_multiplier(schedule, step, warmup, total_steps);
        optimizer.step(lr);
        optimizer.zero_grad();

        logged_loss += step_loss;
        ++logged_steps;
        const bool last = step + 1 == total_steps;
        if ((step + 1) % logging_every == 0 || last) {
            // HF logs the rate the scheduler holds after its step, i.e. the next step's rate.
            const double next_lr = args.learning_rate * optim::lr_multiplier(schedule, step + 1, warmup, total_steps);
            json entry = {{"loss", logged_loss / static_cast<double>(logged_steps)},
                          {"grad_norm", grad_norm},
                          {"learning_rate", next_lr},
                          {"epoch", static_cast<double>(step + 1) / static_cast<double>(steps_per_epoch)},
                          {"step", step + 1}};
            log_history.push_back(entry);
            if (main_rank) {
                const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
                log.info("step " + std::to_string(step + 1) + "/" + std::to_string(total_steps) + " " +
                         entry.dump() + " tokens/s " + format_number(static_cast<double>(tokens_seen) * rank.world_size / seconds));
            }
            logged_loss = 0.0;
            logged_steps = 0;
        }
    }

    // ---- save (rank 0) ----
    if (!main_rank) return;
    if (args.use_peft_lora) peft::save_adapter(args.output_dir, lm, lora);
    json state = {{"global_step", total_steps},
                  {"max_steps", total_steps},
                  {"num_train_epochs", args.num_train_epochs},
                  {"logging_steps", logging_every},
                  {"train_batch_size", args.per_device_train_batch_size},
                  {"log_history", log_history}};
    io::write_file_atomically(args.output_dir + "/trainer_state.json",
                              [&](std::ostream& out) { out << state.dump(2) << "\n"; });
    log.info("saved " + std::string(args.use_peft_lora ? "the adapter and " : "") + "trainer_state.json to " +
             args.output_dir);
}

}  // namespace ftl::train
