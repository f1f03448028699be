"""Mixture-of-experts models (qwen3_moe, mixtral) trained with LoRA against transformers 5 + PEFT
0.21, which adapts the experts and the router as parameters (PEFT's ParamWrapper), on CPU.

Setup: test_sft_parity's tokenizer and texts; a 2-layer qwen3_moe (8 experts, 2 per token, top-k
renormalised) and a 2-layer mixtral, drawn by transformers and saved as the hub holds them (one
tensor per expert's linear).

Checks:
  curve          qwen3_moe, LoRA all-linear (attention, the experts' gate_up_proj at twice the
                 rank, down_proj, the router), 20 steps: per-step loss vs transformers + PEFT 1e-4
                 (test_sft_parity's bound)
  adapter        adapter_model.safetensors holds PEFT's tensors under PEFT's names (experts.base_layer,
                 experts, gate), adapter_config.json its target_parameters and rank/alpha patterns;
                 PeftModel.from_pretrained(output_dir) logits == ftlaunch's with that adapter (1e-5)
  ZeRO-3         the same run on 2 ranks with every tensor partitioned (the experts' stacks too)
                 == DeepSpeed stage 0 on 2 ranks (1e-5; the load-balancing loss is per rank and
                 micro-batch, so 2 ranks are compared with 2)
  aux loss       TRL's SFTTrainer adds router_aux_loss_coef x the router's load-balancing loss
                 (on by default: 0.001 from the config); every curve here has it, and at
                 --router_aux_loss_coef 1.0 the curve matches the reference's with TRL's term
                 (1e-4), with and without layers recomputed in backward; aux_loss logged each step;
                 `ftlaunch evaluate`'s eval_loss adds 1.0 x aux per batch as TRL's (1e-5); the flag
                 on a dense model is refused
  train.py list  the seed's list (q..o_proj, gate_proj, up_proj, down_proj) with --lora_dropout 0.1
                 is refused on qwen3_moe naming --lora_dropout, as PEFT raises; on mixtral (experts
                 w1/w2/w3) the list adapts the attention only, the tensors PEFT adapts, with a warning
  full           full fine-tuning of mixtral writes the hub's per-expert layout; transformers loads
                 it and its logits equal ftlaunch's on the saved model (1e-5)
  4-bit          qwen3_moe QLoRA (NF4, nested, fp32 compute, uint8 storage): bitsandbytes quantises the
                 attention's linears only (transformers 5's router and experts are not nn.Linear),
                 per-step loss vs transformers + bitsandbytes + PEFT 1e-4; the 4-bit footprint logged
                 counts the attention alone; bfloat16 storage (the seed's flags) on 2 ranks, ZeRO-3 with
                 every tensor partitioned vs stage 0 1e-5 (no clipping: test_qlora says why); that
                 reference's save_pretrained (4-bit attention, bf16 experts per expert) loads as it is
                 and gives the quantise-on-load logits bit for bit
  gpt_oss        LoRA all-linear (the attention: PEFT maps no name to its experts) curve and adapter
                 vs transformers + PEFT 1e-4; ZeRO-3 on 2 ranks == stage 0 1e-5; full fine-tuning saved
                 in transformers' [E, in, out] layout, loaded by transformers (1e-5); QLoRA curve vs
                 transformers + bitsandbytes + PEFT 1e-4; MXFP4 experts (random codes) dequantised
                 on load as transformers dequantises them (logits 1e-5), a full fine-tune of them
                 written in floating point without quantization_config
  expert adapters
                 gpt_oss with --lora_target_parameters (TRL's flag; the OpenAI cookbook's per-layer
                 entries) on one layer's experts and every router, beside all-linear: curve vs
                 transformers + PEFT 1e-4, the adapter = PEFT's tensors (1e-4) and target_parameters,
                 PeftModel.from_pretrained(output_dir) logits == ftlaunch's (1e-5); a PEFT-made
                 qwen3_moe adapter with target_parameters given directly (gate_up_proj at r, not
                 doubled), rank_pattern and alpha_pattern on modules, every B drawn nonzero: ftlaunch's
                 logits with it == PeftModel's (1e-5)
  merge          `ftlaunch merge` of the experts' adapters, in the base's own layout: qwen3_moe's and
                 mixtral's all-linear runs (per-expert tensors, mixtral's block_sparse_moe.gate) keep
                 the base's tensor names, and transformers' logits on the merged folder equal
                 PeftModel's on base + adapter (1e-5); gpt_oss with MXFP4 experts, one layer's
                 experts adapted: every stack written in floating point, quantization_config dropped,
                 logits vs PeftModel on the dequantised base (1e-5)
  mixtral        LoRA all-linear, 20 steps: per-step loss vs transformers + PEFT 1e-4 (mixtral registers its
                 router before its experts, so PEFT draws the router's adapter first; the order
                 shows from step 3, once B has moved off zero); the same on LLM.int8 attention
                 (experts and router in fp32) vs transformers + bitsandbytes + PEFT 1e-4
"""
import json
import os
import subprocess
import sys
import tempfile

import torch
import transformers
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, failures  # noqa: E402
import bnb_portable  # noqa: E402,F401  (bitsandbytes' portable 4-bit kernels, the same on every CPU)
import test_sft_parity as sft  # noqa: E402
from test_model_parity import run_probe_args  # noqa: E402
import test_zero  # noqa: E402
from test_zero import zero3_everything_partitioned  # noqa: E402

LLAMA_TARGETS = "q_proj,k_proj,v_proj,o_proj,down_proj,up_proj,gate_proj"


def tiny_moe(work, tokenizer_dir, name, model_type, intermediate_size=48, **extra):
    """A 2-layer MoE model of test_sft_parity's size, with its tokenizer, the norms (and gpt_oss's
    biases and sinks) randomised."""
    path = os.path.join(work, name)
    tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.save_pretrained(path)
    config = transformers.AutoConfig.for_model(
        model_type, vocab_size=len(tok), hidden_size=64, intermediate_size=intermediate_size, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, num_experts_per_tok=2,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, **extra)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname or pname.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
            if pname.endswith("sinks"):
                p.add_(torch.randn_like(p))
    model.save_pretrained(path)
    return path


def probe_logits(model_dir, adapter, work):
    """ftl_model_probe's logits (with the adapter folder when given) on two fixed rows of 10 ids."""
    ids = torch.randint(3, 200, (2, 10), generator=torch.Generator().manual_seed(5))
    outputs = run_probe_args(model_dir, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, work,
                             ["--adapter", adapter] if adapter else [])
    return ids, outputs["logits"]


def logits_diff(model, ids, ours):
    """The largest absolute difference between `model`'s logits on `ids` and ftlaunch's `ours`."""
    with torch.no_grad():
        return (ours - model(input_ids=ids).logits).abs().max().item()


def check_lora_curve_and_adapter(work, model_dir, data_dir, texts):
    import peft
    out = os.path.join(work, "qwen3_moe_run")
    ours, _ = sft.run_ftlaunch(model_dir, data_dir, out, 2, 2)
    ref, ref_model = sft.reference_losses(model_dir, texts, 2, 2)
    print(f"     qwen3_moe losses ftlaunch {ours[0]:.5f} -> {ours[-1]:.5f}; transformers+peft {ref[0]:.5f} -> {ref[-1]:.5f}")
    sft.compare_curves(ours, ref, 1e-4, "qwen3_moe LoRA on attention, experts and router: 20 steps against transformers+peft")

    saved = load_file(os.path.join(out, "adapter_model.safetensors"))
    reference = {k.replace(".default", ""): v for k, v in ref_model.state_dict().items() if "lora_" in k}
    same_names = set(saved) == set(reference)
    shapes = all(saved[k].shape == reference[k].shape for k in reference) if same_names else False
    config = json.load(open(os.path.join(out, "adapter_config.json")))
    check(same_names and shapes and sorted(config.get("target_parameters", [])) == ["down_proj", "gate.weight", "gate_up_proj"]
          and config.get("rank_pattern") == {".*\\.gate_up_proj": 8},
          f"the adapter holds PEFT's {len(reference)} tensors with PEFT's names and shapes, target_parameters and "
          f"rank_pattern as PEFT writes them ({sorted(config.get('target_parameters', []))}, {config.get('rank_pattern')})")
    worst = max((saved[k] - reference[k].float()).abs().max().item() for k in reference) if same_names else float("inf")
    check(worst <= 1e-4, f"the trained adapter equals the reference's, max abs diff {worst:.2e} <= 1e-4")

    ids, ours_logits = probe_logits(model_dir, out, work)
    loaded = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(model_dir), out)
    diff = logits_diff(loaded, ids, ours_logits)
    check(diff <= 1e-5, f"PeftModel.from_pretrained(output_dir) logits equal ftlaunch's with its adapter, max abs diff {diff:.2e}")
    return ours


def zero3_vs_stage0(work, model_dir, data_dir, name):
    """(worst rel diff of the loss curves, ZeRO-3's log): 2 ranks under ZeRO-3 with every tensor
    partitioned against the same 2 ranks under DeepSpeed stage 0. Like for like: the
    load-balancing loss (on by default, as TRL adds it) is a per-micro-batch, per-rank quantity, so
    the curve depends on how the batch is split over ranks, as it does in the HF stack."""
    sharded, log = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, f"{name}_zero3"), 1, 2,
                                    launcher=("--config_file", zero3_everything_partitioned(work, 2)))
    plain, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, f"{name}_stage0"), 1, 2,
                                launcher=("--config_file", test_zero.zero_config(work, 0, 2, 2)))
    return test_zero.worst_curve_diff(sharded, plain), log


def check_zero3(work, model_dir, data_dir):
    worst, log = zero3_vs_stage0(work, model_dir, data_dir, "qwen3_moe")
    check(worst <= 1e-5 and "holds" in log,
          f"qwen3_moe ZeRO-3 on 2 ranks, every tensor partitioned: loss curve vs stage 0 on 2 ranks worst rel diff "
          f"{worst:.2e} <= 1e-5")


def check_aux_loss(work, model_dir, dense_dir, data_dir, texts, default_curve):
    """TRL's load-balancing loss at a weight where its gradient shapes the curve: --router_aux_loss_coef
    1.0 against the reference at 1.0, with the layers recomputed in backward (the default) and
    without; the curve leaves the default weight's (0.001) far behind, so a wrong aux gradient would show.
    --router_aux_loss_coef on a dense model is refused, as TRL refuses it."""
    ref, _ = sft.reference_losses(model_dir, texts, 2, 2, router_aux_loss_coef=1.0)
    for recompute in ("True", "False"):
        ours, log = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, f"qwen3_moe_aux_{recompute}"), 2, 2,
                                     extra=("--router_aux_loss_coef", "1.0", "--gradient_checkpointing", recompute))
        sft.compare_curves(ours, ref, 1e-4, f"qwen3_moe with the load-balancing loss at weight 1.0 (layers recomputed: "
                                            f"{recompute}): 20 steps against transformers+peft with TRL's aux term")
    history = json.load(open(os.path.join(work, "qwen3_moe_aux_True", "trainer_state.json")))["log_history"]
    logged = [e["aux_loss"] for e in history if "aux_loss" in e]
    moved = test_zero.worst_curve_diff(ours, default_curve)
    check(len(logged) == len(ours) and all(1.0 <= a <= 8.0 for a in logged) and moved > 1e-3,
          f"every logged step has TRL's aux_loss metric ({logged[0]:.3f} .. {logged[-1]:.3f}: E * sum f P lies in "
          f"[1, E]); the curve differs from weight 0.001's by {moved:.2e}")
    # Evaluation: TRL's compute_loss adds coefficient x aux to each batch's mean loss (padding rows
    # left out of aux), which transformers' own loss with router_aux_loss_coef set computes.
    proc = subprocess.run([sft.FTLAUNCH, "--cpu", "--num_processes", "1", "evaluate", "--model_name_or_path", model_dir,
                           "--dataset_name", data_dir, "--splits", "train", "--max_seq_len", "128", "--bf16", "False",
                           "--per_device_eval_batch_size", "4", "--router_aux_loss_coef", "1.0"],
                          capture_output=True, text=True, timeout=300)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    got = json.loads(lines[-1])["eval_loss"] if proc.returncode == 0 and lines else None
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    model.router_aux_loss_coef = 1.0
    total = 0.0
    for start in range(0, len(rows), 4):
        batch = rows[start:start + 4]
        length = max(len(r) for r in batch)
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([r + [0] * (length - len(r)) for r in batch]),
                         attention_mask=torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in batch]),
                         labels=torch.tensor([r + [-100] * (length - len(r)) for r in batch]),
                         output_router_logits=True).loss.item()
        total += len(batch) * loss
    expected = total / len(rows)
    check(got is not None and abs(got - expected) <= 1e-5 * expected,
          f"ftlaunch evaluate with the load-balancing loss at 1.0: eval_loss {got} == TRL's (batch mean + 1.0 x aux, "
          f"padding left out) {expected:.6f}")
    dense = sft.ftlaunch_command(dense_dir, data_dir, os.path.join(work, "dense_aux"), 2, 1,
                                 extra=("--router_aux_loss_coef", "0.5"))
    proc = subprocess.run(dense, capture_output=True, text=True)
    said = [l for l in proc.stderr.splitlines() if "not a mixture-of-experts model" in l]
    check(proc.returncode == 2 and said, f"--router_aux_loss_coef on a dense model: exit {proc.returncode}, {said[:1]}")


def check_train_py_list(work, qwen_dir, mixtral_dir, data_dir):
    import peft
    refused = subprocess.run(sft.ftlaunch_command(qwen_dir, data_dir, os.path.join(work, "refused"), 2, 1,
                                                  extra=("--lora_target_modules", LLAMA_TARGETS, "--lora_dropout", "0.1",
                                                         "--max_steps", "1")),
                             capture_output=True, text=True, timeout=600)
    try:
        peft.get_peft_model(transformers.AutoModelForCausalLM.from_pretrained(qwen_dir),
                            peft.LoraConfig(r=4, lora_dropout=0.1, target_modules=LLAMA_TARGETS.split(",")))
        peft_raises = False
    except ValueError:
        peft_raises = True
    message = refused.stdout + refused.stderr
    check(refused.returncode == 2 and "--lora_dropout 0.1" in message and "ParamWrapper" in message and peft_raises,
          f"qwen3_moe with train.py's list and dropout 0.1: exit {refused.returncode} naming --lora_dropout (PEFT raises too: "
          f"{peft_raises})")

    out = os.path.join(work, "mixtral_llama_targets")
    proc = subprocess.run(sft.ftlaunch_command(mixtral_dir, data_dir, out, 2, 1,
                                               extra=("--lora_target_modules", LLAMA_TARGETS, "--lora_dropout", "0.1",
                                                      "--max_steps", "1")),
                          capture_output=True, text=True, timeout=600)
    wrapped = peft.get_peft_model(transformers.AutoModelForCausalLM.from_pretrained(mixtral_dir),
                                  peft.LoraConfig(r=4, lora_dropout=0.1, target_modules=LLAMA_TARGETS.split(",")))
    peft_keys = {k.replace(".default", "") for k in wrapped.state_dict() if "lora_" in k}
    ours_keys = set(load_file(os.path.join(out, "adapter_model.safetensors"))) if proc.returncode == 0 else set()
    check(ours_keys == peft_keys and "w1, w3" in proc.stdout + proc.stderr,
          f"mixtral with train.py's list: the adapted tensors equal PEFT's ({len(peft_keys)}, the attention's), with a "
          "warning naming the experts' own names")


def check_full_fine_tuning(work, mixtral_dir, data_dir):
    out = os.path.join(work, "mixtral_full")
    sft.run_ftlaunch(mixtral_dir, data_dir, out, 2, 1, extra=("--use_peft_lora", "False", "--learning_rate", "1e-3",
                                                              "--max_steps", "3"))
    names = set()
    for file in os.listdir(out):
        if file.endswith(".safetensors"):
            names |= set(load_file(os.path.join(out, file)))
    per_expert = "model.layers.0.block_sparse_moe.experts.7.w3.weight" in names and not any("gate_up_proj" in n for n in names)
    trained = transformers.AutoModelForCausalLM.from_pretrained(out)
    ids, ours = probe_logits(out, None, work)
    diff = logits_diff(trained, ids, ours)
    base = transformers.AutoModelForCausalLM.from_pretrained(mixtral_dir)
    moved = (trained.model.layers[0].mlp.experts.gate_up_proj - base.model.layers[0].mlp.experts.gate_up_proj).abs().max()
    check(per_expert and diff <= 1e-5 and moved > 0,
          f"mixtral full fine-tuning saves the hub's per-expert layout ({per_expert}); transformers loads it, logits vs "
          f"ftlaunch's max abs diff {diff:.2e} <= 1e-5; the experts trained (max change {moved:.2e})")


FOUR_BIT = ("--use_4bit_quantization", "True", "--use_nested_quant", "True", "--bnb_4bit_quant_type", "nf4",
            "--bnb_4bit_compute_dtype", "float32")


def four_bit_config(storage):
    return transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                           bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=storage)


def check_four_bit(work, model_dir, data_dir, texts):
    import re
    out = os.path.join(work, "qwen3_moe_4bit")
    ours, log = sft.run_ftlaunch(model_dir, data_dir, out, 2, 2, extra=FOUR_BIT + ("--bnb_4bit_quant_storage_dtype", "uint8"))
    ref, _ = sft.reference_losses(model_dir, texts, 2, 2,
                                  load_kwargs={"quantization_config": four_bit_config(torch.uint8), "device_map": "cpu"})
    print(f"     qwen3_moe 4-bit losses ftlaunch {ours[0]:.5f} -> {ours[-1]:.5f}; reference {ref[0]:.5f} -> {ref[-1]:.5f}")
    sft.compare_curves(ours, ref, 1e-4, "qwen3_moe QLoRA (4-bit attention, floating-point experts and router): 20 steps "
                                        "against transformers+bitsandbytes+peft")
    reference = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map="cpu",
                                                                  quantization_config=four_bit_config(torch.bfloat16))
    quantized = sum(m.in_features * m.out_features * 2 for m in reference.modules() if type(m).__name__ == "Linear4bit")
    footprint = re.search(r"4-bit base weights .*?: (\d+) bytes with their quantisation state, (\d+) bytes in bfloat16", log)
    check(footprint is not None and int(footprint.group(2)) == quantized,
          f"the logged 4-bit footprint covers the linears bitsandbytes quantises ({footprint.group(2) if footprint else None} "
          f"bf16 bytes = {quantized}: the attention's, not the experts')")

    saved = os.path.join(work, "qwen3_moe_bnb")
    reference.save_pretrained(saved)
    ids = torch.randint(3, 200, (2, 10), generator=torch.Generator().manual_seed(5))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    on_load = run_probe_args(model_dir, inputs, work, ["--adapter", out, "--dtype", "bfloat16", "--four_bit", "nf4",
                                                       "--nested", "1", "--storage", "bfloat16", "--compute", "float32"])
    loaded = run_probe_args(saved, inputs, work, ["--adapter", out, "--dtype", "bfloat16"])
    check(torch.equal(loaded["logits"], on_load["logits"]),
          "transformers' save_pretrained of 4-bit qwen3_moe (bf16 experts per expert) loads as it is: the quantise-on-load "
          f"logits bit for bit (max diff {(loaded['logits'] - on_load['logits']).abs().max().item():.1e})")

    bf16 = FOUR_BIT + ("--bnb_4bit_quant_storage_dtype", "bfloat16", "--max_grad_norm", "0", "--learning_rate", "1e-2")
    curves = {}
    for stage in (0, 3):
        config = test_zero.zero_config(work, 0, 2, 1) if stage == 0 else zero3_everything_partitioned(work, 2)
        curves[stage], log = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, f"qwen3_moe_4bit_z{stage}"), 2, 1,
                                              extra=bf16, launcher=("--config_file", config))
    held = [(int(a), int(b)) for a, b in re.findall(r"this rank holds (\d+) bytes of the (\d+) bytes", log)]
    diff = test_zero.worst_curve_diff(curves[3], curves[0])
    check(diff <= 1e-5 and len(held) == 2 and all(0 < 2 * mine <= total + 4096 for mine, total in held),
          f"qwen3_moe QLoRA, bfloat16 storage, 2 ranks: ZeRO-3 (each rank holds half: {held}) vs stage 0, worst rel diff "
          f"{diff:.2e} <= 1e-5")


def check_mixtral_curves(work, model_dir, data_dir, texts):
    ours, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "mixtral_lora"), 2, 2)
    ref, _ = sft.reference_losses(model_dir, texts, 2, 2)
    sft.compare_curves(ours, ref, 1e-4, "mixtral LoRA all-linear (its router adapted before its experts, as PEFT does): "
                                        "20 steps against transformers+peft")
    ours, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "mixtral_8bit"), 2, 2,
                               extra=("--use_8bit_quantization", "True"))
    ref, _ = sft.reference_losses(model_dir, texts, 2, 2, train_mode=True,
                                  load_kwargs={"quantization_config": transformers.BitsAndBytesConfig(load_in_8bit=True),
                                               "device_map": "cpu"})
    sft.compare_curves(ours, ref, 1e-4, "mixtral LoRA on 8-bit attention, floating-point experts: 20 steps against "
                                        "transformers+bitsandbytes+peft")


def check_gpt_oss(work, model_dir, data_dir, texts):
    """gpt-oss: LoRA (PEFT adapts its attention only: the experts and router were parameters already
    in transformers 4, so no target name maps to them), ZeRO-3, full fine-tuning saved in
    transformers' [E, in, out] layout, QLoRA, and the hub's MXFP4 experts."""
    import peft
    out = os.path.join(work, "gpt_oss_lora")
    ours, _ = sft.run_ftlaunch(model_dir, data_dir, out, 2, 2)
    ref, ref_model = sft.reference_losses(model_dir, texts, 2, 2)
    sft.compare_curves(ours, ref, 1e-4, "gpt_oss LoRA all-linear (attention with sinks and biases, windows, experts "
                                        "through the clamped SwiGLU): 20 steps against transformers+peft")
    saved = load_file(os.path.join(out, "adapter_model.safetensors"))
    reference = {k.replace(".default", "") for k in ref_model.state_dict() if "lora_" in k}
    config = json.load(open(os.path.join(out, "adapter_config.json")))
    check(set(saved) == reference and not config.get("target_parameters"),
          f"gpt_oss adapter: PEFT's {len(reference)} tensors (q/k/v/o_proj only), no target_parameters")
    diff, _ = zero3_vs_stage0(work, model_dir, data_dir, "gpt_oss")
    check(diff <= 1e-5, f"gpt_oss ZeRO-3 on 2 ranks, every tensor partitioned (sinks, stacks and their biases too) vs "
                        f"stage 0 on 2 ranks: worst rel diff {diff:.2e} <= 1e-5")

    full = os.path.join(work, "gpt_oss_full")
    sft.run_ftlaunch(model_dir, data_dir, full, 2, 1, extra=("--use_peft_lora", "False", "--learning_rate", "1e-3",
                                                             "--max_steps", "3"))
    base = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    trained = transformers.AutoModelForCausalLM.from_pretrained(full)
    written = load_file(os.path.join(full, "model.safetensors"))
    layout = {k: tuple(v.shape) for k, v in written.items()} == {k: tuple(v.shape) for k, v in base.state_dict().items()}
    ids, ours_logits = probe_logits(full, None, work)
    diff = logits_diff(trained, ids, ours_logits)
    moved = min((trained.model.layers[0].mlp.experts.down_proj - base.model.layers[0].mlp.experts.down_proj).abs().max(),
                (trained.model.layers[0].self_attn.sinks - base.model.layers[0].self_attn.sinks).abs().max())
    check(layout and diff <= 1e-5 and moved > 0,
          f"gpt_oss full fine-tuning saves transformers' names and [E, in, out] stacks ({layout}); transformers loads "
          f"it, logits vs ftlaunch's max abs diff {diff:.2e} <= 1e-5; experts and sinks trained (min change {moved:.2e})")
    ours, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "gpt_oss_4bit"), 2, 2,
                               extra=FOUR_BIT + ("--bnb_4bit_quant_storage_dtype", "uint8"))
    ref, _ = sft.reference_losses(model_dir, texts, 2, 2,
                                  load_kwargs={"quantization_config": four_bit_config(torch.uint8), "device_map": "cpu"})
    sft.compare_curves(ours, ref, 1e-4, "gpt_oss QLoRA (4-bit attention beside the sinks): 20 steps against "
                                        "transformers+bitsandbytes+peft")
    check_mxfp4(work, model_dir, data_dir)


def check_expert_adapters(work, gpt_oss_dir, qwen_dir, data_dir, texts):
    """Adapters on the experts and routers named by PEFT's target_parameters: trained by ftlaunch
    from --lora_target_parameters, and read from a PEFT-made adapter with rank and alpha patterns."""
    import peft
    entries = ["1.mlp.experts.gate_up_proj", "1.mlp.experts.down_proj", "router.weight"]
    out = os.path.join(work, "gpt_oss_experts")
    ours, _ = sft.run_ftlaunch(gpt_oss_dir, data_dir, out, 2, 2, extra=("--lora_target_parameters", ",".join(entries)))
    ref, ref_model = sft.reference_losses(gpt_oss_dir, texts, 2, 2, lora_kwargs={"target_parameters": entries})
    sft.compare_curves(ours, ref, 1e-4, "gpt_oss LoRA all-linear + target_parameters (layer 1's experts, both routers): "
                                        "20 steps against transformers+peft")
    saved = load_file(os.path.join(out, "adapter_model.safetensors"))
    reference = {k.replace(".default", ""): v for k, v in ref_model.state_dict().items() if "lora_" in k}
    same = set(saved) == set(reference) and all(saved[k].shape == reference[k].shape for k in reference)
    worst = max((saved[k] - reference[k].float()).abs().max().item() for k in reference) if same else float("inf")
    config = json.load(open(os.path.join(out, "adapter_config.json")))
    check(same and worst <= 1e-4 and config.get("target_parameters") == entries and config.get("rank_pattern") == {},
          f"the adapter holds PEFT's {len(reference)} tensors (experts.base_layer, experts, router) within {worst:.2e} "
          f"<= 1e-4; target_parameters {config.get('target_parameters')}")
    ids, ours_logits = probe_logits(gpt_oss_dir, out, work)
    loaded = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(gpt_oss_dir), out)
    diff = logits_diff(loaded, ids, ours_logits)
    check(diff <= 1e-5, f"gpt_oss: PeftModel.from_pretrained(output_dir) logits equal ftlaunch's with its expert adapters, "
                        f"max abs diff {diff:.2e}")

    made = os.path.join(work, "qwen3_moe_peft_patterns")
    torch.manual_seed(11)
    model = peft.get_peft_model(transformers.AutoModelForCausalLM.from_pretrained(qwen_dir), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "o_proj"], target_parameters=["gate_up_proj", "0.mlp.gate.weight"],
        rank_pattern={"q_proj": 6}, alpha_pattern={"o_proj": 3}, init_lora_weights=False, task_type="CAUSAL_LM"))
    model.save_pretrained(made)
    _, ours_logits = probe_logits(qwen_dir, made, work)
    diff = logits_diff(model, ids, ours_logits)
    check(diff <= 1e-5, f"a PEFT-made qwen3_moe adapter (target_parameters gate_up_proj at r=4 and one router, "
                        f"rank_pattern q_proj 6, alpha_pattern o_proj 3): ftlaunch's logits vs PeftModel's {diff:.2e}")


def check_merges(work, qwen_dir, mixtral_dir, data_dir):
    """`ftlaunch merge` of adapters on experts and routers, against PeftModel on the base."""
    import peft
    mxfp4_dir = os.path.join(work, "gpt_oss_mxfp4")  # check_mxfp4's folder
    mxfp4_adapter = os.path.join(work, "gpt_oss_mxfp4_experts")
    sft.run_ftlaunch(mxfp4_dir, data_dir, mxfp4_adapter, 2, 1, extra=(
        "--lora_target_parameters", "1.mlp.experts.gate_up_proj,1.mlp.experts.down_proj,router.weight", "--max_steps", "3"))
    cases = [("qwen3_moe", qwen_dir, os.path.join(work, "qwen3_moe_run")),
             ("mixtral", mixtral_dir, os.path.join(work, "mixtral_lora")),
             ("gpt_oss MXFP4", mxfp4_dir, mxfp4_adapter)]
    ids = torch.randint(3, 200, (2, 10), generator=torch.Generator().manual_seed(5))
    for name, base_dir, adapter in cases:
        merged = os.path.join(work, f"merged_{name.split()[0]}")
        proc = subprocess.run([sft.FTLAUNCH, "merge", "--model_name_or_path", base_dir, "--adapter_path", adapter,
                               "--output_dir", merged], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            check(False, f"{name}: ftlaunch merge exit {proc.returncode}: {proc.stderr[-1500:]}")
            continue
        base_names = set(load_file(os.path.join(base_dir, "model.safetensors")))
        written = load_file(os.path.join(merged, "model.safetensors"))
        if name.endswith("MXFP4"):
            layout = (not any(k.endswith(("_blocks", "_scales")) for k in written)
                      and "quantization_config" not in json.load(open(os.path.join(merged, "config.json"))))
        else:
            layout = set(written) == base_names
        with torch.no_grad():
            ours = transformers.AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)(input_ids=ids).logits
        base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        moved = logits_diff(base, ids, ours)  # what the adapter changes: the merge must carry it
        diff = logits_diff(peft.PeftModel.from_pretrained(base, adapter), ids, ours)
        check(layout and diff <= 1e-5 and moved > 1e-3,
              f"{name}: ftlaunch merge of the experts' and routers' adapters keeps the base's layout ({layout}); "
              f"transformers on it vs PeftModel on base + adapter {diff:.2e} (the adapter moves the logits {moved:.2e})")


def check_mxfp4(work, model_dir, data_dir):
    """The hub's layout: the experts' stacks as MXFP4 blocks and scales (random codes and scales
    here), quantization_config quant_method mxfp4. transformers dequantises them on a CPU; so does
    ftlaunch, on load."""
    import shutil
    folder = os.path.join(work, "gpt_oss_mxfp4")
    shutil.copytree(model_dir, folder)
    weights = load_file(os.path.join(folder, "model.safetensors"))
    g = torch.Generator().manual_seed(3)
    for name in [k for k in weights if k.endswith("_proj")]:
        experts, cols, rows = weights.pop(name).shape  # [E, in, out]: MXFP4 holds [E, out, in / 32, 16]
        weights[name + "_blocks"] = torch.randint(0, 256, (experts, rows, cols // 32, 16), generator=g, dtype=torch.uint8)
        weights[name + "_scales"] = torch.randint(118, 124, (experts, rows, cols // 32), generator=g, dtype=torch.uint8)
    save_file(weights, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    config = json.load(open(os.path.join(folder, "config.json")))
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    json.dump(config, open(os.path.join(folder, "config.json"), "w"))
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids, ours = probe_logits(folder, None, work)
    diff = logits_diff(reference, ids, ours)
    check(diff <= 1e-5, f"gpt_oss with MXFP4 experts: ftlaunch's dequantise-on-load logits vs transformers' max abs diff "
                        f"{diff:.2e} <= 1e-5")
    full = os.path.join(work, "gpt_oss_mxfp4_full")
    sft.run_ftlaunch(folder, data_dir, full, 2, 1, extra=("--use_peft_lora", "False", "--max_steps", "1"))
    written = json.load(open(os.path.join(full, "config.json")))
    loaded = transformers.AutoModelForCausalLM.from_pretrained(full)
    check("quantization_config" not in written and loaded.model.layers[0].mlp.experts.gate_up_proj.dtype == torch.float32,
          "full fine-tuning of the MXFP4 model writes floating-point experts and a config.json without "
          "quantization_config, which transformers loads")


def main():
    with tempfile.TemporaryDirectory() as work:
        llama_dir, data_dir, texts = sft.make_inputs(work)
        qwen_dir = tiny_moe(work, llama_dir, "qwen3_moe", "qwen3_moe", head_dim=16, moe_intermediate_size=32,
                            num_experts=8, norm_topk_prob=True)
        mixtral_dir = tiny_moe(work, llama_dir, "mixtral", "mixtral", num_local_experts=8)
        one_rank = check_lora_curve_and_adapter(work, qwen_dir, data_dir, texts)
        check_zero3(work, qwen_dir, data_dir)
        check_aux_loss(work, qwen_dir, llama_dir, data_dir, texts, one_rank)
        check_train_py_list(work, qwen_dir, mixtral_dir, data_dir)
        check_full_fine_tuning(work, mixtral_dir, data_dir)
        check_four_bit(work, qwen_dir, data_dir, texts)
        check_mixtral_curves(work, mixtral_dir, data_dir, texts)
        gpt_oss_dir = tiny_moe(work, llama_dir, "gpt_oss", "gpt_oss", intermediate_size=64, head_dim=16,
                               num_local_experts=8, sliding_window=8, swiglu_limit=1.0)
        check_gpt_oss(work, gpt_oss_dir, data_dir, texts)
        check_expert_adapters(work, gpt_oss_dir, qwen_dir, data_dir, texts)
        check_merges(work, qwen_dir, mixtral_dir, data_dir)
    if failures:
        print(f"{len(failures)} MoE checks failed")
        sys.exit(1)
    print("all MoE checks passed")


if __name__ == "__main__":
    main()
