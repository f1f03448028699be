#include "dist/comm_check.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>

namespace ftl::dist {

namespace {

// Compares exactly (inputs are small integers, representable in every dtype tested).
std::string mismatch(const at::Tensor& got, const at::Tensor& want) {
    at::Tensor g = got.to(at::kCPU).to(at::kDouble), w = want.to(at::kCPU).to(at::kDouble);
    if (g.sizes() != w.sizes()) return "shape differs";
    at::Tensor bad = (g != w).nonzero();
    if (bad.size(0) == 0) return "";
    const int64_t i = bad[0][0].item<int64_t>();
    char text[160];
    std::snprintf(text, sizeof(text), "element %lld: got %g, expected %g (%lld wrong)", static_cast<long long>(i),
                  g[i].item<double>(), w[i].item<double>(), static_cast<long long>(bad.size(0)));
    return text;
}

}  // namespace

bool CommCheckReport::all_passed() const {
    for (const auto& c : checks)
        if (!c.passed_everywhere) return false;
    return true;
}

std::string CommCheckReport::table(const std::string& backend, int world_size) const {
    std::string out = "ftlaunch test: " + std::to_string(world_size) + " rank(s), backend " + backend + "\n";
    out += "  check                              result\n";
    for (const auto& c : checks) {
        char line[200];
        std::snprintf(line, sizeof(line), "  %-34s %s%s%s\n", c.name.c_str(), c.passed_everywhere ? "ok" : "FAILED",
                      c.detail.empty() ? "" : "  ", c.detail.c_str());
        out += line;
    }
    char line[200];
    std::snprintf(line, sizeof(line), "  all_reduce %.0f MiB float32: %.3f ms, bus bandwidth %.2f GB/s\n",
                  bandwidth_bytes / (1 << 20), seconds_per_all_reduce * 1e3, bus_bandwidth_gbps);
    out += line;
    out += all_passed() ? "All checks passed.\n" : "Some checks FAILED.\n";
    return out;
}

CommCheckReport run_comm_check(Comm& comm, const std::string& device) {
    const int n = comm.size(), r = comm.rank();
    const auto dev = at::Device(device == "cuda" ? at::kCUDA : at::kCPU);
    CommCheckReport report;
    auto record = [&](const std::string& name, const std::string& detail) {
        report.checks.push_back({name, detail.empty(), detail});
    };

    for (auto dtype : {at::kFloat, at::kBFloat16, at::kLong}) {
        const std::string type = std::string(c10::toString(dtype));
        const int64_t len = 1001;  // not a multiple of the world size
        // all_reduce sum: rank r contributes (r + 1) * (i % 7); the sum is n(n+1)/2 * (i % 7).
        at::Tensor pattern = at::arange(len, at::kLong).remainder(7);
        at::Tensor t = (pattern * (r + 1)).to(dtype).to(dev);
        comm.all_reduce(t, ReduceOp::kSum);
        record("all_reduce sum " + type, mismatch(t, (pattern * (n * (n + 1) / 2)).to(dtype)));
        at::Tensor m = at::full({len}, r, at::TensorOptions().dtype(dtype).device(dev));
        comm.all_reduce(m, ReduceOp::kMax);
        record("all_reduce max " + type, mismatch(m, at::full({len}, n - 1, dtype)));
    }
    {
        const int64_t len = 37;
        at::Tensor in = at::arange(len, at::kFloat).add(1000.0 * r).to(dev);
        at::Tensor out = at::empty({n * len}, in.options());
        comm.all_gather(out, in);
        std::vector<at::Tensor> parts;
        for (int k = 0; k < n; ++k) parts.push_back(at::arange(len, at::kFloat).add(1000.0 * k));
        record("all_gather float32", mismatch(out, at::cat(parts)));
    }
    {
        const int64_t len = 53;
        // Rank r's input: chunk k holds (k + 1) * (r + 1); rank k's result: (k + 1) * n(n+1)/2.
        at::Tensor in = at::arange(n, at::kFloat).add(1).repeat_interleave(len).mul(r + 1).to(dev);
        at::Tensor out = at::empty({len}, in.options());
        comm.reduce_scatter(out, in, ReduceOp::kSum);
        record("reduce_scatter sum float32", mismatch(out, at::full({len}, (r + 1.0) * n * (n + 1) / 2)));
        at::Tensor avg = at::empty({len}, in.options());
        at::Tensor ones = at::full({n * len}, 2.0 * (r + 1), in.options());
        comm.reduce_scatter(avg, ones, ReduceOp::kAvg);
        record("reduce_scatter avg float32", mismatch(avg, at::full({len}, n + 1.0)));
    }
    for (int root : {0, n - 1}) {
        at::Tensor t = (r == root ? at::arange(129, at::kFloat).add(7) : at::zeros({129}, at::kFloat)).to(dev);
        comm.broadcast(t, root);
        record("broadcast from rank " + std::to_string(root), mismatch(t, at::arange(129, at::kFloat).add(7)));
    }
    {  // The trainer's counters and votes are host tensors whatever the backend (NCCL stages them).
        at::Tensor counters = at::full({3}, static_cast<double>(r + 1), at::kDouble);
        comm.all_reduce(counters, ReduceOp::kSum);
        record("all_reduce sum Double (host)", mismatch(counters, at::full({3}, n * (n + 1) / 2.0, at::kDouble)));
    }
    comm.barrier();
    record("barrier", "");

    // Agree on the verdicts: a check passes only if it passed on every rank.
    at::Tensor failures = at::zeros({static_cast<int64_t>(report.checks.size())}, at::kFloat);
    for (size_t i = 0; i < report.checks.size(); ++i) failures[i] = report.checks[i].passed_everywhere ? 0.f : 1.f;
    failures = failures.to(dev);
    comm.all_reduce(failures, ReduceOp::kSum);
    failures = failures.to(at::kCPU);
    for (size_t i = 0; i < report.checks.size(); ++i)
        report.checks[i].passed_everywhere = failures[i].item<float>() == 0.f;

    // Bandwidth: all-reduce of a float32 buffer (64 MiB on GPU, 8 MiB on CPU).
    const int64_t elements = (device == "cuda" ? 64 : 8) * (1 << 20) / 4;
    at::Tensor buffer = at::ones({elements}, at::TensorOptions().dtype(at::kFloat).device(dev));
    comm.all_reduce(buffer, ReduceOp::kSum);  // warm-up
    const int iterations = device == "cuda" ? 20 : 3;
    comm.barrier();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iterations; ++i) comm.all_reduce(buffer, ReduceOp::kSum);
    if (device == "cuda") buffer.sum().item<float>();  // wait for the device
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iterations;
    report.bandwidth_bytes = static_cast<double>(elements) * 4;
    report.seconds_per_all_reduce = seconds;
    report.bus_bandwidth_gbps = n > 1 ? 2.0 * (n - 1) / n * report.bandwidth_bytes / seconds / 1e9 : 0.0;
    return report;
}

}  // namespace ftl::dist
