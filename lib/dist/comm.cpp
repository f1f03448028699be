#include "dist/comm.h"

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "util/error.h"

namespace ftl::dist {

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
