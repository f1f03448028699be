"""ZeRO-Offload and ZeRO-Infinity (offload_optimizer and offload_param, cpu and nvme) against
the plain run.

The LoRA run of test_sft_parity (20 steps, AdamW with weight decay, cosine schedule, clipping) with
a global batch of 4 rows, single rank without ZeRO as the reference. Checks:
  curves       per-step loss == the reference within 1e-5 relative, and the final adapter
               within 1e-5 (difference norm / norm), for: ZeRO-2 1 rank cpu; ZeRO-2 2 ranks nvme;
               ZeRO-1 2 ranks x accumulation 2 cpu; ZeRO-3 2 ranks nvme with every tensor
               partitioned and sub_group_size 1000 (4 swapped sub-groups per rank, so reads,
               updates and write-backs overlap); ZeRO-3 2 ranks with optimizer and parameters on
               cpu, and on nvme with max_in_cpu 0 (each rank reports where its parameter slices
               are: host memory, or its params.swap file); ZeRO-3 on 1 rank with both on cpu (the
               seed's third command on one device), each part uploaded ahead of its use, the
               update pipelined in chunks of sub_group_size 1000; parameters on nvme with max_in_cpu
               40000 (each rank keeps the first parts that fit, at most 40000 elements, in host
               memory and the rest in its swap file, and says so); the log names where
               the state lives. (On CPU ranks host and device memory are one: these runs prove the
               code paths and numbers, not the transfers, which need a GPU.)
  swap files   the nvme folder is empty after a run (each rank removes its swap file)
  resume       the ZeRO-2 nvme run's checkpoint-10, resumed with nvme offload on 2 ranks, logs
               the uninterrupted nvme run's steps 11..20 within 1e-6
  corruption   one byte of rank 1's swap file flipped in step 6 (FTLAUNCH_TEST_CORRUPT_SWAP_IN_STEP):
               the run stops (exit != 0) with an error naming the swap file and its CRC-32C
               check; checkpoint-4 still passes `ftlaunch verify`
  bad input    nvme_path missing -> exit 2 naming the key and the path, before any step;
               offload with ZeRO stage 0 -> exit 2 naming both keys. (A file system without
               O_DIRECT is refused too, but tmpfs takes O_DIRECT since Linux 6.6, so no folder here
               is sure to lack it.)
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
import test_sft_parity as sft  # noqa: E402
import test_zero  # noqa: E402


def offload_yaml(work, stage, ranks, device, nvme_path="", name=None):
    """An accelerate YAML: ZeRO `stage` on `ranks` CPU ranks, offload_optimizer_device `device`."""
    path = os.path.join(work, name or f"offload_z{stage}_{ranks}_{device}.yaml")
    nvme = f"  offload_optimizer_nvme_path: {nvme_path}\n" if device == "nvme" else ""
    with open(path, "w") as f:
        f.write(f"""distributed_type: DEEPSPEED
deepspeed_config:
  zero_stage: {stage}
  offload_optimizer_device: {device}
{nvme}  offload_param_device: none
mixed_precision: 'no'
num_machines: 1
num_processes: {ranks}
main_process_port: 0
use_cpu: true
""")
    return path


def zero3_json_yaml(work, ranks, name, zero):
    """ZeRO-3 with every tensor partitioned, more zero_optimization keys in `zero`, a small aio
    block so each NVMe sub-group is several requests."""
    return test_zero.zero3_everything_partitioned(work, ranks, name, zero,
                                                  aio={"block_size": 4096, "queue_depth": 4, "thread_count": 2})


def run(cmd, env=None):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    return proc.returncode, proc.stdout + proc.stderr


def main():
    with tempfile.TemporaryDirectory() as work:
        model_dir, data_dir, _ = sft.make_inputs(work)
        nvme = os.path.join(work, "nvme")
        os.makedirs(nvme)
        reference_dir = os.path.join(work, "reference")
        reference, _ = sft.run_ftlaunch(model_dir, data_dir, reference_dir, 4, 1)

        cases = [("ZeRO-2, 1 rank, cpu", offload_yaml(work, 2, 1, "cpu"), 4, 1, "host memory"),
                 ("ZeRO-2, 2 ranks, nvme", offload_yaml(work, 2, 2, "nvme", nvme), 2, 1, "kernel AIO"),
                 ("ZeRO-1, 2 ranks x accumulation 2, cpu", offload_yaml(work, 1, 2, "cpu"), 1, 2, "host memory"),
                 ("ZeRO-3 partitioned, 2 ranks, nvme in 4 sub-groups",
                  zero3_json_yaml(work, 2, "zero3_nvme", {"sub_group_size": 1000,
                                                          "offload_optimizer": {"device": "nvme", "nvme_path": nvme}}),
                  2, 1, "4 sub-group(s) of up to 1000 elements"),
                 ("ZeRO-3 partitioned, 2 ranks, optimizer and parameters on cpu",
                  zero3_json_yaml(work, 2, "zero3_cpu", {"offload_optimizer": {"device": "cpu", "pin_memory": True},
                                                         "offload_param": {"device": "cpu", "pin_memory": True}}),
                  2, 1, "host memory"),
                 ("ZeRO-3 partitioned, 1 rank, optimizer and parameters on cpu",
                  zero3_json_yaml(work, 1, "zero3_cpu_1", {"sub_group_size": 1000, "offload_optimizer": {"device": "cpu"},
                                                           "offload_param": {"device": "cpu"}}),
                  4, 1, "host memory"),
                 ("ZeRO-3 partitioned, 2 ranks, optimizer and parameters on nvme",
                  zero3_json_yaml(work, 2, "zero3_infinity", {"offload_optimizer": {"device": "nvme", "nvme_path": nvme},
                                                              "offload_param": {"device": "nvme", "nvme_path": nvme,
                                                                                "max_in_cpu": 0}}),
                  2, 1, "kernel AIO"),
                 ("ZeRO-3 partitioned, 2 ranks, parameters on nvme beyond max_in_cpu",
                  zero3_json_yaml(work, 2, "zero3_max_in_cpu", {"offload_optimizer": {"device": "cpu"},
                                                                "offload_param": {"device": "nvme", "nvme_path": nvme,
                                                                                  "max_in_cpu": 40000}}),
                  2, 1, "host memory")]
        outs = {}
        for what, config, batch, accumulation, placement in cases:
            out = os.path.join(work, what.replace(" ", "_").replace(",", ""))
            losses, log = sft.run_ftlaunch(model_dir, data_dir, out, batch, accumulation,
                                           extra=("--save_steps", "10"), launcher=("--config_file", config))
            outs[what] = (out, losses)
            curve = test_zero.worst_curve_diff(losses, reference)
            check(len(losses) == len(reference) and curve <= 1e-5,
                  f"{what}: loss curve vs the plain run worst rel diff {curve:.2e} <= 1e-5")
            final, _ = test_zero.adapter_diff(out, reference_dir)
            check(final <= 1e-5, f"{what}: final adapter vs the plain run rel diff {final:.2e} <= 1e-5")
            named = [l for l in log.splitlines() if "offload_optimizer: this rank's optimizer state is in" in l]
            check(len(named) >= 1 and all(placement in l for l in named),
                  f"{what}: the log says where the state lives ({named[:1]})")
            if "parameters on" in what:
                where = "-params.swap" if "nvme" in what else "offload_param: in host memory"
                held = [l for l in log.splitlines() if "ZeRO-3: this rank holds" in l]
                split = "max_in_cpu" in what
                kept = [int(m) for l in held for m in re.findall(r"host memory for (\d+) elements \(offload_param.max_in_cpu\)", l)]
                ranks = 1 if "1 rank" in what else 2
                check(len(held) == ranks and all(where in l for l in held) and (not split or (len(kept) == 2 and
                                                                                              0 < min(kept) <= 40000)),
                      f"{what}: each rank says where its parameter slices are ({held[:1]})")
                if ranks == 1:  # no collective: what runs ahead is each part's upload from host memory
                    counts = re.search(r"ZeRO-3 gathers: (\d+), of which (\d+) were started ahead of their use "
                                       r"\(prefetch\) and (\d+)", log)
                    counts = tuple(map(int, counts.groups())) if counts else None
                    check(counts is not None and counts[1] > 0 and counts[2] == 0,
                          f"{what}: parts uploaded ahead of their use (gathers, ahead, unused): {counts}")
            left = os.listdir(nvme)
            check(not left, f"{what}: no swap file left in the nvme folder ({left})")

        # Resume with nvme offload from the ZeRO-2 nvme run's checkpoint-10.
        nvme_out, nvme_losses = outs["ZeRO-2, 2 ranks, nvme"]
        resumed_dir = os.path.join(work, "resumed")
        os.makedirs(resumed_dir)
        shutil.copytree(os.path.join(nvme_out, "checkpoint-10"), os.path.join(resumed_dir, "checkpoint-10"))
        resumed, log = sft.run_ftlaunch(model_dir, data_dir, resumed_dir, 2, 1, extra=("--resume_from_checkpoint", "True"),
                                        launcher=("--config_file", offload_yaml(work, 2, 2, "nvme", nvme)))
        tail = test_zero.worst_curve_diff(resumed, nvme_losses, range(10, 20)) if len(resumed) == 20 else float("inf")
        check("resumed from" in log and tail <= 1e-6,
              f"nvme offload resumed from checkpoint-10: steps 11..20 vs the uninterrupted run worst rel diff {tail:.2e} <= 1e-6")

        # A swap file changed under the run.
        corrupt_dir = os.path.join(work, "corrupt")
        cmd = sft.ftlaunch_command(model_dir, data_dir, corrupt_dir, 2, 1, extra=("--save_steps", "4"),
                                   launcher=("--config_file", offload_yaml(work, 2, 2, "nvme", nvme)))
        code, text = run(cmd, env=dict(os.environ, FTLAUNCH_TEST_CORRUPT_SWAP_IN_STEP="6"))
        named = [l for l in text.splitlines() if "swap file changed under the run" in l]
        check(code != 0 and named and "CRC-32C" in named[0] and "-optimizer.swap" in named[0],
              f"a flipped byte in a swap file stops the run (exit {code}) with a clear error: {named[:1]}")
        check("step 6/" not in text, "no step after the corruption is logged as done")
        code, verify = run([sft.FTLAUNCH, "verify", os.path.join(corrupt_dir, "checkpoint-4")])
        check(code == 0, f"checkpoint-4 of that run still verifies (exit {code}): {verify.strip()[-200:]}")

        # Bad input.
        missing = os.path.join(work, "no_such_folder")
        code, text = run(sft.ftlaunch_command(model_dir, data_dir, os.path.join(work, "bad1"), 4, 1,
                                              launcher=("--config_file", offload_yaml(work, 2, 1, "nvme", missing, "missing.yaml"))))
        check(code == 2 and "offload_optimizer.nvme_path" in text and missing in text and "does not exist" in text
              and "step 1/" not in text, f"nvme_path missing: exit {code}, named: "
              f"{[l for l in text.splitlines() if 'nvme_path' in l][:1]}")
        code, text = run(sft.ftlaunch_command(model_dir, data_dir, os.path.join(work, "bad3"), 4, 1,
                                              launcher=("--config_file", offload_yaml(work, 0, 1, "cpu"))))
        check(code == 2 and "offload_optimizer_device" in text and "zero_stage 1, 2 or 3" in text,
              f"offload with ZeRO stage 0: exit {code}, {[l for l in text.splitlines() if 'offload' in l][:1]}")
    finish("optimizer offload to host memory and NVMe matches the plain run")


if __name__ == "__main__":
    main()
