// The CPU communicator's collectives, with ranks as threads sharing an in-process store.
#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include <thread>

#include "dist/comm.h"
#include "dist/comm_check.h"
#include "catch.h"  // last: replaces c10's CHECK macro

using namespace ftl::dist;

namespace {
// Runs `body(comm)` on `n` ranks at once; returns each rank's result.
template <typename Result, typename Body>
std::vector<Result> on_ranks(int n, Body body) {
    auto store = c10::make_intrusive<c10d::HashStore>();
    std::vector<Result> results(n);
    std::vector<std::string> errors(n);
    std::vector<std::thread> threads;
    for (int r = 0; r < n; ++r)
        threads.emplace_back([&, r] {
            try {
                auto comm = make_socket_comm(store, r, n, "127.0.0.1", std::chrono::seconds(30));
                results[r] = body(*comm);
            } catch (const std::exception& e) {
                errors[r] = e.what();
            }
        });
    for (auto& t : threads) t.join();
    for (int r = 0; r < n; ++r) {
        INFO("rank " << r << ": " << errors[r]);
        REQUIRE(errors[r].empty());
    }
    return results;
}
}  // namespace

TEST_CASE("the communication check passes with 1, 2, 3 and 4 ranks", "[dist]") {
    for (int n : {1, 2, 3, 4}) {
        auto passed = on_ranks<bool>(n, [](Comm& comm) { return run_comm_check(comm, "cpu").all_passed(); });
        for (int r = 0; r < n; ++r) CHECK(passed[r]);
    }
}

TEST_CASE("all_reduce of an uneven bf16 tensor equals the serial sum", "[dist]") {
    const int n = 3;
    auto sums = on_ranks<at::Tensor>(n, [](Comm& comm) {
        at::Tensor t = at::full({5, 7}, comm.rank() + 1.0, at::kBFloat16);
        comm.all_reduce(t, ReduceOp::kSum);
        return t;
    });
    for (const auto& t : sums) CHECK(at::equal(t, at::full({5, 7}, 6.0, at::kBFloat16)));
}

TEST_CASE("reduce_scatter then all_gather reproduces all_reduce", "[dist]") {
    const int n = 4;
    auto out = on_ranks<std::pair<at::Tensor, at::Tensor>>(n, [](Comm& comm) {
        at::Tensor data = at::arange(4 * 6, at::kFloat).mul(comm.rank() + 1);
        at::Tensor reduced = data.clone();
        comm.all_reduce(reduced, ReduceOp::kSum);
        at::Tensor shard = at::empty({6}, at::kFloat);
        comm.reduce_scatter(shard, data, ReduceOp::kSum);
        at::Tensor gathered = at::empty({24}, at::kFloat);
        comm.all_gather(gathered, shard);
        return std::make_pair(reduced, gathered);
    });
    for (const auto& [reduced, gathered] : out) CHECK(at::equal(reduced, gathered));
}

TEST_CASE("the cpu backend refuses non-contiguous tensors", "[dist][errors]") {
    auto store = c10::make_intrusive<c10d::HashStore>();
    auto comm = make_socket_comm(store, 0, 1, "127.0.0.1", std::chrono::seconds(5));
    at::Tensor t = at::ones({4, 4}).t();
    FTL_REQUIRE_ERROR(comm->all_reduce(t, ReduceOp::kSum), ftl::ErrorKind::kInternal, "contiguous");
}

TEST_CASE("an all_gather started ahead completes, and collectives after it keep their order", "[dist]") {
    const int n = 3;
    auto out = on_ranks<std::vector<at::Tensor>>(n, [](Comm& comm) {
        const double r = comm.rank();
        at::Tensor ahead = at::empty({n * 1000}, at::kFloat);
        auto pending = comm.start_all_gather(ahead, at::full({1000}, r + 1.0, at::kFloat));
        at::Tensor sum = at::full({5}, r, at::kFloat);  // issued while the gather may still run
        comm.all_reduce(sum, ReduceOp::kSum);
        pending->wait();
        at::Tensor second = at::empty({n * 3}, at::kFloat);  // two started back to back
        auto first_pending = comm.start_all_gather(second, at::full({3}, 10.0 * r, at::kFloat));
        at::Tensor third = at::empty({n * 2}, at::kFloat);
        auto second_pending = comm.start_all_gather(third, at::full({2}, -r, at::kFloat));
        second_pending->wait();
        first_pending->wait();
        return std::vector<at::Tensor>{ahead, sum, second, third};
    });
    for (const auto& tensors : out) {
        at::Tensor expected_ahead = at::cat({at::full({1000}, 1.0), at::full({1000}, 2.0), at::full({1000}, 3.0)});
        CHECK(at::equal(tensors[0], expected_ahead));
        CHECK(at::equal(tensors[1], at::full({5}, 3.0)));
        CHECK(at::equal(tensors[2], at::cat({at::full({3}, 0.0), at::full({3}, 10.0), at::full({3}, 20.0)})));
        CHECK(at::equal(tensors[3], at::cat({at::full({2}, 0.0), at::full({2}, -1.0), at::full({2}, -2.0)})));
    }
}
