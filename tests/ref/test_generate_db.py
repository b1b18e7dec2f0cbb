"""`retort generate --db` against the fake OpenAI-compatible server of tests/ref/fake_openai.py
(on 127.0.0.1) and a local tiny Qwen2 checkpoint:

- every stored text equals the server's deterministic completion for the content that was
  sent (R1 instruction appended to math sources) and the stored per-sample seed, in both
  reasoning styles (reasoning_content / inline think) and both transports (SSE / JSON);
  token counts from usage; top-k logprobs decoded from the zstd blob with libzstd (ctypes);
- with injected latency, 429 (+Retry-After), 500, dropped connections and truncated streams,
  generate ends with every (prompt, index) exactly once; Retry-After is never undercut
  (seconds and HTTP date);
- kill -9 at random moments, several times, then a rerun: exact counts, indices 0..K-1,
  PRAGMA integrity_check ok (Python's sqlite3); SIGINT stops cleanly (exit 130);
- 401 is one error line; usage errors exit 2;
- the local engine path stores what transformers' greedy generate + tokenizers' decode give,
  in the same database as the remote path.
Expected texts come from fake_openai.expected_sample / transformers, never from retort."""
import json
import os
import random
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time

import pytest

from conftest import ROOT, assert_one_error_line, run

sys.path.insert(0, os.path.dirname(__file__))
from fake_openai import expected_sample  # noqa: E402

R1 = "Please reason step by step, and put your final answer within \\boxed{}."


class Server:
    def __init__(self, *args):
        self.p = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "fake_openai.py"), *args],
                                  stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        assert line.startswith("PORT "), line
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def stats(self):
        import urllib.request
        return json.load(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats"))

    def close(self):
        self.p.kill()
        self.p.wait()


@pytest.fixture
def server_factory():
    made = []

    def make(*args):
        s = Server(*args)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def make_db(retort_bin, tmp_path, n_math=6, n_chat=3, name="run.db"):
    """A database with math prompts (source gsm8k_mini) and plain prompts (source chat_mini)."""
    db = tmp_path / name
    g = tmp_path / "gsm8k_mini.jsonl"
    g.write_text("".join(json.dumps({"question": f"What is {i} + {2 * i}?", "answer": f"x\n#### {3 * i}"}) + "\n"
                         for i in range(n_math)))
    c = tmp_path / "chat_mini.jsonl"
    c.write_text("".join(json.dumps({"prompt": f"Write a haiku about the number {i}."}) + "\n" for i in range(n_chat)))
    for f, fmt in ((g, "gsm8k"), (c, "jsonl")):
        if f == g and not n_math or f == c and not n_chat:
            continue
        extra = ["--prompt-field", "prompt"] if fmt == "jsonl" else []
        r = run([retort_bin, "import", "--db", str(db), "--format", fmt, *extra, str(f)])
        assert r.returncode == 0, r.stderr
    return db


def _libzstd():
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library("zstd")
    if not name:
        return None
    lib = ctypes.CDLL(name)
    lib.ZSTD_getFrameContentSize.restype = ctypes.c_ulonglong
    lib.ZSTD_getFrameContentSize.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.ZSTD_decompress.restype = ctypes.c_size_t
    lib.ZSTD_decompress.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
    return lib


_ZSTD = _libzstd()


def unzstd(blob):
    """One zstd frame, decompressed by the system's libzstd (ctypes) or the zstd CLI."""
    import ctypes
    if _ZSTD is not None:
        n = _ZSTD.ZSTD_getFrameContentSize(blob, len(blob))
        assert n < (1 << 40), "frame without a content size"
        out = ctypes.create_string_buffer(max(int(n), 1))
        got = _ZSTD.ZSTD_decompress(out, len(out), blob, len(blob))
        assert not _ZSTD.ZSTD_isError(got) and got == n
        return out.raw[:got]
    if shutil.which("zstd") is None:
        pytest.skip("skipped: neither libzstd nor the zstd tool found to read stored text")
    return subprocess.run(["zstd", "-d", "-c", "-q"], input=blob, capture_output=True, check=True).stdout


def rows(db, teacher=None):
    con = sqlite3.connect(str(db))
    q = ("SELECT s.id, s.prompt_id, s.teacher, s.params, s.seed, s.sample_index, s.text, s.prompt_tokens, "
         "s.thinking_tokens, s.answer_tokens, s.finish_reason, s.mean_logprob, p.source, p.messages "
         "FROM samples s JOIN prompts p ON p.id = s.prompt_id")
    out = []
    for r in con.execute(q):
        d = dict(zip(["id", "prompt_id", "teacher", "params", "seed", "index", "text", "prompt_tokens", "thinking",
                      "answer", "finish", "mean_lp", "source", "messages"], r))
        d["text"] = unzstd(d["text"]).decode()
        if teacher is None or d["teacher"] == teacher:
            out.append(d)
    con.close()
    return out


def sent_content(row, instruction=R1):
    content = json.loads(row["messages"])[-1]["content"]
    if instruction and "gsm8k" in row["source"]:
        content += "\n" + instruction
    return content


def check_complete(db, k, n_prompts, teacher="fake-r1"):
    rs = rows(db, teacher)
    by = {}
    for r in rs:
        by.setdefault(r["prompt_id"], []).append(r["index"])
    assert len(by) == n_prompts
    for pid, idx in by.items():
        assert sorted(idx) == list(range(k)), (pid, sorted(idx))
    con = sqlite3.connect(str(db))
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    con.close()
    return rs


def gen(retort_bin, db, url, *args, timeout=300):
    return run([retort_bin, "generate", "--db", str(db), "--teacher", url, *args], timeout=timeout)


@pytest.mark.parametrize("style,stream", [("reasoning", True), ("inline", True), ("mixed", False), ("inline", False),
                                          ("reasoning", "ignored")])
def test_texts_tokens_and_params_from_the_server(retort_bin, tmp_path, server_factory, style, stream):
    """stream "ignored": retort asks for SSE and the server answers one JSON body anyway."""
    s = server_factory("--style", style, *(["--ignore-stream"] if stream == "ignored" else []))
    db = make_db(retort_bin, tmp_path)
    args = ["--n", "3", "--concurrency", "4"] + ([] if stream else ["--no-stream"])
    r = gen(retort_bin, db, s.url, *args)
    assert r.returncode == 0, r.stderr
    assert "samples 27/27" in r.stderr and "tokens/s" in r.stderr and "ETA" in r.stderr
    rs = check_complete(db, 3, 9)
    seeds = set()
    for x in rs:
        assert x["teacher"] == "fake-r1"   # the model the server reports
        assert x["text"] == expected_sample(sent_content(x), x["seed"]), x
        assert x["finish"] == "stop"
        seeds.add(x["seed"])
        # usage: the fake counts whitespace pieces; reasoning_tokens = pieces up to "</think>"
        n_r = len(f"{x['text'].split(chr(10) + '</think>')[0][len('<think>' + chr(10)):]}\n</think>".split())
        assert x["thinking"] == n_r
        answer = x["text"].split("</think>\n\n")[1]
        assert x["answer"] == len(answer.split())
        assert x["prompt_tokens"] == len(sent_content(x).split())
        assert x["mean_lp"] is None    # no --logprobs
        p = json.loads(x["params"])
        assert p == {"instruction": R1, "instruction_to": "math", "max_tokens": 32768, "seed": 0, "system": None,
                     "temperature": 0.6, "think_prefix": True, "top_p": 0.95}
        assert x["params"] == json.dumps(p, sort_keys=True, separators=(",", ":"))
    assert len(seeds) == 27
    # a rerun finds nothing to do; more samples (K=5) add exactly indices 3 and 4
    r = gen(retort_bin, db, s.url, *args)
    assert r.returncode == 0 and "27 already stored" in r.stderr, r.stderr
    before = {(x["prompt_id"], x["index"]): x["text"] for x in rs}
    bare = s.url[:-len("/v1")] + "/"   # a URL without a path means …/v1
    r = gen(retort_bin, db, bare, "--n", "5", *args[2:])
    assert r.returncode == 0, r.stderr
    rs = check_complete(db, 5, 9)
    assert {(x["prompt_id"], x["index"]): x["text"] for x in rs if x["index"] < 3} == before


def test_options_change_params_and_prompts(retort_bin, tmp_path, server_factory):
    s = server_factory()
    db = make_db(retort_bin, tmp_path, n_math=2, n_chat=2)
    r = gen(retort_bin, db, s.url, "--instruction", "none", "--system", "Be brief.", "--temperature", "0.3",
            "--top-p", "0.5", "--max-tokens", "100", "--seed", "7", "--model", "my-teacher", "--source", "gsm8k_mini",
            "--top-k", "20", "--min-p", "0.05", "--template", "qwen")   # --template: local only, ignored here
    assert r.returncode == 0, r.stderr
    rs = rows(db)
    assert len(rs) == 2 and {x["source"] for x in rs} == {"gsm8k_mini"}
    for x in rs:
        assert x["teacher"] == "my-teacher"
        assert x["text"] == expected_sample(sent_content(x, None), x["seed"])
        assert json.loads(x["params"]) == {"instruction": None, "max_tokens": 100, "seed": 7, "system": "Be brief.",
                                           "temperature": 0.3, "think_prefix": True, "top_p": 0.5, "top_k": 20,
                                           "min_p": 0.05}
    reqs = s.stats()["requests"]
    assert len(reqs) == 2
    for q in reqs:   # what was sent
        assert q["messages"][0] == {"role": "system", "content": "Be brief."} and len(q["messages"]) == 2
        assert (q["temperature"], q["top_p"], q["max_tokens"], q["top_k"], q["min_p"]) == (0.3, 0.5, 100, 20, 0.05)
        assert q["model"] == "my-teacher" and q["stream"] is True and "logprobs" not in q
    # an instruction TEXT applies to every source; a short max_tokens truncates (finish "length")
    r = gen(retort_bin, db, s.url, "--instruction", "Answer in French.", "--max-tokens", "3", "--model", "my-teacher")
    assert r.returncode == 0, r.stderr
    rs = [x for x in rows(db) if json.loads(x["params"])["max_tokens"] == 3]
    assert len(rs) == 4
    for x in rs:
        assert x["finish"] == "length"
        assert x["text"] == "<think>\nLet me think", x["text"]
        assert json.loads(x["params"])["instruction_to"] == "all"


def test_logprobs_and_topk_blob(retort_bin, tmp_path, server_factory):
    s = server_factory()
    db = make_db(retort_bin, tmp_path, n_math=2, n_chat=0)
    r = gen(retort_bin, db, s.url, "--logprobs", "3")
    assert r.returncode == 0, r.stderr
    rs = rows(db)
    con = sqlite3.connect(str(db))
    for x in rs:
        k, n, data = con.execute("SELECT k, n_tokens, data FROM sample_topk WHERE sample_id = ?", (x["id"],)).fetchone()
        assert k == 3
        n_tok = x["thinking"] + x["answer"]
        assert n == n_tok
        vals = list(struct.iter_unpack("<if", unzstd(data)))
        assert len(vals) == n * k
        for i in range(n):
            for j in range(k):
                tid, lp = vals[i * k + j]
                assert tid == i * 10 + j
                assert abs(lp - (-0.05 - 0.1 * (i % 5) - j)) < 1e-6
        assert abs(x["mean_lp"] - sum(-0.05 - 0.1 * (i % 5) for i in range(n)) / n) < 1e-6
    con.close()


def test_faults_every_sample_exactly_once(retort_bin, tmp_path, server_factory):
    s = server_factory("--latency", "0.01", "--p429", "0.15", "--p500", "0.1", "--pdrop", "0.1", "--ptrunc", "0.1",
                       "--style", "mixed", "--fault-seed", str(random.randrange(1 << 30)))
    db = make_db(retort_bin, tmp_path, n_math=14, n_chat=6)
    r = gen(retort_bin, db, s.url, "--n", "4", "--concurrency", "8", "--retries", "10")
    assert r.returncode == 0, r.stderr
    counts = s.stats()["counts"]
    for kind in ("429", "500", "drop", "trunc"):
        assert counts.get(kind, 0) > 0, counts   # each fault really happened (P(not) < 1e-3 each)
    rs = check_complete(db, 4, 20)
    assert len(rs) == 80
    for x in rs:
        assert x["text"] == expected_sample(sent_content(x), x["seed"])
    assert counts["ok"] == 80   # no sample was generated twice
    assert "0 failed" in r.stderr


def test_timeouts_are_retried(retort_bin, tmp_path, server_factory):
    s = server_factory("--pstall", "0.5", "--stall", "3", "--max-faults", "1")
    db = make_db(retort_bin, tmp_path, n_math=4, n_chat=2)
    r = gen(retort_bin, db, s.url, "--n", "2", "--timeout", "0.5", "--concurrency", "12")
    assert r.returncode == 0, r.stderr
    assert s.stats()["counts"].get("stall", 0) > 0
    rs = check_complete(db, 2, 6)
    for x in rs:
        assert x["text"] == expected_sample(sent_content(x), x["seed"])


@pytest.mark.parametrize("value", ["1", "date"])
def test_retry_after_is_honoured(retort_bin, tmp_path, server_factory, value):
    s = server_factory("--p429", "1", "--max-faults", "1", "--retry-after", value)
    db = make_db(retort_bin, tmp_path, n_math=2, n_chat=1)
    r = gen(retort_bin, db, s.url, "--concurrency", "3")
    assert r.returncode == 0, r.stderr
    log = s.stats()["log"]
    first = {}
    for t, key, seed, outcome in log:
        if outcome == "429":
            first[(key, seed)] = t
        else:
            # the retry came no sooner than the server asked: 1 s, or a date at least 1 s ahead
            # (without Retry-After the first retry would come within 0.5 s)
            assert t - first[(key, seed)] >= 0.95, (t - first[(key, seed)])
    assert len(first) == 3
    check_complete(db, 1, 3)


def test_kill9_at_random_moments_then_rerun(retort_bin, tmp_path, server_factory):
    s = server_factory("--latency", "0.1", "--token-latency", "0.002", "--p500", "0.05", "--ptrunc", "0.05")
    db = make_db(retort_bin, tmp_path, n_math=20, n_chat=10)
    cmd = [retort_bin, "generate", "--db", str(db), "--teacher", s.url, "--n", "4", "--concurrency", "4", "--quiet"]
    kills = 0
    for _ in range(12):   # a full run takes ~4 s; kill it at random moments until it was killed 4 times
        if kills == 4:
            break
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(random.uniform(0.1, 0.8))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
        rs = rows(db)   # after each kill: never a duplicate, every stored row whole
        assert len({(x["prompt_id"], x["index"]) for x in rs}) == len(rs)
        for x in rs:
            assert x["text"] == expected_sample(sent_content(x), x["seed"])
    assert kills >= 3
    r = run(cmd)
    assert r.returncode == 0, r.stderr
    rs = check_complete(db, 4, 30)
    assert len(rs) == 120
    for x in rs:
        assert x["text"] == expected_sample(sent_content(x), x["seed"])
    chk = run([retort_bin, "db", "check", str(db)])
    assert chk.returncode == 0, chk.stdout + chk.stderr


def test_sigint_stops_cleanly(retort_bin, tmp_path, server_factory):
    s = server_factory("--latency", "0.2")
    db = make_db(retort_bin, tmp_path, n_math=10, n_chat=10)
    cmd = [retort_bin, "generate", "--db", str(db), "--teacher", s.url, "--n", "4", "--concurrency", "2", "--quiet"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(600):   # wait until generating (a signal before that just ends the process)
        con = sqlite3.connect(str(db))
        n = con.execute("SELECT count(*) FROM samples").fetchone()[0]
        con.close()
        if n >= 2:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("retort: generate: interrupted"), err
    n = len(rows(db))
    assert 0 < n < 80
    r = run(cmd)
    assert r.returncode == 0, r.stderr
    assert len(check_complete(db, 4, 20)) == 80


def test_fatal_http_errors_are_one_line(retort_bin, tmp_path, server_factory):
    s = server_factory("--api-key", "sekrit")
    db = make_db(retort_bin, tmp_path, n_math=1, n_chat=1)
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)
    r = subprocess.run([retort_bin, "generate", "--db", str(db), "--teacher", s.url, "--model", "m"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert_one_error_line(r, "401", "Incorrect API key")
    r = subprocess.run([retort_bin, "generate", "--db", str(db), "--teacher", s.url, "--api-key-env", "NOPE_KEY"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert_one_error_line(r, "NOPE_KEY")
    env["MY_KEY"] = "sekrit"
    r = subprocess.run([retort_bin, "generate", "--db", str(db), "--teacher", s.url, "--api-key-env", "MY_KEY"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(check_complete(db, 1, 2)) == 2


def test_an_endpoint_that_is_down_gives_up(retort_bin, tmp_path):
    db = make_db(retort_bin, tmp_path, n_math=10, n_chat=10)
    import socket
    with socket.socket() as sk:   # a port nothing listens on
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    r = gen(retort_bin, db, f"http://127.0.0.1:{port}/v1", "--model", "m", "--retries", "1", "--n", "2", "--quiet")
    assert_one_error_line(r, "giving up: the last 16 samples all failed", "onnect")
    assert rows(db) == []


def test_usage_errors(retort_bin, tmp_path):
    db = make_db(retort_bin, tmp_path, n_math=1, n_chat=0)
    for args, needle in [(["--db", str(db), "--jsonl", "x.jsonl", "--teacher", "http://x"], "mutually exclusive"),
                         (["--db", str(db)], "--teacher"),
                         (["--db", str(db), "--teacher", "ftp://x"], "--teacher"),
                         (["--db", str(db), "--teacher", "http://x", "--n", "0"], "--n"),
                         (["--db", str(db), "--teacher", "http://x", "--template", "nope"], "template"),
                         (["--db", str(db), "--teacher", "http://x", "--top-k", "1.5"], "--top-k"),
                         (["--db", str(db), "--teacher", "http://x", "--bogus"], "--bogus")]:
        r = run([retort_bin, "generate", *args])
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr, (args, r.stderr)
    r = run([retort_bin, "generate", "--db", str(tmp_path / "none.db"), "--teacher", "http://127.0.0.1:9/v1",
             "--model", "m"])
    assert_one_error_line(r, "none.db")
    bare = tmp_path / "no-tokenizer"   # a config.json and nothing else
    bare.mkdir()
    (bare / "config.json").write_text(open(os.path.join(ROOT, "configs", "models", "tiny-qwen2.json")).read())
    r = run([retort_bin, "generate", "--db", str(db), "--teacher", f"local:{bare}"])
    assert r.returncode == 2 and "tokenizer" in r.stderr, r.stderr
    r = run([retort_bin, "generate", "--db", str(db), "--teacher", f"local:{tmp_path / 'nowhere'}"])
    assert_one_error_line(r, "nowhere")


# ---- the local engine path ----

@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    torch = pytest.importorskip("torch")
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import AutoConfig, AutoModelForCausalLM
    assets = os.environ.get("RETORT_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
    tok_path = os.path.join(assets, "tokenizers", "qwen3", "tokenizer.json")
    if not os.path.exists(tok_path):
        pytest.skip(f"skipped: {tok_path} absent (set RETORT_ASSETS)")
    tok = tokenizers.Tokenizer.from_file(tok_path)
    cfg = json.load(open(os.path.join(ROOT, "configs", "models", "tiny-qwen2.json")))
    cfg.update(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, eos_token_id=tok.token_to_id("<|im_end|>"))
    d = tmp_path_factory.mktemp("gdb") / "tiny-qwen"
    torch.manual_seed(5)
    m = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), attn_implementation="eager").float().eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(1 + 0.2 * torch.randn(p.shape) if "norm" in name else torch.randn(p.shape) / p.shape[-1] ** 0.5)
    m.save_pretrained(str(d))
    return d, m, tok, tok_path


def compose(generated):
    """The stored-text rule of docs/teacher.md for a forced "<think>\\n": reasoning and answer trimmed."""
    if "</think>" in generated:
        r, a = generated.split("</think>", 1)
        return f"<think>\n{r.strip()}\n</think>\n\n{a.strip()}"
    return "<think>\n" + generated.strip()


def test_local_teacher_matches_transformers_and_shares_the_db(retort_bin, tmp_path, qwen, server_factory):
    import torch
    d, m, tok, tok_path = qwen
    db = make_db(retort_bin, tmp_path, n_math=2, n_chat=2)
    r = run([retort_bin, "generate", "--db", str(db), "--teacher", f"local:{d}", "--tokenizer", tok_path,
             "--temperature", "0", "--max-tokens", "12", "--n", "2", "--threads", "2"])
    assert r.returncode == 0, r.stderr
    rs = check_complete(db, 2, 4, teacher="tiny-qwen")
    eot = tok.token_to_id("<|im_end|>")
    # the prompt: the tokenizer's own chat_template (tokenizer_config.json beside tokenizer.json,
    # Qwen3's) rendered by transformers, then the forced "<think>\n"
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(os.path.dirname(tok_path))
    for x in rs:
        chat = hf.apply_chat_template([{"role": "user", "content": sent_content(x)}], tokenize=False,
                                      add_generation_prompt=True) + "<think>\n"
        ids = tok.encode(chat, add_special_tokens=False).ids
        with torch.no_grad():
            out = m.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=eot,
                             pad_token_id=0)[0, len(ids):].tolist()
        assert x["text"] == compose(tok.decode(out, skip_special_tokens=True)), (x["text"], out)
        assert x["prompt_tokens"] == len(ids)
        assert x["finish"] == ("stop" if out[-1] == eot else "length")
        close = tok.token_to_id("</think>")
        gen_n = len(out) - (out[-1] == eot)
        if close in out:
            assert x["thinking"] == out.index(close) + 1
        else:
            assert (x["thinking"], x["answer"]) == (gen_n, 0)
        assert x["mean_lp"] is not None and x["mean_lp"] <= 0
    # greedy: both samples of a prompt are the same; the remote path fills the same database
    by = {}
    for x in rs:
        by.setdefault(x["prompt_id"], set()).add(x["text"])
    assert all(len(v) == 1 for v in by.values())
    s = server_factory()
    r = gen(retort_bin, db, s.url, "--temperature", "0", "--max-tokens", "12", "--n", "2")
    assert r.returncode == 0, r.stderr
    local, remote = rows(db, "tiny-qwen"), rows(db, "fake-r1")
    assert len(local) == len(remote) == 8
    assert {x["params"] for x in local} == {x["params"] for x in remote}
    assert all(x["text"].startswith("<think>\n") for x in local + remote)


# ---- retort eval --model URL ----

def test_eval_through_an_endpoint(retort_bin, tmp_path, server_factory):
    from fake_openai import answer_of
    s = server_factory("--answer-mod", "2", "--style", "inline", "--p500", "0.2", "--ptrunc", "0.1")
    bench = tmp_path / "coin.jsonl"
    qs = [f"Flip coin number {i}." for i in range(6)]
    bench.write_text("".join(json.dumps({"prompt": q, "answer": "1"}) + "\n" for q in qs))
    db = tmp_path / "eval.db"
    args = [retort_bin, "eval", "--db", str(db), "--model", s.url, "--bench", str(bench), "--k", "3", "--json",
            "--concurrency", "4"]
    r = run(args)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    con = sqlite3.connect(str(db))
    got = con.execute("SELECT e.run, e.model, e.sample_index, e.response, e.extracted, e.correct, e.n_tokens, "
                      "e.finish_reason, p.messages FROM eval_results e JOIN prompts p ON p.id = e.prompt_id").fetchall()
    con.close()
    assert len(got) == 18
    import hashlib
    seeds = {}
    for t, key, seed, outcome in s.stats()["log"]:
        if outcome == "ok":
            seeds.setdefault(key, set()).add(seed)
    per_q = {}
    for run_name, model, j, resp, extracted, correct, n_tokens, finish, msgs in got:
        assert run_name == "fake-r1" and model == f"{s.url}#fake-r1"
        content = json.loads(msgs)[-1]["content"]
        text = unzstd(resp).decode()
        match = [sd for sd in seeds[hashlib.sha256(content.encode()).hexdigest()[:16]]
                 if expected_sample(content, sd, 2) == text]
        assert len(match) == 1, text
        want = answer_of(content, match[0], 2)
        assert extracted == str(want)
        assert correct == (want == 1)
        assert finish == "stop" and n_tokens == len(text.replace("<think>\n", "", 1).split())
        per_q.setdefault(content, []).append(correct)
    assert sorted(per_q) == sorted(qs) and all(len(v) == 3 for v in per_q.values())
    pass1 = sum(sum(v) / 3 for v in per_q.values()) / len(per_q)
    b = summary["benchmarks"]["coin"]["runs"]["fake-r1"]
    assert b["model"] == f"{s.url}#fake-r1" and b["questions"] == 6 and b["k"] == 3
    assert abs(b["pass1"] - pass1) < 1e-9
    r = run(args)   # a rerun adds nothing
    assert r.returncode == 0 and "0 samples generated, 18 already stored" in r.stderr, r.stderr
    # an unreachable scheme is one error line; endpoint options are refused for local models
    p = run([retort_bin, "eval", "--db", str(db), "--model", "ftp://x/v1", "--bench", str(bench)])
    assert_one_error_line(p, "local:DIR")
    p = run([retort_bin, "eval", "--db", str(db), "--model", "local:/nowhere", "--bench", str(bench),
             "--concurrency", "2"])
    assert p.returncode == 2



@pytest.fixture(scope="module")
def byte_model(tmp_path_factory):
    """A tiny Qwen2 over a byte-level tokenizer (256 bytes, <|im_start|>, <|im_end|>, <think>,
    </think>): a 260-token vocabulary keeps seeded sampling cheap."""
    pytest.importorskip("torch")
    pytest.importorskip("tokenizers")
    from conftest import save_byte_qwen
    d = tmp_path_factory.mktemp("gdb-bytes") / "byte-qwen"
    save_byte_qwen(d, 64, 128, 4, 2)
    return d


def test_local_kill9_then_rerun_equals_an_uninterrupted_run(retort_bin, tmp_path, byte_model):
    """Seeded sampling (the R1 defaults, temperature 0.6, top-p 0.95): each sample has its own
    seed, so a run killed -9 at random moments and resumed stores exactly what one
    uninterrupted run stores."""
    base = [retort_bin, "generate", "--teacher", f"local:{byte_model}", "--max-tokens", "300", "--n", "3",
            "--threads", "1", "--concurrency", "2", "--quiet"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    clean = make_db(retort_bin, tmp_path / "a", n_math=8, n_chat=4)
    t0 = time.monotonic()
    r = run(base + ["--db", str(clean)])
    assert r.returncode == 0, r.stderr
    full = time.monotonic() - t0
    killed = make_db(retort_bin, tmp_path / "b", n_math=8, n_chat=4)
    kills = 0
    for _ in range(12):
        if kills == 3:
            break
        p = subprocess.Popen(base + ["--db", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(random.uniform(0.05, 0.3) * full)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills >= 3
    r = run(base + ["--db", str(killed)])
    assert r.returncode == 0, r.stderr
    want = {(x["messages"], x["index"]): (x["text"], x["seed"], x["thinking"], x["answer"], x["finish"])
            for x in check_complete(clean, 3, 12, "byte-qwen")}
    got = {(x["messages"], x["index"]): (x["text"], x["seed"], x["thinking"], x["answer"], x["finish"])
           for x in check_complete(killed, 3, 12, "byte-qwen")}
    assert got == want
    assert len({v[0] for v in want.values()}) == 36   # every sample differs: sampling, not greedy


def test_local_prompt_that_cannot_fit_is_skipped(retort_bin, tmp_path, byte_model):
    db = make_db(retort_bin, tmp_path, n_math=2, n_chat=0)
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"prompt": "x" * 3000}) + "\n")   # 3000 byte tokens > 2048 positions
    r = run([retort_bin, "import", "--db", str(db), "--format", "jsonl", "--prompt-field", "prompt", str(long)])
    assert r.returncode == 0, r.stderr
    r = run([retort_bin, "generate", "--db", str(db), "--teacher", f"local:{byte_model}", "--max-tokens", "8",
             "--n", "2", "--threads", "1", "--quiet"])
    assert_one_error_line(r, "2 sample(s) cannot be generated", "context")
    rs = rows(db)
    assert len(rs) == 4 and {x["source"] for x in rs} == {"gsm8k_mini"}
