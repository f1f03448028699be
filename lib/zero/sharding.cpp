#include "zero/sharding.h"

#include <ATen/core/grad_mode.h>

#include <sstream>

#include "util/error.h"

namespace ftl::zero {
namespace {

std::vector<int64_t> numels_of(const Sharding::NamedTensors& params) {
    std::vector<int64_t> out;
    for (const auto& [name, t] : params) out.push_back(t.numel());
    return out;
}

}  // namespace

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

FlatSharding::FlatSharding(NamedTensors params, dist::Comm* comm, int rank, int world_size)
    : params_(std::move(params)), comm_(comm), layout_(numels_of(params_), rank, world_size) {
    if (params_.empty()) fail(ErrorKind::kInternal, "FlatSharding: no trainable parameters");
    fp32_ = params_.front().second.options().dtype(at::kFloat);
}

std::vector<at::Tensor> FlatSharding::parameter_list() const {
    std::vector<at::Tensor> out;
    for (const auto& [name, t] : params_) out.push_back(t.detach());
    return out;
}

at::Tensor FlatSharding::local_parameters() const {
    at::NoGradGuard no_grad;
    return layout_.local_of(parameter_list(), fp32_);
}

at::Tensor FlatSharding::reduced_gradients() {
    std::vector<at::Tensor> grads;
    for (const auto& [name, t] : params_) grads.push_back(t.grad());
    const at::Tensor flat_grad = layout_.flatten(grads, fp32_);
    at::Tensor grad = at::empty({layout_.shard()}, fp32_);
    if (comm_) comm_->reduce_scatter(grad, flat_grad, dist::ReduceOp::kSum);
    else grad.copy_(flat_grad);
    return grad;
}

void FlatSharding::write_parameters(const at::Tensor& updated) {
    at::NoGradGuard no_grad;
    at::Tensor full = at::empty({layout_.padded()}, fp32_);
    if (comm_) comm_->all_gather(full, updated);
    else full.copy_(updated);
    for (size_t i = 0; i < params_.size(); ++i) {
        at::Tensor p = params_[i].second.detach();
        layout_.unflatten_into(full, i, p);
    }
}

void FlatSharding::zero_grad() {
    for (auto& [name, p] : params_)
        if (p.grad().defined()) p.mutable_grad() = at::Tensor();
}

Sharding::NamedTensors FlatSharding::whole(const at::Tensor& local) const {
    at::Tensor full = at::empty({layout_.padded()}, fp32_);
    if (comm_) comm_->all_gather(full, local.to(fp32_.device()));
    else full.copy_(local);
    NamedTensors out;
    for (size_t i = 0; i < params_.size(); ++i) {
        at::Tensor t = at::empty(params_[i].second.sizes(), fp32_);
        layout_.unflatten_into(full, i, t);
        out.emplace_back(params_[i].first, t);
    }
    return out;
}

at::Tensor FlatSharding::local_of(const std::map<std::string, at::Tensor>& by_name, const std::string& prefix,
                                  const std::string& source) const {
    std::vector<std::string> names;
    std::vector<std::vector<int64_t>> shapes;
    for (const auto& [name, p] : params_) {
        names.push_back(name);
        shapes.push_back(p.sizes().vec());
    }
    std::vector<at::Tensor> found = find_whole(by_name, prefix, names, shapes, source);
    for (at::Tensor& t : found) t = t.to(fp32_.device());
    return layout_.local_of(found, fp32_);
}

}  // namespace ftl::zero
