"""What people watch a run through, on a tiny model on CPU: metrics.jsonl, TensorBoard event
files, report.html, the SIGUSR1 status block and the record a killed run leaves.

  tensorboard   a 2-rank run with --report_to tensorboard --logging_dir D: TensorBoard's own
                EventAccumulator reads every series (train/loss, train/learning_rate,
                train/grad_norm, train/epoch, train/tokens_per_second, train/mfu, eval/loss,
                eval/perplexity, memory/rank0_peak_gib, memory/rank1_peak_gib) with the values in
                metrics.jsonl (float32: 1e-6 relative) at the same steps
  metrics       metrics.jsonl: one JSON object per line with schema 1: start, schedule, 12 train
                records whose losses equal trainer_state.json's log_history (exact), 2 evals, the
                checkpoints, an end record "completed"
  report        report.html in headless Chromium: the DOM holds one series per metric (and one per
                rank for memory); the screenshot has the series colours where the charts are; the
                browser's network log shows no request but the page itself
  report cmd    `ftlaunch report OUT` rewrites report.html from metrics.jsonl
  default dir   without --logging_dir the events go to OUT/runs/<Mon>DD_HH-MM-SS_<host>/
  wandb         --report_to wandb: a warning that nothing is sent; the run completes
  bad name      --report_to nonsense: exit 2 naming the value, nothing trained
  failed run    a bad --dataset_text_field: metrics.jsonl ends with status failed, exit code 2 and
                the error, and report.html shows them
  SIGUSR1       sent to the launcher mid-run: rank 0 prints one status block, training goes on
  SIGKILL       rank 0 killed mid-run: every whole line of metrics.jsonl parses; the report then
                says the run has no end record
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
from test_sft_systems import args_for, make_inputs_with_eval  # noqa: E402  (tiny model, data, flags)

FTLAUNCH = os.environ["FTLAUNCH"]
# The GPU image has no registry: its python3 may lack tensorboard and it has no Chromium.
OPTIONAL_TOOLS = os.environ.get("FTLAUNCH_USE_SYSTEM_PYTHON") == "1"
SERIES = ["train/loss", "train/learning_rate", "train/grad_norm", "train/epoch", "train/tokens_per_second",
          "train/mfu", "eval/loss", "eval/perplexity", "memory/rank0_peak_gib", "memory/rank1_peak_gib"]
# Tag -> (record kind, field) in metrics.jsonl.
SOURCE = {"train/loss": ("train", "loss"), "train/learning_rate": ("train", "learning_rate"),
          "train/grad_norm": ("train", "grad_norm"), "train/epoch": ("train", "epoch"),
          "train/tokens_per_second": ("train", "tokens_per_second"), "train/mfu": ("train", "mfu"),
          "eval/loss": ("eval", "eval_loss"), "eval/perplexity": ("eval", "eval_perplexity")}


def skip_or_fail(what):
    if OPTIONAL_TOOLS:
        print("skip " + what)
    else:
        check(False, what)


def run(cmd, env=None):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


def two_ranks(cmd):
    return [cmd[0], "--cpu", "--num_processes", "2", *cmd[4:]]


def read_records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def check_tensorboard(tb_dir, records):
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        skip_or_fail("tensorboard: the tensorboard package is not installed (scripts/setup.sh installs it)")
        return
    files = glob.glob(os.path.join(tb_dir, "events.out.tfevents.*"))
    check(len(files) == 1, f"tensorboard: one event file in {tb_dir} (found {len(files)})")
    acc = EventAccumulator(tb_dir, size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    missing = [t for t in SERIES if t not in tags]
    check(not missing, f"tensorboard: every series present (missing {missing})")
    worst = 0.0
    for tag, (kind, field) in SOURCE.items():
        if tag not in tags:
            continue
        expected = {r["step"]: r[field] for r in records if r["kind"] == kind}
        got = {e.step: e.value for e in acc.Scalars(tag)}
        check(sorted(got) == sorted(expected), f"tensorboard: {tag} at the steps of metrics.jsonl ({sorted(got)})")
        for step, value in expected.items():
            if step in got:
                worst = max(worst, abs(got[step] - value) / max(abs(value), 1e-30))
    for rank in (0, 1):
        for name, field in (("peak", "peak_memory_bytes"), ("host", "host_memory_bytes")):
            tag = f"memory/rank{rank}_{name}_gib"
            if tag in tags:
                expected = {r["step"]: r[field][rank] / 2**30 for r in records if r["kind"] == "train"}
                for e in acc.Scalars(tag):
                    worst = max(worst, abs(e.value - expected[e.step]) / expected[e.step])
    check(worst <= 1e-6, f"tensorboard: values equal metrics.jsonl, worst rel diff {worst:.1e} <= 1e-6 (float32)")


def browser():
    return shutil.which("chromium-headless-shell") or shutil.which("chromium")


def check_report_in_browser(report, work):
    exe = browser()
    if not exe:
        skip_or_fail("report: headless Chromium is not installed (scripts/setup.sh installs chromium-headless-shell)")
        return
    url = "file://" + os.path.abspath(report)
    common = [exe, "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1800"]
    dom = run([*common, "--dump-dom", url]).stdout
    for series in ["train/loss", "eval/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_second",
                   "train/mfu", "memory/rank0", "memory/rank1", "eval/perplexity"]:
        count = dom.count(f'data-series="{series}"')
        check(count == 1, f"report: the DOM holds one series {series} (found {count})")
    series_count = dom.count('class="series"')
    check(series_count == 9, f"report: 9 series in all (found {series_count})")
    check('data-points="12"' in dom, "report: the train/loss series has the 12 logged steps")
    shot = os.path.join(work, "report.png")
    netlog = os.path.join(work, "netlog.json")
    run([*common, f"--screenshot={shot}", f"--log-net-log={netlog}", url])
    try:
        from PIL import Image
    except ImportError:
        skip_or_fail("report: pillow is not installed (scripts/setup.sh installs it)")
        return
    image = Image.open(shot).convert("RGB")
    # The charts sit below the summary table: the first series colour (#1f77b4) and the second
    # (#d62728) must be drawn there, and the area must not be blank.
    width, height = image.size
    charts = image.crop((0, height // 5, width, height))
    colours = charts.getcolors(maxcolors=1 << 20) or []
    counts = {rgb: n for n, rgb in colours}
    blue, red = counts.get((0x1f, 0x77, 0xb4), 0), counts.get((0xd6, 0x27, 0x28), 0)
    non_white = sum(n for rgb, n in counts.items() if rgb != (255, 255, 255))
    check(blue > 500 and red > 100, f"report: the screenshot shows the series colours (blue {blue}, red {red} pixels)")
    check(non_white > 0.03 * charts.size[0] * charts.size[1], f"report: the chart area is not blank ({non_white} ink pixels)")
    events = json.load(open(netlog)).get("events", [])
    urls = {e.get("params", {}).get("url") for e in events} - {None}
    outside = sorted(u for u in urls if not u.startswith("file://") and not u.startswith("data:"))
    check(not outside, f"report: no request leaves the page ({outside or 'none'})")


def main():
    with tempfile.TemporaryDirectory() as work:
        model_dir, data_dir, _ = make_inputs_with_eval(work)

        # ---- a complete 2-rank run ----
        out, tb_dir = os.path.join(work, "out"), os.path.join(work, "tb")
        cmd = two_ranks(args_for(model_dir, data_dir, out, extra=(
            "--eval_strategy", "steps", "--eval_steps", "6", "--save_steps", "4", "--report_to", "tensorboard",
            "--logging_dir", tb_dir)))
        proc = run(cmd)
        check(proc.returncode == 0, f"2-rank run with --report_to tensorboard exits 0 (got {proc.returncode})")
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            raise SystemExit(1)
        records = read_records(os.path.join(out, "metrics.jsonl"))
        kinds = [r["kind"] for r in records]
        check(all(r.get("schema") == 1 and "time" in r for r in records), "metrics: every line has schema 1 and a time")
        check(kinds[:2] == ["start", "schedule"] and kinds[-1] == "end", f"metrics: start, schedule ... end ({kinds[:2]}, {kinds[-1]})")
        check(kinds.count("train") == 12 and kinds.count("eval") == 2 and kinds.count("checkpoint") == 3,
              f"metrics: 12 train, 2 eval, 3 checkpoint records (steps 4, 8 and the last, 12) ({kinds.count('train')}, {kinds.count('eval')}, "
              f"{kinds.count('checkpoint')})")
        check(records[-1].get("status") == "completed" and records[-1].get("exit_code") == 0, "metrics: the end record says completed")
        check(records[0]["run"]["launch_plan"]["world_size"] == 2 and "deepspeed_config" in records[0]["run"],
              "metrics: the start record holds the launch plan and the DeepSpeed config")
        history = json.load(open(os.path.join(out, "trainer_state.json")))["log_history"]
        logged = {e["step"]: e["loss"] for e in history if "loss" in e}
        recorded = {r["step"]: r["loss"] for r in records if r["kind"] == "train"}
        check(logged == recorded, "metrics: train losses equal trainer_state.json's log_history")
        train = [r for r in records if r["kind"] == "train"]
        check(all(len(r["peak_memory_bytes"]) == 2 and min(r["peak_memory_bytes"]) > 0 for r in train),
              "metrics: peak memory of both ranks on every train record")
        check(all(len(r["host_memory_bytes"]) == 2 and 0 < r["host_memory_bytes"][k] <= r["peak_memory_bytes"][k]
                  for r in train for k in (0, 1)),
              "metrics: resident host memory of both ranks on every train record, at most the CPU peak")
        check(all(0 < r["mfu"] < 1 and r["tokens_per_second"] > 0 for r in train), "metrics: 0 < mfu < 1, tokens/s > 0")
        check_tensorboard(tb_dir, records)

        report = os.path.join(out, "report.html")
        check(os.path.exists(report), "report: the run wrote report.html")
        page = open(report).read()
        check("<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
              and "https://" not in page, "report: no script and no link to the network in the page")
        check("completed (exit code 0)" in page, "report: says the run completed with exit code 0")
        check_report_in_browser(report, work)
        os.remove(report)
        proc = run([FTLAUNCH, "report", out])
        check(proc.returncode == 0 and os.path.exists(report), f"`ftlaunch report OUT` rewrites report.html (exit {proc.returncode})")

        # ---- default logging folder, online integrations, bad names ----
        out2 = os.path.join(work, "out2")
        proc = run(args_for(model_dir, data_dir, out2, steps=2, extra=("--report_to", "all")))
        runs = glob.glob(os.path.join(out2, "runs", "*", "events.out.tfevents.*"))
        check(proc.returncode == 0 and len(runs) == 1, f"--report_to all, no --logging_dir: events under OUT/runs/<date>_<host>/ ({runs})")
        out3 = os.path.join(work, "out3")
        proc = run(args_for(model_dir, data_dir, out3, steps=2, extra=("--report_to", "wandb")))
        check(proc.returncode == 0 and "wandb" in proc.stderr and "sends nothing" in proc.stderr,
              "--report_to wandb: a warning that nothing is sent, the run completes")
        proc = run(args_for(model_dir, data_dir, os.path.join(work, "out4"), steps=2, extra=("--report_to", "nonsense")))
        check(proc.returncode == 2 and "'nonsense'" in proc.stderr and "tensorboard" in proc.stderr,
              f"--report_to nonsense: exit 2 naming it and the known names (exit {proc.returncode})")

        # ---- a run that fails on its data: the end record and the report say so ----
        out7 = os.path.join(work, "out7")
        proc = run(args_for(model_dir, data_dir, out7, steps=2, extra=("--dataset_text_field", "missing_field")))
        end = read_records(os.path.join(out7, "metrics.jsonl"))[-1]
        check(proc.returncode == 2 and end["kind"] == "end" and end["status"] == "failed" and end["exit_code"] == 2
              and "missing_field" in end["error"], f"failed run: the end record says failed, exit 2, with the error ({end})")
        page = open(os.path.join(out7, "report.html")).read()
        check("failed (exit code 2)" in page and "missing_field" in page, "failed run: report.html shows the status and error")

        # ---- SIGUSR1: a status block, training goes on ----
        out5 = os.path.join(work, "out5")
        launcher = subprocess.Popen(two_ranks(args_for(model_dir, data_dir, out5, steps=300)),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        metrics5 = os.path.join(out5, "metrics.jsonl")
        wait_for_train_lines(metrics5, 3)
        launcher.send_signal(signal.SIGUSR1)
        stdout, stderr = launcher.communicate(timeout=600)
        check(launcher.returncode == 0, f"SIGUSR1: the run goes on and completes (exit {launcher.returncode})")
        blocks = stdout.count("[ftlaunch status] step ")
        check(blocks == 1 and "peak memory: rank 0" in stdout and ", rank 1 " in stdout,
              f"SIGUSR1: rank 0 printed one status block with both ranks' memory ({blocks})")
        check(sum(1 for r in read_records(metrics5) if r["kind"] == "train") == 300, "SIGUSR1: all 300 steps recorded")

        # ---- SIGKILL mid-run: whole lines parse, the report says there is no end ----
        out6 = os.path.join(work, "out6")
        launcher = subprocess.Popen(args_for(model_dir, data_dir, out6, steps=100000),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        metrics6 = os.path.join(out6, "metrics.jsonl")
        wait_for_train_lines(metrics6, 5)
        worker = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
        for pid in worker:
            os.kill(int(pid), signal.SIGKILL)
        launcher.wait(timeout=60)
        check(len(worker) == 1 and launcher.returncode != 0, f"SIGKILL: the worker was killed, the launcher failed ({worker})")
        text = open(metrics6).read()
        whole = text[: text.rfind("\n") + 1].splitlines()
        parsed = [json.loads(line) for line in whole]
        check(len(parsed) >= 7 and all(isinstance(r, dict) for r in parsed),
              f"SIGKILL: all {len(whole)} whole lines of metrics.jsonl parse")
        proc = run([FTLAUNCH, "report", out6])
        check(proc.returncode == 0 and "no end record" in open(os.path.join(out6, "report.html")).read(),
              "SIGKILL: `ftlaunch report` works and says the run has no end record")

    finish("all observability checks passed")


def wait_for_train_lines(path, count, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and sum(1 for r in read_records_lenient(path) if r.get("kind") == "train") >= count:
            return
        time.sleep(0.05)
    raise SystemExit(f"no {count} train records in {path} after {timeout} s")


def read_records_lenient(path):
    with open(path) as f:
        text = f.read()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


if __name__ == "__main__":
    main()
