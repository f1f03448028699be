// Comm: the collectives ftlaunch's ranks use, behind one small interface (after c10d's
// ProcessGroup). Two backends:
//   - "nccl": c10d::ProcessGroupNCCL from LibTorch, for CUDA tensors;
//   - "cpu":  SocketComm, ring collectives over a TCP mesh, for CPU tensors (multi-CPU runs and
//             the CPU test suite). The torch wheel ships ProcessGroupGloo without gloo's headers,
//             so Gloo cannot be compiled against; see docs/architecture.md.
// Both rendezvous through a c10d::TCPStore hosted by global rank 0 at MASTER_ADDR:MASTER_PORT.
// All calls block (but the start_* ones, which return a PendingCollective) and must be made by
// every rank in the same order (the usual collective contract). Tensors must be contiguous and
// live on the backend's device.
#pragma once

#include <ATen/Tensor.h>
#include <c10/util/intrusive_ptr.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace c10d {
class Store;
}

namespace ftl::dist {

enum class ReduceOp { kSum, kAvg, kMax, kMin };

// A collective started by Comm::start_all_gather and not yet known to be complete.
class PendingCollective {
public:
    virtual ~PendingCollective() = default;
    // Returns once the result is in place for the caller (CUDA: once the current stream is
    // ordered after it); throws what the collective threw.
    virtual void wait() = 0;
};

class Comm {
public:
    explicit Comm(c10::intrusive_ptr<c10d::Store> store);
    virtual ~Comm();
    virtual int rank() const = 0;
    virtual int size() const = 0;
    virtual std::string backend_name() const = 0;

    // In place: every rank ends with op(all ranks' t).
    virtual void all_reduce(at::Tensor& t, ReduceOp op) = 0;
    // out: [size * in.numel()] elements; rank r's `in` lands at out[r * in.numel() ...].
    virtual void all_gather(at::Tensor& out, const at::Tensor& in) = 0;
    // in: [size * out.numel()] elements; rank r gets op over ranks of in[r * out.numel() ...].
    virtual void reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp op) = 0;
    // all_gather started without waiting for it (ZeRO-3's prefetch of the next part): `out` holds
    // the result after wait(), and neither tensor may be touched before. Collectives called after
    // it run after it, on every rank in the same order. The default runs it at once.
    virtual std::unique_ptr<PendingCollective> start_all_gather(at::Tensor& out, const at::Tensor& in);
    // reduce_scatter started the same way (a gradient bucket reduced while backward goes on).
    virtual std::unique_ptr<PendingCollective> start_reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp op);
    // Every rank ends with root's t.
    virtual void broadcast(at::Tensor& t, int root) = 0;
    virtual void barrier() = 0;

    // Signals through the rendezvous store, for waits that must not time out the way a collective
    // does (rank 0 tokenising a large dataset while the others wait): one rank publishes a key,
    // the others poll for it as long as it takes. `still_waiting(seconds)` is called about once a
    // minute while waiting. Throws ftl::Error(kDist) when the store stops answering.
    void publish(const std::string& key, const std::string& value);
    std::string wait_for(const std::string& key, const std::function<void(int64_t seconds)>& still_waiting);
    // Waits (at most `timeout`) until every other rank has read `key` through wait_for: a rank
    // about to exit with an error it published calls this, so the store it hosts outlives the read.
    void wait_until_read(const std::string& key, std::chrono::milliseconds timeout);

    // The rendezvous store (shared by a wrapping communicator).
    const c10::intrusive_ptr<c10d::Store>& store() const { return store_; }

protected:
    // Kept for the communicator's lifetime: on rank 0 the store object is the server, and
    // dropping it would cut off ranks still reading from it.
    c10::intrusive_ptr<c10d::Store> store_;
};

struct CommOptions {
    int rank = 0;
    int world_size = 1;
    std::string master_addr = "127.0.0.1";
    int master_port = 29500;
    std::string backend = "cpu";                       // "cpu" or "nccl"
    int device_index = 0;                              // CUDA device for nccl (the local rank)
    std::chrono::milliseconds timeout = std::chrono::minutes(30);  // --ddp_timeout
};

// Rendezvous on the TCPStore, then build the backend. Throws ftl::Error(kDist) naming the
// address, the rank and what did not answer.
std::unique_ptr<Comm> make_comm(const CommOptions& options);

// Backends, for tests that bring their own store.
std::unique_ptr<Comm> make_socket_comm(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                       const std::string& master_addr, std::chrono::milliseconds timeout);
std::unique_ptr<Comm> make_nccl_comm(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size, int device_index,
                                     std::chrono::milliseconds timeout);

}  // namespace ftl::dist
