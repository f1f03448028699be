#include "catch.h"
#include "config/run_config.h"
#include "launch/plan.h"

using namespace ftl;
using namespace ftl::launch;

namespace {
config::AccelerateConfig cluster(int processes, int machines, int machine_rank) {
    config::AccelerateConfig c;
    c.distributed_type = config::DistributedType::kMultiGpu;
    c.num_processes = processes;
    c.num_machines = machines;
    c.machine_rank = machine_rank;
    c.main_process_ip = "10.0.0.1";
    c.main_process_port = 29555;
    return c;
}
}  // namespace

TEST_CASE("machine 1 of 2 starts ranks 4..7 with the torchrun variables", "[launch]") {
    MachineFacts gpus{.visible_gpus = 4, .cpu_cores = 16};
    auto plan = make_launch_plan(cluster(8, 2, 1), nullptr, false, config::MixedPrecision::kBf16, gpus, false);
    CHECK(plan.device == "cuda");
    CHECK(plan.backend == "nccl");
    REQUIRE(plan.local_ranks.size() == 4);
    CHECK(plan.local_ranks[0].rank == 4);
    CHECK(plan.local_ranks[3].rank == 7);
    const auto& env = plan.local_ranks[2].env;
    CHECK(env.at("RANK") == "6");
    CHECK(env.at("LOCAL_RANK") == "2");
    CHECK(env.at("WORLD_SIZE") == "8");
    CHECK(env.at("LOCAL_WORLD_SIZE") == "4");
    CHECK(env.at("GROUP_RANK") == "1");
    CHECK(env.at("MASTER_ADDR") == "10.0.0.1");
    CHECK(env.at("MASTER_PORT") == "29555");
    CHECK(env.at("ACCELERATE_MIXED_PRECISION") == "bf16");
    CHECK(env.at("OMP_NUM_THREADS") == "4");
}

TEST_CASE("DeepSpeed runs export accelerate's ACCELERATE_DEEPSPEED_* variables", "[launch]") {
    config::LauncherFlags flags;
    flags.config_file = std::string(FTL_SOURCE_DIR) + "/configs/deepspeed_config.yaml";
    auto run = config::resolve_run_config(flags, "train",
                                          {"--model_name_or_path", "m", "--gradient_accumulation_steps", "4"});
    auto plan = make_launch_plan(run.accelerate, &run.deepspeed, true, run.mixed_precision,
                                 MachineFacts{.visible_gpus = 8, .cpu_cores = 64}, false);
    const auto& env = plan.local_ranks.at(0).env;
    CHECK(env.at("ACCELERATE_USE_DEEPSPEED") == "true");
    CHECK(env.at("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3");
    CHECK(env.at("ACCELERATE_GRADIENT_ACCUMULATION_STEPS") == "4");
    CHECK(env.at("ACCELERATE_DEEPSPEED_ZERO3_INIT") == "true");
    CHECK(env.at("ACCELERATE_CONFIG_DS_FIELDS") ==
          "deepspeed_multinode_launcher,gradient_accumulation_steps,offload_optimizer_device,offload_param_device,"
          "zero3_init_flag,zero3_save_16bit_model,zero_stage,mixed_precision");
}

TEST_CASE("without GPUs the plan runs on CPU and says so", "[launch]") {
    auto plan = make_launch_plan(cluster(2, 1, 0), nullptr, false, config::MixedPrecision::kNo,
                                 MachineFacts{.visible_gpus = 0, .cpu_cores = 2}, false);
    CHECK(plan.device == "cpu");
    CHECK(plan.backend == "cpu");
    REQUIRE(plan.notes.size() == 1);
    CHECK_THAT(plan.notes[0], Catch::Matchers::Contains("no CUDA device"));
}

TEST_CASE("more ranks than GPUs is an error naming both numbers, a note in a dry run", "[launch][errors]") {
    FTL_REQUIRE_ERROR(make_launch_plan(cluster(8, 1, 0), nullptr, false, config::MixedPrecision::kNo,
                                       MachineFacts{.visible_gpus = 2, .cpu_cores = 8}, true),
                      ErrorKind::kConfig, "8 processes per machine", "only 2 GPU(s)");
    auto dry = make_launch_plan(cluster(8, 1, 0), nullptr, false, config::MixedPrecision::kNo,
                                MachineFacts{.visible_gpus = 2, .cpu_cores = 8}, false);
    REQUIRE(dry.notes.size() == 1);
    CHECK_THAT(dry.notes[0], Catch::Matchers::Contains("only 2 GPU(s)"));
}

TEST_CASE("the openmpi multinode launcher builds an mpirun command from the hostfile", "[launch]") {
    auto c = cluster(8, 2, 0);
    c.deepspeed.deepspeed_multinode_launcher = config::MultinodeLauncher::kOpenmpi;
    c.deepspeed.deepspeed_hostfile = "/job/hostfile";
    auto plan = make_launch_plan(c, nullptr, false, config::MixedPrecision::kNo, MachineFacts{.visible_gpus = 4}, false);
    CHECK(plan.mode == LaunchMode::kMpirun);
    CHECK(plan.mpirun_argv == std::vector<std::string>{"mpirun", "--hostfile", "/job/hostfile", "-n", "8", "--npernode",
                                                       "4", "-x", "MASTER_ADDR=10.0.0.1", "-x", "MASTER_PORT=29555"});
    c.deepspeed.deepspeed_hostfile.reset();
    FTL_REQUIRE_ERROR(make_launch_plan(c, nullptr, false, config::MixedPrecision::kNo, MachineFacts{.visible_gpus = 4}, false),
                      ErrorKind::kConfig, "deepspeed_hostfile", "required");
}

TEST_CASE("port 0 picks a free port on one machine only", "[launch]") {
    auto c = cluster(2, 1, 0);
    c.main_process_port = 0;
    auto plan = make_launch_plan(c, nullptr, false, config::MixedPrecision::kNo, MachineFacts{.visible_gpus = 2}, true);
    CHECK(plan.master_port > 0);
    auto multi = cluster(4, 2, 0);
    multi.main_process_port = 0;
    FTL_REQUIRE_ERROR(make_launch_plan(multi, nullptr, false, config::MixedPrecision::kNo, MachineFacts{.visible_gpus = 2}, true),
                      ErrorKind::kConfig, "main_process_port", "one machine");
}
