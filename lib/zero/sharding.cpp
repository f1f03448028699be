#include "zero/sharding.h"

#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <functional>
#include <sstream>

#include "util/error.h"

namespace ftl::zero {
at::Tensor gather_segment(dist::Comm* comm, const FlatPartition& layout, const at::Tensor& local, int64_t offset,
                          const at::TensorOptions& options) {
    at::Tensor full = at::empty({layout.padded()}, options);
    const at::Tensor mine = local.narrow(0, offset, layout.shard()).to(options.device(), at::kFloat).contiguous();
    if (comm) comm->all_gather(full, mine);
    else full.copy_(mine);
    return full;
}

std::vector<at::Tensor> find_whole(const std::map<std::string, at::Tensor>& by_name, const std::string& prefix,
                                   const std::vector<std::string>& names, const std::vector<std::vector<int64_t>>& shapes,
                                   const std::string& source) {
    std::vector<at::Tensor> out;
    for (size_t i = 0; i < names.size(); ++i) {
        const auto it = by_name.find(prefix + names[i]);
        if (it == by_name.end()) fail(ErrorKind::kConfig, source + ": missing '" + prefix + names[i] + "'");
        if (it->second.sizes() != at::IntArrayRef(shapes[i])) {
            std::ostringstream what;
            what << source << ": '" << prefix << names[i] << "' has shape " << it->second.sizes() << ", this model's is "
                 << at::IntArrayRef(shapes[i]);
            fail(ErrorKind::kConfig, what.str());
        }
        out.push_back(it->second);
    }
    return out;
}

namespace {

// Calls back when backward has accumulated a tensor's gradient.
struct GradientFinished final : torch::autograd::PostAccumulateGradHook {
    std::function<void()> callback;
    explicit GradientFinished(std::function<void()> f) : callback(std::move(f)) {}
    void operator()(const torch::autograd::Variable&) override { callback(); }
};

}  // namespace

BucketedSharding::BucketedSharding(NamedTensors params, dist::Comm* comm, int rank, int world_size,
                                   int64_t bucket_elements, bool overlap)
    : params_(std::move(params)), comm_(comm), bucket_elements_(bucket_elements), overlap_(overlap) {
    if (params_.empty()) fail(ErrorKind::kInternal, "BucketedSharding: no trainable parameters");
    fp32_ = params_.front().second.options().dtype(at::kFloat);
    std::vector<std::vector<size_t>> groups(1);
    int64_t filled = 0;
    for (size_t i = params_.size(); i-- > 0;) {
        if (filled > 0 && filled + params_[i].second.numel() > bucket_elements) {
            groups.emplace_back();
            filled = 0;
        }
        groups.back().push_back(i);
        filled += params_[i].second.numel();
    }
    for (auto& members : groups) {
        std::vector<int64_t> numels;
        for (size_t i : members) numels.push_back(params_[i].second.numel());
        Bucket bucket{members, FlatPartition(numels, rank, world_size), local_numel_, 0, false, {}, {}, nullptr};
        local_numel_ += bucket.layout.shard();
        buckets_.push_back(std::move(bucket));
    }
    if (!overlap_) return;
    for (size_t b = 0; b < buckets_.size(); ++b)
        for (size_t i : buckets_[b].members)
            torch::autograd::impl::set_post_acc_grad_hooks(
                params_[i].second, std::make_unique<GradientFinished>([this, b] { gradient_finished(b); }));
}

BucketedSharding::~BucketedSharding() {
    if (overlap_)
        for (auto& [name, p] : params_) torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
    for (Bucket& bucket : buckets_)
        if (bucket.pending) {
            try {
                bucket.pending->wait();
            } catch (const std::exception&) {  // the run is ending with the error that mattered
            }
        }
}

std::string BucketedSharding::describe() const {
    return "gradients reduce-scattered in " + std::to_string(buckets_.size()) + " bucket(s) of up to " +
           std::to_string(bucket_elements_) + " elements (reduce_bucket_size), " +
           (overlap_ ? "each as soon as the step's last backward has finished it (overlap_comm)" : "after backward");
}

std::vector<at::Tensor> BucketedSharding::members_of(const Bucket& bucket) const {
    std::vector<at::Tensor> out;
    for (size_t i : bucket.members) out.push_back(params_[i].second.detach());
    return out;
}

void BucketedSharding::reduce_during_next_backward() {
    if (!overlap_) return;
    armed_ = true;
    next_to_start_ = 0;
    for (Bucket& bucket : buckets_) {
        bucket.waiting = static_cast<int>(bucket.members.size());
        bucket.started = false;
    }
}

void BucketedSharding::gradient_finished(size_t b) {
    if (!armed_) return;
    --buckets_[b].waiting;
    while (next_to_start_ < buckets_.size() && buckets_[next_to_start_].waiting <= 0) {
        // The bucket before is complete (or, on CUDA, ordered before what follows): its flat
        // copy can go, so that at most two buckets' copies exist.
        if (next_to_start_ > 0) {
            Bucket& before = buckets_[next_to_start_ - 1];
            if (before.pending) before.pending->wait();
            before.pending.reset();
            before.flat = at::Tensor();
        }
        start_reduction(buckets_[next_to_start_++], /*wait=*/false);
    }
}

void BucketedSharding::start_reduction(Bucket& bucket, bool wait) {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> grads;
    for (size_t i : bucket.members) grads.push_back(params_[i].second.grad());
    bucket.flat = bucket.layout.flatten(grads, fp32_);
    for (size_t i : bucket.members) params_[i].second.mutable_grad() = at::Tensor();  // copied: free it
    bucket.shard = at::empty({bucket.layout.shard()}, fp32_);
    if (!comm_) bucket.shard.copy_(bucket.flat);
    else if (wait) comm_->reduce_scatter(bucket.shard, bucket.flat, dist::ReduceOp::kSum);
    else bucket.pending = comm_->start_reduce_scatter(bucket.shard, bucket.flat, dist::ReduceOp::kSum);
    bucket.started = true;
}

at::Tensor BucketedSharding::local_parameters() const {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> slices;
    for (const Bucket& bucket : buckets_) slices.push_back(bucket.layout.local_of(members_of(bucket), fp32_));
    return at::cat(slices);
}

at::Tensor BucketedSharding::reduced_gradients() {
    // Buckets the armed backward did not start (all of them without overlap) start here, in order.
    std::vector<at::Tensor> shards;
    for (Bucket& bucket : buckets_) {
        if (!bucket.started) start_reduction(bucket, /*wait=*/true);
        if (bucket.pending) bucket.pending->wait();
        bucket.pending.reset();
        bucket.flat = at::Tensor();
        shards.push_back(std::move(bucket.shard));
        bucket.started = false;
    }
    armed_ = false;
    return at::cat(shards);
}

void BucketedSharding::write_parameters(const at::Tensor& updated) {
    at::NoGradGuard no_grad;
    for (const Bucket& bucket : buckets_) {
        const at::Tensor full = gather_segment(comm_, bucket.layout, updated, bucket.local_offset, fp32_);
        for (size_t k = 0; k < bucket.members.size(); ++k) {
            at::Tensor p = params_[bucket.members[k]].second.detach();
            bucket.layout.unflatten_into(full, k, p);
        }
    }
}

void BucketedSharding::zero_grad() {
    for (auto& [name, p] : params_)
        if (p.grad().defined()) p.mutable_grad() = at::Tensor();
}

Sharding::NamedTensors BucketedSharding::whole(const at::Tensor& local) const {
    std::vector<at::Tensor> out(params_.size());
    for (const Bucket& bucket : buckets_) {
        const at::Tensor full = gather_segment(comm_, bucket.layout, local, bucket.local_offset, fp32_);
        for (size_t k = 0; k < bucket.members.size(); ++k) {
            const size_t i = bucket.members[k];
            out[i] = at::empty(params_[i].second.sizes(), fp32_);
            bucket.layout.unflatten_into(full, k, out[i]);
        }
    }
    NamedTensors named;
    for (size_t i = 0; i < params_.size(); ++i) named.emplace_back(params_[i].first, std::move(out[i]));
    return named;
}

std::vector<std::pair<int64_t, int64_t>> BucketedSharding::local_ranges(
    const std::function<bool(const std::string&)>& selected) const {
    std::vector<std::pair<int64_t, int64_t>> ranges;
    for (const Bucket& bucket : buckets_) {
        std::vector<bool> picked;
        for (size_t i : bucket.members) picked.push_back(selected(params_[i].first));
        for (const auto& [begin, end] : bucket.layout.shard_ranges(picked))
            ranges.emplace_back(bucket.local_offset + begin, bucket.local_offset + end);
    }
    return ranges;
}

at::Tensor BucketedSharding::local_of(const std::map<std::string, at::Tensor>& by_name, const std::string& prefix,
                                      const std::string& source) const {
    std::vector<at::Tensor> slices;
    for (const Bucket& bucket : buckets_) {
        std::vector<std::string> names;
        std::vector<std::vector<int64_t>> shapes;
        for (size_t i : bucket.members) {
            names.push_back(params_[i].first);
            shapes.push_back(params_[i].second.sizes().vec());
        }
        // local_of copies only this rank's elements, across devices: the whole tensors stay put.
        slices.push_back(bucket.layout.local_of(find_whole(by_name, prefix, names, shapes, source), fp32_));
    }
    return at::cat(slices);
}

}  // namespace ftl::zero
