"""Decontamination in `retort filter`: planted benchmark text is flagged with the benchmark,
the document and the n-gram; near-misses below n words are not. The expected flags come
from a Python re-implementation of the n-gram normalization (re.findall(r"[^\\W_]+",
text.lower())) over the same benchmark files, applied to every sample."""
import json
import os
import re
import sqlite3
import subprocess

import pytest

from conftest import run

BENCHES = ["gsm8k_test", "math500_test", "aime24_test"]
FIELDS = ["question", "problem", "prompt", "answer", "solution"]


def words(text):
    return re.findall(r"[^\W_]+", text.lower())


def q(db, sql, *args):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


class PyIndex:
    """n-gram -> (benchmark, doc id) of the first document that has it."""

    def __init__(self, n):
        self.n, self.grams = n, {}

    def add_jsonl(self, path, name):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                r = json.loads(line)
                parts = []
                for k in FIELDS:
                    v = r.get(k)
                    if isinstance(v, bool):
                        continue
                    if isinstance(v, str):
                        parts.append(v)
                    elif isinstance(v, int):
                        parts.append(str(v))
                doc_id = r["id"] if isinstance(r.get("id"), str) else (
                    f"id {r['id']}" if isinstance(r.get("id"), int) else f"line {lineno}")
                w = words("\n".join(parts))
                for i in range(len(w) - self.n + 1):
                    self.grams.setdefault(tuple(w[i:i + self.n]), (name, doc_id))

    def find(self, text):
        w = words(text)
        for i in range(len(w) - self.n + 1):
            g = tuple(w[i:i + self.n])
            if g in self.grams:
                return " ".join(g), self.grams[g]
        return None


def expected(ix, prompt, sample):
    for what, t in (("prompt", prompt), ("sample", sample)):
        hit = ix.find(t)
        if hit:
            return what, hit
    return None


def chat(prompt, answer):
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}


def build(retort_bin, tmp_path, records):
    src = tmp_path / "samples.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    db = str(tmp_path / "run.db")
    p = run([retort_bin, "import", "--db", db, "--format", "chat", "--as-samples", "--source", "t", str(src)])
    assert p.returncode == 0, p.stderr
    return db


def check_all(db, ix, n):
    """sample id -> (pass, reason, prompt text) of its decontam verdict; every sample has one."""
    rows = q(db, "SELECT s.id, p.messages, v.pass, v.reason FROM samples s JOIN prompts p ON p.id = s.prompt_id "
                 "JOIN verdicts v ON v.sample_id = s.id AND v.filter = 'decontam' ORDER BY s.id")
    assert len(rows) == q(db, "SELECT COUNT(*) FROM samples")[0][0]
    flagged = {}
    for sid, messages, ok, reason in rows:
        prompt = "\n\n".join(m["content"] for m in json.loads(messages) if m["role"] == "user")
        flagged[sid] = (ok, reason, prompt)
    return flagged


def custom_bench(tmp_path):
    path = tmp_path / "private_eval.jsonl"
    recs = [
        {"id": "pe-1", "question": "A farmer has seventeen sheep and all but nine of them run away; how many are left "
                                    "standing in the field after the storm?", "answer": "9"},
        {"question": "Compute the number of ordered pairs of positive integers whose product equals two hundred "
                     "and whose sum is a multiple of seven.", "answer": "4"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return str(path), recs


def test_planted_custom_benchmark_text(retort_bin, tmp_path):
    path, recs = custom_bench(tmp_path)
    q0 = recs[0]["question"]
    w0 = q0.split()
    samples = [
        # 12 benchmark words with other case and punctuation -> flagged
        chat("Solve this.", "Let me think: " + " ".join(w0[2:14]).upper().replace(" ", ", ") + " ... done."),
        # exactly 9 consecutive words (n - 1) -> not flagged
        chat("Solve that.", "Consider " + " ".join(w0[0:9]) + " zebra " + " ".join(w0[10:18]) + "."),
        # the prompt is the benchmark question -> flagged as prompt
        chat(q0, "The answer is 9."),
        chat("Clean prompt about geometry.", "A triangle has three sides and the angles add up to one hundred eighty."),
    ]
    db = build(retort_bin, tmp_path, samples)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("filters: [decontam]\ndecontam:\n  benchmarks: []\n")
    p = run([retort_bin, "filter", "--db", db, "--config", str(cfg), "--decontam", path])
    assert p.returncode == 0, p.stderr
    assert "private_eval: 2 records" in p.stdout, p.stdout
    ix = PyIndex(10)
    ix.add_jsonl(path, "private_eval")
    got = check_all(db, ix, 10)
    assert len(got) == 4
    for sid, (ok, reason, prompt) in got.items():
        text = samples[sid - 1]["messages"][1]["content"]
        want = expected(ix, prompt, text)
        if want is None:
            assert ok == 1 and reason.startswith("ok"), reason
        else:
            what, (gram, (bench, doc)) = want
            assert ok == 0, (sid, reason)
            assert reason == f'{what} shares a 10-gram with {bench} ({doc}): "{gram}"', reason
    assert [got[i][0] for i in (1, 2, 3, 4)] == [0, 1, 0, 1]
    assert "(pe-1)" in got[1][1] and got[3][1].startswith("prompt shares")


def test_n_is_configurable(retort_bin, tmp_path):
    path, recs = custom_bench(tmp_path)
    w = recs[1]["question"].split()
    samples = [chat("P1", "so " + " ".join(w[3:8]) + " ok"),   # 5 words: flagged at n = 5
               chat("P2", "so " + " ".join(w[3:7]) + " ok")]   # 4 words: not
    db = build(retort_bin, tmp_path, samples)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"filters: [decontam]\ndecontam:\n  n: 5\n  benchmarks: []\n  files: [{path}]\n")
    p = run([retort_bin, "filter", "--db", db, "--config", str(cfg)])
    assert p.returncode == 0, p.stderr
    v = q(db, "SELECT sample_id, pass, reason FROM verdicts WHERE filter = 'decontam' ORDER BY 1")
    assert v[0][1] == 0 and "5-gram with private_eval (line 2)" in v[0][2], v
    assert v[1][1] == 1


def test_missing_assets_are_skipped_with_a_message(retort_bin, tmp_path):
    db = build(retort_bin, tmp_path, [chat("P", "some text here")])
    env = dict(os.environ, RETORT_ASSETS=str(tmp_path / "nowhere"))
    p = run_env([retort_bin, "filter", "--db", db, "--config", _cfg(tmp_path, "filters: [decontam]\n")], env)
    assert p.returncode == 0, p.stderr
    assert "decontam skipped" in p.stderr and "gsm8k_test absent" in p.stderr, p.stderr
    assert q(db, "SELECT COUNT(*) FROM verdicts")[0][0] == 0


def _cfg(tmp_path, text):
    f = tmp_path / "cfg.yaml"
    f.write_text(text)
    return str(f)


def run_env(args, env):
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)


def test_real_benchmarks_flag_exactly_what_python_finds(retort_bin, tmp_path, assets):
    bdir = os.path.join(assets, "benchmarks")
    for b in BENCHES + ["gsm8k_train"]:
        if not os.path.exists(os.path.join(bdir, b + ".jsonl")):
            pytest.skip(f"skipped: {b}.jsonl absent")
    ix = PyIndex(10)
    for b in BENCHES:
        ix.add_jsonl(os.path.join(bdir, b + ".jsonl"), b)
    load = lambda b: [json.loads(l) for l in open(os.path.join(bdir, b + ".jsonl"), encoding="utf-8") if l.strip()]
    gsm, math, aime, train = load("gsm8k_test"), load("math500_test"), load("aime24_test"), load("gsm8k_train")
    samples = [chat(r["question"], r["answer"]) for r in train[:400]]       # realistic, mostly clean
    mw = math[17]["problem"].split()
    samples += [
        chat("Tell me a story.", "Once upon a time. " + gsm[5]["question"].upper()),          # planted question
        chat(aime[3]["problem"], "I do not know."),                                            # planted prompt
        chat("Explain.", "Here: " + math[40]["solution"][:400]),                               # planted solution
        chat("Near miss.", " ".join(words(" ".join(mw))[:9]) + " banana"),                     # 9 words only
    ]
    db = build(retort_bin, tmp_path, samples)
    p = run([retort_bin, "filter", "--db", db, "--config", _cfg(tmp_path, "filters: [decontam]\n"),
             "--assets", assets])
    assert p.returncode == 0, p.stderr
    got = check_all(db, ix, 10)
    n_flag = 0
    for sid, (ok, reason, prompt) in got.items():
        text = samples[sid - 1]["messages"][1]["content"]
        want = expected(ix, prompt, text)
        if want is None:
            assert ok == 1, (sid, reason)
        else:
            n_flag += 1
            what, (gram, (bench, doc)) = want
            assert ok == 0 and reason == f'{what} shares a 10-gram with {bench} ({doc}): "{gram}"', (sid, reason, want)
    k = len(samples)
    assert [got[k - 3][0], got[k - 2][0], got[k - 1][0], got[k][0]] == [0, 0, 0, 1]
    assert "gsm8k_test (line 6)" in got[k - 3][1] and "aime24_test (id " in got[k - 2][1]
    assert "math500_test (line 41)" in got[k - 1][1]
    assert 3 <= n_flag < len(samples) // 2


def test_decontam_field_names_like_import(retort_bin, tmp_path):
    bench = tmp_path / "held_out.jsonl"
    bench.write_text(json.dumps({"id": 3, "text": "the quick brown fox jumps over the lazy dog by the river bank",
                                 "question": "unrelated words that appear nowhere else in any sample at all here"}) + "\n")
    samples = [chat("P1", "Story: The quick brown fox jumps over the lazy dog by the river."),
               chat("P2", "unrelated words that appear nowhere else in any sample at all here")]
    db = build(retort_bin, tmp_path, samples)
    p = run([retort_bin, "filter", "--db", db, "--config", _cfg(tmp_path, "filters: [decontam]\ndecontam:\n  benchmarks: []\n"),
             "--decontam", str(bench), "--decontam-field", "text"])
    assert p.returncode == 0, p.stderr
    v = q(db, "SELECT sample_id, pass, reason FROM verdicts WHERE filter = 'decontam' ORDER BY 1")
    assert v[0][1] == 0 and "held_out (id 3)" in v[0][2], v
    assert v[1][1] == 1, "only the named field is indexed"
