// A Comm that counts what passes through another: bytes each rank moves per collective kind, as
// the ring algorithms move them (all-reduce 2(n-1)/n of the tensor, all-gather and
// reduce-scatter (n-1)/n of the whole buffer, broadcast (n-1)/n). These are the volumes the ZeRO
// paper reasons with (data parallel: 2Ψ per step; ZeRO-3: 3Ψ), so a run's counts can be set
// against them (bench/bench_comm_volume.py).
#pragma once

#include <cstdint>
#include <memory>

#include "dist/comm.h"

namespace ftl::dist {

struct CommVolume {
    double all_reduce = 0, all_gather = 0, reduce_scatter = 0, broadcast = 0;  // bytes this rank moved
    int64_t calls = 0;
    double total() const { return all_reduce + all_gather + reduce_scatter + broadcast; }
    // What was moved between two readings (`*this` taken after `earlier`), and a running sum.
    CommVolume since(const CommVolume& earlier) const {
        return {all_reduce - earlier.all_reduce, all_gather - earlier.all_gather, reduce_scatter - earlier.reduce_scatter,
                broadcast - earlier.broadcast, calls - earlier.calls};
    }
    CommVolume& operator+=(const CommVolume& more) {
        all_reduce += more.all_reduce;
        all_gather += more.all_gather;
        reduce_scatter += more.reduce_scatter;
        broadcast += more.broadcast;
        calls += more.calls;
        return *this;
    }
};

class CountingComm : public Comm {
public:
    explicit CountingComm(std::unique_ptr<Comm> inner);

    int rank() const override { return inner_->rank(); }
    int size() const override { return inner_->size(); }
    std::string backend_name() const override { return inner_->backend_name(); }
    void all_reduce(at::Tensor& t, ReduceOp op) override;
    void all_gather(at::Tensor& out, const at::Tensor& in) override;
    std::unique_ptr<PendingCollective> start_all_gather(at::Tensor& out, const at::Tensor& in) override;
    std::unique_ptr<PendingCollective> start_reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp op) override;
    void reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp op) override;
    void broadcast(at::Tensor& t, int root) override;
    void barrier() override { inner_->barrier(); }

    const CommVolume& volume() const { return volume_; }

private:
    double share() const;  // (n - 1) / n
    std::unique_ptr<Comm> inner_;
    CommVolume volume_;
};

}  // namespace ftl::dist
