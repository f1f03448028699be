"""Offload benchmarks, each a ratio against the reference measured in the same run:

  CPU AdamW   ftlaunch's optim::cpu_adamw_update against torch.optim.AdamW (foreach=True and
              fused=True) on the CPU, same parameter count, same threads: parameters per second
              (target >= 2x the faster torch form).
  NVMe engine io::DirectFile (kernel AIO, O_DIRECT) against `dd oflag=direct conv=fdatasync` /
              `dd iflag=direct` on the same folder and bytes: GB/s written and read (target >= 0.8x).

  python bench/bench_offload.py BUILD_DIR [--parameters 50000000] [--threads N] [--folder DIR]
                                          [--bytes 1073741824]
"""
import argparse
import json
import os
import subprocess
import tempfile
import time


def torch_adamw(parameters, threads, repeats, fused):
    import torch
    torch.set_num_threads(threads)
    p = torch.nn.Parameter(torch.randn(parameters))
    p.grad = torch.randn(parameters)
    kwargs = {"fused": True} if fused else {"foreach": True}
    opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.01, **kwargs)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        opt.step()
        best = min(best, time.perf_counter() - start)
    return parameters / best


def dd_rates(folder, size):
    path = os.path.join(folder, f"dd-bench-{os.getpid()}")
    count = size // (1 << 20)
    try:
        start = time.perf_counter()
        subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={count}", "oflag=direct", "conv=fdatasync"],
                       check=True, capture_output=True)
        write = size / (time.perf_counter() - start) / 1e9
        start = time.perf_counter()
        subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=1M", "iflag=direct"], check=True, capture_output=True)
        read = size / (time.perf_counter() - start) / 1e9
    finally:
        if os.path.exists(path):
            os.remove(path)
    return write, read


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build_dir")
    parser.add_argument("--parameters", type=int, default=50_000_000)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--folder", default=tempfile.gettempdir())
    parser.add_argument("--bytes", type=int, default=1 << 30)
    args = parser.parse_args()
    tool = os.path.join(args.build_dir, "bin", "ftl_bench_offload")

    ours = json.loads(subprocess.run([tool, "adamw", str(args.parameters), str(args.threads), str(args.repeats)],
                                     check=True, capture_output=True, text=True).stdout)
    foreach = torch_adamw(args.parameters, args.threads, args.repeats, fused=False)
    try:
        fused = torch_adamw(args.parameters, args.threads, args.repeats, fused=True)
    except (RuntimeError, TypeError) as e:  # an older torch without the CPU fused kernel
        print(f"torch fused AdamW on CPU unavailable: {e}")
        fused = 0.0
    best_torch = max(foreach, fused)
    print(f"CPU AdamW, {args.parameters:,} fp32 parameters, {args.threads} threads (parameters/s, best of {args.repeats}):")
    print(f"  ftlaunch ({ours['form']})      {ours['parameters_per_second'] / 1e6:10.1f} M/s")
    print(f"  torch AdamW foreach=True  {foreach / 1e6:10.1f} M/s")
    print(f"  torch AdamW fused=True    {fused / 1e6:10.1f} M/s")
    print(f"  ratio vs the faster torch form: {ours['parameters_per_second'] / best_torch:.2f}x (target >= 2x)")

    engine = json.loads(subprocess.run([tool, "nvme", args.folder, str(args.bytes), "3", str(1 << 20), "8", "1"],
                                       check=True, capture_output=True, text=True).stdout)
    dd_write, dd_read = max(dd_rates(args.folder, args.bytes) for _ in range(3))
    print(f"NVMe engine, {args.bytes:,} bytes in {args.folder} (GB/s, best of 3; block 1 MiB, queue depth 8, 1 thread):")
    print(f"  ftlaunch ({engine['engine']})  write {engine['write_gb_per_s']:.3f}  read {engine['read_gb_per_s']:.3f}")
    print(f"  dd O_DIRECT             write {dd_write:.3f}  read {dd_read:.3f}")
    print(f"  ratio: write {engine['write_gb_per_s'] / dd_write:.2f}x, read {engine['read_gb_per_s'] / dd_read:.2f}x "
          f"(target >= 0.8x)")


if __name__ == "__main__":
    main()
