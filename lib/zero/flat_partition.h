// A flat, padded, per-rank partition of a list of tensors, as ZeRO lays parameters out: the
// tensors (row-major, in order) are concatenated into one vector of `padded` elements (a multiple
// of the world size, the tail zero), and rank r owns elements [r * shard, (r + 1) * shard).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace ftl::zero {

class FlatPartition {
public:
    // `numels`: element counts of the tensors, in order.
    FlatPartition(std::vector<int64_t> numels, int rank, int world_size);

    int64_t total() const { return total_; }    // sum of numels
    int64_t padded() const { return padded_; }  // total rounded up to a multiple of world_size
    int64_t shard() const { return padded_ / world_size_; }
    int64_t shard_begin() const { return shard() * rank_; }
    int64_t offset(size_t i) const { return offsets_.at(i); }  // tensor i's first element
    int64_t numel(size_t i) const { return numels_.at(i); }

    // [padded] in `options`: the tensors (undefined = zeros) flattened, the tail zero.
    at::Tensor flatten(const std::vector<at::Tensor>& tensors, const at::TensorOptions& options) const;
    // This rank's slice of a [padded] vector (a view).
    at::Tensor local(const at::Tensor& flat) const { return flat.narrow(0, shard_begin(), shard()); }
    // [shard] in `options`: this rank's slice of the tensors flattened (undefined = zeros), reading
    // only the elements that fall in it (of mapped files, only those pages).
    at::Tensor local_of(const std::vector<at::Tensor>& tensors, const at::TensorOptions& options) const;
    // Ranges [begin, end) of this rank's [shard], in order, holding elements of the tensors whose
    // `selected` entry is true.
    std::vector<std::pair<int64_t, int64_t>> shard_ranges(const std::vector<bool>& selected) const;
    // Copies tensor i's elements out of a [padded] vector into `into` (any dtype/device).
    void unflatten_into(const at::Tensor& flat, size_t i, at::Tensor& into) const;

private:
    std::vector<int64_t> numels_, offsets_;
    int64_t total_ = 0, padded_ = 0;
    int rank_ = 0, world_size_ = 1;
};

}  // namespace ftl::zero
