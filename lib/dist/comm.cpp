#include "dist/comm.h"

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <thread>

#include "util/error.h"

namespace ftl::dist {

Comm::Comm(c10::intrusive_ptr<c10d::Store> store) : store_(std::move(store)) {}
Comm::~Comm() = default;

namespace {
struct Completed final : PendingCollective {
    void wait() override {}
};
}  // namespace

std::unique_ptr<PendingCollective> Comm::start_all_gather(at::Tensor& out, const at::Tensor& in) {
    all_gather(out, in);
    return std::make_unique<Completed>();
}

std::unique_ptr<PendingCollective> Comm::start_reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp op) {
    reduce_scatter(out, in, op);
    return std::make_unique<Completed>();
}

void Comm::publish(const std::string& key, const std::string& value) {
    try {
        store_->set(key, std::vector<uint8_t>(value.begin(), value.end()));
    } catch (const c10::Error& e) {
        ftl::fail(ErrorKind::kDist, "rank " + std::to_string(rank()) + ": publishing '" + key + "' in the store failed: " + e.what_without_backtrace());
    } catch (const std::exception& e) {
        ftl::fail(ErrorKind::kDist, "rank " + std::to_string(rank()) + ": publishing '" + key + "' in the store failed: " + e.what());
    }
}

void Comm::wait_until_read(const std::string& key, std::chrono::milliseconds timeout) {
    std::vector<std::string> receipts;
    for (int r = 0; r < size(); ++r)
        if (r != rank()) receipts.push_back(key + "/read/" + std::to_string(r));
    try {
        store_->wait(receipts, timeout);
    } catch (const std::exception&) {
        // A rank that never reads (it failed on its own) must not hold this one: best effort.
    }
}

std::string Comm::wait_for(const std::string& key, const std::function<void(int64_t)>& still_waiting) {
    const auto started = std::chrono::steady_clock::now();
    auto last_report = started;
    try {
        while (!store_->check({key})) {
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
            const auto now = std::chrono::steady_clock::now();
            if (still_waiting && now - last_report >= std::chrono::minutes(1)) {
                last_report = now;
                still_waiting(std::chrono::duration_cast<std::chrono::seconds>(now - started).count());
            }
        }
        const std::vector<uint8_t> value = store_->get(key);
        store_->set(key + "/read/" + std::to_string(rank()), std::vector<uint8_t>{1});
        return {value.begin(), value.end()};
    } catch (const c10::Error& e) {
        ftl::fail(ErrorKind::kDist, "rank " + std::to_string(rank()) + ": waiting for '" + key +
                                        "' in the store failed (did rank 0 exit?): " + e.what_without_backtrace());
    } catch (const std::exception& e) {
        ftl::fail(ErrorKind::kDist, "rank " + std::to_string(rank()) + ": waiting for '" + key +
                                        "' in the store failed (did rank 0 exit?): " + e.what());
    }
}

std::unique_ptr<Comm> make_comm(const CommOptions& o) {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<std::uint16_t>(o.master_port);
    store_options.isServer = o.rank == 0;
    store_options.numWorkers = static_cast<std::size_t>(o.world_size);
    store_options.waitWorkers = true;
    store_options.timeout = o.timeout;
    c10::intrusive_ptr<c10d::Store> store;
    try {
        store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, store_options);
    } catch (const std::exception& e) {
        ftl::fail(ErrorKind::kDist, "rank " + std::to_string(o.rank) + ": rendezvous at " + o.master_addr + ":" +
                                        std::to_string(o.master_port) + " failed (" +
                                        (o.rank == 0 ? "hosting the store" : "reaching rank 0's store") +
                                        "): " + e.what());
    }
    if (o.backend == "nccl") return make_nccl_comm(store, o.rank, o.world_size, o.device_index, o.timeout);
    if (o.backend == "cpu") return make_socket_comm(store, o.rank, o.world_size, o.master_addr, o.timeout);
    ftl::fail(ErrorKind::kInternal, "unknown communication backend '" + o.backend + "' (expected nccl or cpu)");
}

}  // namespace ftl::dist
