"""Rows as TRL's SFTTrainer prepares them (TRL 1.16, from the setup venv), on CPU.

The rows: ftlaunch writes every split's training rows to output_dir/tokenized/ (data/row_cache.h);
the reference is TRL itself: SFTTrainer._prepare_dataset on the same token ids (a processed dataset:
labels from assistant_masks, truncation and the dropping of target-less rows, pack_dataset), then
its DataCollatorForLanguageModeling per row (padding_free for the bfd strategies: position_ids
restart per document, labels at a document's first position are -100).
  bfd, bfd_split   2,300 texts (ties in length, 2 empty records, 937 longer than --max_seq_len 32,
                   so 3 packing batches of 1000 records): every row's input_ids, position_ids and
                   labels equal to TRL's, in TRL's order
  no packing       keep_start and keep_end: a longer text cut as TRL cuts it, equal rows
  masks            a pre-tokenized dataset with assistant_masks (some all 0, some only in a text's
                   second half): bfd_split and keep_start rows equal TRL's (target-less rows left out)
  curve            20 steps of LoRA training on bfd rows (the tiny model of test_sft_parity, batch 2,
                   accumulation 2): per-step loss vs transformers + peft fed TRL's packed rows
                   through its padding-free collator (one flattened sequence, position_ids, no mask;
                   transformers finds the documents from the positions): rel diff <= 1e-4
  num_proc         --dataset_num_proc 3 (TRL's map in 3 processes, each packing its third of the
                   records in batches of 1000): bfd rows equal
  eval_packing     the evaluation split packed by bfd as training is, or with --eval_packing False
                   one row per text, cut as TRL cuts it: equal rows
  prompt-completion 1,200 `prompt` / `completion` records tokenized by TRL itself: rows equal
                   without packing and with bfd, with --completion_only_loss True and False
  chat pairs       300 conversational prompt-completion records in ChatML (the prompt rendered with
                   its generation prompt, merged across the boundary by this tokenizer): rows equal
                   unpacked and packed by bfd; with --assistant_only_loss (a byte-level tokenizer),
                   bfd rows equal (targets where TRL's completion and assistant masks agree)
  bad input        every target cut off (keep_end, masks only at the start): exit 2 naming
                   --truncation_mode
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import datasets
import transformers
from safetensors.torch import load_file
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
import test_sft_parity as sft  # noqa: E402

MAX_LEN = 32


def write_jsonl(folder, records):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "train.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return folder


def ftlaunch_rows(model_dir, data_dir, out, flags, split="train"):
    """The rows of `split` ftlaunch stored for the run (one step is enough to prepare them)."""
    cmd = sft.ftlaunch_command(model_dir, data_dir, out, 2, 1, extra=("--max_seq_len", str(MAX_LEN), *flags))
    cmd[cmd.index("--max_steps") + 1] = "1"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return None, proc
    folder = os.path.join(out, "tokenized")
    (name,) = [n for n in os.listdir(folder) if n.startswith(split + "-")]
    t = load_file(os.path.join(folder, name))
    offsets = t["offsets"].tolist()
    rows = [{k: t[k][offsets[i]:offsets[i + 1]].tolist() for k in ("input_ids", "labels", "position_ids")}
            for i in range(len(offsets) - 1)]
    return rows, proc


class _Preparer:
    """What SFTTrainer._prepare_dataset reads of the trainer (SFTTrainer.__init__ sets these)."""

    def __init__(self, tokenizer=None, completion_only_loss=None):
        self._tokenizer, self.completion_only_loss, self.chat_template = tokenizer, completion_only_loss, None


def trl_rows(ids, masks, packing, strategy="bfd", truncation="keep_start", records=None, tokenizer=None,
             completion_only_loss=None, processes=None, assistant_only_loss=False, data_file=None):
    """TRL's rows for these token ids (and assistant masks), or for these records tokenized by TRL
    with `tokenizer`, through its own preparation and collator. With `data_file`, the records are
    read from that JSON lines file by datasets.load_dataset, as a user's dataset folder is (whose
    features may differ from Dataset.from_list's: heterogeneous dicts stay JSON, in file order)."""
    columns = {"input_ids": ids}
    if masks is not None:
        columns["assistant_masks"] = masks
    if data_file:
        dataset = datasets.load_dataset("json", data_files=data_file, split="train")
    else:
        dataset = datasets.Dataset.from_list(records) if records else datasets.Dataset.from_dict(columns)
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(output_dir=out, max_length=MAX_LEN, packing=packing, packing_strategy=strategy,
                         truncation_mode=truncation, dataset_num_proc=processes, assistant_only_loss=assistant_only_loss,
                         bf16=False, report_to="none")
        prepared = SFTTrainer._prepare_dataset(_Preparer(tokenizer, completion_only_loss), dataset, tokenizer, args,
                                               packing, None, "train")
    collator = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=packing)
    rows = []
    for example in prepared:
        batch = collator([example])
        n = batch["input_ids"].shape[1]
        positions = batch["position_ids"][0].tolist() if packing else list(range(n))
        rows.append({"input_ids": batch["input_ids"][0].tolist(), "labels": batch["labels"][0].tolist(),
                     "position_ids": positions})
    return rows


def byte_level_model(work):
    """The tiny llama of test_sft_parity with test_tokenizer_parity's Llama-3-style byte-level tokenizer."""
    folder = os.path.join(work, "byte_model")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=sft.tokenizers_case.TOKENIZERS["llama3_split_ignore_merges"](),
                                                bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(folder)
    config = transformers.AutoConfig.for_model(
        "llama", vocab_size=len(fast), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


def turns_tokenize_apart(tok, conversation):
    """Whether the ChatML text tokenized piece by piece (cut around each assistant's content and end
    marker) gives the whole text's ids: what ftlaunch needs to mark assistant tokens exactly
    (data/examples.h; it refuses a record otherwise)."""
    pieces, text = [], ""
    for m in conversation:
        if m["role"] == "assistant":
            pieces += [text + "<|im_start|>assistant\n", m["content"] + "<|im_end|>"]
            text = "\n"
        else:
            text += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    pieces.append(text)
    joined = [i for p in pieces for i in tok(p, add_special_tokens=False)["input_ids"]]
    return joined == tok("".join(pieces), add_special_tokens=False)["input_ids"]


def compare_rows(ours, ref, what):
    same = ours is not None and len(ours) == len(ref)
    first_diff = None
    if same:
        first_diff = next((i for i, (a, b) in enumerate(zip(ours, ref)) if a != b), None)
        same = first_diff is None
    detail = f"{len(ref)} rows" if same else (f"row {first_diff} differs" if first_diff is not None
                                              else f"{len(ours or [])} rows vs TRL's {len(ref)}")
    check(same, f"{what}: rows equal to TRL's ({detail})")


def same_records_rows(model_dir, data_dir, out, records, tokenizer, packing, flags, what, **trl):
    """ftlaunch's rows for `records` (bfd-packed or not) against TRL's own tokenization of them."""
    if packing:
        flags += ("--packing", "True", "--packing_strategy", "bfd")
    ours, proc = ftlaunch_rows(model_dir, data_dir, out, flags)
    if ours is None:
        print(proc.stdout[-1500:], proc.stderr[-1500:])
    compare_rows(ours, trl_rows(None, None, packing, records=records, tokenizer=tokenizer, **trl),
                 f"{what}, {'bfd' if packing else 'no packing'}")


def packed_collate(rows):
    """TRL's padding-free collator over a micro-batch of packed rows: one flattened sequence. No
    KV cache, as in SFTConfig's training (gradient checkpointing turns it off): transformers finds
    the documents from position_ids only without one (masking_utils)."""
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    return {**{k: batch[k] for k in ("input_ids", "position_ids", "labels")}, "use_cache": False}


def main():
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as work:
        model_dir, data_dir, texts = sft.make_inputs(work)
        tok = transformers.AutoTokenizer.from_pretrained(model_dir)
        frags = sft.tokenizers_case.FRAGMENTS
        many = [" ".join(frags[(i * 11 + k) % len(frags)] for k in range(1 + (i * 7) % 9)) for i in range(2300)]
        many[5] = many[1500] = ""  # tokenize to nothing: left out, yet counted in TRL's batches of 1000
        many_ids = [tok(t, add_special_tokens=False)["input_ids"] for t in many]
        longer = sum(len(i) > MAX_LEN for i in many_ids)
        many_dir = write_jsonl(os.path.join(work, "many"), [{"text": t} for t in many])
        print(f"     {len(many)} texts, {longer} longer than {MAX_LEN} tokens, "
              f"{len(set(len(i) for i in many_ids))} distinct lengths")

        for strategy in ("bfd", "bfd_split"):
            ours, proc = ftlaunch_rows(model_dir, many_dir, os.path.join(work, strategy),
                                       ("--packing", "True", "--packing_strategy", strategy))
            if ours is None:
                print(proc.stdout[-2000:], proc.stderr[-2000:])
            compare_rows(ours, trl_rows(many_ids, None, True, strategy), f"--packing_strategy {strategy}")
        ours, _ = ftlaunch_rows(model_dir, many_dir, os.path.join(work, "bfd_3"),
                                ("--packing", "True", "--packing_strategy", "bfd", "--dataset_num_proc", "3"))
        compare_rows(ours, trl_rows(many_ids, None, True, "bfd", processes=3), "--packing_strategy bfd, --dataset_num_proc 3")

        # The evaluation split: packed as training is unless --eval_packing False (SFTConfig's).
        shutil.copy(os.path.join(many_dir, "train.jsonl"), os.path.join(many_dir, "test.jsonl"))
        evaluated = ("--packing", "True", "--packing_strategy", "bfd", "--splits", "train,test", "--eval_strategy",
                     "steps", "--eval_steps", "1")
        for eval_packing in (None, False):
            flags = evaluated + (("--eval_packing", "False") if eval_packing is False else ())
            ours, proc = ftlaunch_rows(model_dir, many_dir, os.path.join(work, f"eval_packing_{eval_packing}"), flags,
                                       split="test")
            if ours is None:
                print(proc.stdout[-1500:], proc.stderr[-1500:])
            packed = eval_packing is None
            compare_rows(ours, trl_rows(many_ids if packed else [i for i in many_ids if i], None, packed),
                         f"evaluation split, --eval_packing {eval_packing}")
        os.remove(os.path.join(many_dir, "test.jsonl"))

        for mode in ("keep_start", "keep_end"):
            ours, proc = ftlaunch_rows(model_dir, many_dir, os.path.join(work, mode), ("--truncation_mode", mode))
            compare_rows(ours, trl_rows([i for i in many_ids if i], None, False, truncation=mode),
                         f"no packing, --truncation_mode {mode}")

        # Assistant masks: all 0 for every 5th record, else 1 from the middle on.
        masks = [[0] * len(i) if n % 5 == 0 else [0] * (len(i) // 2) + [1] * (len(i) - len(i) // 2)
                 for n, i in enumerate(many_ids)]
        records = [{"input_ids": i, "assistant_masks": m} for i, m in zip(many_ids, masks) if i]
        masked_dir = write_jsonl(os.path.join(work, "masked"), records)
        kept_ids = [r["input_ids"] for r in records]
        kept_masks = [r["assistant_masks"] for r in records]
        ours, _ = ftlaunch_rows(model_dir, masked_dir, os.path.join(work, "masked_split"),
                                ("--packing", "True", "--packing_strategy", "bfd_split"))
        compare_rows(ours, trl_rows(kept_ids, kept_masks, True, "bfd_split"), "assistant_masks, bfd_split")
        ours, _ = ftlaunch_rows(model_dir, masked_dir, os.path.join(work, "masked_start"), ())
        compare_rows(ours, trl_rows(kept_ids, kept_masks, False), "assistant_masks, no packing (target-less rows left out)")

        # Prompt-completion records, tokenized by TRL (with the tokenizer's special tokens, as TRL
        # calls it): EOS added to a completion without it, the completion from where the ids of
        # prompt and prompt + completion diverge, only its tokens targets unless
        # --completion_only_loss False.
        eos = tok.eos_token
        pairs = [{"prompt": many[i] + ("" if i % 3 else " "), "completion": many[(i * 5 + 1) % len(many)] + (eos if i % 4 == 0 else "")}
                 for i in range(1200) if many[i]]
        pairs_dir = write_jsonl(os.path.join(work, "pairs"), pairs)
        for only, packing in ((True, False), (True, True), (False, True)):
            same_records_rows(model_dir, pairs_dir, os.path.join(work, f"pairs_{only}_{packing}"), pairs, tok, packing,
                              ("--add_special_tokens", "True", "--completion_only_loss", str(only)),
                              f"prompt-completion, completion_only_loss {only}", completion_only_loss=only)

        # Conversational prompt-completion records, rendered in ChatML (--chat_template_format
        # chatml; TRL with the tokenizer train.py makes, the prompt with its generation prompt).
        convs = sft.tokenizers_case.conversations(300)
        chats = [{"prompt": c[:-1], "completion": c[-1:]} for c in convs]
        chats_dir = write_jsonl(os.path.join(work, "chat_pairs"), chats)
        template, eos_token, additional = sft.tokenizers_case.CHAT_FORMATS["chatml"]
        chat_tok = transformers.AutoTokenizer.from_pretrained(model_dir, pad_token="<pad>", bos_token="<s>",
                                                              eos_token=eos_token, additional_special_tokens=additional)
        chat_tok.chat_template = template
        for packing in (False, True):
            same_records_rows(model_dir, chats_dir, os.path.join(work, f"chats_{packing}"), chats, chat_tok, packing,
                              ("--chat_template_format", "chatml"), "conversational prompt-completion",
                              completion_only_loss=True)

        # With --assistant_only_loss (a byte-level tokenizer: ftlaunch refuses it for Metaspace
        # ones, which merge across turns): targets where completion and assistant masks agree.
        byte_dir = byte_level_model(work)
        byte_tok = transformers.AutoTokenizer.from_pretrained(byte_dir, pad_token="<pad>", bos_token="<s>",
                                                              eos_token=eos_token, additional_special_tokens=additional)
        byte_tok.chat_template = sft.tokenizers_case.ASSISTANT_MASK_TEMPLATES["chatml"] + \
            "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
        kept = [c for c in chats if turns_tokenize_apart(byte_tok, c["prompt"] + c["completion"])]
        kept_dir = write_jsonl(os.path.join(work, "chat_pairs_byte"), kept)
        same_records_rows(byte_dir, kept_dir, os.path.join(work, "chats_assistant_only"), kept, byte_tok, True,
                          ("--chat_template_format", "chatml", "--assistant_only_loss", "True"),
                          f"conversational prompt-completion ({len(kept)}), --assistant_only_loss",
                          completion_only_loss=True, assistant_only_loss=True)

        front = write_jsonl(os.path.join(work, "front"),
                            [{"input_ids": list(range(3, 43)), "assistant_masks": [1] * 4 + [0] * 36}])
        _, proc = ftlaunch_rows(model_dir, front, os.path.join(work, "front_out"), ("--truncation_mode", "keep_end"))
        text = proc.stdout + proc.stderr
        check(proc.returncode == 2 and "--truncation_mode" in text and "step 1/" not in text,
              f"every target cut off: exit {proc.returncode}, the message names --truncation_mode")

        # The loss curve on bfd rows against transformers fed TRL's packed rows.
        text_ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        with tempfile.TemporaryDirectory() as out:
            args = SFTConfig(output_dir=out, max_length=MAX_LEN, packing=True, bf16=False, report_to="none")
            packed = list(SFTTrainer._prepare_dataset(_Preparer(), datasets.Dataset.from_dict({"input_ids": text_ids}),
                                                      None, args, True, None, "train"))
        ours, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "curve"), 2, 2,
                                   extra=("--packing", "True", "--packing_strategy", "bfd", "--max_seq_len", str(MAX_LEN)))
        ref, _ = sft.reference_losses(model_dir, texts, 2, 2, rows=packed, collate=packed_collate)
        sft.compare_curves(ours, ref, 1e-4, f"bfd packing ({len(packed)} rows of {len(texts)} texts), loss vs "
                                            "transformers on TRL's padding-free batches")
    finish("all packing checks passed")


if __name__ == "__main__":
    main()
