"""Model folders ftlaunch writes, checked against transformers and PEFT (CPU, fp32 unless said).

  merge          a LoRA adapter trained under ZeRO-3 on 2 ranks, merged by `ftlaunch merge`, loads in
                 transformers and equals PEFT's merge_and_unload() of the same adapter: every tensor
                 within 1e-5 of its largest value, logits within 1e-5
  merge bf16     --torch_dtype bfloat16 --max_shard_size 100KB: shards + index that transformers
                 loads; every tensor equals PEFT's fp32 merge cast to bf16 exactly
  embeddings     a PEFT adapter that carries resized embed_tokens / lm_head (PEFT saves them when the
                 vocabulary grew), with a rank_pattern and an alpha_pattern (each module its own
                 scaling): the merge takes them, config.json gets the new vocab_size, and it equals
                 PEFT's merge of the resized model (1e-5)
  chat vocab     a chatml run under ZeRO-3 on 2 ranks (vocabulary resized for the chat tokens) saves
                 embed_tokens and lm_head in its adapter as PEFT does (gathered from the partitions);
                 its merge equals PEFT's merge of the resized base with that adapter (1e-5)
  families       gemma2, phi3 (fused qkv_proj / gate_up_proj) and olmo3 LoRA runs merged: every tensor and the
                 logits within 1e-5 of PEFT's merge_and_unload()
  bad merges     the adapter folder as --output_dir, an adapter of another base model: exit 2 naming
                 the problem, nothing written
  16-bit save    full fine-tuning under ZeRO-3 on 2 ranks with zero3_save_16bit_model: output_dir is a
                 model folder transformers loads; without mixed precision its fp32 weights equal the
                 single-rank run's (1e-5); with --bf16 True the file holds bfloat16 weights, exactly the
                 fp32 weights the same run writes without the flag, cast
"""
import json
import os
import subprocess
import sys
import tempfile

import torch
import transformers

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
from test_sft_systems import args_for, make_inputs_with_eval  # noqa: E402
from test_zero import zero_config  # noqa: E402

import peft  # noqa: E402

FTLAUNCH = os.environ["FTLAUNCH"]


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def zero3_yaml(work, ranks, save_16bit):
    return zero_config(work, 3, ranks, 2, ("zero3_init_flag: true", f"zero3_save_16bit_model: {str(save_16bit).lower()}"))


def state_diff(a, b):
    """Worst over tensors of max |a - b| / max |b|, and the names that differ in presence or shape."""
    problems = sorted(set(a) ^ set(b)) + [k for k in a if k in b and a[k].shape != b[k].shape]
    worst = max(((a[k].double() - b[k].double()).abs().max() / b[k].double().abs().max().clamp_min(1e-30)).item()
                for k in a if k in b and a[k].shape == b[k].shape)
    return worst, problems


def peft_merged(base_dir, adapter_dir, resize_to=None):
    base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if resize_to:
        base.resize_token_embeddings(resize_to)
    return peft.PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()


def logits_diff(model_a, model_b, vocab):
    ids = torch.arange(3, 3 + 24).remainder(vocab).reshape(2, 12)
    with torch.no_grad():
        a, b = model_a(ids).logits, model_b(ids).logits
    return ((a - b).abs().max() / b.abs().max()).item()


def full_finetune(model_dir, data_dir, out, launcher, bf16, batch):
    """6 steps of full fine-tuning, accumulation 2; `batch` per rank, so that batch x ranks is 2."""
    cmd = args_for(model_dir, data_dir, out, steps=6)
    cmd = [FTLAUNCH, *launcher, *cmd[4:]]
    cmd[cmd.index("--per_device_train_batch_size") + 1] = str(batch)
    cmd[cmd.index("--use_peft_lora") + 1] = "False"
    cmd[cmd.index("--bf16") + 1] = "True" if bf16 else "False"
    cmd[cmd.index("--learning_rate") + 1] = "1e-3"
    return run(cmd)


def main():
    with tempfile.TemporaryDirectory() as work:
        model_dir, data_dir, _ = make_inputs_with_eval(work)
        vocab = transformers.AutoConfig.from_pretrained(model_dir).vocab_size

        # ---- LoRA under ZeRO-3, then merge ----
        lora_out = os.path.join(work, "lora")
        cmd = args_for(model_dir, data_dir, lora_out, steps=6)
        proc = run([FTLAUNCH, "--config_file", zero3_yaml(work, 2, False), *cmd[4:]])  # 2 ranks x batch 2 x accumulation 2
        check(proc.returncode == 0, f"LoRA run under ZeRO-3 on 2 ranks exits 0 ({proc.returncode})")
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
            raise SystemExit(1)
        merged_dir = os.path.join(work, "merged")
        proc = run([FTLAUNCH, "merge", "--model_name_or_path", model_dir, "--adapter_path", lora_out,
                    "--output_dir", merged_dir])
        check(proc.returncode == 0 and "merged 14 LoRA weights" in proc.stdout,
              f"ftlaunch merge exits 0 and merges the 14 targeted linears ({proc.stdout.strip()[-200:]})")
        reference = peft_merged(model_dir, lora_out)
        ours = transformers.AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
        worst, problems = state_diff(ours.state_dict(), reference.state_dict())
        check(not problems and worst <= 1e-5, f"merge equals PEFT merge_and_unload: worst {worst:.1e} <= 1e-5 {problems}")
        base = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        moved, _ = state_diff(base.state_dict(), reference.state_dict())
        check(moved > 1e-4, f"the adapter changed the weights (base vs merged {moved:.1e}), so the check has teeth")
        diff = logits_diff(ours, reference, vocab)
        check(diff <= 1e-5, f"merged logits equal PEFT's: {diff:.1e} <= 1e-5")

        bf16_dir = os.path.join(work, "merged_bf16")
        proc = run([FTLAUNCH, "merge", "--model_name_or_path", model_dir, "--adapter_path", lora_out,
                    "--output_dir", bf16_dir, "--torch_dtype", "bfloat16", "--max_shard_size", "100KB"])
        shards = sorted(f for f in os.listdir(bf16_dir) if f.endswith(".safetensors")) if proc.returncode == 0 else []
        check(len(shards) > 1 and os.path.exists(os.path.join(bf16_dir, "model.safetensors.index.json")),
              f"--max_shard_size 100KB: {len(shards)} shards and an index")
        ours_bf16 = transformers.AutoModelForCausalLM.from_pretrained(bf16_dir)
        check(ours_bf16.dtype == torch.bfloat16, f"--torch_dtype bfloat16: transformers loads bf16 ({ours_bf16.dtype})")
        expected = {k: v.to(torch.bfloat16) for k, v in reference.state_dict().items()}
        worst, problems = state_diff(ours_bf16.state_dict(), expected)
        check(not problems and worst == 0, f"bf16 merge equals PEFT's fp32 merge cast to bf16 exactly ({worst:.1e})")

        # ---- the other families: gemma2's norms and caps, phi3's fused qkv_proj / gate_up_proj, olmo3's norms ----
        for family, linears in (("gemma2", 14), ("phi3", 8), ("olmo3", 14)):
            family_dir, family_out = os.path.join(work, family), os.path.join(work, f"{family}_lora")
            family_cmd = args_for(family_dir, data_dir, family_out, steps=4)
            family_merged = os.path.join(work, f"{family}_merged")
            proc = run(family_cmd)
            if proc.returncode == 0:
                proc = run([FTLAUNCH, "merge", "--model_name_or_path", family_dir, "--adapter_path", family_out,
                            "--output_dir", family_merged])
            if not check(proc.returncode == 0 and f"merged {linears} LoRA weights" in proc.stdout,
                         f"{family}: train and merge exit 0, {linears} linears merged ({proc.stderr.strip()[-200:]})"):
                continue
            reference = peft_merged(family_dir, family_out)
            ours = transformers.AutoModelForCausalLM.from_pretrained(family_merged, dtype=torch.float32)
            worst, problems = state_diff(ours.state_dict(), reference.state_dict())
            diff = logits_diff(ours, reference, vocab)
            check(not problems and worst <= 1e-5 and diff <= 1e-5,
                  f"{family}: merge equals PEFT merge_and_unload (worst tensor {worst:.1e}, logits {diff:.1e}) {problems}")

        # ---- an adapter carrying resized embeddings, written by PEFT itself ----
        resized = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        resized.resize_token_embeddings(vocab + 8)
        torch.manual_seed(1)
        peft_model = peft.get_peft_model(resized, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"],
                                                                 rank_pattern={"down_proj": 6}, alpha_pattern={"q_proj": 3},
                                                                 init_lora_weights=False))
        emb_adapter = os.path.join(work, "emb_adapter")
        peft_model.save_pretrained(emb_adapter, save_embedding_layers=True)
        emb_merged = os.path.join(work, "emb_merged")
        proc = run([FTLAUNCH, "merge", "--model_name_or_path", model_dir, "--adapter_path", emb_adapter,
                    "--output_dir", emb_merged])
        check(proc.returncode == 0 and "took 2 tensors from the adapter" in proc.stdout,
              f"an adapter with embed_tokens and lm_head merges ({(proc.stdout + proc.stderr).strip()[-300:]})")
        if proc.returncode == 0:
            config = json.load(open(os.path.join(emb_merged, "config.json")))
            check(config["vocab_size"] == vocab + 8, f"config.json vocab_size is the resized {vocab + 8} ({config['vocab_size']})")
            ours_emb = transformers.AutoModelForCausalLM.from_pretrained(emb_merged, dtype=torch.float32)
            worst, problems = state_diff(ours_emb.state_dict(), peft_merged(model_dir, emb_adapter, vocab + 8).state_dict())
            check(not problems and worst <= 1e-5, f"resized-embedding merge equals PEFT's: {worst:.1e} <= 1e-5 {problems}")

        # ---- a chatml run resizes the vocabulary: its adapter carries the embeddings (ZeRO-3 gathers them) ----
        chat_dir = os.path.join(work, "chat")
        os.makedirs(chat_dir)
        with open(os.path.join(data_dir, "train.jsonl")) as f:
            texts = [json.loads(line)["text"] for line in f]
        with open(os.path.join(chat_dir, "train.jsonl"), "w") as f:
            for i, t in enumerate(texts):
                f.write(json.dumps({"messages": [{"role": "user", "content": t},
                                                 {"role": "assistant", "content": texts[(i + 3) % len(texts)]}]}) + "\n")
        chat_out = os.path.join(work, "lora_chat")
        cmd = args_for(model_dir, chat_dir, chat_out, steps=4)
        cmd[cmd.index("--splits") + 1] = "train"
        cmd[cmd.index("--max_seq_len") + 1] = "256"  # a user and an assistant turn
        proc = run([FTLAUNCH, "--config_file", zero3_yaml(work, 2, False), *cmd[4:], "--chat_template_format", "chatml"])
        check(proc.returncode == 0, f"chatml LoRA run under ZeRO-3 exits 0 ({proc.returncode})")
        from safetensors import safe_open
        with safe_open(os.path.join(chat_out, "adapter_model.safetensors"), "pt") as f:
            names = set(f.keys())
            rows = f.get_slice("base_model.model.model.embed_tokens.weight").get_shape()[0] if \
                "base_model.model.model.embed_tokens.weight" in names else 0
        check(rows > vocab and "base_model.model.lm_head.weight" in names,
              f"the chatml adapter carries embed_tokens and lm_head with the resized {rows} rows (base {vocab})")
        chat_merged = os.path.join(work, "chat_merged")
        proc = run([FTLAUNCH, "merge", "--model_name_or_path", model_dir, "--adapter_path", chat_out, "--output_dir", chat_merged])
        check(proc.returncode == 0, f"merging the chatml adapter exits 0 ({proc.returncode})")
        if proc.returncode == 0 and rows:
            ours_chat = transformers.AutoModelForCausalLM.from_pretrained(chat_merged, dtype=torch.float32)
            worst, problems = state_diff(ours_chat.state_dict(), peft_merged(model_dir, chat_out, rows).state_dict())
            check(not problems and worst <= 1e-5 and ours_chat.config.vocab_size == rows,
                  f"chatml merge equals PEFT's (base resized, adapter loaded, merged): {worst:.1e} <= 1e-5 {problems}")

        # ---- bad merges ----
        proc = run([FTLAUNCH, "merge", "--model_name_or_path", model_dir, "--adapter_path", lora_out,
                    "--output_dir", lora_out])
        check(proc.returncode == 2 and "is an input folder" in proc.stderr, f"--output_dir = the adapter: exit 2 ({proc.returncode})")
        other_dir = os.path.join(work, "other_model")
        other = transformers.AutoConfig.for_model("llama", vocab_size=vocab, hidden_size=32, intermediate_size=48,
                                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        transformers.AutoModelForCausalLM.from_config(other).save_pretrained(other_dir)
        bad_out = os.path.join(work, "bad_merge")
        proc = run([FTLAUNCH, "merge", "--model_name_or_path", other_dir, "--adapter_path", lora_out, "--output_dir", bad_out])
        check(proc.returncode == 2 and "does not fit the base weight's shape" in proc.stderr and not os.path.exists(bad_out),
              f"an adapter of another base model: exit 2 naming the weight, nothing written ({proc.returncode})")

        # ---- full fine-tuning under ZeRO-3 with zero3_save_16bit_model ----
        single = os.path.join(work, "full_single")
        proc = full_finetune(model_dir, data_dir, single, ("--cpu", "--num_processes", "1"), bf16=False, batch=2)
        check(proc.returncode == 0, f"full fine-tuning on 1 rank exits 0 ({proc.returncode})")
        z3 = os.path.join(work, "full_zero3")
        proc = full_finetune(model_dir, data_dir, z3, ("--config_file", zero3_yaml(work, 2, True)), bf16=False, batch=1)
        check(proc.returncode == 0, f"full fine-tuning under ZeRO-3 on 2 ranks exits 0 ({proc.returncode})")
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
        single_model = transformers.AutoModelForCausalLM.from_pretrained(single, dtype=torch.float32)
        z3_model = transformers.AutoModelForCausalLM.from_pretrained(z3)
        worst, problems = state_diff(z3_model.state_dict(), single_model.state_dict())
        trained, _ = state_diff(single_model.state_dict(), base.state_dict())
        check(z3_model.dtype == torch.float32 and not problems and worst <= 1e-5 and trained > 1e-4,
              f"ZeRO-3 save (fp32 run) loads in transformers and equals 1 rank: {worst:.1e} <= 1e-5 (trained {trained:.1e})")
        # The same bf16 run with and without the flag: the 16-bit file is the fp32 weights cast to bf16.
        z3_bf16 = os.path.join(work, "full_zero3_bf16")
        z3_bf16_fp32 = os.path.join(work, "full_zero3_bf16_no_flag")
        proc_16 = full_finetune(model_dir, data_dir, z3_bf16, ("--config_file", zero3_yaml(work, 2, True)), bf16=True, batch=1)
        proc_32 = full_finetune(model_dir, data_dir, z3_bf16_fp32, ("--config_file", zero3_yaml(work, 2, False)), bf16=True,
                                batch=1)
        check(proc_16.returncode == 0 and proc_32.returncode == 0, "bf16 full fine-tuning under ZeRO-3 exits 0, with and without the flag")
        z3_bf16_model = transformers.AutoModelForCausalLM.from_pretrained(z3_bf16)
        no_flag = transformers.AutoModelForCausalLM.from_pretrained(z3_bf16_fp32)
        expected = {k: v.to(torch.bfloat16) for k, v in no_flag.state_dict().items()}
        worst, problems = state_diff(z3_bf16_model.state_dict(), expected)
        check(z3_bf16_model.dtype == torch.bfloat16 and no_flag.dtype == torch.float32 and not problems and worst == 0,
              f"zero3_save_16bit_model with --bf16: bfloat16 in the file, the run's fp32 weights cast exactly ({worst:.1e})")

    finish("all model-folder checks passed")


if __name__ == "__main__":
    main()
