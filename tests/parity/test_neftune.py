"""NEFTune (--neftune_noise_alpha, TrainingArguments / SFTConfig) on the tiny LoRA run of test_sft_parity.

transformers adds uniform noise in [-alpha / sqrt(T * H), +alpha / sqrt(T * H)] to the input
embeddings' output in training only (integrations/neftune.py). Its draws come from torch's global
generator, which no other program can replay, so the checks are what the rule implies (the bound
itself, rounded as torch rounds it, is checked in ftl_torch_tests):
  training only  with --learning_rate 0 the weights never move: the evaluation losses with NEFTune
                 equal those without bit for bit (evaluation adds no noise), while every training
                 loss differs (each forward got noise)
  seeded         two runs with the same --seed give the same curve bit for bit (the noise comes from
                 the seeded dropout generator)
  magnitude      alpha 1e-6 changes the training losses by less than 1e-5 relative, alpha 50 by more
  errors         a negative alpha: exit 2 naming the flag
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
import test_sft_parity as sft  # noqa: E402
from test_schedules import command  # noqa: E402


def run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:])
        return None, None
    history = json.load(open(os.path.join(cmd[cmd.index("--output_dir") + 1], "trainer_state.json")))["log_history"]
    return [e["loss"] for e in history if "loss" in e], [e["eval_loss"] for e in history if "eval_loss" in e]


def rel(a, b):
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


def main():
    work = tempfile.mkdtemp(prefix="ftl_neftune_")
    model_dir, data_dir, _ = sft.make_inputs(work)
    shutil.copy(os.path.join(data_dir, "train.jsonl"), os.path.join(data_dir, "test.jsonl"))
    evaluated = ["--splits", "train,test", "--eval_strategy", "steps", "--eval_steps", "4"]

    def go(name, *flags):
        return run(command(model_dir, data_dir, os.path.join(work, name), [*evaluated, *flags]))

    frozen_plain = go("frozen_plain", "--learning_rate", "0")
    frozen_noisy = go("frozen_noisy", "--learning_rate", "0", "--neftune_noise_alpha", "5")
    ok = None not in frozen_plain and None not in frozen_noisy
    check(ok and frozen_noisy[1] == frozen_plain[1] and len(frozen_plain[1]) >= 2,
          f"lr 0: evaluation losses with NEFTune == without, bit for bit ({ok and frozen_noisy[1]})")
    check(ok and all(a != b for a, b in zip(frozen_noisy[0], frozen_plain[0])),
          "lr 0: every training loss differs with NEFTune (the noise is in training's forward)")

    plain, _ = go("plain")
    noisy, _ = go("noisy", "--neftune_noise_alpha", "5")
    again, _ = go("again", "--neftune_noise_alpha", "5")
    check(noisy is not None and noisy == again, "NEFTune with the same seed: the same curve bit for bit")
    faint, _ = go("faint", "--neftune_noise_alpha", "1e-6")
    loud, _ = go("loud", "--neftune_noise_alpha", "50")
    check(None not in (plain, faint, loud) and rel(faint, plain) < 1e-5 < rel(loud, plain),
          f"alpha 1e-6 moves the curve by {rel(faint, plain):.1e} < 1e-5, alpha 50 by {rel(loud, plain):.1e}")

    proc = subprocess.run(command(model_dir, data_dir, os.path.join(work, "bad"), ["--neftune_noise_alpha", "-1"]),
                          capture_output=True, text=True, timeout=600)
    check(proc.returncode == 2 and "--neftune_noise_alpha" in proc.stdout + proc.stderr,
          f"a negative alpha: exit {proc.returncode} naming the flag")
    finish("NEFTune: noise in training only, seeded, of the stated size")


if __name__ == "__main__":
    main()
