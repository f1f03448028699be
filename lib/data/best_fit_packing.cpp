#include "data/best_fit_packing.h"

#include <algorithm>
#include <deque>
#include <map>

namespace ftl::data {
namespace {

// Records per packing batch: datasets.Dataset.map's default batch_size, with which TRL's
// pack_dataset maps its packing function over the dataset.
constexpr int64_t kRecordsPerBatch = 1000;

// A document of a row: tokens [begin, begin + length) of one example.
struct Piece {
    size_t example;
    int64_t begin;
    int64_t length;
};

// Rows for examples [first, end), one packing batch, appended to `rows`.
void pack_batch(const std::vector<Example>& examples, size_t first, size_t end, int64_t max_seq_len,
                Overflow overflow, std::vector<Row>& rows) {
    std::vector<Piece> pieces;
    for (size_t e = first; e < end; ++e) {
        const int64_t length = static_cast<int64_t>(examples[e].ids.size());
        if (overflow == Overflow::kTruncate) {
            pieces.push_back({e, 0, std::min(length, max_seq_len)});
            continue;
        }
        for (int64_t begin = 0; begin < length; begin += max_seq_len)
            pieces.push_back({e, begin, std::min(max_seq_len, length - begin)});
    }
    std::stable_sort(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& b) { return a.length > b.length; });

    // bins[b]: the pieces of row b; open: room left (> 0) -> the rows with that room, in the
    // order they came to have it.
    std::vector<std::vector<size_t>> bins;
    std::map<int64_t, std::deque<size_t>> open;
    for (size_t p = 0; p < pieces.size(); ++p) {
        const int64_t length = pieces[p].length;
        size_t bin = bins.size();
        int64_t room = max_seq_len;
        if (auto best = open.lower_bound(length); best != open.end()) {
            room = best->first;
            bin = best->second.front();
            best->second.pop_front();
            if (best->second.empty()) open.erase(best);
        } else {
            bins.emplace_back();
        }
        bins[bin].push_back(p);
        if (room - length > 0) open[room - length].push_back(bin);
    }

    for (const auto& bin : bins) {
        Row& row = rows.emplace_back();
        for (const size_t p : bin) {
            const Piece& piece = pieces[p];
            const Example& example = examples[piece.example];
            for (int64_t k = 0; k < piece.length; ++k) {
                const size_t i = static_cast<size_t>(piece.begin + k);
                const bool target = k > 0 && is_target(example, i);
                row.input_ids.push_back(example.ids[i]);
                row.labels.push_back(target ? example.ids[i] : -100);
                row.position_ids.push_back(static_cast<int32_t>(k));
            }
        }
    }
}

}  // namespace

std::vector<Row> pack_best_fit(const std::vector<Example>& examples, int64_t max_seq_len, Overflow overflow,
                               int64_t records, int processes) {
    // datasets.Dataset.map(num_proc): at most one shard per record; shard k holds records
    // [k * size + min(k, left), ...) with `left` shards one record larger.
    const int64_t shards = std::max<int64_t>(1, std::min<int64_t>(processes, records));
    const int64_t size = records / shards, left = records % shards;
    auto batch_of = [&](int64_t record) {
        int64_t shard = std::min(record / (size + 1), left);  // among the larger shards
        if (shard == left) shard = left + (record - left * (size + 1)) / size;
        const int64_t start = shard * size + std::min(shard, left);
        return std::pair{shard, (record - start) / kRecordsPerBatch};
    };
    std::vector<Row> rows;
    size_t first = 0;
    while (first < examples.size()) {
        const auto batch = batch_of(examples[first].record);
        size_t end = first;
        while (end < examples.size() && batch_of(examples[end].record) == batch) ++end;
        pack_batch(examples, first, end, max_seq_len, overflow, rows);
        first = end;
    }
    return rows;
}

}  // namespace ftl::data
