"""Learning-rate schedules against transformers' get_scheduler and DeepSpeed's lr_schedules.

ftlaunch trains the tiny LoRA model of test_sft_parity for 12 steps (batch 1, logging every step)
under each schedule. trainer_state.json's learning_rate at step k must equal the rate the HF
Trainer logs there: without DeepSpeed the rate step k applied (transformers >= 4.51 reads it
between the optimizer's and the scheduler's step); under DeepSpeed the rate after k steps (the
engine steps the schedule inside accelerate's backward, before the Trainer reads it):
  trainer    every --lr_scheduler_type, with the --lr_scheduler_kwargs each takes (cosine
             num_cycles, cosine_with_restarts, polynomial lr_end and power, inverse_sqrt timescale,
             cosine_with_min_lr by min_lr_rate and by min_lr, cosine_warmup_with_min_lr with and
             without warmup_lr_rate, warmup_stable_decay with each warmup and decay shape), numbers
             given as text too: LambdaLR from transformers.get_scheduler over torch.optim.AdamW
  deepspeed  a DeepSpeed JSON's scheduler section (WarmupLR with log and linear warmup,
             WarmupDecayLR, WarmupCosineLR; "auto" values filled as the HF Trainer fills them:
             warmup_min_lr 0, warmup_max_lr --learning_rate, warmup_num_steps max(1, warmup),
             total_num_steps the run's): deepspeed.runtime.lr_schedules' classes stepped as
             DeepSpeed's engine steps them
  optimizer  an optimizer section without lr: DeepSpeed's default 1e-3 is the base the flags'
             schedule scales (not --learning_rate); an all-"auto" section trains the same curve as
             no section (bit for bit)
  plateau    reduce_lr_on_plateau, evaluating every step: the logged rates equal those of
             torch.optim.lr_scheduler.ReduceLROnPlateau (with the same kwargs, numbers as text too)
             stepped with the run's own eval_loss after each evaluation (3 cases: rel/min with
             patience 1; max with patience 0, cooldown 2 and min_lr; abs threshold with eps); a run
             resumed from checkpoint-6 logs the same rates and losses (its state restored); no
             eval strategy, a DeepSpeed config and factor >= 1 are refused with exit 2
  bound      |ours - ref| <= 1e-12 |ref| + 1e-18 (the same double formulas; libm's cos, log and pow
             may differ in the last bit)
  errors     an unknown kwarg, a missing min_lr_rate, OneCycle, and a concrete total_num_steps that
             differs from the run's: exit 2 naming the flag or key, before training
"""
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import torch
import transformers

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
import test_sft_parity as sft  # noqa: E402

STEPS = 12
WARMUP = 3
LR = 2e-2


def command(model_dir, data_dir, out, flags=(), launcher=("--cpu", "--num_processes", "1")):
    cmd = sft.ftlaunch_command(model_dir, data_dir, out, 1, 1, launcher=launcher)
    replaced = {"--max_steps": str(STEPS), "--lr_scheduler_type": "linear", "--warmup_ratio": "0.0",
                "--learning_rate": str(LR)}
    for name, value in replaced.items():
        cmd[cmd.index(name) + 1] = value
    return cmd + ["--warmup_steps", str(WARMUP), "--save_strategy", "no", *flags]


def run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    out = cmd[cmd.index("--output_dir") + 1]
    if proc.returncode != 0:
        return proc, None, None
    history = json.load(open(os.path.join(out, "trainer_state.json")))["log_history"]
    rates = [e["learning_rate"] for e in history if "learning_rate" in e]
    losses = [e["loss"] for e in history if "loss" in e]
    return proc, rates, losses


def deepspeed_yaml(work, name, sections):
    """An accelerate YAML on one CPU rank whose DeepSpeed JSON (ZeRO-1) has `sections` besides."""
    ds = {"zero_optimization": {"stage": 1}, "train_micro_batch_size_per_gpu": "auto",
          "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", **sections}
    path = os.path.join(work, f"{name}.json")
    with open(path, "w") as f:
        json.dump(ds, f)
    yaml = os.path.join(work, f"{name}.yaml")
    with open(yaml, "w") as f:
        f.write(f"distributed_type: DEEPSPEED\ndeepspeed_config:\n  deepspeed_config_file: {path}\n"
                "num_machines: 1\nnum_processes: 1\nmain_process_port: 0\nuse_cpu: true\n")
    return ("--config_file", yaml)


def trainer_rates(name, kwargs, base_lr=LR, deepspeed=False):
    """The rate the HF Trainer logs at each of STEPS optimizer steps (see the module's docstring)."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    sched = transformers.get_scheduler(name, opt, num_warmup_steps=WARMUP, num_training_steps=STEPS,
                                       scheduler_specific_kwargs=kwargs)
    rates = []
    for _ in range(STEPS):
        opt.step()
        if not deepspeed:
            rates.append(sched.get_last_lr()[0])
        sched.step()
        if deepspeed:
            rates.append(sched.get_last_lr()[0])
    return rates


def deepspeed_rates(kind, params):
    """DeepSpeed's config-built schedule, `params` resolved as the HF Trainer resolves them."""
    from deepspeed.runtime import lr_schedules
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sched = getattr(lr_schedules, kind)(opt, **params)
    rates = []
    for _ in range(STEPS):
        sched.step()
        rates.append(sched.get_last_lr()[0])
    return rates


def close(ours, ref):
    return ours is not None and len(ours) == len(ref) and all(abs(a - b) <= 1e-12 * abs(b) + 1e-18 for a, b in zip(ours, ref))


def worst(ours, ref):
    if not ours or len(ours) != len(ref):
        return f"{len(ours or [])} rates logged, {len(ref)} expected"
    return f"worst abs diff {max(abs(a - b) for a, b in zip(ours, ref)):.2e}"


TRAINER_CASES = [
    ("linear", {}), ("constant", {}), ("constant_with_warmup", {}), ("cosine", {}), ("cosine", {"num_cycles": 1.5}),
    ("cosine_with_restarts", {"num_cycles": 3}), ("polynomial", {}), ("polynomial", {"lr_end": 1e-3, "power": 2.5}),
    ("inverse_sqrt", {}), ("inverse_sqrt", {"timescale": 7}), ("cosine_with_min_lr", {"min_lr_rate": 0.1}),
    ("cosine_with_min_lr", {"min_lr": 5e-3, "num_cycles": 0.25}), ("cosine_warmup_with_min_lr", {"min_lr_rate": 0.05}),
    ("cosine_warmup_with_min_lr", {"min_lr_rate": 0.05, "warmup_lr_rate": 0.2}),
    ("warmup_stable_decay", {"num_decay_steps": 4}),
    ("warmup_stable_decay", {"num_decay_steps": 5, "num_stable_steps": 2, "warmup_type": "cosine",
                             "decay_type": "1-sqrt", "min_lr_ratio": 0.1}),
    ("warmup_stable_decay", {"num_decay_steps": 6, "warmup_type": "1-sqrt", "decay_type": "linear"}),
]

DEEPSPEED_CASES = [
    ("WarmupLR", {"warmup_min_lr": "auto", "warmup_max_lr": "auto", "warmup_num_steps": "auto"}),
    ("WarmupLR", {"warmup_min_lr": 1e-3, "warmup_num_steps": WARMUP, "warmup_type": "linear"}),
    ("WarmupDecayLR", {"warmup_min_lr": "auto", "warmup_max_lr": "auto", "warmup_num_steps": "auto",
                       "total_num_steps": "auto"}),
    ("WarmupCosineLR", {"warmup_num_steps": "auto", "total_num_steps": "auto", "warmup_min_ratio": 0.1,
                        "cos_min_ratio": 0.01, "warmup_type": "linear"}),
]


def resolved(params):
    """What HfTrainerDeepSpeedConfig fills into a scheduler section's "auto" values for this run."""
    fills = {"warmup_min_lr": 0, "warmup_max_lr": LR, "warmup_num_steps": max(1, WARMUP), "total_num_steps": STEPS}
    return {k: (fills[k] if v == "auto" else v) for k, v in params.items()}


PLATEAU_CASES = [
    {"factor": 0.5, "patience": 1, "threshold": 0.01},
    {"mode": "max", "factor": "0.3", "patience": "0", "cooldown": 2, "min_lr": 1e-3},
    {"threshold_mode": "abs", "threshold": 0.05, "patience": 2, "eps": 1e-3},
]


def plateau_rates(kwargs, eval_losses):
    """The rate of each step: torch's ReduceLROnPlateau stepped with the evaluation after each step."""
    converted = {k: (float(v) if isinstance(v, str) and k != "mode" and k != "threshold_mode" else v) for k, v in kwargs.items()}
    converted = {k: (int(v) if k in ("patience", "cooldown") else v) for k, v in converted.items()}
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **converted)
    rates = []
    for loss in eval_losses:
        rates.append(opt.param_groups[0]["lr"])
        sched.step(loss)
    return rates


def check_plateau(work, model_dir, data_dir):
    import shutil
    shutil.copy(os.path.join(data_dir, "train.jsonl"), os.path.join(data_dir, "test.jsonl"))
    evaluate = ["--splits", "train,test", "--eval_strategy", "steps", "--eval_steps", "1", "--lr_scheduler_type",
                "reduce_lr_on_plateau"]
    for i, kwargs in enumerate(PLATEAU_CASES):
        out = os.path.join(work, f"plateau{i}")
        proc, rates, _ = run(command(model_dir, data_dir, out, [*evaluate, "--lr_scheduler_kwargs", json.dumps(kwargs)]))
        history = json.load(open(os.path.join(out, "trainer_state.json")))["log_history"] if rates else []
        evals = [e["eval_loss"] for e in history if "eval_loss" in e]
        ref = plateau_rates(kwargs, evals) if len(evals) == STEPS else []
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
        check(close(rates, ref) and len(set(ref)) > 1,
              f"reduce_lr_on_plateau {json.dumps(kwargs)}: rates == ReduceLROnPlateau's on the run's eval losses "
              f"({worst(rates, ref)}; {len(set(ref))} distinct rates)")
    # Resume: the schedule's state comes back from checkpoint-6.
    kwargs = json.dumps(PLATEAU_CASES[0])
    whole_out = os.path.join(work, "plateau_whole")
    flags = [*evaluate, "--lr_scheduler_kwargs", kwargs]
    cmd = command(model_dir, data_dir, whole_out, flags)
    cmd[cmd.index("--save_strategy") + 1:cmd.index("--save_strategy") + 2] = ["steps", "--save_steps", "6"]
    _, whole_rates, whole_losses = run(cmd)
    resumed = cmd + ["--resume_from_checkpoint", os.path.join(whole_out, "checkpoint-6")]
    _, rates, losses = run(resumed)
    check(whole_rates is not None and rates == whole_rates and losses == whole_losses,
          "reduce_lr_on_plateau resumed from checkpoint-6: the same rates and losses bit for bit")
    errors = [
        (["--lr_scheduler_type", "reduce_lr_on_plateau"], (), ["reduce_lr_on_plateau", "--eval_strategy"]),
        ([*evaluate], deepspeed_yaml(work, "plateau_ds", {}), ["reduce_lr_on_plateau under DeepSpeed"]),
        ([*evaluate, "--lr_scheduler_kwargs", '{"factor": 1.5}'], (), ["factor", "below 1"]),
    ]
    for i, (flags, launcher, needles) in enumerate(errors):
        out = os.path.join(work, f"plateau_e{i}")
        proc = subprocess.run(command(model_dir, data_dir, out, flags, **({"launcher": launcher} if launcher else {})),
                              capture_output=True, text=True, timeout=600)
        text = proc.stdout + proc.stderr
        check(proc.returncode == 2 and all(n in text for n in needles), f"plateau error case {i}: exit {proc.returncode}, names {needles}")


def main():
    work = tempfile.mkdtemp(prefix="ftl_schedules_")
    model_dir, data_dir, _ = sft.make_inputs(work)
    jobs = []  # (what, command, reference rates)
    for i, (name, kwargs) in enumerate(TRAINER_CASES):
        # Numbers given as text, as TrainingArguments converts them, in every other case.
        given = {k: (str(v) if i % 2 and not isinstance(v, str) else v) for k, v in kwargs.items()}
        flags = ["--lr_scheduler_type", name] + (["--lr_scheduler_kwargs", json.dumps(given)] if kwargs else [])
        jobs.append((f"{name} {json.dumps(given)}", command(model_dir, data_dir, os.path.join(work, f"t{i}"), flags),
                     trainer_rates(name, kwargs)))
    for i, (kind, params) in enumerate(DEEPSPEED_CASES):
        launcher = deepspeed_yaml(work, f"ds{i}", {"scheduler": {"type": kind, "params": params}})
        jobs.append((f"DeepSpeed {kind} {json.dumps(params)}",
                     command(model_dir, data_dir, os.path.join(work, f"d{i}"), launcher=launcher),
                     deepspeed_rates(kind, resolved(params))))
    no_lr = deepspeed_yaml(work, "no_lr", {"optimizer": {"type": "AdamW", "params": {"weight_decay": "auto"}}})
    jobs.append(("DeepSpeed optimizer without lr: DeepSpeed's 1e-3 under the flags' cosine",
                 command(model_dir, data_dir, os.path.join(work, "no_lr"), ["--lr_scheduler_type", "cosine"], launcher=no_lr),
                 trainer_rates("cosine", {}, base_lr=1e-3, deepspeed=True)))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: run(job[1]), jobs))
    for (what, _, ref), (proc, rates, _) in zip(jobs, results):
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
        check(proc.returncode == 0 and close(rates, ref), f"{what}: rates == reference ({worst(rates, ref)})")

    # An all-"auto" optimizer section is the flags' AdamW: the same curve.
    all_auto = deepspeed_yaml(work, "all_auto", {"optimizer": {"type": "AdamW", "params": {
        "lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}}})
    plain = deepspeed_yaml(work, "plain", {})
    _, _, with_section = run(command(model_dir, data_dir, os.path.join(work, "all_auto"), launcher=all_auto))
    _, _, without = run(command(model_dir, data_dir, os.path.join(work, "plain"), launcher=plain))
    check(with_section is not None and with_section == without and len(without) == STEPS,
          f"an all-auto DeepSpeed optimizer section trains the flags' curve (losses {with_section and with_section[-1]} "
          f"vs {without and without[-1]} at step {STEPS})")

    errors = [
        (["--lr_scheduler_type", "cosine", "--lr_scheduler_kwargs", '{"num_cycle": 1}'], (), ["--lr_scheduler_kwargs", "num_cycle"]),
        (["--lr_scheduler_type", "cosine_with_min_lr"], (), ["--lr_scheduler_kwargs", "min_lr_rate"]),
        ([], deepspeed_yaml(work, "one_cycle", {"scheduler": {"type": "OneCycle", "params": {}}}), ["scheduler.type", "OneCycle"]),
        ([], deepspeed_yaml(work, "total", {"scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": 99}}}),
         ["total_num_steps=99", f"num_training_steps (calculated)={STEPS}"]),
    ]
    for i, (flags, launcher, needles) in enumerate(errors):
        out = os.path.join(work, f"e{i}")
        cmd = command(model_dir, data_dir, out, flags, **({"launcher": launcher} if launcher else {}))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        text = proc.stdout + proc.stderr
        check(proc.returncode == 2 and all(n in text for n in needles)
              and not os.path.exists(os.path.join(out, "trainer_state.json")),
              f"error case {i}: exit {proc.returncode}, names {needles}")
    check_plateau(work, model_dir, data_dir)
    finish("schedules: every rate equals transformers' / DeepSpeed's")


if __name__ == "__main__":
    main()
