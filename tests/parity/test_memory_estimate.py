"""`ftlaunch estimate-memory` and the pre-flight memory check, against transformers, PEFT and
DeepSpeed's own estimators (CPU; models built on the meta device, nothing is downloaded).

  counts       total parameters equal transformers' (llama untied, llama tied, qwen2 with q/k/v
               biases, qwen3 with q/k norms and biases, gemma2's four norms a layer, gemma3's six, phi3's fused linears, olmo2's whole-projection q/k norms, qwen3_moe, mixtral and gpt_oss's experts, gemma3's vision tower, a Llama-2-70B shape), largest_layer_params equal DeepSpeed's
               model_to_params (the largest module's own parameters), LoRA trainable parameters
               equal PEFT's for all-linear and for a module list, and on gpt_oss with
               --lora_target_parameters (one layer's experts, every router)
  deepspeed    the DeepSpeed rows equal deepspeed.runtime.zero's estimate_zero2/zero3
               _model_states_mem_needs for the same counts and ranks (exact)
  stages       on the 70B shape with LoRA under bf16: DeepSpeed's bf16 engine keeps every frozen
               tensor in 2 bytes; without DeepSpeed the frozen linears and lm_head count 2 bytes,
               embeddings and norms 4 (all 2 with --torch_dtype bfloat16, and the saved residual
               stream halves); on a GPU without ZeRO-3 the frozen input embeddings count in host
               memory (--embeddings_on_host; False keeps them on the device); --fused_kernels False
               counts the composites' larger activations; stage 3 puts
               1/world of the base weights on a rank,
               offload moves optimizer state and then parameters to the host, 4-bit shrinks the
               base weights ~7x (a saved bitsandbytes checkpoint counts as 4-bit too; on qwen3_moe
               8-bit covers the attention and dense layers, not the router and experts, which stay
               16-bit, as bitsandbytes leaves them), checkpointing
               shrinks activations; without LoRA (full
               fine-tuning) stage 3 puts 1/world of the fp32 weights and gradients on a rank
  pre-flight   FTLAUNCH_MEMORY_PER_RANK below this run's estimate: exit 2 before any weight is
               loaded, naming both figures and a smaller --per_device_train_batch_size that fits;
               above it: the run trains and logs the estimate
"""
import json
import os
import subprocess
import sys
import tempfile

import torch
import transformers

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
from test_sft_systems import args_for, make_inputs_with_eval  # noqa: E402

import peft  # noqa: E402

FTLAUNCH = os.environ["FTLAUNCH"]
SHAPES = {
    "llama_untied": dict(model_type="llama", vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2),
    "llama_tied": dict(model_type="llama", vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True),
    "qwen2": dict(model_type="qwen2", vocab_size=1200, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2),
    "qwen3": dict(model_type="qwen3", vocab_size=1200, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=24, attention_bias=True),
    "gemma2": dict(model_type="gemma2", vocab_size=1200, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=24),
    "gemma3_text": dict(model_type="gemma3_text", vocab_size=1200, hidden_size=64, intermediate_size=160,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=24),
    "phi3": dict(model_type="phi3", vocab_size=1200, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, pad_token_id=0),
    "olmo2": dict(model_type="olmo2", vocab_size=1200, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, pad_token_id=0),
    # Experts: their stacks, the router and (qwen3_moe) a dense layer; PEFT adapts the stacks and router.
    "qwen3_moe": dict(model_type="qwen3_moe", vocab_size=1200, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, moe_intermediate_size=48, num_experts=16,
                      num_experts_per_tok=2, mlp_only_layers=[1]),
    "mixtral": dict(model_type="mixtral", vocab_size=1200, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, num_local_experts=8),
    # gpt-oss: biases on the attention, router and experts, sinks; PEFT adapts the attention only.
    "gpt_oss": dict(model_type="gpt_oss", vocab_size=1200, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=8),
    # Gemma 3's image-and-text layout: the vision tower and projector count in the totals (and its
    # linears in PEFT's all-linear) though ftlaunch never loads them.
    "gemma3": dict(model_type="gemma3", mm_tokens_per_image=4,
                   text_config=dict(vocab_size=1200, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, head_dim=24),
                   vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                                      image_size=28, patch_size=14, vision_use_head=False)),
    "llama2_70b": dict(model_type="llama", vocab_size=32000, hidden_size=8192, intermediate_size=28672,
                       num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8),
}


def estimate(model_dir, ranks=8, stage=3, extra=(), lora=True):
    """stage None: plain data parallel (accelerate MULTI_GPU), no DeepSpeed."""
    yaml = os.path.join(os.path.dirname(model_dir), f"z{stage}_{ranks}.yaml")
    with open(yaml, "w") as f:
        if stage is None:
            f.write(f"distributed_type: MULTI_GPU\nmixed_precision: bf16\nnum_machines: 1\nnum_processes: {ranks}\n")
        else:
            f.write(f"distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: {stage}\n  offload_optimizer_device: none\n"
                    f"  offload_param_device: none\nmixed_precision: bf16\nnum_machines: 1\nnum_processes: {ranks}\n")
    cmd = [FTLAUNCH, "--config_file", yaml, "estimate-memory", "--model_name_or_path", model_dir, "--use_peft_lora",
           str(lora), "--lora_r", "8", "--lora_target_modules", "all-linear", "--per_device_train_batch_size", "2",
           "--max_seq_len", "2048", "--json", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"estimate-memory failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def deepspeed_counts(model):
    """DeepSpeed's model_to_params: unique parameters, and the largest module's own parameters."""
    total = sum(dict((p.data_ptr() if p.device.type != "meta" else id(p), p.numel()) for p in model.parameters()).values())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return total, largest


def row(result, stage, optimizer=False, params=False):
    return next(r for r in result["rows"] if r["zero_stage"] == stage and r["offload_optimizer"] == optimizer
                and r["offload_params"] == params)


def main():
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    with tempfile.TemporaryDirectory() as work:
        results, sixteen_bit = {}, {}
        for name, shape in SHAPES.items():
            kwargs = dict(shape)
            config = transformers.AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
            model_dir = os.path.join(work, name)
            config.save_pretrained(model_dir)
            with torch.device("meta"):
                model = transformers.AutoModelForCausalLM.from_config(config)
            total, largest = deepspeed_counts(model)
            # LoRA under bf16 keeps these frozen tensors in 16 bits: the decoder's linears and lm_head.
            sixteen_bit[name] = sum(p.numel() for n, p in model.named_parameters() if "_proj." in n or n == "lm_head.weight")
            result = estimate(model_dir)
            results[name] = result
            check(result["model"]["total_params"] == total,
                  f"{name}: total parameters {result['model']['total_params']} = transformers' {total}")
            check(result["model"]["largest_layer_params"] == largest,
                  f"{name}: largest_layer_params {result['model']['largest_layer_params']} = DeepSpeed's {largest}")
            lora = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules="all-linear"))
            trainable, _ = lora.get_nb_trainable_parameters()
            check(result["model"]["trainable_params"] == trainable,
                  f"{name}: LoRA all-linear trainable {result['model']['trainable_params']} = PEFT's {trainable}")
            ours = {e["options"]: (e["per_cpu"], e["per_gpu"]) for e in result["deepspeed"]}
            worst = 0.0
            for optimizer in (True, False):
                for params in (True, False):
                    if params and not optimizer:
                        continue
                    for zero_init in (True, False):
                        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(total, largest, 8, 1, optimizer, params, zero_init)
                        key = (f"offload_param={'cpu' if params else 'none'}, offload_optimizer={'cpu' if optimizer else 'none'}"
                               f", zero_init={int(zero_init)}")
                        got = ours.get(key, (-1, -1))
                        worst = max(worst, abs(int(got[0]) - cpu), abs(int(got[1]) - gpu))
            check(len(ours) == 6 and worst <= 1, f"{name}: the 6 ZeRO-3 rows equal DeepSpeed's estimator (worst {worst} bytes)")
        # ZeRO-2's formula (stage <= 2 runs print it).
        z2 = estimate(os.path.join(work, "llama2_70b"), stage=2)
        total = z2["model"]["total_params"]
        ours = {e["options"]: (int(e["per_cpu"]), int(e["per_gpu"])) for e in z2["deepspeed"]}
        expected = {f"offload_optimizer={'cpu' if o else 'none'}": estimate_zero2_model_states_mem_needs(total, 8, 1, o)
                    for o in (True, False)}
        check(ours == expected, f"ZeRO-2 rows equal DeepSpeed's estimator ({ours} vs {expected})")

        # PEFT's target_parameters (--lora_target_parameters): one layer's experts and every router.
        entries = ["1.mlp.experts.gate_up_proj", "router.weight"]
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(
                transformers.AutoConfig.from_pretrained(os.path.join(work, "gpt_oss")))
        trainable, _ = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules="all-linear",
                                                                  target_parameters=entries)).get_nb_trainable_parameters()
        got = estimate(os.path.join(work, "gpt_oss"), extra=("--lora_target_parameters", ",".join(entries)))
        check(got["model"]["trainable_params"] == trainable,
              f"gpt_oss LoRA all-linear + target_parameters {entries}: trainable {got['model']['trainable_params']} = "
              f"PEFT's {trainable}")

        # ---- what the stages, offload, 4-bit and checkpointing change on the 70B shape ----
        big = results["llama2_70b"]
        total = big["model"]["total_params"]
        s2, s3 = row(big, 2), row(big, 3)
        config_70b = json.load(open(os.path.join(work, "llama2_70b", "config.json")))
        embeddings = config_70b["vocab_size"] * config_70b["hidden_size"]  # in host memory on a GPU (LoRA, no ZeRO-3)
        check(s2["base_weights"] == 2 * (total - embeddings) and s2["host"] == 2 * embeddings,
              f"70B, LoRA under DeepSpeed's bf16 engine: base weights {s2['base_weights']} on the device and "
              f"{s2['host']} in host memory = every frozen tensor in bf16, the input embeddings on the host "
              f"({2 * (total - embeddings)} + {2 * embeddings}; fp32 would be {4 * total})")
        on_device = row(estimate(os.path.join(work, "llama2_70b"), stage=2, extra=("--embeddings_on_host", "False")), 2)
        check(on_device["base_weights"] == 2 * total and on_device["host"] == 0,
              f"70B, --embeddings_on_host False: every frozen tensor on the device ({on_device['base_weights']})")
        composite = row(estimate(os.path.join(work, "llama2_70b"), stage=2, extra=("--fused_kernels", "False")), 2)
        check(composite["activations"] > s2["activations"],
              f"70B, --fused_kernels False: the composites keep more per layer ({composite['activations']} > "
              f"{s2['activations']} with the fused kernels and flash attention)")
        plain = row(estimate(os.path.join(work, "llama2_70b"), stage=None), 0)
        base_bytes = 4 * total - 2 * sixteen_bit["llama2_70b"]
        check(plain["base_weights"] + 4 * embeddings == base_bytes and plain["host"] == 4 * embeddings,
              f"70B, LoRA under bf16 without DeepSpeed: base weights {plain['base_weights']} + {plain['host']} on the host = "
              f"linears and lm_head in bf16, embeddings and norms in fp32 ({base_bytes})")
        in_bf16 = row(estimate(os.path.join(work, "llama2_70b"), stage=None, extra=("--torch_dtype", "bfloat16")), 0)
        check(in_bf16["base_weights"] == 2 * (total - embeddings) and in_bf16["activations"] < plain["activations"],
              f"70B, --torch_dtype bfloat16 without DeepSpeed: base weights {in_bf16['base_weights']} all bf16, "
              f"activations {in_bf16['activations']} < {plain['activations']} (the residual stream saved in bf16)")
        check(abs(s3["base_weights"] * 8 - 2 * total) <= 8,
              f"70B: stage 3 keeps 1/8 of the base weights per rank, embeddings included ({s3['base_weights']} x 8 vs {2 * total})")
        opt, both = row(big, 3, optimizer=True), row(big, 3, optimizer=True, params=True)
        check(opt["optimizer"] == 0 and opt["host"] == s3["optimizer"] and both["base_weights"] == 0
              and both["host"] == s3["optimizer"] + s3["base_weights"],
              "70B: offload moves the optimizer state, then the base weights' slices, to the host")
        quant = estimate(os.path.join(work, "llama2_70b"), extra=("--use_4bit_quantization", "True", "--use_nested_quant", "True"))
        ratio = 4 * total / 8 / row(quant, 3)["base_weights"]
        check(6.5 < ratio < 8, f"70B: nested 4-bit base weights are {ratio:.2f}x smaller than fp32")
        # A bitsandbytes checkpoint (config.json's quantization_config) counts as 4-bit without the flags.
        prequantized = os.path.join(work, "llama2_70b_bnb")
        os.makedirs(prequantized)
        config = json.load(open(os.path.join(work, "llama2_70b", "config.json")))
        config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True,
                                         "bnb_4bit_use_double_quant": True, "bnb_4bit_quant_type": "nf4"}
        json.dump(config, open(os.path.join(prequantized, "config.json"), "w"))
        saved = estimate(prequantized)
        check(row(saved, 3)["base_weights"] == row(quant, 3)["base_weights"],
              f"70B saved as nested 4-bit: base weights {row(saved, 3)['base_weights']} as with --use_4bit_quantization "
              f"({row(quant, 3)['base_weights']})")
        eight = row(estimate(os.path.join(work, "llama2_70b"), stage=None, extra=("--use_8bit_quantization", "True")), 0)
        head = embeddings  # untied, as large as the embeddings
        linears = sixteen_bit["llama2_70b"] - head
        expected = linears * (1 + 4 / config_70b["hidden_size"]) + 2 * head + 4 * (total - linears - head)
        check(abs(eight["base_weights"] + eight["host"] - expected) <= 8,
              f"70B, --use_8bit_quantization under bf16: base weights {eight['base_weights']} + {eight['host']} on the host = "
              f"the linears' int8 codes and a fp32 scale per {config_70b['hidden_size']}-long row, lm_head in bf16, the "
              f"rest in fp32 ({expected:.0f})")
        # MoE: bitsandbytes replaces nn.Linear modules only; transformers 5's routers and experts are not.
        moe_dir = os.path.join(work, "qwen3_moe")
        with torch.device("meta"):
            moe_model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(moe_dir))
        moe_linears = sum(m.weight.numel() for n, m in moe_model.named_modules()
                          if isinstance(m, torch.nn.Linear) and n != "lm_head")
        experts = sum(p.numel() for n, p in moe_model.named_parameters() if ".mlp.experts." in n or ".mlp.gate." in n)
        moe_total, moe_hidden = results["qwen3_moe"]["model"]["total_params"], moe_model.config.hidden_size
        moe_head = moe_model.lm_head.weight.numel()
        moe_eight = row(estimate(moe_dir, stage=None, extra=("--use_8bit_quantization", "True")), 0)
        expected = (moe_linears * (1 + 4 / moe_hidden) + 2 * (moe_head + experts)
                    + 4 * (moe_total - moe_linears - moe_head - experts))
        check(abs(moe_eight["base_weights"] + moe_eight["host"] - expected) <= 8,
              f"qwen3_moe, --use_8bit_quantization under bf16: base weights {moe_eight['base_weights']} + "
              f"{moe_eight['host']} on the host = the attention's and dense layer's int8 codes and scales, the router, "
              f"experts and lm_head in bf16, the rest in fp32 ({expected:.0f})")
        no_ckpt = estimate(os.path.join(work, "llama2_70b"), stage=2, extra=("--gradient_checkpointing", "False"))
        check(row(no_ckpt, 2)["activations"] > 5 * row(z2, 2)["activations"],
              "70B: without gradient checkpointing the activations grow several-fold")
        full = estimate(os.path.join(work, "llama2_70b"), lora=False)
        f2, f3 = row(full, 2), row(full, 3)
        check(f2["trainable"] == 4 * total and abs(f3["trainable"] * 8 - 4 * total) <= 8
              and f3["gradients"] < f2["gradients"] / 4 and f3["gather_buffers"] > 0,
              f"70B full fine-tuning: stage 3 keeps 1/8 of the fp32 weights and their gradients per rank "
              f"({f3['trainable']} x 8 vs {f2['trainable']}; gradients {f3['gradients']} vs {f2['gradients']})")

        # ---- the pre-flight check on a real run ----
        model_dir, data_dir, _ = make_inputs_with_eval(work)
        out = os.path.join(work, "out")
        cmd = args_for(model_dir, data_dir, out, steps=2)
        cmd[cmd.index("--per_device_train_batch_size") + 1] = "64"
        cmd[cmd.index("--max_seq_len") + 1] = "128"
        cmd += ["--gradient_checkpointing", "False"]
        estimate_cmd = [FTLAUNCH, "--cpu", "--num_processes", "1", "estimate-memory", *cmd[5:], "--json"]
        this_run = json.loads(subprocess.run(estimate_cmd, capture_output=True, text=True).stdout)
        need = row(this_run, 0)["device_total"]
        limit = need - 1
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "FTLAUNCH_MEMORY_PER_RANK": str(limit)})
        text = proc.stdout + proc.stderr
        check(proc.returncode == 2 and "this run needs about" in text and "Settings that fit" in text
              and "--per_device_train_batch_size 32 and 2x" in text and "loading the model" not in text
              and not os.path.exists(os.path.join(out, "adapter_model.safetensors")),
              f"pre-flight: {limit} bytes per rank stops the run before loading, suggesting a smaller batch ({proc.returncode})")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "FTLAUNCH_MEMORY_PER_RANK": str(need + (1 << 20))})
        check(proc.returncode == 0 and "memory pre-flight: about" in proc.stdout,
              f"pre-flight: with enough memory the run trains and logs the estimate ({proc.returncode})")
    finish("all memory-estimate checks passed")


if __name__ == "__main__":
    main()
