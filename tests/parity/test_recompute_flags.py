"""Activation checkpointing's flags as transformers 5 spells them, on the tiny LoRA run of test_sft_parity.

transformers 5 renamed --gradient_checkpointing to --activation_checkpointing (the old name an
alias) and its kwargs to --activation_checkpointing_kwargs, adding every_n_layers (only layers whose
index is a multiple of n are recomputed) to torch.utils.checkpoint's use_reentrant. Checks:
  same numbers  no checkpointing, --gradient_checkpointing True with use_reentrant true, and
                --activation_checkpointing True with every_n_layers 2: the same 12-step loss curve
                bit for bit (recomputing a layer gives the values its first run gave)
  which layers  every_n_layers 2 of the 2-layer model: the log says 1 of 2 layers recomputed; for
                the same model with 8 layers `ftlaunch estimate-memory`'s activations (batch 16 x 2048)
                lie strictly between all layers recomputed and none
  errors        every_n_layers 0, offload true, an unknown key, and every_n_layers with
                --gradient_checkpointing auto: exit 2 naming the flag and the key
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
import test_sft_parity as sft  # noqa: E402
from test_schedules import command, run  # noqa: E402


def activations(model_dir, flags):
    """estimate-memory's activation bytes for this run (no DeepSpeed: the stage-0 row)."""
    cmd = [sft.FTLAUNCH, "--cpu", "--num_processes", "1", "estimate-memory", "--model_name_or_path", model_dir,
           "--use_peft_lora", "True", "--per_device_train_batch_size", "16", "--max_seq_len", "2048", "--json", *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        print(proc.stderr[-2000:])
        return None
    rows = [r for r in json.loads(proc.stdout)["rows"] if r["zero_stage"] == 0 and not r["offload_optimizer"]]
    return rows[0]["activations"] if rows else None


def main():
    work = tempfile.mkdtemp(prefix="ftl_recompute_")
    model_dir, data_dir, _ = sft.make_inputs(work)
    variants = {
        "none": ["--gradient_checkpointing", "False"],
        "reentrant": ["--gradient_checkpointing", "True", "--gradient_checkpointing_kwargs", '{"use_reentrant": true}'],
        "every 2": ["--activation_checkpointing", "True", "--activation_checkpointing_kwargs",
                    '{"every_n_layers": 2, "use_reentrant": false}'],
        "all": ["--activation_checkpointing", "True"],
    }
    results = {}
    for name, flags in variants.items():
        proc, _, losses = run(command(model_dir, data_dir, os.path.join(work, name.replace(" ", "_")), flags))
        results[name] = (proc, losses)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
    none = results["none"][1]
    for name in ("reentrant", "every 2", "all"):
        check(none is not None and results[name][1] == none,
              f"{name}: the loss curve equals no checkpointing's bit for bit ({results[name][1] and results[name][1][-1]})")
    log = results["every 2"][0].stdout + results["every 2"][0].stderr
    check("activation checkpointing every 2 layers: 1 of 2 decoder layers recomputed" in log,
          "every_n_layers 2: the log says 1 of the 2 layers is recomputed")
    deep = os.path.join(work, "deep_model")  # estimate-memory reads only config.json
    os.makedirs(deep)
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(deep, "config.json"), "w") as f:
        json.dump({**config, "num_hidden_layers": 8}, f)
    spent = {name: activations(deep, variants[name]) for name in ("none", "every 2", "all")}
    check(None not in spent.values() and spent["all"] < spent["every 2"] < spent["none"],
          f"estimate-memory's activations: all layers recomputed {spent['all']} < every 2nd {spent['every 2']} < "
          f"none {spent['none']} bytes")

    errors = [
        (["--activation_checkpointing_kwargs", '{"every_n_layers": 0}'], ["--activation_checkpointing_kwargs", "every_n_layers"]),
        (["--gradient_checkpointing_kwargs", '{"offload": true}'], ["--gradient_checkpointing_kwargs", "offload"]),
        (["--activation_checkpointing_kwargs", '{"context_fn": 1}'], ["'context_fn'", "every_n_layers"]),
        (["--gradient_checkpointing", "auto", "--activation_checkpointing_kwargs", '{"every_n_layers": 2}'],
         ["auto", "every_n_layers 2", "give one"]),
    ]
    for i, (flags, needles) in enumerate(errors):
        out = os.path.join(work, f"e{i}")
        proc = subprocess.run(command(model_dir, data_dir, out, flags), capture_output=True, text=True, timeout=600)
        text = proc.stdout + proc.stderr
        check(proc.returncode == 2 and all(n in text for n in needles), f"error case {i}: exit {proc.returncode}, names {needles}")
    finish("activation checkpointing flags: the same numbers, the layers and errors as stated")


if __name__ == "__main__":
    main()
