// How one rank's slice of the optimizer state maps onto the trainable parameters, for
// zero::PartitionedAdamW. Two layouts:
//   - FlatSharding (ZeRO stages 1 and 2): every rank holds the whole parameters; the slice is its
//     1/world_size of their flat layout (zero/flat_partition.h); gradients are reduce-scattered
//     into it at the step and the updated slices all-gathered back;
//   - the trainable slices of zero::PartitionedWeights (stage 3 without LoRA): every rank holds
//     only its slice of each part's parameters; gradients arrive in it already reduced (the
//     gather's backward reduce-scatters them), and the update stays in it.
// The slice ("local", [local_numel()] fp32) is laid out like the parameters, so moments and
// master weights are plain vectors the AdamW update walks element by element.
#pragma once

#include <ATen/ATen.h>

#include <map>
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
    // Collective for FlatSharding.
    virtual at::Tensor reduced_gradients() = 0;
    // Every rank's updated [local] slice into the parameters. Collective for FlatSharding.
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
};

// Whole tensors looked up as prefix + name, checked against `shapes`; for local_of.
std::vector<at::Tensor> find_whole(const std::map<std::string, at::Tensor>& by_name, const std::string& prefix,
                                   const std::vector<std::string>& names, const std::vector<std::vector<int64_t>>& shapes,
                                   const std::string& source);

class FlatSharding : public Sharding {
public:
    // `params`: the trainable tensors, whole and the same on every rank. `comm` null = one rank.
    FlatSharding(NamedTensors params, dist::Comm* comm, int rank, int world_size);

    int64_t local_numel() const override { return layout_.shard(); }
    at::TensorOptions options() const override { return fp32_; }
    at::Tensor local_parameters() const override;
    at::Tensor reduced_gradients() override;
    void write_parameters(const at::Tensor& updated) override;
    void zero_grad() override;
    NamedTensors whole(const at::Tensor& local) const override;
    at::Tensor local_of(const std::map<std::string, at::Tensor>& by_name, const std::string& prefix,
                        const std::string& source) const override;

private:
    std::vector<at::Tensor> parameter_list() const;

    NamedTensors params_;
    dist::Comm* comm_;
    FlatPartition layout_;
    at::TensorOptions fp32_;
};

}  // namespace ftl::zero
