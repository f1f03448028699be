// `ftlaunch [launcher flags] <job> [job flags]`: resolve the whole configuration, then print the
// plan (--dry_run) or start the job's workers.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "commands.h"
#include "dist/comm.h"
#include "launch/plan.h"
#include "train/evaluate.h"
#include "train/seq2seq.h"
#include "train/sft.h"
#include "util/error.h"
#include "util/strings.h"
#include "workers.h"

namespace ftl::app {

namespace {

int run_job_worker(const config::RunConfig& run, const launch::WorkerIdentity& id, launch::LaunchPlan plan,
                   const Log& log) {
    train::RankContext rank;
    rank.rank = id.rank;
    rank.world_size = id.world_size;
    rank.device = worker_device(run.accelerate);
    rank.device_index = id.local_rank;
    if (const char* progress = std::getenv("FTLAUNCH_PROGRESS"))
        rank.progress_bar = std::string(progress) == "1" && !run.train.disable_tqdm;
    if (const char* peak = std::getenv("FTLAUNCH_PEAK_TFLOPS"); peak && *peak) {
        char* end = nullptr;
        const double tflops = std::strtod(peak, &end);
        if (*end != '\0' || !(tflops > 0))
            ftl::fail(ErrorKind::kUsage, "FTLAUNCH_PEAK_TFLOPS: must be a positive number of TFLOP/s (got '" + std::string(peak) + "')");
        rank.peak_tflops = tflops;
    }
    if (const char* limit = std::getenv("FTLAUNCH_MEMORY_PER_RANK"); limit && *limit) {
        rank.memory_per_rank = parse_byte_size(limit);
        if (!rank.memory_per_rank)
            ftl::fail(ErrorKind::kUsage, "FTLAUNCH_MEMORY_PER_RANK: expected a size like 40GB, 80GiB or bytes (got '" +
                                             std::string(limit) + "')");
    }
    rank.status_requested = status_requests();
    const Heartbeat heartbeat = Heartbeat::from_environment();
    rank.heartbeat = &heartbeat;
    std::unique_ptr<dist::Comm> comm;
    if (id.world_size > 1) {
        dist::CommOptions options;
        options.rank = id.rank;
        options.world_size = id.world_size;
        options.master_addr = id.master_addr;
        options.master_port = id.master_port;
        options.backend = rank.device == "cuda" ? "nccl" : "cpu";
        options.device_index = id.local_rank;
        options.timeout = std::chrono::seconds(run.train.ddp_timeout);
        auto counting = std::make_unique<dist::CountingComm>(dist::make_comm(options));
        rank.comm = counting.get();
        rank.comm_volume = &counting->volume();
        comm = std::move(counting);
    }
    // Crash-safety tests: FTLAUNCH_TEST_CRASH_IN_SAVE=<step> kills this rank while that step's
    // checkpoint is half written.
    if (const char* crash = std::getenv("FTLAUNCH_TEST_CRASH_IN_SAVE"); crash && *crash) {
        const long long crash_step = std::atoll(crash);
        rank.during_checkpoint_save = [crash_step](int64_t step) {
            if (step == crash_step) ::raise(SIGKILL);
        };
    }
    // FTLAUNCH_TEST_KILL_IN_STEP=<step>:<rank> kills that rank in the middle of that step.
    if (const char* kill = std::getenv("FTLAUNCH_TEST_KILL_IN_STEP"); kill && *kill) {
        long long kill_step = 0;
        int kill_rank = 0;
        if (std::sscanf(kill, "%lld:%d", &kill_step, &kill_rank) != 2)
            ftl::fail(ErrorKind::kUsage, "FTLAUNCH_TEST_KILL_IN_STEP: expected <step>:<rank> (got '" + std::string(kill) + "')");
        if (kill_rank == id.rank)
            rank.during_step = [kill_step](int64_t step) {
                if (step == kill_step) ::raise(SIGKILL);
            };
    }
    // FTLAUNCH_TEST_CORRUPT_SWAP_IN_STEP=<step> flips one byte of this rank's offload_optimizer
    // swap file in the middle of that step (the next optimizer step must notice).
    if (const char* corrupt = std::getenv("FTLAUNCH_TEST_CORRUPT_SWAP_IN_STEP"); corrupt && *corrupt) {
        if (rank.during_step) ftl::fail(ErrorKind::kUsage, "FTLAUNCH_TEST_CORRUPT_SWAP_IN_STEP: one mid-step test hook at a time");
        const long long corrupt_step = std::atoll(corrupt);
        const std::string folder = run.deepspeed.zero_optimization.offload_optimizer.nvme_path;
        const std::string prefix = "ftlaunch-rank" + std::to_string(id.rank) + "-" + std::to_string(::getpid()) + "-";
        rank.during_step = [corrupt_step, folder, prefix](int64_t step) {
            if (step != corrupt_step) return;
            std::error_code ec;
            for (const auto& entry : std::filesystem::directory_iterator(folder, ec))
                if (entry.path().filename().string().rfind(prefix, 0) == 0) {
                    std::fstream file(entry.path(), std::ios::in | std::ios::out | std::ios::binary);
                    file.seekg(100);
                    const char byte = static_cast<char>(file.get() ^ 0x5a);
                    file.seekp(100);
                    file.put(byte);
                }
        };
    }
    // FTLAUNCH_TEST_STOP_IN_PHASE=<rank>:<text> freezes that rank (SIGSTOP, a hung rank) when it
    // enters the first phase containing <text>.
    if (const char* stop = std::getenv("FTLAUNCH_TEST_STOP_IN_PHASE"); stop && *stop) {
        const std::string spec = stop;
        const size_t colon = spec.find(':');
        if (colon == std::string::npos || colon == 0 || spec.find_first_not_of("0123456789") != colon)
            ftl::fail(ErrorKind::kUsage, "FTLAUNCH_TEST_STOP_IN_PHASE: expected <rank>:<phase text> (got '" + spec + "')");
        if (std::stoi(spec.substr(0, colon)) == id.rank)
            rank.entered_phase = [text = spec.substr(colon + 1)](const std::string& phase) {
                if (phase.find(text) != std::string::npos) ::raise(SIGSTOP);
            };
    }
    if (run.train.job == config::JobKind::kEvaluate) train::run_evaluate(run, rank);
    else if (run.train.job == config::JobKind::kSeq2seqExample) return train::run_seq2seq_example(run, rank, log);
    else {
        // The plan as this job runs it: the rendezvous the launcher settled on.
        plan.master_addr = id.master_addr;
        plan.master_port = id.master_port;
        rank.stop_requested = stop_requests();  // SIGTERM: checkpoint and stop (training only)
        return train::run_sft(run, rank, log, plan.to_json());
    }
    return 0;
}

}  // namespace

int run_launch(const Invocation& inv, const Log& log) {
    if (inv.job_token == "estimate-memory") return run_estimate_memory(inv, log);
    const config::RunConfig run = config::resolve_run_config(inv.flags, inv.job_token, inv.job_argv);
    const auto identity = worker_identity(run.accelerate);
    if (!identity)
        for (const auto& warning : run.warnings) log.warn(warning);

    const launch::LaunchPlan plan = launch::make_launch_plan(run.accelerate, &run.deepspeed, run.uses_deepspeed,
                                                             run.mixed_precision, launch::probe_machine(),
                                                             /*for_real=*/!inv.flags.dry_run && !identity);
    if (inv.flags.dry_run) {
        nlohmann::json out = run.to_json();
        out["launch_plan"] = plan.to_json();
        std::cout << out.dump(2) << std::endl;
        return 0;
    }
    if (identity) return run_job_worker(run, *identity, plan, log);
    return launch_workers(plan, inv.argv, log, std::chrono::seconds(run.train.ddp_timeout));
}

}  // namespace ftl::app
