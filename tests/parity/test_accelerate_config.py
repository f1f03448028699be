"""Parity with accelerate itself: for each config, what accelerate's own loader reads equals what
ftlaunch reads, and the ACCELERATE_* variables ftlaunch gives each worker equal those that
`accelerate launch` (prepare_deepspeed_cmd_env) exports. accelerate comes from the setup venv."""
import json
import os
import subprocess
import sys
import tempfile

from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_deepspeed_cmd_env

FTLAUNCH = os.environ["FTLAUNCH"]
CONFIGS = os.path.join(os.environ["FTL_SOURCE_DIR"], "configs")

EXTRA = {
    "offload_nvme.yaml": """compute_environment: LOCAL_MACHINE
debug: true
deepspeed_config:
  gradient_accumulation_steps: 2
  gradient_clipping: 0.5
  offload_optimizer_device: nvme
  offload_optimizer_nvme_path: /nvme/opt
  offload_param_device: cpu
  zero3_init_flag: false
  zero_stage: 3
distributed_type: DEEPSPEED
mixed_precision: fp16
num_machines: 1
num_processes: 4
use_cpu: false
""",
    "fp16_legacy.yaml": """distributed_type: DEEPSPEED
fp16: true
num_processes: 2
deepspeed_config:
  zero_stage: 1
""",
}


def ftlaunch_dry_run(config, job):
    out = subprocess.run([FTLAUNCH, "--config_file", config, "--dry_run", *job], capture_output=True, text=True)
    if out.returncode != 0:
        raise AssertionError(f"ftlaunch dry run of {config} failed: {out.stderr}")
    return json.loads(out.stdout)


def accelerate_env(config):
    args = launch_command_parser().parse_args(["--config_file", config, "train.py"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    fields = list(defaults.deepspeed_config.keys()) + (["mixed_precision"] if mp_from_config else [])
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)
    _, env = prepare_deepspeed_cmd_env(args)
    return {k: v for k, v in env.items() if k.startswith("ACCELERATE_") and os.environ.get(k) != v}


def job_for(config):
    precision = load_config_from_file(config).mixed_precision
    ga = (load_config_from_file(config).deepspeed_config or {}).get("gradient_accumulation_steps", 1)
    return ["train", "--model_name_or_path", "m", "--gradient_accumulation_steps", str(ga),
            "--bf16", str(precision == "bf16"), "--fp16", str(precision == "fp16")]


def main():
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        configs = [os.path.join(CONFIGS, n) for n in
                   ("deepspeed_config.yaml", "deepspeed_config_z3_qlora.yaml", "ds_zero3_cpu.yaml")]
        for name, text in EXTRA.items():
            path = os.path.join(tmp, name)
            with open(path, "w") as f:
                f.write(text)
            configs.append(path)
        for config in configs:
            name = os.path.basename(config)
            theirs = load_config_from_file(config).to_dict()
            job = (["peft_lora_seq2seq_accelerate_ds_zero3_offload.py"] if name == "ds_zero3_cpu.yaml"
                   else job_for(config))
            plan = ftlaunch_dry_run(config, job)
            ours = plan["accelerate_config"]
            for key, value in theirs.items():
                if key == "dynamo_config" and value == {}:
                    continue
                if ours.get(key) != value:
                    failures.append(f"{name}: {key}: accelerate reads {value!r}, ftlaunch {ours.get(key)!r}")
            env_theirs = accelerate_env(config)
            env_ours = plan["launch_plan"]["local_ranks"][0]["env"]
            for key, value in env_theirs.items():
                if env_ours.get(key) != value:
                    failures.append(f"{name}: {key}: accelerate exports {value!r}, ftlaunch {env_ours.get(key)!r}")
            print(f"{name}: {len(theirs)} keys and {len(env_theirs)} ACCELERATE_* variables compared")
    for f in failures:
        print("MISMATCH", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
