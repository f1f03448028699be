// Packing by best-fit decreasing: TRL's "bfd" and "bfd_split" strategies (SFTConfig's
// packing_strategy; trl.data_utils.pack_dataset, TRL 1.16), for --packing True
// --packing_strategy bfd|bfd_split.
//
// TRL packs each batch of 1000 records on its own (datasets.Dataset.map's default batch_size; with
// SFTConfig's dataset_num_proc, the split is first cut into that many contiguous shards, as
// datasets.Dataset.shard(contiguous=True) cuts it, and each shard's batches count from its start):
// within a batch, every example is cut to max_seq_len ("bfd": the rest is dropped) or into pieces
// of max_seq_len with a shorter last one ("bfd_split": each piece a document of its own); the
// pieces, longest first (ties in record order), each go into the open row with the least room
// that still holds it (of rows with equal room, the one that reached it first), else into a new
// row. Rows come out in the order they were opened, their documents in the order they went in.
// A row is at most max_seq_len tokens and is not padded; each document starts at position 0 and
// its first token is not a target (TRL's padding-free collator: labels at position 0 are -100).
#pragma once

#include <cstdint>
#include <vector>

#include "data/examples.h"

namespace ftl::data {

// What happens to an example longer than max_seq_len.
enum class Overflow {
    kTruncate,  // "bfd": its first max_seq_len tokens only
    kSplit,     // "bfd_split": pieces of max_seq_len tokens, the last one shorter
};

// `records`: how many records the split has (empty ones included: they count in the batches);
// `processes`: --dataset_num_proc (1 without it).
std::vector<Row> pack_best_fit(const std::vector<Example>& examples, int64_t max_seq_len, Overflow overflow,
                               int64_t records, int processes);

}  // namespace ftl::data
