"""Checkpoint integrity: manifests, `ftlaunch verify`, refusals, and a disk that fills while saving.

A 1-rank LoRA run of test_sft_parity's case (12 steps, a checkpoint every 4) writes checkpoint-4
and checkpoint-8, each with manifest.json (sizes and CRC-32C of every file, the run's identity).
  verify      `ftlaunch verify checkpoint-8`: exit 0, every file counted
  corrupt     one byte of optimizer.safetensors flipped: verify exits 2 naming the file and its
              CRC-32C; --resume_from_checkpoint on it exits 2 with the same message, no step run
  missing     adapter_model.safetensors deleted: refused (verify and resume), naming it
  partial     manifest.json deleted (a copy interrupted before its last file): refused
  foreign     resuming with another base model (config.json differs) or another LoRA rank:
              exit 2 naming what differs, before any step
  model only  --save_only_model True: checkpoint-8 holds the adapter, the tokenizer, trainer_state.json and the
              manifest, no optimizer or generator state (as the Trainer then writes no
              optimizer/scheduler/RNG files); the curve is the same bit for bit; verify passes; a
              resume from it exits 2 naming --save_only_model, before any step
  disk full   the run's output_dir on a tmpfs sized to hold checkpoint-4 but not checkpoint-8
              (mounted in a private mount namespace): the run stops with exit 1 and a message
              naming the file and the full disk; no partial checkpoint-8 or
              temporary folder remains; checkpoint-4 still verifies, and resuming from a copy of
              it finishes the run with the uninterrupted curve (1e-6)
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

FTLAUNCH = sft.FTLAUNCH
SAVE = ("--save_steps", "4", "--max_steps", "12")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


def losses(out):
    state = json.load(open(os.path.join(out, "trainer_state.json")))
    return [e["loss"] for e in state["log_history"] if "loss" in e]


def refused(label, ckpt, needle, model_dir, data_dir, work, extra=(), verifies=False):
    """Resuming from `ckpt` exits 2 naming `needle` before any step; `ftlaunch verify` refuses it
    too (exit 2 naming `needle`), or with `verifies` passes it (a sound checkpoint that cannot resume)."""
    v = run([FTLAUNCH, "verify", ckpt])
    if verifies:
        check(v.returncode == 0, f"{label}: ftlaunch verify exits {v.returncode}")
    elif not extra:
        check(v.returncode == 2 and needle in v.stderr, f"{label}: ftlaunch verify exits {v.returncode} naming {needle!r}: "
                                                        f"{v.stderr.strip()[-200:]}")
    out = os.path.join(work, "resume_" + label)
    cmd = sft.ftlaunch_command(model_dir, data_dir, out, 4, 1, extra=SAVE + ("--resume_from_checkpoint", ckpt) + extra)
    r = run(cmd)
    stepped = os.path.exists(os.path.join(out, "trainer_state.json"))
    check(r.returncode == 2 and needle in r.stderr + r.stdout and not stepped,
          f"{label}: resume exits {r.returncode} naming {needle!r}, no step run")


def main():
    with tempfile.TemporaryDirectory() as work:
        model_dir, data_dir, _ = sft.make_inputs(work)
        out = os.path.join(work, "run")
        whole, _ = sft.run_ftlaunch(model_dir, data_dir, out, 4, 1, extra=SAVE)
        ckpt = os.path.join(out, "checkpoint-8")
        v = run([FTLAUNCH, "verify", ckpt])
        files = len(json.load(open(os.path.join(ckpt, "manifest.json")))["files"])
        check(v.returncode == 0 and f"ok, {files} files" in v.stderr + v.stdout and files >= 5,
              f"ftlaunch verify checkpoint-8: exit {v.returncode}, {files} files listed")

        def copy(label):
            dst = os.path.join(work, "copies", label, "checkpoint-8")
            shutil.copytree(ckpt, dst)
            return dst

        bad = copy("corrupt")
        with open(os.path.join(bad, "optimizer.safetensors"), "r+b") as f:
            f.seek(os.path.getsize(os.path.join(bad, "optimizer.safetensors")) // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x10]))
        refused("corrupt", bad, "'optimizer.safetensors' has CRC-32C", model_dir, data_dir, work)
        missing = copy("missing")
        os.remove(os.path.join(missing, "adapter_model.safetensors"))
        refused("missing", missing, "'adapter_model.safetensors' is listed in manifest.json but missing", model_dir, data_dir, work)
        partial = copy("partial")
        os.remove(os.path.join(partial, "manifest.json"))
        refused("partial", partial, "no manifest.json", model_dir, data_dir, work)

        other_model = os.path.join(work, "other_model")
        shutil.copytree(model_dir, other_model)
        config = json.load(open(os.path.join(other_model, "config.json")))
        config["rms_norm_eps"] = 1e-5
        json.dump(config, open(os.path.join(other_model, "config.json"), "w"))
        out_other = os.path.join(work, "resume_other_model")
        r = run(sft.ftlaunch_command(other_model, data_dir, out_other, 4, 1,
                                     extra=SAVE + ("--resume_from_checkpoint", ckpt)))
        check(r.returncode == 2 and "another base model" in r.stderr + r.stdout
              and not os.path.exists(os.path.join(out_other, "trainer_state.json")),
              f"another base model: resume exits {r.returncode} naming it")
        refused("lora_r", ckpt, 'adapter {"lora_alpha"', model_dir, data_dir, work, extra=("--lora_r", "8"))

        only = os.path.join(work, "model_only")
        only_losses, _ = sft.run_ftlaunch(model_dir, data_dir, only, 4, 1, extra=SAVE + ("--save_only_model", "True"))
        only_ckpt = os.path.join(only, "checkpoint-8")
        files = sorted(os.listdir(only_ckpt))
        check(files == ["adapter_config.json", "adapter_model.safetensors", "manifest.json", "tokenizer.json",
                        "tokenizer_config.json", "trainer_state.json"]
              and only_losses == whole, f"--save_only_model: checkpoint-8 holds {files}, the curve unchanged")
        refused("model_only", only_ckpt, "--save_only_model", model_dir, data_dir, work, verifies=True)

        check_disk_full(work, model_dir, data_dir, out, whole)
    finish("checkpoints are verified and a full disk loses nothing")


def check_disk_full(work, model_dir, data_dir, reference_out, whole):
    """Size a tmpfs from the reference run: what the run holds just before checkpoint-8 (from a
    5-step run: checkpoint-4, the tokenised rows and metrics.jsonl; the final weights, state and
    report come only at the end) plus half of a checkpoint."""
    probe = os.path.join(work, "probe")
    sft.run_ftlaunch(model_dir, data_dir, probe, 4, 1, extra=("--save_steps", "4", "--max_steps", "5"))

    def du(path):
        return int(run(["du", "-s", "--block-size=1", path]).stdout.split()[0])

    used = sum(du(os.path.join(probe, name)) for name in ("checkpoint-4", "tokenized", "metrics.jsonl"))
    checkpoint = du(os.path.join(reference_out, "checkpoint-8"))
    size_kib = (used + checkpoint // 2) // 1024
    mount = os.path.join(work, "small_disk")
    os.makedirs(mount)
    out = os.path.join(mount, "run")
    rescued = os.path.join(work, "rescued")
    cmd = " ".join(sft.ftlaunch_command(model_dir, data_dir, out, 4, 1, extra=SAVE))
    script = f"""
mount -t tmpfs -o size={size_kib}k ftl_small_disk {mount} || exit 90
{cmd} >{work}/full.out 2>{work}/full.err
echo "train_rc=$?"
ls -a {out}
{FTLAUNCH} verify {out}/checkpoint-4 >/dev/null 2>&1 && echo "verify4=ok"
cp -r {out}/checkpoint-4 {rescued}
"""
    proc = run(["unshare", "-Urm", "bash", "-c", script])
    err = open(os.path.join(work, "full.err")).read() if os.path.exists(os.path.join(work, "full.err")) else ""
    lines = proc.stdout.split()
    check(proc.returncode != 90, f"a {size_kib} KiB tmpfs mounted in a private mount namespace ({proc.stderr.strip()[-200:]})")
    full = "No space left on device" in err or "disk full" in err
    check("train_rc=1" in lines and full and "checkpoint-8" in err,
          f"the run stops with exit 1 naming the file and the full disk: {err.strip().splitlines()[-1:] if err else proc.stdout}")
    check("checkpoint-4" in lines and "checkpoint-8" not in lines and not any(x.startswith(".checkpoint-") for x in lines),
          f"only checkpoint-4 remains, no partial or temporary folder: {lines}")
    check("verify4=ok" in lines, "checkpoint-4 still verifies on the full disk")
    resumed_out = os.path.join(work, "after_full")
    resumed, _ = sft.run_ftlaunch(model_dir, data_dir, resumed_out, 4, 1,
                                  extra=SAVE + ("--resume_from_checkpoint", rescued))
    diff = max(abs(a - b) / abs(b) for a, b in zip(resumed[4:], whole[4:])) if len(resumed) == 12 else float("inf")
    check(diff <= 1e-6, f"resuming from the rescued checkpoint-4 gives steps 5..12 of the whole run (rel diff {diff:.1e})")


if __name__ == "__main__":
    main()
