"""When ftlaunch logs, evaluates and saves, against the HF trainer itself: TRL's SFTTrainer (train.py's;
transformers.Trainer's loop with TRL's losses and its token metrics in every log).

The tiny LoRA model and 24-row dataset of test_sft_parity (its rows as the evaluation split too),
batch 1, a linear schedule with 3 warmup steps. Each case runs ftlaunch and the SFTTrainer
(on the same rows, tokenised as test_sft_parity's reference does) with the same strategy flags and
compares what each writes:
  entries     log_history as (kind, step) in order — kind: a training log (loss), an evaluation
              (eval_loss) or the closing summary (train_runtime) — equal to the Trainer's, and each
              entry's keys equal to the Trainer's entry's (ftlaunch adds eval_perplexity, no more):
              TRL's entropy, mean_token_accuracy, num_tokens in training logs, their eval_ forms in
              evaluations, and in the closing entry when no evaluation followed the last step
  epoch       every entry's epoch equal to the Trainer's (|diff| <= 1e-12)
  rates       every training log's learning_rate equal to the Trainer's (rel 1e-12; the same
              double formula)
  checkpoints the checkpoint-<N> folders equal to the Trainer's
  total_flos  in the closing entry, over whole epochs (then it does not depend on the row order):
              equal to the Trainer's (6 x input tokens x non-embedding parameters, LoRA's included)
  tokens      --include_num_input_tokens_seen True (all input_ids elements, batch 1) and
              non_padding (batch 2, padded rows): every entry's num_input_tokens_seen equal to the
              Trainer's, at epoch ends (whole epochs: order-independent), and its train logs carry
              train_runtime and train_tokens_per_second as the Trainer's do
Cases: steps (12 steps; logging, eval and save every 5: the last step evaluates and saves, no
training log at 12); epochs (2 epochs with accumulation 2; epoch strategies and
--logging_first_step); cut-short epoch (max_steps 30 with epoch strategies: the last step ends an
epoch); none (every strategy no: only the closing entry, no checkpoint); ratios (--logging_steps
0.25, --save_steps 0.5 of 12 steps); drop_last (--dataloader_drop_last, batch 5 of 24 rows: 4 steps
an epoch, not 5); eval_delay (7 steps with evaluation every 3: at 9 and 12; 1.5 epochs with
epoch evaluation: only the second).
ftlaunch alone: train_loss is the mean loss of the run's steps (the logging-every-step run's losses,
rel 1e-12; the same in the steps case, where the last two steps are never logged); on 2 CPU ranks
total_flos counts both ranks' rows (6 x all rows' tokens x parameters).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import peft
import torch
import transformers

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
import test_sft_parity as sft  # noqa: E402

COMMON = {"--lr_scheduler_type": "linear", "--warmup_steps": "3", "--learning_rate": "2e-2", "--max_grad_norm": "0.5"}

CASES = [  # name, flags (TrainingArguments names), whole epochs (total_flos comparable)
    ("steps", {"max_steps": 12, "logging_steps": 5, "eval_strategy": "steps", "eval_steps": 5,
               "save_strategy": "steps", "save_steps": 5}, False),
    ("epochs", {"num_train_epochs": 2, "gradient_accumulation_steps": 2, "logging_strategy": "epoch",
                "logging_first_step": True, "eval_strategy": "epoch", "save_strategy": "epoch"}, True),
    ("cut_short_epoch", {"max_steps": 30, "logging_strategy": "epoch", "eval_strategy": "epoch",
                         "save_strategy": "epoch"}, False),
    ("none", {"max_steps": 6, "logging_strategy": "no", "eval_strategy": "no", "save_strategy": "no"}, False),
    ("ratios", {"max_steps": 12, "logging_steps": 0.25, "save_strategy": "steps", "save_steps": 0.5}, False),
    ("drop_last", {"num_train_epochs": 2, "per_device_train_batch_size": 5, "logging_steps": 1, "eval_strategy": "no",
                   "save_strategy": "epoch", "dataloader_drop_last": True}, False),
    ("eval_delay_steps", {"max_steps": 12, "logging_steps": 6, "eval_strategy": "steps", "eval_steps": 3,
                          "eval_delay": 7, "save_strategy": "no"}, False),
    ("eval_delay_epochs", {"num_train_epochs": 2, "logging_strategy": "epoch", "eval_strategy": "epoch",
                           "eval_delay": 1.5, "save_strategy": "no"}, False),
    ("tokens_all", {"num_train_epochs": 1, "logging_strategy": "epoch", "eval_strategy": "epoch", "save_strategy": "no",
                    "include_num_input_tokens_seen": True}, True),
    ("tokens_non_padding", {"num_train_epochs": 1, "per_device_train_batch_size": 2, "logging_strategy": "epoch",
                            "eval_strategy": "epoch", "save_strategy": "no",
                            "include_num_input_tokens_seen": "non_padding"}, False),
]


def flag_text(value):
    return str(value) if not isinstance(value, bool) else ("True" if value else "False")


def ftlaunch_run(model_dir, data_dir, out, flags, launcher=("--cpu", "--num_processes", "1")):
    cmd = sft.ftlaunch_command(model_dir, data_dir, out, flags.get("per_device_train_batch_size", 1),
                               flags.get("gradient_accumulation_steps", 1), launcher=launcher)
    for name, value in COMMON.items():
        if name in cmd:
            cmd[cmd.index(name) + 1] = value
        else:
            cmd += [name, value]
    cmd[cmd.index("--warmup_ratio") + 1] = "0.0"
    cmd[cmd.index("--splits") + 1] = "train,test"
    cmd[cmd.index("--max_steps") + 1] = str(flags.get("max_steps", -1))
    for name, value in flags.items():
        if name in ("max_steps", "gradient_accumulation_steps", "per_device_train_batch_size"):
            continue
        if f"--{name}" in cmd:
            cmd[cmd.index(f"--{name}") + 1] = flag_text(value)
        else:
            cmd += [f"--{name}", flag_text(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        return None
    return json.load(open(os.path.join(out, "trainer_state.json")))["log_history"]


class Rows(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {"input_ids": self.rows[i]}


def collate(batch):
    """Right padding, padding masked out of attention and labels."""
    length = max(len(b["input_ids"]) for b in batch)
    ids = torch.tensor([b["input_ids"] + [0] * (length - len(b["input_ids"])) for b in batch])
    mask = torch.tensor([[1] * len(b["input_ids"]) + [0] * (length - len(b["input_ids"])) for b in batch])
    return {"input_ids": ids, "labels": ids.masked_fill(mask == 0, -100), "attention_mask": mask}


def hf_trainer(model_dir, rows, out, flags, trl_sft=False):
    """transformers.Trainer on `rows` (as training and evaluation split), the LoRA of test_sft_parity;
    with `trl_sft`, TRL's SFTTrainer (train.py's: transformers' training loop, TRL's evaluation losses)
    on the rows as they are."""
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(sft.SEED)
    model = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                                       task_type="CAUSAL_LM"))
    settings = dict(output_dir=out, per_device_train_batch_size=1, per_device_eval_batch_size=1, report_to="none",
                    use_cpu=True, learning_rate=2e-2, lr_scheduler_type="linear", warmup_steps=3, max_grad_norm=0.5,
                    weight_decay=0.01, disable_tqdm=True, seed=sft.SEED)
    if trl_sft:
        import datasets
        from trl import SFTConfig, SFTTrainer
        tokenized = datasets.Dataset.from_dict({"input_ids": rows})  # TRL keeps tokenized rows as they are
        args = SFTConfig(**{**settings, **flags}, max_length=None, bf16=False, gradient_checkpointing=False)
        return SFTTrainer(model=model, args=args, train_dataset=tokenized, eval_dataset=tokenized, data_collator=collate)
    args = transformers.TrainingArguments(**{**settings, **flags})
    return transformers.Trainer(model=model, args=args, train_dataset=Rows(rows), eval_dataset=Rows(rows),
                                data_collator=collate)


def hf_run(model_dir, rows, out, flags):
    trainer = hf_trainer(model_dir, rows, out, flags, trl_sft=True)
    trainer.train()
    return trainer.state.log_history, trainer.model.num_parameters(exclude_embeddings=True)


def make_inputs(prefix):
    """A work folder with test_sft_parity's model and rows, its training split copied as the test split."""
    work = tempfile.mkdtemp(prefix=prefix)
    model_dir, data_dir, texts = sft.make_inputs(work)
    shutil.copy(os.path.join(data_dir, "train.jsonl"), os.path.join(data_dir, "test.jsonl"))
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    return work, model_dir, data_dir, [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def kind(entry):
    return "train_log" if "loss" in entry else "eval" if "eval_loss" in entry else "summary" if "train_runtime" in entry else "?"


def checkpoints(out):
    return sorted(d for d in os.listdir(out) if d.startswith("checkpoint-")) if os.path.isdir(out) else []


def compare(name, ours, ours_out, ref, ref_out, whole_epochs):
    shape = [(kind(e), e["step"]) for e in ours or []]
    ref_shape = [(kind(e), e["step"]) for e in ref]
    check(shape == ref_shape, f"{name}: entries {shape} == the Trainer's {ref_shape}")
    if shape != ref_shape:
        return
    extra = {"eval": {"eval_perplexity"}}
    keys = [(set(a) - extra.get(kind(a), set()), set(b)) for a, b in zip(ours, ref)]
    check(all(a == b for a, b in keys), f"{name}: every entry's keys are the Trainer's "
          f"({[(sorted(a ^ b)) for a, b in keys if a != b][:2]})")
    worst_epoch = max(abs(a["epoch"] - b["epoch"]) for a, b in zip(ours, ref))
    check(worst_epoch <= 1e-12, f"{name}: epochs equal (worst {worst_epoch:.1e})")
    rates = [(a["learning_rate"], b["learning_rate"]) for a, b in zip(ours, ref) if "learning_rate" in b]
    check(all(abs(a - b) <= 1e-12 * abs(b) for a, b in rates), f"{name}: learning rates equal ({rates[:3]} ...)")
    check(checkpoints(ours_out) == checkpoints(ref_out),
          f"{name}: checkpoints {checkpoints(ours_out)} == the Trainer's {checkpoints(ref_out)}")
    tokens = [(a.get("num_input_tokens_seen"), b["num_input_tokens_seen"]) for a, b in zip(ours, ref)
              if "num_input_tokens_seen" in b]
    if tokens:
        check(all(a == b for a, b in tokens), f"{name}: num_input_tokens_seen {tokens} == the Trainer's")
    if whole_epochs:
        flos, ref_flos = ours[-1]["total_flos"], ref[-1]["total_flos"]
        check(flos == ref_flos, f"{name}: total_flos {flos:.6g} == the Trainer's {ref_flos:.6g} over whole epochs")


def main():
    work, model_dir, data_dir, rows = make_inputs("ftl_flow_")

    parameters = None
    for name, flags, whole_epochs in CASES:
        ours_out, ref_out = os.path.join(work, name), os.path.join(work, f"hf_{name}")
        ours = ftlaunch_run(model_dir, data_dir, ours_out, flags)
        ref, parameters = hf_run(model_dir, rows, ref_out, flags)
        compare(name, ours, ours_out, ref, ref_out, whole_epochs)
        if name == "steps":
            steps_summary = ours[-1] if ours else None

    every = ftlaunch_run(model_dir, data_dir, os.path.join(work, "every"), {"max_steps": 12, "logging_steps": 1,
                                                                            "save_strategy": "no"})
    losses = [e["loss"] for e in every or [] if "loss" in e]
    mean = sum(losses) / max(len(losses), 1)
    got = [every[-1]["train_loss"] if every else None, steps_summary["train_loss"] if steps_summary else None]
    check(len(losses) == 12 and all(g is not None and abs(g - mean) <= 1e-12 * mean for g in got),
          f"train_loss {got} == the mean of the 12 steps' losses {mean} (logged every step / every 5)")

    two = ftlaunch_run(model_dir, data_dir, os.path.join(work, "two_ranks"),
                       {"num_train_epochs": 1, "logging_steps": 5, "save_strategy": "no"},
                       launcher=("--cpu", "--num_processes", "2", "--main_process_port", "0"))
    expected = 6.0 * sum(len(r) for r in rows) * parameters
    check(two is not None and two[-1]["total_flos"] == expected and two[-1]["step"] == 12,
          f"2 ranks, one epoch: total_flos {two and two[-1]['total_flos']} == 6 x {sum(len(r) for r in rows)} tokens x "
          f"{parameters} parameters")
    finish("trainer flow: logs, evaluations, checkpoints and the closing entry where the Trainer writes them")


if __name__ == "__main__":
    main()
