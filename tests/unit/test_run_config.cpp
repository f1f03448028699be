#include "catch.h"
#include "config/run_config.h"

#include <filesystem>
#include <fstream>

using namespace ftl::config;
using ftl::ErrorKind;

namespace {
std::string seed_config(const std::string& name) { return std::string(FTL_SOURCE_DIR) + "/configs/" + name; }

std::string temp_file(const std::string& name, const std::string& text) {
    const auto path = std::filesystem::temp_directory_path() / ("ftl_test_" + name);
    std::ofstream(path) << text;
    return path.string();
}

LauncherFlags with_config(const std::string& path) {
    LauncherFlags f;
    f.config_file = path;
    return f;
}
}  // namespace

TEST_CASE("seed command 1: 8 ranks, ZeRO-3, bf16, GA 4 in both places", "[config][run]") {
    auto run = resolve_run_config(with_config(seed_config("deepspeed_config.yaml")), "train",
                                  {"--model_name_or_path", "m", "--per_device_train_batch_size", "8",
                                   "--gradient_accumulation_steps", "4", "--bf16", "True"});
    CHECK(run.world_size == 8);
    CHECK(run.uses_deepspeed);
    CHECK(run.mixed_precision == MixedPrecision::kBf16);
    CHECK(run.deepspeed.zero_optimization.stage == 3);
    CHECK(run.deepspeed.train_batch_size == std::optional<long long>(256));
    CHECK(run.deepspeed.zero3_init_flag);
    CHECK(run.deepspeed.zero_optimization.stage3_gather_16bit_weights_on_model_save);
}

TEST_CASE("gradient accumulation in the YAML must match the flag, as HF reports it", "[config][run][errors]") {
    FTL_REQUIRE_ERROR(resolve_run_config(with_config(seed_config("deepspeed_config.yaml")), "train",
                                         {"--model_name_or_path", "m", "--gradient_accumulation_steps", "8"}),
                      ErrorKind::kConfig, "deepspeed_config.yaml",
                      "- ds gradient_accumulation_steps=4 vs hf gradient_accumulation_steps=8");
}

TEST_CASE("launcher flags override the YAML", "[config][run]") {
    LauncherFlags f = with_config(seed_config("deepspeed_config_z3_qlora.yaml"));
    f.num_processes = 4;
    f.zero_stage = 2;
    f.main_process_port = 29700;
    auto run = resolve_run_config(f, "train.py", {"--model_name_or_path", "m", "--gradient_accumulation_steps", "2"});
    CHECK(run.world_size == 4);
    CHECK(run.deepspeed.zero_optimization.stage == 2);
    CHECK_FALSE(run.deepspeed.zero3_init_flag);  // only stage 3 builds into shards
    CHECK(run.deepspeed.gradient_accumulation_steps == std::optional<long long>(2));
    CHECK(run.accelerate.main_process_port == std::optional<int>(29700));
}

TEST_CASE("topology rules", "[config][run][errors]") {
    const std::string uneven = temp_file("uneven.yaml",
                                         "distributed_type: MULTI_GPU\nnum_processes: 3\nnum_machines: 2\n"
                                         "main_process_ip: 10.0.0.1\n");
    FTL_REQUIRE_ERROR(resolve_accelerate_config(with_config(uneven)), ErrorKind::kConfig, "uneven.yaml",
                      "num_processes", "3 processes", "num_machines 2");
    const std::string minus_one = temp_file("minus_one.yaml", "distributed_type: MULTI_GPU\nnum_processes: -1\n");
    FTL_REQUIRE_ERROR(resolve_accelerate_config(with_config(minus_one)), ErrorKind::kConfig,
                      "You need to manually pass in `--num_processes`");
    const std::string no_ip = temp_file("no_ip.yaml", "distributed_type: MULTI_GPU\nnum_processes: 4\nnum_machines: 2\n");
    FTL_REQUIRE_ERROR(resolve_accelerate_config(with_config(no_ip)), ErrorKind::kConfig, "main_process_ip", "required");
    const std::string rank = temp_file("rank.yaml", "distributed_type: MULTI_GPU\nnum_processes: 4\nnum_machines: 2\n"
                                                    "machine_rank: 2\nmain_process_ip: h\n");
    FTL_REQUIRE_ERROR(resolve_accelerate_config(with_config(rank)), ErrorKind::kConfig, "machine_rank", "below num_machines 2");
    const std::string tpu = temp_file("tpu.yaml", "distributed_type: XLA\n");
    FTL_REQUIRE_ERROR(resolve_accelerate_config(with_config(tpu)), ErrorKind::kConfig, "distributed_type", "XLA");
}

TEST_CASE("offload rules hold for the YAML and for launcher flags", "[config][run][errors]") {
    LauncherFlags f = with_config(seed_config("deepspeed_config.yaml"));
    f.zero_stage = 2;
    f.offload_param_device = "cpu";
    FTL_REQUIRE_ERROR(resolve_run_config(f, "train", {"--model_name_or_path", "m", "--gradient_accumulation_steps", "4"}),
                      ErrorKind::kConfig, "offload_param_device", "zero_stage 3", "got 2");
    const std::string nvme = temp_file("nvme.yaml", "distributed_type: DEEPSPEED\nnum_processes: 1\ndeepspeed_config:\n"
                                                    "  zero_stage: 3\n  offload_param_device: nvme\n");
    FTL_REQUIRE_ERROR(resolve_run_config(with_config(nvme), "train", {"--model_name_or_path", "m"}), ErrorKind::kConfig,
                      "nvme.yaml", "offload_param_nvme_path", "required");
}

TEST_CASE("deepspeed_config_file excludes the YAML's DeepSpeed keys", "[config][run][errors]") {
    const std::string json = temp_file("ds.json", R"({"zero_optimization": {"stage": 2}, "gradient_accumulation_steps": "auto"})");
    const std::string clash = temp_file("clash.yaml", "distributed_type: DEEPSPEED\nnum_processes: 1\nmixed_precision: bf16\n"
                                                      "deepspeed_config:\n  deepspeed_config_file: " + json +
                                                      "\n  zero_stage: 3\n");
    FTL_REQUIRE_ERROR(resolve_run_config(with_config(clash), "train", {"--model_name_or_path", "m"}), ErrorKind::kConfig,
                      "When using `deepspeed_config_file`", "zero_stage", "mixed_precision");
    const std::string clean = temp_file("clean.yaml", "distributed_type: DEEPSPEED\nnum_processes: 2\n"
                                                      "deepspeed_config:\n  deepspeed_config_file: " + json + "\n");
    auto run = resolve_run_config(with_config(clean), "train", {"--model_name_or_path", "m", "--gradient_accumulation_steps", "3"});
    CHECK(run.deepspeed.zero_optimization.stage == 2);
    CHECK(run.deepspeed.gradient_accumulation_steps == std::optional<long long>(3));
}

TEST_CASE("FSDP configs map onto ZeRO with a note", "[config][run]") {
    const std::string fsdp = temp_file("fsdp.yaml", "distributed_type: FSDP\nnum_processes: 2\nfsdp_config:\n"
                                                    "  fsdp_sharding_strategy: FULL_SHARD\n  fsdp_offload_params: true\n");
    auto run = resolve_run_config(with_config(fsdp), "train", {"--model_name_or_path", "m"});
    CHECK(run.uses_deepspeed);
    CHECK(run.deepspeed.zero_optimization.stage == 3);
    CHECK(run.deepspeed.zero_optimization.offload_param.device == OffloadDevice::kCpu);
    bool noted = false;
    for (const auto& w : run.warnings) noted |= w.find("FULL_SHARD -> ZeRO stage 3") != std::string::npos;
    CHECK(noted);
}

TEST_CASE("unknown job tokens are refused", "[config][run][errors]") {
    FTL_REQUIRE_ERROR(resolve_run_config(with_config(seed_config("deepspeed_config.yaml")), "finetune.py", {}),
                      ErrorKind::kUsage, "'finetune.py' is not a job", "train.py");
}
