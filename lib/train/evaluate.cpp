#include "train/evaluate.h"

#include <ATen/core/grad_mode.h>

#include <cmath>

#include <iostream>
#include <nlohmann/json.hpp>

#include "model/loss.h"
#include "peft/lora.h"
#include "train/autocast.h"
#include "train/batches.h"
#include "train/inputs.h"
#include "util/strings.h"

namespace ftl::train {

EvalResult evaluate(const model::CausalLM& model, const std::vector<data::Row>& rows, int batch_size, int32_t pad_id,
                    bool packed, const at::Device& device, std::optional<at::ScalarType> autocast,
                    const model::ForwardOptions& options, const RankContext& rank) {
    at::NoGradGuard no_grad;
    std::vector<int64_t> mine;
    for (size_t i = static_cast<size_t>(rank.rank); i < rows.size(); i += static_cast<size_t>(rank.world_size))
        mine.push_back(static_cast<int64_t>(i));
    // Under ZeRO-3 every forward gathers weights with all ranks, so every rank runs as many batches
    // as rank 0 (which has the most rows); a rank out of rows repeats its first and counts nothing.
    const size_t batch = static_cast<size_t>(batch_size);
    const size_t most_rows = (rows.size() + static_cast<size_t>(rank.world_size) - 1) / static_cast<size_t>(rank.world_size);
    const size_t batches = options.residency ? (most_rows + batch - 1) / batch : (mine.size() + batch - 1) / batch;
    model::ForwardOptions forward;
    forward.residency = options.residency;
    forward.progress = options.progress;
    forward.fused_kernels = options.fused_kernels;
    // The loss summed on the device (read once at the end: a read waits for the device) and the
    // targets counted on the host.
    at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
    double targets = 0.0;
    for (size_t b = 0; b < batches; ++b) {
        const size_t begin = b * batch;
        const bool counted = begin < mine.size();
        const size_t end = counted ? std::min(mine.size(), begin + batch) : 0;
        const std::vector<int64_t> indices = counted ? std::vector<int64_t>(mine.begin() + static_cast<long>(begin),
                                                                            mine.begin() + static_cast<long>(end))
                                                     : std::vector<int64_t>{0};
        model::Batch inputs = collate(rows, indices, pad_id, packed, device);
        model::LossOptions sum;
        sum.divisor = 1.0;
        const AutocastScope precision(autocast, device);
        model::LossResult result = model::causal_lm_loss(model, inputs, sum, forward);
        if (!counted) continue;
        loss_sum += result.loss.detach().to(at::kDouble);
        targets += static_cast<double>(result.counted_tokens);
    }
    at::Tensor totals = at::stack({loss_sum.cpu(), at::scalar_tensor(targets, at::kDouble)});  // [loss sum, targets]
    if (rank.comm) rank.comm->all_reduce(totals, dist::ReduceOp::kSum);
    EvalResult out;
    out.tokens = static_cast<int64_t>(totals[1].item<double>());
    out.loss = out.tokens ? totals[0].item<double>() / static_cast<double>(out.tokens) : 0.0;
    out.perplexity = std::exp(out.loss);
    return out;
}

void run_evaluate(const config::RunConfig& run, const RankContext& rank) {
    const config::TrainArgs& args = run.train;
    const JobInputs inputs = resolve_job_inputs(args);
    const std::vector<std::string> splits = split(args.splits, ',');
    const std::string split_name = trim(splits.back());
    const std::vector<data::Row> rows = split_rows(args, inputs, split_name);
    const at::Device device = rank.torch_device();
    JobModel job_model = load_job_model(inputs, device);
    if (!args.adapter_path.empty()) peft::load_adapter(args.adapter_path, job_model.loaded.model);
    model::ForwardOptions forward;
    forward.fused_kernels = args.fused_kernels;
    const EvalResult result = evaluate(job_model.loaded.model, rows, args.per_device_eval_batch_size,
                                       inputs.tokenizer.pad_id().value_or(0), args.packing, device, autocast_dtype(args), forward, rank);
    if (rank.rank == 0)
        std::cout << nlohmann::json{{"split", split_name},
                                    {"eval_loss", result.loss},
                                    {"eval_perplexity", result.perplexity},
                                    {"eval_tokens", result.tokens}}
                         .dump()
                  << std::endl;
}

}  // namespace ftl::train
