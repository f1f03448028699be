"""Conversations rendered with the model's own chat template (--chat_template_format none).

TRL's SFTTrainer renders a conversational dataset with the tokenizer's chat_template
(apply_chat_template: the special tokens, the record's `tools`, {% generation %} blocks for
assistant_only_loss); ftlaunch renders the same template with its own Jinja renderer (lib/jinja).
A byte-level model folder is saved by transformers 5 (which writes the template to
chat_template.jinja), then its training rows are compared with TRL's own `_prepare_dataset` +
collator on the same records, row for row (input_ids, labels, position_ids):
  messages            unpacked and bfd-packed, some records with a `tools` column (JSON text)
  assistant_only      --assistant_only_loss True, bfd: targets from the template's generation blocks,
                      including tokens that cross a block boundary (marked from token offsets)
  prompt-completion   conversational pairs (the prompt with its generation prompt), bfd
  tokenizer_config    the same template read from tokenizer_config.json instead of the .jinja file
  chat_template_path  a model without a template, given one by --chat_template_path
  ShareGPT            `conversations` of {"from", "value"} (TRL converts them to messages), bfd
  tool calls          assistant tool calls whose arguments the template prints with tojson, keys
                      in the file's order (datasets.load_dataset keeps such JSON as written)
Refused with a clear error: a messages dataset for a model without a chat template, and
--assistant_only_loss with a template that has no {% generation %} block.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import transformers
from transformers.utils.chat_template_utils import render_jinja_template

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
import test_packing as packing  # noqa: E402
import test_sft_parity as sft  # noqa: E402

TEMPLATE = """{{- bos_token }}
{%- if tools %}
    {{- '<|im_start|>system\\nTools:' }}
    {%- for tool in tools %}{{ '\\n' + tool | tojson }}{% endfor %}
    {{- '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {{- '<|im_start|>' + message.role + '\\n' }}
    {%- if message.role == 'assistant' %}
        {%- generation %}{{- message.content | trim }}
        {%- for call in message.tool_calls | default([]) %}{{ '\n<call>' + call.function.name + ' ' + call.function.arguments | tojson + '</call>' }}{% endfor %}
        {{- '<|im_end|>' }}{%- endgeneration %}
    {%- else %}
        {{- message.content | trim + '<|im_end|>' }}
    {%- endif %}
    {{- '\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"""

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Find a word",
                                           "parameters": {"word": {"type": "string"}}}}]


def straddles(tok, messages, tools):
    """Whether a token crosses one of the template's generation-span boundaries: the text cut at
    the spans does not tokenize piece by piece to the whole text's ids, so the mask must come
    from token offsets (transformers marks every token that overlaps a span)."""
    (text,), (spans,) = render_jinja_template([messages], chat_template=TEMPLATE, tools=tools,
                                              return_assistant_tokens_mask=True, bos_token=tok.bos_token)
    cuts = sorted({0, len(text), *[i for s in spans for i in s]})
    pieces = [text[a:b] for a, b in zip(cuts, cuts[1:])]
    joined = [i for p in pieces for i in tok(p, add_special_tokens=False)["input_ids"]]
    return joined != tok(text, add_special_tokens=False)["input_ids"]


def refused(model_dir, data_dir, out, flags, fragment, what):
    _, proc = packing.ftlaunch_rows(model_dir, data_dir, out, flags)
    text = proc.stdout + proc.stderr
    check(proc.returncode == 2 and fragment in text and "step 1/" not in text,
          f"{what}: exit {proc.returncode}, the message says {fragment!r}")
    if fragment not in text:
        print(text[-1500:])


def main():
    with tempfile.TemporaryDirectory() as work:
        model_dir = packing.byte_level_model(work)
        tok = transformers.AutoTokenizer.from_pretrained(model_dir)
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tok.chat_template = TEMPLATE
        tok.save_pretrained(model_dir)
        check(os.path.exists(os.path.join(model_dir, "chat_template.jinja")),
              "transformers saved the template as chat_template.jinja")
        tok = transformers.AutoTokenizer.from_pretrained(model_dir)

        convs = sft.tokenizers_case.conversations(400)
        records = [{"messages": c, "tools": json.dumps(TOOLS) if i % 5 == 0 else None} for i, c in enumerate(convs)]
        data_dir = packing.write_jsonl(os.path.join(work, "messages"), records)
        for packed in (False, True):
            packing.same_records_rows(model_dir, data_dir, os.path.join(work, f"messages_{packed}"), records, tok,
                                      packed, (), f"messages in the model's template ({len(records)}, tools in "
                                                  f"{len(records[::5])})")

        crossing = sum(straddles(tok, r["messages"], json.loads(r["tools"]) if r["tools"] else None) for r in records)
        check(crossing >= 10, f"{crossing}/{len(records)} conversations have a token across a generation-span "
                              "boundary (the case offsets decide)")
        packing.same_records_rows(model_dir, data_dir, os.path.join(work, "assistant_only"), records, tok, True,
                                  ("--assistant_only_loss", "True"),
                                  f"--assistant_only_loss from the template's generation blocks ({len(records)}, "
                                  f"{crossing} with a token across a span boundary)",
                                  assistant_only_loss=True)

        sharegpt = [{"conversations": [{"from": m["role"], "value": m["content"]} for m in c]} for c in convs[:150]]
        sharegpt_dir = packing.write_jsonl(os.path.join(work, "sharegpt"), sharegpt)
        packing.same_records_rows(model_dir, sharegpt_dir, os.path.join(work, "sharegpt_out"), sharegpt, tok, True, (),
                                  f"ShareGPT conversations ({len(sharegpt)})",
                                  data_file=os.path.join(sharegpt_dir, "train.jsonl"))

        calls = []
        for i, c in enumerate(convs[:120]):
            c = [dict(m) for m in c]
            arguments = {"zeta": i, "city": "Paris", "alpha": [1, 2]} if i % 2 else {"b": True, "a": None}
            c[-1]["tool_calls"] = [{"type": "function", "function": {"name": f"tool{i % 3}", "arguments": arguments}}]
            calls.append({"messages": c})
        calls_dir = packing.write_jsonl(os.path.join(work, "calls"), calls)
        packing.same_records_rows(model_dir, calls_dir, os.path.join(work, "calls_out"), calls, tok, False, (),
                                  f"tool calls printed with tojson ({len(calls)})",
                                  data_file=os.path.join(calls_dir, "train.jsonl"))

        pairs = [{"prompt": c[:-1], "completion": c[-1:]} for c in convs]
        pairs_dir = packing.write_jsonl(os.path.join(work, "pairs"), pairs)
        packing.same_records_rows(model_dir, pairs_dir, os.path.join(work, "pairs_out"), pairs, tok, True, (),
                                  "conversational prompt-completion in the model's template", completion_only_loss=True)

        config_dir = os.path.join(work, "config_template")
        shutil.copytree(model_dir, config_dir)
        os.remove(os.path.join(config_dir, "chat_template.jinja"))
        config_path = os.path.join(config_dir, "tokenizer_config.json")
        config = json.load(open(config_path))
        config["chat_template"] = TEMPLATE
        json.dump(config, open(config_path, "w"))
        packing.same_records_rows(config_dir, data_dir, os.path.join(work, "config_out"), records, tok, False, (),
                                  "the template read from tokenizer_config.json")

        bare_dir = os.path.join(work, "no_template")
        shutil.copytree(config_dir, bare_dir)
        del config["chat_template"]
        json.dump(config, open(os.path.join(bare_dir, "tokenizer_config.json"), "w"))
        refused(bare_dir, data_dir, os.path.join(work, "bare_out"), (), "has no chat_template",
                "messages for a model without a chat template")
        template_file = os.path.join(work, "template.jinja")
        with open(template_file, "w") as f:
            f.write(TEMPLATE)
        packing.same_records_rows(bare_dir, data_dir, os.path.join(work, "path_out"), records, tok, False,
                                  ("--chat_template_path", template_file),
                                  "the template given by --chat_template_path (SFTConfig's)")
        plain_dir = os.path.join(work, "plain_template")
        shutil.copytree(model_dir, plain_dir)
        with open(os.path.join(plain_dir, "chat_template.jinja"), "w") as f:
            f.write(TEMPLATE.replace("{%- generation %}", "").replace("{%- endgeneration %}", ""))
        refused(plain_dir, data_dir, os.path.join(work, "plain_out"), ("--assistant_only_loss", "True"),
                "{% generation %}", "--assistant_only_loss with a template without generation blocks")
    finish("all chat template row checks passed")


if __name__ == "__main__":
    main()
