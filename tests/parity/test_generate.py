"""`ftlaunch generate` against transformers' generate(do_sample=False), token for token, CPU fp32.

  decoder-only     a tiny random Llama (initializer_range 0.5, so logits are decisive) with a BPE
                   tokenizer (pad = EOS); 5 prompts of different lengths in batches of 3, left-padded
                   as transformers pads for generation; greedy and 4 beams, max_new_tokens 6: the same
                   generated ids and text; again with a PEFT LoRA adapter (B drawn at random, so it
                   changes the logits) against PeftModel's generate
  encoder-decoder  the seq2seq example test's tiny BART and tokenizer, weights drawn anew (init_std
                   0.6), with bart-large's generation settings (no_repeat_ngram_size 3, forced
                   BOS/EOS, early stopping): greedy and 4 beams, with and without a PEFT adapter
                   (task_type SEQ_2_SEQ_LM); the adapter must change the output
  conversations    .jsonl prompts with "messages", rendered with the Llama's chat template (saved as
                   chat_template.jinja) and its generation prompt: greedy ids equal transformers'
                   generate on apply_chat_template(messages, add_generation_prompt=True)
  trained adapter  `ftlaunch train --chat_template_format chatml` (tokens added, embeddings resized)
                   then `generate --adapter_path` its output: the prompts rendered with the saved
                   tokenizer's template, greedy ids equal PeftModel's generate with the tokenizer
                   AutoTokenizer.from_pretrained(output_dir) loads (the base resized to it)
  bad              a prompts file that does not exist -> exit 2 naming it
"""
import json
import os
import subprocess
import sys
import tempfile

import torch
import transformers

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from harness import check, finish  # noqa: E402
import make_tiny_assets  # noqa: E402
import test_seq2seq_example  # noqa: E402

FTLAUNCH = os.environ["FTLAUNCH"]
PROMPTS = ["ftlaunch fine-tunes", "The launcher reads the same configs and flags as accelerate does, and",
           "LoRA", "Each rank holds a slice of the weights", "DeepSpeed ZeRO stage three partitions"]
BATCH = 3


def make_llama(folder, model_type="llama", **extra):
    text = make_tiny_assets.sentences(make_tiny_assets.shipped_text())
    tokenizer = make_tiny_assets.make_tokenizer("\n".join(text), folder)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(folder)
    shape = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, initializer_range=0.5, tie_word_embeddings=False,
                 bos_token_id=1, eos_token_id=2)
    shape.update(extra)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(model_type, **shape)).save_pretrained(folder)
    return tokenizer


# Families whose cached decoding crosses what differs from Llama's: windows of 3 tokens (prompts
# and their 6 new tokens are longer), gemma2's capped scores and logits, gemma3's two rotations,
# phi3's fused projections, partial rotation and longrope switching from its short factors to its
# long ones past position 8, in the middle of some prompts and of some generations; olmo3's post
# norms and whole-projection q/k norms with a window and two rotations; qwen3_moe's experts (routed
# anew for every cached step); gpt_oss's sinks over cached keys, its windows and experts.
FAMILIES = {
    "gemma2": dict(head_dim=16, sliding_window=3, attn_logit_softcapping=2.0, final_logit_softcapping=3.0),
    "gemma3_text": dict(head_dim=16, sliding_window=3, layer_types=["sliding_attention", "full_attention"],
                        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
                                         "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}}),
    "phi3": dict(original_max_position_embeddings=8, pad_token_id=2,
                 rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                                  "short_factor": [1.0, 1.5, 2.0, 3.0, 5.0, 8.0],
                                  "long_factor": [2.0, 3.0, 5.0, 9.0, 17.0, 33.0]}),
    "olmo3": dict(sliding_window=3, layer_types=["sliding_attention", "full_attention"], pad_token_id=2,
                  rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 5e5},
                                   "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}}),
    "qwen3_moe": dict(head_dim=16, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2),
    "gpt_oss": dict(head_dim=16, num_local_experts=4, num_experts_per_tok=2, sliding_window=3, pad_token_id=2),
}


def make_adapter(model, folder, task_type, targets):
    """A PEFT LoRA adapter whose B matrices are random (PEFT starts them at zero)."""
    import peft
    torch.manual_seed(5)
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, task_type=task_type, target_modules=targets))
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    wrapped.save_pretrained(folder)
    return wrapped.eval()


def reference(model, tokenizer, beams, left):
    tokenizer.padding_side = "left" if left else "right"
    out = []
    for first in range(0, len(PROMPTS), BATCH):
        batch = tokenizer(PROMPTS[first:first + BATCH], padding="longest", return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**batch, max_new_tokens=6, num_beams=beams, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        skip = batch["input_ids"].shape[1] if left else 1
        out += [row[skip:].tolist() for row in ids]
    return out


def ours(work, name, model_dir, beams, adapter=None):
    prompts = os.path.join(work, "prompts.txt")
    with open(prompts, "w") as f:
        f.write("\n".join(PROMPTS) + "\n")
    out = os.path.join(work, f"{name}.jsonl")
    command = [FTLAUNCH, "generate", "--model_name_or_path", model_dir, "--prompts", prompts, "--output", out,
               "--max_new_tokens", "6", "--num_beams", str(beams), "--batch_size", str(BATCH)]
    if adapter:
        command += ["--adapter_path", adapter]
    proc = subprocess.run(command, capture_output=True, text=True)
    if not check(proc.returncode == 0, f"{name}: ftlaunch generate runs ({proc.stderr.strip()[-300:]})"):
        return None
    with open(out) as f:
        return [json.loads(line) for line in f]


def compare(work, name, model_dir, model, tokenizer, left, adapter=None):
    """Returns our greedy ids (None when the run failed)."""
    greedy = None
    for beams in (1, 4):
        what = f"{name}, {'greedy' if beams == 1 else f'{beams} beams'}"
        mine = ours(work, what.replace(" ", "_").replace(",", ""), model_dir, beams, adapter)
        if mine is None:
            continue
        expected = reference(model, tokenizer, beams, left)
        check([m["ids"] for m in mine] == expected,
              f"{what}: generated ids equal transformers'\n  ours {[m['ids'] for m in mine]}\n  HF   {expected}")
        texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in expected]
        check([m["completion"] for m in mine] == texts, f"{what}: completions equal transformers' decoded text")
        if beams == 1:
            greedy = [m["ids"] for m in mine]
    return greedy


CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m.role | upper }}: {{ m.content | trim }}\n{% endfor %}"
                 "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def generate_conversations(work, name, llama_dir, conversations, adapter=None):
    """`ftlaunch generate` on `conversations` as "messages" records, greedy, one per batch:
    the output records, or None when the run failed (reported)."""
    prompts = os.path.join(work, f"{name}.jsonl")
    with open(prompts, "w") as f:
        for c in conversations:
            f.write(json.dumps({"messages": c}) + "\n")
    out = os.path.join(work, f"{name}_out.jsonl")
    command = [FTLAUNCH, "generate", "--model_name_or_path", llama_dir, "--prompts", prompts, "--output", out,
               "--max_new_tokens", "6", "--batch_size", "1"]
    if adapter:
        command += ["--adapter_path", adapter]
    proc = subprocess.run(command, capture_output=True, text=True)
    if not check(proc.returncode == 0, f"{name}: ftlaunch generate runs ({proc.stderr.strip()[-300:]})"):
        return None
    return [json.loads(line) for line in open(out)]


def reference_conversations(model, tokenizer, conversations):
    """transformers' greedy ids for each conversation rendered with its generation prompt."""
    expected = []
    for c in conversations:
        ids = tokenizer.apply_chat_template(c, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            row = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        expected.append(row[0, ids["input_ids"].shape[1]:].tolist())
    return expected


def check_conversations(work, llama_dir, tokenizer):
    """Conversations in the model's chat template, greedy, one per batch (no padding). The model
    is loaded anew: get_peft_model put LoRA layers into the one loaded before."""
    model = transformers.AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32).eval()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(llama_dir)
    conversations = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}] for p in PROMPTS[:3]]
    mine = generate_conversations(work, "conversations", llama_dir, conversations)
    if mine is None:
        return
    expected = reference_conversations(model, tokenizer, conversations)
    check([m["ids"] for m in mine] == expected and [m["prompt"] for m in mine] == conversations,
          f"conversations in the model's chat template: generated ids equal transformers'\n"
          f"  ours {[m['ids'] for m in mine]}\n  HF   {expected}")


def check_trained_chatml_adapter(work, llama_dir):
    """The flow of the PEFT guide: train with ChatML tokens added, then generate from output_dir,
    whose tokenizer and resized embeddings ftlaunch saved there."""
    import peft
    data_dir = os.path.join(work, "chat_data")
    os.makedirs(data_dir)
    with open(os.path.join(data_dir, "train.jsonl"), "w") as f:
        for p in PROMPTS:
            f.write(json.dumps({"messages": [{"role": "user", "content": p},
                                             {"role": "assistant", "content": p[::-1]}]}) + "\n")
    out = os.path.join(work, "chatml_run")
    proc = subprocess.run([FTLAUNCH, "--cpu", "--num_processes", "1", "train", "--model_name_or_path", llama_dir,
                           "--dataset_name", data_dir, "--splits", "train", "--chat_template_format", "chatml",
                           "--use_peft_lora", "True", "--lora_r", "4", "--lora_alpha", "8", "--learning_rate", "5e-2",
                           "--per_device_train_batch_size", "2", "--max_steps", "3", "--max_seq_len", "64",
                           "--bf16", "False", "--output_dir", out], capture_output=True, text=True)
    if not check(proc.returncode == 0, f"trained adapter: ftlaunch train --chat_template_format chatml runs "
                                       f"({proc.stderr.strip()[-300:]})"):
        return
    conversations = [[{"role": "user", "content": p}] for p in PROMPTS[:3]]
    records = generate_conversations(work, "trained adapter", llama_dir, conversations, adapter=out)
    if records is None:
        return
    mine = [r["ids"] for r in records]
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    base = transformers.AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32)
    base_rows = base.config.vocab_size
    from safetensors import safe_open
    with safe_open(os.path.join(out, "adapter_model.safetensors"), "pt") as f:
        rows = f.get_slice("base_model.model.model.embed_tokens.weight").get_shape()[0]
    base.resize_token_embeddings(rows)
    model = peft.PeftModel.from_pretrained(base, out).eval()
    expected = reference_conversations(model, tokenizer, conversations)
    check(mine == expected and rows > base_rows and "<|im_start|>user" in tokenizer.get_vocab(),
          f"trained adapter (embeddings {base_rows} -> {rows} rows, the ChatML tokens in the saved tokenizer): "
          f"generated ids equal PeftModel's\n  ours {mine}\n  HF   {expected}")


def main():
    with tempfile.TemporaryDirectory() as work:
        llama_dir = os.path.join(work, "llama")
        tokenizer = make_llama(llama_dir)
        model = transformers.AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32).eval()
        base = compare(work, "llama", llama_dir, model, tokenizer, left=True)
        llama_adapter = os.path.join(work, "llama_adapter")
        peft_model = make_adapter(model, llama_adapter, "CAUSAL_LM", ["q_proj", "v_proj", "down_proj"])
        adapted = compare(work, "llama + LoRA", llama_dir, peft_model, tokenizer, left=True, adapter=llama_adapter)
        check(base != adapted, "llama + LoRA: the adapter changes what is generated")
        for model_type, extra in FAMILIES.items():
            folder = os.path.join(work, model_type)
            gemma_tokenizer = make_llama(folder, model_type, **extra)
            gemma = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
            compare(work, model_type, folder, gemma, gemma_tokenizer, left=True)

        # The seq2seq test's BART (its tokenizer and generation settings), weights drawn anew with
        # init_std 0.6 so that every prompt and the adapter change what is generated.
        bart_dir = os.path.join(work, "bart")
        bart_tokenizer = test_seq2seq_example.make_base(bart_dir)
        config = transformers.BartConfig.from_pretrained(bart_dir)
        config.init_std = 0.6
        torch.manual_seed(2)
        fresh = transformers.BartForConditionalGeneration(config)
        fresh.generation_config = transformers.GenerationConfig.from_pretrained(bart_dir)
        fresh.save_pretrained(bart_dir)
        bart = transformers.BartForConditionalGeneration.from_pretrained(bart_dir, dtype=torch.float32).eval()
        base = compare(work, "bart", bart_dir, bart, bart_tokenizer, left=False)
        bart_adapter = os.path.join(work, "bart_adapter")
        peft_bart = make_adapter(bart, bart_adapter, "SEQ_2_SEQ_LM", ["q_proj", "v_proj"])
        adapted = compare(work, "bart + LoRA", bart_dir, peft_bart, bart_tokenizer, left=False, adapter=bart_adapter)
        check(base != adapted and len({str(ids) for ids in base}) > 1,
              "bart + LoRA: prompts generate differently, and the adapter changes what is generated")

        check_conversations(work, llama_dir, tokenizer)
        check_trained_chatml_adapter(work, llama_dir)

        proc = subprocess.run([FTLAUNCH, "generate", "--model_name_or_path", llama_dir, "--prompts",
                               os.path.join(work, "missing.txt")], capture_output=True, text=True)
        check(proc.returncode == 2 and "missing.txt" in proc.stderr,
              f"bad: a missing prompts file -> exit 2 naming it ({proc.stderr.strip()[-200:]})")
    finish("ftlaunch generate equals transformers' generate")


if __name__ == "__main__":
    main()
