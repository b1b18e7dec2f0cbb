"""`retort serve` end to end, through the official `openai` Python client (PyPI) and curl.

Two tiny Llama-shaped models over the DeepSeek-V3 tokenizer asset (so chat prompts render
through the deepseek-r1 template, whose generation prompt opens "<think>\\n"):
- a random one: greedy text equals transformers' generate decoded by PyPI `tokenizers`, logprobs
  equal torch.log_softmax of transformers' logits (|Δ| < 1e-4);
- a "chain" one, built so that greedy decoding follows a text written here by hand: its layers
  add nothing (o_proj and down_proj are zero), each chain token's embedding is a one-hot vector
  and lm_head maps it to the next token of the chain, so from the chat prompt's last token it
  writes "Let me add them up.\\n</think>\\n\\nThe answer is 4." and then EOS (transformers'
  generate confirms the chain). The reasoning split of docs/serve.md gives, by hand,
  reasoning_content "Let me add them up.\\n" and content "The answer is 4."; in this tokenizer
  "</think>" is the tokens "</", "think", ">\\n\\n", so streaming must hold back a partial tag.
Plus: streaming equals non-streaming, n > 1, seeds, stop strings, auth (401), body limit (413),
bad requests (400 with an OpenAI error object), 404/405, a client that disconnects mid-stream
(its cache blocks are freed: /metrics), 64 concurrent streaming clients (zero errors, every
stream complete, RSS back to its baseline), SIGTERM draining, and startup errors.
Connections (issue #16): the slow-header attack cut off by --header-timeout while others are
served, per-IP and total connection limits, malformed request lines (400 at once), a chunked body
over --max-body (413 before it ends), an empty API key (exit 2), 1000 parked streams.
"""
import json
import math
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
import torch

from conftest import ROOT, assert_one_error_line, run

openai = pytest.importorskip("openai")
tokenizers = pytest.importorskip("tokenizers")
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

torch.set_grad_enabled(False)

CHAT_PROMPT = "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n"
CHAIN_TEXT = "Let me add them up.\n</think>\n\nThe answer is 4."
REASONING, CONTENT = "Let me add them up.\n", "The answer is 4."
COMPLETION_PROMPT = "Q: sky color? A:"
COMPLETION_TEXT = " Blue, mostly"


@pytest.fixture(scope="module")
def ds_tokenizer(assets):
    p = os.path.join(assets, "tokenizers", "deepseek_v3", "tokenizer.json")
    if not os.path.exists(p):
        pytest.skip(f"skipped: {p} absent")
    return p, tokenizers.Tokenizer.from_file(p)


def base_config(tok, hidden, layers):
    cfg = json.load(open(os.path.join(ROOT, "configs", "models", "tiny-llama.json")))
    cfg.update(vocab_size=tok.get_vocab_size(), hidden_size=hidden, intermediate_size=2 * hidden,
               num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
               eos_token_id=tok.token_to_id("<｜end▁of▁sentence｜>"),
               bos_token_id=tok.token_to_id("<｜begin▁of▁sentence｜>"))
    return cfg


def save(m, d, tok_path):
    m.save_pretrained(str(d))
    os.symlink(tok_path, os.path.join(str(d), "tokenizer.json"))
    m = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32, attn_implementation="eager").eval()
    m.generation_config.eos_token_id = None
    return m


@pytest.fixture(scope="module")
def rand_model(ds_tokenizer, tmp_path_factory):
    tok_path, tok = ds_tokenizer
    torch.manual_seed(7)
    m = AutoModelForCausalLM.from_config(AutoConfig.for_model(**base_config(tok, 32, 2)),
                                         attn_implementation="eager").float().eval()
    g = torch.Generator().manual_seed(7)
    for name, p in m.named_parameters():   # larger weights than the default init: peaked logits
        if name.endswith("norm.weight"):
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
        elif p.ndim == 2:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]) * (3 if "lm_head" in name else 1))
    d = tmp_path_factory.mktemp("serve") / "rand"
    return d, save(m, d, tok_path)


@pytest.fixture(scope="module")
def chain_model(ds_tokenizer, tmp_path_factory):
    tok_path, tok = ds_tokenizer
    H = 64
    cfg = base_config(tok, H, 1)
    torch.manual_seed(8)
    m = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), attn_implementation="eager").float().eval()
    eos = cfg["eos_token_id"]
    chains = [(tok.encode(CHAT_PROMPT, add_special_tokens=False).ids[-1],
               tok.encode(CHAIN_TEXT, add_special_tokens=False).ids + [eos]),
              (tok.encode(COMPLETION_PROMPT, add_special_tokens=False).ids[-1],
               tok.encode(COMPLETION_TEXT, add_special_tokens=False).ids + [eos])]
    nodes = []
    for start, ids in chains:
        nodes += [start] + ids[:-1]
    assert len(set(nodes)) == len(nodes) <= H, "chain tokens must be distinct (each one picks its successor)"
    slot = {t: i for i, t in enumerate(nodes)}
    emb, head = m.model.embed_tokens.weight, m.lm_head.weight
    emb.zero_()
    head.zero_()
    for layer in m.model.layers:
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    m.model.norm.weight.fill_(1)
    for start, ids in chains:
        prev = start
        for t in ids:
            emb[prev, slot[prev]] = 1
            head[t, slot[prev]] = 30 / math.sqrt(H)   # rmsnorm scales a one-hot row by ~sqrt(H): logit ~30
            prev = t
    d = tmp_path_factory.mktemp("serve") / "chain"
    m = save(m, d, tok_path)
    for start, ids in chains:   # transformers follows the chain from each prompt
        p = tok.encode(CHAT_PROMPT if start == chains[0][0] else COMPLETION_PROMPT, add_special_tokens=False).ids
        assert hf_greedy(m, p, len(ids)) == ids
    return d, m


def hf_greedy(m, ids, n):
    x = torch.tensor([ids])   # an explicit mask: the BOS id 0 is not padding
    out = m.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False, eos_token_id=None,
                     pad_token_id=0)
    return out[0, len(ids):].tolist()


class Server:
    """`retort serve --port 0` in the background; url from its "listening on" line."""

    def __init__(self, retort_bin, model, *args, env=None):
        self.p = subprocess.Popen([retort_bin, "serve", "--model", str(model), "--port", "0", "--threads", "2", *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.err = []
        deadline, text, fd = time.time() + 60, "", self.p.stderr.fileno()
        while time.time() < deadline:   # raw reads: a buffered readline could hide a second line from select
            r, _, _ = select.select([fd], [], [], 1)
            if r:
                chunk = os.read(fd, 4096).decode()
                if not chunk:
                    break
                text += chunk
                m = re.search(r"listening on (http://\S+)\n", text)
                if m:
                    self.url = m.group(1)
                    self.err.append(text)
                    return
        self.p.kill()
        raise AssertionError(f"server did not start: {text}{self.p.stderr.read()}")

    def client(self, key="unused"):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=120)

    def metrics(self):
        text = urllib.request.urlopen(self.url + "/metrics", timeout=30).read().decode()
        return {l.split()[0]: float(l.split()[1]) for l in text.splitlines() if l and not l.startswith("#")}

    def rss_kib(self):
        for l in open(f"/proc/{self.p.pid}/status"):
            if l.startswith("VmRSS:"):
                return int(l.split()[1])

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        out, err = self.p.communicate(timeout=120)
        self.err.append(err)
        return self.p.returncode


@pytest.fixture(scope="module")
def rand_server(retort_bin, rand_model):
    s = Server(retort_bin, rand_model[0], "--max-batch", "64")
    yield s
    assert s.stop() == 0, "".join(s.err)


@pytest.fixture(scope="module")
def chain_server(retort_bin, chain_model):
    s = Server(retort_bin, chain_model[0])
    yield s
    assert s.stop() == 0, "".join(s.err)


def curl(*args):
    r = run(["curl", "-s", "-w", "\n%{http_code}", *args], timeout=120)
    body, _, code = r.stdout.rpartition("\n")
    return int(code), body


# ---- against transformers ------------------------------------------------------------------

def test_completion_greedy_text_and_logprobs_match_transformers(rand_server, rand_model, ds_tokenizer):
    _, m = rand_model
    _, tok = ds_tokenizer
    prompt = [100, 2000, 30000, 5, 77, 4242]
    r = rand_server.client().completions.create(model="rand", prompt=prompt, max_tokens=12, temperature=0, logprobs=3,
                                                extra_body={"ignore_eos": True})
    ids = hf_greedy(m, prompt, 12)
    c = r.choices[0]
    assert c.text == tok.decode(ids, skip_special_tokens=True)
    assert c.finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (6, 12, 18)
    assert r.object == "text_completion" and r.model == "rand" and r.id.startswith("cmpl-") and r.created > 0
    lp = torch.log_softmax(m(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1:-1].double(), -1)
    assert c.logprobs.tokens == [tok.decode([i], skip_special_tokens=False) for i in ids]
    off = 0
    for t, i in enumerate(ids):
        assert abs(c.logprobs.token_logprobs[t] - lp[t, i].item()) < 1e-4
        top = torch.topk(lp[t], 3)
        got = sorted(c.logprobs.top_logprobs[t].values(), reverse=True)
        want = top.values.tolist()
        assert len(got) == len({tok.decode([x]) for x in top.indices.tolist()})
        assert all(any(abs(g - w) < 1e-4 for w in want) for g in got)
        assert c.logprobs.text_offset[t] == off
        off += len(c.logprobs.tokens[t])


def test_chat_greedy_and_logprobs_match_transformers(rand_server, rand_model, ds_tokenizer):
    _, m = rand_model
    _, tok = ds_tokenizer
    r = rand_server.client().chat.completions.create(model="rand", messages=[{"role": "user", "content": "What is 2+2?"}],
                                                     max_tokens=10, temperature=0, logprobs=True, top_logprobs=2)
    p = tok.encode(CHAT_PROMPT, add_special_tokens=False).ids
    ids = hf_greedy(m, p, 10)
    text = tok.decode(ids, skip_special_tokens=True)
    assert "</think>" not in text
    msg = r.choices[0].message
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert msg.role == "assistant"
    # the template opened <think> and no </think> came: everything is reasoning
    assert msg.reasoning_content == text and msg.content == ""
    assert r.usage.prompt_tokens == len(p) and r.usage.completion_tokens == 10
    lp = torch.log_softmax(m(torch.tensor([p + ids])).logits[0, len(p) - 1:-1].double(), -1)
    content = r.choices[0].logprobs.content
    assert len(content) == 10
    for t, (e, i) in enumerate(zip(content, ids)):
        assert e.token == tok.decode([i], skip_special_tokens=False)
        assert abs(e.logprob - lp[t, i].item()) < 1e-4
        assert len(e.top_logprobs) == 2
        top = torch.topk(lp[t], 2)
        for x, v, j in zip(e.top_logprobs, top.values.tolist(), top.indices.tolist()):
            assert abs(x.logprob - v) < 1e-4 and x.token == tok.decode([j], skip_special_tokens=False)
        if "\ufffd" not in e.token:
            assert bytes(e.bytes) == e.token.encode()


# ---- streaming, n, seeds ------------------------------------------------------------------

def test_streaming_equals_non_streaming_with_n_and_seed(rand_server):
    c = rand_server.client()
    kw = dict(model="rand", prompt="The quick brown fox", max_tokens=14, temperature=0.9, top_p=0.95, seed=11, n=3,
              extra_body={"ignore_eos": True, "top_k": 50, "min_p": 0.01})
    full = c.completions.create(**kw)
    again = c.completions.create(**kw)
    assert [x.text for x in full.choices] == [x.text for x in again.choices], "a seed gives the same output"
    assert len({x.text for x in full.choices}) > 1, "samples of one prompt differ"
    assert full.usage.completion_tokens == 3 * 14
    two = c.completions.create(**{**kw, "n": 2})
    assert [x.text for x in two.choices] == [x.text for x in full.choices[:2]], "sample j does not depend on n"
    parts, usage, finish = {}, None, {}
    for ch in c.completions.create(**kw, stream=True, stream_options={"include_usage": True}):
        if ch.usage:
            usage = ch.usage
        for x in ch.choices:
            parts[x.index] = parts.get(x.index, "") + x.text
            if x.finish_reason:
                finish[x.index] = x.finish_reason
    assert [parts[i] for i in range(3)] == [x.text for x in full.choices]
    assert finish == {0: "length", 1: "length", 2: "length"}
    assert (usage.prompt_tokens, usage.completion_tokens) == (full.usage.prompt_tokens, 42)
    # chat streaming: deltas add up to the message
    ck = dict(model="rand", messages=[{"role": "user", "content": "hi"}], max_tokens=9, seed=3, n=2)
    msgs = c.chat.completions.create(**ck)
    got = {}
    roles = set()
    for ch in c.chat.completions.create(**ck, stream=True):
        assert ch.object == "chat.completion.chunk"
        for x in ch.choices:
            d = x.delta
            roles.add(d.role) if d.role else None
            got.setdefault(x.index, ["", ""])
            got[x.index][0] += getattr(d, "reasoning_content", None) or ""
            got[x.index][1] += d.content or ""
    assert roles == {"assistant"}
    for i in range(2):
        assert got[i] == [msgs.choices[i].message.reasoning_content, msgs.choices[i].message.content]
    # a longer stream (the server decodes it incrementally) with token logprobs
    lk = dict(model="rand", prompt=[3, 1, 4, 1, 5], max_tokens=150, seed=9, logprobs=1,
              extra_body={"ignore_eos": True, "top_k": 40})
    full = c.completions.create(**lk)
    text, toks = "", []
    for ch in c.completions.create(**lk, stream=True):
        for x in ch.choices:
            text += x.text
            toks += x.logprobs.tokens
    assert text == full.choices[0].text and toks == full.choices[0].logprobs.tokens


def test_sse_wire_format_with_curl(rand_server):
    code, body = curl(rand_server.url + "/v1/completions", "-N", "-H", "Content-Type: application/json", "-d",
                      json.dumps({"prompt": [5, 6, 7], "max_tokens": 3, "stream": True, "ignore_eos": True}))
    assert code == 200
    events = [e for e in body.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["object"] == "text_completion" for c in chunks)


# ---- the reasoning split, stop, finish_reason ------------------------------------------------

def test_reasoning_content_and_content(chain_server, ds_tokenizer):
    c = chain_server.client()
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    r = c.chat.completions.create(model="chain", messages=msgs, temperature=0)
    m = r.choices[0].message
    assert (m.reasoning_content, m.content) == (REASONING, CONTENT)
    assert r.choices[0].finish_reason == "stop"   # EOS
    n_chain = len(ds_tokenizer[1].encode(CHAIN_TEXT, add_special_tokens=False).ids) + 1
    assert r.usage.completion_tokens == n_chain
    rea, con, finish = "", "", None
    for ch in c.chat.completions.create(model="chain", messages=msgs, temperature=0, stream=True):
        for x in ch.choices:
            d = x.delta
            piece = getattr(d, "reasoning_content", None) or ""
            assert "<" not in piece and "think" not in piece, f"a piece of the tag leaked: {piece!r}"
            rea += piece
            con += d.content or ""
            finish = x.finish_reason or finish
    assert (rea, con, finish) == (REASONING, CONTENT, "stop")
    # cut short: still thinking, nothing after </think>
    r = c.chat.completions.create(model="chain", messages=msgs, temperature=0, max_tokens=4)
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.reasoning_content == "Let me add them" and r.choices[0].message.content == ""
    # a stop string ends the content before it
    r = c.chat.completions.create(model="chain", messages=msgs, temperature=0, stop=["is"])
    assert r.choices[0].finish_reason == "stop"
    assert (r.choices[0].message.reasoning_content, r.choices[0].message.content) == (REASONING, "The answer ")
    # completions return the text as generated
    r = c.completions.create(model="chain", prompt=COMPLETION_PROMPT, max_tokens=20, temperature=0)
    assert r.choices[0].text == COMPLETION_TEXT and r.choices[0].finish_reason == "stop"
    r = c.completions.create(model="chain", prompt=COMPLETION_PROMPT, temperature=0, stop=", m", stream=True)
    assert "".join(x.choices[0].text for x in r if x.choices) == " Blue"


def test_chat_with_curl(chain_server):
    code, body = curl(chain_server.url + "/v1/chat/completions", "-H", "Content-Type: application/json", "-d",
                      json.dumps({"messages": [{"role": "user", "content": "What is 2+2?"}], "temperature": 0}))
    assert code == 200
    j = json.loads(body)
    assert j["choices"][0]["message"]["content"] == CONTENT
    assert j["choices"][0]["message"]["reasoning_content"] == REASONING
    assert set(j["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    code, body = curl(chain_server.url + "/v1/models")
    assert code == 200 and json.loads(body)["data"][0]["id"] == "chain"
    assert curl(chain_server.url + "/health")[0] == 200


# ---- auth, limits, bad requests ------------------------------------------------------------

def test_auth_limits_and_bad_requests(retort_bin, rand_model):
    env = dict(os.environ, RETORT_API_KEY="sekrit")
    s = Server(retort_bin, rand_model[0], "--max-body", "4096", env=env)
    try:
        u = s.url
        body = json.dumps({"prompt": [5], "max_tokens": 2})
        code, out = curl(u + "/v1/completions", "-d", body)
        assert code == 401 and json.loads(out)["error"]["code"] == "invalid_api_key"
        assert curl(u + "/v1/completions", "-H", "Authorization: Bearer wrong", "-d", body)[0] == 401
        assert curl(u + "/v1/models")[0] == 401
        with pytest.raises(openai.AuthenticationError):
            s.client("nope").completions.create(model="rand", prompt=[5], max_tokens=2)
        ok = s.client("sekrit")
        assert ok.completions.create(model="rand", prompt=[5], max_tokens=2).usage.completion_tokens >= 1
        assert curl(u + "/health")[0] == 200 and curl(u + "/metrics")[0] == 200
        auth = ["-H", "Authorization: Bearer sekrit", "-H", "Content-Type: application/json"]
        code, out = curl(u + "/v1/completions", *auth, "-d", json.dumps({"prompt": "x" * 5000}))
        assert code == 413 and "limit" in json.loads(out)["error"]["message"]
        code, out = curl(u + "/v1/completions", *auth, "-H", "Transfer-Encoding: chunked", "-d",
                         json.dumps({"prompt": "y" * 5000}))
        assert code == 413
        for bad, param in [('{"prompt": [5], "max_tokens": ', None), ('{"prompt": [5], "temperature": 7}', "temperature"),
                           ('{"prompt": [5], "n": "two"}', "n"), ('{"prompt": [999999999]}', "prompt"),
                           ('{"messages": [{"role": "user", "content": "x"}]}', "prompt")]:
            code, out = curl(u + "/v1/completions", *auth, "-d", bad)
            assert code == 400, (bad, out)
            e = json.loads(out)["error"]
            assert e["type"] == "invalid_request_error" and e["message"] and e["param"] == param, (bad, e)
        with pytest.raises(openai.BadRequestError):
            ok.chat.completions.create(model="rand", messages=[{"role": "user", "content": "x"}], top_p=0)
        with pytest.raises(openai.BadRequestError):
            ok.chat.completions.create(model="rand", messages=[{"role": "user", "content": "x"}], max_tokens=10 ** 6)
        assert curl(u + "/v1/nothing", *auth)[0] == 404
        assert curl(u + "/v1/chat/completions", *auth, "-X", "GET")[0] == 405
        m = s.metrics()
        assert m["retort_request_errors_total"] >= 12
    finally:
        assert s.stop() == 0


# ---- disconnects, load, shutdown ------------------------------------------------------------

def wait_idle(server, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = server.metrics()
        if m["retort_cache_blocks_in_use"] == 0 and m["retort_running_sequences"] == 0 and \
                m["retort_queue_depth"] == 0 and m["retort_requests_in_flight"] == 0:
            return m
        time.sleep(0.1)
    raise AssertionError(f"server did not go idle: {server.metrics()}")


def test_client_disconnect_cancels_and_frees_the_cache(rand_server):
    before = wait_idle(rand_server)["retort_generation_tokens_total"]
    for stream in (True, False):
        sock = socket.create_connection((rand_server.url.split("//")[1].split(":")[0], int(rand_server.url.rsplit(":", 1)[1])))
        body = json.dumps({"prompt": [1, 2, 3], "max_tokens": 1900, "ignore_eos": True, "stream": stream}).encode()
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        deadline = time.time() + 60
        while rand_server.metrics()["retort_running_sequences"] < 1 and time.time() < deadline:
            time.sleep(0.05)
        if stream:   # the headers may come in a packet of their own
            got = b""
            while b"data: " not in got:
                piece = sock.recv(4096)
                assert piece, got
                got += piece
        m = rand_server.metrics()
        assert m["retort_running_sequences"] == 1 and m["retort_cache_blocks_in_use"] > 0
        sock.close()
        after = wait_idle(rand_server)
        assert after["retort_cache_blocks_reserved"] == 0
    assert after["retort_generation_tokens_total"] - before < 2 * 1900, "cancelled requests ran to the end"


def sanitized(binary):
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def test_64_concurrent_streaming_clients(retort_bin, rand_model):
    """64 clients stream completions in a loop for a bounded time (8 s after a warm-up round;
    greedy: kernels/sample.c sorts the whole 129k vocabulary per token when sampling).
    Every stream must end with a finish_reason, the usage chunk and [DONE]; zero errors.
    Memory: the server's RSS after the load is compared with its RSS after the warm-up round
    (same 64 connection threads and request sizes, so allocator arenas, thread stacks and the
    engine's batch buffers already exist). Slack: 8 MiB. The load runs ~1000 streams on this
    machine, so a leak of more than ~8 KiB per request (its job, prompt, tokens and SSE
    buffer) fails the test; allocator noise measured here is under 1 MiB. Under AddressSanitizer
    (make sanitize) this server runs without ASan's quarantine, which otherwise holds freed
    memory on purpose."""
    env = None
    if sanitized(retort_bin):
        env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") +
                   ":quarantine_size_mb=0:thread_local_quarantine_size_kb=0")
    rand_server = Server(retort_bin, rand_model[0], "--max-batch", "64", env=env)
    try:
        load_64_clients(rand_server)
    finally:
        assert rand_server.stop() == 0, "".join(rand_server.err)


def load_64_clients(rand_server):
    url = rand_server.url
    errors, counts = [], [0] * 64

    def one(i):
        body = json.dumps({"prompt": [10 + i, 20, 30 + i], "max_tokens": 12, "ignore_eos": True, "stream": True,
                           "temperature": 0, "stream_options": {"include_usage": True}}).encode()
        req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            events = [e for e in r.read().decode().split("\n\n") if e]
        assert events[-1] == "data: [DONE]", events[-3:]
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        assert chunks[-1]["usage"]["completion_tokens"] == 12
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"

    def client(i, until):
        try:
            while True:
                one(i)
                counts[i] += 1
                if time.time() > until:
                    return
        except Exception as e:  # noqa: BLE001 — every failure is reported
            errors.append(f"client {i}: {e!r}")

    def round_(seconds):
        until = time.time() + seconds
        ts = [threading.Thread(target=client, args=(i, until)) for i in range(64)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    round_(0)
    wait_idle(rand_server)
    base = rand_server.rss_kib()
    done0 = sum(counts)
    round_(8)
    assert not errors, errors[:5]
    assert sum(counts) - done0 >= 64
    wait_idle(rand_server)
    rss = rand_server.rss_kib()
    print(f"64 clients: {sum(counts) - done0} streams in 8 s; RSS {base} KiB after warm-up, {rss} KiB after the load")
    assert rss - base < 8 * 1024, f"RSS grew from {base} KiB to {rss} KiB"


def test_sigterm_drains_in_flight_requests(retort_bin, rand_model):
    s = Server(retort_bin, rand_model[0])
    result = {}

    def req():
        result["r"] = s.client().completions.create(model="rand", prompt=[1, 2], max_tokens=300,
                                                    extra_body={"ignore_eos": True})

    t = threading.Thread(target=req)
    t.start()
    deadline = time.time() + 60
    while s.metrics()["retort_running_sequences"] < 1 and time.time() < deadline:
        time.sleep(0.05)
    s.p.send_signal(signal.SIGTERM)
    t.join(timeout=300)
    assert s.p.wait(timeout=120) == 0
    assert result["r"].usage.completion_tokens == 300 and result["r"].choices[0].finish_reason == "length"
    with pytest.raises(OSError):
        urllib.request.urlopen(s.url + "/health", timeout=5)
    assert "SIGTERM" in s.p.stderr.read()


def test_startup_errors(retort_bin, rand_model, tmp_path):
    assert_one_error_line(run([retort_bin, "serve", "--model", str(tmp_path / "absent"), "--port", "0"]), "tokenizer")
    broken = tmp_path / "broken"   # a tokenizer but no model
    broken.mkdir()
    os.symlink(os.path.join(str(rand_model[0]), "tokenizer.json"), str(broken / "tokenizer.json"))
    assert_one_error_line(run([retort_bin, "serve", "--model", str(broken), "--port", "0"]), "loading the model")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    r = run([retort_bin, "serve", "--model", str(rand_model[0]), "--port", str(port)])
    busy.close()
    assert_one_error_line(r, f"127.0.0.1:{port}", "in use")
    for args in (["--port", "0"], ["--model", str(rand_model[0]), "--port", "70000"],
                 ["--model", str(rand_model[0]), "--bogus"], ["--model", str(rand_model[0]), "--template", "x"]):
        r = run([retort_bin, "serve", *args])
        assert r.returncode == 2 and r.stdout == "", (args, r.stderr)


# ---- connections: slow heads, limits, garbage, oversized chunked bodies, the API key --------

def host_port(server):
    hp = server.url.split("//")[1]
    return hp.rsplit(":", 1)[0], int(hp.rsplit(":", 1)[1])


def read_until_closed(sock, timeout):
    """Everything the server sends until it closes (b"" or a reset), and whether it closed in time."""
    sock.settimeout(timeout)
    got, deadline = b"", time.time() + timeout
    try:
        while time.time() < deadline:
            piece = sock.recv(65536)
            if not piece:
                return got, True
            got += piece
    except ConnectionResetError:
        return got, True
    except socket.timeout:
        pass
    return got, False


def test_slow_header_attack_is_cut_off_while_others_are_served(retort_bin, rand_model):
    """300 loopback connections trickle their request head one byte per second (half are still
    in the request line, half sent it and trickle a header). While they are open (the metrics
    count them), /health and a completion from a normal client answer; every attacking
    connection is closed by --header-timeout (3 s; the sweep runs every 100 ms, so closed by
    ~3.1 s; we allow 8 s), and RSS grows by less than 32 MiB (a thread per connection, as before,
    cost ~1.3 MiB each: 284 -> 665 MB for 300)."""
    s = Server(retort_bin, rand_model[0], "--header-timeout", "3", "--max-connections-per-ip", "1000")
    try:
        host, port = host_port(s)
        rss0 = s.rss_kib()
        heads = [b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"GET /health HTTP/1.1\r\n" + b"X-Slow: " + b"a" * 60 + b"\r\n\r\n"]
        socks, sent = [], []
        t0 = time.time()
        for i in range(300):
            c = socket.create_connection((host, port))
            kind = i % 2
            if kind:   # the request line at once, then the header byte by byte
                c.sendall(heads[1][:22])
                sent.append([kind, 22])
            else:
                c.sendall(heads[0][:1])
                sent.append([kind, 1])
            socks.append(c)
        closed_at = [None] * 300
        served = {}

        def normal_client():
            t = time.time()
            served["health"] = urllib.request.urlopen(s.url + "/health", timeout=30).status
            served["health_s"] = time.time() - t
            t = time.time()
            r = s.client().completions.create(model="rand", prompt=[1, 2, 3], max_tokens=4)
            served["completion"] = r.usage.completion_tokens
            served["completion_s"] = time.time() - t
            served["metrics"] = s.metrics()

        th = threading.Thread(target=normal_client)
        th.start()
        while time.time() - t0 < 12 and None in closed_at:   # one byte per second per connection
            for i, c in enumerate(socks):
                if closed_at[i] is not None:
                    continue
                kind, n = sent[i]
                try:
                    c.sendall(heads[kind][n:n + 1])
                    sent[i][1] += 1
                except OSError:
                    closed_at[i] = time.time() - t0
            r, _, _ = select.select([c for i, c in enumerate(socks) if closed_at[i] is None], [], [], 1.0)
            for c in r:
                i = socks.index(c)
                try:
                    if c.recv(4096) == b"":
                        closed_at[i] = time.time() - t0
                except OSError:
                    closed_at[i] = time.time() - t0
            if "metrics" in served and "rss_during" not in served:
                served["rss_during"] = s.rss_kib()
        th.join(timeout=60)
        rss1 = s.rss_kib()
        for c in socks:
            c.close()
        assert served.get("health") == 200 and served.get("completion") == 4, served
        m = served["metrics"]
        print(f"slow heads: /health {served['health_s']:.2f} s, completion {served['completion_s']:.2f} s, "
              f"{int(m['retort_connections_open'])} connections open; closed at {min(closed_at):.1f}.."
              f"{max(c for c in closed_at if c is not None):.1f} s; RSS {rss0} -> {served.get('rss_during')} -> {rss1} KiB")
        assert m["retort_connections_open"] >= 300, m   # answered while the attack held its connections
        assert None not in closed_at, f"{closed_at.count(None)} attacking connections still open after 12 s"
        assert max(closed_at) < 8, max(closed_at)
        assert min(closed_at) > 2.5, min(closed_at)   # the deadline, not something else, closed them
        assert sent[0][1] < len(heads[0]) and sent[1][1] < len(heads[1])   # no head got through
        m = s.metrics()
        assert m["retort_header_timeouts_total"] >= 300 and m["retort_connections_open"] <= 2, m
        assert max(rss1, served.get("rss_during", 0)) - rss0 < 32 * 1024
    finally:
        assert s.stop() == 0, "".join(s.err)


def test_connection_limits_per_ip_and_in_all(retort_bin, rand_model):
    """--max-connections-per-ip 3 --max-connections 5. Three idle connections from 127.0.0.1
    (they have sent nothing yet: a connection counts from accept): the 4th from 127.0.0.1 gets
    429 and is closed while 127.0.0.2 is still served; with two more from 127.0.0.2 the 6th in
    all (from 127.0.0.3) gets 503; closing one frees its place (the counts go down)."""
    s = Server(retort_bin, rand_model[0], "--max-connections-per-ip", "3", "--max-connections", "5")
    try:
        host, port = host_port(s)

        def conn(src):
            c = socket.socket()
            c.bind((src, 0))
            c.connect((host, port))
            return c

        def health(c):
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            got, closed = read_until_closed(c, 30)
            return got.split(b" ")[1]

        held = [conn("127.0.0.1") for _ in range(3)]
        extra = conn("127.0.0.1")
        got, closed = read_until_closed(extra, 10)
        assert closed and got.startswith(b"HTTP/1.1 429 "), got
        assert health(conn("127.0.0.2")) == b"200"
        time.sleep(1.0)   # the server closed that one after answering; let its place be freed (slow under ASan)
        other = [conn("127.0.0.2") for _ in range(2)]
        full = conn("127.0.0.3")
        got, closed = read_until_closed(full, 10)
        assert closed and got.startswith(b"HTTP/1.1 503 "), got
        held.pop().close()
        time.sleep(0.5)
        assert health(conn("127.0.0.1")) == b"200"
        for c in [*held, *other]:
            c.close()
        m = s.metrics()
        assert m["retort_connections_refused_per_ip_total"] == 1 and m["retort_connections_refused_total"] == 1, m
    finally:
        assert s.stop() == 0, "".join(s.err)


def test_malformed_request_line_gets_400_at_once(retort_bin, rand_model):
    """A request line that cannot be HTTP gets 400 and the connection closes as soon as its first
    bad byte arrives (--header-timeout is 60 s, so the deadline is not what closes them): no
    space, a TLS ClientHello (no line end ever comes), a control byte in the method, a bad
    version, JSON."""
    s = Server(retort_bin, rand_model[0], "--header-timeout", "60")
    try:
        host, port = host_port(s)
        for bad in (b"GARBAGE\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"GE\x00T / HTTP/1.1\r\n\r\n",
                    b"GET / FOO/1.1\r\n\r\n", b'{"prompt": [1]}\n', b"GET /health\r\n\r\n"):
            c = socket.create_connection((host, port))
            c.sendall(bad)
            t = time.time()
            got, closed = read_until_closed(c, 10)
            c.close()
            assert closed and got.startswith(b"HTTP/1.1 400 "), (bad, got)
            assert time.time() - t < 10, bad
            body = got.split(b"\r\n\r\n", 1)[1]
            assert json.loads(body)["error"]["type"] == "invalid_request_error", body
        assert curl(s.url + "/health")[0] == 200
        assert s.metrics()["retort_bad_request_lines_total"] == 6
    finally:
        assert s.stop() == 0, "".join(s.err)


def test_chunked_body_over_the_limit_gets_413_before_it_ends(retort_bin, rand_model):
    """A chunked body sent slowly (1 KiB every 50 ms, 1 MiB in all: ~50 s) to a server with
    --max-body 4096: the 413 arrives after a handful of chunks, long before the body would end,
    and the server closes the connection (it reads no more)."""
    s = Server(retort_bin, rand_model[0], "--max-body", "4096")
    try:
        host, port = host_port(s)
        c = socket.create_connection((host, port))
        c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"400\r\n" + b'{"prompt": "' + b"x" * (1024 - 12) + b"\r\n"
        got, sent = b"", 0
        for sent in range(1, 1025):
            try:
                c.sendall(chunk)
            except OSError:
                break
            r, _, _ = select.select([c], [], [], 0.05)
            if r:
                try:
                    piece = c.recv(65536)
                except ConnectionResetError:
                    break
                got += piece
                if not piece or b"\r\n\r\n" in got:
                    break
        rest, closed = read_until_closed(c, 10)
        got += rest
        c.close()
        assert got.startswith(b"HTTP/1.1 413 "), got
        assert b"limit of 4096 bytes" in got
        assert sent < 64, f"413 after {sent} KiB of a 1024 KiB body"
        assert closed
        assert curl(s.url + "/health")[0] == 200
    finally:
        assert s.stop() == 0, "".join(s.err)


def test_empty_api_key_is_a_usage_error(retort_bin, rand_model):
    """--api-key "" (an unset shell variable) must not turn authentication off, even with
    RETORT_API_KEY set; an empty RETORT_API_KEY is the same mistake."""
    base = [retort_bin, "serve", "--model", str(rand_model[0]), "--port", "0"]
    for args, env in ((["--api-key", ""], dict(os.environ, RETORT_API_KEY="sekrit")),
                      (["--api-key="], None), ([], dict(os.environ, RETORT_API_KEY=""))):
        r = subprocess.run(base + args, capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 2 and r.stdout == "", (args, r.stderr)
        assert "empty" in r.stderr.splitlines()[0] and "API" in r.stderr.splitlines()[0].upper(), r.stderr


def test_a_thousand_parked_streams_do_not_block_the_event_loop(retort_bin, rand_model):
    """1000 streaming requests whose clients never read (they wait in the queue or stream into
    full socket buffers): the event loop stays free, /health and /metrics answer, and when the
    clients hang up every request is cancelled (the cache goes back to empty)."""
    s = Server(retort_bin, rand_model[0], "--max-batch", "16", "--max-connections-per-ip", "2000")
    try:
        host, port = host_port(s)
        wait_idle(s)
        rss0 = s.rss_kib()
        body = json.dumps({"prompt": [1, 2, 3], "max_tokens": 200, "ignore_eos": True, "stream": True}).encode()
        req = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body)
        socks = []
        for _ in range(1000):
            c = socket.create_connection((host, port))
            socks.append(c)
            c.sendall(req)
        deadline = time.time() + 60
        while s.metrics()["retort_requests_in_flight"] < 1000 and time.time() < deadline:
            time.sleep(0.2)
        t = time.time()
        assert urllib.request.urlopen(s.url + "/health", timeout=30).status == 200
        health_s = time.time() - t
        m = s.metrics()
        rss1 = s.rss_kib()
        assert m["retort_requests_in_flight"] == 1000, m
        deadline = time.time() + 120   # the engine streams into the parked connections meanwhile
        while m["retort_generation_tokens_total"] < 500 and time.time() < deadline:
            time.sleep(0.2)
            m = s.metrics()
        assert m["retort_generation_tokens_total"] >= 500 and m["retort_requests_in_flight"] == 1000, m
        for c in socks:
            c.close()
        socks = []
        after = wait_idle(s, timeout=120)
        print(f"1000 parked streams: /health in {health_s:.2f} s; RSS {rss0} -> {rss1} KiB")
        assert after["retort_cache_blocks_reserved"] == 0
        assert rss1 - rss0 < 128 * 1024, (rss0, rss1)
    finally:
        for c in socks:
            c.close()
        assert s.stop() == 0, "".join(s.err)
