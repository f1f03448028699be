"""Makes the quickstart's embedded default: a small Llama-style model (random init, about 4M
parameters), a tokenizer trained on this repository's own documentation, and a small chat dataset
in the shape of smangrul/ultrachat-10k-chatml (a `messages` column, train and test parquet splits).

  python scripts/make_tiny_assets.py OUT_DIR

Writes OUT_DIR/model (config.json, model.safetensors, tokenizer files) and
OUT_DIR/chat/data/{train,test}-00000-of-00001.parquet. Deterministic for a given repository state.
"""
import glob
import os
import random
import re
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shipped_text():
    paths = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    return "\n".join(open(p, encoding="utf-8").read() for p in paths)


def sentences(text):
    flat = re.sub(r"[`*#|>]", " ", text)
    parts = re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", flat))
    return [p.strip() for p in parts if 30 <= len(p.strip()) <= 300]


def make_tokenizer(text, folder):
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(text.splitlines(), trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                unk_token="<unk>")
    fast.save_pretrained(folder)
    return fast


def make_model(vocab, folder):
    config = transformers.AutoConfig.for_model(
        "llama", vocab_size=vocab, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def make_chats(lines, folder):
    rng = random.Random(0)
    prompts = ["Explain this part of ftlaunch.", "What does the documentation say here?", "Summarise this for me.",
               "How does ftlaunch handle this?", "Tell me more."]
    def conversation():
        start = rng.randrange(len(lines) - 3)
        turns = [{"role": "system", "content": "You answer questions about ftlaunch."}] if rng.random() < 0.3 else []
        for k in range(rng.randint(1, 2)):
            turns.append({"role": "user", "content": rng.choice(prompts) + " " + lines[start + k][:60]})
            turns.append({"role": "assistant", "content": lines[start + k]})
        return turns
    os.makedirs(folder, exist_ok=True)
    for split, n in (("train", 600), ("test", 60)):
        pq.write_table(pa.table({"messages": [conversation() for _ in range(n)]}),
                       os.path.join(folder, f"{split}-00000-of-00001.parquet"))


def main():
    out = sys.argv[1]
    text = shipped_text()
    model_dir = os.path.join(out, "model")
    tok = make_tokenizer(text, model_dir)
    params = make_model(len(tok), model_dir)
    make_chats(sentences(text), os.path.join(out, "chat", "data"))
    print(f"tiny assets in {out}: model {params / 1e6:.1f}M parameters, vocabulary {len(tok)}, chat dataset 600/60")


if __name__ == "__main__":
    main()
