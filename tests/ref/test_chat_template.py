"""Chat templates: `retort tokenize --chat KIND` renders the text transformers'
apply_chat_template(tokenize=False) renders from the model's tokenizer_config.json, its ids
are the tokenizer's ids of that text, and its mask marks exactly the assistant content and
end-of-turn tokens.

Templates compared against (all run by transformers' Jinja engine):
  llama3       shared/assets/tokenizers/llama3_1/tokenizer_config.json as shipped
  deepseek-r1  DeepSeek-R1's template: the DeepSeek-V3 template shipped in the assets with
               R1's two changes (assistant turns keep only the text after '</think>'; the
               generation prompt opens '<think>\\n'); the test checks both edits applied
  qwen         Qwen2.5-Instruct's template (default system prompt), text below, rendered
               with the Qwen3 tokenizer (same vocabulary)
"""
import json
import os

import pytest

from conftest import run, jsonl_lines
from gen_tok_corpus import ASSETS

transformers = pytest.importorskip("transformers")

QWEN25_TEMPLATE = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)

V3_ASSISTANT = "{%- else %}{{'<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- endif %}"
R1_ASSISTANT = ("{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}"
                "{% set content = content.split('</think>')[-1] %}{% endif %}"
                "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}")
V3_GEN = "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}"
R1_GEN = "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"

# kind -> (asset directory, end-of-turn token)
KINDS = {"deepseek-r1": ("deepseek_v3", "<｜end▁of▁sentence｜>"), "qwen": ("qwen3", "<|im_end|>"),
         "llama3": ("llama3_1", "<|eot_id|>")}

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Solve $x^2=4$."},
     {"role": "assistant", "content": "$x=\\pm 2$"}],
    [{"role": "user", "content": "第一个问题：你好吗？"}, {"role": "assistant", "content": "我很好，谢谢！👍🏽"},
     {"role": "user", "content": "Et en français ? café"}, {"role": "assistant", "content": "Très bien."},
     {"role": "user", "content": "ok"}],
    [{"role": "system", "content": "S1"}, {"role": "user", "content": "u"}, {"role": "system", "content": "S2"},
     {"role": "assistant", "content": "a"}],
    [{"role": "user", "content": "  padded question \n\n"}, {"role": "assistant", "content": "\n  padded answer\t "},
     {"role": "user", "content": "line1\nline2\r\n\ttabbed"}],
    [{"role": "user", "content": "Think first."},
     {"role": "assistant", "content": "<think>\nreasoning here\n</think>\n\nThe answer is 7."},
     {"role": "user", "content": "And again?"}, {"role": "assistant", "content": "Still 7."}],
    [{"role": "user", "content": "Code?"}, {"role": "assistant", "content": "```python\ndef f():\n    return 1\n```"},
     {"role": "user", "content": "<|im_start|> and <｜User｜> inside text"},
     {"role": "assistant", "content": "Literal <|eot_id|> is special."}],
]


def setup(kind):
    d = os.path.join(ASSETS, "tokenizers", KINDS[kind][0])
    if not os.path.exists(os.path.join(d, "tokenizer_config.json")):
        pytest.skip(f"skipped: {d} absent (set RETORT_ASSETS)")
    hf = transformers.AutoTokenizer.from_pretrained(d)
    template = None
    if kind == "deepseek-r1":
        v3 = hf.chat_template
        assert v3.count(V3_ASSISTANT) == 1 and v3.count(V3_GEN) == 1, "DeepSeek-V3 template changed shape"
        template = v3.replace(V3_ASSISTANT, R1_ASSISTANT).replace(V3_GEN, R1_GEN)
    elif kind == "qwen":
        template = QWEN25_TEMPLATE
    return d, hf, template


def hf_render(hf, template, messages, gen):
    return hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen, chat_template=template)


def retort_chat(retort_bin, d, kind, lines):
    p = run([retort_bin, "tokenize", "--tokenizer", os.path.join(d, "tokenizer.json"), "--chat", kind],
            input="".join(json.dumps(l, ensure_ascii=False) + "\n" for l in lines))
    assert p.returncode == 0, p.stderr
    return jsonl_lines(p.stdout)


def ends_with_assistant(c):
    return c[-1]["role"] == "assistant"


@pytest.mark.parametrize("kind", list(KINDS))
def test_text_and_ids_match_transformers(retort_bin, kind):
    d, hf, template = setup(kind)
    cases = [(c, g) for c in CONVERSATIONS for g in (False, True)]
    out = retort_chat(retort_bin, d, kind, [{"messages": c, "add_generation_prompt": g} for c, g in cases])
    for (c, g), o in zip(cases, out):
        want = hf_render(hf, template, c, g)
        assert o["text"] == want, (c, g)
        assert o["ids"] == hf(want, add_special_tokens=False)["input_ids"]
        assert len(o["mask"]) == len(o["ids"])


@pytest.mark.parametrize("kind", list(KINDS))
def test_mask_marks_assistant_content_and_end_of_turn(retort_bin, kind):
    d, hf, template = setup(kind)
    eot = KINDS[kind][1]
    convs = [c for c in CONVERSATIONS if any(m["role"] == "assistant" for m in c)]
    out = retort_chat(retort_bin, d, kind, [{"messages": c} for c in convs])
    for c, o in zip(convs, out):
        # expected mask, from HF's offsets: a token is 1 when any of its characters lies in
        # an assistant turn's content or end-of-turn token, located in the rendered text
        text = o["text"]
        spans, at = [], 0
        for i, m in enumerate(c):
            if m["role"] != "assistant":
                continue
            content = m["content"]
            if kind == "deepseek-r1" and i + 1 < len(c) and "</think>" in content:
                content = content.split("</think>")[-1]
            if kind == "llama3":
                content = content.strip()
            piece = content + eot
            start = text.index(piece, at)
            spans.append((start, start + len(piece)))
            at = start + len(piece)
        enc = hf(text, add_special_tokens=False, return_offsets_mapping=True)
        assert enc["input_ids"] == o["ids"]
        want = [int(any(s < e2 and e > s2 for s2, e2 in spans)) for s, e in enc["offset_mapping"]]
        assert o["mask"] == want, c
        # the masked tokens are runs that each end with the end-of-turn token
        eot_id = hf.convert_tokens_to_ids(eot)
        runs = "".join("1" if m else "0" for m in o["mask"]).split("0")
        ends = [j for j, (i, m) in enumerate(zip(o["ids"], o["mask"])) if m and (j + 1 == len(o["mask"]) or not o["mask"][j + 1])]
        assert all(o["ids"][j] == eot_id for j in ends), c
        assert sum(1 for r in runs if r) == sum(1 for m in c if m["role"] == "assistant")


@pytest.mark.parametrize("kind", list(KINDS))
def test_prompt_only_conversation_has_an_all_zero_mask(retort_bin, kind):
    d, hf, template = setup(kind)
    (o,) = retort_chat(retort_bin, d, kind, [{"messages": CONVERSATIONS[0], "add_generation_prompt": True}])
    assert not any(o["mask"])


def test_r1_final_assistant_turn_keeps_its_thinking(retort_bin):
    """For training, the last assistant turn keeps its <think> block (R1's template strips
    it, which would train on answers only); reasoning_content is written as that block."""
    d, hf, template = setup("deepseek-r1")
    prefix = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "<think>old</think>A1"},
              {"role": "user", "content": "Q2"}]
    head = hf_render(hf, template, prefix, False)
    full = "<think>\nsteps\n</think>\n\nA2"
    lines = [{"messages": prefix + [{"role": "assistant", "content": full}]},
             {"messages": prefix + [{"role": "assistant", "content": "A2", "reasoning_content": "steps"}]}]
    for o in retort_chat(retort_bin, d, "deepseek-r1", lines):
        assert o["text"] == head + "<｜Assistant｜>" + full + "<｜end▁of▁sentence｜>"
        masked = [i for i, m in zip(o["ids"], o["mask"]) if m]
        assert hf.decode(masked) == "A1<｜end▁of▁sentence｜>" + full + "<｜end▁of▁sentence｜>"


def test_bad_conversations_are_line_errors(retort_bin):
    d, hf, template = setup("qwen")
    for msgs in ([{"role": "tool", "content": "x"}], [{"role": "user"}], "nope", [{"content": "x"}]):
        p = run([retort_bin, "tokenize", "--tokenizer", os.path.join(d, "tokenizer.json"), "--chat", "qwen"],
                input=json.dumps({"messages": [{"role": "user", "content": "ok"}]}) + "\n" +
                json.dumps({"messages": msgs}) + "\n")
        assert p.returncode == 1 and "line 2:" in p.stderr, (msgs, p.stderr)
        assert len(p.stdout.splitlines()) == 1
