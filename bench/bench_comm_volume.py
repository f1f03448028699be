"""Communication volume per training step and rank, by ZeRO stage, against the volumes the ZeRO
paper (Rajbhandari et al. 2020, section 7) gives: data parallel all-reduces the gradients, 2Ψ per
step; stages 1 and 2 reduce-scatter the gradients and all-gather the updated parameters, also 2Ψ;
stage 3 all-gathers the parameters in forward and again in backward and reduce-scatters the
gradients, 3Ψ (1.5x data parallel). Ψ = bytes of the parameters concerned; every figure is the
ring algorithm's share, (n-1)/n of the buffer, as ftlaunch's counting communicator counts it.

  python bench/bench_comm_volume.py BUILD_DIR [--ranks 2 4]

The quickstart model (scripts/make_tiny_assets.py) on CPU ranks, fp32, 6 steps, no accumulation:
  - full fine-tuning, stages 0-2: expected 2Ψ; stage 3: every part gathered in forward (Ψ), each
    decoder layer again in backward's recompute (Ψ_layers), and every gradient reduce-scattered
    (Ψ): 2Ψ + Ψ_layers, against DeepSpeed's 3Ψ (which also gathers the embeddings and head again
    in backward);
  - LoRA, stages 0-3: expected 2Ψ_adapter for stages 0-2; stage 3 also gathers the partitioned
    base weights (tensors of >= 1e5 elements, DeepSpeed's default persistence threshold): a
    layer's in forward and again in backward's recompute, the embeddings and head once, and never
    reduces their (absent) gradients -- at most 2Ψ_base, against DeepSpeed's 3Ψ for the model.
Prints measured bytes, the model's bytes and their ratio (1.00 = exactly the model's volume; the
small excess is the per-step loss and token-count all-reduces).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

from safetensors import safe_open

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def yaml_for(work, stage, ranks):
    path = os.path.join(work, f"z{stage}_{ranks}.yaml")
    with open(path, "w") as f:
        f.write(f"distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: {stage}\n  gradient_accumulation_steps: 1\n"
                f"  offload_optimizer_device: none\n  offload_param_device: none\nmixed_precision: 'no'\n"
                f"num_machines: 1\nnum_processes: {ranks}\nmain_process_port: 0\nuse_cpu: true\n")
    return path


def run(ftlaunch, work, model_dir, data_dir, stage, ranks, lora):
    out = os.path.join(work, f"out_{stage}_{ranks}_{lora}")
    cmd = [ftlaunch, "--config_file", yaml_for(work, stage, ranks), "train", "--model_name_or_path", model_dir,
           "--dataset_name", data_dir, "--splits", "train", "--chat_template_format", "none", "--max_seq_len", "256",
           "--use_peft_lora", str(lora), "--lora_r", "8", "--lora_alpha", "16", "--lora_target_modules", "all-linear",
           "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1", "--max_steps", "6",
           "--logging_steps", "6", "--save_strategy", "no", "--bf16", "False", "--gradient_checkpointing", "False",
           "--output_dir", out]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"ftlaunch failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    m = re.search(r"communication per training step and rank: ([\d.e+]+) bytes \(all-reduce ([\d.e+]+), "
                  r"all-gather ([\d.e+]+), reduce-scatter ([\d.e+]+)", proc.stdout)
    return [float(x) for x in m.groups()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build_dir")
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    args = parser.parse_args()
    ftlaunch = os.path.join(args.build_dir, "bin", "ftlaunch")
    with tempfile.TemporaryDirectory() as work:
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_tiny_assets.py"), work], check=True,
                       capture_output=True)
        model_dir, data_dir = os.path.join(work, "model"), os.path.join(work, "data")
        os.makedirs(data_dir)
        words = open(os.path.join(ROOT, "README.md")).read().split()
        with open(os.path.join(data_dir, "train.jsonl"), "w") as f:
            for i in range(64):
                f.write(json.dumps({"text": " ".join(words[i * 40:(i + 1) * 40])}) + "\n")
        with safe_open(os.path.join(model_dir, "model.safetensors"), "pt") as f:
            sizes = {k: 4 * _numel(f.get_slice(k).get_shape()) for k in f.keys()}
        base_bytes = sum(sizes.values())
        # Under stage 3 with LoRA, tensors of >= 1e5 elements (DeepSpeed's default persistence
        # threshold) are partitioned; a decoder layer's are gathered twice per step (forward, and the
        # recompute in backward), the embeddings and the head once (their frozen weights need no
        # backward gather: the loss's gradient w.r.t. the hidden states is made in forward).
        partitioned = {k: b for k, b in sizes.items() if b // 4 >= 100000}
        gathered = sum(2 * b if k.startswith("model.layers.") else b for k, b in partitioned.items())
        layer_bytes = sum(b for k, b in sizes.items() if k.startswith("model.layers."))
        adapter_bytes = 4 * _lora_parameters(json.load(open(os.path.join(model_dir, "config.json"))), r=8)
        print(f"model: {base_bytes / 4:.0f} parameters, LoRA r=8 on all linears {adapter_bytes / 4:.0f}")
        print("ranks  job   stage  measured MiB  model MiB  ratio   (all-reduce / all-gather / reduce-scatter MiB)")
        for ranks in args.ranks:
            for lora in (False, True):
                for stage in range(4):
                    total, reduce, gather, scatter = run(ftlaunch, work, model_dir, data_dir, stage, ranks, lora)
                    share = (ranks - 1) / ranks
                    if lora:
                        model = 2 * share * adapter_bytes + (share * gathered if stage == 3 else 0)
                    elif stage == 3:
                        model = share * (2 * base_bytes + layer_bytes)
                    else:
                        model = 2 * share * base_bytes
                    print(f"{ranks:5d}  {'LoRA' if lora else 'full':4s}  {stage:5d}  {total / 2**20:12.3f}  "
                          f"{model / 2**20:9.3f}  {total / model:5.2f}   ({reduce / 2**20:.3f} / {gather / 2**20:.3f} / "
                          f"{scatter / 2**20:.3f})")


def _lora_parameters(config, r):
    """r x (in + out) for q, k, v, o, gate, up and down in every layer (PEFT's all-linear)."""
    h, i = config["hidden_size"], config["intermediate_size"]
    d = config.get("head_dim") or h // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * d, config.get("num_key_value_heads", config["num_attention_heads"]) * d
    per_layer = r * ((h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h))
    return config["num_hidden_layers"] * per_layer


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    main()
