#include "zero/offloaded_adamw_state.h"

#include <ATen/core/grad_mode.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <future>

#include "optim/cpu_adamw.h"
#include "util/checksum.h"
#include "util/error.h"

namespace ftl::zero {
namespace {

constexpr int64_t kMaxTransferChunk = int64_t{1} << 24;  // 64 MB of fp32 per transfer

at::Tensor host_tensor(int64_t n, bool pinned) {
    return at::zeros({n}, at::TensorOptions().dtype(at::kFloat).pinned_memory(pinned && at::hasCUDA()));
}

// A view of `size` floats at `data` (memory owned elsewhere).
at::Tensor floats_at(void* data, int64_t size) {
    return at::from_blob(data, {size}, at::TensorOptions().dtype(at::kFloat));
}

}  // namespace

uint64_t OffloadedAdamWState::swap_bytes(int64_t n, int64_t sub_group_size) {
    const int64_t chunk = std::max<int64_t>(1, std::min(sub_group_size, n));
    const int64_t full = n / chunk, rest = n % chunk;
    return 3 * (static_cast<uint64_t>(full) * io::direct_size(static_cast<uint64_t>(chunk) * 4) +
                (rest ? io::direct_size(static_cast<uint64_t>(rest) * 4) : 0));
}

OffloadedAdamWState::OffloadedAdamWState(const at::Tensor& master, const OptimizerOffload& offload, int rank)
    : numel_(master.numel()), offload_(offload) {
    at::NoGradGuard no_grad;
    const at::Tensor initial = master.detach().to(at::kCPU, at::kFloat).contiguous();
    if (!offload_.nvme) {
        for (int i = 0; i < 3; ++i) host_.push_back(host_tensor(numel_, offload_.pin_memory));
        host_[kMaster].copy_(initial);
        chunk_ = std::max<int64_t>(1, std::min({offload_.sub_group_size, kMaxTransferChunk, numel_}));
        for (at::Tensor& staged : staged_grad_) staged = host_tensor(chunk_, offload_.pin_memory);
        transfer_ = std::make_unique<TransferStream>(master.device());
        return;
    }
    if (offload_.sub_group_size < 1)
        fail(ErrorKind::kConfig, "zero_optimization.sub_group_size " + std::to_string(offload_.sub_group_size) + ": must be >= 1");
    const uint64_t total = swap_bytes(numel_, offload_.sub_group_size);
    io::check_swap_folder(offload_.nvme_path, total, "zero_optimization.offload_optimizer.nvme_path");
    const int64_t chunk = std::max<int64_t>(1, std::min(offload_.sub_group_size, numel_));
    uint64_t offset = 0;
    for (int64_t begin = 0; begin < numel_; begin += chunk) {
        SubGroup group;
        group.begin = begin;
        group.size = std::min(chunk, numel_ - begin);
        group.offset = offset;
        offset += 3 * section_bytes(group);
        groups_.push_back(group);
    }
    const std::string path = (std::filesystem::path(offload_.nvme_path) /
                              ("ftlaunch-rank" + std::to_string(rank) + "-" + std::to_string(::getpid()) + "-optimizer.swap"))
                                 .string();
    swap_ = std::make_unique<io::DirectFile>(path, total, offload_.aio, "offload_optimizer swap file");
    const uint64_t largest = 3 * section_bytes(groups_.front());
    buffers_[0] = io::AlignedBuffer(largest);
    buffers_[1] = io::AlignedBuffer(largest);
    for (size_t i = 0; i < groups_.size(); ++i) {  // master slices in, zero moments
        const SubGroup& group = groups_[i];
        std::fill_n(static_cast<char*>(buffers_[0].data()), 3 * section_bytes(group), 0);
        floats_at(buffers_[0].data(), group.size).copy_(initial.narrow(0, group.begin, group.size));
        write_group(i, buffers_[0], true);
    }
}

OffloadedAdamWState::~OffloadedAdamWState() {
    if (!swap_) return;
    const std::string path = swap_->path();
    swap_.reset();
    ::unlink(path.c_str());
}

std::string OffloadedAdamWState::describe() const {
    if (!swap_) return std::string("host memory") + (offload_.pin_memory && at::hasCUDA() ? " (pinned)" : "");
    return swap_->path() + " (" + std::to_string(swap_->size()) + " bytes, " + std::to_string(groups_.size()) +
           " sub-group(s) of up to " + std::to_string(groups_.front().size) + " elements, " + swap_->engine() + ")";
}

void OffloadedAdamWState::read_group(size_t index, io::AlignedBuffer& into) const {
    const SubGroup& group = groups_[index];
    swap_->read(into.data(), 3 * section_bytes(group), group.offset);
    verify_group(index, into);
}

void OffloadedAdamWState::verify_group(size_t index, const io::AlignedBuffer& buffer) const {
    const SubGroup& group = groups_[index];
    const uint64_t bytes = 3 * section_bytes(group);
    const uint32_t found = crc32c(buffer.data(), bytes);
    if (found != group.crc32c)
        fail(ErrorKind::kIo, swap_->path() + ": the offload_optimizer swap file changed under the run: sub-group " +
                                 std::to_string(index) + " (bytes " + std::to_string(group.offset) + ".." +
                                 std::to_string(group.offset + bytes) + ") fails its CRC-32C check (written " +
                                 std::to_string(group.crc32c) + ", read " + std::to_string(found) +
                                 "); the disk returned other bytes than were written. Checkpoints are not in the swap "
                                 "file: resume from the last one (--resume_from_checkpoint auto)");
}

void OffloadedAdamWState::write_group(size_t index, const io::AlignedBuffer& from, bool wait) {
    SubGroup& group = groups_[index];
    const uint64_t bytes = 3 * section_bytes(group);
    group.crc32c = crc32c(from.data(), bytes);
    if (wait) swap_->write(from.data(), bytes, group.offset);
}

namespace {

// The CPU update of the shard's elements [first, first + n) held in `master` etc. [n], split where
// `decay` exempts elements from weight decay.
void update_with_decay(at::Tensor& master, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq, int64_t first,
                       int64_t step, double lr, const optim::AdamWOptions& options, const optim::DecayMask& decay) {
    decay.for_each_run(first, first + master.numel(), [&](int64_t begin, int64_t end, bool decays) {
        const int64_t offset = begin - first, n = end - begin;
        at::Tensor param = master.narrow(0, offset, n), avg = exp_avg.narrow(0, offset, n);
        at::Tensor avg_sq = exp_avg_sq.narrow(0, offset, n);
        optim::cpu_adamw_update(param, grad.narrow(0, offset, n), avg, avg_sq, step, lr,
                                decays ? options : optim::without_decay(options));
    });
}

}  // namespace

void OffloadedAdamWState::step(const at::Tensor& grad, at::Tensor& updated, int64_t step, double lr,
                               const optim::AdamWOptions& options, const optim::DecayMask& decay) {
    at::NoGradGuard no_grad;
    if (!swap_) {
        step_in_host_memory(grad, updated, step, lr, options, decay);
        return;
    }
    // Two buffers: while sub-group i is updated in one, i+1 is read into the other once the
    // write of i-1 from it has finished.
    std::future<void> reading, writing;
    read_group(0, buffers_[0]);
    for (size_t i = 0; i < groups_.size(); ++i) {
        io::AlignedBuffer& current = buffers_[i % 2];
        io::AlignedBuffer& next = buffers_[(i + 1) % 2];
        if (i + 1 < groups_.size()) {
            if (writing.valid()) writing.get();
            reading = swap_->read_async(next.data(), 3 * section_bytes(groups_[i + 1]), groups_[i + 1].offset);
        }
        const SubGroup& group = groups_[i];
        const int64_t section = static_cast<int64_t>(section_bytes(group) / 4);
        float* base = static_cast<float*>(current.data());
        at::Tensor master = floats_at(base, group.size), exp_avg = floats_at(base + section, group.size);
        at::Tensor exp_avg_sq = floats_at(base + 2 * section, group.size);
        const at::Tensor g = grad.narrow(0, group.begin, group.size).to(at::kCPU, at::kFloat).contiguous();
        update_with_decay(master, g, exp_avg, exp_avg_sq, group.begin, step, lr, options, decay);
        updated.narrow(0, group.begin, group.size).copy_(master);
        write_group(i, current, false);
        if (writing.valid()) writing.get();
        writing = swap_->write_async(current.data(), 3 * section_bytes(group), group.offset);
        if (reading.valid()) {
            reading.get();
            verify_group(i + 1, next);
        }
    }
    if (writing.valid()) writing.get();
}

void OffloadedAdamWState::step_in_host_memory(const at::Tensor& grad, at::Tensor& updated, int64_t step, double lr,
                                              const optim::AdamWOptions& options, const optim::DecayMask& decay) {
    const int64_t chunks = (numel_ + chunk_ - 1) / chunk_;
    auto range = [&](int64_t k) { return std::pair<int64_t, int64_t>{k * chunk_, std::min(chunk_, numel_ - k * chunk_)}; };
    // Chunk k's gradient into staging buffer k % 2, after the device's work that produced it.
    auto download = [&](int64_t k) {
        const auto [begin, size] = range(k);
        return transfer_->run([&, begin = begin, size = size] {
            staged_grad_[k % 2].narrow(0, 0, size).copy_(grad.narrow(0, begin, size), /*non_blocking=*/true);
        }, /*after_current_work=*/true);
    };
    TransferStream::Done downloaded[2], uploaded;
    downloaded[0] = download(0);
    for (int64_t k = 0; k < chunks; ++k) {
        // Buffer (k + 1) % 2 held chunk k - 1, whose update is done.
        if (k + 1 < chunks) downloaded[(k + 1) % 2] = download(k + 1);
        transfer_->synchronize(downloaded[k % 2]);
        const auto [begin, size] = range(k);
        at::Tensor master = host_[kMaster].narrow(0, begin, size), exp_avg = host_[kExpAvg].narrow(0, begin, size);
        at::Tensor exp_avg_sq = host_[kExpAvgSq].narrow(0, begin, size);
        update_with_decay(master, staged_grad_[k % 2].narrow(0, 0, size), exp_avg, exp_avg_sq, begin, step, lr, options, decay);
        uploaded = transfer_->run([&, begin = begin, size = size] {
            updated.narrow(0, begin, size).copy_(host_[kMaster].narrow(0, begin, size), /*non_blocking=*/true);
        });
    }
    // The side stream runs in order: its last upload ending means every chunk has landed.
    transfer_->wait(uploaded, {updated});
}

std::array<at::Tensor, 3> OffloadedAdamWState::read_all() const {
    if (!swap_) return {host_[kMaster].clone(), host_[kExpAvg].clone(), host_[kExpAvgSq].clone()};
    std::array<at::Tensor, 3> out{at::empty({numel_}, at::kFloat), at::empty({numel_}, at::kFloat),
                                  at::empty({numel_}, at::kFloat)};
    io::AlignedBuffer buffer(3 * section_bytes(groups_.front()));
    for (size_t i = 0; i < groups_.size(); ++i) {
        const SubGroup& group = groups_[i];
        read_group(i, buffer);
        const int64_t section = static_cast<int64_t>(section_bytes(group) / 4);
        for (int which = kMaster; which <= kExpAvgSq; ++which)
            out[static_cast<size_t>(which)].narrow(0, group.begin, group.size)
                .copy_(floats_at(static_cast<float*>(buffer.data()) + which * section, group.size));
    }
    return out;
}

void OffloadedAdamWState::write_all(const at::Tensor& master, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq) {
    at::NoGradGuard no_grad;
    std::array<at::Tensor, 3> host;
    const at::Tensor* given[3] = {&master, &exp_avg, &exp_avg_sq};
    for (size_t which = 0; which < 3; ++which) {
        host[which] = given[which]->detach().to(at::kCPU, at::kFloat).contiguous().view({-1});
        if (host[which].numel() != numel_)
            fail(ErrorKind::kInternal, "OffloadedAdamWState::write_all: " + std::to_string(host[which].numel()) +
                                           " values for a shard of " + std::to_string(numel_));
    }
    if (!swap_) {
        for (size_t which = 0; which < 3; ++which) host_[which].copy_(host[which]);
        return;
    }
    io::AlignedBuffer buffer(3 * section_bytes(groups_.front()));
    for (size_t i = 0; i < groups_.size(); ++i) {
        const SubGroup& group = groups_[i];
        std::memset(buffer.data(), 0, 3 * section_bytes(group));  // the sections' padding, as first written
        const int64_t section = static_cast<int64_t>(section_bytes(group) / 4);
        for (size_t which = 0; which < 3; ++which)
            floats_at(static_cast<float*>(buffer.data()) + static_cast<int64_t>(which) * section, group.size)
                .copy_(host[which].narrow(0, group.begin, group.size));
        write_group(i, buffer, true);
    }
}

}  // namespace ftl::zero
