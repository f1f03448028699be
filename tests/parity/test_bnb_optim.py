"""bitsandbytes' AdamW (--optim adamw_8bit, adamw_bnb_8bit, paged_adamw_8bit, paged_adamw_32bit)
against bitsandbytes itself (its CPU kernels, from the setup virtualenv).

Full fine-tuning of test_sft_parity's tiny model (20 steps, batch 4, lr 1e-3, weight decay 1.0 with
the Trainer's two groups, cosine schedule, clipping 0.5): its linears and lm_head have >= 4096
elements, so an 8-bit optimizer keeps their moments as 8-bit blockwise codes; the norms (64
elements) keep 32-bit state, and embed_tokens too (the Trainer's bitsandbytes override for
nn.Embedding). The reference is transformers + bitsandbytes.optim.AdamW (optim_bits 8 or 32,
is_paged as the name says, the Trainer's override registered) on the same batches.
  curves   per-step loss vs the reference within 1e-4 relative (test_zero3_full's bound for
           torch's AdamW: the forward and backward differ in rounding); the 8-bit curve is more
           than 10x that bound away from torch AdamW's, so the 8-bit state is what is compared
  state    checkpoint-5's optimizer state vs the reference optimizer's after 5 steps: 8-bit codes
           equal for at least 99.95% of the elements, absmax within 1e-4 relative (the gradients
           differ in their last bits, so a moment next to a bin edge may take the other code, and
           that difference feeds the next steps: 99.9989% equal after a 1-step run, 99.982% after 5
           of these 20 steps, 99.5% after 20, on this machine); the 8-bit quantizer alone is
           bit-exact (test_quant)
  LoRA     the seed-like LoRA run with paged_adamw_32bit (adapters under 4096 elements: 32-bit
           state) vs the reference, 1e-4
  resume   the 8-bit run resumed from checkpoint-10 (codes and absmax restored) gives steps 11..20
           of the uninterrupted run within 1e-6
  ranks    2 CPU ranks x batch 2 (plain data parallel) vs 1 rank x batch 4, 8-bit: within 1e-4
  estimate `ftlaunch estimate-memory --optim adamw_8bit` counts the optimizer state as 8 bytes per
           embed_tokens element and 2 bytes plus an fp32 absmax per 256 for the rest
           (transformers' parameter count), torch AdamW as 8 bytes per parameter
  errors   --optim adamw_8bit under a DeepSpeed config: exit 2 naming --optim, before training
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
import test_sft_parity as sft  # noqa: E402
from test_zero import worst_curve_diff, zero_config  # noqa: E402
from test_zero3_full import WEIGHT_DECAY, full_finetune  # noqa: E402


def bnb_optimizer(name, captured, snapshot_step=5):
    """The optimizer HF's Trainer builds for --optim `name` (trainer_optimizer.py). Appends to
    `captured` its state's tensors after `snapshot_step` steps ({parameter id: {key: tensor}})."""
    def make(groups, model, lr):
        import bitsandbytes as bnb
        eight_bit = "8bit" in name
        opt = bnb.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, optim_bits=8 if eight_bit else 32,
                              is_paged="paged" in name)
        if eight_bit:
            manager = bnb.optim.GlobalOptimManager.get_instance()
            for module in model.modules():
                if isinstance(module, torch.nn.Embedding):
                    manager.register_module_override(module, "weight", {"optim_bits": 32})
        calls = [0]

        def after_step(optimizer, args, kwargs):
            calls[0] += 1
            if calls[0] == snapshot_step:
                captured.append({id(p): {k: v.clone() for k, v in optimizer.state[p].items() if torch.is_tensor(v)}
                                 for group in optimizer.param_groups for p in group["params"]})
        opt.register_step_post_hook(after_step)
        return opt
    return make


def state_agreement(ours_dir, snapshot, model):
    """(share of equal 8-bit codes, worst absmax rel diff, 8-bit tensors) between the checkpoint's
    optimizer state and the reference optimizer's `snapshot`."""
    ours = load_file(os.path.join(ours_dir, "optimizer.safetensors"))
    equal = total = tensors = 0
    worst = 0.0
    for name, p in model.named_parameters():
        state = snapshot.get(id(p))
        if state is None or state["state1"].dtype != torch.uint8:
            continue
        tensors += 1
        for k in ("1", "2"):
            codes = ours.get(f"state{k}.{name}")
            absmax = ours.get(f"absmax{k}.{name}")
            if codes is None or absmax is None:
                return 0.0, float("inf"), tensors
            equal += (codes.flatten() == state[f"state{k}"].flatten()).sum().item()
            total += codes.numel()
            ref = state[f"absmax{k}"]
            worst = max(worst, ((absmax - ref).abs() / ref.abs().clamp_min(1e-30)).max().item())
    return equal / max(total, 1), worst, tensors


def main():
    with tempfile.TemporaryDirectory() as work:
        model_dir, data_dir, texts = sft.make_inputs(work)
        plain_ref, _ = sft.reference_losses(model_dir, texts, 4, 1, full=True, lr=1e-3, weight_decay=WEIGHT_DECAY)
        runs = {}
        for name in ("adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"):
            out = os.path.join(work, name)
            ours, log = full_finetune(model_dir, data_dir, out, 4, 1, extra=("--optim", name))
            captured = []
            ref, model = sft.reference_losses(model_dir, texts, 4, 1, full=True, lr=1e-3, weight_decay=WEIGHT_DECAY,
                                              make_optimizer=bnb_optimizer(name, captured))
            diff = worst_curve_diff(ours, ref)
            check(len(ours) == len(ref) == 20 and diff <= 1e-4 and f"--optim {name}: bitsandbytes' AdamW" in log,
                  f"{name}: full fine-tuning curve vs transformers + bitsandbytes worst rel diff {diff:.2e} <= 1e-4")
            if "8bit" in name:
                away = worst_curve_diff(ref, plain_ref)
                check(away > 10 * diff, f"{name}: bitsandbytes' 8-bit curve is {away:.2e} away from torch AdamW's, "
                                        f"more than 10x ours from it")
                share, absmax, tensors = state_agreement(os.path.join(out, "checkpoint-5"), captured[0], model)
                check(tensors >= 10 and share >= 0.9995 and absmax <= 1e-4,
                      f"{name}: {tensors} tensors' 8-bit state after 5 steps: {share:.6f} of the codes equal "
                      f"(>= 0.9995), absmax worst rel diff {absmax:.1e} <= 1e-4")
            runs[name] = (out, ours)

        # LoRA (the seed's kind of run): adapters under 4096 elements keep 32-bit state.
        lora_out = os.path.join(work, "lora")
        ours, _ = sft.run_ftlaunch(model_dir, data_dir, lora_out, 4, 1, extra=("--optim", "paged_adamw_32bit"))
        ref, _ = sft.reference_losses(model_dir, texts, 4, 1, make_optimizer=bnb_optimizer("paged_adamw_32bit", []))
        diff = worst_curve_diff(ours, ref)
        check(len(ours) == 20 and diff <= 1e-4, f"LoRA with paged_adamw_32bit vs transformers + peft + bitsandbytes "
                                                f"worst rel diff {diff:.2e} <= 1e-4")

        # Resume: the 8-bit codes and absmax come back from checkpoint-10.
        out, whole = runs["adamw_8bit"]
        resumed, _ = full_finetune(model_dir, data_dir, out, 4, 1,
                                   extra=("--optim", "adamw_8bit", "--resume_from_checkpoint",
                                          os.path.join(out, "checkpoint-10")))
        tail = worst_curve_diff(resumed[10:], whole[10:]) if len(resumed) == 20 else float("inf")
        check(tail <= 1e-6, f"adamw_8bit resumed from checkpoint-10: steps 11..20 vs the whole run worst rel diff "
                            f"{tail:.2e} <= 1e-6")

        two, _ = full_finetune(model_dir, data_dir, os.path.join(work, "two_ranks"), 2, 1,
                               launcher=("--cpu", "--num_processes", "2", "--main_process_port", "0"),
                               extra=("--optim", "adamw_8bit"))
        diff = worst_curve_diff(two, whole)
        check(len(two) == 20 and diff <= 1e-4, f"adamw_8bit on 2 ranks x batch 2 vs 1 rank x batch 4: worst rel diff "
                                               f"{diff:.2e} <= 1e-4")

        try:
            full_finetune(model_dir, data_dir, os.path.join(work, "ds"), 4, 1,
                          launcher=("--config_file", zero_config(work, 2, 1, 1)), extra=("--optim", "adamw_8bit"))
            refused = ""
        except RuntimeError as e:
            refused = str(e)
        check("failed (2)" in refused and "--optim adamw_8bit under DeepSpeed" in refused,
              "adamw_8bit under DeepSpeed: exit 2 naming --optim")
        import transformers
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
        total = model.num_parameters()
        embeddings = model.get_input_embeddings().weight.numel()
        optimizer_bytes = {}
        for name in ("adamw_torch", "adamw_8bit"):
            proc = subprocess.run([sft.FTLAUNCH, "--cpu", "--num_processes", "1", "estimate-memory", "--model_name_or_path",
                                   model_dir, "--use_peft_lora", "False", "--optim", name, "--json"],
                                  capture_output=True, text=True)
            rows = json.loads(proc.stdout)["rows"] if proc.returncode == 0 else []
            optimizer_bytes[name] = next((r["optimizer"] for r in rows if r["zero_stage"] == 0), None)
        rest = total - embeddings
        expected = {"adamw_torch": 8 * total, "adamw_8bit": 8 * embeddings + 2 * rest + 8 * math.ceil(rest / 256)}
        check(optimizer_bytes == expected, f"estimate-memory's optimizer state at stage 0: {optimizer_bytes} == {expected}")
    finish("bitsandbytes' AdamW: the same curves and state as bitsandbytes")


if __name__ == "__main__":
    main()
