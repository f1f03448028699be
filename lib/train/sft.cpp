#include "train/sft.h"

#include <ATen/Parallel.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/examples.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "model/loss.h"
#include "model/router_balance.h"
#include "model/quantize.h"
#include "model/save.h"
#include "model/tensor_io.h"
#include "optim/cpu_adamw.h"
#include "optim/loss_scaler.h"
#include "optim/schedule.h"
#include "peft/lora.h"
#include "train/autocast.h"
#include "train/batches.h"
#include "train/best_model.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/gpu_memory.h"
#include "train/inputs.h"
#include "train/offload.h"
#include "train/optimizer_step.h"
#include "train/preflight.h"
#include "zero/memory_estimate.h"
#include "zero/partitioned_weights.h"
#include "train/progress.h"
#include "train/resume.h"
#include "train/run_record.h"
#include "train/throughput.h"
#include "train/token_metrics.h"
#include "train/trainer_resume.h"
#include "train/trainer_flow.h"
#include "util/checksum.h"
#include "util/error.h"
#include "util/files.h"
#include "util/memory.h"
#include "util/strings.h"

namespace ftl::train {
namespace {

using nlohmann::json;
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

std::string format_number(double v) {
    std::ostringstream s;
    s.precision(6);
    s << v;
    return s.str();
}

// The job after its checks: inputs, model, schedule, the loop, the final save.
// Returns 0, or kExitPreempted after a SIGTERM stop with its checkpoint.
int train(const config::RunConfig& run, const RankContext& rank, const Log& log, const std::string& resume_dir,
          RunRecorder& recorder) {
    const config::TrainArgs& args = run.train;
    const bool main_rank = rank.rank == 0;
    const auto& zero = run.deepspeed.zero_optimization;
    const int zero_stage = run.uses_deepspeed ? zero.stage : 0;
    check_run_settings(run, rank, log);
    const std::optional<zero::OptimizerOffload> optimizer_offload = optimizer_offload_for(run);
    // offload_param (stage 3: the partitioned weights' slices) to host memory, or (LoRA's frozen
    // base weights) to NVMe.
    const bool offload_param = run.uses_deepspeed && zero_stage == 3 && zero.offload_param.device != config::OffloadDevice::kNone;
    const std::optional<quant::FourBitConfig> four_bit = four_bit_config(args);
    // ---- inputs: folders, tokenizer (as train.py sets it up), data ----
    const JobInputs inputs = resolve_job_inputs(args);
    const int32_t pad_id = inputs.tokenizer.pad_id().value_or(0);
    // The launcher's watchdog reads these (util/heartbeat.h); loading and tokenising may take long
    // and are not watched, every phase of the loop is.
    auto beat = [&](const std::string& what) {
        if (rank.heartbeat) rank.heartbeat->phase(what);
        if (rank.entered_phase) rank.entered_phase(what);
    };
    if (rank.heartbeat) rank.heartbeat->unwatched("tokenising the dataset");
    const model::DecoderConfig model_config = model::read_decoder_config(inputs.model_dir);
    // A chat format's tokens may add rows (load_job_model resizes the embeddings for them).
    const int64_t vocab_rows = resizes_vocabulary(inputs, model_config) ? inputs.tokenizer.size() : model_config.vocab_size;
    const Splits data = prepare_splits(args, inputs, args.eval_strategy != "no", vocab_rows, rank, log);
    const EvalBatching eval_batching = evaluation_batching(args);
    if (args.eval_strategy != "no")
        check_evaluation_batches(data.eval.size(), eval_batching, rank.world_size, trim(split(args.splits, ',').at(1)));
    if (rank.heartbeat) rank.heartbeat->unwatched("checking the memory estimate");

    // ---- model and adapters: first, will it fit? ----
    {
        const std::string fits = check_memory_fits(run, model_config, rank);
        if (main_rank) log.info(fits);
    }
    // --gradient_checkpointing auto: the last layers whose activations fit are not recomputed.
    int64_t kept_layers = 0;
    if (args.gradient_checkpointing_auto) {
        const KeptLayers kept = layers_kept_in_memory(run, model_config, rank);
        kept_layers = kept.count;
        if (main_rank) log.info(kept.description);
    }
    if (rank.heartbeat) rank.heartbeat->unwatched("loading the model");
    const at::Device device = rank.torch_device();
    if (four_bit) check_compute_dtype(device, four_bit->compute_dtype, "--bnb_4bit_compute_dtype " + args.bnb_4bit_compute_dtype);
    if (args.bf16) check_compute_dtype(device, at::kBFloat16, "--bf16 True");
    // ZeRO-3: the weights stay mapped until each rank copies out its slices (with LoRA of the
    // frozen base, without it of the trainable weights); with 4-bit weights, until each layer is
    // quantised.
    const bool partition_weights = zero_stage == 3;
    // The first conversions start LibTorch's CPU thread pool and kernels; doing one here keeps
    // that start-up out of the loading figure below.
    (void)at::ones({4096}, at::kBFloat16).to(at::kFloat).sum().item<float>();
    reset_peak_resident();
    const int64_t resident_before_load = resident_bytes();
    // LoRA: the frozen base in the type the reference stack runs it in, and under bf16/fp16 the
    // linears in the autocast type (they are only ever multiplied in it: half the bytes, no cast in
    // each forward and recompute, the same products). Loading does it, or (mapped weights)
    // ZeRO-3's slicing and 4-bit quantisation below.
    const zero::SliceTypes types = model_types(run, inputs, model_config);
    if (types.base != at::kFloat)
        check_compute_dtype(device, types.base, "the frozen base's type " + std::string(c10::toString(types.base)) +
                                                    " (--torch_dtype, or DeepSpeed's bf16/fp16 engine)");
    const bool quantizes = four_bit || args.use_8bit_quantization;
    JobModel job_model = load_job_model(inputs, device, partition_weights || quantizes, types,
                                        /*stack_experts_late=*/args.use_peft_lora);
    model::CausalLM& lm = job_model.loaded.model;
    if (!args.use_peft_lora && model::has_quantized_linears(lm))
        fail(ErrorKind::kConfig, inputs.model_dir + " is a bitsandbytes 4-bit or 8-bit checkpoint: its frozen quantised "
                                 "weights train only through adapters (--use_peft_lora True)");
    if (main_rank && args.use_peft_lora)
        log.info(std::string("frozen base weights kept in ") + c10::toString(types.base) + ", the decoder's linears in " +
                 c10::toString(*types.linears) + ", lm_head in " + c10::toString(types.head.value_or(types.base)) +
                 (job_model.resized_to ? " (resized vocabulary: embeddings, head and norms in float32)" : ""));
    if (main_rank && job_model.resized_to)
        log.info("resized the embeddings to " + std::to_string(*job_model.resized_to) + " rows for the chat tokens");
    NamedTensors trainable, idle_adapters;
    peft::LoraConfig lora;
    if (args.use_peft_lora) {
        lora = lora_config(args);
        at::Generator init = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(args.seed));
        if (const std::optional<std::string> ignored = peft::ignored_targets_warning(lm, lora); main_rank && ignored)
            log.warn(*ignored);
        // QDoRA: the magnitudes come from the quantised weights (quantize_layer below).
        peft::attach_lora(lm, lora, init, device, /*magnitudes_later=*/quantizes);
        // A gemma3 checkpoint's vision tower adapters are saved as drawn and never trained: the
        // tower never runs, so they get no gradient and the Trainer's AdamW skips them.
        for (auto& entry : peft::adapter_parameters(lm))
            (entry.first.find(".vision_tower.") != std::string::npos ? idle_adapters : trainable).push_back(entry);
    } else {
        trainable = lm.named_weights();
    }
    for (auto& [name, t] : trainable) t.requires_grad_(true);
    int64_t trainable_count = 0;
    for (const NamedTensors* list : {&trainable, &idle_adapters})
        for (const auto& [name, t] : *list) trainable_count += t.numel();
    const int64_t all_count = model::base_parameter_count(lm);
    // QLoRA: the decoder's linears become 4-bit (under ZeRO-3 as each layer is partitioned,
    // below), or 8-bit, one layer at a time.
    std::optional<quant::FourBitQuantizer> four_bit_quantizer;
    if (four_bit) four_bit_quantizer.emplace(*four_bit, device);
    const model::LinearQuantizer quantize_linears = four_bit ? model::four_bit_linears(*four_bit_quantizer)
                                                    : args.use_8bit_quantization
                                                        ? model::int8_linears(quant::kLlmInt8Threshold, device)
                                                        : model::LinearQuantizer();
    model::QuantizedFootprint quantized_bytes;
    auto quantize_layer = [&](int i) {
        model::DecoderLayerWeights& layer = lm.weights().layers.at(static_cast<size_t>(i));
        model::quantize_layer_linears(layer, i, quantize_linears);
        if (args.use_dora) model::reset_dora_magnitudes(layer);  // QDoRA: from the dequantised weights
        quantized_bytes.add(layer);
    };
    // Each layer made ready as it is partitioned or quantised: its experts stacked, its linears quantised.
    auto prepare_layer = [&](int i) {
        model::stack_experts(lm.weights().layers.at(static_cast<size_t>(i)));
        if (quantizes) quantize_layer(i);
    };
    if (quantizes && !partition_weights) {
        for (int i = 0; i < lm.config().num_layers; ++i) prepare_layer(i);
        model::quantize_model(lm, quantize_linears, types.base, device, types.linears, types.head);  // the rest on the device
    }
    if (embeddings_stay_on_host(args, device, partition_weights, lm, job_model.resized_to.has_value())) {
        at::Tensor& table = lm.weights().embed_tokens;
        table = table.to(at::kCPU).pin_memory();
        if (main_rank)
            log.info("the frozen input embeddings (" + std::to_string(table.nbytes() >> 20) +
                     " MiB) stay in pinned host memory; each micro-batch's rows are copied up (--embeddings_on_host False: "
                     "on the device)");
    }
    if (main_rank && device.is_cuda() && !args.fused_kernels)
        log.info("--fused_kernels False: RMSNorm, SwiGLU and RoPE run as composites of ATen ops, padded and packed "
                 "batches as SDPA with a mask");
    const int64_t layers = lm.config().num_layers;
    const int64_t every = args.checkpoint_every_n_layers;
    const ModelShape shape = model_shape(lm.config(), args.use_peft_lora ? all_count : 0, trainable_count,
                                         recomputed_layer_count(layers, partition_weights, args.gradient_checkpointing, every, kept_layers));
    if (main_rank && args.gradient_checkpointing && every > 1 && !partition_weights)
        log.info("activation checkpointing every " + std::to_string(every) + " layers: " + std::to_string(shape.recomputed_layers) +
                 " of " + std::to_string(layers) + " decoder layers recomputed (indices 0, " + std::to_string(every) +
                 ", ...), the rest keep their activations");
    if (main_rank)
        log.info("trainable params: " + std::to_string(trainable_count) + " || all params: " +
                 std::to_string(all_count + (args.use_peft_lora ? trainable_count : 0)));
    // ZeRO-3: each rank keeps its slice of the frozen weights (LoRA) or of the trained ones (full
    // fine-tuning) and gathers a part while it runs.
    std::optional<zero::PartitionedWeights> partitioned;
    zero::Sharding* partitioned_trainable = nullptr;  // full fine-tuning under ZeRO-3
    if (partition_weights) {
        // DeepSpeed's stage3_param_persistence_threshold; "auto" is 10 x hidden_size, as HF resolves it.
        const int64_t persistence = zero.stage3_param_persistence_threshold
                                        ? static_cast<int64_t>(*zero.stage3_param_persistence_threshold)
                                        : 10 * lm.config().hidden_size;
        const auto which = args.use_peft_lora ? zero::Partitioned::kFrozen : zero::Partitioned::kTrainable;
        partitioned.emplace(lm, rank.comm, rank.rank, rank.world_size, types, device, persistence, prepare_layer,
                            parameter_offload_for(run, offload_param), which);
        partitioned_trainable = partitioned->sharding();
        // DeepSpeed's stage3_prefetch_bucket_size ("auto": 0.9 x hidden_size^2); 0 turns prefetch off.
        if (!zero.stage3_prefetch_bucket_size || *zero.stage3_prefetch_bucket_size > 0)
            partitioned->enable_prefetch(zero.stage3_max_live_parameters);
        if (partitioned_trainable) trainable.clear();  // the whole tensors: only the slices stay
        const std::string kept_whole =
            partitioned_trainable ? "every trained tensor partitioned (stage3_param_persistence_threshold applies to frozen weights)"
                                  : "and " + std::to_string(partitioned->persistent_bytes()) + " bytes of tensors under " +
                                        std::to_string(persistence) + " elements whole (stage3_param_persistence_threshold)";
        log.info("ZeRO-3: this rank holds " + std::to_string(partitioned->slice_bytes()) + " bytes" +
                 (offload_param ? " (offload_param: in " + partitioned->slice_placement() + ")" : std::string()) + " of the " +
                 std::to_string(partitioned->full_bytes()) + " bytes of partitioned " +
                 (partitioned_trainable ? "trainable" : "frozen") + " weights (largest gathered part " +
                 std::to_string(partitioned->largest_part_bytes()) + " bytes), " + kept_whole);
    }
    if (four_bit)
        log.info("4-bit base weights (" + quant::quant_type_name(four_bit->type) + (four_bit->nested ? ", nested" : "") +
                 ", " + c10::toString(four_bit->storage_dtype) + " storage): " + std::to_string(quantized_bytes.quantized) +
                 " bytes with their quantisation state, " + std::to_string(quantized_bytes.bf16) + " bytes in bfloat16");
    if (args.use_8bit_quantization)
        log.info("8-bit base weights (LLM.int8, outlier threshold " + format_number(quant::kLlmInt8Threshold) +
                 "): " + std::to_string(quantized_bytes.quantized) + " bytes with their row scales, " +
                 std::to_string(quantized_bytes.bf16) + " bytes in bfloat16");
    log.info("loading the model raised resident memory by " +
             std::to_string(peak_resident_bytes() - resident_before_load) + " bytes at its peak");
    // The adapter, or (full fine-tuning) a model folder transformers loads, in the trained fp32
    // unless `dtype` says otherwise.
    // Gathered for saving, collective under ZeRO-3 (rank 0 gets them): full fine-tuning's weights
    // from their slices; with LoRA, the embeddings and lm_head when the vocabulary was resized, as
    // PEFT saves them with the adapter then (save_embedding_layers="auto") so that it applies to
    // the base model (rank 0 gets CPU copies).
    auto gathered_for_save = [&]() {
        NamedTensors out;
        if (partitioned_trainable) return partitioned_trainable->whole(partitioned_trainable->local_parameters());
        if (!args.use_peft_lora || !job_model.resized_to) return out;
        if (partitioned) {
            partitioned->acquire(model::WeightResidency::kEmbeddings);
            partitioned->acquire(model::WeightResidency::kHead);
        }
        if (main_rank)
            for (auto& [name, t] : peft::embedding_tensors(lm))
                out.emplace_back(name, t.detach().to(at::kCPU, t.scalar_type(), /*non_blocking=*/false, /*copy=*/true));
        if (partitioned) {
            partitioned->release(model::WeightResidency::kHead);
            partitioned->release(model::WeightResidency::kEmbeddings);
        }
        return out;
    };
    // The weights, and the tokenizer as SFTTrainer saves its processing class beside them (its
    // files made once: the tokenizer does not change during the run).
    const std::vector<std::pair<std::string, std::string>> tokenizer_files = inputs.tokenizer.pretrained_files();
    // Full fine-tuning's model folder: the trained weights under the checkpoint's names, and a
    // gemma3 checkpoint's vision tower and projector as they were.
    auto full_model_weights = [&](const NamedTensors& weights) {
        NamedTensors out = model::checkpoint_weights(lm.config(), weights);
        if (lm.config().vision)
            for (auto& entry : model::tensors_beside_language_model(inputs.model_dir)) out.push_back(std::move(entry));
        return out;
    };
    auto write_weights = [&](const std::string& dir, at::ScalarType dtype, const NamedTensors& full_tensors) {
        if (args.use_peft_lora)
            peft::save_adapter(dir, lm, lora, full_tensors);
        else
            model::save_model_folder(dir, full_model_weights(partitioned_trainable ? full_tensors : trainable), inputs.model_dir,
                                     lm.config().vocab_size, dtype);
        for (const auto& [name, text] : tokenizer_files)
            io::write_file_atomically(dir + "/" + name, [&](std::ostream& out) { out << text; });
    };
    // DeepSpeed's stage3_gather_16bit_weights_on_model_save (accelerate: zero3_save_16bit_model):
    // the final weights in the run's 16-bit type; checkpoints stay fp32 for exact resumes.
    const at::ScalarType final_dtype = zero_stage == 3 && zero.stage3_gather_16bit_weights_on_model_save
                                           ? autocast_dtype(args).value_or(at::kFloat)
                                           : at::kFloat;

    // ---- schedule ----
    BatchPlan plan(data.train.size(), args.per_device_train_batch_size, args.gradient_accumulation_steps, rank.rank,
                   rank.world_size, static_cast<uint64_t>(args.data_seed.value_or(args.seed)), args.dataloader_drop_last,
                   args.train_sampling_strategy == "group_by_length" ? Sampling::kGroupByLength
                   : args.train_sampling_strategy == "sequential"    ? Sampling::kSequential
                                                                     : Sampling::kRandom,
                   row_lengths(data.train));
    const int64_t steps_per_epoch = std::max<int64_t>(1, plan.micro_batches_per_epoch() / args.gradient_accumulation_steps);
    const int64_t total_steps = args.max_steps > 0
                                    ? args.max_steps
                                    : static_cast<int64_t>(std::ceil(args.num_train_epochs * static_cast<double>(steps_per_epoch)));
    const TrainerFlow flow(args, total_steps, steps_per_epoch);
    OptimizerLayout layout = optimizer_layout_for(run, lm.config().hidden_size);
    layout.partitioned = partitioned_trainable;
    // --optim adamw_torch_fused (the Trainer's default) runs torch's fused kernel where ZeRO does not
    // take the optimizer over (DeepSpeed brings its own).
    const OptimizerChoice choice = optimizer_choice_for(run, args, args.optim == "adamw_torch_fused");
    // The Trainer's optimizer would also hold the idle vision tower adapters: its groups differ.
    const bool trainer_resumable = trainer_can_resume(run) && idle_adapters.empty();
    if (main_rank && !choice.description.empty()) log.info(choice.description);
    TrainOptimizer optimizer(trainable, choice, layout, rank);
    if (main_rank && !optimizer.reduction().empty()) log.info("ZeRO stage " + std::to_string(zero_stage) + ": " + optimizer.reduction());
    if (optimizer_offload)
        log.info("offload_optimizer: this rank's optimizer state is in " + optimizer.placement() + "; AdamW steps on the CPU (" +
                 optim::isa_name(optim::best_cpu_isa()) + ", " + std::to_string(at::get_num_threads()) + " threads)");
    std::optional<optim::LossScaler> scaler;  // --fp16: loss scaling
    if (args.fp16) scaler.emplace(loss_scaling_for(run), device);
    // The schedule advances with the optimizer: a step skipped for inf/NaN gradients (fp16) does
    // not move it, as HF Trainer does not step its scheduler then.
    // reduce_lr_on_plateau: the rate evaluations set (stepped after each but --eval_on_start's).
    const std::shared_ptr<optim::PlateauSchedule> plateau = plateau_schedule_for(run, args, choice.learning_rate);
    const optim::LearningRateSchedule schedule =
        plateau ? [plateau](int64_t) { return plateau->rate(); }
                : learning_rate_schedule_for(run, args, total_steps, choice.learning_rate);
    auto learning_rate = [&] { return schedule(optimizer.steps()); };
    const bool next_rate_logged = logs_next_step_rate(run);
    model::ForwardOptions forward;
    forward.training = true;
    forward.generator = dropout_generator(device, static_cast<uint64_t>(args.seed) + 1);
    forward.recompute_layers = args.gradient_checkpointing;
    forward.fused_kernels = args.fused_kernels;
    forward.kept_layers = kept_layers;
    forward.recompute_every = args.checkpoint_every_n_layers;
    forward.neftune_noise_alpha = args.neftune_noise_alpha.value_or(0.0);
    forward.residency = partitioned ? &*partitioned : nullptr;
    forward.router_balance = router_balance_for(args, lm.config());
    if (main_rank && forward.router_balance)
        log.info("MoE load-balancing loss on, weight " + format_number(forward.router_balance->coefficient()) +
                 " (router_aux_loss_coef; TRL's SFTTrainer adds it; --router_aux_loss_coef 0 turns it off)");
    json log_history = json::array();
    BestModelTracker best(args);

    // trainer_state.json's total_flos as Trainer.floating_point_ops counts it: 6 x each micro-batch's
    // input_ids elements (padding included) x the non-embedding parameters (all but embed_tokens';
    // a tied head is that tensor), the adapters' included. Under ZeRO-3 transformers counts its
    // partitioned parameters' empty stand-ins as 0; this counts the model.
    const double flops_parameters =
        static_cast<double>(all_count - lm.config().vocab_size * lm.config().hidden_size + (args.use_peft_lora ? trainable_count : 0));
    RankTotal flos;
    // --include_num_input_tokens_seen: input_ids elements ("all") or real tokens ("non_padding").
    RankTotal input_tokens;
    const bool count_input_tokens = args.include_num_input_tokens_seen != "no";
    // A log entry's num_input_tokens_seen, when counted (collective: every rank logs together).
    auto add_input_tokens = [&](json& entry) {
        if (!count_input_tokens) return;
        input_tokens.store(rank.comm);
        entry["num_input_tokens_seen"] = static_cast<int64_t>(input_tokens.total());
    };
    const json identity = run_identity(args, inputs, lm, rank.world_size, zero_stage);
    // ---- resume: weights, optimizer, generators, history; the sampler replays to the same place ----
    int64_t first_step = 0;
    if (!resume_dir.empty()) {
        CheckpointContents saved = load_checkpoint(resume_dir);
        check_same_run(saved.identity, identity, resume_dir);
        if (partitioned_trainable) restore_partitioned_weights(resume_dir, "model", *partitioned_trainable);
        else restore_weights(resume_dir, args.use_peft_lora ? "adapter_model" : "model", trainable);
        optimizer.load_state(saved.optimizer);
        if (scaler) scaler->load_state(saved.optimizer);
        if (plateau) plateau->load_state(saved.optimizer);
        if (static_cast<size_t>(rank.rank) < saved.dropout_rng_states.size())
            forward.generator->set_state(saved.dropout_rng_states[static_cast<size_t>(rank.rank)]);
        else
            log.warn(resume_dir + " holds no dropout generator state for rank " + std::to_string(rank.rank) +
                     " (saved by fewer ranks): this rank's dropout masks start afresh, as HF does without rng_state_" +
                     std::to_string(rank.rank) + ".pth");
        log_history = saved.trainer_state.value("log_history", json::array());
        best.restore(saved.trainer_state);
        flos.restore(saved.trainer_state.value("total_flos", 0.0));
        input_tokens.restore(saved.trainer_state.value("num_input_tokens_seen", 0.0));
        first_step = saved.global_step;
        for (int64_t i = 0; i < first_step * args.gradient_accumulation_steps; ++i) plan.next_micro_batch();
        if (main_rank) log.info("resumed from " + resume_dir + " at step " + std::to_string(first_step));
    }
    const double session_start_tokens = input_tokens.total();
    recorder.schedule(first_step, total_steps, steps_per_epoch);
    if (main_rank)
        log.info("***** Running training *****  rows " + std::to_string(data.train.size()) + ", epochs " +
                 format_number(args.num_train_epochs) + ", batch per device " +
                 std::to_string(args.per_device_train_batch_size) + ", accumulation " +
                 std::to_string(args.gradient_accumulation_steps) + ", ranks " + std::to_string(rank.world_size) +
                 ", optimization steps " + std::to_string(total_steps));

    // Every rank's dropout generator state, in rank order (collective; rank 0 keeps the result).
    auto generator_states = [&]() {
        const at::Tensor mine = forward.generator->get_state();
        if (!rank.comm) return std::vector<at::Tensor>{mine};
        at::Tensor all = at::empty({rank.world_size * mine.numel()}, mine.options().device(device));
        rank.comm->all_gather(all, mine.to(device));
        return all.cpu().chunk(rank.world_size);
    };

    auto trainer_state = [&](int64_t step) {
        json state{{"global_step", step},
                    {"max_steps", total_steps},
                    {"num_train_epochs", args.num_train_epochs},
                    {"logging_steps", flow.logging_every},
                    {"eval_steps", flow.eval_every},
                    {"save_steps", flow.save_every},
                    {"train_batch_size", args.per_device_train_batch_size},
                    {"epoch", flow.epoch_at(step)},
                    {"total_flos", flos.total()},
                    {"num_input_tokens_seen", static_cast<int64_t>(input_tokens.total())},
                    {"log_history", log_history}};
        best.add_to(state);
        return state;
    };

    // ---- the loop: one iteration = one optimizer step ----
    const std::optional<at::ScalarType> precision = autocast_dtype(args);
    // The loss summed over this rank's micro-batches and steps since the last logging step, kept on
    // the device and read (all-reduced over ranks) only when logging: a read waits for the device.
    at::Tensor logged_loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
    // The summed loss over ranks since the last logging step, read and reset (collective).
    TokenMetrics token_metrics;  // TRL's entropy, mean_token_accuracy, num_tokens
    bool evaluated_last_step = false;
    // TRL's aux_loss metric: the load-balancing loss's mean over the interval's micro-batches and the ranks.
    at::Tensor logged_aux_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
    int64_t logged_aux_count = 0;
    auto take_logged_loss = [&] {
        at::Tensor total = at::stack({logged_loss_sum, logged_aux_sum}).cpu().clone();
        if (rank.comm) rank.comm->all_reduce(total, dist::ReduceOp::kSum);
        logged_loss_sum.zero_();
        logged_aux_sum.zero_();
        return std::pair{total[0].item<double>(), total[1].item<double>()};
    };
    std::optional<double> last_logged_loss;
    double run_loss_total = 0.0;  // every step's loss this run (HF's _total_loss_scalar), for train_loss
    int64_t logged_steps = 0, tokens_seen = 0;
    // This rank's tokens, model FLOPs (train/throughput.h) and seconds in training steps (not in
    // evaluation or saving) since the last logging step, for the logged rates; the progress bar
    // shows the rate since the start.
    int64_t interval_tokens = 0;
    double interval_flops = 0.0, interval_seconds = 0.0;
    std::optional<PeakFlops> peak;
    if (main_rank) {
        peak = device_peak_flops(device, precision.value_or(at::kFloat), rank.peak_tflops);
        log.info("MFU is measured against " + format_number(peak->flops_per_second / 1e12) + " TFLOP/s per rank (" +
                 peak->source + ")");
    }
    // An evaluation after `done` steps (at `epoch`): logged, recorded, and its result returned.
    auto evaluate_after = [&](int64_t done, double epoch) {
        std::optional<GpuMemoryPhase> eval_gpu_memory;
        if (device.is_cuda()) eval_gpu_memory.emplace(device);
        const CpuMemoryPhase eval_memory;
        const std::string at_eval = "evaluation after step " + std::to_string(done) + ": ";
        beat(at_eval + "starting");
        model::ForwardOptions eval_forward;
        eval_forward.residency = forward.residency;
        eval_forward.fused_kernels = forward.fused_kernels;
        eval_forward.router_balance = forward.router_balance;
        if (rank.heartbeat)
            eval_forward.progress = [&beat, at_eval](const std::string& where) { beat(at_eval + where); };
        const auto eval_start = std::chrono::steady_clock::now();
        const EvalResult eval = evaluate(lm, data.eval, eval_batching, pad_id, packs_rows(args, true), device, precision,
                                         eval_forward, args.logging_nan_inf_filter, token_loss_for(args), rank);
        if (main_rank && eval_gpu_memory)
            for (const auto& line : eval_gpu_memory->report("eval")) log.info(line);
        if (main_rank)
            for (const auto& line : eval_memory.report("eval")) log.info(line);
        // The Trainer's evaluate(): the loss and speed over the split (batches of the eval batch
        // size on every rank); eval_perplexity is ftlaunch's, for --metric_for_best_model.
        const double eval_rows = static_cast<double>(data.eval.size());
        json entry = speed_metrics("eval", std::chrono::duration<double>(std::chrono::steady_clock::now() - eval_start).count(),
                                   {eval_rows, std::ceil(eval_rows / (args.per_device_eval_batch_size * rank.world_size)), std::nullopt});
        entry.update({{"eval_loss", eval.loss}, {"eval_perplexity", eval.perplexity}, {"eval_entropy", eval.entropy},
                      {"eval_mean_token_accuracy", eval.mean_token_accuracy},
                      {"eval_num_tokens", token_metrics.num_tokens(rank.comm)}, {"epoch", epoch}, {"step", done}});
        add_input_tokens(entry);
        log_history.push_back(entry);
        recorder.eval({done, epoch, eval.loss, eval.perplexity});
        if (main_rank) log.info("eval " + entry.dump());
        return eval;
    };
    // --eval_on_start: the Trainer's sanity check before the first step (not a best-model candidate).
    if (args.eval_on_start) evaluate_after(first_step, flow.epoch_at(first_step));
    std::vector<int64_t> peak_memory(static_cast<size_t>(rank.world_size), 0);  // bytes per rank, this epoch
    std::vector<int64_t> host_memory(static_cast<size_t>(rank.world_size), 0);  // resident bytes per rank, now
    const auto started = std::chrono::steady_clock::now();
    std::optional<CpuMemoryPhase> epoch_memory;  // the seed's per-epoch memory report
    std::optional<GpuMemoryPhase> epoch_gpu_memory;
    dist::CommVolume step_volume;  // moved by the training steps alone (not evaluation or saving)
    for (int64_t step = first_step; step < total_steps; ++step) {
        const auto step_start = std::chrono::steady_clock::now();
        const dist::CommVolume before = rank.comm_volume ? *rank.comm_volume : dist::CommVolume{};
        if (!epoch_memory) {
            if (device.is_cuda()) epoch_gpu_memory.emplace(device);
            epoch_memory.emplace();
        }
        const std::string at_step = "step " + std::to_string(step + 1) + ": ";
        beat(at_step + "counting the batch's target tokens (all-reduce)");
        std::vector<model::Batch> micro;
        for (int i = 0; i < args.gradient_accumulation_steps; ++i)
            micro.push_back(collate(data.train, plan.next_micro_batch(), pad_id, args.packing, device));
        // transformers >= 4.46: every micro-batch's summed loss is divided by the target tokens of
        // the whole accumulated batch over all ranks, so the curve does not depend on the split.
        at::Tensor counted = at::zeros({1}, at::TensorOptions().dtype(at::kDouble));
        for (const model::Batch& b : micro) counted += static_cast<double>(b.target_positions.size(0));
        if (rank.comm) rank.comm->all_reduce(counted, dist::ReduceOp::kSum);
        model::LossOptions loss_options;
        loss_options.divisor = counted.item<double>();
        loss_options.token_loss = token_loss_for(args);
        // The micro-batches' losses are summed on the device (in double, as a host sum of their
        // values would be) into logged_loss_sum: no wait for the device within the step.
        for (size_t m = 0; m < micro.size(); ++m) {
            const model::Batch& b = micro[m];
            const std::string at_micro_batch =
                at_step + "micro-batch " + std::to_string(m + 1) + "/" + std::to_string(micro.size()) + ": ";
            beat(at_micro_batch + "forward");
            if (rank.heartbeat)  // layer by layer, so a hang names the layer and the gather
                forward.progress = [&beat, at_micro_batch](const std::string& where) { beat(at_micro_batch + where); };
            at::Tensor loss;
            {
                const AutocastScope autocast(precision, device);
                const model::LossResult result = model::causal_lm_loss(lm, b, loss_options, forward);
                loss = result.loss;
                token_metrics.add(result.token_stats, result.counted_tokens, b.real_tokens);
            }
            if (forward.router_balance) {
                // TRL's SFTTrainer: + coefficient · aux / accumulation steps per micro-batch, the
                // ranks' gradients averaged (here summed: / world size too).
                const double weight = forward.router_balance->coefficient() /
                                      static_cast<double>(micro.size() * static_cast<size_t>(rank.world_size));
                const at::Tensor aux = forward.router_balance->loss();
                forward.router_balance->set_loss_weight(weight, scaler ? scaler->scale_tensor() : at::Tensor());
                loss = loss + (aux * weight).to(loss.scalar_type());
                logged_aux_sum += aux.to(at::kDouble);
                ++logged_aux_count;
            }
            beat(at_micro_batch + "backward of the loss");
            if (m + 1 == micro.size()) optimizer.reduce_during_next_backward();  // overlap_comm
            (scaler ? scaler->scaled(loss) : loss).backward();
            forward.progress = nullptr;
            if (rank.during_step) rank.during_step(step + 1);
            // --logging_nan_inf_filter (the Trainer's): a NaN or infinite loss adds the interval's
            // mean so far instead (its sum over 1 + the steps since the last logging step).
            const at::Tensor micro_loss = loss.detach().to(at::kDouble);
            if (args.logging_nan_inf_filter)
                logged_loss_sum = at::where(at::isfinite(micro_loss), logged_loss_sum + micro_loss,
                                            logged_loss_sum + logged_loss_sum / static_cast<double>(1 + logged_steps));
            else
                logged_loss_sum += micro_loss;
            const int64_t tokens = micro[m].real_tokens;
            tokens_seen += tokens;
            interval_tokens += tokens;
            interval_flops += static_cast<double>(tokens) * training_flops_per_token(shape, b.input_ids.size(1));
            flos.add(6.0 * static_cast<double>(b.input_ids.numel()) * flops_parameters);
            if (count_input_tokens)
                input_tokens.add(static_cast<double>(args.include_num_input_tokens_seen == "all" ? b.input_ids.numel() : tokens));
        }
        const bool stop_requested = rank.stop_requested && rank.stop_requested();
        bool stop_now = false;  // a rank got SIGTERM: all save and stop after this step
        beat(at_step + "all-reduce of the stop votes");
        {  // one collective for the stop votes and each rank's peak device memory and resident host
           // memory (the allocator's figures, read without waiting): [stop, peak x world, host x world]
            const int world = rank.world_size;
            at::Tensor stats = at::zeros({1 + 2 * world}, at::TensorOptions().dtype(at::kDouble));
            stats[0] = stop_requested ? 1.0 : 0.0;
            stats[1 + world + rank.rank] = static_cast<double>(resident_bytes());  // before the peak: <= it on CPU
            stats[1 + rank.rank] = static_cast<double>(device_peak_bytes(device));
            if (rank.comm) rank.comm->all_reduce(stats, dist::ReduceOp::kSum);
            stop_now = stats[0].item<double>() > 0;
            for (int r = 0; r < world; ++r) {
                peak_memory[static_cast<size_t>(r)] = stats[1 + r].item<int64_t>();
                host_memory[static_cast<size_t>(r)] = stats[1 + world + r].item<int64_t>();
            }
        }
        beat(at_step + "gradient reduction and optimizer");
        const double applied_rate = learning_rate();
        const auto update = optimizer.step(applied_rate, args.max_grad_norm, scaler ? &*scaler : nullptr);
        const double logged_rate = next_rate_logged ? learning_rate() : applied_rate;
        optimizer.zero_grad();
        if (scaler) {
            scaler->update();
            if (!update.stepped && main_rank)
                log.info("step " + std::to_string(step + 1) + ": gradients overflowed in fp16; skipped the update, loss scale now " +
                         format_number(scaler->scale()));
        }

        const int64_t done = step + 1;
        const bool last = done == total_steps;
        const StepActions actions = flow.after_step(done);
        ++logged_steps;
        double grad_norm = 0.0;
        std::optional<double> logged_aux;
        std::optional<TokenMetrics::Logged> logged_tokens;
        if (actions.log) {  // the reads wait for the device: inside the timed interval
            beat(at_step + "all-reduce of the logged loss");
            const auto [loss_total, aux_total] = take_logged_loss();
            run_loss_total += loss_total;
            last_logged_loss = loss_total / static_cast<double>(logged_steps);
            if (logged_aux_count > 0) logged_aux = aux_total / static_cast<double>(logged_aux_count * rank.world_size);
            logged_aux_count = 0;
            logged_tokens = token_metrics.take(rank.comm);
            grad_norm = update.grad_norm.item<double>();  // HF logs the last step's
        }
        interval_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
        if (rank.comm_volume) step_volume += rank.comm_volume->since(before);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        const double tokens_per_second = static_cast<double>(tokens_seen) * rank.world_size / seconds;
        if (main_rank && rank.progress_bar)
            std::cout << progress_line(done, total_steps, first_step, seconds, last_logged_loss, tokens_per_second)
                      << "\n" << std::flush;
        if (main_rank && rank.status_requested && rank.status_requested())
            std::cout << status_block(done, total_steps, first_step, seconds, last_logged_loss, tokens_per_second, peak_memory)
                      << std::flush;
        const bool epoch_end = flow.epoch_end(done);
        const double epoch = flow.epoch_at(done);
        if (actions.log) {
            json entry = {{"loss", *last_logged_loss},
                          {"grad_norm", grad_norm},
                          {"learning_rate", logged_rate},
                          {"epoch", epoch},
                          {"step", done}};
            if (logged_aux) entry["aux_loss"] = *logged_aux;
            if (logged_tokens)
                entry.update({{"entropy", logged_tokens->entropy},
                              {"mean_token_accuracy", logged_tokens->mean_token_accuracy},
                              {"num_tokens", logged_tokens->num_tokens}});
            if (count_input_tokens) {  // Trainer.log: the count, and this session's token rate
                add_input_tokens(entry);
                entry.update(speed_metrics("train", seconds, {std::nullopt, std::nullopt, input_tokens.total() - session_start_tokens}));
            }
            log_history.push_back(entry);
            StepMetrics metrics{done, epoch, entry["loss"].get<double>(), grad_norm, logged_rate,
                                static_cast<double>(interval_tokens) * rank.world_size / interval_seconds,
                                std::nullopt, peak_memory, host_memory};
            if (peak) metrics.mfu = interval_flops / interval_seconds / peak->flops_per_second;
            recorder.train_step(metrics);
            interval_tokens = 0;
            interval_flops = 0.0;
            interval_seconds = 0.0;
            if (main_rank)
                log.info("step " + std::to_string(done) + "/" + std::to_string(total_steps) + " " + entry.dump() +
                         " tokens/s " + format_number(tokens_per_second));
            logged_steps = 0;
        }
        if (epoch_end) {
            if (main_rank && epoch_gpu_memory)
                for (const auto& line : epoch_gpu_memory->report("train")) log.info(line);
            if (main_rank)
                for (const auto& line : epoch_memory->report("train")) log.info(line);
            epoch_memory.reset();
            epoch_gpu_memory.reset();
        }
        bool new_best = false;
        evaluated_last_step = actions.evaluate;
        if (actions.evaluate) {
            const EvalResult eval = evaluate_after(done, epoch);
            new_best = best.observe(eval, done);
            if (plateau) plateau->observe(*best.metric(eval));
        }
        const bool preempted = stop_now && !last;  // the last step ends the run normally
        if (actions.save || (args.save_strategy == "best" && new_best) || preempted) {
            beat("saving checkpoint-" + std::to_string(done));
            best.saving(done, checkpoint_dir(args.output_dir, done));
            flos.store(rank.comm);                                // collective
            if (count_input_tokens) input_tokens.store(rank.comm);  // collective
            // --save_only_model: the weights alone, but a SIGTERM checkpoint is for resuming.
            const bool model_only = args.save_only_model && !preempted;
            auto optimizer_state = model_only ? NamedTensors{} : optimizer.state();  // collective under ZeRO
            const NamedTensors full_tensors = gathered_for_save();  // collective under ZeRO-3
            std::vector<at::Tensor> rng_states = model_only ? std::vector<at::Tensor>{} : generator_states();  // collective
            if (main_rank) {
                CheckpointContents contents{done, trainer_state(done), std::move(optimizer_state), std::move(rng_states),
                                            identity, model_only};
                if (scaler && !model_only)
                    for (auto& entry : scaler->state()) contents.optimizer.push_back(entry);
                if (plateau && !model_only)
                    for (auto& entry : plateau->state()) contents.optimizer.push_back(entry);
                auto crash_hook = [&] {
                    if (rank.during_checkpoint_save) rank.during_checkpoint_save(done);
                };
                // Beside the weights, the HF Trainer's optimizer.pt and scheduler.pt where it would
                // rebuild the same optimizer, so that it can resume the checkpoint too.
                auto write_model = [&](const std::string& d) {
                    write_weights(d, at::kFloat, full_tensors);
                    if (trainer_resumable && !model_only)
                        write_trainer_resume_files(d, trainable, contents.optimizer,
                                                   {choice.options, choice.learning_rate, learning_rate(), optimizer.steps()});
                };
                const std::string dir =
                    save_checkpoint(args.output_dir, contents, write_model, args.save_total_limit, crash_hook, best.checkpoint());
                log.info("saved " + dir);
                recorder.checkpoint(done, dir);
            }
        }
        if (preempted) {
            if (main_rank)
                log.warn("stopped by SIGTERM after step " + std::to_string(done) + " of " + std::to_string(total_steps) +
                         " with a checkpoint saved; rerun with --resume_from_checkpoint auto to continue (exit code " +
                         std::to_string(kExitPreempted) + ")");
            return kExitPreempted;
        }
    }

    if (main_rank && rank.comm_volume && total_steps > first_step) {
        const double steps = static_cast<double>(total_steps - first_step);
        log.info("communication per training step and rank: " + format_number(step_volume.total() / steps) +
                 " bytes (all-reduce " + format_number(step_volume.all_reduce / steps) + ", all-gather " +
                 format_number(step_volume.all_gather / steps) + ", reduce-scatter " +
                 format_number(step_volume.reduce_scatter / steps) + ", broadcast " +
                 format_number(step_volume.broadcast / steps) + ")");
    }
    if (main_rank && partitioned && (rank.comm || offload_param)) log.info(partitioned->describe_prefetch());

    run_loss_total += take_logged_loss().first;  // collective: the steps since the last log
    flos.store(rank.comm);                 // collective
    RunTotals totals{first_step, total_steps, static_cast<int64_t>(data.train.size()), rank.world_size};
    totals.runtime_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    totals.loss_total = run_loss_total;
    totals.total_flos = flos.total();
    totals.epoch = flow.epoch_at(total_steps);
    json closing = closing_entry(args, totals);
    add_input_tokens(closing);
    // TRL's log() adds the metrics of its mode to every entry: the closing one, when the model is
    // still in training mode (no evaluation after the last step), gets those of the steps since the
    // last training log (collective, on every rank alike).
    if (!evaluated_last_step)
        if (const std::optional<TokenMetrics::Logged> unlogged = token_metrics.take(rank.comm))
            closing.update({{"entropy", unlogged->entropy},
                            {"mean_token_accuracy", unlogged->mean_token_accuracy},
                            {"num_tokens", unlogged->num_tokens}});
    log_history.push_back(closing);
    if (main_rank) log.info("train " + closing.dump());

    // --load_best_model_at_end: the best checkpoint's weights become the final ones (collective).
    if (const std::optional<std::string> best_dir = best.finish(total_steps)) {
        if (partitioned_trainable) restore_partitioned_weights(*best_dir, "model", *partitioned_trainable);
        else restore_weights(*best_dir, args.use_peft_lora ? "adapter_model" : "model", trainable);
        if (main_rank) log.info("loaded the best model from " + *best_dir + " (" + best.describe() + ")");
    }
    // ---- save (rank 0): the final weights and state in output_dir ----
    const NamedTensors full_tensors = gathered_for_save();  // collective under ZeRO-3
    if (!main_rank) return 0;
    if (args.save_total_limit == std::optional<int>(1) && best.checkpoint() && std::filesystem::is_directory(*best.checkpoint())) {
        keep_only_checkpoint(args.output_dir, *best.checkpoint());
        log.info("save_total_limit 1: kept only the best checkpoint, " + *best.checkpoint());
    }
    write_weights(args.output_dir, final_dtype, full_tensors);
    io::write_file_atomically(args.output_dir + "/trainer_state.json",
                              [&](std::ostream& out) { out << trainer_state(total_steps).dump(2) << "\n"; });
    log.info("saved " + std::string(args.use_peft_lora ? "the adapter" : "the weights") + " and trainer_state.json to " +
             args.output_dir);
    return 0;
}

}  // namespace

int run_sft(const config::RunConfig& run, const RankContext& rank, const Log& log, const nlohmann::json& launch_plan) {
    const config::TrainArgs& args = run.train;
    if (args.eval_strategy != "no" && args.eval_strategy != "steps" && args.eval_strategy != "epoch")
        fail(ErrorKind::kConfig, "--eval_strategy: must be no, steps or epoch (got '" + args.eval_strategy + "')");
    if (args.save_strategy != "no" && args.save_strategy != "steps" && args.save_strategy != "epoch" &&
        args.save_strategy != "best")
        fail(ErrorKind::kConfig, "--save_strategy: must be no, steps, epoch or best (got '" + args.save_strategy + "')");
    if (rank.rank == 0) check_output_dir(args.output_dir);
    const std::string resume_dir =
        args.resume_from_checkpoint.empty() || parse_bool(args.resume_from_checkpoint) == std::optional<bool>(false)
            ? std::string()
            : find_checkpoint(args.resume_from_checkpoint, args.output_dir);
    RunRecorder recorder(args, !resume_dir.empty(), rank, log);
    json resolved = run.to_json();
    resolved["launch_plan"] = launch_plan;
    recorder.start(resolved);
    int exit_code = 0;
    try {
        exit_code = train(run, rank, log, resume_dir, recorder);
    } catch (const Error& e) {
        recorder.finish(exit_code_for(e.kind()), e.what());
        throw;
    } catch (const std::exception& e) {
        recorder.finish(1, e.what());
        throw;
    }
    recorder.finish(exit_code, "");
    return exit_code;
}

}  // namespace ftl::train
