"""LLM.int8 (--use_8bit_quantization): ftlaunch's 8-bit base model against transformers + bitsandbytes + PEFT.

bitsandbytes 0.50 on this CPU is the reference (its portable int8 kernels; its int32 product is
exact for these sizes, as ftlaunch's always is).
  quantise     int8_vectorwise_quant of awkward fp32 and bf16 matrices (a row of zeros, values past
               the threshold): as weights (from float16, no threshold) codes and scales bit for bit,
               int8_vectorwise_dequant bit for bit; as activations at threshold 6.0 the codes,
               row absmax and outlier columns bit for bit
  forward      a tiny Llama whose norms push a few hidden columns past 6.0 (so LLM.int8's outlier
               split runs), loaded 8-bit by transformers (BitsAndBytesConfig(load_in_8bit=True),
               CPU) and by ftl_model_probe --int8 6.0, a PEFT adapter with non-zero B applied to both:
               evaluation logits (Linear8bitLt in eval mode: MatMul8bitLt, int8 activations and the
               outlier columns in floating point) max |diff| <= 1e-5 at real tokens; with the
               threshold 0 instead they differ by more (the outliers matter); in train mode
               (MatMul8bitFp: dequantised weights, what bitsandbytes trains with on a CPU) loss rel
               <= 1e-6 and every adapter gradient rel <= 1e-4
  saved        transformers' save_pretrained of the 8-bit model (int8 weight, SCB, weight_format)
               loads without any flag and gives the quantise-on-load logits bit for bit
  training     `ftlaunch train --use_8bit_quantization True` (the SFT parity case: LoRA all-linear,
               AdamW, cosine, clipping, 20 steps) == transformers + bitsandbytes + PEFT training
               the same 8-bit model, per-step loss rel <= 1e-4; --gradient_checkpointing gives the
               same curve exactly; ZeRO-2 on 2 ranks == stage 0 on 2 ranks (1e-5); the log's 8-bit
               footprint (codes + row scales) <= 0.54x the linears' bf16 bytes (half, and one fp32
               scale per row of 64 inputs)
  bad input    without --use_peft_lora, under ZeRO-3: exit 2 naming the flag, before loading
               anything (DoRA on 8-bit weights trains: test_dora)
"""
import os
import re
import subprocess
import sys
import tempfile

import bitsandbytes.functional as F
import torch
import transformers
from peft import PeftModel
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
import test_qlora as qlora  # noqa: E402
import test_sft_parity as sft  # noqa: E402
import test_zero  # noqa: E402

MODEL_PROBE = os.environ["FTL_MODEL_PROBE"]
QUANT_PROBE = os.environ["FTL_QUANT_PROBE"]
THRESHOLD = 6.0
EIGHT_BIT = ("--use_8bit_quantization", "True")


def matrices():
    g = torch.Generator().manual_seed(11)
    a = torch.randn(33, 70, generator=g)
    a[4] = 0.0  # a row of zeros
    a[7, 3], a[20, 3], a[9, 51] = 9.5, -7.25, 6.0  # past the threshold, one exactly at it
    b = (torch.randn(5, 130, generator=g) * 3).to(torch.bfloat16)
    c = torch.randn(1, 17, generator=g) * 8  # one row: outlier columns keep their codes zeroed by value
    return {"a": a, "b": b, "c": c}


def check_quantisation(work):
    inputs, out = os.path.join(work, "q_in.safetensors"), os.path.join(work, "q_out.safetensors")
    tensors = matrices()
    save_file(tensors, inputs)
    proc = subprocess.run([QUANT_PROBE, inputs, out, "--int8", str(THRESHOLD)], capture_output=True, text=True)
    if not check(proc.returncode == 0, f"ftl_quant_probe --int8 runs ({proc.stderr.strip()[:300]})"):
        return
    ours = load_file(out)
    for name, x in tensors.items():
        codes, scales, _ = F.int8_vectorwise_quant(x.to(torch.float16).clone())
        dequantized = F.int8_vectorwise_dequant(codes, scales)
        same = (torch.equal(ours[f"{name}.codes"], codes) and torch.equal(ours[f"{name}.scales"], scales)
                and torch.equal(ours[f"{name}.dequantized"], dequantized))
        check(same, f"{name} {tuple(x.shape)} {x.dtype}: weight codes, SCB and dequantised values equal bitsandbytes' bit for bit")
        row_codes, row_absmax, outliers = F.int8_vectorwise_quant(x.to(torch.float16).clone(), threshold=THRESHOLD)
        outliers = torch.empty(0, dtype=torch.int64) if outliers is None else outliers.to(torch.int64)
        same = (torch.equal(ours[f"{name}.row_codes"], row_codes) and torch.equal(ours[f"{name}.row_absmax"], row_absmax)
                and torch.equal(ours[f"{name}.outlier_columns"], outliers))
        check(same, f"{name}: activation codes, row absmax and outlier columns {outliers.tolist()} at threshold "
                    f"{THRESHOLD} equal bitsandbytes' bit for bit")


def make_model(folder):
    """test_qlora's tiny Llama, with norm weights that push hidden columns 3 and 7 past the threshold."""
    qlora.make_model(folder)
    weights = load_file(os.path.join(folder, "model.safetensors"))
    for i in range(2):
        weights[f"model.layers.{i}.input_layernorm.weight"][3] = 40.0
        weights[f"model.layers.{i}.post_attention_layernorm.weight"][7] = -40.0
    save_file(weights, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})


def hf_model(folder, adapter_dir):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, quantization_config=transformers.BitsAndBytesConfig(load_in_8bit=True), dtype=torch.float32,
        device_map="cpu")
    return PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)


def probe(folder, work, extra):
    inp, out = os.path.join(work, "in.safetensors"), os.path.join(work, "out.safetensors")
    save_file(qlora.batch(), inp)
    proc = subprocess.run([MODEL_PROBE, folder, inp, out, "--dtype", "float32", *extra], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"probe failed: {proc.stderr}")
    return load_file(out)


def check_forward(work):
    folder, adapter_dir = os.path.join(work, "model"), os.path.join(work, "adapter")
    make_model(folder)
    qlora.make_adapter(folder, adapter_dir)
    valid = qlora.batch()["attention_mask"].bool()
    model = hf_model(folder, adapter_dir)
    model.eval()
    largest = []  # the largest |input| of each 8-bit linear
    hooks = [m.register_forward_pre_hook(lambda _, args: largest.append(args[0].abs().max().item()))
             for m in model.modules() if type(m).__name__ == "Linear8bitLt"]
    with torch.no_grad():
        eval_logits = model(**qlora.batch()).logits.float()
    for h in hooks:
        h.remove()
    past = sum(v >= THRESHOLD for v in largest)
    check(past > 0, f"{past} of {len(largest)} 8-bit linears get inputs past {THRESHOLD} (largest {max(largest):.1f}): "
                    "the outlier split runs")
    model.train()
    out = model(**qlora.batch())
    out.loss.backward()
    grads = {name.replace(".default", ""): p.grad.float() for name, p in model.named_parameters() if "lora_" in name}

    ours = probe(folder, work, ("--adapter", adapter_dir, "--int8", str(THRESHOLD), "--train_mode", "1"))
    diff = (ours["logits"] - eval_logits)[valid].abs().max().item()
    check(diff <= 1e-5, f"evaluation logits (int8 activations, outlier columns in fp32) max abs diff {diff:.2e} <= 1e-5")
    no_split = probe(folder, work, ("--adapter", adapter_dir, "--int8", "0"))
    split_matters = (no_split["logits"] - eval_logits)[valid].abs().max().item()
    check(split_matters > 10 * max(diff, 1e-6),
          f"without the outlier split (threshold 0) the logits differ by {split_matters:.2e}: it is exercised")
    rel = abs(ours["loss"].item() - out.loss.item()) / out.loss.item()
    check(rel <= 1e-6, f"train-mode loss (dequantised weights) {ours['loss'].item():.6f} vs {out.loss.item():.6f}, rel {rel:.2e}")
    qlora.compare_adapter_grads("train mode", ours, grads)

    saved = os.path.join(work, "saved_int8")
    transformers.AutoModelForCausalLM.from_pretrained(
        folder, quantization_config=transformers.BitsAndBytesConfig(load_in_8bit=True), dtype=torch.float32,
        device_map="cpu").save_pretrained(saved)
    try:
        loaded = probe(saved, work, ("--adapter", adapter_dir))
        same = torch.equal(loaded["logits"], ours["logits"])
        check(same, "transformers' saved 8-bit checkpoint loads as it is and gives the quantise-on-load logits bit for bit")
    except RuntimeError as e:
        check(False, f"transformers' saved 8-bit checkpoint loads: {str(e)[:300]}")


def check_training(work):
    model_dir, data_dir, texts = sft.make_inputs(os.path.join(work, "train"))
    ours, log = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "q1"), 4, 1, extra=EIGHT_BIT)
    bnb = transformers.BitsAndBytesConfig(load_in_8bit=True)
    ref, _ = sft.reference_losses(model_dir, texts, 4, 1, load_kwargs={"quantization_config": bnb, "device_map": "cpu"},
                                  train_mode=True)
    worst = max(abs(a - b) / abs(b) for a, b in zip(ours, ref)) if ours and len(ours) == len(ref) else float("inf")
    check(worst <= 1e-4, f"8-bit LoRA curve vs transformers + bitsandbytes + PEFT: {len(ours)} steps, worst rel diff {worst:.2e} <= 1e-4")
    footprint = re.search(r"8-bit base weights .*?: (\d+) bytes with their row scales, (\d+) bytes in bfloat16", log)
    ratio = int(footprint.group(1)) / int(footprint.group(2)) if footprint else float("inf")
    check(ratio <= 0.54, f"8-bit footprint of the linears: {ratio:.3f}x their bfloat16 bytes (<= 0.54: half, plus "
                         "one fp32 scale per row of 64 inputs)")
    recomputed, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "q1gc"), 4, 1,
                                     extra=EIGHT_BIT + ("--gradient_checkpointing", "True"))
    check(recomputed == ours, "8-bit LoRA with --gradient_checkpointing True: the same curve, step for step (exact)")
    curves = {}
    for stage in (0, 2):
        curves[stage], _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, f"q{stage}"), 2, 1,
                                            extra=EIGHT_BIT + ("--learning_rate", "1e-2"),
                                            launcher=("--config_file", test_zero.zero_config(work, stage, 2, 1)))
    diff = test_zero.worst_curve_diff(curves[2], curves[0])
    check(diff <= 1e-5, f"8-bit LoRA, 2 ranks: ZeRO-2 vs stage 0, worst rel diff {diff:.2e} <= 1e-5")

    zero3 = ("--config_file", test_zero.zero3_everything_partitioned(work, 2))
    for flags, launcher, needle in ((EIGHT_BIT + ("--use_peft_lora", "False"), ("--cpu", "--num_processes", "1"), "--use_peft_lora True"),
                                    (EIGHT_BIT, zero3, "ZeRO stage 3")):
        cmd = sft.ftlaunch_command(model_dir, data_dir, os.path.join(work, "bad"), 4, 1, extra=flags, launcher=launcher)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        check(proc.returncode == 2 and needle in proc.stderr + proc.stdout,
              f"{' '.join(flags[2:]) or 'ZeRO-3'}: exit {proc.returncode}, message names {needle}")


def main():
    with tempfile.TemporaryDirectory() as work:
        check_quantisation(work)
        check_forward(work)
        check_training(work)
    finish("LLM.int8 quantisation, forward, gradients and training match transformers + bitsandbytes + PEFT")


if __name__ == "__main__":
    main()
