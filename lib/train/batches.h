// Which rows each rank trains on, and how rows become a model::Batch.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "data/examples.h"
#include "model/batch.h"

namespace ftl::train {

// --train_sampling_strategy: how an epoch orders the training rows.
enum class Sampling { kRandom, kSequential, kGroupByLength };

// transformers' get_length_grouped_indices(lengths, batch_size, generator): torch.randperm(n,
// generator) cut into megabatches of mega x batch_size rows (mega = min(n / (4 batch_size), 50),
// at least 1), each sorted by length, longest first (ties keep their order: Python's stable
// sort), then the first megabatch's first row swapped with the longest row of all (the first
// megabatch holding it), so that a batch that runs out of memory does so at the start.
std::vector<int64_t> length_grouped_order(const std::vector<int64_t>& lengths, int64_t batch_size, at::Generator generator);

// The sampler. Epoch e shuffles the rows with torch.randperm(n, generator seeded seed + e)
// (reproducible in Python with the same call; the Trainer's SeedableRandomSampler draws it); kSequential
// keeps them in order; kGroupByLength groups rows of similar `lengths` (one per row) with
// length_grouped_order over batches of per_device x accumulation rows (transformers'
// LengthGroupedSampler), its permutation drawn from the same seed + e generator (the Trainer's
// draws from torch's global generator, whose state depends on everything the run drew before).
// The epoch's order is cut into micro-batches of per_device rows and dealt over the ranks by
// shard_batches, as the Trainer's accelerate-prepared DataLoader deals them (with `drop_last`,
// --dataloader_drop_last, the short last batch is left out, as a DataLoader leaves it). Epochs
// follow each other without end; the trainer decides when to stop.
class BatchPlan {
public:
    BatchPlan(size_t rows, int per_device, int accumulation, int rank, int world_size, uint64_t seed, bool drop_last,
              Sampling sampling, std::vector<int64_t> lengths = {});
    int64_t micro_batches_per_epoch() const;
    std::vector<int64_t> next_micro_batch();
    int64_t epoch() const { return epoch_; }

private:
    void start_epoch();
    size_t rows_;
    int per_device_, accumulation_, rank_, world_size_;
    bool drop_last_;
    Sampling sampling_;
    std::vector<int64_t> lengths_;
    uint64_t seed_;
    int64_t epoch_ = -1;
    std::vector<std::vector<int64_t>> batches_;  // this rank's micro-batches of the current epoch
    size_t cursor_ = 0;
};

// Each row's token count (what LengthGroupedSampler measures: len(input_ids)).
std::vector<int64_t> row_lengths(const std::vector<data::Row>& rows);

// The order the Trainer's eval DataLoader takes a split's rows in: as stored (a SequentialSampler),
// or with `group_seed` (--train_sampling_strategy group_by_length; the seed is --data_seed or
// --seed) length_grouped_order over batches of `batch_size` with a generator seeded group_seed,
// as the Trainer's evaluation LengthGroupedSampler draws it.
std::vector<int64_t> evaluation_order(const std::vector<int64_t>& lengths, int batch_size,
                                      std::optional<uint64_t> group_seed);

// How many batches each rank takes of `rows` rows under shard_batches (len(BatchSamplerShard), or
// a plain DataLoader's length on one rank).
int64_t shard_count(int64_t rows, int batch_size, int world_size, bool drop_last);

// The batches rank `rank` of `world_size` takes from `order` cut into batches of `batch_size`,
// as the Trainer's DataLoader yields them (training and evaluation alike). One rank: consecutive
// batches, the last one shorter (left out with `drop_last`). Several: accelerate's
// BatchSamplerShard(split_batches=False, even_batches=True), what Accelerator.prepare makes of the
// DataLoader: batch g goes to rank g % world_size; with `drop_last` only rounds of world_size full
// batches are dealt, otherwise the last round is completed with the order's first rows (the first
// world_size x batch_size, repeated when fewer), so every rank runs the same number of batches.
std::vector<std::vector<int64_t>> shard_batches(const std::vector<int64_t>& order, int batch_size, int rank,
                                                int world_size, bool drop_last);

// Rows -> [B, T] tensors, right-padded to the longest row (padding: pad_id, label -100, mask 0),
// with the host-made facts model::Batch describes (targets, padding, attention spans).
model::Batch collate(const std::vector<data::Row>& rows, const std::vector<int64_t>& indices, int32_t pad_id,
                     bool packed, const at::Device& device);

// Token-id rows -> ids [B, L] (int64) and attention mask [B, L] (1 = token, 0 = padding) on the
// CPU, padded with pad_id to the longest row: on the right, or on the left (a decoder-only model's
// prompts for generation, as transformers pads them).
struct PaddedRows {
    at::Tensor ids, mask;
};
PaddedRows pad_rows(const std::vector<const std::vector<int32_t>*>& rows, int32_t pad_id, bool left);

// torch.nn.utils.clip_grad_norm_: the L2 norm over all gradients; when max_norm > 0, every
// gradient is scaled by min(1, max_norm / (norm + 1e-6)). Returns the norm before clipping, a
// 0-dim tensor on the gradients' device (reading it waits for the device).
at::Tensor clip_grad_norm(std::vector<at::Tensor>& grads, double max_norm);

}  // namespace ftl::train
