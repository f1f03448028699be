// Small exact checks of the training pieces whose Python counterparts are formulas: HF's
// schedules, warmup rounding, the packing layout, split-file naming, the sampler, and the
// tokenised-rows cache, the fp16 loss scaler's GradScaler rules, and the progress a pass reports
// to the watchdog.
#include <cmath>
#include <limits>
#include <filesystem>
#include <fstream>

#include "data/best_fit_packing.h"
#include "data/dataset.h"
#include "data/examples.h"
#include "data/row_cache.h"
#include "model/eager_attention.h"
#include "model/loss.h"
#include "optim/loss_scaler.h"
#include "model/neftune.h"
#include "optim/adamw.h"
#include "optim/schedule.h"
#include "train/autocast.h"
#include "train/batches.h"
#include "train/evaluate.h"
#include "train/progress.h"
#include "train/throughput.h"
#include "zero/flat_partition.h"
#include "zero/memory_estimate.h"
#include "zero/partitioned_weights.h"
#include "catch.h"  // last: replaces c10's CHECK macro

using namespace ftl;

// The rates themselves are checked against transformers and DeepSpeed in tests/parity/test_schedules.py.
TEST_CASE("schedules: the warmup rule, landmarks and the errors naming the flag and key", "[train]") {
    using nlohmann::json;
    auto linear = optim::trainer_schedule("linear", json::object(), 1.0, 2, 10);
    CHECK(linear(0) == 0.0);
    CHECK(linear(1) == 0.5);
    CHECK(linear(6) == 0.5);
    auto restarts = optim::trainer_schedule("cosine_with_restarts", json{{"num_cycles", "2"}}, 1.0, 0, 10);
    CHECK(restarts(5) == Approx(1.0));  // the second cycle starts afresh
    auto floor = optim::trainer_schedule("cosine_with_min_lr", json{{"min_lr", 0.25}}, 2.0, 0, 10);
    CHECK(floor(10) == Approx(0.25));
    CHECK(optim::warmup_steps_for(20, 0, 0.1) == 2);
    CHECK(optim::warmup_steps_for(25, 0, 0.1) == 3);  // ceil
    CHECK(optim::warmup_steps_for(25, 5, 0.1) == 5);
    optim::DeepSpeedSchedule ds;
    ds.warmup_min_lr = 0.1;
    ds.warmup_max_lr = 1.0;
    ds.warmup_num_steps = 4;
    auto warmup = optim::deepspeed_schedule(ds, 1.0);
    CHECK(warmup(0) == 0.1);  // DeepSpeed's first step: the starting rate
    CHECK(warmup(1) == 0.1);  // iteration 0: log(1) = 0
    CHECK(warmup(5) == 1.0);
    FTL_REQUIRE_ERROR(optim::trainer_schedule("polynomial_decay", json::object(), 1.0, 0, 10), ErrorKind::kConfig,
                      "--lr_scheduler_type", "polynomial_decay", "cosine_with_min_lr");
    FTL_REQUIRE_ERROR(optim::trainer_schedule("cosine", json{{"num_cycle", 1}}, 1.0, 0, 10), ErrorKind::kConfig,
                      "--lr_scheduler_kwargs", "num_cycle", "num_cycles");
    FTL_REQUIRE_ERROR(optim::trainer_schedule("cosine_with_min_lr", json::object(), 1.0, 0, 10), ErrorKind::kConfig,
                      "--lr_scheduler_kwargs", "min_lr_rate");
    FTL_REQUIRE_ERROR(optim::trainer_schedule("polynomial", json{{"lr_end", 2.0}}, 1.0, 0, 10), ErrorKind::kConfig,
                      "lr_end", "smaller than --learning_rate");
    FTL_REQUIRE_ERROR(optim::trainer_schedule("warmup_stable_decay", json::object(), 1.0, 0, 10), ErrorKind::kConfig,
                      "num_decay_steps");
    FTL_REQUIRE_ERROR(optim::trainer_schedule("cosine", json{{"num_cycles", "many"}}, 1.0, 0, 10), ErrorKind::kConfig,
                      "num_cycles", "must be a number", "many");
}

TEST_CASE("weight decay: the Trainer's exempt names, and the runs of a slice", "[train]") {
    for (const char* name : {"model.norm.weight", "model.layers.0.input_layernorm.weight", "model.layers.3.self_attn.q_norm.weight",
                             "model.layers.0.self_attn.q_proj.bias", "norm.weight", "encoder.layer_norm.weight", "x.RMSNorm.w"})
        CHECK(optim::exempt_from_weight_decay(name));
    for (const char* name : {"model.layers.0.self_attn.q_proj.weight", "lm_head.weight", "model.embed_tokens.weight",
                             "base_model.model.model.layers.0.mlp.up_proj.lora_A.default.weight", "model.normalizer.weight",
                             "model.abnorm.weight"})
        CHECK_FALSE(optim::exempt_from_weight_decay(name));
    const optim::DecayMask mask({{2, 4}, {6, 7}});
    std::vector<int64_t> runs;  // begin, end, decays (1/0) of each run
    auto record = [&](int64_t b, int64_t e, bool decays) { runs.insert(runs.end(), {b, e, decays ? 1 : 0}); };
    mask.for_each_run(1, 9, record);
    CHECK(runs == std::vector<int64_t>{1, 2, 1, 2, 4, 0, 4, 6, 1, 6, 7, 0, 7, 9, 1});
    runs.clear();
    mask.for_each_run(3, 6, record);
    CHECK(runs == std::vector<int64_t>{3, 4, 0, 4, 6, 1});
    const zero::FlatPartition layout({3, 2, 4}, 1, 2);  // 9 elements padded to 10; rank 1 holds [5, 10)
    const auto ranges = layout.shard_ranges({false, true, true});
    REQUIRE(ranges.size() == 1);
    CHECK(ranges[0].first == 0);
    CHECK(ranges[0].second == 4);
    CHECK(layout.shard_ranges({true, true, false}).empty());
}

TEST_CASE("NEFTune: uniform noise within alpha / sqrt(T * H), rounded through float32 as torch computes it", "[train]") {
    const float m = model::neftune_magnitude(5.0, 128, 64);
    CHECK(m == 5.0f / std::sqrt(8192.0f));
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(3);
    const at::Tensor noisy = model::with_neftune_noise(at::zeros({4, 128, 64}), 5.0, generator);
    const float largest = noisy.abs().max().item<float>();
    CHECK(largest <= m);
    CHECK(largest > 0.99f * m);
    CHECK(std::abs(noisy.mean().item<double>()) < 0.01 * m);
    CHECK(noisy.std().item<double>() == Approx(m / std::sqrt(3.0)).epsilon(0.01));  // uniform's standard deviation
}

TEST_CASE("packing wraps documents into rows, each document on its own positions", "[train]") {
    auto rows = data::pack_examples({{{1, 2, 3}}, {{4, 5, 6, 7, 8}}, {{9}}}, 4);
    REQUIRE(rows.size() == 3);  // ceil(9 / 4)
    CHECK((rows[0].input_ids == std::vector<int32_t>{1, 2, 3, 4}));
    CHECK((rows[0].position_ids == std::vector<int32_t>{0, 1, 2, 0}));
    CHECK((rows[0].labels == std::vector<int32_t>{-100, 2, 3, -100}));
    CHECK((rows[1].input_ids == std::vector<int32_t>{5, 6, 7, 8}));
    CHECK((rows[1].position_ids == std::vector<int32_t>{0, 1, 2, 3}));  // the rest of document 2 restarts
    CHECK((rows[2].input_ids == std::vector<int32_t>{9}));
    // Assistant-only targets: masked tokens are never labels, packed or not.
    const data::Example marked{{1, 2, 3, 4}, {0, 1, 0, 1}};
    CHECK((data::pack_examples({marked}, 8)[0].labels == std::vector<int32_t>{-100, 2, -100, 4}));
    CHECK((data::unpacked_rows({marked}, 8, data::Truncation::kKeepStart, "d")[0].labels ==
           std::vector<int32_t>{-100, 2, -100, 4}));
}

TEST_CASE("without packing, a long example is cut as TRL cuts it and a row without targets is left out", "[train]") {
    const data::Example long_one{{1, 2, 3, 4, 5}, {1, 1, 0, 0, 0}};
    const data::Example masked{{6, 7}, {0, 0}};
    const auto start = data::unpacked_rows({long_one, masked}, 3, data::Truncation::kKeepStart, "d");
    REQUIRE(start.size() == 1);  // the masked example adds no loss
    CHECK((start[0].input_ids == std::vector<int32_t>{1, 2, 3}));
    CHECK((start[0].labels == std::vector<int32_t>{1, 2, -100}));
    CHECK((start[0].position_ids == std::vector<int32_t>{0, 1, 2}));
    // Its last 3 tokens hold no target: no row is left.
    FTL_REQUIRE_ERROR(data::unpacked_rows({long_one, masked}, 3, data::Truncation::kKeepEnd, "d [train]"),
                      ErrorKind::kConfig, "d [train]", "--truncation_mode");
    const auto end = data::unpacked_rows({long_one}, 4, data::Truncation::kKeepEnd, "d");
    CHECK((end[0].input_ids == std::vector<int32_t>{2, 3, 4, 5}));
    CHECK((end[0].labels == std::vector<int32_t>{2, -100, -100, -100}));
}

TEST_CASE("best-fit-decreasing packing gives the rows of TRL's pack_dataset docstring example", "[train]") {
    // trl.data_utils.pack_dataset's example: [[1..5], [6, 7], [8, 9, 10], [11]] into rows of 4.
    const std::vector<data::Example> examples{{{1, 2, 3, 4, 5}, {}, 0}, {{6, 7}, {}, 1}, {{8, 9, 10}, {}, 2}, {{11}, {}, 3}};
    const auto bfd = data::pack_best_fit(examples, 4, data::Overflow::kTruncate, 4, 1);
    REQUIRE(bfd.size() == 3);
    CHECK((bfd[0].input_ids == std::vector<int32_t>{1, 2, 3, 4}));
    CHECK((bfd[1].input_ids == std::vector<int32_t>{8, 9, 10, 11}));
    CHECK((bfd[1].position_ids == std::vector<int32_t>{0, 1, 2, 0}));  // seq_lengths [3, 1]
    CHECK((bfd[1].labels == std::vector<int32_t>{-100, 9, 10, -100}));
    CHECK((bfd[2].input_ids == std::vector<int32_t>{6, 7}));
    const auto split = data::pack_best_fit(examples, 4, data::Overflow::kSplit, 4, 1);
    REQUIRE(split.size() == 3);
    CHECK((split[1].input_ids == std::vector<int32_t>{8, 9, 10, 5}));  // the overflow piece [5] in the best fit
    CHECK((split[2].input_ids == std::vector<int32_t>{6, 7, 11}));
    CHECK((split[2].position_ids == std::vector<int32_t>{0, 1, 0}));
    // Batches of 1000 records are packed apart: record 1000 does not join record 0's row.
    const std::vector<data::Example> apart{{{1, 2}, {}, 0}, {{3}, {}, 1000}};
    CHECK(data::pack_best_fit(apart, 4, data::Overflow::kTruncate, 1001, 1).size() == 2);
    // --dataset_num_proc 2 over 1001 records: shards [0, 501) and [501, 1001), one batch each.
    CHECK(data::pack_best_fit(apart, 4, data::Overflow::kTruncate, 1001, 2).size() == 2);
    const std::vector<data::Example> shard_edge{{{1, 2}, {}, 500}, {{3}, {}, 501}};
    CHECK(data::pack_best_fit(shard_edge, 4, data::Overflow::kTruncate, 1001, 1).size() == 1);
    CHECK(data::pack_best_fit(shard_edge, 4, data::Overflow::kTruncate, 1001, 2).size() == 2);
}

TEST_CASE("collate's host-made targets and counts are those the labels give on the device", "[train]") {
    // Rows of different lengths (right padding), a packed row with a document start, masked labels.
    std::vector<data::Row> rows(3);
    rows[0] = {{5, 6, 7, 8, 9}, {5, 6, -100, 8, 9}, {0, 1, 2, 3, 4}};
    rows[1] = {{1, 2}, {1, 2}, {0, 1}};
    rows[2] = {{3, 4, 5, 6}, {-100, 4, -100, 6}, {0, 1, 0, 1}};
    const std::vector<int64_t> indices{2, 0, 1};
    const model::Batch batch = train::collate(rows, indices, 0, /*packed=*/true, at::kCPU);
    const int64_t t = batch.labels.size(1);
    const at::Tensor shifted = at::cat({batch.labels.narrow(1, 1, t - 1), at::full({3, 1}, -100, at::kLong)}, 1).reshape({-1});
    const at::Tensor expected = (shifted != -100).nonzero().squeeze(1);
    CHECK(at::equal(batch.target_positions, expected));
    CHECK(at::equal(batch.target_ids, shifted.index_select(0, expected)));
    CHECK(batch.real_tokens == batch.attention_mask.sum().item<int64_t>());
    CHECK(batch.padded == std::optional<bool>(true));
    CHECK(batch.target_positions.size(0) == 6);  // 3 of row 0 (its third label masked), 1 of row 1, 2 of row 2
}

TEST_CASE("collate's attention spans allow what the dense mask allows at every real query", "[train]") {
    std::vector<data::Row> rows(3);
    rows[0] = {{5, 6, 7, 8, 9}, {5, 6, 7, 8, 9}, {0, 1, 2, 0, 1}};  // two documents, no padding
    rows[1] = {{1, 2}, {1, 2}, {0, 1}};                              // one document, 3 padding
    rows[2] = {{3, 4, 5, 6}, {3, 4, 5, 6}, {0, 0, 1, 0}};            // three documents, 1 padding
    for (bool packed : {true, false}) {
        CAPTURE(packed);
        const model::Batch batch = train::collate(rows, {0, 1, 2}, 0, packed, at::kCPU);
        const int64_t b = 3, t = batch.input_ids.size(1);
        // Span of each flattened position; key k is visible to query q when both share a span and k <= q.
        const at::Tensor starts = batch.span_starts.to(at::kLong);
        at::Tensor span = at::zeros({b * t}, at::kLong);
        for (int64_t s = 1; s + 1 < starts.size(0); ++s) span.narrow(0, starts[s].item<int64_t>(), b * t - starts[s].item<int64_t>()) += 1;
        span = span.view({b, t});
        const at::Tensor index = at::arange(t);
        const at::Tensor from_spans = (span.unsqueeze(2) == span.unsqueeze(1)).logical_and(index.view({1, 1, t}) <= index.view({1, t, 1}));
        const at::Tensor dense = model::attention_mask_for(batch, std::nullopt).squeeze(1).expand({b, t, t});
        const at::Tensor real_query = batch.attention_mask.to(at::kBool).unsqueeze(2).expand({b, t, t});
        CHECK(at::equal(from_spans.masked_select(real_query), dense.masked_select(real_query)));
        CHECK(starts[-1].item<int64_t>() == b * t);
        CHECK(batch.longest_span == at::diff(starts).max().item<int64_t>());
        // Packed: 2 + 1 + 1 (padding) + 3 + 1 (padding) spans; unpacked: each row's tokens, then its padding.
        CHECK(starts.size(0) - 1 == (packed ? 8 : 5));
    }
}

TEST_CASE("split files are found by HF's naming", "[train]") {
    const auto dir = std::filesystem::temp_directory_path() / "ftl_split_test";
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir / "data");
    for (const char* name : {"data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet",
                             "data/test-00000-of-00001.parquet", "validation.jsonl", "README.md", "trainer.json"})
        std::ofstream(dir / name) << "";
    auto splits = data::find_split_files(dir.string());
    CHECK(splits.at("train").files.size() == 2);
    CHECK(splits.at("test").files.size() == 1);
    CHECK(splits.at("validation").files.size() == 1);
    CHECK(splits.size() == 3);
    FTL_REQUIRE_ERROR(data::read_split(dir.string(), "dev"), ErrorKind::kConfig, "no split 'dev'", "test, train, validation");
    std::filesystem::remove_all(dir);
}

TEST_CASE("the sampler cuts one shuffled order into batches and deals them over ranks", "[train]") {
    train::BatchPlan one(10, 2, 1, 0, 1, 3, false, train::Sampling::kRandom), r0(10, 2, 1, 0, 2, 3, false, train::Sampling::kRandom),
        r1(10, 2, 1, 1, 2, 3, false, train::Sampling::kRandom);
    const auto first = one.next_micro_batch(), second = one.next_micro_batch();
    CHECK(r0.next_micro_batch() == first);  // batch 0 to rank 0, batch 1 to rank 1
    CHECK(r1.next_micro_batch() == second);
    CHECK(r0.micro_batches_per_epoch() == 3);  // 5 batches of 2, the last round topped up
    FTL_REQUIRE_ERROR(train::BatchPlan(10, 0, 1, 0, 1, 3, false, train::Sampling::kRandom), ErrorKind::kConfig, "--per_device_train_batch_size");
    // --dataloader_drop_last: the short last batch of an epoch is left out; the next epoch follows.
    train::BatchPlan kept(10, 4, 1, 0, 1, 3, false, train::Sampling::kRandom), dropped(10, 4, 1, 0, 1, 3, true, train::Sampling::kRandom);
    CHECK(kept.micro_batches_per_epoch() == 3);
    CHECK(dropped.micro_batches_per_epoch() == 2);
    for (int i = 0; i < 2; ++i) CHECK(dropped.next_micro_batch() == kept.next_micro_batch());
    CHECK(kept.next_micro_batch().size() == 2);
    CHECK(dropped.next_micro_batch() == kept.next_micro_batch());  // both start epoch 1
    CHECK(dropped.epoch() == 1);
    FTL_REQUIRE_ERROR(train::BatchPlan(3, 4, 1, 0, 1, 3, true, train::Sampling::kRandom), ErrorKind::kConfig, "--dataloader_drop_last",
                      "3 training rows", "ranks (1)");
    FTL_REQUIRE_ERROR(train::BatchPlan(7, 4, 1, 0, 2, 3, true, train::Sampling::kRandom), ErrorKind::kConfig, "ranks (2)");
    // --train_sampling_strategy sequential: every epoch in dataset order; rank 1 of 2 takes batch 1
    // and the fourth, made from the order's start.
    train::BatchPlan in_order(5, 2, 1, 1, 2, 3, false, train::Sampling::kSequential);
    CHECK((in_order.next_micro_batch() == std::vector<int64_t>{2, 3}));
    CHECK((in_order.next_micro_batch() == std::vector<int64_t>{1, 2}));
    CHECK((in_order.next_micro_batch() == std::vector<int64_t>{2, 3}));
}

TEST_CASE("batches are dealt as accelerate's BatchSamplerShard deals them (even_batches)", "[train]") {
    using Batches = std::vector<std::vector<int64_t>>;
    const auto all_ranks = [](int64_t rows, int batch, int world, bool drop_last) {
        std::vector<Batches> out;
        std::vector<int64_t> order(static_cast<size_t>(rows));
        for (int64_t i = 0; i < rows; ++i) order[static_cast<size_t>(i)] = i;
        for (int r = 0; r < world; ++r) out.push_back(train::shard_batches(order, batch, r, world, drop_last));
        return out;
    };
    // One rank: a plain DataLoader, the last batch shorter (left out with drop_last).
    CHECK((all_ranks(5, 2, 1, false) == std::vector<Batches>{{{0, 1}, {2, 3}, {4}}}));
    CHECK((all_ranks(5, 2, 1, true) == std::vector<Batches>{{{0, 1}, {2, 3}}}));
    // Several: what accelerate 1.15's BatchSamplerShard(BatchSampler(range(rows), batch, drop_last),
    // world, rank, split_batches=False, even_batches=True) yields for each rank.
    CHECK((all_ranks(9, 2, 2, false) == std::vector<Batches>{{{0, 1}, {4, 5}, {8, 0}}, {{2, 3}, {6, 7}, {1, 2}}}));
    CHECK((all_ranks(10, 2, 4, false) ==
           std::vector<Batches>{{{0, 1}, {8, 9}}, {{2, 3}, {0, 1}}, {{4, 5}, {2, 3}}, {{6, 7}, {4, 5}}}));
    CHECK((all_ranks(3, 2, 4, false) == std::vector<Batches>{{{0, 1}}, {{2, 0}}, {{1, 2}}, {{0, 1}}}));
    CHECK((all_ranks(3, 4, 2, false) == std::vector<Batches>{{{0, 1, 2, 0}}, {{1, 2, 0, 1}}}));
    CHECK((all_ranks(12, 3, 2, false) == std::vector<Batches>{{{0, 1, 2}, {6, 7, 8}}, {{3, 4, 5}, {9, 10, 11}}}));
    CHECK((all_ranks(7, 3, 3, false) == std::vector<Batches>{{{0, 1, 2}}, {{3, 4, 5}}, {{6, 0, 1}}}));
    CHECK((all_ranks(24, 5, 2, false) == std::vector<Batches>{{{0, 1, 2, 3, 4}, {10, 11, 12, 13, 14}, {20, 21, 22, 23, 0}},
                                                                {{5, 6, 7, 8, 9}, {15, 16, 17, 18, 19}, {1, 2, 3, 4, 5}}}));
    // drop_last: only rounds of world full batches.
    CHECK((all_ranks(7, 1, 2, true) == std::vector<Batches>{{{0}, {2}, {4}}, {{1}, {3}, {5}}}));
    CHECK((all_ranks(9, 2, 2, true) == std::vector<Batches>{{{0, 1}, {4, 5}}, {{2, 3}, {6, 7}}}));
    CHECK((all_ranks(11, 3, 3, true) == std::vector<Batches>{{{0, 1, 2}}, {{3, 4, 5}}, {{6, 7, 8}}}));
    // Evaluation under --dataloader_drop_last: a split with fewer full batches than ranks is refused
    // before training starts.
    train::EvalBatching dropping;
    dropping.batch_size = 4;
    dropping.drop_last = true;
    train::check_evaluation_batches(8, dropping, 2, "test");
    FTL_REQUIRE_ERROR(train::check_evaluation_batches(7, dropping, 2, "test"), ErrorKind::kConfig,
                      "--dataloader_drop_last", "7 rows of split 'test'", "--per_device_eval_batch_size 4", "ranks (2)");
    dropping.drop_last = false;
    train::check_evaluation_batches(1, dropping, 2, "test");
    // The plan's count is each rank's len(BatchSamplerShard).
    CHECK(train::BatchPlan(7, 1, 1, 0, 2, 3, true, train::Sampling::kRandom).micro_batches_per_epoch() == 3);
    CHECK(train::BatchPlan(24, 5, 1, 1, 2, 3, false, train::Sampling::kRandom).micro_batches_per_epoch() == 3);
}

TEST_CASE("group_by_length: batches of similar lengths, the longest row first", "[train]") {
    // 40 rows, batches of 2 x 2: megabatches of min(40 / 16, 50) = 2 batches (8 rows).
    std::vector<int64_t> lengths;
    for (int64_t i = 0; i < 40; ++i) lengths.push_back((i * 37) % 23 + 1);
    const std::vector<int64_t> order =
        train::length_grouped_order(lengths, 4, at::make_generator<at::CPUGeneratorImpl>(uint64_t{11}));
    std::vector<int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < 40; ++i) CHECK(sorted[static_cast<size_t>(i)] == i);  // a permutation
    const auto length_at = [&](size_t i) { return lengths[static_cast<size_t>(order[i])]; };
    CHECK(length_at(0) == *std::max_element(lengths.begin(), lengths.end()));
    for (size_t i = 2; i < 40; ++i)  // each megabatch descending (the first's head swapped in)
        if (i % 8 != 0) CHECK(length_at(i - 1) >= length_at(i));
    // Epochs draw anew from seed + epoch; sequential evaluation keeps the stored order.
    train::BatchPlan plan(40, 2, 2, 0, 1, 11, false, train::Sampling::kGroupByLength, lengths);
    CHECK((plan.next_micro_batch() == std::vector<int64_t>{order[0], order[1]}));
    CHECK((train::evaluation_order({5, 1, 3}, 2, std::nullopt) == std::vector<int64_t>{0, 1, 2}));
    FTL_REQUIRE_ERROR(train::BatchPlan(40, 2, 2, 0, 1, 11, false, train::Sampling::kGroupByLength, {1, 2}),
                      ErrorKind::kInternal, "one length per row");
}

TEST_CASE("the tokenised-rows cache gives back what was stored, under its key only", "[train]") {
    const std::string dir = std::filesystem::temp_directory_path() / "ftl_row_cache_test";
    std::filesystem::remove_all(dir);
    const auto rows = data::pack_examples({{{5, 6, 7}}, {{8, 9}}, {{10}}}, 4);
    const std::string key = data::Fingerprint().add("a").add("bc").hex();
    CHECK(key != data::Fingerprint().add("ab").add("c").hex());
    CHECK(key.size() == 16);
    const std::string path = dir + "/train-" + key + ".safetensors";
    CHECK(!data::read_row_cache(path, key));
    data::write_row_cache(path, rows, key);
    const auto back = data::read_row_cache(path, key);
    REQUIRE(back);
    REQUIRE(back->size() == rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
        CHECK((*back)[i].input_ids == rows[i].input_ids);
        CHECK((*back)[i].labels == rows[i].labels);
        CHECK((*back)[i].position_ids == rows[i].position_ids);
    }
    FTL_REQUIRE_ERROR(data::read_row_cache(path, "0000000000000000"), ErrorKind::kIo, path, "key 0000000000000000");
    std::ofstream(path, std::ios::binary | std::ios::trunc) << "not a cache";
    CHECK_THROWS(data::read_row_cache(path, key));
    std::filesystem::remove_all(dir);
}

TEST_CASE("the loss scaler skips non-finite steps, backs off, and grows after its interval", "[train]") {
    optim::LossScalerOptions options;
    options.growth_interval = 3;
    optim::LossScaler scaler(options, at::Device(at::kCPU));
    CHECK(scaler.scale() == 65536.0);
    CHECK(scaler.scaled(at::full({}, 2.0f)).item<float>() == 131072.0f);
    std::vector<at::Tensor> grads{at::full({3}, 65536.0f), at::full({2}, -32768.0f)};
    CHECK(scaler.unscale(grads));
    CHECK(grads[0].eq(1.0f).all().item<bool>());
    CHECK(grads[1].eq(-0.5f).all().item<bool>());
    scaler.update();
    CHECK(scaler.scale() == 65536.0);
    std::vector<at::Tensor> overflow{at::full({2}, 1.0f), at::tensor({1.0f, std::numeric_limits<float>::infinity()})};
    CHECK_FALSE(scaler.unscale(overflow));
    scaler.update();
    CHECK(scaler.scale() == 32768.0);  // backoff 0.5, growth count reset
    for (int i = 0; i < 3; ++i) {
        std::vector<at::Tensor> finite{at::ones({2})};
        CHECK(scaler.unscale(finite));
        scaler.update();
    }
    CHECK(scaler.scale() == 65536.0);  // three finite steps in a row: growth 2
    optim::LossScaler restored(options, at::Device(at::kCPU));
    restored.load_state(scaler.state());
    CHECK(restored.scale() == 65536.0);
    FTL_REQUIRE_ERROR(restored.load_state({}), ErrorKind::kConfig, "loss_scale", "--fp16");
}

TEST_CASE("the progress line shows steps, percent, elapsed<remaining, loss and tokens/s", "[train]") {
    CHECK(train::progress_line(25, 100, 0, 10.0, 6.5, 2150.4) ==
          "\r25/100  25%|#####               | 00:10<00:30, loss 6.5, 2150 tok/s");
    // Resumed at step 50: the rate is that of this run's steps.
    CHECK(train::progress_line(60, 100, 50, 3725.0, std::nullopt, 0.0) ==
          "\r60/100  60%|############        | 1:02:05<4:08:20, 0 tok/s");
}

TEST_CASE("the SIGUSR1 status block shows step, ETA, loss, rate and every rank's memory", "[train]") {
    CHECK(train::status_block(25, 100, 0, 10.0, 6.5, 2150.4, {int64_t{3} << 29, int64_t{1} << 30}) ==
          "[ftlaunch status] step 25/100 (25%), elapsed 00:10, ETA 00:30\n"
          "  loss 6.5 (last logged), 2150 tokens/s (all ranks)\n"
          "  peak memory: rank 0 1.50 GiB, rank 1 1.00 GiB\n");
}

TEST_CASE("training FLOPs per token: 4 per frozen and 6 per trainable parameter plus attention", "[train]") {
    const train::ModelShape shape{1000, 10, 2, 8};
    CHECK(train::training_flops_per_token(shape, 16) == 4.0 * 1000 + 6.0 * 10 + 12.0 * 2 * 8 * 16);
    // Recomputed layers (900 of the parameters, adapters included) run their forward again.
    const train::ModelShape recomputed{1000, 10, 2, 8, 900, 2};
    CHECK(train::training_flops_per_token(recomputed, 16) ==
          4.0 * 1000 + 6.0 * 10 + 12.0 * 2 * 8 * 16 + 2.0 * 900 + 4.0 * 2 * 8 * 16);
    // --gradient_checkpointing auto keeping one of the two layers: half of them run again.
    const train::ModelShape half{1000, 10, 2, 8, 450, 1};
    CHECK(train::training_flops_per_token(half, 16) ==
          4.0 * 1000 + 6.0 * 10 + 12.0 * 2 * 8 * 16 + 2.0 * 450 + 4.0 * 1 * 8 * 16);
}

TEST_CASE("the DeepSpeed loss scaler spends its hysteresis, then halves, and grows per window", "[train]") {
    optim::LossScalerOptions options;
    options.policy = optim::LossScalePolicy::kDeepSpeed;
    options.init_scale = 1024.0;
    options.growth_interval = 3;
    options.hysteresis = 2;
    options.min_scale = 256.0;
    optim::LossScaler scaler(options, at::Device(at::kCPU));
    auto step = [&](bool overflow) {
        std::vector<at::Tensor> grads{overflow ? at::full({1}, std::numeric_limits<float>::infinity()) : at::ones({1})};
        CHECK(scaler.unscale(grads) == !overflow);
        scaler.update();
        return scaler.scale();
    };
    // DynamicLossScaler: iteration 0..; growth when (iteration - last overflow) % window == 0.
    CHECK(step(false) == 1024.0);  // it 0: (0 - -1) % 3 != 0
    CHECK(step(false) == 1024.0);  // it 1
    CHECK(step(false) == 2048.0);  // it 2: 3 % 3 == 0
    CHECK(step(true) == 2048.0);   // it 3: overflow, hysteresis 2 -> 1
    CHECK(step(true) == 1024.0);   // it 4: overflow with hysteresis 1: halve
    CHECK(step(false) == 1024.0);  // it 5: (5 - 4) % 3
    CHECK(step(false) == 1024.0);  // it 6
    CHECK(step(false) == 2048.0);  // it 7: 3 % 3 == 0, hysteresis back to 2
    CHECK(step(true) == 2048.0);   // it 8: hysteresis 2 -> 1
    CHECK(step(true) == 1024.0);
    CHECK(step(true) == 512.0);
    CHECK(step(true) == 256.0);  // min_scale
    FTL_REQUIRE_ERROR(step(true), ErrorKind::kConfig, "min_loss_scale", "bf16");
    optim::LossScalerOptions fixed;
    fixed.policy = optim::LossScalePolicy::kStatic;
    fixed.init_scale = 128.0;
    optim::LossScaler constant(fixed, at::Device(at::kCPU));
    std::vector<at::Tensor> overflow{at::full({1}, std::numeric_limits<float>::infinity())};
    CHECK_FALSE(constant.unscale(overflow));
    constant.update();
    CHECK(constant.scale() == 128.0);
}

namespace {

// A random Llama of 2 hidden units, vocabulary 3 and `layers` layers: embeddings 6 parameters,
// each layer 32.
model::CausalLM tiny_decoder(int layers) {
    model::DecoderConfig config;
    config.model_type = "llama";
    config.vocab_size = 3;
    config.hidden_size = 2;
    config.intermediate_size = 2;
    config.num_layers = layers;
    config.num_heads = 1;
    config.num_kv_heads = 1;
    config.head_dim = 2;
    config.layer_window.assign(static_cast<size_t>(layers), std::nullopt);
    config.layer_rope.assign(static_cast<size_t>(layers), true);
    model::DecoderWeights weights;
    auto square = [] { return at::randn({2, 2}); };
    weights.embed_tokens = at::randn({3, 2});
    for (int i = 0; i < layers; ++i) {
        model::DecoderLayerWeights layer;
        layer.input_norm = at::ones({2});
        layer.post_attention_norm = at::ones({2});
        for (model::Linear* linear : {&layer.q_proj, &layer.k_proj, &layer.v_proj, &layer.o_proj, &layer.gate_proj,
                                      &layer.up_proj, &layer.down_proj})
            linear->weight = square();
        weights.layers.push_back(layer);
    }
    weights.final_norm = at::ones({2});
    weights.lm_head = at::randn({3, 2});
    return model::CausalLM(config, weights);
}

// A residency that only counts; every part but the final norm "gathers".
struct CountingResidency : model::WeightResidency {
    int acquired = 0;
    void acquire(int) override { ++acquired; }
    void release(int) override {}
    bool gathers(int part) const override { return part != kFinalNorm; }
};

}  // namespace

TEST_CASE("a training step reports each layer's forward, backward and gather, in order", "[train]") {
    model::CausalLM lm = tiny_decoder(2);
    for (auto& layer : lm.weights().layers) layer.input_norm.requires_grad_(true);
    model::Batch batch;
    batch.input_ids = at::tensor({0, 1, 2}, at::kLong).view({1, 3});
    batch.attention_mask = at::ones({1, 3}, at::kLong);
    batch.labels = batch.input_ids.clone();
    auto reports = [&](model::ForwardOptions options) {
        std::vector<std::string> heard;
        options.progress = [&heard](const std::string& where) { heard.push_back(where); };
        model::causal_lm_loss(lm, batch, {}, options).loss.backward();
        return heard;
    };
    const std::vector<std::string> forward{"forward of the embeddings", "forward of decoder layer 0",
                                           "forward of decoder layer 1", "forward of the final norm",
                                           "forward of lm_head and the loss"};
    std::vector<std::string> plain = forward;
    plain.insert(plain.end(), {"backward of decoder layer 1", "backward of decoder layer 0"});
    CHECK(reports({}) == plain);
    model::ForwardOptions recompute;
    recompute.recompute_layers = true;
    CHECK(reports(recompute) == plain);

    CountingResidency residency;
    model::ForwardOptions sharded;
    sharded.residency = &residency;
    const std::string gathering = ": gathering its weights (ZeRO-3)";
    std::vector<std::string> expected;
    for (const std::string& where : forward) {
        const std::string part = where == "forward of lm_head and the loss" ? "forward of lm_head" : where;
        if (where != "forward of the final norm") expected.push_back(part + gathering);
        expected.push_back(where);
    }
    for (const std::string& layer : {"decoder layer 1", "decoder layer 0"})
        expected.insert(expected.end(), {"backward of " + std::string(layer) + gathering, "backward of " + std::string(layer)});
    CHECK(reports(sharded) == expected);
    CHECK(residency.acquired == 7);  // embeddings, 2 layers, final norm, head; 2 layers again in backward
}

TEST_CASE("ZeRO-3 refuses more ranks than a part has parameters, naming the part", "[zero]") {
    model::CausalLM lm = tiny_decoder(1);
    FTL_REQUIRE_ERROR(zero::PartitionedWeights(lm, nullptr, 0, 8, at::kFloat, at::Device(at::kCPU)), ErrorKind::kConfig,
                      "the embeddings has 6 frozen parameters, fewer than the 8 ranks", "run at most 6 ranks",
                      "stage 2");
    model::CausalLM fits = tiny_decoder(1);
    CHECK_NOTHROW(zero::PartitionedWeights(fits, nullptr, 1, 2, at::kFloat, at::Device(at::kCPU)));  // final norm: 2
    model::CausalLM small_norm = tiny_decoder(1);
    FTL_REQUIRE_ERROR(zero::PartitionedWeights(small_norm, nullptr, 0, 3, at::kFloat, at::Device(at::kCPU)),
                      ErrorKind::kConfig, "the final norm has 2 frozen parameters, fewer than the 3 ranks");
    model::CausalLM persistent = tiny_decoder(1);  // tensors under 3 elements kept whole: nothing too small is split
    CHECK_NOTHROW(zero::PartitionedWeights(persistent, nullptr, 0, 3, at::kFloat, at::Device(at::kCPU), 3));
}

TEST_CASE("under bf16 autocast, frozen linears stored in bf16 give the fp32-stored model's loss and adapter gradients bit for bit", "[train]") {
    // A small random Llama with adapters on every linear (B drawn, not zero, so they act).
    at::manual_seed(11);
    model::DecoderConfig config;
    config.model_type = "llama";
    config.vocab_size = 40;
    config.hidden_size = 32;
    config.intermediate_size = 48;
    config.num_layers = 2;
    config.num_heads = 4;
    config.num_kv_heads = 2;
    config.head_dim = 8;
    config.layer_window.assign(2, std::nullopt);
    config.layer_rope.assign(2, true);
    auto random = [](std::vector<int64_t> shape) { return at::randn(shape) * 0.2; };
    model::DecoderWeights fp32;
    fp32.embed_tokens = random({40, 32});
    for (int i = 0; i < 2; ++i) {
        model::DecoderLayerWeights layer;
        layer.input_norm = 1.0 + random({32});
        layer.post_attention_norm = 1.0 + random({32});
        layer.q_proj.weight = random({32, 32});
        layer.k_proj.weight = random({16, 32});
        layer.v_proj.weight = random({16, 32});
        layer.o_proj.weight = random({32, 32});
        layer.gate_proj.weight = random({48, 32});
        layer.up_proj.weight = random({48, 32});
        layer.down_proj.weight = random({32, 48});
        for (auto& [path, linear] : layer.linears())
            linear->adapter = model::LowRankAdapter{random({4, linear->weight.size(1)}), random({linear->weight.size(0), 4}), 2.0, 0.0};
        fp32.layers.push_back(layer);
    }
    fp32.final_norm = 1.0 + random({32});
    fp32.lm_head = random({40, 32});
    // The same model with its frozen linears (and the untied head) stored in bf16, fresh adapter leaves.
    auto with_linears_in = [&](at::ScalarType dtype) {
        model::DecoderWeights w = fp32;
        for (auto& layer : w.layers)
            for (auto& [path, linear] : layer.linears()) {
                linear->weight = linear->weight.to(dtype);
                linear->adapter->A = linear->adapter->A.clone().requires_grad_(true);
                linear->adapter->B = linear->adapter->B.clone().requires_grad_(true);
            }
        w.lm_head = w.lm_head.to(dtype);
        return model::CausalLM(config, w);
    };
    model::Batch batch;
    batch.input_ids = at::randint(0, 40, {2, 12}, at::kLong);
    batch.attention_mask = at::ones({2, 12}, at::kLong);
    batch.labels = batch.input_ids.clone();
    for (const bool recompute : {false, true}) {
        std::vector<at::Tensor> losses, gradients;
        for (const at::ScalarType stored : {at::kFloat, at::kBFloat16}) {
            model::CausalLM lm = with_linears_in(stored);
            model::ForwardOptions options;
            options.training = true;
            options.recompute_layers = recompute;
            at::Tensor loss;
            {
                const train::AutocastScope autocast(at::kBFloat16, at::Device(at::kCPU));
                loss = model::causal_lm_loss(lm, batch, {}, options).loss;
            }
            loss.backward();
            losses.push_back(loss.detach());
            for (auto& layer : lm.weights().layers)
                for (auto& [path, linear] : layer.linears()) {
                    gradients.push_back(linear->adapter->A.grad());
                    gradients.push_back(linear->adapter->B.grad());
                }
        }
        CHECK(losses[0].item<float>() == losses[1].item<float>());
        const size_t half = gradients.size() / 2;
        for (size_t i = 0; i < half; ++i) CHECK(at::equal(gradients[i], gradients[half + i]));
    }
}

TEST_CASE("the LoRA branch recomputed in backward gives PEFT's composite's output and gradients bit for bit", "[train]") {
    // A bf16 frozen linear and its fp32 adapter under bf16 autocast with dropout 0.3, as PEFT runs
    // it: lora_B(lora_A(dropout(x.to(fp32)))) * scaling, then added to the frozen output.
    at::manual_seed(3);
    model::Linear linear;
    linear.weight = (at::randn({24, 16}) * 0.2).to(at::kBFloat16);
    linear.adapter = model::LowRankAdapter{(at::randn({4, 16}) * 0.3).requires_grad_(true),
                                           (at::randn({24, 4}) * 0.3).requires_grad_(true), 2.0, 0.3};
    const at::Tensor x_value = at::randn({3, 5, 16}).to(at::kBFloat16);
    const at::Tensor upstream = at::randn({3, 5, 24}).to(at::kBFloat16);
    auto run = [&](bool ours) {
        at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(19);
        const model::LowRankAdapter& a = *linear.adapter;
        const at::Tensor x = x_value.clone().requires_grad_(true);
        at::Tensor y;
        {
            const train::AutocastScope autocast(at::kBFloat16, at::Device(at::kCPU));
            if (ours) {
                model::ForwardOptions options;
                options.training = true;
                options.generator = generator;
                y = model::apply_linear(linear, x, options);
            } else {
                at::Tensor input = x.to(at::kFloat);
                input = input * at::empty_like(input).bernoulli_(0.7, generator) / 0.7;
                const at::Tensor base = at::linear(x, linear.weight);
                y = base + (at::linear(at::linear(input, a.A), a.B) * a.scaling).to(base.scalar_type());
            }
        }
        y.backward(upstream);
        std::vector<at::Tensor> out{y.detach(), x.grad(), a.A.grad().clone(), a.B.grad().clone()};
        a.A.mutable_grad().zero_();
        a.B.mutable_grad().zero_();
        return out;
    };
    const std::vector<at::Tensor> ours = run(true), peft = run(false);
    for (size_t i = 0; i < ours.size(); ++i) CHECK(at::equal(ours[i], peft[i]));
}

TEST_CASE("DoRA with dropout: the base output recomputed from the dropped input, as PEFT's DoraLinearLayer", "[train]") {
    // PEFT's composite (lora/dora.py, variants.py) written out: with dropout on, the base output is
    // F.linear(dropout(x), W) without bias; the norm ||W + scaling B A||_row takes no gradient.
    at::manual_seed(5);
    model::Linear linear;
    linear.weight = at::randn({24, 16}) * 0.2;
    linear.bias = at::randn({24}) * 0.1;
    linear.adapter = model::LowRankAdapter{(at::randn({4, 16}) * 0.3).requires_grad_(true),
                                           (at::randn({24, 4}) * 0.3).requires_grad_(true), 2.0, 0.3,
                                           (at::rand({24}) + 0.5).requires_grad_(true)};
    const at::Tensor x_value = at::randn({3, 5, 16});
    const at::Tensor upstream = at::randn({3, 5, 24});
    auto run = [&](bool ours) {
        at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(23);
        const model::LowRankAdapter& a = *linear.adapter;
        const at::Tensor x = x_value.clone().requires_grad_(true);
        at::Tensor y;
        if (ours) {
            model::ForwardOptions options;
            options.training = true;
            options.generator = generator;
            y = model::apply_linear(linear, x, options);
        } else {
            const at::Tensor result = at::linear(x, linear.weight, linear.bias);
            const at::Tensor dropped = x * at::empty_like(x).bernoulli_(0.7, generator) / 0.7;
            const at::Tensor lora_weight = at::linear(at::linear(at::eye(16), a.A), a.B).t();
            const at::Tensor norm =
                at::linalg_vector_norm(linear.weight + a.scaling * lora_weight.detach(), 2, at::IntArrayRef{1}).detach();
            const at::Tensor scale = (a.magnitude / norm).view({1, -1});
            const at::Tensor base_result = at::linear(dropped, linear.weight);
            y = result + ((scale - 1) * base_result + scale * at::linear(at::linear(dropped, a.A), a.B) * a.scaling);
        }
        y.backward(upstream);
        std::vector<at::Tensor> out{y.detach(), x.grad(), a.A.grad().clone(), a.B.grad().clone(), a.magnitude.grad().clone()};
        for (const at::Tensor* t : {&a.A, &a.B, &a.magnitude}) t->mutable_grad().zero_();
        return out;
    };
    const std::vector<at::Tensor> ours = run(true), peft = run(false);
    for (size_t i = 0; i < ours.size(); ++i) CHECK(at::allclose(ours[i], peft[i], 1e-5, 1e-6));
    CHECK(!at::equal(peft[4], at::zeros_like(peft[4])));  // the magnitude trains
}

TEST_CASE("--gradient_checkpointing auto keeps the most last layers whose estimate fits in 90% of the memory", "[zero]") {
    zero::EstimateInputs in;
    in.model.model_type = "llama";
    in.model.vocab_size = 1000;
    in.model.hidden_size = 256;
    in.model.intermediate_size = 512;
    in.model.num_layers = 6;
    in.model.num_heads = 4;
    in.model.num_kv_heads = 4;
    in.model.head_dim = 64;
    in.micro_batch = 2;
    in.sequence_length = 512;
    auto total = [&](int64_t kept) {
        zero::EstimateInputs with = in;
        with.kept_layers = kept;
        return zero::estimate_rank_memory(with, /*on_gpu=*/true).device_total();
    };
    // Each kept layer costs its activations instead of its saved input.
    for (int64_t k = 1; k <= 6; ++k) CHECK(total(k) > total(k - 1));
    CHECK(zero::layers_to_keep(in, true, total(6) * 10) == 6);
    CHECK(zero::layers_to_keep(in, true, total(0)) == 0);  // the 10% margin leaves no room
    const auto room_for_three = static_cast<int64_t>(static_cast<double>(total(3)) / 0.9) + 1;
    CHECK(zero::layers_to_keep(in, true, room_for_three) == 3);
    in.zero_stage = 3;  // ZeRO-3 recomputes every layer
    CHECK(zero::layers_to_keep(in, true, total(6) * 10) == 0);
    in.zero_stage = 0;
    in.gradient_checkpointing = false;
    CHECK(zero::layers_to_keep(in, true, total(6) * 10) == 0);
}

namespace {

// transformers' eager attention with softcap over whole tensors (autograd keeps every
// intermediate): the reference for model::eager_attention_blocks.
at::Tensor eager_capped(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& visible,
                        double scale, double cap) {
    at::Tensor s = at::matmul(q, k.transpose(2, 3)) * scale;
    s = (at::tanh(s / cap) * cap).masked_fill(visible.logical_not(), model::lowest_finite(s.scalar_type()));
    return at::matmul(at::softmax(s, -1, at::kFloat).to(q.scalar_type()), v);
}

}  // namespace

TEST_CASE("capped attention a block of queries at a time equals transformers' eager attention and its gradients", "[model]") {
    at::manual_seed(5);
    const int64_t rows = 2, heads = 3, length = 7, d = 8;
    // Causal, the second row's last two tokens padding (they see themselves only).
    at::Tensor visible = at::ones({length, length}, at::kBool).tril().view({1, 1, length, length}).repeat({rows, 1, 1, 1});
    visible[1].narrow(2, 5, 2).fill_(false);
    for (int64_t i = 5; i < length; ++i) visible[1][0][i][i] = true;
    const double scale = 0.7, cap = 0.5;  // scores of a few units: the cap bends them
    auto draw = [&] { return at::randn({rows, heads, length, d}, at::kDouble); };
    const at::Tensor q64 = draw(), k64 = draw(), v64 = draw();
    const at::Tensor grad_out = at::randn({rows, heads, length, d}, at::kDouble);
    // (output, dq, dk, dv) of `attend` on the inputs cast to `type`, returned in fp64.
    auto run = [&](at::ScalarType type, const auto& attend) {
        auto leaf = [&](const at::Tensor& t) { return t.to(type).clone().requires_grad_(); };  // a copy even in fp64
        at::Tensor q = leaf(q64), k = leaf(k64), v = leaf(v64);
        const at::Tensor out = attend(q, k, v);
        out.backward(grad_out.to(type));
        return std::vector<at::Tensor>{out.detach().to(at::kDouble), q.grad().to(at::kDouble), k.grad().to(at::kDouble),
                                       v.grad().to(at::kDouble)};
    };
    auto blocks_of = [&](int64_t block) {
        return [&, block](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
            return model::eager_attention_blocks(q, k, v, visible, scale, model::EagerScores{cap, {}}, block);
        };
    };
    auto eager = [&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
        return eager_capped(q, k, v, visible, scale, cap);
    };
    const auto exact = run(at::kDouble, eager);
    auto rel = [](const at::Tensor& a, const at::Tensor& b) { return ((a - b).norm() / b.norm()).item<double>(); };
    // fp32: blocks of 3 (three blocks, the last short) and one block equal the eager result.
    const auto eager32 = run(at::kFloat, eager);
    for (int64_t block : {3, 0}) {
        const auto ours = run(at::kFloat, blocks_of(block));
        for (size_t i = 0; i < 4; ++i) CHECK(rel(ours[i], eager32[i]) <= 1e-6);
    }
    // bf16: as close to the fp64 result as transformers' own bf16 rounding (within 1.5x).
    const auto eager16 = run(at::kBFloat16, eager), ours16 = run(at::kBFloat16, blocks_of(3));
    for (size_t i = 0; i < 4; ++i) CHECK(rel(ours16[i], exact[i]) <= 1.5 * rel(eager16[i], exact[i]) + 1e-3);
    // The cap matters here: without it the output differs.
    CHECK(rel(eager_capped(q64, k64, v64, visible, scale, 1e6), exact[0]) > 1e-2);
}

namespace {

// GptOssAttention's eager attention with sinks over whole tensors: the sink logit appended to each
// query's masked scores, the row max subtracted, softmax, the sink's column dropped.
at::Tensor eager_with_sinks(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& visible,
                            double scale, const at::Tensor& sinks) {
    const at::Tensor s =
        (at::matmul(q, k.transpose(2, 3)) * scale).masked_fill(visible.logical_not(), model::lowest_finite(q.scalar_type()));
    at::Tensor combined = at::cat({s, sinks.view({1, -1, 1, 1}).expand({s.size(0), -1, s.size(2), 1})}, -1);
    combined = combined - std::get<0>(combined.max(-1, /*keepdim=*/true));
    return at::matmul(at::softmax(combined, -1).narrow(-1, 0, s.size(-1)).to(v.scalar_type()), v);
}

}  // namespace

TEST_CASE("attention with sinks a block of queries at a time equals gpt-oss's eager attention and its gradients", "[model]") {
    at::manual_seed(9);
    const int64_t rows = 2, heads = 3, length = 7, d = 8;
    at::Tensor visible = at::ones({length, length}, at::kBool).tril().view({1, 1, length, length}).repeat({rows, 1, 1, 1});
    visible[1].narrow(2, 5, 2).fill_(false);  // the second row's last two keys padding
    const double scale = 0.6;
    const at::Tensor q64 = at::randn({rows, heads, length, d}, at::kDouble), k64 = at::randn_like(q64),
                     v64 = at::randn_like(q64), grad_out = at::randn_like(q64);
    const at::Tensor sinks64 = at::randn({heads}, at::kDouble) + 1.0;  // a sink's weight comparable to the keys'
    // (output, dq, dk, dv, dsinks) in fp64 of `attend` on the inputs cast to fp32.
    auto run = [&](const auto& attend) {
        auto leaf = [&](const at::Tensor& t) { return t.to(at::kFloat).clone().requires_grad_(); };
        at::Tensor q = leaf(q64), k = leaf(k64), v = leaf(v64), sinks = leaf(sinks64);
        const at::Tensor out = attend(q, k, v, sinks);
        out.backward(grad_out.to(at::kFloat));
        std::vector<at::Tensor> result{out.detach()};
        for (const at::Tensor* t : {&q, &k, &v, &sinks}) result.push_back(t->grad());
        return result;
    };
    const auto eager = run([&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& sinks) {
        return eager_with_sinks(q, k, v, visible, scale, sinks);
    });
    auto rel = [](const at::Tensor& a, const at::Tensor& b) { return ((a - b).norm() / b.norm()).item<double>(); };
    for (int64_t block : {3, 0}) {
        const auto ours = run([&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& sinks) {
            return model::eager_attention_blocks(q, k, v, visible, scale, model::EagerScores{std::nullopt, sinks}, block);
        });
        for (size_t i = 0; i < 5; ++i) CHECK(rel(ours[i], eager[i]) <= 1e-6);
    }
    // The sinks matter: without them the output differs.
    const at::Tensor no_sinks = eager_with_sinks(q64, k64, v64, visible, scale, at::full({heads}, -1e4, at::kDouble));
    CHECK(rel(no_sinks, eager[0].to(at::kDouble)) > 1e-2);
}
