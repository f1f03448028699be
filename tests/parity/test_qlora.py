"""QLoRA: ftlaunch's 4-bit base model with a LoRA adapter against transformers + bitsandbytes + PEFT.

A tiny Llama (2 layers, hidden 64, GQA) is saved by transformers, loaded 4-bit by transformers
(BitsAndBytesConfig, CPU) and by ftl_model_probe --four_bit (quantise on load), a PEFT adapter with
non-zero B on every linear is applied to both, and one padded batch runs forward and backward:
  logits       max |ours - hf| <= 1e-5 at real tokens      (fp32 compute, uint8 storage)
  loss         relative difference <= 1e-6
  adapter grads  ||ours - hf|| / ||hf|| <= 1e-4 for every lora_A / lora_B
for NF4 and FP4, with and without nested quantisation. With bfloat16 quant storage (the seed's
flags: the model and its other weights in bfloat16) the logits agree within 2e-2 (bf16 rounding
of the unquantised weights and activations, which the two sides order differently).

Training (`ftlaunch train --use_4bit_quantization True`, the SFT parity case: LoRA all-linear,
AdamW, cosine schedule, clipping, 20 steps, fp32 compute):
  curve        NF4 + nested, uint8 storage, 1 rank == transformers + bitsandbytes + PEFT training
               the same 4-bit model (test_sft_parity's reference loop), per-step loss within 1e-4
  ZeRO-3       2 ranks under ZeRO stage 3 == 2 ranks under stage 0 within 1e-5, with uint8 and
               with bfloat16 quant storage (the packed codes sharded with the other weights;
               stage3_param_persistence_threshold 0, so every tensor is partitioned), at
               learning rate 1e-2. With bfloat16 storage the whole base, and so the residual
               stream, is bf16 (train.py loads with that dtype): the last-bit difference of the
               clipping norm taken over shards (fp64) and over whole tensors (fp32 per tensor, as
               clip_grad_norm_) then flips bf16 roundings from step 4 and grows to 1e-4 by step
               20, so that case runs without clipping (the curves are then identical)
  vs LoRA      the QLoRA curve stays within 5% of the fp32 LoRA curve at every step: NF4's
               weight error shifts this tiny model's loss by about 1.6%; 5% leaves room without
               letting a broken dequantisation pass
  stages       ZeRO-2 on 2 ranks == stage 0 within 1e-5 (uint8 storage, the 4-bit base whole on
               each rank); --gradient_checkpointing gives the same curve exactly
  sharding     under ZeRO-3 each of the 2 ranks holds half of the partitioned bytes (4-bit codes
               included), padding aside
  memory       the log's 4-bit footprint: codes + nested state <= 0.28x the linears' bf16 bytes
  saved        transformers' save_pretrained of the 4-bit model (NF4 nested and FP4 with uint8
               storage, NF4 nested with bfloat16 storage) loads without any flag and gives the logits
               of ftlaunch's quantise-on-load bit for bit
  bad input    --use_4bit_quantization without --use_peft_lora: exit 2 with a message naming the
               flag, before loading anything (8-bit: test_int8)
"""
import os
import subprocess
import tempfile

import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

import sys
sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
import bnb_portable  # noqa: E402,F401  (bitsandbytes' portable 4-bit kernels, the same on every CPU)
import test_sft_parity as sft  # noqa: E402
import test_zero  # noqa: E402

PROBE = os.environ["FTL_MODEL_PROBE"]
LOGITS_ATOL = 1e-5
LOSS_RTOL = 1e-6
GRAD_RTOL = 1e-4


def make_model(folder):
    config = transformers.AutoConfig.for_model(
        "llama", vocab_size=211, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6)
    torch.manual_seed(3)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder)


def make_adapter(folder, adapter_dir):
    base = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                 lora_dropout=0.0, task_type="CAUSAL_LM"))
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    peft_model.save_pretrained(adapter_dir)


def batch():
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, 211, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 5:] = 0
    labels = ids.clone()
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def hf_run(folder, adapter_dir, quant_type, nested, storage, dtype):
    bnb = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                                          bnb_4bit_use_double_quant=nested, bnb_4bit_compute_dtype=torch.float32,
                                          bnb_4bit_quant_storage=storage)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, quantization_config=bnb, dtype=dtype,
                                                              device_map="cpu")
    model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
    out = model(**batch())
    out.loss.backward()
    grads = {name.replace(".default", ""): p.grad.float() for name, p in model.named_parameters() if "lora_" in name}
    return out.logits.detach().float(), out.loss.item(), grads


def probe_run(folder, adapter_dir, work, quant_type, nested, storage, dtype):
    inp, out = os.path.join(work, "in.safetensors"), os.path.join(work, "out.safetensors")
    save_file(batch(), inp)
    args = [PROBE, folder, inp, out, "--dtype", dtype, "--adapter", adapter_dir, "--four_bit", quant_type,
            "--nested", "1" if nested else "0", "--storage", storage, "--compute", "float32"]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"probe failed: {proc.stderr}")
    return load_file(out)


def compare_adapter_grads(label, ours, grads):
    """Every one of the 28 adapter gradients the probe wrote (grad.<PEFT name>) against PEFT's, rel GRAD_RTOL."""
    worst, worst_name, missing = 0.0, "", []
    for name, g in grads.items():
        mine = ours.get("grad." + name)
        if mine is None:
            missing.append(name)
            continue
        r = ((mine - g).norm() / g.norm().clamp_min(1e-30)).item()
        if r > worst:
            worst, worst_name = r, name
    check(not missing and len(grads) == 28, f"{label}: gradients for all {len(grads)} adapter tensors {missing[:3]}")
    check(worst <= GRAD_RTOL, f"{label}: worst adapter gradient rel diff {worst:.2e} <= {GRAD_RTOL} ({worst_name})")


def main():
    with tempfile.TemporaryDirectory() as work:
        folder, adapter_dir = os.path.join(work, "model"), os.path.join(work, "adapter")
        make_model(folder)
        make_adapter(folder, adapter_dir)
        valid = batch()["attention_mask"].bool()
        for quant_type in ("nf4", "fp4"):
            for nested in (False, True):
                label = f"{quant_type} nested={int(nested)} uint8 storage, fp32"
                logits, loss, grads = hf_run(folder, adapter_dir, quant_type, nested, torch.uint8, torch.float32)
                ours = probe_run(folder, adapter_dir, work, quant_type, nested, "uint8", "float32")
                diff = (ours["logits"] - logits)[valid].abs().max().item()
                check(diff <= LOGITS_ATOL, f"{label}: logits max abs diff {diff:.2e} <= {LOGITS_ATOL}")
                lrel = abs(ours["loss"].item() - loss) / abs(loss)
                check(lrel <= LOSS_RTOL, f"{label}: loss {ours['loss'].item():.6f} vs {loss:.6f}, rel {lrel:.2e}")
                compare_adapter_grads(label, ours, grads)
        check_saved_checkpoints(folder, adapter_dir, work, valid)
        logits, loss, _ = hf_run(folder, adapter_dir, "nf4", True, torch.bfloat16, torch.bfloat16)
        ours = probe_run(folder, adapter_dir, work, "nf4", True, "bfloat16", "bfloat16")
        diff = (ours["logits"] - logits)[valid].abs().max().item()
        check(diff <= 2e-2, f"nf4 nested bfloat16 storage (the seed's flags), bf16 model: logits max abs diff {diff:.2e} <= 2e-2")
        check_training(work)
    finish("QLoRA forward, adapter gradients and training match transformers + bitsandbytes + PEFT")


FOUR_BIT = ("--use_4bit_quantization", "True", "--use_nested_quant", "True", "--bnb_4bit_quant_type", "nf4",
            "--bnb_4bit_compute_dtype", "float32")


def check_saved_checkpoints(folder, adapter_dir, work, valid):
    """transformers' save_pretrained of the 4-bit model: ftlaunch loads it as it is (no --four_bit)
    and gives the logits of its own quantise-on-load of the floating-point model, bit for bit."""
    for quant_type, nested, storage in (("nf4", True, "uint8"), ("fp4", False, "uint8"), ("nf4", True, "bfloat16")):
        dtype = torch.float32 if storage == "uint8" else torch.bfloat16
        bnb = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                                              bnb_4bit_use_double_quant=nested, bnb_4bit_compute_dtype=torch.float32,
                                              bnb_4bit_quant_storage=getattr(torch, storage))
        saved = os.path.join(work, f"saved_{quant_type}_{storage}")
        transformers.AutoModelForCausalLM.from_pretrained(folder, quantization_config=bnb, dtype=dtype,
                                                          device_map="cpu").save_pretrained(saved)
        dtype_name = "float32" if storage == "uint8" else "bfloat16"
        on_load = probe_run(folder, adapter_dir, work, quant_type, nested, storage, dtype_name)
        inp, out = os.path.join(work, "in.safetensors"), os.path.join(work, "out_saved.safetensors")
        proc = subprocess.run([PROBE, saved, inp, out, "--dtype", dtype_name, "--adapter", adapter_dir],
                              capture_output=True, text=True)
        if not check(proc.returncode == 0, f"{quant_type} {storage}: a saved 4-bit checkpoint loads ({proc.stderr.strip()[:300]})"):
            continue
        loaded = load_file(out)
        check(torch.equal(loaded["logits"], on_load["logits"]),
              f"{quant_type} nested={int(nested)} {storage}: saved 4-bit checkpoint gives the quantise-on-load logits "
              f"bit for bit (max diff {(loaded['logits'] - on_load['logits']).abs().max().item():.1e})")


def check_training(work):
    import re
    model_dir, data_dir, texts = sft.make_inputs(os.path.join(work, "train"))
    uint8 = FOUR_BIT + ("--bnb_4bit_quant_storage_dtype", "uint8")
    bf16 = FOUR_BIT + ("--bnb_4bit_quant_storage_dtype", "bfloat16")
    ours, log = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "q1"), 4, 1, extra=uint8)
    bnb = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.uint8)
    ref, _ = sft.reference_losses(model_dir, texts, 4, 1, load_kwargs={"quantization_config": bnb, "device_map": "cpu"})
    worst = max(abs(a - b) / abs(b) for a, b in zip(ours, ref)) if len(ours) == len(ref) else float("inf")
    check(worst <= 1e-4, f"QLoRA curve vs transformers + bitsandbytes + PEFT: {len(ours)} steps, worst rel diff {worst:.2e} <= 1e-4")
    footprint = re.search(r"4-bit base weights .*?: (\d+) bytes with their quantisation state, (\d+) bytes in bfloat16", log)
    ratio = int(footprint.group(1)) / int(footprint.group(2)) if footprint else float("inf")
    check(ratio <= 0.28, f"4-bit footprint of the linears: {ratio:.3f}x their bfloat16 bytes (<= 0.28)")

    lora, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "lora"), 4, 1)
    drift = max(abs(a - b) / abs(b) for a, b in zip(ours, lora))
    check(drift <= 0.05, f"QLoRA vs fp32 LoRA: worst per-step rel diff {drift:.3f} <= 0.05")

    for name, flags in (("uint8", uint8), ("bfloat16", bf16 + ("--max_grad_norm", "0"))):
        flags = flags + ("--learning_rate", "1e-2")
        curves = {}
        for stage in (0, 3):
            config = test_zero.zero_config(work, 0, 2, 1) if stage == 0 else test_zero.zero3_everything_partitioned(work, 2)
            curves[stage], log = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, f"q{stage}{name}"), 2, 1,
                                                  extra=flags, launcher=("--config_file", config))
        held = [(int(a), int(b)) for a, b in re.findall(r"this rank holds (\d+) bytes of the (\d+) bytes", log)]
        check(len(held) == 2 and all(0 < 2 * mine <= total + 4096 for mine, total in held),
              f"QLoRA {name} storage, ZeRO-3: each rank holds half of the partitioned weights, codes included {held}")
        if name == "uint8":
            stage0_uint8 = curves[0]
        diff = test_zero.worst_curve_diff(curves[3], curves[0])
        check(diff <= 1e-5, f"QLoRA {name} storage, 2 ranks: ZeRO-3 vs stage 0, worst rel diff {diff:.2e} <= 1e-5")

    recomputed, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "q1gc"), 4, 1,
                                     extra=uint8 + ("--gradient_checkpointing", "True"))
    check(recomputed == ours, "QLoRA with --gradient_checkpointing True: the same curve, step for step (exact)")
    stage2, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "q2"), 2, 1, extra=uint8 + ("--learning_rate", "1e-2"),
                                 launcher=("--config_file", test_zero.zero_config(work, 2, 2, 1)))
    diff = test_zero.worst_curve_diff(stage2, stage0_uint8)
    check(diff <= 1e-5, f"QLoRA uint8 storage, 2 ranks: ZeRO-2 vs stage 0, worst rel diff {diff:.2e} <= 1e-5")

    for flags, needle in ((("--use_4bit_quantization", "True", "--use_peft_lora", "False"), "--use_peft_lora True"),):
        cmd = sft.ftlaunch_command(model_dir, data_dir, os.path.join(work, "bad"), 4, 1, extra=flags)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        check(proc.returncode == 2 and needle in proc.stderr + proc.stdout,
              f"{' '.join(flags)}: exit {proc.returncode}, message names {needle}")


if __name__ == "__main__":
    main()
