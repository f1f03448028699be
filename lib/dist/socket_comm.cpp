// SocketComm: CPU collectives as rings over a full TCP mesh. Each rank listens on an ephemeral
// port, publishes "host:port" in the store, connects to every lower rank and accepts every
// higher one (a 4-byte rank handshake names the peer). Ring algorithms as in NCCL/Gloo:
// reduce-scatter then all-gather for all-reduce, n-1 steps each; every step sends to rank+1
// while receiving from rank-1 through non-blocking sockets, so no step can deadlock.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <cerrno>
#include <cstring>
#include <future>

#include "dist/comm.h"
#include "util/error.h"

namespace ftl::dist {

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void sys_fail(const std::string& what) {
    ftl::fail(ErrorKind::kDist, what + ": " + std::strerror(errno));
}

// The local address peers should use to reach us: the one the kernel picks to route towards
// the master (a UDP "connect" sends nothing).
std::string local_address_towards(const std::string& master_addr) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_DGRAM;
    if (getaddrinfo(master_addr.c_str(), "9", &hints, &res) != 0 || !res)
        ftl::fail(ErrorKind::kDist, "cannot resolve MASTER_ADDR '" + master_addr + "'");
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    std::string out = "127.0.0.1";
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
        sockaddr_in local{};
        socklen_t len = sizeof(local);
        if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
            char text[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &local.sin_addr, text, sizeof(text));
            out = text;
        }
    }
    if (fd >= 0) close(fd);
    freeaddrinfo(res);
    return out;
}

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }
std::string string_of(const std::vector<uint8_t>& v) { return {v.begin(), v.end()}; }

class SocketComm final : public Comm {
public:
    SocketComm(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size, const std::string& master_addr,
               std::chrono::milliseconds timeout)
        : Comm(store), rank_(rank), size_(size), timeout_(timeout), peers_(size, -1) {
        if (size_ > 1) connect_mesh(store_, master_addr);
    }

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    std::string backend_name() const override { return "cpu"; }

    ~SocketComm() override {
        try {
            finish_in_flight();
        } catch (const std::exception&) {  // the run is ending with the error that mattered
        }
        for (int fd : peers_)
            if (fd >= 0) close(fd);
    }

    void all_gather(at::Tensor& out, const at::Tensor& in) override {
        finish_in_flight();
        gather_ring(out, in);
    }

    // Started collectives run on a thread of their own, so that the caller computes meanwhile; the
    // next collective waits for it first, which keeps every rank's sockets in the same order.
    std::unique_ptr<PendingCollective> start_all_gather(at::Tensor& out, const at::Tensor& in) override {
        finish_in_flight();
        check_cpu(out, "all_gather");
        check_cpu(in, "all_gather");
        in_flight_ = std::async(std::launch::async, [this, out, in]() mutable { gather_ring(out, in); }).share();
        return std::make_unique<Pending>(in_flight_);
    }

    void reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp op) override {
        finish_in_flight();
        scatter_ring(out, in, op);
    }

    std::unique_ptr<PendingCollective> start_reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp op) override {
        finish_in_flight();
        check_cpu(out, "reduce_scatter");
        check_cpu(in, "reduce_scatter");
        in_flight_ = std::async(std::launch::async, [this, out, in, op]() mutable { scatter_ring(out, in, op); }).share();
        return std::make_unique<Pending>(in_flight_);
    }

    void all_reduce(at::Tensor& t, ReduceOp op) override {
        finish_in_flight();
        check_cpu(t, "all_reduce");
        if (size_ == 1) return;
        const int64_t n = t.numel();
        const int64_t per_rank = (n + size_ - 1) / size_;
        at::Tensor padded = at::zeros({per_rank * size_}, t.options());
        padded.narrow(0, 0, n).copy_(t.reshape({n}));
        at::Tensor mine = at::empty({per_rank}, t.options());
        scatter_ring(mine, padded, op);
        gather_ring(padded, mine);
        t.copy_(padded.narrow(0, 0, n).view(t.sizes()));
    }

private:
    class Pending final : public PendingCollective {
    public:
        explicit Pending(std::shared_future<void> done) : done_(std::move(done)) {}
        void wait() override { done_.get(); }

    private:
        std::shared_future<void> done_;
    };

    // Completes the collective start_all_gather left running (rethrowing its error).
    void finish_in_flight() {
        if (!in_flight_.valid()) return;
        const std::shared_future<void> done = std::move(in_flight_);
        in_flight_ = {};
        done.get();
    }

    void gather_ring(at::Tensor& out, const at::Tensor& in) {
        check_cpu(out, "all_gather");
        check_cpu(in, "all_gather");
        const size_t chunk = in.nbytes();
        if (out.nbytes() != chunk * size_)
            ftl::fail(ErrorKind::kInternal, "all_gather: output has " + std::to_string(out.nbytes()) +
                                                " bytes, expected size * input = " + std::to_string(chunk * size_));
        auto* base = static_cast<uint8_t*>(out.data_ptr());
        std::memcpy(base + chunk * rank_, in.data_ptr(), chunk);
        for (int step = 0; step < size_ - 1; ++step) {
            const int send_index = mod(rank_ - step), recv_index = mod(rank_ - step - 1);
            exchange(base + chunk * send_index, base + chunk * recv_index, chunk, "all_gather");
        }
    }

    void scatter_ring(at::Tensor& out, const at::Tensor& in, ReduceOp op) {
        check_cpu(out, "reduce_scatter");
        check_cpu(in, "reduce_scatter");
        const int64_t n = out.numel();
        if (in.numel() != n * size_)
            ftl::fail(ErrorKind::kInternal, "reduce_scatter: input has " + std::to_string(in.numel()) +
                                                " elements, expected size * output = " + std::to_string(n * size_));
        at::Tensor work = in.reshape({size_, n}).clone();
        at::Tensor incoming = at::empty({n}, in.options());
        const size_t chunk = static_cast<size_t>(n) * in.element_size();
        // Step s: send partial chunk (r-s-1), receive and fold in chunk (r-s-2); rank r ends with chunk r.
        for (int step = 0; step < size_ - 1; ++step) {
            const int send_index = mod(rank_ - step - 1), recv_index = mod(rank_ - step - 2);
            exchange(work[send_index].data_ptr(), incoming.data_ptr(), chunk, "reduce_scatter");
            at::Tensor target = work[recv_index];
            combine(target, incoming, op);
        }
        at::Tensor mine = work[rank_];
        if (op == ReduceOp::kAvg) mine.div_(size_);
        out.copy_(mine.view(out.sizes()));
    }

public:
    void broadcast(at::Tensor& t, int root) override {
        finish_in_flight();
        check_cpu(t, "broadcast");
        if (root < 0 || root >= size_)
            ftl::fail(ErrorKind::kInternal, "broadcast: root " + std::to_string(root) + " is not a rank");
        // Pipelined along the ring starting at root: receive from rank-1, pass to rank+1.
        const size_t bytes = t.nbytes();
        const int position = mod(rank_ - root);
        if (position != 0) recv_all(peers_[mod(rank_ - 1)], t.data_ptr(), bytes, "broadcast", mod(rank_ - 1));
        if (position != size_ - 1) send_all(peers_[mod(rank_ + 1)], t.data_ptr(), bytes, "broadcast", mod(rank_ + 1));
    }

    void barrier() override {
        at::Tensor one = at::ones({1}, at::kInt);
        all_reduce(one, ReduceOp::kSum);
    }

private:
    int mod(int i) const { return ((i % size_) + size_) % size_; }

    static void check_cpu(const at::Tensor& t, const char* op) {
        if (!t.device().is_cpu() || !t.is_contiguous())
            ftl::fail(ErrorKind::kInternal, std::string(op) + ": the cpu backend takes contiguous CPU tensors (got " +
                                                t.device().str() + ")");
    }

    static void combine(at::Tensor& acc, const at::Tensor& incoming, ReduceOp op) {
        switch (op) {
            case ReduceOp::kSum:
            case ReduceOp::kAvg: acc.add_(incoming); break;
            case ReduceOp::kMax: at::maximum_out(acc, acc, incoming); break;
            case ReduceOp::kMin: at::minimum_out(acc, acc, incoming); break;
        }
    }

    void connect_mesh(const c10::intrusive_ptr<c10d::Store>& store, const std::string& master_addr) {
        const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (listener < 0) sys_fail("socket()");
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_ANY);
        socklen_t len = sizeof(addr);
        if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(listener, size_) != 0 ||
            getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
            sys_fail("rank " + std::to_string(rank_) + ": cannot listen for peers");
        const std::string me = local_address_towards(master_addr) + ":" + std::to_string(ntohs(addr.sin_port));
        store->set("ftl/socket_comm/" + std::to_string(rank_), bytes_of(me));

        for (int peer = 0; peer < rank_; ++peer) {
            const std::string where = string_of(store->get("ftl/socket_comm/" + std::to_string(peer)));
            peers_[peer] = dial(where, peer);
            const int32_t my_rank = rank_;
            send_all(peers_[peer], &my_rank, sizeof(my_rank), "handshake", peer);
        }
        for (int accepted = rank_ + 1; accepted < size_; ++accepted) {
            wait_readable(listener, "accept", -1);
            const int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) sys_fail("rank " + std::to_string(rank_) + ": accept()");
            int32_t peer = -1;
            recv_all(fd, &peer, sizeof(peer), "handshake", -1);
            if (peer <= rank_ || peer >= size_ || peers_[peer] >= 0)
                ftl::fail(ErrorKind::kDist, "rank " + std::to_string(rank_) + ": unexpected handshake from rank " +
                                                std::to_string(peer));
            peers_[peer] = fd;
        }
        close(listener);
        for (int fd : peers_) {
            if (fd < 0) continue;
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        }
    }

    int dial(const std::string& where, int peer) const {
        const auto colon = where.rfind(':');
        addrinfo hints{}, *res = nullptr;
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        if (getaddrinfo(where.substr(0, colon).c_str(), where.substr(colon + 1).c_str(), &hints, &res) != 0 || !res)
            ftl::fail(ErrorKind::kDist, "rank " + std::to_string(rank_) + ": cannot resolve rank " +
                                            std::to_string(peer) + "'s address " + where);
        const auto deadline = Clock::now() + timeout_;
        while (true) {
            const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
                freeaddrinfo(res);
                return fd;
            }
            close(fd);
            if (Clock::now() > deadline) {
                freeaddrinfo(res);
                sys_fail("rank " + std::to_string(rank_) + ": cannot connect to rank " + std::to_string(peer) + " at " + where);
            }
            usleep(50'000);
        }
    }

    // Waits until fd is readable (events = POLLIN) or writable (POLLOUT); kDist on timeout.
    void wait_ready(int fd, short events, const char* op, int peer) const {
        pollfd p{fd, events, 0};
        const int ms = static_cast<int>(std::min<long long>(timeout_.count(), 1LL << 30));
        const int rc = poll(&p, 1, ms);
        if (rc == 0)
            ftl::fail(ErrorKind::kDist, "rank " + std::to_string(rank_) + ": " + op + ": rank " + std::to_string(peer) +
                                            " did not answer for " + std::to_string(timeout_.count() / 1000) +
                                            " s (collective timeout)");
        if (rc < 0 && errno != EINTR) sys_fail(std::string(op) + ": poll()");
    }
    void wait_readable(int fd, const char* op, int peer) const { wait_ready(fd, POLLIN, op, peer); }

    void send_all(int fd, const void* data, size_t n, const char* op, int peer) const {
        auto* p = static_cast<const uint8_t*>(data);
        while (n > 0) {
            const ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
            if (k > 0) { p += k; n -= static_cast<size_t>(k); continue; }
            if (k < 0 && (errno == EAGAIN || errno == EINTR)) { wait_ready(fd, POLLOUT, op, peer); continue; }
            peer_lost(op, peer);
        }
    }

    void recv_all(int fd, void* data, size_t n, const char* op, int peer) const {
        auto* p = static_cast<uint8_t*>(data);
        while (n > 0) {
            const ssize_t k = recv(fd, p, n, 0);
            if (k > 0) { p += k; n -= static_cast<size_t>(k); continue; }
            if (k < 0 && (errno == EAGAIN || errno == EINTR)) { wait_readable(fd, op, peer); continue; }
            peer_lost(op, peer);
        }
    }

    [[noreturn]] void peer_lost(const char* op, int peer) const {
        ftl::fail(ErrorKind::kDist, "rank " + std::to_string(rank_) + ": " + op + ": connection to rank " +
                                        std::to_string(peer) + " lost (" + std::strerror(errno ? errno : ECONNRESET) +
                                        "); that rank probably failed");
    }

    // One ring step: send `n` bytes to rank+1 while receiving `n` bytes from rank-1.
    void exchange(const void* send_data, void* recv_data, size_t n, const char* op) {
        const int next = mod(rank_ + 1), prev = mod(rank_ - 1);
        const int out_fd = peers_[next], in_fd = peers_[prev];
        auto* out = static_cast<const uint8_t*>(send_data);
        auto* in = static_cast<uint8_t*>(recv_data);
        size_t to_send = n, to_recv = n;
        const int ms = static_cast<int>(std::min<long long>(timeout_.count(), 1LL << 30));
        while (to_send > 0 || to_recv > 0) {
            pollfd fds[2] = {{out_fd, static_cast<short>(to_send ? POLLOUT : 0), 0},
                             {in_fd, static_cast<short>(to_recv ? POLLIN : 0), 0}};
            const int rc = poll(fds, 2, ms);
            if (rc == 0)
                ftl::fail(ErrorKind::kDist, "rank " + std::to_string(rank_) + ": " + op + ": no progress with ranks " +
                                                std::to_string(prev) + "/" + std::to_string(next) + " for " +
                                                std::to_string(timeout_.count() / 1000) + " s (collective timeout)");
            if (rc < 0) {
                if (errno == EINTR) continue;
                sys_fail(std::string(op) + ": poll()");
            }
            if (to_send && (fds[0].revents & (POLLOUT | POLLERR | POLLHUP))) {
                const ssize_t k = send(out_fd, out, to_send, MSG_NOSIGNAL);
                if (k > 0) { out += k; to_send -= static_cast<size_t>(k); }
                else if (!(k < 0 && (errno == EAGAIN || errno == EINTR))) peer_lost(op, next);
            }
            if (to_recv && (fds[1].revents & (POLLIN | POLLERR | POLLHUP))) {
                const ssize_t k = recv(in_fd, in, to_recv, 0);
                if (k > 0) { in += k; to_recv -= static_cast<size_t>(k); }
                else if (!(k < 0 && (errno == EAGAIN || errno == EINTR))) peer_lost(op, prev);
            }
        }
    }

    int rank_, size_;
    std::chrono::milliseconds timeout_;
    std::vector<int> peers_;  // fd per peer rank, -1 for self
    std::shared_future<void> in_flight_;  // the all-gather start_all_gather left running
};

}  // namespace

std::unique_ptr<Comm> make_socket_comm(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                       const std::string& master_addr, std::chrono::milliseconds timeout) {
    return std::make_unique<SocketComm>(store, rank, size, master_addr, timeout);
}

}  // namespace ftl::dist
