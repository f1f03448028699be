// ZeRO-Offload's pieces: the CPU AdamW's vector forms against its scalar form and against
// optim::adamw_update (ATen ops), on random shards of awkward lengths and unaligned starts; the
// asynchronous O_DIRECT file engine and the NVMe swap of the optimizer state.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "io/direct_file.h"
#include "optim/cpu_adamw.h"
#include "zero/offloaded_adamw_state.h"
#include "zero/slice_swap.h"
#include "catch.h"  // last: replaces c10's CHECK macro

using namespace ftl;

namespace {

// Largest |a - b| / max(|b|, 1e-30) over the elements.
double worst_relative(const at::Tensor& a, const at::Tensor& b) {
    return ((a - b).abs() / b.abs().clamp_min(1e-30)).max().item<double>();
}

// ||a - b|| / ||b|| (2-norms, in double).
double normwise_relative(const at::Tensor& a, const at::Tensor& b) {
    const at::Tensor a64 = a.to(at::kDouble), b64 = b.to(at::kDouble);
    return ((a64 - b64).norm() / b64.norm()).item<double>();
}

// Three AdamW steps of `state` (made from master0) against cpu_adamw_update on one piece: the
// updated master after each step, then the master and moments read back, bit for bit.
void check_steps_as_one_piece(zero::OffloadedAdamWState& state, const at::Tensor& master0,
                              const optim::AdamWOptions& options) {
    const int64_t n = master0.numel();
    at::Tensor p = master0.clone(), m = at::zeros({n}), v = at::zeros({n});
    at::Tensor updated = at::full({n}, std::nanf(""));
    for (int64_t step = 1; step <= 3; ++step) {
        const at::Tensor grad = at::randn({n});
        state.step(grad, updated, step, 1e-2, options);
        optim::cpu_adamw_update(p, grad, m, v, step, 1e-2, options);
        CHECK(at::equal(updated, p));
    }
    const auto read = state.read_all();
    CHECK(at::equal(read[zero::OffloadedAdamWState::kMaster], p));
    CHECK(at::equal(read[zero::OffloadedAdamWState::kExpAvg], m));
    CHECK(at::equal(read[zero::OffloadedAdamWState::kExpAvgSq], v));
}

}  // namespace

TEST_CASE("the CPU AdamW's vector forms equal its scalar form and ATen's update", "[offload]") {
    at::manual_seed(7);
    const optim::AdamWOptions options{0.9, 0.999, 1e-8, 0.01};
    std::vector<optim::CpuIsa> forms{optim::CpuIsa::kScalar};
    for (optim::CpuIsa isa : {optim::CpuIsa::kAvx2, optim::CpuIsa::kAvx512})
        if (optim::cpu_supports(isa)) forms.push_back(isa);
    INFO("forms this CPU runs: " << forms.size());
    for (int64_t n : {1, 7, 8, 15, 16, 17, 31, 63, 100'003}) {
        for (int64_t offset : {0, 1, 3}) {  // start 4 or 12 bytes past the allocation: unaligned
            // Buffers [offset + n]; the update runs on [offset, offset + n).
            const at::Tensor p0 = at::randn({offset + n}), g = at::randn({offset + n}) * 1e-2;
            const at::Tensor m0 = at::randn({offset + n}) * 1e-3, v0 = at::rand({offset + n}) * 1e-5;
            auto run = [&](optim::CpuIsa isa) {
                at::Tensor p = p0.clone(), m = m0.clone(), v = v0.clone();
                for (int64_t step = 1; step <= 3; ++step)
                    optim::cpu_adamw_update(p.data_ptr<float>() + offset, g.data_ptr<float>() + offset,
                                            m.data_ptr<float>() + offset, v.data_ptr<float>() + offset, n, step, 1e-3,
                                            options, isa);
                return std::vector<at::Tensor>{p.narrow(0, offset, n), m.narrow(0, offset, n), v.narrow(0, offset, n)};
            };
            const auto scalar = run(optim::CpuIsa::kScalar);
            for (optim::CpuIsa isa : forms) {
                const auto vector = run(isa);
                for (size_t k = 0; k < 3; ++k) {
                    INFO(optim::isa_name(isa) << " n=" << n << " offset=" << offset << " tensor " << k);
                    CHECK(worst_relative(vector[k], scalar[k]) <= 1e-6);
                    CHECK(at::equal(vector[k], scalar[k]));  // separately rounded: bit for bit
                }
            }
            at::Tensor p = p0.narrow(0, offset, n).clone(), m = m0.narrow(0, offset, n).clone();
            at::Tensor v = v0.narrow(0, offset, n).clone();
            const at::Tensor grad = g.narrow(0, offset, n);
            for (int64_t step = 1; step <= 3; ++step) optim::adamw_update(p, grad, m, v, step, 1e-3, options);
            // ATen's vector kernels may fuse a multiply-add (its lerp does), so an element that
            // cancels to near zero (m + w (g - m)) can differ by a large fraction of itself: the
            // comparison is over the whole tensor. Measured: at most 1.1e-7 here (AVX2 machine).
            INFO("against optim::adamw_update (ATen), n=" << n << " offset=" << offset);
            CHECK(normwise_relative(scalar[0], p) <= 1e-6);
            CHECK(normwise_relative(scalar[1], m) <= 1e-6);
            CHECK(normwise_relative(scalar[2], v) <= 1e-6);
        }
    }
}

TEST_CASE("the threaded CPU AdamW equals the one-thread form", "[offload]") {
    at::manual_seed(8);
    const optim::AdamWOptions options{0.8, 0.99, 1e-6, 0.1};
    const int64_t n = (int64_t{1} << 18) + 5;  // several tasks of 64 Ki elements and a tail
    const at::Tensor p0 = at::randn({n}), g = at::randn({n}), m0 = at::randn({n}), v0 = at::rand({n});
    at::Tensor p = p0.clone(), m = m0.clone(), v = v0.clone();
    optim::cpu_adamw_update(p, g, m, v, 5, 2e-3, options);
    at::Tensor p1 = p0.clone(), m1 = m0.clone(), v1 = v0.clone();
    optim::cpu_adamw_update(p1.data_ptr<float>(), g.data_ptr<float>(), m1.data_ptr<float>(), v1.data_ptr<float>(), n, 5,
                            2e-3, options, optim::CpuIsa::kScalar);
    CHECK(at::equal(p, p1));
    CHECK(at::equal(m, m1));
    CHECK(at::equal(v, v1));
}

namespace {

// A fresh folder under the system's temp folder, removed at the end of the test.
struct TempFolder {
    std::string path;
    TempFolder() {
        std::string pattern = (std::filesystem::temp_directory_path() / "ftl-offload-XXXXXX").string();
        path = mkdtemp(pattern.data());
    }
    ~TempFolder() { std::filesystem::remove_all(path); }
};

}  // namespace

TEST_CASE("the O_DIRECT engine writes and reads back whatever its pieces and threads", "[offload]") {
    const TempFolder folder;
    const uint64_t bytes = 3 * (1 << 20) + 3 * 4096;  // not a whole number of blocks
    io::AlignedBuffer out(bytes), in(bytes);
    auto* data = static_cast<unsigned char*>(out.data());
    for (uint64_t i = 0; i < bytes; ++i) data[i] = static_cast<unsigned char>((i * 2654435761u) >> 13);
    for (bool single_submit : {false, true}) {
        for (int threads : {1, 3}) {
            io::AioOptions options;
            options.block_size = 64 * 1024;
            options.queue_depth = 4;
            options.thread_count = threads;
            options.single_submit = single_submit;
            const io::DirectFile file(folder.path + "/swap", bytes + 4096, options, "test swap file");
            INFO("engine " << file.engine() << ", threads " << threads << ", single_submit " << single_submit);
            file.write(out.data(), bytes, 4096);
            std::memset(in.data(), 0, bytes);
            file.read_async(in.data(), bytes, 4096).get();
            CHECK(std::memcmp(in.data(), out.data(), bytes) == 0);
            FTL_REQUIRE_ERROR(file.read(in.data(), bytes, 8192), ErrorKind::kInternal, "past the end");
            FTL_REQUIRE_ERROR(file.read(static_cast<char*>(in.data()) + 8, 4096, 0), ErrorKind::kInternal, "aligned");
        }
    }
    io::AioOptions odd;
    odd.block_size = 1000;
    FTL_REQUIRE_ERROR(io::DirectFile(folder.path + "/odd", 4096, odd, "test swap file"), ErrorKind::kConfig,
                      "aio.block_size 1000", "multiple of 4096");
    FTL_REQUIRE_ERROR(io::check_swap_folder(folder.path + "/missing", 1, "zero_optimization.offload_optimizer.nvme_path"),
                      ErrorKind::kConfig, "nvme_path", "does not exist");
    FTL_REQUIRE_ERROR(io::check_swap_folder(folder.path, uint64_t{1} << 62, "zero_optimization.offload_optimizer.nvme_path"),
                      ErrorKind::kConfig, "need 4611686018427387904 bytes", "free");
}

TEST_CASE("the NVMe-swapped optimizer state steps as in memory, over several sub-groups", "[offload]") {
    at::manual_seed(9);
    const TempFolder folder;
    const optim::AdamWOptions options{0.9, 0.999, 1e-8, 0.01};
    const int64_t n = 3500;
    const at::Tensor master0 = at::randn({n});
    zero::OptimizerOffload offload;
    offload.nvme = true;
    offload.nvme_path = folder.path;
    offload.sub_group_size = 1000;  // 4 sub-groups, the last of 500
    offload.aio.block_size = 4096;
    zero::OffloadedAdamWState swapped(master0, offload, 3);
    CHECK(swapped.describe().find("4 sub-group(s) of up to 1000 elements") != std::string::npos);
    check_steps_as_one_piece(swapped, master0, options);
    const at::Tensor master = at::rand({n}), avg = at::rand({n}), avg_sq = at::rand({n});
    swapped.write_all(master, avg, avg_sq);
    const auto replaced = swapped.read_all();
    CHECK(at::equal(replaced[zero::OffloadedAdamWState::kMaster], master));
    CHECK(at::equal(replaced[zero::OffloadedAdamWState::kExpAvg], avg));
    CHECK(at::equal(replaced[zero::OffloadedAdamWState::kExpAvgSq], avg_sq));

    // One byte of the third sub-group's exp_avg changed on disk: its next read fails.
    std::string swap_file;
    for (const auto& entry : std::filesystem::directory_iterator(folder.path)) swap_file = entry.path().string();
    REQUIRE(swap_file.find("ftlaunch-rank3-") != std::string::npos);
    {
        std::fstream file(swap_file, std::ios::in | std::ios::out | std::ios::binary);
        const std::streamoff third_group = 2 * 3 * 4096, exp_avg = 4096;
        file.seekp(third_group + exp_avg + 17);
        file.put('\x7f');
    }
    FTL_REQUIRE_ERROR(swapped.read_all(), ErrorKind::kIo, swap_file, "sub-group 2",
                      "CRC-32C", "--resume_from_checkpoint auto");
}

TEST_CASE("the host-memory optimizer state steps in pipelined chunks as in one piece", "[offload]") {
    at::manual_seed(10);
    const optim::AdamWOptions options{0.9, 0.999, 1e-8, 0.01};
    const int64_t n = 3500;
    const at::Tensor master0 = at::randn({n});
    zero::OptimizerOffload offload;
    offload.sub_group_size = 1000;  // 4 chunks, the last of 500: downloads and uploads interleave
    zero::OffloadedAdamWState chunked(master0, offload, 0);
    CHECK(chunked.describe() == "host memory");
    check_steps_as_one_piece(chunked, master0, options);
}

TEST_CASE("parameter slices swapped to NVMe come back as stored, read ahead or not", "[offload]") {
    at::manual_seed(10);
    const TempFolder folder;
    io::AioOptions aio;
    aio.block_size = 8192;
    zero::SliceSwap swap(folder.path, 1 << 20, aio, 0);
    const std::vector<at::Tensor> slices{at::randn({1001}), at::randn({3, 7}).to(at::kBFloat16).view({-1}),
                                         at::randint(0, 255, {5000}, at::kByte)};
    std::vector<size_t> indices;
    for (const auto& t : slices) indices.push_back(swap.store(t));
    const auto direct = swap.load({indices[1], indices[0]});
    CHECK(at::equal(direct[0], slices[1]));
    CHECK(at::equal(direct[1], slices[0]));
    swap.prefetch({indices[2]});
    const auto ahead = swap.load({indices[2]});
    CHECK(at::equal(ahead[0], slices[2]));
    swap.prefetch({indices[0]});  // a wrong guess: the next load reads what it needs
    CHECK(at::equal(swap.load({indices[1]})[0], slices[1]));

    std::string swap_file;
    for (const auto& entry : std::filesystem::directory_iterator(folder.path)) swap_file = entry.path().string();
    REQUIRE(swap_file.find("-params.swap") != std::string::npos);
    {
        std::fstream file(swap_file, std::ios::in | std::ios::out | std::ios::binary);
        file.seekp(8192 + 5);  // inside the third slice (the first two take a page each)
        file.put('\x01');
    }
    FTL_REQUIRE_ERROR(swap.load({indices[2]}), ErrorKind::kIo, swap_file, "slice 2", "CRC-32C");
}
