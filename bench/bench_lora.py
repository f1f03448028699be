"""LoRA fine-tuning speed and memory: ftlaunch against the HF stack (transformers + PEFT), the same
random-init Llama shapes, the same random token rows and the same settings, measured in one call
(issue 8's harness; DESIGN.md's anchors were taken this way).

  python bench/bench_lora.py BUILD_DIR [--device cuda|cpu] [--shapes 8b:4,1.5b:8] [--steps 8]
         [--warmup 3] [--loss_steps 50] [--threads N] [--qlora] [--offload] [--auto_checkpointing]
         [--embeddings_on_device] [--composite_kernels] [--no_hf] [--prequantized]

Settings on both sides (the anchors'): LoRA r=8, alpha 16, dropout 0.1 on all linears; bf16
(frozen weights in bf16, forward under autocast); SDPA attention; gradient checkpointing
(non-reentrant); AdamW lr 1e-4; max_grad_norm 1.0; rows of the shape's sequence length drawn uniformly from the
vocabulary (a pre-tokenized dataset), no padding. Shapes (name:batch): 8b and 1.5b are DESIGN.md's
(untied 128,256-token vocabulary, seq 2048); tiny (hidden 256, 4 layers, vocabulary 8192, seq 256)
is for the CPU. --qlora adds ftlaunch's QLoRA run of each shape (NF4, nested, bf16 storage and
compute; issue 8's target: >= 0.75x our LoRA's tokens/s); --offload adds its run under the seed's
third configuration on one device (ZeRO-3, optimizer and parameters offloaded to host memory:
parts uploaded ahead of use); --auto_checkpointing adds its run with --gradient_checkpointing auto
(ftlaunch's: the last layers whose activations fit in the device's free memory are not recomputed),
--embeddings_on_device its run with the frozen input embeddings on the device (--embeddings_on_host
False; by default they stay in host memory and each micro-batch's rows are copied up),
--composite_kernels its run with --fused_kernels False (what the fused RMSNorm, SwiGLU and RoPE
kernels and variable-length attention gain), all in a second table against our plain LoRA run. --no_hf leaves out the HF runs and the loss check (a
second call times the variants when one call's device time does not hold everything).
--prequantized (issue 8's scale target: 70B QLoRA on one H200) writes the shape straight as a
bitsandbytes NF4 checkpoint (nested absmax, random codes and scales, 16-bit embeddings, norms and
head) instead of a bf16 one, and times ftlaunch's QLoRA run on it alone: a 70B model's bf16 weights
(140 GB) fit neither the GPU machine's disk nor its GPU, and the HF stack would need them.


tokens/s: over --steps steps after --warmup (ftlaunch: the per-step rates of its metrics.jsonl;
HF: wall time with the device synchronised). Peak memory: the caching allocator's peak allocated
bytes over the whole run on CUDA (both sides read c10's statistics), the peak resident set on CPU;
"estimate": ftlaunch's pre-flight memory estimate for the run (runtime allowance included).
Loss check (--loss_steps > 0; the first shape): both stacks train the same rows in the same order
(ftlaunch's sampler: torch.randperm seeded seed + epoch) for --loss_steps steps. Step 1's loss is
the base model's on the same rows (adapters start at zero); it must agree within 1e-2 relative
(bf16 rounding in different kernels; both load the model in bf16, so both keep the residual stream
in bf16), and the mean of the last
10 steps within 2e-2 (the two stacks draw different dropout masks).

The table is printed last; `scripts/gpu_check.sh` runs this on the GPU machine.
"""
import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 7
SHAPES = {  # hidden, layers, MLP, heads, kv heads, vocabulary, sequence length
    "8b": (4096, 32, 14336, 32, 8, 128256, 2048),
    "1.5b": (2048, 16, 8192, 32, 8, 128256, 2048),
    "70b": (8192, 80, 28672, 64, 8, 128256, 2048),
    "tiny": (256, 4, 1024, 8, 4, 8192, 256),
}
LORA = dict(r=8, lora_alpha=16, lora_dropout=0.1, target_modules="all-linear")
LEARNING_RATE = 1e-4


def make_model(folder, shape, device):
    """A random-init Llama in bf16 (transformers' own init) and a minimal tokenizer, saved to `folder`."""
    import torch
    import transformers

    hidden, layers, mlp, heads, kv_heads, vocab, seq = SHAPES[shape]
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=mlp,
                                      num_hidden_layers=layers, num_attention_heads=heads,
                                      num_key_value_heads=kv_heads, max_position_embeddings=max(seq, 2048),
                                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(SEED)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(folder)
    write_tokenizer(folder)


def make_prequantized(folder, shape):
    """A bitsandbytes NF4 checkpoint with nested absmax (transformers' save_pretrained layout), with
    random codes and scales: the decoder's linears 4-bit, the rest bf16, one file per few layers."""
    import torch
    from safetensors.torch import save_file

    hidden, layers, mlp, heads, kv_heads, vocab, seq = SHAPES[shape]
    head_dim = hidden // heads
    blocksize, nested_blocksize = 64, 256
    torch.manual_seed(SEED)
    os.makedirs(folder, exist_ok=True)
    nested_code = torch.linspace(-1.0, 1.0, 256)

    def four_bit(name, out_features, in_features):
        n = out_features * in_features
        blocks = (n + blocksize - 1) // blocksize
        state = {"quant_type": "nf4", "blocksize": blocksize, "dtype": "bfloat16",
                 "shape": [out_features, in_features], "nested_blocksize": nested_blocksize, "nested_offset": 0.01}
        return {name: torch.randint(0, 256, ((n + 1) // 2, 1), dtype=torch.uint8),
                name + ".absmax": torch.randint(0, 256, (blocks,), dtype=torch.uint8),
                name + ".nested_absmax": torch.rand((blocks + nested_blocksize - 1) // nested_blocksize) * 0.02,
                name + ".nested_quant_map": nested_code.clone(),
                name + ".quant_state.bitsandbytes__nf4": torch.tensor(list(json.dumps(state).encode()), dtype=torch.uint8)}

    def bf16(*shape):
        return (torch.randn(*shape) * 0.02).to(torch.bfloat16)

    index, shard, files = {}, {}, []

    def flush():
        if shard:
            files.append(f"model-{len(files):05d}.safetensors")
            save_file(shard, os.path.join(folder, files[-1]), metadata={"format": "pt"})
            index.update({k: files[-1] for k in shard})
            shard.clear()

    shard["model.embed_tokens.weight"] = bf16(vocab, hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        shard[p + "input_layernorm.weight"] = torch.ones(hidden, dtype=torch.bfloat16)
        shard[p + "post_attention_layernorm.weight"] = torch.ones(hidden, dtype=torch.bfloat16)
        for name, out_f, in_f in (("self_attn.q_proj", heads * head_dim, hidden), ("self_attn.k_proj", kv_heads * head_dim, hidden),
                                  ("self_attn.v_proj", kv_heads * head_dim, hidden), ("self_attn.o_proj", hidden, heads * head_dim),
                                  ("mlp.gate_proj", mlp, hidden), ("mlp.up_proj", mlp, hidden), ("mlp.down_proj", hidden, mlp)):
            shard.update(four_bit(p + name + ".weight", out_f, in_f))
        if i % 8 == 7:
            flush()
    shard["model.norm.weight"] = torch.ones(hidden, dtype=torch.bfloat16)
    shard["lm_head.weight"] = bf16(vocab, hidden)
    flush()
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": index}, f)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab, "hidden_size": hidden,
              "intermediate_size": mlp, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv_heads, "max_position_embeddings": max(seq, 2048), "rms_norm_eps": 1e-5,
              "rope_theta": 500000.0, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
              "torch_dtype": "bfloat16",
              "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
                                      "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                                      "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_storage": "uint8"}}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    write_tokenizer(folder)


def write_tokenizer(folder):
    """Only the ids matter (the dataset is pre-tokenized); ftlaunch reads eos from the tokenizer."""
    import transformers
    from tokenizers import Tokenizer, models
    tok = Tokenizer(models.BPE(vocab={"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3}, merges=[], unk_token="<unk>"))
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                         eos_token="</s>").save_pretrained(folder)


def write_rows(folder, shape, count):
    """`count` rows of random token ids (uniform over the vocabulary), as a pre-tokenized dataset."""
    import torch
    _, _, _, _, _, vocab, seq = SHAPES[shape]
    generator = torch.Generator().manual_seed(SEED)
    rows = torch.randint(0, vocab, (count, seq), generator=generator).tolist()
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "train.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps({"input_ids": r}) + "\n")
    return rows


def batch_order(rows, batch, steps):
    """ftlaunch's sampler on one rank: epoch e deals torch.randperm(n, seed + e)."""
    import torch
    order, epoch = [], 0
    while len(order) < batch * steps:
        order += torch.randperm(rows, generator=torch.Generator().manual_seed(SEED + epoch)).tolist()
        epoch += 1
    return [order[i * batch:(i + 1) * batch] for i in range(steps)]


def hf_worker(args):
    """The HF stack's run, in its own process: prints one JSON line (losses, tokens/s, peak bytes)."""
    import peft
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [json.loads(line)["input_ids"] for line in open(os.path.join(args.data, "train.jsonl"))]
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, attn_implementation="sdpa",
                                                              device_map=args.device)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = peft.get_peft_model(model, peft.LoraConfig(task_type="CAUSAL_LM", **LORA))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE)
    model.train()
    losses, times = [], []
    for indices in batch_order(len(rows), args.batch, args.total_steps):
        ids = torch.tensor([rows[i] for i in indices], device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())  # synchronises
        times.append(time.perf_counter() - start)
    tokens = args.batch * len(rows[0])
    measured = times[args.warmup:]
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps({"losses": losses, "tokens_per_second": tokens * len(measured) / sum(measured),
                      "peak_bytes": peak}))


def run_hf(args, model_dir, data_dir, batch, steps):
    cmd = [sys.executable, os.path.abspath(__file__), "--hf-worker", "--model", model_dir, "--data", data_dir,
           "--batch", str(batch), "--total-steps", str(steps), "--warmup", str(args.warmup), "--device", args.device,
           "--threads", str(args.threads), args.build_dir]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        return None, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), ""


STARTED = time.monotonic()


def progress(shape, batch, name, result, error):
    """One line as soon as a run ends (flushed), with the seconds since the bench started, so that
    a bench cut short by a time limit still leaves what it measured in the log; a failed run's
    output tail at once, not only at the end."""
    gib = 1024 ** 3
    stamp = f"[{time.monotonic() - STARTED:5.0f} s] [{shape} batch {batch}] {name}"
    if result:
        estimate = f", estimate {result['estimate_bytes'] / gib:.1f} GiB" if result.get("estimate_bytes") else ""
        print(f"{stamp}: {result['tokens_per_second']:.0f} tokens/s, peak "
              f"{result['peak_bytes'] / gib:.1f} GiB{estimate}", flush=True)
    else:
        print(f"{stamp}: failed; its output ends:\n{error}", flush=True)


QLORA = ["--use_4bit_quantization", "True", "--use_nested_quant", "True", "--bnb_4bit_quant_type", "nf4",
         "--bnb_4bit_compute_dtype", "bfloat16", "--bnb_4bit_quant_storage_dtype", "bfloat16"]


def offload_launcher(folder, device):
    """An accelerate config for one rank: ZeRO-3 with offload_optimizer and offload_param cpu."""
    path = os.path.join(folder, "zero3_offload.yaml")
    with open(path, "w") as f:
        f.write("distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 3\n  offload_optimizer_device: cpu\n"
                "  offload_param_device: cpu\n  zero3_init_flag: true\nmixed_precision: bf16\nnum_machines: 1\n"
                f"num_processes: 1\nmain_process_port: 0\nuse_cpu: {str(device == 'cpu').lower()}\n")
    return ["--config_file", path]


def run_ftlaunch(args, model_dir, data_dir, out, batch, steps, seq, extra=(), launcher=None):
    launcher = launcher or (["--num_processes", "1", "--main_process_port", "0"] + (["--cpu"] if args.device == "cpu" else []))
    cmd = [os.path.join(args.build_dir, "bin", "ftlaunch"), *launcher, "train", "--model_name_or_path", model_dir,
           "--dataset_name", data_dir, "--splits", "train", "--chat_template_format", "none", "--packing", "False",
           "--max_seq_len", str(seq), "--use_peft_lora", "True", "--lora_r", str(LORA["r"]),
           "--lora_alpha", str(LORA["lora_alpha"]), "--lora_dropout", str(LORA["lora_dropout"]),
           "--lora_target_modules", LORA["target_modules"], "--per_device_train_batch_size", str(batch),
           "--gradient_accumulation_steps", "1", "--gradient_checkpointing", "True", "--bf16", "True",
           "--torch_dtype", "bfloat16",
           "--learning_rate", str(LEARNING_RATE), "--lr_scheduler_type", "constant", "--warmup_steps", "0",
           "--weight_decay", "0.01", "--max_grad_norm", "1.0", "--max_steps", str(steps), "--logging_steps", "1",
           "--save_strategy", "no", "--seed", str(SEED), "--report_to", "none", "--output_dir", out, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=env)
    if proc.returncode != 0:
        return None, (proc.stdout + proc.stderr)[-3000:]
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    train = [r for r in records if r.get("kind") == "train"]
    measured = train[args.warmup:]
    # Rates per step; the harmonic mean is total tokens over total time.
    rate = len(measured) / sum(1.0 / r["tokens_per_second"] for r in measured)
    # The pre-flight's memory estimate for the run, to hold against the measured peak.
    estimate = re.search(r"about ([0-9.]+) GiB per rank needed", proc.stdout + proc.stderr)
    return {"losses": [r["loss"] for r in train], "tokens_per_second": rate,
            "peak_bytes": max(max(r["peak_memory_bytes"]) for r in train),
            "estimate_bytes": float(estimate.group(1)) * 1024 ** 3 if estimate else None}, ""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build_dir")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--shapes", default=None, help="name:batch,... (default 8b:4,1.5b:8 on cuda, tiny:4 on cpu)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--loss_steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--qlora", action="store_true", help="also time ftlaunch's QLoRA run of each shape")
    parser.add_argument("--offload", action="store_true", help="also time it under ZeRO-3 with cpu offload")
    parser.add_argument("--auto_checkpointing", action="store_true", help="also time it with --gradient_checkpointing auto")
    parser.add_argument("--embeddings_on_device", action="store_true", help="also time it with --embeddings_on_host False")
    parser.add_argument("--composite_kernels", action="store_true",
                        help="also time it with --fused_kernels False (the composites of ATen ops, SDPA with a mask)")
    parser.add_argument("--no_hf", action="store_true",
                        help="ftlaunch's runs alone (no HF run, no loss check): the variants' table against our LoRA")
    parser.add_argument("--prequantized", action="store_true",
                        help="write each shape as a random NF4 checkpoint and time ftlaunch's QLoRA run on it alone")
    parser.add_argument("--hf-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--total-steps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hf_worker:
        hf_worker(args)
        return
    shapes = [(s.split(":")[0], int(s.split(":")[1]))
              for s in (args.shapes or ("8b:4,1.5b:8" if args.device == "cuda" else "tiny:4")).split(",")]
    table, problems = [], []
    with tempfile.TemporaryDirectory() as work:
        for index, (shape, batch) in enumerate(shapes):
            seq = SHAPES[shape][6]
            model_dir, data_dir = os.path.join(work, shape, "model"), os.path.join(work, shape, "data")
            print(f"[{time.monotonic() - STARTED:5.0f} s] [{shape}] writing the model", flush=True)
            make = (f"make_prequantized({model_dir!r}, {shape!r})" if args.prequantized
                    else f"make_model({model_dir!r}, {shape!r}, {args.device!r})")
            made = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
                                   f"import bench_lora; bench_lora.{make}"], capture_output=True, text=True)
            if made.returncode != 0:
                sys.exit(f"bench_lora: writing the {shape} model failed:\n{made.stderr[-3000:]}")
            speed_steps = args.warmup + args.steps
            if args.prequantized:  # ftlaunch's QLoRA run alone: no HF run, loss check or variants
                write_rows(data_dir, shape, batch * speed_steps)
                ours, error = run_ftlaunch(args, model_dir, data_dir, os.path.join(work, shape, "out"), batch,
                                           speed_steps, seq)
                progress(shape, batch, "ftlaunch QLoRA", ours, error)
                if error:
                    problems.append(f"{shape}: ftlaunch failed:\n{error}")
                table.append((shape, batch, seq, ours, None, {}))
                shutil.rmtree(os.path.join(work, shape))  # a 70B checkpoint is ~40 GB
                continue
            loss_steps = args.loss_steps if index == 0 and not args.no_hf else 0
            steps = max(speed_steps, loss_steps)
            write_rows(data_dir, shape, batch * steps)
            ours, error = run_ftlaunch(args, model_dir, data_dir, os.path.join(work, shape, "out"), batch, steps, seq)
            progress(shape, batch, "ftlaunch LoRA", ours, error)
            if error:
                problems.append(f"{shape}: ftlaunch failed:\n{error}")
            ref, ref_error = run_hf(args, model_dir, data_dir, batch, steps) if not args.no_hf else (None, "")
            if not args.no_hf:
                progress(shape, batch, "HF stack", ref, ref_error)
            if ref_error:
                problems.append(f"{shape}: the HF stack failed:\n{ref_error}")
            variants = {}
            if args.qlora:
                variants["QLoRA"] = dict(extra=QLORA)
            if args.auto_checkpointing:
                variants["checkpointing auto"] = dict(extra=["--gradient_checkpointing", "auto"])
            if args.embeddings_on_device:
                variants["embeddings on device"] = dict(extra=["--embeddings_on_host", "False"])
            if args.composite_kernels:
                variants["composite kernels"] = dict(extra=["--fused_kernels", "False"])
            if args.offload:  # the slowest, last
                variants["ZeRO-3 offload"] = dict(launcher=offload_launcher(os.path.join(work, shape), args.device))
            for name, how in variants.items():
                out = os.path.join(work, shape, "out_" + name.replace(" ", "_"))
                variants[name], error = run_ftlaunch(args, model_dir, data_dir, out, batch, speed_steps, seq, **how)
                progress(shape, batch, f"ftlaunch {name}", variants[name], error)
                if error:
                    problems.append(f"{shape}: ftlaunch {name} failed:\n{error}")
            table.append((shape, batch, seq, ours, ref, variants))
            if loss_steps and ours and ref:
                first = abs(ours["losses"][0] - ref["losses"][0]) / ref["losses"][0]
                tail_ours, tail_ref = (sum(x["losses"][-10:]) / len(x["losses"][-10:]) for x in (ours, ref))
                tail = abs(tail_ours - tail_ref) / tail_ref
                verdict = "ok" if first <= 1e-2 and tail <= 2e-2 else "DIFFER"
                print(f"loss check ({shape}, {loss_steps} steps): step 1 {ours['losses'][0]:.4f} vs {ref['losses'][0]:.4f} "
                      f"(rel {first:.1e}, bound 1e-2); mean of the last 10 {tail_ours:.4f} vs {tail_ref:.4f} "
                      f"(rel {tail:.1e}, bound 2e-2): {verdict}")
                if verdict != "ok":
                    problems.append(f"{shape}: the loss curves differ beyond bf16 noise")
    for problem in problems:
        print(problem)
    gib = 1024 ** 3
    print(f"\n{'QLoRA (NF4 checkpoint, no HF run)' if args.prequantized else 'LoRA'} r8 all-linear, bf16, gradient "
          f"checkpointing, device {args.device}, {args.steps} steps after {args.warmup} warm-up ('-': not run or failed)")
    print(f"{'shape':>6} {'batch':>5} {'seq':>5} | {'HF tok/s':>9} {'ours tok/s':>10} {'ratio':>6} | "
          f"{'HF GiB':>7} {'ours GiB':>8} {'ratio':>6} {'estimate':>8}")

    def cell(x, key, scale=1.0, fmt="{:.0f}"):
        return fmt.format(x[key] / scale) if x else "-"

    def ratio(a, b, key):
        return f"{a[key] / b[key]:.2f}" if a and b else "-"

    for shape, batch, seq, ours, ref, _ in table:
        print(f"{shape:>6} {batch:>5} {seq:>5} | {cell(ref, 'tokens_per_second'):>9} {cell(ours, 'tokens_per_second'):>10} "
              f"{ratio(ours, ref, 'tokens_per_second'):>6} | {cell(ref, 'peak_bytes', gib, '{:.1f}'):>7} "
              f"{cell(ours, 'peak_bytes', gib, '{:.1f}'):>8} {ratio(ours, ref, 'peak_bytes'):>6} "
              f"{cell(ours, 'estimate_bytes', gib, '{:.1f}') if ours and ours['estimate_bytes'] else '-':>8}")
    if any(variants for *_, variants in table):
        print(f"\nftlaunch's other runs against its plain LoRA run")
        print(f"{'shape':>6} {'batch':>5} {'run':>18} | {'tok/s':>7} {'ratio':>6} | {'GiB':>6} {'ratio':>6}")
        for shape, batch, seq, ours, ref, variants in table:
            for name, result in variants.items():
                print(f"{shape:>6} {batch:>5} {name:>18} | {cell(result, 'tokens_per_second'):>7} "
                      f"{ratio(result, ours, 'tokens_per_second'):>6} | {cell(result, 'peak_bytes', gib, '{:.1f}'):>6} "
                      f"{ratio(result, ours, 'peak_bytes'):>6}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
