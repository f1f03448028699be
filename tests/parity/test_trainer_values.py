"""The numbers ftlaunch logs, against transformers.Trainer itself.

The tiny LoRA model and 24-row dataset of test_sft_parity (its rows as the evaluation split too),
run by ftlaunch and by an unmodified transformers.Trainer: its sampler (accelerate's
SeedableRandomSampler: torch.randperm seeded seed + epoch) deals the rows in ftlaunch's order
(train/batches.h), so the two runs see the same batches and everything else is the Trainer's own:
the loss scaled by the batch's target count, accumulation, clipping, logging, evaluation_loop.
  values      12 steps (batch 2, accumulation 2, two epochs), a log every step and an evaluation
              every 4 with per_device_eval_batch_size 5 (24 rows: batches of 5 and a last of 4,
              rows of different lengths): every loss and eval_loss equal to the Trainer's (rel 1e-5),
              every grad_norm (rel 1e-4); eval_loss is the Trainer's mean of per-batch losses, not
              the token-weighted loss (which the check shows differs by more than the bound)
  sequential  --train_sampling_strategy sequential (rows in dataset order, 6 steps of 4): every loss
              equal to the Trainer's (rel 1e-5)
  grouped     --train_sampling_strategy group_by_length (one epoch of 6 steps of 2 x 2, evaluations
              before training and every 3 steps, eval batch 5): every loss and eval_loss equal to the
              Trainer's (rel 1e-5). The Trainer's evaluation LengthGroupedSampler is its own (seeded
              with --seed); its training one is handed ftlaunch's generator (seeded seed + epoch):
              unmodified, it draws from torch's global generator, whose state at that point depends
              on everything the Python process drew before, which no other program reproduces
  nan filter  one token's embedding row made infinite, so rows holding it give a NaN loss and,
              once trained on, NaN weights: with --logging_nan_inf_filter (the default) the logged
              losses equal the Trainer's substitutes (the interval's mean so far), the evaluation
              before training (--eval_on_start) leaves the NaN batches out as the Trainer does
              and the last one is NaN in both; with --logging_nan_inf_filter False the losses are
              NaN where the Trainer's are (JSON null in ftlaunch's trainer_state.json)
  ranks train two epochs on 2 CPU ranks (batch 5 a rank: 24 rows make 5 batches an epoch, dealt
              batch g to rank g % 2, the short fifth topped up from the epoch's start and a sixth made
              from it) against TRL's SFTTrainer.train() (transformers' loop, TRL's evaluation
              losses: each rank's batch mean) under torchrun with 2 processes (gloo), a log every
              step and evaluations (batch 5, 3 steps apart): every loss and eval_loss equal (rel
              1e-5), grad_norm (rel 1e-4); again with --dataloader_drop_last (2 steps an epoch, and
              evaluation drops the incomplete round too); TRL's entropy, mean_token_accuracy and
              num_tokens (and their eval_ forms) equal SFTTrainer's (rel 1e-5). Dealing rows round-robin instead (as
              ftlaunch did) fails it (loss 8.3e-3, grad_norm 0.29 at the epochs' last steps); so
              does evaluating the incomplete round under drop_last (eval_loss 0.11)
  hf resume   the unmodified Trainer resumes ftlaunch's checkpoint-5 of a 10-step run
              (Trainer.train(resume_from_checkpoint=...): the adapter, trainer_state.json and the
              optimizer.pt / scheduler.pt ftlaunch writes for it): its steps 6..10 log ftlaunch's
              uninterrupted losses (rel 1e-5) and grad norms (1e-4), with torch.load(weights_only=True)
              reading both files; without those two files the Trainer starts a fresh optimizer and
              its losses differ (control)
  ranks       `ftlaunch evaluate` of the values run's adapter on 2 CPU ranks (eval batch 5) and 3
              (batch 3) against TRL's SFTTrainer.evaluate() under torchrun with as many processes
              (gloo): eval_loss equal (rel 1e-5); each rank's batch loss is its own mean (TRL's
              prediction_step; transformers.Trainer's would give 5.70 where TRL gives 6.37 on 2
              ranks), the rows accelerate wraps around to even the ranks' batches cut as it cuts them
"""
import json
import math
import os
import shutil
import subprocess
import sys

import peft
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers.trainer_pt_utils import LengthGroupedSampler

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
import test_sft_parity as sft  # noqa: E402
import test_trainer_flow as flow  # noqa: E402


def hf_history(model_dir, rows, out, flags):
    """The unmodified Trainer's log_history for the LoRA run of test_trainer_flow (no checkpoints)."""
    trainer = flow.hf_trainer(model_dir, rows, out, {"save_strategy": "no", **flags})
    trainer.train()
    return trainer.state.log_history


def entries(history, key):
    return {e["step"]: e[key] for e in history or [] if key in e}


def close(a, b, rel):
    if a is None or b is None or not math.isfinite(b):
        return (a is None or (isinstance(a, float) and not math.isfinite(a))) and (b is None or not math.isfinite(b))
    return abs(a - b) <= rel * max(abs(b), 1e-30)


def compare(name, ours, ref, key, rel):
    a, b = entries(ours, key), entries(ref, key)
    worst = max((abs(a[s] - b[s]) / max(abs(b[s]), 1e-30) for s in b
                 if s in a and a[s] is not None and math.isfinite(b[s])), default=0.0)
    check(sorted(a) == sorted(b) and all(close(a[s], b[s], rel) for s in b),
          f"{name}: {key} at steps {sorted(b)} equal to the Trainer's (worst rel {worst:.1e} <= {rel})")


def token_weighted_eval(model_dir, out, rows):
    """The token-weighted loss over all rows of the adapter ftlaunch wrote (what ftlaunch reported before)."""
    base = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    model = peft.PeftModel.from_pretrained(base, out).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r])
            n = len(r) - 1
            total += model(input_ids=ids, labels=ids).loss.item() * n
            count += n
    return total / count


def with_infinite_embedding(model_dir, rows, folder):
    """A copy of the model whose embedding row of a token in few rows is infinite; that token."""
    shutil.copytree(model_dir, folder)
    counts = {}
    for r in rows:
        for t in set(r):
            counts[t] = counts.get(t, 0) + 1
    token = min((c, t) for t, c in counts.items())[1]
    weights = load_file(os.path.join(folder, "model.safetensors"))
    weights["model.embed_tokens.weight"][token] = float("inf")
    save_file(weights, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    return token, counts[token]


def eval_worker(model_dir, adapter, rows_file, batch, out):
    """One torchrun process: TRL's SFTTrainer.evaluate() of the adapter (train.py's trainer; its
    prediction_step takes each rank's own batch mean, where transformers.Trainer's divides by all
    ranks' targets); rank 0 prints the metrics."""
    import datasets
    from trl import SFTConfig, SFTTrainer
    rows = datasets.Dataset.from_dict({"input_ids": json.load(open(rows_file))})  # tokenized: TRL keeps them as they are
    base = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    model = peft.PeftModel.from_pretrained(base, adapter)
    args = SFTConfig(output_dir=out, per_device_eval_batch_size=int(batch), use_cpu=True, report_to="none",
                     disable_tqdm=True, max_length=None, bf16=False)
    metrics = SFTTrainer(model=model, args=args, train_dataset=rows, eval_dataset=rows,
                         data_collator=flow.collate).evaluate()
    if int(os.environ.get("RANK", "0")) == 0:
        print("METRICS " + json.dumps(metrics))


def train_worker(model_dir, rows_file, flags_file, out):
    """One torchrun process: TRL's SFTTrainer.train() (train.py's trainer: transformers' training
    loop, TRL's evaluation losses) of test_trainer_flow's LoRA; rank 0 prints the log history."""
    trainer = flow.hf_trainer(model_dir, json.load(open(rows_file)), out, json.load(open(flags_file)), trl_sft=True)
    trainer.train()
    if int(os.environ.get("RANK", "0")) == 0:
        print("HISTORY " + json.dumps(trainer.state.log_history))


def torchrun_history(work, model_dir, rows, flags, ranks, name):
    """The Trainer's log history when `ranks` processes train on `rows` with `flags`."""
    rows_file, flags_file = os.path.join(work, f"{name}_rows.json"), os.path.join(work, f"{name}_flags.json")
    json.dump(rows, open(rows_file, "w"))
    json.dump(flags, open(flags_file, "w"))
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    try:
        ref = subprocess.run([torchrun, "--standalone", "--nproc_per_node", str(ranks), __file__, "--train-worker",
                              model_dir, rows_file, flags_file, os.path.join(work, f"hf_{name}")],
                             capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        print("     torchrun did not finish in 300 s")
        return None
    lines = [l for l in ref.stdout.splitlines() if l.startswith("HISTORY ")]
    if not lines:
        print(ref.stdout[-2000:], ref.stderr[-2000:])
        return None
    return json.loads(lines[-1][len("HISTORY "):])


def compare_ranks_training(work, model_dir, data_dir, rows):
    two_ranks = ("--cpu", "--num_processes", "2", "--main_process_port", "0")
    epochs = {"num_train_epochs": 2, "per_device_train_batch_size": 5, "logging_steps": 1, "eval_strategy": "steps",
              "eval_steps": 3, "per_device_eval_batch_size": 5, "save_strategy": "no"}
    for name, flags in (("ranks train", epochs), ("ranks train drop_last", {**epochs, "dataloader_drop_last": True})):
        tag = name.replace(" ", "_")
        ref = torchrun_history(work, model_dir, rows, flags, 2, tag)
        ours = flow.ftlaunch_run(model_dir, data_dir, os.path.join(work, tag), flags, launcher=two_ranks)
        check(bool(entries(ref, "loss")), f"{name}: the Trainer under torchrun logged {len(entries(ref, 'loss'))} steps")
        compare(name, ours, ref, "loss", 1e-5)
        compare(name, ours, ref, "grad_norm", 1e-4)
        compare(name, ours, ref, "eval_loss", 1e-5)
        for key in ("entropy", "mean_token_accuracy", "num_tokens", "eval_entropy", "eval_mean_token_accuracy",
                    "eval_num_tokens"):  # TRL's token metrics
            compare(name, ours, ref, key, 1e-5)


def compare_hf_resume(work, model_dir, data_dir, rows):
    flags = {"max_steps": 10, "per_device_train_batch_size": 2, "logging_steps": 1, "save_strategy": "steps",
             "save_steps": 5}
    out = os.path.join(work, "resumable")
    ours = flow.ftlaunch_run(model_dir, data_dir, out, flags)
    checkpoint = os.path.join(out, "checkpoint-5")
    if not check(ours is not None and all(os.path.isfile(os.path.join(checkpoint, f)) for f in ("optimizer.pt", "scheduler.pt")),
                 "ftlaunch's checkpoint-5 holds optimizer.pt and scheduler.pt"):
        return
    optimizer_state = torch.load(os.path.join(checkpoint, "optimizer.pt"), weights_only=True)
    check(len(optimizer_state["state"]) == 28 and [len(g["params"]) for g in optimizer_state["param_groups"]] == [28, 0],
          f"optimizer.pt: 28 adapter tensors' state in the Trainer's two groups "
          f"{[len(g['params']) for g in optimizer_state['param_groups']]}")
    later = {s: e for s, e in entries(ours, "loss").items() if s > 5}

    def resumed(folder, name):
        trainer = flow.hf_trainer(model_dir, rows, os.path.join(work, name), {**flags, "save_strategy": "no"})
        trainer.train(resume_from_checkpoint=folder)
        return {s: e for s, e in entries(trainer.state.log_history, "loss").items() if s > 5}, trainer.state.log_history

    hf_later, hf_history = resumed(checkpoint, "hf_resumed")
    worst = max((abs(later[s] - hf_later[s]) / abs(hf_later[s]) for s in hf_later if s in later), default=float("inf"))
    check(sorted(hf_later) == sorted(later) == list(range(6, 11)) and worst <= 1e-5,
          f"hf resume: the Trainer resumed from ftlaunch's checkpoint-5 logs steps {sorted(hf_later)} with ftlaunch's "
          f"losses (worst rel {worst:.1e} <= 1e-5)")
    compare("hf resume", [e for e in ours if e.get("step", 0) > 5],
            [e for e in hf_history if e.get("step", 0) > 5], "grad_norm", 1e-4)
    bare = os.path.join(work, "checkpoint_without_pt")
    shutil.copytree(checkpoint, bare)
    for name in ("optimizer.pt", "scheduler.pt"):
        os.remove(os.path.join(bare, name))
    fresh, _ = resumed(bare, "hf_fresh")
    gap = max((abs(later[s] - fresh[s]) / abs(fresh[s]) for s in fresh if s in later), default=0.0)
    check(gap > 1e-3, f"hf resume control: without optimizer.pt and scheduler.pt the Trainer's losses differ by {gap:.1e}")


def compare_ranks(work, model_dir, data_dir, adapter, rows, ranks, batch):
    rows_file = os.path.join(work, "eval_rows.json")
    json.dump(rows, open(rows_file, "w"))
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    try:  # --standalone: a rendezvous on a free port
        ref = subprocess.run([torchrun, "--standalone", "--nproc_per_node", str(ranks), __file__, "--eval-worker",
                              model_dir, adapter, rows_file, str(batch), os.path.join(work, f"hf_eval_{ranks}")],
                             capture_output=True, text=True, timeout=180)
        lines = [l for l in ref.stdout.splitlines() if l.startswith("METRICS ")]
        expected = json.loads(lines[-1][len("METRICS "):])["eval_loss"] if lines else None
        if expected is None:
            print(ref.stdout[-2000:], ref.stderr[-2000:])
    except subprocess.TimeoutExpired:
        expected = None
        print("     torchrun did not finish in 180 s")
    ours = subprocess.run([sft.FTLAUNCH, "--cpu", "--num_processes", str(ranks), "--main_process_port", "0", "evaluate",
                           "--model_name_or_path", model_dir, "--adapter_path", adapter, "--dataset_name", data_dir,
                           "--splits", "train,test", "--max_seq_len", "128", "--bf16", "False",
                           "--per_device_eval_batch_size", str(batch)], capture_output=True, text=True, timeout=600)
    lines = [l for l in ours.stdout.splitlines() if l.startswith("{")]
    got = json.loads(lines[-1])["eval_loss"] if ours.returncode == 0 and lines else None
    check(got is not None and expected is not None and abs(got - expected) <= 1e-5 * expected,
          f"{ranks} ranks, eval batch {batch}: eval_loss {got} == SFTTrainer.evaluate() under torchrun {expected}")


def main():
    work, model_dir, data_dir, rows = flow.make_inputs("ftl_values_")

    values = {"max_steps": 12, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "logging_steps": 1,
              "eval_strategy": "steps", "eval_steps": 4, "per_device_eval_batch_size": 5, "save_strategy": "no"}
    ours_out = os.path.join(work, "values")
    ours = flow.ftlaunch_run(model_dir, data_dir, ours_out, values)
    ref = hf_history(model_dir, rows, os.path.join(work, "hf_values"), values)
    compare("values", ours, ref, "loss", 1e-5)
    compare("values", ours, ref, "grad_norm", 1e-4)
    compare("values", ours, ref, "eval_loss", 1e-5)
    sequential = {"max_steps": 6, "per_device_train_batch_size": 4, "logging_steps": 1, "save_strategy": "no",
                  "train_sampling_strategy": "sequential"}
    compare("sequential", flow.ftlaunch_run(model_dir, data_dir, os.path.join(work, "sequential"), sequential),
            hf_history(model_dir, rows, os.path.join(work, "hf_sequential"), sequential), "loss", 1e-5)
    grouped = {"max_steps": 6, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "logging_steps": 1,
               "eval_on_start": True, "eval_strategy": "steps", "eval_steps": 3, "per_device_eval_batch_size": 5,
               "save_strategy": "no", "train_sampling_strategy": "group_by_length"}
    trainer = flow.hf_trainer(model_dir, rows, os.path.join(work, "hf_grouped"), grouped)
    trainer._get_train_sampler = lambda *_: LengthGroupedSampler(
        4, lengths=[len(r) for r in rows], generator=torch.Generator().manual_seed(sft.SEED))
    trainer.train()
    ours_grouped = flow.ftlaunch_run(model_dir, data_dir, os.path.join(work, "grouped"), grouped)
    compare("grouped", ours_grouped, trainer.state.log_history, "loss", 1e-5)
    compare("grouped", ours_grouped, trainer.state.log_history, "eval_loss", 1e-5)
    final = entries(ref, "eval_loss").get(12)
    if ours and final is not None:
        weighted = token_weighted_eval(model_dir, ours_out, rows)
        check(abs(weighted - final) > 1e-5 * final,
              f"values: the token-weighted loss {weighted:.6f} is not the Trainer's eval_loss {final:.6f}: "
              "the per-batch mean matters")

    compare_ranks_training(work, model_dir, data_dir, rows)
    compare_hf_resume(work, model_dir, data_dir, rows)
    if ours:
        compare_ranks(work, model_dir, data_dir, ours_out, rows, 2, 5)
        compare_ranks(work, model_dir, data_dir, ours_out, rows, 3, 3)

    token, holders = with_infinite_embedding(model_dir, rows, os.path.join(work, "inf_model"))
    print(f"     token {token} (in {holders} rows) embedded as inf")
    nan_flags = {"max_steps": 6, "per_device_train_batch_size": 2, "logging_steps": 2, "eval_on_start": True,
                 "eval_strategy": "steps", "eval_steps": 6, "per_device_eval_batch_size": 4, "save_strategy": "no"}
    for filtered in (True, False):
        flags = {**nan_flags, "logging_nan_inf_filter": filtered}
        name = f"nan filter {filtered}"
        ours = flow.ftlaunch_run(os.path.join(work, "inf_model"), data_dir, os.path.join(work, f"nan_{filtered}"), flags)
        ref = hf_history(os.path.join(work, "inf_model"), rows, os.path.join(work, f"hf_nan_{filtered}"), flags)
        losses = entries(ref, "loss")
        check(any(not math.isfinite(v) for v in entries(ref, "grad_norm").values()),
              f"{name}: the Trainer's run meets NaN (grad norms {list(entries(ref, 'grad_norm').values())})")
        compare(name, ours, ref, "loss", 1e-6)
        compare(name, ours, ref, "eval_loss", 1e-6)
        if filtered:
            evals = entries(ref, "eval_loss")
            check(math.isfinite(evals.get(0, math.nan)) and all(math.isfinite(v) for v in losses.values()),
                  f"{name}: the Trainer's logged losses {list(losses.values())} and first eval_loss are finite")
    finish("trainer values: losses, grad norms and eval losses as the Trainer computes them")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--eval-worker"]:
        eval_worker(*sys.argv[2:])
    elif sys.argv[1:2] == ["--train-worker"]:
        train_worker(*sys.argv[2:])
    else:
        main()
