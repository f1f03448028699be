// config.json parsing (both rope layouts, windows, defaults) and the load-time checks that name
// the tensor, the file and both shapes. Numerics are in tests/parity/test_model_parity.py.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "io/safetensors_writer.h"
#include "model/load.h"
#include "model/model_config.h"
#include "model/tensor_io.h"
#include "catch.h"  // last: replaces c10's CHECK macro

using namespace ftl;
using namespace ftl::model;

namespace {
const std::string kLlama = R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8,
  "intermediate_size": 12, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1)";
}

TEST_CASE("config.json: old and new rope layouts read the same", "[model]") {
    auto old_style = parse_decoder_config(
        kLlama + R"(, "rope_theta": 500000.0, "rope_scaling": {"type": "llama3", "factor": 8.0,
           "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})",
        "config.json");
    auto new_style = parse_decoder_config(
        kLlama + R"(, "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
           "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})",
        "config.json");
    for (const auto& c : {old_style, new_style}) {
        CHECK(c.rope.type == RopeType::kLlama3);
        CHECK(c.rope.theta == 500000.0);
        CHECK(c.rope.original_max_position_embeddings == 8192);
        CHECK(c.head_dim == 4);
        CHECK(c.num_kv_heads == 1);
    }
}

TEST_CASE("config.json: sliding windows per family", "[model]") {
    const std::string shape = R"("vocab_size": 10, "hidden_size": 8, "intermediate_size": 12,
        "num_hidden_layers": 3, "num_attention_heads": 2)";
    auto mistral = parse_decoder_config(R"({"model_type": "mistral", )" + shape + "}", "c");
    CHECK((mistral.layer_window == std::vector<std::optional<int64_t>>(3, 4096)));  // MistralConfig default
    auto mistral_none = parse_decoder_config(R"({"model_type": "mistral", "sliding_window": null, )" + shape + "}", "c");
    CHECK((mistral_none.layer_window == std::vector<std::optional<int64_t>>(3, std::nullopt)));
    auto qwen = parse_decoder_config(R"({"model_type": "qwen2", "use_sliding_window": true,
        "sliding_window": 16, "max_window_layers": 2, )" + shape + "}", "c");
    const std::vector<std::optional<int64_t>> last_layer_only{std::nullopt, std::nullopt, 16};
    CHECK((qwen.layer_window == last_layer_only));
    CHECK(qwen.qkv_bias);
    auto qwen_off = parse_decoder_config(R"({"model_type": "qwen2", "sliding_window": 16, )" + shape + "}", "c");
    CHECK((qwen_off.layer_window == std::vector<std::optional<int64_t>>(3, std::nullopt)));
    auto qwen3 = parse_decoder_config(R"({"model_type": "qwen3", "use_sliding_window": true,
        "sliding_window": 16, "max_window_layers": 2, )" + shape + "}", "c");
    CHECK((qwen3.layer_window == last_layer_only));
}

TEST_CASE("config.json: qwen3's q/k norms, head_dim and bias defaults", "[model]") {
    const std::string shape = R"("vocab_size": 10, "hidden_size": 8, "intermediate_size": 12,
        "num_hidden_layers": 1, "num_attention_heads": 2)";
    auto plain = parse_decoder_config(R"({"model_type": "qwen3", )" + shape + "}", "c");
    CHECK(plain.qk_norm);
    CHECK(plain.head_dim == 128);  // Qwen3Config's default, not hidden / heads
    CHECK(plain.max_position_embeddings == 32768);
    CHECK_FALSE(plain.qkv_bias);
    CHECK_FALSE(plain.o_bias);
    auto biased = parse_decoder_config(R"({"model_type": "qwen3", "head_dim": 4, "attention_bias": true, )" + shape + "}", "c");
    CHECK(biased.head_dim == 4);
    CHECK((biased.qkv_bias && biased.o_bias && !biased.mlp_bias));
    CHECK_FALSE(parse_decoder_config(kLlama + "}", "c").qk_norm);
}

TEST_CASE("config.json: granite's multipliers, 1 by default and on other families", "[model]") {
    const std::string shape = R"("vocab_size": 10, "hidden_size": 8, "intermediate_size": 12,
        "num_hidden_layers": 1, "num_attention_heads": 2)";
    auto scaled = parse_decoder_config(R"({"model_type": "granite", "embedding_multiplier": 12.0,
        "residual_multiplier": 0.22, "logits_scaling": 8, "attention_multiplier": 0.015625, )" + shape + "}", "c");
    CHECK(scaled.embedding_multiplier == 12.0);
    CHECK(scaled.residual_multiplier == 0.22);
    CHECK(scaled.logits_scaling == 8.0);
    CHECK(scaled.attention_multiplier == 0.015625);
    auto plain = parse_decoder_config(R"({"model_type": "granite", )" + shape + "}", "c");
    CHECK(plain.attention_multiplier == 1.0);  // GraniteConfig's default, not 1/sqrt(head_dim)
    CHECK(plain.logits_scaling == 1.0);
    CHECK_FALSE(parse_decoder_config(kLlama + R"(, "logits_scaling": 8})", "c").attention_multiplier);
    FTL_REQUIRE_ERROR(parse_decoder_config(R"({"model_type": "granite", "logits_scaling": 0, )" + shape + "}", "c"),
                      ErrorKind::kConfig, "logits_scaling", "0");
}

TEST_CASE("config.json: smollm3's layers without rotation, and its windows on them", "[model]") {
    const std::string shape = R"("vocab_size": 10, "hidden_size": 8, "intermediate_size": 12,
        "num_hidden_layers": 8, "num_attention_heads": 2)";
    auto every_fourth = parse_decoder_config(R"({"model_type": "smollm3", )" + shape + "}", "c");
    CHECK((every_fourth.layer_rope == std::vector<bool>{true, true, true, false, true, true, true, false}));
    CHECK(every_fourth.tie_word_embeddings);  // SmolLM3Config's default
    CHECK((every_fourth.layer_window == std::vector<std::optional<int64_t>>(8, std::nullopt)));
    auto windowed = parse_decoder_config(R"({"model_type": "smollm3", "no_rope_layer_interval": 2,
        "use_sliding_window": true, "sliding_window": 16, )" + shape + "}", "c");
    CHECK(windowed.layer_window[0] == std::nullopt);
    CHECK(windowed.layer_window[1] == 16);
    CHECK((parse_decoder_config(kLlama + "}", "c").layer_rope == std::vector<bool>{true}));
    FTL_REQUIRE_ERROR(parse_decoder_config(R"({"model_type": "smollm3", "no_rope_layers": [1, 0], )" + shape + "}", "c"),
                      ErrorKind::kConfig, "no_rope_layers", "one 0 or 1 per layer");
}

TEST_CASE("config.json: the Gemmas' defaults, caps, windows and two rotations", "[model]") {
    const std::string shape = R"("vocab_size": 10, "hidden_size": 8, "intermediate_size": 12,
        "num_hidden_layers": 6, "num_attention_heads": 2)";
    auto gemma = parse_decoder_config(R"({"model_type": "gemma", "hidden_act": "gelu", )" + shape + "}", "c");
    CHECK(gemma.activation == GateActivation::kGeluTanh);  // the legacy "gelu" read as GemmaConfig reads it
    CHECK((gemma.unit_offset_norms && gemma.embeddings_scaled && gemma.tie_word_embeddings));
    CHECK_FALSE(gemma.sandwich_norms);
    CHECK((gemma.head_dim == 256 && gemma.max_position_embeddings == 8192));
    CHECK_FALSE((gemma.attention_multiplier || gemma.attn_logit_softcapping || gemma.final_logit_softcapping));

    auto gemma2 = parse_decoder_config(R"({"model_type": "gemma2", )" + shape + "}", "c");
    CHECK(gemma2.sandwich_norms);
    CHECK(gemma2.attention_multiplier == 1.0 / 16);  // query_pre_attn_scalar 256
    CHECK((gemma2.attn_logit_softcapping == 50.0 && gemma2.final_logit_softcapping == 30.0));
    const std::optional<int64_t> none;
    CHECK((gemma2.layer_window == std::vector<std::optional<int64_t>>{4096, none, 4096, none, 4096, none}));
    auto uncapped = parse_decoder_config(R"({"model_type": "gemma2", "attn_logit_softcapping": null,
        "final_logit_softcapping": null, "sliding_window": null, )" + shape + "}", "c");
    CHECK_FALSE((uncapped.attn_logit_softcapping || uncapped.final_logit_softcapping));
    CHECK((uncapped.layer_window == std::vector<std::optional<int64_t>>(6, none)));

    // gemma3 as the hub's files write it before transformers 5: five sliding layers in six, the
    // full ones scaled linearly at base rope_theta, the sliding ones at rope_local_base_freq.
    auto gemma3 = parse_decoder_config(R"({"model_type": "gemma3_text", "sliding_window": 512,
        "sliding_window_pattern": 6, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "attn_logit_softcapping": 50.0, )" + shape + "}", "c");
    CHECK((gemma3.layer_window == std::vector<std::optional<int64_t>>{512, 512, 512, 512, 512, none}));
    CHECK((gemma3.qk_norm && gemma3.sandwich_norms && gemma3.max_position_embeddings == 131072));
    CHECK_FALSE(gemma3.attn_logit_softcapping);  // Gemma3Attention never passes it on
    CHECK_FALSE(gemma3.final_logit_softcapping);
    CHECK((gemma3.rope.type == RopeType::kLinear && gemma3.rope.factor == 8.0 && gemma3.rope.theta == 1e6));
    REQUIRE(gemma3.sliding_rope);
    CHECK((gemma3.sliding_rope->type == RopeType::kDefault && gemma3.sliding_rope->theta == 1e4));
    CHECK(&gemma3.rope_of_layer(0) == &*gemma3.sliding_rope);
    CHECK(&gemma3.rope_of_layer(5) == &gemma3.rope);
    // transformers 5's layout: one rope object per layer type; missing thetas take the defaults.
    auto nested = parse_decoder_config(R"({"model_type": "gemma3_text", "layer_types": ["full_attention",
        "sliding_attention", "full_attention", "sliding_attention", "full_attention", "sliding_attention"],
        "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0}}, )" + shape + "}", "c");
    CHECK((nested.rope.type == RopeType::kLinear && nested.rope.theta == 1e6 && nested.sliding_rope->theta == 1e4));
    CHECK((nested.layer_window[0] == none && nested.layer_window[1] == 4096));

    FTL_REQUIRE_ERROR(parse_decoder_config(R"({"model_type": "gemma2", "hidden_activation": "relu", )" + shape + "}", "c"),
                      ErrorKind::kConfig, "hidden_activation", "gelu_pytorch_tanh", "relu");
    FTL_REQUIRE_ERROR(parse_decoder_config(R"({"model_type": "gemma2", "attn_logit_softcapping": 0, )" + shape + "}", "c"),
                      ErrorKind::kConfig, "attn_logit_softcapping", "> 0, or null");
    FTL_REQUIRE_ERROR(parse_decoder_config(R"({"model_type": "gemma3_text", "sliding_window": null, )" + shape + "}", "c"),
                      ErrorKind::kConfig, "sliding_window", "integer");
    FTL_REQUIRE_ERROR(parse_decoder_config(R"({"model_type": "gemma3_text", "rope_parameters": {"rope_type": "default",
        "rope_theta": 10000.0}, )" + shape + "}", "c"), ErrorKind::kConfig, "rope_parameters", "full_attention, sliding_attention");
    FTL_REQUIRE_ERROR(parse_decoder_config(R"({"model_type": "gemma", "use_bidirectional_attention": true, )" + shape + "}", "c"),
                      ErrorKind::kConfig, "use_bidirectional_attention", "causal");
    // Gemma 3's image-and-text checkpoints: text_config is the decoder (tied by the top level's
    // default), vision_config the carried tower's shape.
    const std::string vision = R"("vision_config": {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "image_size": 28, "patch_size": 14, "vision_use_head": false})";
    auto multimodal = parse_decoder_config(R"({"model_type": "gemma3", "dtype": "bfloat16", "eos_token_id": 1,
        "text_config": {"sliding_window": 512, )" + shape + "}, " + vision + "}", "c");
    CHECK((multimodal.model_type == "gemma3_text" && multimodal.tie_word_embeddings && multimodal.torch_dtype == "bfloat16"));
    CHECK((multimodal.eos_token_id == 1 && multimodal.qk_norm && multimodal.module_prefix() == "model.language_model."));
    REQUIRE(multimodal.vision);
    CHECK((multimodal.vision->num_layers == 2 && multimodal.vision->layer_linears().front().path == "self_attn.k_proj"));
    // 3*14*14*32 + 32 + 4*32 patches, 2 x (4 x 32*33 + 48*33 + 32*49 + 4*32), 2*32, projector 32*64 + 32
    CHECK(multimodal.vision->parameters(64) == 18816 + 32 + 128 + 2 * (4224 + 1584 + 1568 + 128) + 64 + 2048 + 32);
    FTL_REQUIRE_ERROR(parse_decoder_config(R"({"model_type": "gemma3", "text_config": {}})", "c"), ErrorKind::kConfig,
                      "vision_config", "SigLIP");
    FTL_REQUIRE_ERROR(parse_decoder_config(R"({"model_type": "gemma3", "text_config": {)" + shape +
                                               R"(}, "vision_config": {"hidden_size": 32}})", "c"),
                      ErrorKind::kConfig, "c: vision_config: vision_use_head", "pooling head");
}

TEST_CASE("config.json: phi3's fused linears, partial rotation and longrope", "[model]") {
    const std::string shape = R"("vocab_size": 10, "hidden_size": 64, "intermediate_size": 12,
        "num_hidden_layers": 2, "num_attention_heads": 4)";
    auto phi3 = parse_decoder_config(R"({"model_type": "phi3", )" + shape + "}", "c");
    CHECK((phi3.fused_projections && !phi3.tie_word_embeddings && !phi3.qkv_bias));
    CHECK((phi3.rms_norm_eps == 1e-5 && phi3.max_position_embeddings == 4096));  // Phi3Config's defaults
    CHECK((phi3.rotary_dim() == 16 && phi3.layer_window == std::vector<std::optional<int64_t>>(2, std::nullopt)));
    // Phi-3.5-mini's layout: longrope in rope_scaling, factor from the two context lengths,
    // attention_factor sqrt(1 + ln 32 / ln 4096), one window on every layer.
    auto longrope = parse_decoder_config(R"({"model_type": "phi3", "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096, "sliding_window": 262144, "partial_rotary_factor": 0.75,
        "rope_scaling": {"type": "longrope", "short_factor": [1, 1, 1, 1, 1, 1], "long_factor": [2, 2, 2, 2, 2, 2]}, )" +
                                         shape + "}", "c");
    CHECK(longrope.rope.type == RopeType::kLongrope);
    CHECK((longrope.rope.factor == 32.0 && longrope.rope.original_max_position_embeddings == 4096));
    CHECK(longrope.rope.attention_factor == Approx(std::sqrt(1.0 + std::log(32.0) / std::log(4096.0))));
    CHECK((longrope.rotary_dim() == 12 && longrope.layer_window[1] == 262144));
    // Phi3Config's original_max_position_embeddings (4096 when absent) wins over the rope object's,
    // as transformers' standardize_rope_params gives the attribute priority.
    auto unstated = parse_decoder_config(R"({"model_type": "phi3", "max_position_embeddings": 131072,
        "rope_scaling": {"type": "longrope", "original_max_position_embeddings": 8192,
        "short_factor": [1, 1, 1, 1, 1, 1, 1, 1], "long_factor": [2, 2, 2, 2, 2, 2, 2, 2]}, )" + shape + "}", "c");
    CHECK((unstated.rope.original_max_position_embeddings == 4096 && unstated.rope.factor == 32.0));
    auto llama3 = parse_decoder_config(kLlama + R"(, "original_max_position_embeddings": 4096, "rope_parameters":
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 8192}})", "c");
    CHECK(llama3.rope.original_max_position_embeddings == 4096);
    FTL_REQUIRE_ERROR(parse_decoder_config(R"({"model_type": "phi3", "rope_scaling": {"type": "longrope",
        "short_factor": [1, 1], "long_factor": [2, 2]}, )" + shape + "}", "c"),
                      ErrorKind::kConfig, "short_factor and long_factor", "(8)");
    FTL_REQUIRE_ERROR(parse_decoder_config(R"({"model_type": "phi3", "resid_pdrop": 0.1, )" + shape + "}", "c"),
                      ErrorKind::kConfig, "resid_pdrop", "0.1");
    FTL_REQUIRE_ERROR(parse_decoder_config(R"({"model_type": "phi3", "rope_scaling": {"type": "linear", "factor": 2}, )" +
                                           shape + "}", "c"),
                      ErrorKind::kConfig, "default or longrope");
    FTL_REQUIRE_ERROR(parse_decoder_config(kLlama + R"(, "partial_rotary_factor": 0.5})", "c"), ErrorKind::kConfig,
                      "partial_rotary_factor", "phi3");
}

TEST_CASE("config.json: OLMo 2 and 3's norms, windows and two rotations", "[model]") {
    const std::string shape = R"("vocab_size": 10, "hidden_size": 64, "intermediate_size": 12,
        "num_hidden_layers": 8, "num_attention_heads": 4)";
    auto olmo2 = parse_decoder_config(R"({"model_type": "olmo2", )" + shape + "}", "c");
    CHECK((olmo2.post_norms && olmo2.qk_norm && olmo2.qk_norm_whole && olmo2.weight_in_fp32_norms));
    CHECK((!olmo2.sandwich_norms && !olmo2.qkv_bias && !olmo2.tie_word_embeddings && !olmo2.sliding_rope));
    CHECK((olmo2.rms_norm_eps == 1e-5 && olmo2.max_position_embeddings == 2048));  // Olmo2Config's defaults
    CHECK((olmo2.layer_window == std::vector<std::optional<int64_t>>(8, std::nullopt)));
    // Olmo3Config: windows of 4096 on three of every four layers, each layer type its own rotation.
    auto olmo3 = parse_decoder_config(R"({"model_type": "olmo3", "rope_parameters": {
        "full_attention": {"rope_type": "default", "rope_theta": 500000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}, )" + shape + "}", "c");
    CHECK((olmo3.layer_window[0] == 4096 && olmo3.layer_window[2] == 4096 && !olmo3.layer_window[3] && !olmo3.layer_window[7]));
    CHECK((olmo3.rope.theta == 500000.0 && olmo3.sliding_rope && olmo3.sliding_rope->theta == 10000.0));
    CHECK(&olmo3.rope_of_layer(0) == &*olmo3.sliding_rope);
    // The older layout: one rope_theta for both layer types.
    auto older = parse_decoder_config(R"({"model_type": "olmo3", "rope_theta": 20000.0, "sliding_window": 8, )" + shape + "}", "c");
    CHECK((older.rope.theta == 20000.0 && older.sliding_rope->theta == 20000.0 && older.layer_window[1] == 8));
    // OLMo 3's long-context layout: YaRN on the full-attention layers only.
    auto long_context = parse_decoder_config(R"({"model_type": "olmo3", "max_position_embeddings": 65536, "rope_parameters": {
        "full_attention": {"rope_type": "yarn", "rope_theta": 500000.0, "factor": 8.0, "original_max_position_embeddings": 8192,
                           "beta_fast": 32, "beta_slow": 1, "truncate": false},
        "sliding_attention": {"rope_type": "default", "rope_theta": 500000.0}}, )" + shape + "}", "c");
    CHECK((long_context.rope.type == RopeType::kYarn && long_context.sliding_rope->type == RopeType::kDefault));
    CHECK(long_context.rope.attention_factor == Approx(0.1 * std::log(8.0) + 1.0));
    CHECK(long_context.rope.truncate);  // transformers reads truncate from the outer object only
    FTL_REQUIRE_ERROR(parse_decoder_config(R"({"model_type": "olmo3", "sliding_window": null, )" + shape + "}", "c"),
                      ErrorKind::kConfig, "sliding_window", "olmo3");
    FTL_REQUIRE_ERROR(parse_decoder_config(R"({"model_type": "olmo2", "hidden_act": "gelu", )" + shape + "}", "c"),
                      ErrorKind::kConfig, "hidden_act", "olmo2");
}

TEST_CASE("config.json: gpt-oss's sinks, windows, YaRN and experts", "[model]") {
    const std::string shape = R"("vocab_size": 10, "hidden_size": 64, "intermediate_size": 32,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2)";
    // GptOssConfig's defaults: head_dim 64, biases, windows of 128 on the even layers, YaRN 32x over
    // 4096 positions at theta 150000 without truncation, 128 experts of which 4 a token.
    auto c = parse_decoder_config(R"({"model_type": "gpt_oss", )" + shape + "}", "c");
    CHECK((c.head_dim == 64 && c.qkv_bias && c.o_bias && c.attention_sinks && c.weight_in_fp32_norms));
    CHECK((c.layer_window[0] == 128 && !c.layer_window[1] && c.layer_window[2] == 128 && !c.layer_window[3]));
    CHECK((c.rope.type == RopeType::kYarn && c.rope.factor == 32.0 && c.rope.theta == 150000.0 && !c.rope.truncate));
    CHECK(c.rope.original_max_position_embeddings == 4096);
    REQUIRE(c.moe);
    CHECK((c.moe->num_experts == 128 && c.moe->experts_per_token == 4 && c.moe->expert_intermediate_size == 32));
    CHECK((c.moe->softmax_after_top_k && c.moe->biases && c.moe->interleaved_gate_up && c.moe->stacks_in_out));
    CHECK((c.moe->swiglu_limit == 7.0 && c.moe->swiglu_alpha == 1.702 && c.moe->router_name == "router" && c.moe->router_first));
    CHECK((c.is_moe_layer(0) && c.is_moe_layer(3) && !c.mxfp4_checkpoint));
    // The hub's checkpoints: MXFP4 experts (dequantised on load); other quantisation methods refused.
    auto hub = parse_decoder_config(R"({"model_type": "gpt_oss", "quantization_config": {"quant_method": "mxfp4"},
        "sliding_window": null, "rope_scaling": {"rope_type": "default"}, )" + shape + "}", "c");
    CHECK((hub.mxfp4_checkpoint && !hub.layer_window[0] && hub.rope.type == RopeType::kDefault && hub.rope.theta == 150000.0));
    FTL_REQUIRE_ERROR(parse_decoder_config(R"({"model_type": "llama", "quantization_config": {"quant_method": "mxfp4"},)" +
                                               shape + "}", "c"),
                      ErrorKind::kConfig, "quantization_config", "gpt_oss's mxfp4");
    FTL_REQUIRE_ERROR(parse_decoder_config(R"({"model_type": "gpt_oss", "swiglu_limit": 0, )" + shape + "}", "c"),
                      ErrorKind::kConfig, "swiglu_limit", "> 0");
    // The load-balancing loss's weight: the config's (gpt-oss's released 0.9), else transformers' default.
    CHECK(parse_decoder_config(R"({"model_type": "gpt_oss", "router_aux_loss_coef": 0.9, )" + shape + "}", "c")
              .moe->router_aux_loss_coef == 0.9);
    CHECK(parse_decoder_config(R"({"model_type": "gpt_oss", )" + shape + "}", "c").moe->router_aux_loss_coef == 0.001);
}

TEST_CASE("config.json: bad values name the key, the value and the rule", "[model]") {
    FTL_REQUIRE_ERROR(parse_decoder_config(R"({"model_type": "gpt2"})", "m/config.json"), ErrorKind::kConfig,
                      "m/config.json: model_type", "llama, mistral, qwen2, qwen3, granite, smollm3", "\"gpt2\"");
    FTL_REQUIRE_ERROR(parse_decoder_config(kLlama + R"(, "num_key_value_heads": 3})", "c"), ErrorKind::kConfig,
                      "num_key_value_heads", "divide");
    FTL_REQUIRE_ERROR(parse_decoder_config(R"({"model_type": "llama", "vocab_size": 10})", "c"),
                      ErrorKind::kConfig, "hidden_size", "required integer", "missing");
    FTL_REQUIRE_ERROR(parse_decoder_config(kLlama + R"(, "rope_scaling": {"type": "ntk", "factor": 4}})", "c"),
                      ErrorKind::kConfig, "rope_scaling: type", "default, linear, dynamic, llama3");
    FTL_REQUIRE_ERROR(parse_decoder_config(kLlama + R"(, "rope_scaling": {"type": "yarn"}})", "c"), ErrorKind::kConfig,
                      "factor", "required for rope_type yarn");
    // YaRN's attention scale: 0.1 ln(factor) + 1, or DeepSeek's ratio with mscale / mscale_all_dim.
    auto yarn = parse_decoder_config(kLlama + R"(, "rope_scaling": {"type": "yarn", "factor": 4, "mscale": 1.0,
        "mscale_all_dim": 0.5, "beta_fast": 0}})", "c");
    CHECK(yarn.rope.attention_factor == Approx((0.1 * std::log(4.0) + 1.0) / (0.05 * std::log(4.0) + 1.0)));
    CHECK((yarn.rope.beta_fast == 32.0 && yarn.rope.beta_slow == 1.0 && yarn.rope.truncate));
    FTL_REQUIRE_ERROR(parse_decoder_config(kLlama + R"(, "hidden_act": "gelu"})", "c"), ErrorKind::kConfig,
                      "hidden_act", "silu");
    FTL_REQUIRE_ERROR(parse_decoder_config("{\"model_type\": ", "c"), ErrorKind::kConfig, "malformed");
}

TEST_CASE("loading names a missing tensor and a wrong shape", "[model]") {
    char templ[] = "/tmp/ftl_model_test_XXXXXX";
    const std::string dir = ::mkdtemp(templ);
    { std::ofstream(dir + "/config.json") << kLlama + R"(, "tie_word_embeddings": true})"; }
    at::Tensor embed = at::zeros({10, 8});
    io::write_safetensors(dir + "/model.safetensors", {{"model.embed_tokens.weight", view_of(embed)}});
    FTL_REQUIRE_ERROR(load_causal_lm(dir), ErrorKind::kConfig, "model.layers.0.input_layernorm.weight",
                      "config.json implies");
    at::Tensor wrong = at::zeros({11, 8});
    io::write_safetensors(dir + "/model.safetensors", {{"model.embed_tokens.weight", view_of(wrong)}});
    FTL_REQUIRE_ERROR(load_causal_lm(dir), ErrorKind::kConfig, "model.safetensors", "[11, 8]", "[10, 8]");
    std::filesystem::remove_all(dir);
}
