"""ftlaunch's tokenizer against HF `tokenizers`, on tokenizers trained here.

Five tokenizer.json shapes found in the Llama family are trained with the `tokenizers` library
(byte-level BPE with the GPT-2 regex; Llama-3's split regex with ignore_merges and a BOS template;
Qwen2's NFC + split; Llama-2's legacy metaspace normalizer with byte fallback; Mistral's Metaspace
pre-tokenizer with prepend_scheme "first"), each with special and added tokens (single_word,
lstrip/rstrip, normalized or not). On a corpus of 2,000+ strings (CJK, emoji, combining marks,
whitespace runs, digits, code, special tokens inside text, text that NFC recomposes or reorders)
the ids must be identical, with and without add_special_tokens, decode must equal the
reference's decode, keeping and skipping special tokens (so decode(encode(x)) == x exactly where
the reference round-trips), and encode_with_offsets must give each token the reference's
offsets (Encoding.offsets, in characters). A sixth shape, GPT-2's ByteLevel with
add_prefix_space and trim_offsets, checks the post-processor's offset trimming; a seventh is
Gemma's (spaces replaced by "▁" with nothing prepended, byte fallback, no Strip in the decoder:
the pipeline transformers' GemmaTokenizer rebuilds around a tokenizer.json's vocabulary).

Tokenizer classes: eight folders whose tokenizer_config.json names a class that transformers 5
rebuilds around the file's vocabulary (LlamaTokenizer, GemmaTokenizer, Qwen2Tokenizer,
GPT2Tokenizer; legacy / add_prefix_space variants) must give AutoTokenizer's ids (with and without
special tokens), decode, offsets, len(tokenizer) and special ids on every corpus string.

Chat formats: two of these tokenizers saved as transformers folders are loaded the way the seed's
train.py loads them for --chat_template_format chatml / zephyr (AutoTokenizer.from_pretrained with
pad/bos/eos and the additional special tokens, then tokenizer.chat_template = peft's template);
the rendered text (apply_chat_template), its ids (tokenizer(text)), len(tokenizer) and the
special-token ids must be identical, and the --assistant_only_loss mask of every conversation
must equal transformers' return_assistant_tokens_mask (tokens overlapping a {% generation %}
span, by offsets).
"""
import json
import os
import random
import subprocess
import sys
import tempfile

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

PROBE = os.environ["FTL_TOKENIZER_PROBE"]
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# o200k (GPT-4o's, gpt-oss's o200k_harmony): case-aware letter runs with inline case-insensitive
# contractions, \p{M} marks, "/" kept with punctuation runs.
O200K_PATTERN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                 r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                 r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|begin_of_text|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]

FRAGMENTS = [
    "Hello world", "hello", " the quick brown fox", "jumps over the lazy dog.", "I'm", "you'll", "they've",
    "DON'T", "It's", "12345", "3.14159", "1,000,000", "2026-11-28", "0x1F", "  ", "\t", "\n", "\n\n",
    "   \t  ", "\r\n", "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "if x != None and y >= 3:", "#include <vector>", "https://huggingface.co/docs", "user@example.com",
    "你好，世界", "深度学习模型微调", "日本語のテキスト", "한국어 문장", "Привет, мир", "Γειά σου Κόσμε",
    "مرحبا بالعالم", "שלום עולם", "हिन्दी पाठ", "café", "cafe\u0301", "e\u0301\u0302", "A\u030a", "ﬁ ligature",
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "🤗 Transformers", "∑ x² ≤ ∞", "½ ¾", "…", "—", "\u00a0", "\u3000",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|begin_of_text|>", "<think>", "hello world", "<sep>",
    "[MASK]", "<|im_start|>user\nHi<|im_end|>\n", "  <sep>  ", "ahello worldb", "x<|im_end|>y",
    "ÀÉÎÕÜ", "ß", "İstanbul", "ǅ", "\x00", "\x7f", "'s", "'S", "'ll've", "...", "!!!", "?!", "$$$",
]

# Text that NFC recomposes (Hangul jamo, two starters, marks in either order) or leaves split
# (a composition exclusion): offsets must follow each character. Kept out of FRAGMENTS, whose
# draws other tests' datasets are made of.
NORMALIZATION_FRAGMENTS = ["a\u0323\u0302", "a\u0302\u0323", "\u1e9b\u0323", "\u0958", "\u09c7\u09be",
                           "\u1100\u1161", "e\u0302\u0301"]

TRAIN_TEXT = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Fine-tuning large language models with LoRA and DeepSpeed ZeRO on many GPUs.",
    "def train(model, data):\n    for batch in data:\n        loss = model(batch)\n        loss.backward()\n",
    "Hello world! I'm here, you're there, they'll come. It's 2026 and 12345 tokens.",
    "深度学习模型微调 你好 世界 日本語 テキスト",
    "café naïve résumé coöperate",
] * 20


def corpus(n=2200):
    rng = random.Random(1234)
    lines = list(FRAGMENTS) + NORMALIZATION_FRAGMENTS
    while len(lines) < n:
        k = rng.randint(1, 6)
        parts = [rng.choice(FRAGMENTS) for _ in range(k)]
        sep = rng.choice(["", " ", "  ", "\n", "\t", " \n "])
        lines.append(sep.join(parts))
    lines.append("")
    return lines


def with_added_tokens(tok):
    tok.add_special_tokens(SPECIALS)
    tok.add_tokens([AddedToken("hello world", single_word=True, normalized=False),
                    AddedToken("<sep>", lstrip=True, rstrip=True, normalized=False),
                    AddedToken("<think>", normalized=True)])
    return tok


def byte_level(pattern=None, ignore_merges=False, nfc=False, bos=False, trim_offsets=False):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if nfc:
        tok.normalizer = normalizers.NFC()
    if pattern:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=trim_offsets)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TRAIN_TEXT, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=trim_offsets, add_prefix_space=trim_offsets)
    return with_added_tokens(tok)


def metaspace(legacy, gemma=False):
    """SentencePiece-style BPE with byte fallback: Llama-2's legacy normalizer, Mistral's Metaspace,
    or Gemma's (spaces replaced, nothing prepended or stripped: what GemmaTokenizer builds)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if gemma:
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    elif legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="first"),
                                         decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=60,
                                  show_progress=False)
    tok.train_from_iterator(TRAIN_TEXT, trainer)
    # Put the 256 <0xNN> byte tokens into the model vocab right after the specials, as Llama-2 has them.
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    shifted = {t: (i if i < 3 else i + 256) for t, i in vocab.items()}
    for b in range(256):
        shifted[f"<0x{b:02X}>"] = 3 + b
    spec["model"]["vocab"] = shifted
    for a in spec["added_tokens"]:
        a["id"] = shifted[a["content"]]
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return with_added_tokens(tok)


TOKENIZERS = {
    "gpt2_byte_level": lambda: byte_level(),
    "gpt2_prefix_space_trim_offsets": lambda: byte_level(trim_offsets=True),
    "llama3_split_ignore_merges": lambda: byte_level(LLAMA3_PATTERN, ignore_merges=True, bos=True),
    "qwen2_nfc_split": lambda: byte_level(QWEN2_PATTERN, nfc=True),
    "o200k_split": lambda: byte_level(O200K_PATTERN),
    "llama2_legacy_metaspace": lambda: metaspace(legacy=True),
    "mistral_metaspace_first": lambda: metaspace(legacy=False),
    "gemma_replace_byte_fallback": lambda: metaspace(legacy=False, gemma=True),
}


CHATML_TEMPLATE = ("{% for message in messages %}\n{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                   "'<|im_end|>' + '\n'}}{% if loop.last and add_generation_prompt %}{{'<|im_start|>assistant\n' }}"
                   "{% endif %}{% endfor %}")
ZEPHYR_TEMPLATE = ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
                   "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + "
                   "message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + "
                   "message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n"
                   "{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")
CHAT_FORMATS = {  # train.py's ChatmlSpecialTokens / ZephyrSpecialTokens
    "chatml": (CHATML_TEMPLATE, "<|im_end|>",
               ["<|im_start|>user", "<|im_start|>assistant", "<|im_start|>system", "<|im_end|>", "<s>", "<pad>"]),
    "zephyr": (ZEPHYR_TEMPLATE, "</s>", ["<|user|>", "<|assistant|>", "<|system|>", "</s>", "<s>", "<pad>"]),
}


# The same renderings with TRL-style {% generation %} blocks around what assistant_only_loss trains
# (content + end marker), for transformers' return_assistant_tokens_mask.
ASSISTANT_MASK_TEMPLATES = {
    "chatml": ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
               "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
               "{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"),
    "zephyr": ("{% for message in messages %}{% if message['role'] in ['user', 'system', 'assistant'] %}"
               "{{ '<|' + message['role'] + '|>\n' }}{% if message['role'] == 'assistant' %}{% generation %}"
               "{{ message['content'] + eos_token }}{% endgeneration %}{% else %}{{ message['content'] + eos_token }}"
               "{% endif %}{{ '\n' }}{% endif %}{% endfor %}"),
}


def conversations(n=200):
    rng = random.Random(99)
    out = []
    for _ in range(n):
        turns = []
        if rng.random() < 0.3:
            turns.append({"role": "system", "content": rng.choice(FRAGMENTS)})
        for k in range(rng.randint(1, 3)):
            turns.append({"role": "user", "content": " ".join(rng.choice(FRAGMENTS) for _ in range(2))})
            turns.append({"role": "assistant", "content": " ".join(rng.choice(FRAGMENTS) for _ in range(3))})
        out.append(turns)
    return out


def check_chat_formats(work):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    convs = conversations()
    conv_path = os.path.join(work, "conversations.jsonl")
    with open(conv_path, "w") as f:
        for c in convs:
            f.write(json.dumps(c) + "\n")
    failures = 0
    for base, add_bos in (("llama2_legacy_metaspace", True), ("llama3_split_ignore_merges", None)):
        folder = os.path.join(work, base + "_hf")
        fast = PreTrainedTokenizerFast(tokenizer_object=TOKENIZERS[base](), bos_token="<s>", eos_token="</s>",
                                       unk_token="<unk>" if "metaspace" in base else None)
        fast.save_pretrained(folder)
        if add_bos is not None:  # as Llama-2 folders have it: update_post_processor builds <s> $A
            cfg_path = os.path.join(folder, "tokenizer_config.json")
            cfg = json.load(open(cfg_path))
            cfg.update(add_bos_token=add_bos, add_eos_token=False)
            json.dump(cfg, open(cfg_path, "w"))
        for fmt, (template, eos, additional) in CHAT_FORMATS.items():
            ref = AutoTokenizer.from_pretrained(folder, pad_token="<pad>", bos_token="<s>", eos_token=eos,
                                                additional_special_tokens=additional)
            ref.chat_template = template
            out_path = os.path.join(work, f"{base}_{fmt}.out.jsonl")
            proc = subprocess.run([PROBE, "chat", folder, fmt, conv_path, out_path], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"FAIL {base}/{fmt}: probe failed: {proc.stderr}")
                failures += 1
                continue
            ours = [json.loads(l) for l in open(out_path)]
            bad = []
            marked = 0
            for conv, o in zip(convs, ours):
                text = ref.apply_chat_template(conv, tokenize=False)
                ids = ref(text)["input_ids"]
                problems = []
                if o["text"] != text:
                    problems.append(f"text {o['text']!r} != {text!r}")
                if o["ids"] != ids:
                    problems.append(f"ids {o['ids'][:20]}... != {ids[:20]}...")
                specials = [ref.bos_token_id, ref.eos_token_id, ref.pad_token_id]
                if [o["bos"], o["eos"], o["pad"]] != specials or o["size"] != len(ref):
                    problems.append(f"bos/eos/pad/size {[o['bos'], o['eos'], o['pad'], o['size']]} != {specials + [len(ref)]}")
                if o["additional"] != ref.convert_tokens_to_ids(additional):
                    problems.append(f"additional ids {o['additional']} != {ref.convert_tokens_to_ids(additional)}")
                if o["assistant_mask"] is None:
                    problems.append("no assistant mask")
                else:
                    marked += 1
                    hf = ref.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
                                                 chat_template=ASSISTANT_MASK_TEMPLATES[fmt])
                    if hf["input_ids"] != ref(text, add_special_tokens=False)["input_ids"] or o["assistant_mask"] != hf["assistant_masks"]:
                        problems.append(f"assistant mask {o['assistant_mask'][:30]} != {hf['assistant_masks'][:30]}")
                if problems:
                    bad.append(problems)
            status = "ok  " if not bad and len(ours) == len(convs) else "FAIL"
            print(f"{status} {base}/{fmt}: {len(convs) - len(bad)}/{len(convs)} conversations identical "
                  f"(len(tokenizer) {len(ref)}); assistant masks for {marked}, equal to transformers' "
                  f"return_assistant_tokens_mask")
            for problems in bad[:3]:
                print("     " + "; ".join(problems)[:500])
            failures += status == "FAIL"
    return failures


# Folders whose tokenizer_class makes transformers 5 rebuild the file's stages around its
# vocabulary (lib/tokenizer/tokenizer_class.h): (tokenizer shape, class, tokenizer_config keys).
CLASS_CASES = [
    ("llama2_legacy_metaspace", "LlamaTokenizer", {}),  # Llama-2's files: Metaspace "first" replaces the normalizer
    ("llama2_legacy_metaspace", "LlamaTokenizerFast", {"legacy": True}),  # "always"
    ("llama2_legacy_metaspace", "LlamaTokenizer", {"legacy": False, "add_prefix_space": False}),  # "never", no Strip
    ("mistral_metaspace_first", "LlamaTokenizerFast", {"legacy": False}),
    ("gemma_replace_byte_fallback", "GemmaTokenizer", {}),
    ("qwen2_nfc_split", "Qwen2Tokenizer", {}),
    ("llama3_split_ignore_merges", "GPT2Tokenizer", {}),  # Phi-4's case: the file's split regex gives way to GPT-2's
    ("gpt2_byte_level", "GPT2TokenizerFast", {"add_prefix_space": True}),
]


def check_tokenizer_classes(work, corpus_path, lines):
    """Each CLASS_CASES folder loaded by AutoTokenizer and by ftlaunch (ftl_tokenizer_probe folder):
    ids with and without special tokens, decode keeping and skipping them, offsets, len(tokenizer)
    and the special ids identical on every corpus line."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    failures = 0
    for i, (shape, cls, keys) in enumerate(CLASS_CASES):
        name = f"{shape} as {cls} {json.dumps(keys)}"
        folder = os.path.join(work, f"class_{i}")
        sentencepiece_like = "metaspace" in shape or "gemma" in shape
        PreTrainedTokenizerFast(tokenizer_object=TOKENIZERS[shape](), bos_token="<s>", eos_token="</s>",
                                unk_token="<unk>" if sentencepiece_like else None).save_pretrained(folder)
        cfg_path = os.path.join(folder, "tokenizer_config.json")
        cfg = json.load(open(cfg_path))
        cfg.update(tokenizer_class=cls, **keys)
        json.dump(cfg, open(cfg_path, "w"))
        ref = AutoTokenizer.from_pretrained(folder)
        out_path = os.path.join(work, f"class_{i}.out.jsonl")
        proc = subprocess.run([PROBE, "folder", folder, corpus_path, out_path], capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"FAIL {name}: probe failed: {proc.stderr}")
            failures += 1
            continue
        ours = [json.loads(l) for l in open(out_path)]
        named = [len(ref), ref.bos_token_id, ref.eos_token_id, ref.pad_token_id]
        named = [-1 if v is None else v for v in named]
        bad = []
        for line, o in zip(lines, ours):
            plain = ref(line, add_special_tokens=False, return_offsets_mapping=True)
            special = ref(line, add_special_tokens=True, return_offsets_mapping=True)
            problems = []
            if o["ids"] != plain["input_ids"] or o["ids_special"] != special["input_ids"]:
                problems.append(f"ids {o['ids'][:16]} != {plain['input_ids'][:16]} (or with specials)")
            if o["decoded"] != ref.decode(plain["input_ids"]) or o["decoded_skip"] != ref.decode(
                    plain["input_ids"], skip_special_tokens=True):
                problems.append(f"decode {o['decoded']!r} != {ref.decode(plain['input_ids'])!r}")
            if ([tuple(r) for r in o["offsets"]] != [tuple(r) for r in plain["offset_mapping"]] or
                    [tuple(r) for r in o["offsets_special"]] != [tuple(r) for r in special["offset_mapping"]]):
                problems.append("offsets differ")
            if [o["size"], o["bos"], o["eos"], o["pad"]] != named:
                problems.append(f"len/bos/eos/pad {[o['size'], o['bos'], o['eos'], o['pad']]} != {named}")
            if problems:
                bad.append((line, problems))
        if len(ours) != len(lines):
            bad.append(("<count>", [f"{len(ours)} results for {len(lines)} lines"]))
        print(f"{'ok  ' if not bad else 'FAIL'} {name}: {len(lines) - len(bad)}/{len(lines)} lines identical to "
              f"AutoTokenizer (backend {type(ref.backend_tokenizer.pre_tokenizer).__name__})")
        for line, problems in bad[:5]:
            print(f"     {line!r}: {'; '.join(problems)[:400]}")
        failures += bool(bad)
    return failures


def main():
    lines = corpus()
    failures = 0
    with tempfile.TemporaryDirectory() as work:
        corpus_path = os.path.join(work, "corpus.jsonl")
        with open(corpus_path, "w") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")
        for name, build in TOKENIZERS.items():
            tok = build()
            path = os.path.join(work, name + ".json")
            tok.save(path)
            out_path = os.path.join(work, name + ".out.jsonl")
            proc = subprocess.run([PROBE, "encode", path, corpus_path, out_path], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"FAIL {name}: probe failed: {proc.stderr}")
                failures += 1
                continue
            with open(out_path) as f:
                ours = [json.loads(l) for l in f]
            plain = tok.encode_batch(lines, add_special_tokens=False)
            special = tok.encode_batch(lines, add_special_tokens=True)
            bad = []
            round_trips = 0
            for i, (line, o) in enumerate(zip(lines, ours)):
                ref_ids = plain[i].ids
                problems = []
                if o["ids"] != ref_ids:
                    problems.append(f"ids {o['ids']} != {ref_ids}")
                if o["ids_special"] != special[i].ids:
                    problems.append(f"ids with specials {o['ids_special']} != {special[i].ids}")
                if o["decoded"] != tok.decode(ref_ids, skip_special_tokens=False):
                    problems.append(f"decode {o['decoded']!r} != {tok.decode(ref_ids, skip_special_tokens=False)!r}")
                if o["decoded_skip"] != tok.decode(ref_ids, skip_special_tokens=True):
                    problems.append("decode(skip_special_tokens) differs")
                if o["offsets_ids"] != ref_ids:
                    problems.append("encode_with_offsets gives other ids")
                if [tuple(r) for r in o["offsets"]] != plain[i].offsets:
                    problems.append(f"offsets {o['offsets']} != {plain[i].offsets}")
                if [tuple(r) for r in o["offsets_special"]] != special[i].offsets:
                    problems.append(f"offsets with specials {o['offsets_special']} != {special[i].offsets}")
                round_trips += o["decoded"] == line
                if problems:
                    bad.append((line, problems))
            if len(ours) != len(lines):
                bad.append(("<count>", [f"{len(ours)} results for {len(lines)} lines"]))
            status = "ok  " if not bad else "FAIL"
            print(f"{status} {name}: {len(lines) - len(bad)}/{len(lines)} lines identical; "
                  f"{round_trips} decode(encode(x)) == x")
            for line, problems in bad[:5]:
                print(f"     {line!r}: {'; '.join(problems)[:400]}")
            failures += bool(bad)
        failures += check_chat_formats(work)
        failures += check_tokenizer_classes(work, corpus_path, lines)
    if failures:
        sys.exit(1)
    print("all tokenizer parity checks passed")


if __name__ == "__main__":
    main()
