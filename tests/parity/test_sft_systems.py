"""The SFT job's systems features on a tiny model, on CPU: evaluation, checkpoints, exact resume,
crash safety while saving, and bad input stopped before training.

  eval            --eval_strategy steps: eval_loss / eval_perplexity entries in log_history,
                  eval_loss equal to transformers' loss of the adapted model over the 6 rows (1e-5;
                  one evaluation batch, so the Trainer's per-batch mean is the token-weighted one);
                  `ftlaunch evaluate --adapter_path` prints the same loss as JSON
  progress        on a terminal (run under `script`) rank 0 redraws a progress bar in place;
                  through a pipe there is none, only log lines
  memory          the seed's CPU memory lines for train (per epoch) and eval
  checkpoints     --save_steps 4 --save_total_limit 2: the two newest checkpoint-<step> are kept
                  (8, and 12: the Trainer saves at the last step),
                  holding adapter_model.safetensors, adapter_config.json, optimizer.safetensors,
                  rng_state.safetensors and trainer_state.json, and (a LoRA run without
                  DeepSpeed) the Trainer's optimizer.pt and scheduler.pt
  resume          a run resumed from checkpoint-8 logs the same losses for steps 9..12 (1e-6)
  recompute       layers recomputed in backward (SFTConfig's default, LoRA dropout 0.1 replayed
                  from the same generator state) log the same losses and grad norms (1e-6) as
                  --gradient_checkpointing False, and as auto with room for every layer's
                  activations (none recomputed) or for none (all recomputed), as its log says
  sparse logging  --logging_steps 5: entries at 5 and 10 (none at 12, as the Trainer) hold the mean
                  of the per-step losses since the previous entry and the last step's grad norm;
                  the closing entry's train_loss is the mean of all 12 (1e-6)
  kill -9         a rank killed while writing checkpoint-8 leaves checkpoint-4 intact and no
                  checkpoint-8; --resume_from_checkpoint True resumes from 4 and matches (1e-6)
  pre-tokenized   an input_ids dataset gives the text dataset's curve exactly; assistant_masks and
                  labels mask alike; bad ids and labels refused (exit 2)
  tokenised cache the rows are stored under output_dir/tokenized/<split>-<key>.safetensors; a
                  second run in the same folder reuses them and computes the same losses
  preemption      SIGTERM to the launcher of a 2-rank run: a checkpoint, exit 75, end record
                  "preempted"; the same command (--resume_from_checkpoint auto) resumes and matches the
                  uninterrupted run (1e-6)
  bad input       missing split, missing text field, empty split, unknown target module,
                  lora_r 0, unwritable output_dir: exit 2 with a message naming the value, and no
                  training step runs; with 2 ranks, rank 0's error
                  reaches rank 1 through the store (both stop, exit 2)
"""
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, failures  # noqa: E402
import test_sft_parity as sft  # noqa: E402  (tiny model, tokenizer and dataset builders)

FTLAUNCH = os.environ["FTLAUNCH"]


def args_for(model_dir, data_dir, out, steps=12, extra=()):
    return [FTLAUNCH, "--cpu", "--num_processes", "1", "train", "--model_name_or_path", model_dir,
            "--dataset_name", data_dir, "--splits", "train,test", "--max_seq_len", "128", "--use_peft_lora", "True",
            "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0.1", "--lora_target_modules", "all-linear",
            "--learning_rate", "1e-2", "--lr_scheduler_type", "linear", "--warmup_steps", "2",
            "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2", "--max_steps", str(steps),
            "--logging_steps", "1", "--bf16", "False", "--seed", "3", "--output_dir", out, *extra]


def run(cmd, env=None):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


def losses(out):
    history = json.load(open(os.path.join(out, "trainer_state.json")))["log_history"]
    return {e["step"]: e["loss"] for e in history if "loss" in e}, [e for e in history if "eval_loss" in e]


def same_tail(a, b, steps, what):
    worst = max(abs(a[s] - b[s]) / abs(b[s]) for s in steps)
    check(worst <= 1e-6, f"{what}: steps {steps[0]}..{steps[-1]} worst rel diff {worst:.2e} <= 1e-6")


def make_inputs_with_eval(work):
    """The tiny model and dataset of test_sft_parity, plus a test split of 6 rows."""
    model_dir, data_dir, texts = sft.make_inputs(work)
    with open(os.path.join(data_dir, "test.jsonl"), "w") as f:
        for t in texts[:6]:
            f.write(json.dumps({"text": t}) + "\n")
    return model_dir, data_dir, texts


def check_preemption(work, model_dir, data_dir, two_ranks):
    """SIGTERM to the launcher of a 2-rank run (a scheduler's preemption notice): both ranks finish
    the step, a checkpoint appears, exit 75; the same command again (--resume_from_checkpoint auto)
    continues from it to the uninterrupted run's curve."""
    steps = 200

    def command(out):
        cmd = args_for(model_dir, data_dir, out, steps=steps, extra=("--save_strategy", "no", "--resume_from_checkpoint", "auto"))
        cmd[1:4] = ["--config_file", two_ranks]
        return cmd

    whole = os.path.join(work, "preempt_whole")
    proc = run(command(whole))
    check(proc.returncode == 0, f"preemption: uninterrupted run (auto, no checkpoint yet: starts afresh) exits 0 ({proc.returncode})")
    uninterrupted, _ = losses(whole)
    out = os.path.join(work, "preempted")
    launcher = subprocess.Popen(command(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(out, "metrics.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline:
        if os.path.exists(metrics) and open(metrics).read().count('"kind":"train"') >= 10:
            break
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)
    stdout, stderr = launcher.communicate(timeout=300)
    saved = sorted(int(d.split("-")[1]) for d in os.listdir(out) if d.startswith("checkpoint-"))
    end = [json.loads(line) for line in open(metrics)][-1]
    check(launcher.returncode == 75 and len(saved) == 1 and 10 <= saved[0] < steps and end.get("status") == "preempted",
          f"SIGTERM mid-run: exit {launcher.returncode} (75), checkpoint {saved}, end record {end.get('status')}")
    proc = run(command(out))
    resumed, _ = losses(out)
    worst = max(abs(resumed[k] - uninterrupted[k]) / abs(uninterrupted[k]) for k in uninterrupted) \
        if sorted(resumed) == sorted(uninterrupted) else float("inf")
    check(proc.returncode == 0 and f"resumed from {out}/checkpoint-{saved[0] if saved else 0}" in proc.stdout and worst <= 1e-6,
          f"the same command again resumes (auto) and matches the uninterrupted {steps} steps: worst rel diff {worst:.1e} <= 1e-6")


def write_jsonl(folder, name, records):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return folder


def check_pretokenized(work, model_dir, texts, full_losses):
    """A pre-tokenized dataset (an input_ids column, as TRL takes one) trains on exactly the rows
    the text dataset tokenizes to; `labels` (-100) and `assistant_masks` (0) mark the same tokens
    as non-targets; ids beyond the model's vocabulary and labels that are not the input ids are
    refused naming the record."""
    import transformers
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    plain = write_jsonl(os.path.join(work, "pretok"), "train.jsonl", [{"input_ids": i} for i in ids])
    write_jsonl(plain, "test.jsonl", [{"input_ids": i} for i in ids[:6]])
    out = os.path.join(work, "pretok_run")
    proc = run(args_for(model_dir, plain, out))
    check(proc.returncode == 0, "a pre-tokenized dataset trains")
    if proc.returncode == 0:
        same_tail(losses(out)[0], full_losses, list(range(1, 13)), "pre-tokenized rows vs the text they came from")

    halves = [[0] * (len(i) // 2) + [1] * (len(i) - len(i) // 2) for i in ids]
    masked = write_jsonl(os.path.join(work, "pretok_masks"), "train.jsonl",
                         [{"input_ids": i, "assistant_masks": m} for i, m in zip(ids, halves)])
    labelled = write_jsonl(os.path.join(work, "pretok_labels"), "train.jsonl",
                           [{"input_ids": i, "labels": [t if b else -100 for t, b in zip(i, m)]} for i, m in zip(ids, halves)])
    curves = []
    for folder in (masked, labelled):
        out = os.path.join(folder, "out")
        proc = run(args_for(model_dir, folder, out, steps=4, extra=("--splits", "train")))
        curves.append(losses(out)[0] if proc.returncode == 0 else {})
    check(curves[0] and curves[0] == curves[1] and curves[0][1] != full_losses[1],
          f"assistant_masks and labels mask the same tokens: {[round(curves[0].get(s, 0), 5) for s in (1, 4)]}")

    vocab = json.load(open(os.path.join(model_dir, "config.json")))["vocab_size"]
    bad = [("id beyond the vocabulary", [{"input_ids": ids[0][:5] + [vocab]}], f"token id {vocab} is beyond the model's vocabulary of {vocab}"),
           ("labels not the input ids", [{"input_ids": ids[0], "labels": [i + 1 for i in ids[0]]}], "a label is -100 or the input id"),
           ("record without input_ids", [{"input_ids": ids[0]}, {"text": texts[1]}], "record 1: the dataset is pre-tokenized")]
    for what, records, fragment in bad:
        folder = write_jsonl(os.path.join(work, "pretok_bad"), "train.jsonl", records)
        proc = run(args_for(model_dir, folder, os.path.join(folder, "out"), extra=("--splits", "train")))
        text = proc.stdout + proc.stderr
        check(proc.returncode == 2 and fragment in text and "step 1/" not in text,
              f"pre-tokenized, {what}: exit {proc.returncode}, message has {fragment!r}")


def main():
    with tempfile.TemporaryDirectory() as work:
        model_dir, data_dir, texts = make_inputs_with_eval(work)

        full = os.path.join(work, "full")
        proc = run(args_for(model_dir, data_dir, full, extra=("--eval_strategy", "steps", "--eval_steps", "6",
                                                             "--save_steps", "4", "--save_total_limit", "2")))
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
            sys.exit(1)
        full_losses, evals = losses(full)
        check("%|" not in proc.stdout and "step 12/12" in proc.stdout, "through a pipe: log lines, no progress bar")
        memory_lines = [l for l in proc.stdout.splitlines() if "Memory" in l]
        check(any("CPU Memory before entering the train : " in l for l in memory_lines)
              and any("CPU Total Peak Memory consumed during the eval (max): " in l for l in memory_lines),
              f"the seed's memory report for train and eval ({len(memory_lines)} lines)")
        check([e["step"] for e in evals] == [6, 12] and all(abs(e["eval_perplexity"] - 2.718281828 ** e["eval_loss"]) < 1e-6 * e["eval_perplexity"] for e in evals),
              f"eval entries at steps 6 and 12 with perplexity = exp(loss): {[round(e['eval_loss'], 4) for e in evals]}")
        kept = sorted(d for d in os.listdir(full) if d.startswith("checkpoint-"))
        check(kept == ["checkpoint-12", "checkpoint-8"], f"save_total_limit 2 keeps the two newest checkpoints (the last step's "
                                                         f"too, as the Trainer saves it): {kept}")
        files = sorted(os.listdir(os.path.join(full, "checkpoint-8")))
        check(files == ["adapter_config.json", "adapter_model.safetensors", "manifest.json", "optimizer.pt",
                        "optimizer.safetensors", "rng_state.safetensors", "scheduler.pt", "tokenizer.json",
                        "tokenizer_config.json", "trainer_state.json"],
              f"checkpoint-8 holds {files}")

        # The final eval loss equals transformers + peft on the trained adapter (one batch of 6 rows).
        import peft
        import torch
        import transformers
        tok = transformers.AutoTokenizer.from_pretrained(model_dir)
        base = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        model = peft.PeftModel.from_pretrained(base, full).eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for t in texts[:6]:
                ids = torch.tensor([tok(t, add_special_tokens=False)["input_ids"]])
                total += model(input_ids=ids, labels=ids).loss.item() * (ids.shape[1] - 1)
                count += ids.shape[1] - 1
        diff = abs(evals[-1]["eval_loss"] - total / count)
        check(diff <= 1e-5, f"final eval_loss {evals[-1]['eval_loss']:.6f} vs transformers+peft {total / count:.6f}")

        # `ftlaunch evaluate` with the written adapter reports the trainer's final eval loss.
        proc = run([FTLAUNCH, "--cpu", "--num_processes", "1", "evaluate", "--model_name_or_path", model_dir,
                    "--adapter_path", full, "--dataset_name", data_dir, "--splits", "train,test", "--max_seq_len", "128",
                    "--bf16", "False"])
        result = json.loads([l for l in proc.stdout.splitlines() if l.startswith("{")][-1]) if proc.returncode == 0 else {}
        check(result.get("split") == "test" and abs(result.get("eval_loss", 0) - evals[-1]["eval_loss"]) <= 1e-9,
              f"ftlaunch evaluate --adapter_path: {result}")

        # Resume from checkpoint-8 in a fresh folder: the same steps 9..12.
        resumed = os.path.join(work, "resumed")
        os.makedirs(resumed)
        shutil.copytree(os.path.join(full, "checkpoint-8"), os.path.join(resumed, "checkpoint-8"))
        proc = run(args_for(model_dir, data_dir, resumed, extra=("--resume_from_checkpoint", "True")))
        check(proc.returncode == 0 and "resumed from" in proc.stdout, "resume from checkpoint-8 runs")
        if proc.returncode == 0:
            same_tail(losses(resumed)[0], full_losses, list(range(9, 13)), "resumed run vs uninterrupted run")

        check_pretokenized(work, model_dir, texts, full_losses)

        # On a terminal: the bar, redrawn in place (\r ... ESC[K; text mode reads \r as a newline).
        tty = run(["script", "-qec", shlex.join(args_for(model_dir, data_dir, os.path.join(work, "tty"), steps=4)), "/dev/null"])
        check(tty.returncode == 0 and "4/4 100%|####################|" in tty.stdout and "\x1b[K" in tty.stdout,
              "on a terminal: rank 0's progress bar redrawn in place up to 4/4")

        # The runs above recompute every layer (SFTConfig's default, gradient checkpointing on) with
        # the same dropout masks as a run that keeps every activation: the same curve. With
        # --gradient_checkpointing auto the layers whose activations fit keep them: all of them with
        # ample memory, none with exactly the estimate of recomputing all (the 10% margin leaves no
        # room); the curve is the same either way.
        def grad_norms(out):
            history = json.load(open(os.path.join(out, "trainer_state.json")))["log_history"]
            return [e["grad_norm"] for e in history if "grad_norm" in e]
        auto = ("--gradient_checkpointing", "auto")
        estimate = run([FTLAUNCH, "--cpu", "--num_processes", "1", "estimate-memory", *args_for(model_dir, data_dir, full, extra=auto)[5:],
                        "--json"])
        exact_fit = next(r["device_total"] for r in json.loads(estimate.stdout)["rows"] if r["zero_stage"] == 0)
        for name, extra, memory, expected in (("kept", ("--gradient_checkpointing", "False"), None, None),
                                              ("auto_all", auto, 10**12, "the last 2 of 2 decoder layers keep"),
                                              ("auto_none", auto, exact_fit, "the last 0 of 2 decoder layers keep")):
            out = os.path.join(work, name)
            proc = run(args_for(model_dir, data_dir, out, extra=extra),
                       env={"FTLAUNCH_MEMORY_PER_RANK": str(memory)} if memory else None)
            check(proc.returncode == 0 and (expected is None or expected in proc.stdout),
                  f"--gradient_checkpointing {extra[1]}{f' with {memory} bytes per rank' if memory else ''} runs"
                  + (f" and logs '{expected}'" if expected else ""))
            if proc.returncode == 0:
                same_tail(losses(out)[0], full_losses, list(range(1, 13)), f"{name} vs every layer recomputed")
                worst = max(abs(a - b) / b for a, b in zip(grad_norms(out), grad_norms(full)))
                check(len(grad_norms(out)) == 12 and worst <= 1e-6, f"{name}: grad norms worst rel diff {worst:.2e} <= 1e-6")

        # --logging_steps 5 (the loss and grad norm stay on the device between logging steps): the
        # entries at steps 5 and 10 hold the mean of the per-step losses since the last entry (HF's
        # tr_loss / steps since the last log) and the last step's grad norm; steps 11 and 12 are
        # logged by no entry (the Trainer logs only every logging_steps) but counted in the closing
        # entry's train_loss, the mean of all 12.
        sparse = os.path.join(work, "sparse_logging")
        command = args_for(model_dir, data_dir, sparse)
        command[command.index("--logging_steps") + 1] = "5"
        proc = run(command)
        history = json.load(open(os.path.join(sparse, "trainer_state.json")))["log_history"] if proc.returncode == 0 else []
        entries = {e["step"]: e for e in history if "loss" in e}
        full_norms = dict(zip(range(1, 13), grad_norms(full)))
        expected = {5: range(1, 6), 10: range(6, 11)}
        mean_loss = sum(full_losses[s] for s in range(1, 13)) / 12
        summary = history[-1] if history and "train_loss" in history[-1] else {"train_loss": float("inf")}
        worst = max((max(abs(entries[k]["loss"] - sum(full_losses[s] for s in r) / len(r)) / abs(full_losses[k]),
                         abs(entries[k]["grad_norm"] - full_norms[k]) / full_norms[k]) for k, r in expected.items()),
                    default=float("inf")) if sorted(entries) == [5, 10] else float("inf")
        worst = max(worst, abs(summary["train_loss"] - mean_loss) / mean_loss)
        check(worst <= 1e-6, f"--logging_steps 5: entries {sorted(entries)} hold the mean loss since the last entry and the "
                             f"last step's grad norm, train_loss the mean of all 12 (worst rel diff {worst:.1e} <= 1e-6)")

        # kill -9 while checkpoint-8 is being written, then resume from what is on disk.
        crashed = os.path.join(work, "crashed")
        proc = run(args_for(model_dir, data_dir, crashed, extra=("--save_steps", "4")), env={"FTLAUNCH_TEST_CRASH_IN_SAVE": "8"})
        names = sorted(os.listdir(crashed))
        check(proc.returncode != 0 and "checkpoint-4" in names and "checkpoint-8" not in names,
              f"killed while saving checkpoint-8 (exit {proc.returncode}): folder holds {names}")
        proc = run(args_for(model_dir, data_dir, crashed, extra=("--save_steps", "4", "--resume_from_checkpoint", "True")))
        check(proc.returncode == 0 and "resumed from" in proc.stdout and "at step 4" in proc.stdout,
              "resume after the crash starts from checkpoint-4")
        cached = sorted(os.listdir(os.path.join(crashed, "tokenized")))
        check(len(cached) == 1 and cached[0].startswith("train-") and "reusing the tokenised rows of split 'train'" in proc.stdout,
              f"the second run in the same output_dir reuses the tokenised rows: {cached}")
        if proc.returncode == 0:
            same_tail(losses(crashed)[0], full_losses, list(range(5, 13)), "run resumed after kill -9 vs uninterrupted")
            check(not any(n.startswith(".checkpoint-") for n in os.listdir(crashed)), "the half-written checkpoint was removed")

        # Bad input: clear errors, exit 2, before any step.
        empty = os.path.join(work, "empty")
        os.makedirs(empty)
        open(os.path.join(empty, "train.jsonl"), "w").close()
        train_only = os.path.join(work, "train_only")
        os.makedirs(train_only)
        shutil.copy(os.path.join(data_dir, "train.jsonl"), train_only)
        not_a_folder = os.path.join(work, "a_file")  # tests run as root: a file in the path blocks writing
        open(not_a_folder, "w").close()
        cases = [
            ("missing split", ["--dataset_name", train_only, "--eval_strategy", "steps"], "has no split 'test'"),
            ("missing text field", ["--dataset_text_field", "content"], "--dataset_text_field 'content'"),
            ("empty split", ["--dataset_name", empty], "is empty"),
            ("unknown target module", ["--lora_target_modules", "q_proj,qkv_proj"], "'qkv_proj' matches no linear"),
            ("lora_r 0", ["--lora_r", "0"], "--lora_r"),
            ("unwritable output_dir", ["--output_dir", os.path.join(not_a_folder, "sub")], "--output_dir"),
        ]
        for what, extra, fragment in cases:
            out = os.path.join(work, "bad")
            proc = run(args_for(model_dir, data_dir, out, extra=extra))
            text = proc.stdout + proc.stderr
            ran = "step 1/" in text
            check(proc.returncode == 2 and fragment in text and not ran,
                  f"{what}: exit {proc.returncode}, message has {fragment!r}, no step ran")
            if fragment not in text:
                print("     " + text.strip().splitlines()[-1][:300] if text.strip() else "     (no output)")
        # Two ranks: rank 0 fails while tokenising; rank 1, waiting on the store, stops with its error.
        two_ranks = os.path.join(os.environ["FTL_SOURCE_DIR"], "configs", "multi_cpu_2.yaml")
        cmd = args_for(model_dir, data_dir, os.path.join(work, "bad2"), extra=("--dataset_text_field", "content"))
        cmd[1:4] = ["--config_file", two_ranks]
        proc = run(cmd)
        text = proc.stdout + proc.stderr
        check(proc.returncode == 2 and "rank 0 could not prepare split 'train'" in text and "step 1/" not in text,
              f"2 ranks, missing text field: exit {proc.returncode}, rank 1 reports rank 0's error")
        check_preemption(work, model_dir, data_dir, two_ranks)
    if failures:
        sys.exit(1)
    print("all SFT systems checks passed")


if __name__ == "__main__":
    main()
