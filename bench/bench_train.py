"""Training speed of a CPU LoRA step: ftlaunch against transformers + peft, same model, same rows,
same batches, same thread count, measured in the same run.

  python bench/bench_train.py BUILD_DIR [--steps 30] [--threads 2]

The model is the quickstart's (scripts/make_tiny_assets.py: llama, 4 layers, hidden 256, ~4M
parameters); the dataset is texts of 150-250 tokens, unpacked, batch 4 x accumulation 1, LoRA r=8
on all linears, fp32, AdamW, clipping. Both sides run the same batches in the same order
(ftlaunch's documented sampler) and report real (non-padding) tokens per second over all steps.
Prints both figures and the ratio ftlaunch / reference (higher is better for ftlaunch).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import torch
import transformers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build_dir")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    ftlaunch = os.path.join(args.build_dir, "bin", "ftlaunch")
    with tempfile.TemporaryDirectory() as work:
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_tiny_assets.py"), work], check=True,
                       capture_output=True)
        model_dir = os.path.join(work, "model")
        tok = transformers.AutoTokenizer.from_pretrained(model_dir)
        words = open(os.path.join(ROOT, "README.md")).read().split()
        texts, i = [], 0
        while len(texts) < 64:
            n = 150 + (len(texts) * 37) % 100
            piece = " ".join(words[i:i + n])
            i = (i + n) % max(1, len(words) - 300)
            ids = tok(piece, add_special_tokens=False)["input_ids"][:250]
            texts.append(tok.decode(ids))
        data_dir = os.path.join(work, "data")
        os.makedirs(data_dir)
        with open(os.path.join(data_dir, "train.jsonl"), "w") as f:
            for t in texts:
                f.write(json.dumps({"text": t}) + "\n")
        common = ["--splits", "train", "--max_seq_len", "512", "--use_peft_lora", "True", "--lora_r", "8",
                  "--lora_alpha", "16", "--lora_dropout", "0", "--lora_target_modules", "all-linear",
                  "--learning_rate", "1e-3", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
                  "--max_steps", str(args.steps), "--logging_steps", str(args.steps), "--bf16", "False", "--seed", "5",
                  "--gradient_checkpointing", "False"]  # SFTConfig's default is True; the reference keeps activations
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        out = subprocess.run([ftlaunch, "--cpu", "--num_processes", "1", "train", "--model_name_or_path", model_dir,
                              "--dataset_name", data_dir, "--output_dir", os.path.join(work, "out"), *common],
                             capture_output=True, text=True, env=env, check=True).stdout
        ours = float(re.findall(r"tokens/s ([0-9.e+]+)", out)[-1])

        torch.set_num_threads(args.threads)
        import peft
        rows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        torch.manual_seed(5)
        model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                            target_modules="all-linear", task_type="CAUSAL_LM"))
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-3)
        order = []
        epoch = 0
        while len(order) < args.steps * 4:
            order += torch.randperm(len(rows), generator=torch.Generator().manual_seed(5 + epoch)).tolist()
            epoch += 1
        pad = tok.eos_token_id
        tokens = 0
        start = time.perf_counter()
        for step in range(args.steps):
            batch = [rows[j] for j in order[step * 4:(step + 1) * 4]]
            length = max(len(r) for r in batch)
            ids = torch.tensor([r + [pad] * (length - len(r)) for r in batch])
            mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in batch])
            labels = torch.tensor([r + [-100] * (length - len(r)) for r in batch])
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad()
            tokens += int(mask.sum())
        reference = tokens / (time.perf_counter() - start)
    print(f"{'CPU LoRA step, ' + str(args.threads) + ' threads':<34}{'reference':>14}{'ftlaunch':>14}{'ratio':>8}")
    print(f"{'tokens/s (real tokens)':<34}{reference:>14.0f}{ours:>14.0f}{ours / reference:>8.2f}")
    print(f"train_speed_ratio {ours / reference:.3f} (ftlaunch tokens/s / transformers+peft tokens/s)")


if __name__ == "__main__":
    main()
