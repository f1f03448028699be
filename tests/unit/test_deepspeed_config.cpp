#include "catch.h"
#include "config/deepspeed_config.h"

using namespace ftl::config;
using ftl::ErrorKind;

TEST_CASE("a DeepSpeed JSON with auto values is filled from the training flags", "[config][deepspeed]") {
    auto built = parse_deepspeed_json(R"({
        "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
        "zero_optimization": {"stage": 3, "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                              "stage3_param_persistence_threshold": "auto",
                              "offload_optimizer": {"device": "cpu", "pin_memory": true}}})",
                                      "ds.json");
    CHECK(built.warnings.empty());
    TrainArgs args;
    args.per_device_train_batch_size = 2;
    args.gradient_accumulation_steps = 8;
    args.learning_rate = 3e-4;
    args.weight_decay = 0.01;
    args.max_grad_norm = 0.5;
    DeepSpeedConfig ds = built.config;
    apply_mixed_precision(ds, MixedPrecision::kBf16);
    resolve_with_train_args(ds, args, 4);
    resolve_with_hidden_size(ds, 4096);
    CHECK(ds.train_micro_batch_size_per_gpu == std::optional<long long>(2));
    CHECK(ds.gradient_accumulation_steps == std::optional<long long>(8));
    CHECK(ds.train_batch_size == std::optional<long long>(64));  // 4 ranks x 2 x 8
    CHECK(ds.gradient_clipping == std::optional<double>(0.5));
    CHECK(ds.bf16_enabled == std::optional<bool>(true));
    REQUIRE(ds.optimizer);
    CHECK(ds.optimizer->lr == std::optional<double>(3e-4));
    CHECK(ds.optimizer->beta1 == std::optional<double>(0.9));
    CHECK(ds.optimizer->beta2 == std::optional<double>(0.999));
    CHECK(ds.optimizer->eps == std::optional<double>(1e-8));
    CHECK(ds.optimizer->weight_decay == std::optional<double>(0.01));
    CHECK(ds.to_json()["optimizer"] == nlohmann::json::parse(
              R"({"type": "AdamW", "params": {"lr": 3e-4, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}})"));
    CHECK(ds.zero_optimization.reduce_bucket_size == std::optional<long long>(4096LL * 4096));
    CHECK(ds.zero_optimization.stage3_prefetch_bucket_size == std::optional<long long>(15099494));  // int(0.9 h^2)
    CHECK(ds.zero_optimization.stage3_param_persistence_threshold == std::optional<long long>(40960));
    CHECK(ds.zero_optimization.offload_optimizer.device == OffloadDevice::kCpu);
    CHECK(ds.zero_optimization.offload_optimizer.pin_memory);
}

TEST_CASE("concrete values that disagree with the flags are listed in HF's words", "[config][deepspeed][errors]") {
    auto ds = parse_deepspeed_json(
        R"({"train_micro_batch_size_per_gpu": 16, "gradient_accumulation_steps": 4, "zero_optimization": {"stage": 2}})",
        "ds.json").config;
    TrainArgs args;
    args.per_device_train_batch_size = 8;
    args.gradient_accumulation_steps = 2;
    FTL_REQUIRE_ERROR(resolve_with_train_args(ds, args, 2), ErrorKind::kConfig, "ds.json",
                      "- ds train_micro_batch_size_per_gpu=16 vs hf per_device_train_batch_size=8",
                      "- ds gradient_accumulation_steps=4 vs hf gradient_accumulation_steps=2",
                      "set these DeepSpeed config values to 'auto'");
}

TEST_CASE("DeepSpeed JSON rules", "[config][deepspeed][errors]") {
    FTL_REQUIRE_ERROR(parse_deepspeed_json(R"({"train_batch_size": 8})", "a.json"), ErrorKind::kConfig, "a.json",
                      "zero_optimization", "Please specify the ZeRO optimization config");
    FTL_REQUIRE_ERROR(parse_deepspeed_json(R"({"zero_optimization": {"stage": 2, "offload_param": {"device": "cpu"}}})", "b.json"),
                      ErrorKind::kConfig, "b.json", "zero_optimization.offload_param.device", "stage 3", "got 2");
    FTL_REQUIRE_ERROR(parse_deepspeed_json(R"({"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme"}}})", "c.json"),
                      ErrorKind::kConfig, "c.json", "zero_optimization.offload_param.nvme_path", "required");
    FTL_REQUIRE_ERROR(parse_deepspeed_json(R"({"zero_optimization": {"stage": 7}})", "d.json"), ErrorKind::kConfig,
                      "d.json", "zero_optimization.stage", "0, 1, 2, 3");
    FTL_REQUIRE_ERROR(parse_deepspeed_json("{\n\"zero_optimization\": {\n\"stage\": 3,,\n}}", "e.json"),
                      ErrorKind::kConfig, "e.json:3", "JSON syntax error");
    FTL_REQUIRE_ERROR(parse_deepspeed_json(R"({"zero_optimization": {"stage": "three"}})", "f.json"),
                      ErrorKind::kConfig, "f.json", "zero_optimization.stage", "integer");
    // Found by fuzz_deepspeed_json: nlohmann's overflow exception escaped as a crash.
    FTL_REQUIRE_ERROR(parse_deepspeed_json(R"({"train_batch_size": 1e400, "zero_optimization": {}})", "g.json"),
                      ErrorKind::kConfig, "g.json", "out of range");
    // Found by fuzz_deepspeed_json: a whole float beyond long long was converted (undefined behaviour).
    FTL_REQUIRE_ERROR(parse_deepspeed_json(R"({"zero_optimization": {"stage": 1e111}})", "h.json"),
                      ErrorKind::kConfig, "h.json", "zero_optimization.stage", "integer");
}

TEST_CASE("the accelerate YAML's deepspeed_config keys build the plugin's config", "[config][deepspeed]") {
    AccelerateDeepSpeedSection s;
    s.zero_stage = 3;
    s.offload_param_device = OffloadDevice::kNvme;
    s.offload_param_nvme_path = "/local_nvme";
    s.zero3_save_16bit_model = true;
    auto built = deepspeed_config_from_accelerate(s, "a.yaml");
    CHECK(built.config.zero_optimization.offload_param.nvme_path == "/local_nvme");
    CHECK(built.config.zero_optimization.stage3_gather_16bit_weights_on_model_save);
    CHECK(built.config.zero3_init_flag);  // defaults to true on stage 3
    CHECK_FALSE(built.config.gradient_accumulation_steps.has_value());  // "auto"

    AccelerateDeepSpeedSection bad;
    bad.zero_stage = 2;
    bad.offload_param_device = OffloadDevice::kCpu;
    FTL_REQUIRE_ERROR(deepspeed_config_from_accelerate(bad, "a.yaml"), ErrorKind::kConfig,
                      "deepspeed_config.offload_param_device", "zero_stage 3", "got 2");
    AccelerateDeepSpeedSection no_path;
    no_path.zero_stage = 3;
    no_path.offload_optimizer_device = OffloadDevice::kNvme;
    FTL_REQUIRE_ERROR(deepspeed_config_from_accelerate(no_path, "a.yaml"), ErrorKind::kConfig,
                      "deepspeed_config.offload_optimizer_nvme_path", "required");
}

TEST_CASE("mixed precision conflicts with the file are refused", "[config][deepspeed][errors]") {
    auto ds = parse_deepspeed_json(R"({"bf16": {"enabled": true}, "zero_optimization": {"stage": 1}})", "m.json").config;
    FTL_REQUIRE_ERROR(apply_mixed_precision(ds, MixedPrecision::kFp16), ErrorKind::kConfig, "m.json",
                      "cannot be set to `fp16` when `bf16` is set");
}

TEST_CASE("offload tuning keys ftlaunch does not apply are named in a warning", "[config][deepspeed]") {
    auto built = parse_deepspeed_json(R"({"zero_optimization": {"stage": 3,
        "offload_optimizer": {"device": "nvme", "nvme_path": "/nvme", "buffer_count": 4, "fast_init": false},
        "offload_param": {"device": "nvme", "nvme_path": "/nvme", "buffer_count": 5, "buffer_size": 1e8,
                          "max_in_cpu": 1e9}}})",
                                      "ds.json");
    REQUIRE(built.warnings.size() == 3);  // max_in_cpu is applied
    CHECK_THAT(built.warnings[0], Catch::Matchers::StartsWith("zero_optimization.offload_optimizer.buffer_count 4: read but not applied"));
    CHECK_THAT(built.warnings[2], Catch::Matchers::StartsWith("zero_optimization.offload_param.buffer_size"));
    CHECK(built.config.zero_optimization.offload_param.max_in_cpu == 1000000000);
    CHECK(built.config.zero_optimization.offload_param.buffer_size == 100000000);
}

TEST_CASE("the optimizer and scheduler sections: DeepSpeed's defaults, the flags' autos, the steps", "[config][deepspeed]") {
    auto ds = parse_deepspeed_json(R"({"zero_optimization": {"stage": 2},
        "optimizer": {"type": "Adam", "params": {"lr": "auto", "weight_decay": 0.1, "torch_adam": true}},
        "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
                      "warmup_num_steps": "auto", "total_num_steps": "auto", "warmup_type": "linear"}}})",
                                   "ds.json").config;
    TrainArgs args;
    args.learning_rate = 3e-4;
    args.weight_decay = 0.1;
    args.adam_beta1 = 0.8;  // the section names no betas: DeepSpeed's (0.9, 0.999) stay
    resolve_with_train_args(ds, args, 1);
    REQUIRE(ds.optimizer);
    CHECK(ds.optimizer->lr == std::optional<double>(3e-4));
    CHECK(ds.optimizer->beta1 == std::optional<double>(0.9));
    CHECK(ds.optimizer->weight_decay == std::optional<double>(0.1));
    REQUIRE(ds.scheduler);
    CHECK(ds.scheduler->warmup_min_lr == std::optional<double>(0.0));
    CHECK(ds.scheduler->warmup_max_lr == std::optional<double>(3e-4));
    CHECK_FALSE(ds.scheduler->log_warmup);
    DeepSpeedConfig steps = ds;
    resolve_with_steps(steps, 120, 0, 3e-4);
    CHECK(steps.scheduler->total_num_steps == std::optional<long long>(120));
    CHECK(steps.scheduler->warmup_num_steps == std::optional<long long>(1));  // HF fills at least 1
    CHECK(steps.to_json()["scheduler"]["params"]["total_num_steps"] == 120);

    auto fixed = parse_deepspeed_json(R"({"zero_optimization": {"stage": 1},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "betas": [0.9, 0.95]}},
        "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 10, "warmup_max_lr": 5e-4}}})",
                                      "fixed.json").config;
    FTL_REQUIRE_ERROR(resolve_with_train_args(fixed, args, 1), ErrorKind::kConfig, "fixed.json",
                      "- ds optimizer.params.lr=0.001 vs hf learning_rate=0.0003",
                      "- ds optimizer.params.betas=[0.9,0.95] vs hf adam_beta1+adam_beta2=[0.8,0.999]",
                      "- ds scheduler.params.warmup_max_lr=0.0005 vs hf learning_rate=0.0003");
    auto warmup = parse_deepspeed_json(R"({"zero_optimization": {"stage": 1},
        "scheduler": {"type": "WarmupCosineLR", "params": {"warmup_num_steps": 10, "total_num_steps": 100}}})",
                                       "w.json").config;
    FTL_REQUIRE_ERROR(resolve_with_steps(warmup, 50, 10, 1e-3), ErrorKind::kConfig, "w.json",
                      "- ds scheduler.params.total_num_steps=100 vs hf num_training_steps (calculated)=50");
}

TEST_CASE("optimizer and scheduler sections ftlaunch does not build are errors naming the key", "[config][deepspeed][errors]") {
    auto parse = [](const std::string& sections) {
        return parse_deepspeed_json(R"({"zero_optimization": {"stage": 2}, )" + sections + "}", "s.json");
    };
    FTL_REQUIRE_ERROR(parse(R"("optimizer": {"type": "Lamb"})"), ErrorKind::kConfig, "s.json", "optimizer.type", "Lamb",
                      "AdamW");
    FTL_REQUIRE_ERROR(parse(R"("optimizer": {"type": "Adam", "params": {"adam_w_mode": false}})"), ErrorKind::kConfig,
                      "optimizer.params.adam_w_mode", "L2");
    FTL_REQUIRE_ERROR(parse(R"("optimizer": {"type": "AdamW", "params": {"max_grad_norm": 1.0}})"), ErrorKind::kConfig,
                      "optimizer.params.max_grad_norm", "gradient_clipping");
    FTL_REQUIRE_ERROR(parse(R"("optimizer": {"type": "AdamW", "params": {"betas": [0.9]}})"), ErrorKind::kConfig,
                      "optimizer.params.betas", "[beta1, beta2]");
    FTL_REQUIRE_ERROR(parse(R"("scheduler": {"type": "OneCycle", "params": {}})"), ErrorKind::kConfig, "scheduler.type",
                      "OneCycle", "WarmupCosineLR");
    FTL_REQUIRE_ERROR(parse(R"("scheduler": {"type": "WarmupLR", "params": {"total_num_steps": 10}})"), ErrorKind::kConfig,
                      "scheduler.params.total_num_steps", "not a parameter of DeepSpeed's WarmupLR");
    FTL_REQUIRE_ERROR(parse(R"("scheduler": {"type": "WarmupDecayLR", "params": {"warmup_num_steps": 5}})"),
                      ErrorKind::kConfig, "scheduler.params.total_num_steps", "missing");
    FTL_REQUIRE_ERROR(parse(R"("scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 0}})"), ErrorKind::kConfig,
                      "scheduler.params.warmup_num_steps", "at least 1");
    FTL_REQUIRE_ERROR(parse(R"("scheduler": {"type": "WarmupLR", "params": {"warmup_type": "cubic"}})"), ErrorKind::kConfig,
                      "scheduler.params.warmup_type", "log or linear");
}
