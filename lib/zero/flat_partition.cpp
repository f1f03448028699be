#include "zero/flat_partition.h"

#include <algorithm>

#include "util/error.h"

namespace ftl::zero {

FlatPartition::FlatPartition(std::vector<int64_t> numels, int rank, int world_size)
    : numels_(std::move(numels)), rank_(rank), world_size_(world_size) {
    if (world_size_ < 1 || rank_ < 0 || rank_ >= world_size_)
        fail(ErrorKind::kInternal, "FlatPartition: rank " + std::to_string(rank_) + " of " + std::to_string(world_size_));
    for (int64_t n : numels_) {
        offsets_.push_back(total_);
        total_ += n;
    }
    padded_ = (total_ + world_size_ - 1) / world_size_ * world_size_;
}

at::Tensor FlatPartition::flatten(const std::vector<at::Tensor>& tensors, const at::TensorOptions& options) const {
    if (tensors.size() != numels_.size())
        fail(ErrorKind::kInternal, "FlatPartition::flatten: " + std::to_string(tensors.size()) + " tensors for a layout of " +
                                       std::to_string(numels_.size()));
    at::Tensor flat = at::zeros({padded_}, options);
    for (size_t i = 0; i < tensors.size(); ++i)
        if (tensors[i].defined()) flat.narrow(0, offsets_[i], numels_[i]).copy_(tensors[i].reshape({-1}));
    return flat;
}

std::vector<std::pair<int64_t, int64_t>> FlatPartition::shard_ranges(const std::vector<bool>& selected) const {
    std::vector<std::pair<int64_t, int64_t>> ranges;
    const int64_t begin = shard_begin(), end = begin + shard();
    for (size_t i = 0; i < numels_.size() && i < selected.size(); ++i) {
        const int64_t first = std::max(begin, offsets_[i]), last = std::min(end, offsets_[i] + numels_[i]);
        if (!selected[i] || first >= last) continue;
        if (!ranges.empty() && ranges.back().second == first - begin) ranges.back().second = last - begin;
        else ranges.emplace_back(first - begin, last - begin);
    }
    return ranges;
}

at::Tensor FlatPartition::local_of(const std::vector<at::Tensor>& tensors, const at::TensorOptions& options) const {
    if (tensors.size() != numels_.size())
        fail(ErrorKind::kInternal, "FlatPartition::local_of: " + std::to_string(tensors.size()) + " tensors for a layout of " +
                                       std::to_string(numels_.size()));
    at::Tensor slice = at::zeros({shard()}, options);
    const int64_t begin = shard_begin(), end = begin + shard();
    for (size_t i = 0; i < tensors.size(); ++i) {
        const int64_t first = std::max(begin, offsets_[i]), last = std::min(end, offsets_[i] + numels_[i]);
        if (first >= last || !tensors[i].defined()) continue;
        slice.narrow(0, first - begin, last - first).copy_(tensors[i].reshape({-1}).narrow(0, first - offsets_[i], last - first));
    }
    return slice;
}

void FlatPartition::unflatten_into(const at::Tensor& flat, size_t i, at::Tensor& into) const {
    into.copy_(flat.narrow(0, offsets_.at(i), numels_.at(i)).view(into.sizes()));
}

}  // namespace ftl::zero
