#!/usr/bin/env python3
"""Regenerates tests/fixtures/chat/expected.json: token offsets, and chat records rendered by transformers'
apply_chat_template with the real Llama 3 and Qwen3 tokenizers (tests/fixtures/tokenizer/{llama3,qwen3})
and their templates, which tests/chat.rs compares webtune's chat records against.

    /opt/venv-ref/bin/python tools/make_chat_fixtures.py

For each tokenizer, two templates:
- "marked": tests/fixtures/chat/<name>_marked.jinja, the real template with {% generation %} markers
  around each assistant turn's content and end-of-turn token (as TRL's training templates do); the
  expected mask is transformers' own `return_assistant_tokens_mask`.
- "real": the template of tokenizer_config.json (no markers: transformers' mask is all zero, which
  expected.json records as `hf_mask_sum`). The expected mask is webtune's rule, computed here with
  transformers' rendering and tokenizers' offsets: assistant message i's turn starts where
  render(messages[:i], add_generation_prompt=True) ends and runs to the end of the first end-of-turn
  token after it (the special token the template writes right after an assistant message's content).
The conversational prompt/completion records train only what starts after render(prompt,
add_generation_prompt=True).
"""

import gzip
import json
import os
import shutil
import tempfile

import transformers
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOK = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
OUT = os.path.join(ROOT, "tests", "fixtures", "chat")

RECORDS = [
    {"messages": [{"role": "system", "content": "You are terse."},
                  {"role": "user", "content": "What is 2+2?"},
                  {"role": "assistant", "content": "4."}]},
    {"messages": [{"role": "user", "content": "  Hi there  "},
                  {"role": "assistant", "content": " Hello! How can I help?\n"},
                  {"role": "user", "content": "Name a colour."},
                  {"role": "assistant", "content": "Blue"}]},
    {"messages": [{"role": "user", "content": "Grüße aus Köln 🌍 — naïve café, 東京"},
                  {"role": "assistant", "content": "Hallo! 👋 Schöne Grüße zurück, 東京も。"}]},
    {"messages": [{"role": "user", "content": "Think first: 3*7?"},
                  {"role": "assistant", "content": "<think>\n3*7 is 21.\n</think>\n\n21"},
                  {"role": "user", "content": "And 3*8?"},
                  {"role": "assistant", "content": "<think>add 3</think>24"}]},
    {"messages": [{"role": "user", "content": "Say nothing but x, with code:\n```py\nprint('x')\n```"},
                  {"role": "assistant", "content": "x\n\n```\nx\n```"}]},
    {"prompt": [{"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "Good morning"}],
     "completion": [{"role": "assistant", "content": "Bonjour"}]},
]


def load(name):
    d = tempfile.mkdtemp()
    with gzip.open(os.path.join(TOK, name, "tokenizer.json.gz"), "rb") as f, open(os.path.join(d, "tokenizer.json"), "wb") as g:
        g.write(f.read())
    shutil.copy(os.path.join(TOK, name, "tokenizer_config.json"), d)
    tok = AutoTokenizer.from_pretrained(d)
    shutil.rmtree(d)
    return tok


def marked_template(name, real):
    if name == "llama3":
        t = ("{% set loop_messages = messages %}{% for message in loop_messages %}"
             "{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
             "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
             "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
             "{% else %}{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}{% endfor %}"
             "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
        return t
    # qwen3: the real template, the assistant turn's text after "<|im_start|>assistant\n" and its
    # "<|im_end|>" inside one generation block
    t = real
    edits = [
        ("{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}",
         "{{- '<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}"),
        ("{{- '<|im_start|>' + message.role + '\\n' + content }}", "{{- content }}"),
        ("        {%- set content = message.content %}",
         "        {{- '<|im_start|>' + message.role + '\\n' }}\n        {%- generation %}\n        {%- set content = message.content %}"),
        ("        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}",
         "        {{- '<|im_end|>' }}\n        {%- endgeneration %}\n        {{- '\\n' }}\n    {%- elif message.role == \"tool\" %}"),
    ]
    for a, b in edits:
        assert a in t, a
        t = t.replace(a, b)
    return t


def conversation(r):
    if "messages" in r:
        return r["messages"], 0
    return r["prompt"] + r["completion"], len(r["prompt"])


def render(tok, template, msgs, gen):
    return tok.apply_chat_template(msgs, chat_template=template, tokenize=False, add_generation_prompt=gen)


def end_of_turn(tok, template):
    probe = "\uf8f2"
    text = render(tok, template, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}], False)
    after = text[text.rindex(probe) + 1:]
    ids = tok(after, add_special_tokens=False)["input_ids"]
    # an added token marked special (tokenizer.json's added_tokens), as webtune reads them
    added = tok.added_tokens_decoder
    if ids and ids[0] in added and added[ids[0]].special:
        return added[ids[0]].content
    return tok.eos_token


def rule_spans(tok, template, msgs, first):
    text = render(tok, template, msgs, False)
    eot = end_of_turn(tok, template)
    spans = []
    for i, m in enumerate(msgs):
        if i < first or m["role"] != "assistant":
            continue
        before = render(tok, template, msgs[:i], True)
        assert text.startswith(before)
        start = len(before)
        nxt = render(tok, template, msgs[:i + 1], False)
        common = 0
        while common < min(len(text), len(nxt)) and text[common] == nxt[common]:
            common += 1
        end = max(common, start)
        k = text.find(eot, start)
        if k >= 0:
            end = k + len(eot)
        if end > start:
            spans.append((start, end))
    return text, spans


def mask_of(enc, n, spans):
    mask = [0] * n
    for s, e in spans:
        a, z = enc.char_to_token(s), enc.char_to_token(e - 1)
        for k in range(a, z + 1):
            mask[k] = 1
    return mask


def clamp(spans, p):
    return [(max(s, p), e) for s, e in spans if e > max(s, p)]


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "records.jsonl"), "w", encoding="utf-8") as f:
        for r in RECORDS:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    expected = {"versions": {"transformers": transformers.__version__}, "cases": []}
    for name in ["llama3", "qwen3"]:
        tok = load(name)
        real = tok.chat_template
        marked = marked_template(name, real)
        with open(os.path.join(OUT, f"{name}_marked.jinja"), "w", encoding="utf-8") as f:
            f.write(marked)
        for kind, template in [("real", real), ("marked", marked)]:
            for ri, r in enumerate(RECORDS):
                msgs, first = conversation(r)
                out = tok.apply_chat_template(msgs, chat_template=template, tokenize=True, return_dict=True,
                                              return_assistant_tokens_mask=True, add_generation_prompt=False)
                ids = list(out["input_ids"])
                hf_mask = list(out["assistant_masks"])
                text = render(tok, template, msgs, False)
                enc = tok(text, add_special_tokens=False)
                assert enc["input_ids"] == ids
                p = len(render(tok, template, msgs[:first], True)) if first else 0
                if kind == "marked":
                    assert sum(hf_mask) > 0
                    mask = hf_mask
                    if first:
                        # the completion's part of transformers' mask
                        lo = enc.char_to_token(p)
                        mask = [m if k >= lo else 0 for k, m in enumerate(hf_mask)]
                else:
                    text2, spans = rule_spans(tok, template, msgs, first)
                    assert text2 == text
                    mask = mask_of(enc, len(ids), clamp(spans, p))
                expected["cases"].append({"tokenizer": name, "template": kind, "record": ri, "text": text,
                                          "input_ids": ids, "mask": mask, "hf_mask_sum": sum(hf_mask)})
        # token offsets (bytes of UTF-8) of every rendered text, from tokenizers; a token holding part of
        # a character spans the whole character there
        for c in [c for c in expected["cases"] if c["tokenizer"] == name]:
            enc = tok._tokenizer.encode(c["text"], add_special_tokens=False)
            at = [0]
            for ch in c["text"]:
                at.append(at[-1] + len(ch.encode("utf-8")))
            c["offsets"] = [[at[s], at[e]] for s, e in enc.offsets]
            assert enc.ids == c["input_ids"]
        # generation prompt, for generate --chat
        msgs = [{"role": "user", "content": "Hello?"}]
        expected.setdefault("generation", []).append({
                "tokenizer": name, "messages": msgs,
                "input_ids": tok.apply_chat_template(msgs, chat_template=real, tokenize=True, return_dict=True,
                                                     add_generation_prompt=True)["input_ids"],
                "end_of_turn": end_of_turn(tok, real)})
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(len(expected["cases"]), "cases")


if __name__ == "__main__":
    main()
