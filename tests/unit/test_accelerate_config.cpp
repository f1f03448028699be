#include "catch.h"
#include "config/accelerate_config.h"

using namespace ftl::config;
using ftl::ErrorKind;

namespace {
std::string seed_config(const std::string& name) { return std::string(FTL_SOURCE_DIR) + "/configs/" + name; }
}  // namespace

TEST_CASE("the seed's LoRA ZeRO-3 config parses exactly", "[config]") {
    auto parsed = load_accelerate_config(seed_config("deepspeed_config.yaml"));
    const auto& c = parsed.config;
    CHECK(parsed.warnings.empty());
    CHECK(c.distributed_type == DistributedType::kDeepSpeed);
    CHECK(c.mixed_precision == std::optional<MixedPrecision>(MixedPrecision::kBf16));
    CHECK(c.num_processes == std::optional<int>(8));
    CHECK(c.num_machines == 1);
    CHECK(c.same_network);
    CHECK(c.downcast_bf16 == "no");
    CHECK(c.tpu_env.empty());
    CHECK(c.deepspeed.zero_stage == std::optional<int>(3));
    CHECK(c.deepspeed.gradient_accumulation_steps == std::optional<int>(4));
    CHECK(c.deepspeed.offload_param_device == std::optional<OffloadDevice>(OffloadDevice::kNone));
    CHECK(c.deepspeed.zero3_init_flag == std::optional<bool>(true));
    CHECK(c.deepspeed.zero3_save_16bit_model == std::optional<bool>(true));
    CHECK(c.deepspeed.deepspeed_multinode_launcher == std::optional<MultinodeLauncher>(MultinodeLauncher::kStandard));
}

TEST_CASE("the seed's QLoRA config leaves gradient accumulation to the flags", "[config]") {
    auto c = load_accelerate_config(seed_config("deepspeed_config_z3_qlora.yaml")).config;
    CHECK(c.num_processes == std::optional<int>(2));
    CHECK_FALSE(c.deepspeed.gradient_accumulation_steps.has_value());
}

TEST_CASE("the seed's CPU-offload config converts the legacy dynamo_backend", "[config]") {
    auto parsed = load_accelerate_config(seed_config("ds_zero3_cpu.yaml"));
    const auto& c = parsed.config;
    CHECK(c.num_processes == std::optional<int>(1));
    CHECK(c.mixed_precision == std::optional<MixedPrecision>(MixedPrecision::kNo));
    CHECK(c.deepspeed.offload_optimizer_device == std::optional<OffloadDevice>(OffloadDevice::kCpu));
    CHECK(c.deepspeed.offload_param_device == std::optional<OffloadDevice>(OffloadDevice::kCpu));
    CHECK(c.deepspeed.gradient_clipping == std::optional<double>(1.0));
    CHECK(c.dynamo_config.empty());
    CHECK(c.fsdp_config.empty());
}

TEST_CASE("bad accelerate configs name the file, line, key, value and rule", "[config][errors]") {
    FTL_REQUIRE_ERROR(parse_accelerate_config("num_processes: 2\n", "a.yaml"), ErrorKind::kConfig,
                      "a.yaml", "distributed_type", "missing");
    FTL_REQUIRE_ERROR(parse_accelerate_config("distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 5\n", "b.yaml"),
                      ErrorKind::kConfig, "b.yaml:3", "deepspeed_config.zero_stage", "between 0 and 3", "5");
    FTL_REQUIRE_ERROR(parse_accelerate_config("distributed_type: DEEPSPEED\nnum_processes: eight\n", "c.yaml"),
                      ErrorKind::kConfig, "c.yaml:2", "num_processes", "integer", "eight");
    FTL_REQUIRE_ERROR(parse_accelerate_config("distributed_type: MULTI_TPU\n", "d.yaml"), ErrorKind::kConfig,
                      "d.yaml:1", "distributed_type", "DEEPSPEED", "MULTI_TPU");
    FTL_REQUIRE_ERROR(parse_accelerate_config("distributed_type: NO\nmixed_precision: bf17\n", "e.yaml"),
                      ErrorKind::kConfig, "e.yaml:2", "mixed_precision", "bf16", "bf17");
    FTL_REQUIRE_ERROR(parse_accelerate_config("distributed_type: NO\nuse_cpu: perhaps\n", "f.yaml"),
                      ErrorKind::kConfig, "f.yaml:2", "use_cpu", "true or false");
    FTL_REQUIRE_ERROR(parse_accelerate_config("distributed_type: NO\ndeepspeed_config:\n  offload_param_device: disk\n", "g.yaml"),
                      ErrorKind::kConfig, "g.yaml:3", "offload_param_device", "none, cpu, nvme", "disk");
    FTL_REQUIRE_ERROR(load_accelerate_config("/nonexistent/ftl.yaml"), ErrorKind::kConfig, "/nonexistent/ftl.yaml",
                      "does not exist");
}

TEST_CASE("YAML syntax errors give file:line:column", "[config][errors]") {
    FTL_REQUIRE_ERROR(parse_accelerate_config("distributed_type: NO\nnum_processes: [1, 2\n", "s.yaml"),
                      ErrorKind::kConfig, "s.yaml:", "YAML syntax error");
}

TEST_CASE("a config that is not UTF-8, or holds control characters, is refused with the line and byte", "[config][errors]") {
    // Found by fuzz_accelerate_config: the bytes reached the resolved config's JSON, whose dump threw.
    FTL_REQUIRE_ERROR(parse_accelerate_config("distributed_type: NO\nmain_process_ip: h\xe9st\n", "u.yaml"),
                      ErrorKind::kConfig, "u.yaml:2", "0xe9", "not UTF-8");
    // yaml-cpp turned the rest of a key after a NUL byte into invalid UTF-8.
    FTL_REQUIRE_ERROR(parse_accelerate_config(std::string("distributed_type: NO\nze\0ro: 1\n", 30), "n.yaml"),
                      ErrorKind::kConfig, "n.yaml:2", "0x00", "control character");
    // yaml-cpp decodes YAML's escapes "\_" (no-break space, U+00A0) and "\N" (next line, U+0085) to single bytes.
    for (const char* escape : {"\\_", "\\N"})
        FTL_REQUIRE_ERROR(parse_accelerate_config(std::string("distributed_type: NO\n\"a") + escape + "b\": 1\n", "e.yaml"),
                          ErrorKind::kConfig, "e.yaml:2", "invalid UTF-8", "write the character itself");
    // The character itself is UTF-8 and fine (an unknown key, warned about).
    CHECK_NOTHROW(parse_accelerate_config("distributed_type: NO\n\"a\u00a0b\": 1\n", "e.yaml"));
}

TEST_CASE("unknown keys are warnings that suggest the closest key", "[config]") {
    auto parsed = parse_accelerate_config(
        "distributed_type: DEEPSPEED\nnum_proceses: 2\ndeepspeed_config:\n  zero_stag: 2\n", "u.yaml");
    REQUIRE(parsed.warnings.size() == 2);
    CHECK_THAT(parsed.warnings[0], Catch::Matchers::Contains("u.yaml:2") &&
                                       Catch::Matchers::Contains("num_proceses") &&
                                       Catch::Matchers::Contains("did you mean 'num_processes'"));
    CHECK_THAT(parsed.warnings[1], Catch::Matchers::Contains("deepspeed_config.zero_stag") &&
                                       Catch::Matchers::Contains("zero_stage"));
}

TEST_CASE("legacy fp16 becomes mixed_precision", "[config]") {
    auto parsed = parse_accelerate_config("distributed_type: NO\nfp16: true\n", "l.yaml");
    CHECK(parsed.config.mixed_precision == std::optional<MixedPrecision>(MixedPrecision::kFp16));
    CHECK(parsed.config.num_processes == std::optional<int>(1));
}

TEST_CASE("to_yaml writes what parse reads back", "[config]") {
    auto original = load_accelerate_config(seed_config("deepspeed_config.yaml")).config;
    const std::string yaml = to_yaml(original);
    CHECK_THAT(yaml, Catch::Matchers::Contains("downcast_bf16: 'no'"));
    auto again = parse_accelerate_config(yaml, "roundtrip.yaml");
    CHECK(again.warnings.empty());
    CHECK(again.config.to_json() == original.to_json());
    // Found by fuzz_accelerate_config: a null inside a section kept as given came back as 'null'.
    auto with_null = parse_accelerate_config("distributed_type: FSDP\nfsdp_config:\n  fsdp_x: null\n", "n.yaml").config;
    const std::string written = to_yaml(with_null);
    CHECK_THAT(written, Catch::Matchers::Contains("fsdp_x: null"));
    CHECK(parse_accelerate_config(written, "n2.yaml").config.to_json() == with_null.to_json());
    // Found by fuzz_accelerate_config: a string ending in carriage returns lost one of them.
    auto with_cr = parse_accelerate_config("distributed_type: FSDP\nfsdp_config:\n  fsdp_x: \"A\\r\\r\\r\"\n", "r.yaml").config;
    REQUIRE(with_cr.to_json().dump().find("A\\r\\r\\r\"") != std::string::npos);
    CHECK(parse_accelerate_config(to_yaml(with_cr), "r2.yaml").config.to_json() == with_cr.to_json());
}
