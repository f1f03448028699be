// The C++ half of bench/bench_offload.py: times what the Python side compares against.
//
//   ftl_bench_offload adamw PARAMETERS THREADS REPEATS
//     optim::cpu_adamw_update over PARAMETERS fp32 elements on THREADS threads (LibTorch's pool);
//     prints the best time of REPEATS steps, the parameters per second and the form (AVX2, ...).
//   ftl_bench_offload nvme FOLDER BYTES REPEATS BLOCK_SIZE QUEUE_DEPTH THREADS
//     io::DirectFile: writes then reads BYTES in FOLDER (a swap file, removed after); prints the
//     best write and read GB/s and the engine.
#include <ATen/Parallel.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include "io/direct_file.h"
#include "optim/cpu_adamw.h"

using namespace ftl;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

int adamw(int64_t n, int threads, int repeats) {
    at::set_num_threads(threads);
    at::Tensor p = at::randn({n}), g = at::randn({n}), m = at::zeros({n}), v = at::zeros({n});
    const optim::AdamWOptions options{0.9, 0.999, 1e-8, 0.01};
    double best = 1e30;
    for (int r = 0; r < repeats; ++r) {
        const auto start = Clock::now();
        optim::cpu_adamw_update(p, g, m, v, r + 1, 1e-3, options);
        best = std::min(best, seconds_since(start));
    }
    std::printf("{\"seconds\": %.6f, \"parameters_per_second\": %.1f, \"form\": \"%s\"}\n", best,
                static_cast<double>(n) / best, optim::isa_name(optim::best_cpu_isa()).c_str());
    return 0;
}

int nvme(const std::string& folder, uint64_t bytes, int repeats, const io::AioOptions& options) {
    bytes = io::direct_size(bytes);
    const std::string path = folder + "/ftl-bench-" + std::to_string(::getpid()) + ".swap";
    double best_write = 1e30, best_read = 1e30;
    std::string engine;
    {
        const io::DirectFile file(path, bytes, options, "benchmark swap file");
        engine = file.engine();
        io::AlignedBuffer buffer(bytes);
        std::fill_n(static_cast<char*>(buffer.data()), bytes, 'x');
        for (int r = 0; r < repeats; ++r) {
            auto start = Clock::now();
            file.write(buffer.data(), bytes, 0);
            const int fd = ::open(path.c_str(), O_RDONLY);  // what dd conv=fdatasync also waits for
            ::fdatasync(fd);
            ::close(fd);
            best_write = std::min(best_write, seconds_since(start));
            start = Clock::now();
            file.read(buffer.data(), bytes, 0);
            best_read = std::min(best_read, seconds_since(start));
        }
    }
    ::unlink(path.c_str());
    std::printf("{\"write_gb_per_s\": %.3f, \"read_gb_per_s\": %.3f, \"engine\": \"%s\"}\n",
                static_cast<double>(bytes) / best_write / 1e9, static_cast<double>(bytes) / best_read / 1e9, engine.c_str());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "adamw" && argc == 5) return adamw(std::stoll(argv[2]), std::stoi(argv[3]), std::stoi(argv[4]));
    if (mode == "nvme" && argc == 8) {
        io::AioOptions options;
        options.block_size = std::stoull(argv[5]);
        options.queue_depth = std::stoi(argv[6]);
        options.thread_count = std::stoi(argv[7]);
        return nvme(argv[2], std::stoull(argv[3]), std::stoi(argv[4]), options);
    }
    std::fprintf(stderr,
                 "usage: ftl_bench_offload adamw PARAMETERS THREADS REPEATS\n"
                 "       ftl_bench_offload nvme FOLDER BYTES REPEATS BLOCK_SIZE QUEUE_DEPTH THREADS\n");
    return 2;
}
