"""The best model (--metric_for_best_model, --greater_is_better, --load_best_model_at_end,
--save_strategy best) as the HF Trainer keeps it, on the tiny LoRA run of test_sft_parity.

12 steps, evaluating and saving every 4 (the evaluation split is the training data). The expected
best step is read from the run's own log_history, so each check says which evaluation the rule
picks:
  lowest loss   --load_best_model_at_end with the default metric (eval_loss, lower is better):
                best_global_step is the step of the lowest eval_loss and best_metric its value, and
                the adapter in output_dir equals that checkpoint's bit for bit (the last step saves
                checkpoint-12 too, as the Trainer does)
  highest loss  --greater_is_better True (the first evaluation, as the loss falls): the adapter in
                output_dir equals checkpoint-<best>'s bit for bit and differs from the last
                checkpoint's; with --save_total_limit 1 only the best checkpoint stays at the end
                (Trainer._finalize_training removes the newest too)
  resume        the run resumed from its newest checkpoint keeps the best it recorded and loads it
  on start      --eval_on_start evaluates before the first step (its loss the highest), and that
                evaluation is not a best candidate, as in the Trainer
  best only     --save_strategy best: a checkpoint exactly at each evaluation that set a new best
  errors        eval every 4 and save every 6, eval steps with save epoch, an unknown metric: exit 2
                with the Trainer's message
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
import test_sft_parity as sft  # noqa: E402
from test_schedules import STEPS, command  # noqa: E402

EVERY = ["--splits", "train,test", "--eval_strategy", "steps", "--eval_steps", "4", "--save_strategy", "steps",
         "--save_steps", "4"]


def train(model_dir, data_dir, out, flags):
    cmd = command(model_dir, data_dir, out, [*EVERY, *flags])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:])
        return None, proc
    return json.load(open(os.path.join(out, "trainer_state.json"))), proc


def adapter(folder):
    return load_file(os.path.join(folder, "adapter_model.safetensors"))


def same(a, b):
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def evaluations(state):
    return [(e["step"], e["eval_loss"]) for e in state["log_history"] if "eval_loss" in e]


def main():
    work = tempfile.mkdtemp(prefix="ftl_best_")
    model_dir, data_dir, _ = sft.make_inputs(work)
    shutil.copy(os.path.join(data_dir, "train.jsonl"), os.path.join(data_dir, "test.jsonl"))

    out = os.path.join(work, "lowest")
    state, _ = train(model_dir, data_dir, out, ["--load_best_model_at_end", "True"])
    evals = evaluations(state) if state else []
    step, value = min(evals, key=lambda e: e[1]) if evals else (None, None)
    check(state is not None and state["best_global_step"] == step and state["best_metric"] == value,
          f"lowest eval_loss: best_global_step {state and state['best_global_step']} == {step}, best_metric == {value}")
    check(state is not None and state["best_model_checkpoint"] == os.path.join(out, f"checkpoint-{step}")
          and same(adapter(out), adapter(os.path.join(out, f"checkpoint-{step}"))),
          f"output_dir's adapter == checkpoint-{step}'s (the best; {state and state['best_model_checkpoint']})")
    newest = adapter(os.path.join(out, f"checkpoint-{STEPS}")) if state else None

    highest = ["--load_best_model_at_end", "True", "--greater_is_better", "True"]
    out = os.path.join(work, "highest")
    state, proc = train(model_dir, data_dir, out, highest)
    evals = evaluations(state) if state else []
    step, value = max(evals, key=lambda e: e[1]) if evals else (None, None)
    check(state is not None and step != STEPS and state["best_global_step"] == step and state["best_metric"] == value
          and state["best_model_checkpoint"] == os.path.join(out, f"checkpoint-{step}"),
          f"highest eval_loss (greater_is_better): step {step} recorded as the best ({state and state['best_model_checkpoint']})")
    check(state is not None and same(adapter(out), adapter(os.path.join(out, f"checkpoint-{step}")))
          and same(adapter(os.path.join(out, f"checkpoint-{STEPS}")), newest) and not same(adapter(out), newest),
          f"output_dir's adapter == checkpoint-{step}'s bit for bit, not the newest checkpoint's; log: "
          f"{[line for line in (proc.stdout + proc.stderr).splitlines() if 'best model' in line][:1]}")

    # Resumed from checkpoint-8, the run still knows step 4 was the best and loads it at the end.
    final = adapter(out) if state else None
    state, _ = train(model_dir, data_dir, out, [*highest, "--resume_from_checkpoint", os.path.join(out, "checkpoint-8")])
    check(state is not None and state["best_global_step"] == step and same(adapter(out), final),
          f"resumed from checkpoint-8: best_global_step {state and state['best_global_step']} kept, checkpoint-{step} loaded")

    out = os.path.join(work, "limit")
    state, _ = train(model_dir, data_dir, out, [*highest, "--save_total_limit", "1"])
    kept = sorted(d for d in os.listdir(out) if d.startswith("checkpoint-")) if state else []
    check(kept == [f"checkpoint-{step}"] and same(adapter(out), final),
          f"save_total_limit 1: only the best checkpoint stays at the end: {kept}")

    # --eval_on_start: an evaluation at step 0, the highest loss of all, yet not a best candidate.
    out = os.path.join(work, "on_start")
    state, _ = train(model_dir, data_dir, out, ["--greater_is_better", "True", "--metric_for_best_model", "loss",
                                                "--eval_on_start", "True"])
    evals = evaluations(state) if state else []
    check(len(evals) == 4 and evals[0][0] == 0 and evals[0][1] > max(v for _, v in evals[1:])
          and state["best_global_step"] == max(evals[1:], key=lambda e: e[1])[0],
          f"eval_on_start: step 0 evaluated first ({evals[:1]}), the best chosen among the others "
          f"(step {state and state['best_global_step']})")

    out = os.path.join(work, "best_only")
    state, _ = train(model_dir, data_dir, out, ["--save_strategy", "best", "--save_steps", "1"])
    expected, lowest = [], None
    for step, value in evaluations(state) if state else []:
        if lowest is None or value < lowest:
            lowest = value
            expected.append(f"checkpoint-{step}")
    saved = sorted(d for d in os.listdir(out) if d.startswith("checkpoint-")) if state else None
    check(saved == sorted(expected), f"save_strategy best: checkpoints {saved} == the new bests {expected}")

    errors = [
        (["--load_best_model_at_end", "True", "--save_steps", "6"], "not a round multiple of 4"),
        (["--load_best_model_at_end", "True", "--save_strategy", "epoch"], "requires the save and eval strategy to match"),
        (["--metric_for_best_model", "accuracy"], "--metric_for_best_model"),
    ]
    for i, (flags, needle) in enumerate(errors):
        cmd = command(model_dir, data_dir, os.path.join(work, f"e{i}"), [*EVERY, *flags])
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        check(proc.returncode == 2 and needle in proc.stdout + proc.stderr, f"error case {i}: exit {proc.returncode}, '{needle}'")
    finish("best model: chosen, kept and loaded as the Trainer does")


if __name__ == "__main__":
    main()
