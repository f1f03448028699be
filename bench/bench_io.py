"""Loading and tokenizing speed, ftlaunch against the Python reference, measured in the same run.

  python bench/bench_io.py BUILD_DIR [--load_gb 1.0] [--text_mb 50]

1. Loading: a safetensors file of --load_gb GB (bf16 [4096, 4096] tensors), best of 3 each, page
   cache warm for both (the file was just written):
     views  safetensors.torch.load_file (mmap-backed tensors) vs ftlaunch's mapped tensors;
     copies the same plus a private copy of every tensor (.clone()): every byte read and written.
   Target: ftlaunch time / safetensors time <= 1.5 (the copies row is the one that measures work).
2. Tokenizing: --text_mb MB of real text (the Python sources and docs of the installed packages,
   cut into documents of at most 8 KB) is encoded by HF tokenizers (encode_batch with
   TOKENIZERS_PARALLELISM=false: one thread) and by ftl_bench_io (one thread), with a 32k byte-level
   BPE trained here with the Llama-3 split regex. Ids are checked equal first.
   Target: ftlaunch time / tokenizers time <= 1.0.
Prints a table; the last lines are the two ratios.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def best_of(n, fn):
    best = float("inf")
    for _ in range(n):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run_cpp(args):
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench_load(tool, work, gigabytes):
    path = os.path.join(work, "weights.safetensors")
    n = max(1, int(gigabytes * (1 << 30) / (4096 * 4096 * 2)))
    g = torch.Generator().manual_seed(0)
    save_file({f"layer.{i}.weight": torch.randn(4096, 4096, generator=g).to(torch.bfloat16) for i in range(n)}, path)
    size = os.path.getsize(path)
    ref_views = best_of(3, lambda: load_file(path))
    ref_copies = best_of(3, lambda: [t.clone() for t in load_file(path).values()])
    ours = run_cpp([tool, "load", path, "3"])
    os.remove(path)
    return size, ref_views, ours["views_seconds"], ref_copies, ours["copy_seconds"]


def text_corpus(megabytes):
    roots = {os.path.dirname(os.path.dirname(torch.__file__))}
    files = sorted(f for r in roots for f in glob.glob(os.path.join(r, "**", "*.py"), recursive=True))
    docs, total = [], 0
    for f in files:
        try:
            text = open(f, encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue
        while text and total < megabytes * 1e6:
            cut = text.rfind("\n", 0, 8192) + 1 if len(text) > 8192 else len(text)
            cut = cut or min(len(text), 8192)
            docs.append(text[:cut])
            total += len(text[:cut].encode())
            text = text[cut:]
        if total >= megabytes * 1e6:
            break
    return docs, total


def bench_tokenize(tool, work, megabytes):
    docs, total = text_corpus(megabytes)
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=32000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(docs[: max(1, len(docs) // 6)], trainer)
    tok_path, docs_path = os.path.join(work, "tokenizer.json"), os.path.join(work, "docs.jsonl")
    tok.save(tok_path)
    with open(docs_path, "w") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    sample = tok.encode_batch(docs[:200])
    probe = os.path.join(os.path.dirname(tool), "ftl_tokenizer_probe")
    if os.path.exists(probe):  # the speed race only counts if the ids are the same
        sample_path = os.path.join(work, "sample.jsonl")
        with open(sample_path, "w") as f:
            for d in docs[:200]:
                f.write(json.dumps(d) + "\n")
        subprocess.run([probe, "encode", tok_path, sample_path, sample_path + ".out"], check=True)
        ours_ids = [json.loads(l)["ids"] for l in open(sample_path + ".out")]
        if ours_ids != [e.ids for e in sample]:
            sys.exit("tokenizer ids differ from HF tokenizers; the benchmark is void")
    tokens_ref = [0]

    def ref_run():
        tokens_ref[0] = sum(len(e.ids) for e in tok.encode_batch(docs))
    ref = best_of(2, ref_run)
    ours = run_cpp([tool, "tokenize", tok_path, docs_path, "2"])
    return total, ref, ours["seconds"], tokens_ref[0], ours["tokens"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build_dir")
    parser.add_argument("--load_gb", type=float, default=1.0)
    parser.add_argument("--text_mb", type=float, default=50.0)
    args = parser.parse_args()
    tool = os.path.join(args.build_dir, "bin", "ftl_bench_io")
    with tempfile.TemporaryDirectory(dir=os.environ.get("FTL_BENCH_TMP")) as work:
        size, ref_views, ours_views, ref_load, ours_load = bench_load(tool, work, args.load_gb)
        text_bytes, ref_tok, ours_tok, ref_tokens, our_tokens = bench_tokenize(tool, work, args.text_mb)
    print(f"{'benchmark':<34}{'reference':>14}{'ftlaunch':>14}{'ratio':>8}")
    print(f"{'open %.2f GB, views (s)' % (size / 1e9):<34}{ref_views:>14.4f}{ours_views:>14.4f}"
          f"{ours_views / ref_views:>8.2f}")
    print(f"{'load %.2f GB, copies (s)' % (size / 1e9):<34}{ref_load:>14.3f}{ours_load:>14.3f}"
          f"{ours_load / ref_load:>8.2f}")
    print(f"{'tokenize %.1f MB, 1 thread (s)' % (text_bytes / 1e6):<34}{ref_tok:>14.3f}{ours_tok:>14.3f}"
          f"{ours_tok / ref_tok:>8.2f}")
    print(f"  throughput: tokenizers {text_bytes / ref_tok / 1e6:.1f} MB/s, ftlaunch {text_bytes / ours_tok / 1e6:.1f} MB/s;"
          f" tokens {ref_tokens} vs {our_tokens}")
    print(f"load_ratio {ours_load / ref_load:.3f} (copies; target <= 1.5); views {ours_views / ref_views:.3f}")
    print(f"tokenize_ratio {ours_tok / ref_tok:.3f} (target <= 1.0)")


if __name__ == "__main__":
    main()
