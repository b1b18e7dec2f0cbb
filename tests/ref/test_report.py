"""`retort report`: one self-contained HTML file (inline SVG, no script, nothing fetched)
with the funnel, length histograms, train curves and eval bars of a database built here
(import --as-samples, verdicts and eval_results written with sqlite3, a train log written
by hand); rendered by headless Chromium to a non-empty PNG without console errors."""
import json
import math
import os
import random
import re
import shutil
import sqlite3
import struct

import pytest

from conftest import assert_one_error_line, run


@pytest.fixture(scope="module")
def db(tmp_path_factory, retort_bin):
    d = tmp_path_factory.mktemp("report")
    src = d / "probs.jsonl"
    rnd = random.Random(3)
    src.write_text("".join(json.dumps({"question": f"What is {i} plus {i * 7}?", "answer":
                                       "Adding gives " + "so " * rnd.randint(0, 300) + f"#### {i * 8}"}) + "\n"
                           for i in range(40)))
    path = d / "run.db"
    r = run([retort_bin, "import", "--db", str(path), "--format", "gsm8k", "--as-samples", str(src)])
    assert r.returncode == 0, r.stderr
    c = sqlite3.connect(str(path))
    samples = [x[0] for x in c.execute("SELECT id FROM samples ORDER BY id")]
    for i, s in enumerate(samples):
        c.execute("INSERT INTO verdicts (sample_id, filter, pass, score) VALUES (?, 'verify', 1, 1)", (s,))
        c.execute("INSERT INTO verdicts (sample_id, filter, pass, score) VALUES (?, 'length', ?, 0)", (s, int(i % 5 != 0)))
    prompts = [x[0] for x in c.execute("SELECT id FROM prompts ORDER BY id")]
    for run_name, p in (("teacher", 0.8), ("student<&>", 0.5)):
        for bench, pids in (("gsm8k", prompts[:25]), ("aime24", prompts[25:])):
            for pid in pids:
                for j in range(3):
                    ok = rnd.random() < p
                    c.execute("INSERT INTO eval_results (run, model, benchmark, prompt_id, sample_index, extracted, "
                              "correct, n_tokens, finish_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              (run_name, "local:/m/" + run_name, bench, pid, j, "1" if ok else "2", int(ok),
                               rnd.randint(10, 900), rnd.choice(["stop", "length"])))
    c.commit()
    c.close()
    log = d / "train.jsonl"
    with open(log, "w") as f:
        for s in range(1, 121):
            f.write(json.dumps({"step": s, "loss": 2.5 * math.exp(-s / 40) + 0.4, "lr": 1e-4 * min(1, s / 10),
                                "grad_norm": 1.0, "tokens": 512 * s, "tokens_per_s": 900.0}) + "\n")
        f.write("not json\n")
    return path, log


def test_report_is_self_contained_and_complete(retort_bin, db, tmp_path):
    path, log = db
    out = tmp_path / "report.html"
    r = run([retort_bin, "report", "--db", str(path), "--out", str(out), "--train-log", str(log)])
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert html.count("<svg") >= 6   # funnel, bytes histogram, loss, lr, pass@1, cons@k
    assert "<script" not in html.lower()
    # nothing is fetched: no src/href attributes, no CSS url() or @import
    assert not re.search(r"\b(src|href)\s*=", html) and "url(" not in html and "@import" not in html
    for needle in ("Filter funnel", "length", "verify", "train.jsonl", "Learning rate", "gsm8k", "aime24",
                   "teacher", "student&lt;&amp;&gt;"):
        assert needle in html, needle
    assert "student<&>" not in html
    # the funnel numbers: 40 samples, 8 removed by length
    assert ">40<" in html and "32 (−8)" in html
    # the polyline of the loss has one point per logged step
    polys = re.findall(r'<polyline[^>]*points="([^"]*)"', html)
    assert len(polys) == 2 and all(len(p.split()) == 120 for p in polys)


def test_report_renders_in_chromium(retort_bin, db, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("skipped: chromium not installed (Debian package chromium; scripts/deps.sh)")
    path, log = db
    out = tmp_path / "report.html"
    assert run([retort_bin, "report", "--db", str(path), "--out", str(out), "--train-log", str(log)]).returncode == 0

    def render(html, png):
        return run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}",
                    "--window-size=820,2400", f"--screenshot={png}", f"file://{html}"], timeout=120)

    # the console check catches errors: a page with a script error is flagged
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>noSuchFunction();</script></body></html>")
    r = render(bad, tmp_path / "bad.png")
    assert "CONSOLE" in r.stderr, r.stderr[-2000:]

    png = tmp_path / "report.png"
    r = render(out, png)
    assert png.exists(), r.stderr[-2000:]
    console = [l for l in r.stderr.splitlines() if "CONSOLE" in l]
    assert not console, console
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    assert (w, h) == (820, 2400) and len(data) > 20000   # a blank page compresses to a few KB


def test_report_errors(retort_bin, db, tmp_path):
    path, log = db
    assert run([retort_bin, "report", "--db", str(path)]).returncode == 2
    assert run([retort_bin, "report", "--out", str(tmp_path / "x.html")]).returncode == 2
    bad = tmp_path / "empty.jsonl"
    bad.write_text("{}\n")
    p = run([retort_bin, "report", "--db", str(path), "--out", str(tmp_path / "x.html"), "--train-log", str(bad)])
    assert_one_error_line(p, "empty.jsonl")
    assert not (tmp_path / "x.html").exists()
    p = run([retort_bin, "report", "--db", str(tmp_path / "none.db"), "--out", str(tmp_path / "x.html")])
    assert p.returncode == 1 and not (tmp_path / "x.html").exists()


def test_report_reads_a_real_train_log_and_an_empty_database(retort_bin, tools_dir, tmp_path):
    """A log written by `retort train --log` (tiny Qwen2 on synthetic shards), and a database
    with nothing in it: every section says what is missing."""
    import subprocess
    mk = os.path.join(tools_dir, "student_mkshard")
    if not os.access(mk, os.X_OK):
        pytest.fail(f"test tool {mk} not built (make tests-build)")
    shards = tmp_path / "shards"
    shards.mkdir()
    subprocess.run([mk, str(shards / "shard-00000.bin"), "32", "16", "256", "1"], check=True)
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 256, "hidden_size": 32,
           "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
           "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": True,
           "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu"}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    log = tmp_path / "train.jsonl"
    p = run([retort_bin, "train", "--threads", "2", "--init", str(tmp_path / "c.json"), "--data", str(shards),
             "--batch", "2", "--steps", "12", "--lr", "1e-3", "--warmup", "4", "--out", str(tmp_path / "o"),
             "--log", str(log)], timeout=300)
    assert p.returncode == 0, p.stderr
    db = tmp_path / "empty.db"
    assert run([retort_bin, "db", "init", str(db)]).returncode == 0
    out = tmp_path / "r.html"
    r = run([retort_bin, "report", "--db", str(db), "--out", str(out), "--train-log", str(log)])
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    polys = re.findall(r'<polyline[^>]*points="([^"]*)"', html)
    assert len(polys) == 2 and all(len(p.split()) == 12 for p in polys)
    assert "retort filter" in html and "retort eval" in html
    last = json.loads(log.read_text().splitlines()[-1])
    assert f"<td>{last['loss']:.4f}</td>" in html
