"""Soak benchmark: does a long run hold its memory? Two CPU ranks train the parity tests' tiny
llama (LoRA, 2 layers, hidden 64) for thousands of steps; every logging step metrics.jsonl records
each rank's resident host memory (host_memory_bytes, VmRSS). The figure of merit is each rank's
RSS at the last step against its RSS at the check step (default 5,000 vs 500); the target is
growth within 5%. Not part of the suite (it runs for minutes).

  python bench/soak.py BUILD_DIR [--steps 5000] [--check_step 500] [--zero_stage 0|3]

Prints one row per rank and exits 1 when a rank grew more than 5%.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "parity"))

LIMIT = 0.05


def config_yaml(work, zero_stage):
    path = os.path.join(work, f"soak_z{zero_stage}.yaml")
    with open(path, "w") as f:
        if zero_stage == 0:
            f.write("distributed_type: MULTI_CPU\n")
        elif zero_stage < 3:
            f.write(f"distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: {zero_stage}\n"
                    "  offload_optimizer_device: none\n  offload_param_device: none\n")
        else:  # every tensor partitioned: DeepSpeed's default threshold keeps this tiny model whole
            ds_json = os.path.join(work, "soak_z3.json")
            with open(ds_json, "w") as j:
                json.dump({"zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
                           "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
                           "train_batch_size": "auto", "gradient_clipping": "auto"}, j)
            f.write(f"distributed_type: DEEPSPEED\ndeepspeed_config:\n  deepspeed_config_file: {ds_json}\n")
        if zero_stage < 3:
            f.write("mixed_precision: 'no'\n")
        f.write("num_machines: 1\nnum_processes: 2\nmain_process_port: 0\nuse_cpu: true\n")
    return path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build_dir")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--check_step", type=int, default=500)
    parser.add_argument("--zero_stage", type=int, default=0, choices=(0, 1, 2, 3))
    parser.add_argument("--logging_steps", type=int, default=50)
    args = parser.parse_args()
    if args.check_step % args.logging_steps or args.steps % args.logging_steps:
        sys.exit("--check_step and --steps must be multiples of --logging_steps")
    ftlaunch = os.path.join(os.path.abspath(args.build_dir), "bin", "ftlaunch")
    # The parity tests' builders of the tiny model and dataset read the tools' paths on import.
    os.environ.update(FTLAUNCH=ftlaunch, FTL_SOURCE_DIR=ROOT,
                      FTL_MODEL_PROBE=os.path.join(os.path.dirname(ftlaunch), "ftl_model_probe"))
    import test_sft_parity as sft
    with tempfile.TemporaryDirectory() as work:
        model_dir, data_dir, _ = sft.make_inputs(work)
        out = os.path.join(work, "out")
        cmd = [ftlaunch, "--config_file", config_yaml(work, args.zero_stage), "train",
               "--model_name_or_path", model_dir, "--dataset_name", data_dir, "--splits", "train",
               "--max_seq_len", "128", "--use_peft_lora", "True", "--lora_r", "4", "--lora_alpha", "8",
               "--lora_dropout", "0.1", "--lora_target_modules", "all-linear", "--learning_rate", "1e-3",
               "--lr_scheduler_type", "cosine", "--warmup_ratio", "0.01", "--per_device_train_batch_size", "2",
               "--gradient_accumulation_steps", "2", "--max_steps", str(args.steps),
               "--logging_steps", str(args.logging_steps), "--save_strategy", "no", "--bf16", "False",
               "--seed", "1", "--output_dir", out]
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            sys.exit(f"the soak run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        with open(os.path.join(out, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
    rss = {r["step"]: r["host_memory_bytes"] for r in records if r["kind"] == "train"}
    early, late = rss[args.check_step], rss[args.steps]
    print(f"soak: {args.steps} steps, 2 CPU ranks, ZeRO stage {args.zero_stage}, {seconds:.0f} s "
          f"({1000 * seconds / args.steps:.1f} ms/step incl. start-up)")
    print(f"{'rank':>4} {'RSS@' + str(args.check_step) + ' MiB':>14} {'RSS@' + str(args.steps) + ' MiB':>15} "
          f"{'growth':>8} {'max MiB':>9}")
    worst = 0.0
    for rank in range(len(early)):
        growth = late[rank] / early[rank] - 1
        worst = max(worst, growth)
        highest = max(v[rank] for step, v in rss.items() if step >= args.check_step)
        print(f"{rank:>4} {early[rank] / 2**20:>14.1f} {late[rank] / 2**20:>15.1f} {100 * growth:>7.2f}% "
              f"{highest / 2**20:>9.1f}")
    verdict = "within" if worst <= LIMIT else "OVER"
    print(f"soak: worst growth {100 * worst:.2f}% ({verdict} the {100 * LIMIT:.0f}% target)")
    sys.exit(0 if worst <= LIMIT else 1)


if __name__ == "__main__":
    main()
