#include "dist/counting_comm.h"

#include <torch/csrc/distributed/c10d/Store.hpp>

namespace ftl::dist {
namespace {

double bytes_of(const at::Tensor& t) { return static_cast<double>(t.numel()) * static_cast<double>(t.element_size()); }

}  // namespace

CountingComm::CountingComm(std::unique_ptr<Comm> inner) : Comm(inner->store()), inner_(std::move(inner)) {}

double CountingComm::share() const {
    const double n = static_cast<double>(inner_->size());
    return (n - 1.0) / n;
}

void CountingComm::all_reduce(at::Tensor& t, ReduceOp op) {
    volume_.all_reduce += 2.0 * share() * bytes_of(t);
    ++volume_.calls;
    inner_->all_reduce(t, op);
}

void CountingComm::all_gather(at::Tensor& out, const at::Tensor& in) {
    volume_.all_gather += share() * bytes_of(out);
    ++volume_.calls;
    inner_->all_gather(out, in);
}

std::unique_ptr<PendingCollective> CountingComm::start_all_gather(at::Tensor& out, const at::Tensor& in) {
    volume_.all_gather += share() * bytes_of(out);
    ++volume_.calls;
    return inner_->start_all_gather(out, in);
}

std::unique_ptr<PendingCollective> CountingComm::start_reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp op) {
    volume_.reduce_scatter += share() * bytes_of(in);
    ++volume_.calls;
    return inner_->start_reduce_scatter(out, in, op);
}

void CountingComm::reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp op) {
    volume_.reduce_scatter += share() * bytes_of(in);
    ++volume_.calls;
    inner_->reduce_scatter(out, in, op);
}

void CountingComm::broadcast(at::Tensor& t, int root) {
    volume_.broadcast += share() * bytes_of(t);
    ++volume_.calls;
    inner_->broadcast(t, root);
}

}  // namespace ftl::dist
