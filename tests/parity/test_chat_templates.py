"""ftlaunch's Jinja renderer (lib/jinja) against transformers' apply_chat_template environment.

Each template below is written for this test in the shapes of the chat templates models ship
(ChatML with a default system prompt, Llama 3 headers with tools and a date, Mistral's
[INST] with role alternation checks, Gemma's turns, a Qwen3-like template with namespace(),
reversed loops, reasoning and tool calls, Phi-3, Zephyr) plus one that exercises the rest of
what the renderer supports (filters, tests, macros, loop variables, whitespace control, tojson's
options, slicing, arithmetic, string methods). Every template is rendered by transformers'
own compiled environment (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, its
tojson, raise_exception, namespace, {% generation %}) and by `ftl_tokenizer_probe jinja` on 40+
variable sets each: the text must be identical byte for byte, {% generation %} spans must cover
the same characters, and where jinja2 raises (raise_exception, undefined attributes) ftlaunch
must raise too.
"""
import json
import os
import random
import subprocess
import sys
import tempfile

from transformers.utils.chat_template_utils import _compile_jinja_template, render_jinja_template

CHATML_DEFAULT_SYSTEM = """{%- if messages[0]['role'] == 'system' -%}
    {%- set system_text = messages[0]['content'] -%}
    {%- set rest = messages[1:] -%}
{%- else -%}
    {%- set system_text = 'You are a helpful assistant.' -%}
    {%- set rest = messages -%}
{%- endif -%}
<|im_start|>system
{{ system_text }}<|im_end|>
{% for message in rest %}
<|im_start|>{{ message.role }}
{% if message.role == 'assistant' %}{% generation %}{{ message.content }}<|im_end|>{% endgeneration %}
{% else %}{{ message.content }}<|im_end|>
{% endif %}
{% endfor %}
{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

LLAMA3_STYLE = """{{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = strftime_now("%Y") %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] | trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Year: " + date_string + "\\n" }}
{%- if tools is not none %}
    {{- "You may call these functions:\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if message.role == 'tool' %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable and message.content is not string %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- elif 'tool_calls' in message %}
        {%- set call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + call.name + '", "parameters": ' + call.arguments | tojson + '}' }}
        {{- "<|eot_id|>" }}
    {%- else %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

MISTRAL_STYLE = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""

GEMMA_STYLE = """{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '
' + message['content'] | trim + '<end_of_turn>
' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model
'}}{% endif %}"""

QWEN3_STYLE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""

PHI3_STYLE = """{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>
' + message['content'] + '<|end|>
'}}{% elif message['role'] == 'user' %}{{'<|user|>
' + message['content'] + '<|end|>
'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>
' + message['content'] + '<|end|>
'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>
' }}{% else %}{{ eos_token }}{% endif %}"""

ZEPHYR_STYLE = """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}"""

# Everything else the renderer supports, compared the same way.
KITCHEN_SINK = """{# a comment #}
{%- macro turn(role, text, suffix='!') -%}
[{{ role | upper }}:{{ text | trim }}{{ suffix }}]
{%- endmacro -%}
{% set header %}n={{ messages | length }} roles={{ messages | map(attribute='role') | join(',') }}{% endset %}
{{ header }}
users={{ messages | selectattr('role', 'equalto', 'user') | list | length }} others={{ messages | rejectattr('role', 'eq', 'user') | map(attribute='role') | unique | sort | join('/') }}
{% for m in messages if m.role != 'system' %}
  {%+ if loop.index is divisibleby 2 %}even{% else %}odd{% endif %} {{ loop.index }}/{{ loop.length }} r{{ loop.revindex0 }} {{ loop.cycle('a', 'b', 'c') }}
  {{- turn(m.role, m.content) if m.content is string else turn(m.role, 'parts', suffix='?') }}
  {%- if loop.previtem is defined %} prev={{ loop.previtem.role }}{% endif %}
  {%- if m.content is string and m.content | length > 40 %}{% continue %}{% endif %} len={{ m.content | string | length }}
  {%- if loop.index > 6 %}{% break %}{% endif %}
{% else %}
no turns
{% endfor %}
{{ messages[0].content[:5] ~ '|' ~ messages[-1].role[::-1] ~ '|' ~ messages[0]['content'][-3:] }}
{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ 2 ** 8 }} {{ 7 / 2 }} {{ 1.5 * 2 }} {{ 10 - 0.25 }} {{ (3 + 4) * 2 }}
{{ none }} {{ true }} {{ false ~ none }} {{ [1, 'two', none, 2.50] }} {{ {'k': 'v', 'n': 1} }} {{ 1e-7 }} {{ 123456789.0 * 1e9 }}
{{ 'a' in 'cat' }} {{ 'z' not in ['x', 'y'] }} {{ 'role' in messages[0] }} {{ 1 < 2 < 3 }} {{ 'b' >= 'a' }}
{{ 'x' if add_generation_prompt }}{{ 'y' if not add_generation_prompt else 'z' }} {{ undefined_name | default('dflt') }} {{ '' | default('empty', true) }}
{{ '  Mixed Case text  ' | trim | lower | title }} {{ 'hello world' | capitalize }} {{ 'a-b-c' | replace('-', '+') }} {{ 'a,b,,c'.split(',') }} {{ ' x  y '.split() }}
{{ 'abc'.startswith(('x', 'a')) }} {{ 'abc'.endswith('bc') }} {{ 'hello'.find('l') }} {{ 'banana'.count('an') }} {{ '-'.join(['p', 'q']) }} {{ 'A B'.lower().replace(' ', '_') }}
{{ messages | first | tojson }} {{ (messages | last).role }} {{ [3, 1, 2] | sort | join }} {{ [3, 1, 2] | sort(reverse=true) | list }} {{ ['b', 'A', 'c'] | sort }}
{{ {'b': 1, 'a': [1, 2, {'c': none}]} | tojson(indent=2) }}
{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }} {{ {'x': 'é"\\\\'} | tojson(ensure_ascii=true) }} {{ [1, 2] | tojson(separators=(',', ':')) }}
{% for k, v in {'one': 1, 'two': 2.0} | items %}{{ k }}={{ v }};{% endfor %} {% for k, v in {'b': 1, 'a': 2} | dictsort %}{{ k }}{{ v }}{% endfor %}
{{ range(3) | list }} {{ range(1, 10, 3) | join(',') }} {{ [1, 2, 3] | sum }} {{ [4, 2, 9] | max }} {{ [4, 2, 9] | min }} {{ -5 | abs }} {{ 2.567 | round(2) }} {{ '42' | int + 1 }} {{ '2.5' | float }}
{{ 'one two  three' | wordcount }} {{ 'line1\\nline2' | indent(2) }} {{ '<b>&' | e }} {{ 'ab' | center(6) }}|
{%- set ns = namespace(count=0, names=[]) %}
{%- for m in messages %}{% set ns.count = ns.count + 1 %}{% set ns.names = ns.names + [m.role] %}{% endfor %}
{{ ns.count }} {{ ns.names }} {{ dict(a=1, b='x') }}
{% raw %}{{ not rendered }} {% if %}{% endraw %}
{{- ' [' -}}   {{- ' spaced ' -}}   {{- '] ' }}
{%- if tools is defined and tools %}{{ tools | map(attribute='function') | map(attribute='name') | join(', ') }}{% endif %}
{{ "escapes: \\t|\\u00e9|\\x41|\\\\" }} {{ 'adjacent' 'strings' }}
{{ messages[0].content.strip().upper()[:3] }} {{ 'x'.rjust is defined }} {{ messages.0.role }}
{{ messages[-1].content | upper }}|{{ messages[-1].content | lower | title }}|{{ messages[-1].content | capitalize }}|{{ messages[-1].content is lower }} {{ messages[-1].content is upper }} {{ '123' is lower }} {{ 'ABC' is upper }} {{ messages[-1].content.islower() }}
{{ '  a b  c '.split(none, 1) }} {{ messages | map(attribute='content') | map('lower') | sort | first | default('') | length }}
"""

# Reading an attribute of an undefined value raises in jinja2 (its default Undefined) and here.
UNDEFINED_ACCESS = """{{ messages[0].content }}{{ messages[0].missing }}|{{ nothing }}|{{ messages[0].missing is defined }}
{%- if messages | length > 4 %}{{ messages[0].missing.attr }}{% endif %}"""

TEMPLATES = {
    "chatml_default_system": CHATML_DEFAULT_SYSTEM,
    "llama3_style": LLAMA3_STYLE,
    "mistral_style": MISTRAL_STYLE,
    "gemma_style": GEMMA_STYLE,
    "qwen3_style": QWEN3_STYLE,
    "phi3_style": PHI3_STYLE,
    "zephyr_style": ZEPHYR_STYLE,
    "kitchen_sink": KITCHEN_SINK,
    "undefined_access": UNDEFINED_ACCESS,
}

TEXTS = [
    "Hello!", "What is 2+2?", "  leading and trailing spaces  ", "line one\nline two\n", "你好，世界 🌍",
    "Use <|im_end|> literally", "Quotes ' and \" and \\ backslash", "", "tab\tseparated", "A much longer answer " * 4,
    "<think>\nreasoning here\n</think>\n\nThe answer is 4.", "café naïve", "{{ not a template }}", "{% raw %}",
    "Ünïcödé Ελληνικά ПРИВЕТ мир ǅ", "ALL CAPS ÉTÉ", "123 ?!",
]

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}},
         {"type": "function", "function": {"name": "add", "parameters": {"a": 1, "b": 2.5, "flag": True, "none": None}}}]


def conversations(rng, n):
    """Random chats: an optional system turn, alternating user/assistant turns (sometimes broken),
    tool calls and tool results, reasoning_content."""
    out = []
    for i in range(n):
        messages = []
        if rng.random() < 0.4:
            messages.append({"role": "system", "content": rng.choice(TEXTS)})
        for turn in range(rng.randint(1, 5)):
            messages.append({"role": "user", "content": rng.choice(TEXTS)})
            reply = {"role": "assistant", "content": rng.choice(TEXTS)}
            if rng.random() < 0.2:
                reply["tool_calls"] = [{"type": "function",
                                        "function": {"name": "get_weather", "arguments": {"city": rng.choice(TEXTS)}}}]
            if rng.random() < 0.15:
                reply["reasoning_content"] = rng.choice(TEXTS)
            messages.append(reply)
            if "tool_calls" in reply and rng.random() < 0.7:
                messages.append({"role": "tool", "content": rng.choice(TEXTS)})
        if rng.random() < 0.1:
            messages.append({"role": "assistant", "content": "out of turn"})
        if rng.random() < 0.3:
            messages.pop()
        variables = {"messages": messages, "add_generation_prompt": rng.random() < 0.5,
                     "bos_token": "<s>", "eos_token": "</s>", "tools": TOOLS if rng.random() < 0.3 else None}
        if rng.random() < 0.2:
            variables["enable_thinking"] = False
        if i == 0:
            variables["date_string"] = "26 Jul 2024"
        out.append(variables)
    return out


def reference(template, variables):
    """transformers' rendering: text and {% generation %} spans (character offsets), or the error."""
    variables = dict(variables)
    messages = variables.pop("messages")
    try:
        texts, spans = render_jinja_template(conversations=[messages], chat_template=template,
                                             return_assistant_tokens_mask=True, **variables)
        return {"text": texts[0], "spans": [list(s) for s in spans[0]]}
    except Exception as e:  # noqa: BLE001 -- any jinja2 error must be an error in ftlaunch too
        return {"error": f"{type(e).__name__}: {e}"}


def main():
    probe = os.environ["FTL_TOKENIZER_PROBE"]
    rng = random.Random(20261207)
    cases = conversations(rng, 45)
    failures = 0
    compared = errors = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, template in TEMPLATES.items():
            _compile_jinja_template(template)  # the reference accepts it
            template_path = os.path.join(tmp, name + ".jinja")
            cases_path = os.path.join(tmp, name + ".jsonl")
            out_path = os.path.join(tmp, name + ".out.jsonl")
            with open(template_path, "w", encoding="utf-8") as f:
                f.write(template)
            with open(cases_path, "w", encoding="utf-8") as f:
                for c in cases:
                    f.write(json.dumps(c, ensure_ascii=False) + "\n")
            subprocess.run([probe, "jinja", template_path, cases_path, out_path], check=True)
            with open(out_path, encoding="utf-8") as f:
                ours = [json.loads(line) for line in f]
            assert len(ours) == len(cases), (name, len(ours))
            counts = {"rendered": 0, "raised": 0, "spans": 0}
            for i, (case, got) in enumerate(zip(cases, ours)):
                want = reference(template, case)
                counts["raised" if "error" in want else "rendered"] += 1
                counts["spans"] += len(want.get("spans", []))
                if "error" in want or "error" in got:
                    errors += "error" in want
                    if ("error" in want) != ("error" in got):
                        failures += 1
                        print(f"FAIL {name} case {i}: reference {want.get('error', 'rendered')!r}, "
                              f"ftlaunch {got.get('error', 'rendered')!r}")
                    elif "raise_exception" in template and "raised an exception" in got["error"]:
                        message = want["error"].split(": ", 1)[1]
                        if message not in got["error"]:
                            failures += 1
                            print(f"FAIL {name} case {i}: message {got['error']!r} lacks {message!r}")
                    continue
                compared += 1
                text = got["text"]
                encoded = text.encode("utf-8")
                spans = [[len(encoded[:b].decode("utf-8")), len(encoded[:e].decode("utf-8"))] for b, e in got["spans"]]
                if text != want["text"] or spans != want["spans"]:
                    failures += 1
                    if failures <= 5:
                        import difflib
                        print(f"FAIL {name} case {i}:")
                        sys.stdout.writelines(difflib.unified_diff(want["text"].splitlines(True), text.splitlines(True),
                                                                   "transformers", "ftlaunch"))
                        if spans != want["spans"]:
                            print("  spans", want["spans"], "vs", spans)
            print(f"{name}: {counts}")
    print(f"compared {compared} renders, {errors} reference errors matched; failures: {failures}")
    assert compared > 250 and errors > 10, (compared, errors)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
