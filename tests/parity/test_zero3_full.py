"""ZeRO-3 full fine-tuning (no LoRA): every trained weight partitioned, against the single-rank run.

The tiny model and data of test_sft_parity, fully fine-tuned (AdamW with weight decay 1.0, cosine
schedule with warmup, clipping 0.5, lr 1e-3) for 20 steps with a global batch of 4 rows, saving
every 5 steps. The 1-rank run's curve equals transformers' (AdamW with the Trainer's two parameter
groups: norm weights undecayed) within 1e-4 relative, and ZeRO-2 on 2 ranks (flat gradient buckets,
the norms' ranges of each slice stepped without decay) equals it within 1e-5. Under ZeRO-3 each rank keeps only its fp32 slice of every weight, gathers a part
while it runs and reduce-scatters that part's gradient in backward. Checks:
  curves     ZeRO-3 on 2 ranks (batch 2, --gradient_checkpointing) and on 4 ranks (batch 1) and
             ZeRO-3 with accumulation (2 ranks x batch 1 x 2): per-step loss == the 1-rank run
             without ZeRO within 1e-5 relative
  weights    checkpoint-5's and the final model.safetensors == the 1-rank run's: |a - b| / |b| over
             all weights together <= 1e-5, and the weights moved (so the check has teeth)
  slices     each rank reports holding its slice of the trained weights: held x ranks <= all + 4 KiB,
             where all is the model's fp32 bytes
  prefetch   each part's gather starts while the part before it computes (stage3_prefetch_bucket_size
             "auto"): in the 2-rank run every gather but a step's first (the embeddings, after the
             optimizer step changed the slices) was started ahead and none was wasted; with stage3_prefetch_bucket_size 0 none is, and
             the curve is bit for bit the same
  tied       a model with tied embeddings (lm_head is embed_tokens: gathered, and its gradient
             reduced, twice a step): ZeRO-3 on 2 ranks == 1 rank (curve and weights, 1e-5)
  offload    offload_param and offload_optimizer cpu (the slices, their gradients and the AdamW
             state in host memory): ZeRO-3 on 2 ranks == 1 rank (curve and weights, 1e-5), the log
             placing the slices in host memory; offload_param nvme: exit 2 naming the key, before
             any step
  resume     checkpoint-10 of the 4-rank run resumed on 2 ranks under ZeRO-3 (slices re-cut) and on
             1 rank without ZeRO: steps 11..20 == the uninterrupted run (1e-5)
"""
import json
import os
import re
import shutil
import sys
import tempfile

from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
import test_sft_parity as sft  # noqa: E402
from test_zero import adapter_diff, model_variant, worst_curve_diff, zero3_everything_partitioned, zero_config  # noqa: E402


# Strong enough that decaying the norm weights too (the Trainer exempts them) shows in the curve.
WEIGHT_DECAY = 1.0


def full_finetune(model_dir, data_dir, out, batch, accumulation, launcher=("--cpu", "--num_processes", "1"), extra=()):
    cmd = sft.ftlaunch_command(model_dir, data_dir, out, batch, accumulation,
                               extra=("--save_steps", "5", *extra), launcher=launcher)
    cmd[cmd.index("--use_peft_lora") + 1] = "False"
    cmd[cmd.index("--learning_rate") + 1] = "1e-3"
    cmd[cmd.index("--weight_decay") + 1] = str(WEIGHT_DECAY)
    proc = sft.subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"ftlaunch failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    state = json.load(open(os.path.join(out, "trainer_state.json")))
    return [e["loss"] for e in state["log_history"] if "loss" in e], proc.stdout + proc.stderr


def gather_counts(log):
    """(gathers, started ahead, started ahead and not used) from the run's log."""
    m = re.search(r"ZeRO-3 gathers: (\d+), of which (\d+) were started ahead of their use \(prefetch\) and (\d+)", log)
    return tuple(map(int, m.groups())) if m else None


def weights_diff(dir_a, dir_b):
    """|a - b| / |b| over all of model.safetensors' weights together."""
    return adapter_diff(dir_a, dir_b, "model.safetensors")[0]


def tied_copy(work, model_dir):
    """The same tiny model with tie_word_embeddings (lm_head shares embed_tokens)."""
    tied = os.path.join(work, "tied_model")
    model_variant(model_dir, tied, lambda config: setattr(config, "tie_word_embeddings", True))
    return tied


def main():
    with tempfile.TemporaryDirectory() as work:
        model_dir, data_dir, texts = sft.make_inputs(work)
        single_dir = os.path.join(work, "single")
        single, _ = full_finetune(model_dir, data_dir, single_dir, 4, 1)
        reference, _ = sft.reference_losses(model_dir, texts, 4, 1, full=True, lr=1e-3, weight_decay=WEIGHT_DECAY)
        one_group, _ = sft.reference_losses(model_dir, texts, 4, 1, full=True, lr=1e-3, weight_decay=WEIGHT_DECAY,
                                            decay_groups=False)
        vs_hf, vs_one_group = worst_curve_diff(single, reference), worst_curve_diff(one_group, reference)
        check(len(single) == len(reference) and vs_hf <= 1e-4 and vs_one_group > 10 * 1e-4,
              f"full fine-tuning, 1 rank: loss curve vs transformers (AdamW with the Trainer's two groups, the norm "
              f"weights undecayed) worst rel diff {vs_hf:.2e} <= 1e-4 (decaying them too would be {vs_one_group:.2e} off)")
        zero2_dir = os.path.join(work, "z2")
        zero2, _ = full_finetune(model_dir, data_dir, zero2_dir, 2, 1, launcher=("--config_file", zero_config(work, 2, 2, 1)))
        curve, late = worst_curve_diff(zero2, single), weights_diff(zero2_dir, single_dir)
        check(len(zero2) == len(single) and curve <= 1e-5 and late <= 1e-5,
              f"ZeRO-2 full fine-tuning on 2 ranks (flat buckets, the norms' ranges undecayed) vs 1 rank: curve "
              f"{curve:.2e}, final weights {late:.2e} <= 1e-5")
        model_bytes = 4 * sum(t.numel() for t in load_file(os.path.join(single_dir, "model.safetensors")).values())
        base = load_file(os.path.join(model_dir, "model.safetensors"))
        final = load_file(os.path.join(single_dir, "model.safetensors"))
        moved = max(((final[k] - base[k].float()).abs().max() / base[k].float().abs().max().clamp_min(1e-12)).item()
                    for k in final)
        check(moved > 1e-4, f"full fine-tuning moved the weights (worst relative change {moved:.1e})")

        cases = [(2, 2, 1, ("--gradient_checkpointing", "True")), (4, 1, 1, ()), (2, 1, 2, ())]
        four_dir = None
        for ranks, batch, accumulation, extra in cases:
            out = os.path.join(work, f"z3_{ranks}_{batch}_{accumulation}")
            losses, log = full_finetune(model_dir, data_dir, out, batch, accumulation,
                                        launcher=("--config_file", zero_config(work, 3, ranks, accumulation)), extra=extra)
            what = f"ZeRO-3 full fine-tuning, {ranks} ranks x batch {batch} x accumulation {accumulation}" + \
                (" (gradient checkpointing)" if extra else "")
            curve = worst_curve_diff(losses, single)
            check(len(losses) == len(single) and curve <= 1e-5, f"{what}: loss curve vs 1 rank worst rel diff {curve:.2e} <= 1e-5")
            early = weights_diff(os.path.join(out, "checkpoint-5"), os.path.join(single_dir, "checkpoint-5"))
            late = weights_diff(out, single_dir)
            check(early <= 1e-5 and late <= 1e-5,
                  f"{what}: weights of checkpoint-5 and the end vs 1 rank rel diff {early:.2e}, {late:.2e} <= 1e-5")
            held = [tuple(map(int, m)) for m in re.findall(r"holds (\d+) bytes of the (\d+) bytes of partitioned trainable", log)]
            check(len(held) == ranks and all(t == model_bytes and s * ranks <= t + 4096 for s, t in held),
                  f"{what}: each rank holds its slice of the trained weights {held[:1]} (held, all = {model_bytes})")
            if ranks == 4:
                four_dir = out
            if ranks == 2 and accumulation == 1:
                # Per micro-batch: the embeddings, 2 layers, the final norm, the head, and the 2 layers
                # again in backward (the head's gather starts the top layer's); only the embeddings,
                # first after the optimizer step, are not gathered ahead.
                counts = gather_counts(log)
                expected = (20 * 7, 20 * 6, 0)
                check(counts == expected, f"{what}: gathers, of them started ahead, wasted: {counts} == {expected}")
                prefetched_losses = losses
                off_dir = os.path.join(work, "z3_no_prefetch")
                off_yaml = zero3_everything_partitioned(work, 2, "no_prefetch", zero={"stage3_prefetch_bucket_size": 0})
                off, off_log = full_finetune(model_dir, data_dir, off_dir, batch, accumulation,
                                             launcher=("--config_file", off_yaml), extra=extra)
                off_counts = gather_counts(off_log)
                check(off == prefetched_losses and off_counts is not None and off_counts[1] == 0,
                      f"stage3_prefetch_bucket_size 0: no gather ahead {off_counts}, the same curve bit for bit")

        # Tied embeddings: the embeddings part is gathered for the input and for the head.
        tied = tied_copy(work, model_dir)
        tied_single_dir = os.path.join(work, "tied_single")
        tied_single, _ = full_finetune(tied, data_dir, tied_single_dir, 4, 1)
        tied_z3_dir = os.path.join(work, "tied_z3")
        tied_z3, _ = full_finetune(tied, data_dir, tied_z3_dir, 2, 1, launcher=("--config_file", zero_config(work, 3, 2, 1)))
        curve = worst_curve_diff(tied_z3, tied_single)
        late = weights_diff(tied_z3_dir, tied_single_dir)
        check(len(tied_z3) == len(tied_single) and curve <= 1e-5 and late <= 1e-5,
              f"tied embeddings, ZeRO-3 on 2 ranks vs 1 rank: curve {curve:.2e}, final weights {late:.2e} <= 1e-5")

        # offload_param / offload_optimizer cpu.
        offload_dir = os.path.join(work, "z3_offload")
        yaml = zero3_everything_partitioned(work, 2, "offload_cpu", zero={"offload_param": {"device": "cpu"},
                                                                          "offload_optimizer": {"device": "cpu"}})
        offloaded, log = full_finetune(model_dir, data_dir, offload_dir, 2, 1, launcher=("--config_file", yaml))
        curve = worst_curve_diff(offloaded, single)
        late = weights_diff(offload_dir, single_dir)
        check("(offload_param: in host memory)" in log and len(offloaded) == len(single) and curve <= 1e-5 and late <= 1e-5,
              f"offload_param + offload_optimizer cpu, ZeRO-3 on 2 ranks vs 1 rank: curve {curve:.2e}, "
              f"final weights {late:.2e} <= 1e-5")
        yaml = zero3_everything_partitioned(work, 2, "offload_nvme", zero={"offload_param": {"device": "nvme", "nvme_path": work}})
        cmd = sft.ftlaunch_command(model_dir, data_dir, os.path.join(work, "z3_nvme"), 2, 1, launcher=("--config_file", yaml))
        cmd[cmd.index("--use_peft_lora") + 1] = "False"
        proc = sft.subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        text = proc.stdout + proc.stderr
        check(proc.returncode == 2 and "zero_optimization.offload_param.device nvme" in text and "step 1/" not in text,
              f"offload_param nvme with full fine-tuning: exit {proc.returncode}, the key named, no step")

        # Resume checkpoint-10 of the 4-rank run with another layout.
        steps = list(range(10, 20))
        for ranks, launcher in ((2, ("--config_file", zero_config(work, 3, 2, 1))), (1, ("--cpu", "--num_processes", "1"))):
            out = os.path.join(work, f"resumed_on_{ranks}")
            os.makedirs(out)
            shutil.copytree(os.path.join(four_dir, "checkpoint-10"), os.path.join(out, "checkpoint-10"))
            resumed, log = full_finetune(model_dir, data_dir, out, 4 // ranks, 1, launcher=launcher,
                                         extra=("--resume_from_checkpoint", "True"))
            tail = worst_curve_diff(resumed, single, steps) if len(resumed) == 20 else float("inf")
            late = weights_diff(out, single_dir)
            layout = "ZeRO-3 on 2 ranks" if ranks == 2 else "1 rank without ZeRO"
            check("resumed from" in log and tail <= 1e-5 and late <= 1e-5,
                  f"checkpoint-10 of ZeRO-3 on 4 ranks resumed as {layout}: steps 11..20 worst rel diff {tail:.2e}, "
                  f"final weights {late:.2e} <= 1e-5")

    finish("all ZeRO-3 full fine-tuning checks passed")


if __name__ == "__main__":
    main()
