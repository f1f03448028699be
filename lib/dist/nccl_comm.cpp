// NcclComm: the Comm interface over LibTorch's c10d::ProcessGroupNCCL. Compiled only when the
// LibTorch build has CUDA (FTL_WITH_NCCL); otherwise make_nccl_comm says why it cannot run.
#include "dist/comm.h"
#include "util/error.h"

#ifdef FTL_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace ftl::dist {

#ifdef FTL_WITH_NCCL
namespace {

c10d::ReduceOp to_c10d(ReduceOp op) {
    switch (op) {
        case ReduceOp::kSum: return c10d::ReduceOp::SUM;
        case ReduceOp::kAvg: return c10d::ReduceOp::AVG;
        case ReduceOp::kMax: return c10d::ReduceOp::MAX;
        case ReduceOp::kMin: return c10d::ReduceOp::MIN;
    }
    return c10d::ReduceOp::SUM;
}

class NcclComm final : public Comm {
public:
    NcclComm(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size, int device,
             std::chrono::milliseconds timeout)
        : Comm(store), rank_(rank), size_(size), device_(at::kCUDA, static_cast<c10::DeviceIndex>(device)) {
        c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
        auto options = c10d::ProcessGroupNCCL::Options::create();
        options->timeout = timeout;
        group_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
    }
    ~NcclComm() override {
        if (group_) group_->shutdown();
    }

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    std::string backend_name() const override { return "nccl"; }

    void all_reduce(at::Tensor& t, ReduceOp op) override {
        on_device(t, [&](at::Tensor& staged) {
            std::vector<at::Tensor> tensors{staged};
            c10d::AllreduceOptions options;
            options.reduceOp = to_c10d(op);
            group_->allreduce(tensors, options)->wait();
        });
    }
    void all_gather(at::Tensor& out, const at::Tensor& in) override {
        at::Tensor input = in.is_cuda() ? in : in.to(device_);
        on_device(out, [&](at::Tensor& staged) { group_->_allgather_base(staged, input)->wait(); });
    }
    // On NCCL's stream; wait() orders the current stream after it.
    std::unique_ptr<PendingCollective> start_all_gather(at::Tensor& out, const at::Tensor& in) override {
        require_device(out, in, "start_all_gather");
        at::Tensor input = in;
        return std::make_unique<Pending>(group_->_allgather_base(out, input));
    }
    std::unique_ptr<PendingCollective> start_reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp op) override {
        require_device(out, in, "start_reduce_scatter");
        at::Tensor input = in;
        c10d::ReduceScatterOptions options;
        options.reduceOp = to_c10d(op);
        return std::make_unique<Pending>(group_->_reduce_scatter_base(out, input, options));
    }
    void reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp op) override {
        at::Tensor input = in.is_cuda() ? in : in.to(device_);
        c10d::ReduceScatterOptions options;
        options.reduceOp = to_c10d(op);
        on_device(out, [&](at::Tensor& staged) { group_->_reduce_scatter_base(staged, input, options)->wait(); });
    }
    void broadcast(at::Tensor& t, int root) override {
        on_device(t, [&](at::Tensor& staged) {
            std::vector<at::Tensor> tensors{staged};
            c10d::BroadcastOptions options;
            options.rootRank = root;
            group_->broadcast(tensors, options)->wait();
        });
    }
    void barrier() override { group_->barrier()->wait(); }

private:
    // NCCL moves device memory only: a host tensor (the trainer's counters, votes and memory
    // figures) goes through a device copy, and the result comes back into it.
    template <class Collective>
    void on_device(at::Tensor& t, Collective collective) {
        if (t.is_cuda()) {
            collective(t);
            return;
        }
        at::Tensor staged = t.to(device_);
        collective(staged);
        t.copy_(staged);
    }
    // A started collective cannot copy its result back when it completes: device tensors only.
    static void require_device(const at::Tensor& out, const at::Tensor& in, const char* call) {
        if (!out.is_cuda() || !in.is_cuda())
            ftl::fail(ErrorKind::kInternal, std::string("NcclComm::") + call + ": NCCL needs device tensors");
    }

    class Pending final : public PendingCollective {
    public:
        explicit Pending(c10::intrusive_ptr<c10d::Work> work) : work_(std::move(work)) {}
        void wait() override { work_->wait(); }

    private:
        c10::intrusive_ptr<c10d::Work> work_;
    };

    int rank_, size_;
    at::Device device_;
    c10::intrusive_ptr<c10d::ProcessGroupNCCL> group_;
};

}  // namespace

std::unique_ptr<Comm> make_nccl_comm(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size, int device_index,
                                     std::chrono::milliseconds timeout) {
    if (device_index >= c10::cuda::device_count())
        ftl::fail(ErrorKind::kDist, "rank " + std::to_string(rank) + ": CUDA device " + std::to_string(device_index) +
                                        " does not exist (" + std::to_string(c10::cuda::device_count()) + " visible)");
    return std::make_unique<NcclComm>(store, rank, size, device_index, timeout);
}

#else

std::unique_ptr<Comm> make_nccl_comm(const c10::intrusive_ptr<c10d::Store>&, int rank, int, int,
                                     std::chrono::milliseconds) {
    ftl::fail(ErrorKind::kDist, "rank " + std::to_string(rank) +
                                    ": this ftlaunch was built against a LibTorch without CUDA; NCCL is unavailable");
}

#endif

}  // namespace ftl::dist
