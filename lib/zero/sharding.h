// How one rank's slice of the optimizer state maps onto the trainable parameters, for
// zero::PartitionedAdamW. Two layouts:
//   - BucketedSharding (ZeRO stages 1 and 2): every rank holds the whole parameters; the slice is
//     its 1/world_size of each bucket's flat layout (zero/flat_partition.h); gradients are
//     reduce-scattered into it (during backward with overlap_comm) and the updated slices
//     all-gathered back;
//   - the trainable slices of zero::PartitionedWeights (stage 3 without LoRA): every rank holds
//     only its slice of each part's parameters; gradients arrive in it already reduced (the
//     gather's backward reduce-scatters them), and the update stays in it.
// The slice ("local", [local_numel()] fp32) is laid out like the parameters, so moments and
// master weights are plain vectors the AdamW update walks element by element.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dist/comm.h"
#include "zero/flat_partition.h"

namespace ftl::zero {

class Sharding {
public:
    using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

    virtual ~Sharding() = default;
    virtual int64_t local_numel() const = 0;
    virtual at::TensorOptions options() const = 0;  // fp32 on the parameters' device
    // [local]: this rank's slice of the parameters as they are now (a copy).
    virtual at::Tensor local_parameters() const = 0;
    // [local]: this rank's slice of the gradients summed over ranks (zeros where none arrived).
    // Collective for BucketedSharding.
    virtual at::Tensor reduced_gradients() = 0;
    // Every rank's updated [local] slice into the parameters. Collective for BucketedSharding.
    virtual void write_parameters(const at::Tensor& updated) = 0;
    virtual void zero_grad() = 0;
    // Collective: the whole tensors, named as the parameters, of every rank's [local] vector laid
    // out like the parameters (moments, weights). Complete on rank 0; other ranks may get none.
    virtual NamedTensors whole(const at::Tensor& local) const = 0;
    // This rank's [local] slice of whole tensors found in `by_name` as prefix + parameter name;
    // a missing name or a wrong shape fails naming it, after `source` ("optimizer state"), with
    // ErrorKind::kConfig.
    virtual at::Tensor local_of(const std::map<std::string, at::Tensor>& by_name, const std::string& prefix,
                                const std::string& source) const = 0;
    // Ranges [begin, end) of the [local] slice, in order, holding elements of the tensors whose
    // names `selected` picks (optim::DecayMask's exemptions).
    virtual std::vector<std::pair<int64_t, int64_t>> local_ranges(const std::function<bool(const std::string&)>& selected) const = 0;
    // The next backward is the step's last (its gradients are final): a layout that can reduce
    // them while backward runs may start now. Every rank calls it at the same point.
    virtual void reduce_during_next_backward() {}
};

// [padded] in `options`: every rank's [shard] of `layout`, taken from its slice `local` at
// `offset`, all-gathered (collective; `comm` null = one rank).
at::Tensor gather_segment(dist::Comm* comm, const FlatPartition& layout, const at::Tensor& local, int64_t offset,
                          const at::TensorOptions& options);

// Whole tensors looked up as prefix + name, checked against `shapes`; for local_of.
std::vector<at::Tensor> find_whole(const std::map<std::string, at::Tensor>& by_name, const std::string& prefix,
                                   const std::vector<std::string>& names, const std::vector<std::vector<int64_t>>& shapes,
                                   const std::string& source);

// ZeRO stages 1-2 (and LoRA's adapters under stage 3): the trainable tensors, in reverse order
// (the order backward finishes them), are cut into buckets of about `bucket_elements` elements
// (reduce_bucket_size; whole tensors, at least one each), and each bucket is one FlatPartition: a
// rank's slice is its shard of every bucket, one after another. Gradients are reduce-scattered a
// bucket at a time, so no buffer larger than a bucket is added to the gradients; with `overlap`
// (overlap_comm), armed for the last backward of a step, a bucket's reduce-scatter starts as soon
// as backward has accumulated its tensors' gradients (and every bucket before it has started), and
// runs while backward goes on; each gradient is dropped once its bucket has copied it.
class BucketedSharding : public Sharding {
public:
    // `params`: the trainable tensors, whole and the same on every rank. `comm` null = one rank.
    BucketedSharding(NamedTensors params, dist::Comm* comm, int rank, int world_size, int64_t bucket_elements,
                     bool overlap);
    ~BucketedSharding() override;

    int64_t local_numel() const override { return local_numel_; }
    at::TensorOptions options() const override { return fp32_; }
    at::Tensor local_parameters() const override;
    at::Tensor reduced_gradients() override;
    void write_parameters(const at::Tensor& updated) override;
    void zero_grad() override;
    NamedTensors whole(const at::Tensor& local) const override;
    at::Tensor local_of(const std::map<std::string, at::Tensor>& by_name, const std::string& prefix,
                        const std::string& source) const override;
    std::vector<std::pair<int64_t, int64_t>> local_ranges(const std::function<bool(const std::string&)>& selected) const override;
    void reduce_during_next_backward() override;

    // "gradients reduce-scattered in 3 bucket(s) of up to ... elements (reduce_bucket_size), ...".
    std::string describe() const;

private:
    struct Bucket {
        std::vector<size_t> members;  // indices into params_, in layout order
        FlatPartition layout;
        int64_t local_offset = 0;     // where its shard starts in the rank's slice
        int waiting = 0;              // members whose gradient the armed backward has yet to finish
        bool started = false;
        at::Tensor flat, shard;       // [padded] gradients being reduced, [shard] the result
        std::unique_ptr<dist::PendingCollective> pending;
    };
    void gradient_finished(size_t bucket);  // from a tensor's post-accumulate hook
    void start_reduction(Bucket& bucket, bool wait);
    std::vector<at::Tensor> members_of(const Bucket& bucket) const;

    NamedTensors params_;
    dist::Comm* comm_;
    at::TensorOptions fp32_;
    std::vector<Bucket> buckets_;
    int64_t local_numel_ = 0;
    int64_t bucket_elements_;
    bool overlap_ = false;
    bool armed_ = false;       // this backward's gradients are final: reduce as they come
    size_t next_to_start_ = 0;  // buckets start in order on every rank
};

}  // namespace ftl::zero
