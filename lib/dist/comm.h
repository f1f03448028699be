// Comm: the collectives ftlaunch's ranks use, behind one small interface (after c10d's
// ProcessGroup). Two backends:
//   - "nccl": c10d::ProcessGroupNCCL from LibTorch, for CUDA tensors;
//   - "cpu":  SocketComm, ring collectives over a TCP mesh, for CPU tensors (multi-CPU runs and
//             the CPU test suite). The torch wheel ships ProcessGroupGloo without gloo's headers,
//             so Gloo cannot be compiled against; see docs/architecture.md.
// Both rendezvous through a c10d::TCPStore hosted by global rank 0 at MASTER_ADDR:MASTER_PORT.
// All calls are blocking and must be made by every rank in the same order (the usual
// collective contract). Tensors must be contiguous and live on the backend's device.
#pragma once

#include <ATen/Tensor.h>
#include <c10/util/intrusive_ptr.h>

#include <chrono>
#include <memory>
#include <string>

namespace c10d {
class Store;
}

namespace ftl::dist {

enum class ReduceOp { kSum, kAvg, kMax, kMin };

class Comm {
public:
    virtual ~Comm() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    virtual std::string backend_name() const = 0;

    // In place: every rank ends with op(all ranks' t).
    virtual void all_reduce(at::Tensor& t, ReduceOp op) = 0;
    // out: [size * in.numel()] elements; rank r's `in` lands at out[r * in.numel() ...].
    virtual void all_gather(at::Tensor& out, const at::Tensor& in) = 0;
    // in: [size * out.numel()] elements; rank r gets op over ranks of in[r * out.numel() ...].
    virtual void reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp op) = 0;
    // Every rank ends with root's t.
    virtual void broadcast(at::Tensor& t, int root) = 0;
    virtual void barrier() = 0;
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
