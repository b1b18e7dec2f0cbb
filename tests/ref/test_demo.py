"""`retort demo --quick`: the whole pipeline on the built-in task, checked from outside.

Expected values come from the files and database the demo leaves behind, judged by this
test's own reading of them: each test question's answer is recomputed here from its text,
train and test share no question, every sample in the snapshot passed every filter, every
evaluation row marked correct is so for math-verify, and none marked wrong is the gold itself. At --quick
size the student's accuracy is not asserted (the full size targets ≥ 90% of the teacher);
the pipeline's invariants are."""
import json
import os
import re
import sqlite3
import sys

import numpy as np
import pytest
from math_verify import parse, verify

from conftest import run

PROMPT = re.compile(r"^(\w+) has (\d+) (\w+), (gets|loses) (\d+), then (gets|loses) (\d+)\. How many now\?$")
STAGES = ["task", "tokenizer", "teacher", "generate", "distill", "evaluate"]


def answer_of(prompt):
    m = PROMPT.match(prompt)
    assert m, prompt
    x = int(m.group(2))
    for op, n in ((m.group(4), int(m.group(5))), (m.group(6), int(m.group(7)))):
        x = x + n if op == "gets" else x - n
    return x


@pytest.fixture(scope="module")
def demo(tmp_path_factory, retort_bin):
    d = tmp_path_factory.mktemp("demo")
    r = run([retort_bin, "demo", "--quick", "--seed", "7", "--dir", str(d), "--threads", "2"], timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    return d, r.stdout


def lines(path):
    return [json.loads(l) for l in path.read_text().split("\n") if l.strip()]


def test_demo_prints_each_stage_with_timing_and_the_comparison(demo):
    d, out = demo
    for i, s in enumerate(STAGES):
        assert f"[{i + 1}/6] {s} (at " in out, s
    assert out.count("  done in ") == 6
    assert "comparison on demo-test" in out
    assert re.search(r"teacher vs student: \d+ common questions, agreement", out)
    m = re.search(r"teacher accuracy ([\d.]+)%, student accuracy ([\d.]+)% .* reaches ([\d.]+)% of the teacher", out)
    assert m, out[-2000:]
    t, s, ratio = map(float, m.groups())
    assert 0 <= t <= 100 and 0 <= s <= 100
    if t > 0:
        assert abs(ratio - 100 * s / t) < 0.2


def test_task_answers_are_right_and_splits_are_disjoint(demo):
    d, _ = demo
    test, train = lines(d / "demo-test.jsonl"), lines(d / "train.jsonl")
    assert len(test) == 40 and len(train) == 240
    for rec in test + train:
        assert int(rec["answer"]) == answer_of(rec["prompt"])
    for rec in train:
        sol = rec["solution"]
        assert sol.startswith("<think>\n") and "\n</think>\n\n" in sol
        assert sol.endswith("\\boxed{%s}" % rec["answer"])
    nums = lambda p: PROMPT.match(p).group(2, 4, 5, 6, 7)
    assert not {nums(r["prompt"]) for r in test} & {nums(r["prompt"]) for r in train}


def test_tokenizer_has_bytes_and_qwen_special_tokens(demo):
    d, _ = demo
    tj = json.loads((d / "tokenizer.json").read_text())
    assert tj["model"]["type"] == "BPE" and len(tj["model"]["vocab"]) == 256
    added = {a["content"]: a["special"] for a in tj["added_tokens"]}
    assert added == {"<|endoftext|>": True, "<|im_start|>": True, "<|im_end|>": True, "<think>": False,
                     "</think>": False}


def test_database_holds_every_stage(demo):
    d, _ = demo
    c = sqlite3.connect(str(d / "run.db"))
    q = lambda sql, *a: c.execute(sql, a).fetchall()
    n_train = q("SELECT count(*) FROM prompts WHERE source = 'demo-train'")[0][0]
    assert 0 < n_train <= 240
    assert q("SELECT count(*) FROM prompts WHERE source = 'demo-test'")[0][0] == 40
    # every train prompt keeps its gold answer and reference solution
    for gold, meta in q("SELECT gold, metadata FROM prompts WHERE source = 'demo-train'"):
        assert json.loads(meta)["solution"].endswith("\\boxed{%s}" % gold)
    # k = 2 samples per train prompt, all by the teacher, none for test prompts
    assert q("SELECT count(*), count(DISTINCT prompt_id) FROM samples WHERE teacher = 'demo-teacher'")[0] == (2 * n_train, n_train)
    assert q("SELECT count(*) FROM samples s JOIN prompts p ON p.id = s.prompt_id WHERE p.source != 'demo-train'")[0][0] == 0
    # the filters ran on every sample
    for f in ("verify", "format", "repetition", "decontam", "dedup"):
        assert q("SELECT count(*) FROM verdicts WHERE filter = ?", f)[0][0] == 2 * n_train, f
    # the snapshot: at most one sample per prompt, each passing every verdict it has
    snap = q("SELECT ss.sample_id, s.prompt_id FROM snapshots n JOIN snapshot_samples ss ON ss.snapshot_id = n.id "
             "JOIN samples s ON s.id = ss.sample_id WHERE n.name = 'demo'")
    assert snap, "the snapshot is empty"
    assert len({p for _, p in snap}) == len(snap)
    for sid, _ in snap:
        assert q("SELECT count(*) FROM verdicts WHERE sample_id = ? AND pass = 0", sid)[0][0] == 0
    # both models evaluated on every test question
    golds = {pid: g for pid, g in q("SELECT id, gold FROM prompts WHERE source = 'demo-test'")}
    for name in ("teacher", "student", "student-kd"):
        rows = q("SELECT prompt_id, extracted, correct, model, benchmark FROM eval_results WHERE run = ?", name)
        assert {r[0] for r in rows} == set(golds), name
        assert {r[3] for r in rows} == {"demo-" + name} and {r[4] for r in rows} == {"demo-test"}
        for pid, extracted, correct, _, _ in rows:
            # marked right: math-verify agrees (a student may answer "5-4" for 1); marked wrong: not
            # the gold itself (math-verify is more lenient than retort on malformed text like "5=")
            text = (extracted or "").strip()
            if correct:
                assert extracted is not None and verify(parse(golds[pid]), parse(text)), (name, extracted, golds[pid])
            else:
                assert text != golds[pid], (name, extracted)
    c.close()


def test_models_shards_logs_and_report_exist(demo):
    d, _ = demo
    for m in ("teacher", "student"):
        cfg = json.loads((d / m / "config.json").read_text())
        assert cfg["model_type"] == "qwen2"
        assert (d / m / "model.safetensors").stat().st_size > 0
        assert list((d / f"{m}-data").glob("*.bin"))
        log = lines(d / f"{m}-train.jsonl")
        assert log and log[-1]["loss"] < log[0]["loss"]
    t, s = (json.loads((d / m / "config.json").read_text()) for m in ("teacher", "student"))
    assert s["hidden_size"] * s["num_hidden_layers"] < t["hidden_size"] * t["num_hidden_layers"]
    html = (d / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "<svg" in html
    assert "teacher" in html and "student" in html


def test_kd_student_trains_on_the_same_snapshot_with_aligned_teacher_topk(demo):
    """The KD student: same shards, initial weights, data order and steps as the SFT student, so
    step 1's cross-entropy (before any update) is the SFT student's; the shards carry the
    teacher's top-8 on the assistant tokens, aligned: nearly every sampled token is among its own
    position's teacher top-8 (8 of 264 ids by chance)."""
    d, out = demo
    assert re.search(r"KD student \(same snapshot.*accuracy [\d.]+% \(SFT student [\d.]+%\)", out), out[-1500:]
    assert re.search(r"student vs student-kd: \d+ common questions", out)
    sft, kd = lines(d / "student-train.jsonl"), lines(d / "student-kd-train.jsonl")
    assert len(sft) == len(kd) and all("kd_loss" in r and r["kd_loss"] > 0 for r in kd)
    assert abs(sft[0]["loss"] - kd[0]["loss"]) <= 1e-5 * sft[0]["loss"], (sft[0], kd[0])
    assert (d / "student-kd" / "model.safetensors").stat().st_size > 0
    sys.path.insert(0, os.path.dirname(__file__))
    from test_train_kd import read_shard
    masked = hit = 0
    for f in sorted((d / "student-data").glob("*.bin")):
        sh = read_shard(f)
        assert sh["flags"] == 1 and sh["k"] == 8
        for q, p in zip(*np.nonzero(sh["mask"])):
            masked += 1
            n = int(sh["top_n"][q][p])
            hit += int(sh["tokens"][q][p]) in set(sh["top_ids"][q][p][:n].tolist())
    assert masked > 0 and hit >= 0.9 * masked, (hit, masked)


def test_same_seed_gives_the_same_run(demo, retort_bin, tmp_path):
    d, out = demo
    r = run([retort_bin, "demo", "--quick", "--seed", "7", "--dir", str(tmp_path), "--threads", "2"], timeout=600)
    assert r.returncode == 0, r.stderr
    for f in ("demo-test.jsonl", "train.jsonl", "tokenizer.json", "teacher/model.safetensors",
              "student/model.safetensors"):
        assert (tmp_path / f).read_bytes() == (d / f).read_bytes(), f
    acc = re.compile(r"accuracy [\d.]+%")
    assert acc.findall(r.stdout) == acc.findall(out)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_demo_passes_at_other_seeds(retort_bin, tmp_path, seed):
    """Seed 1 once failed in its last stage: the student, whose vocabulary is padded beyond
    the demo tokenizer's, drew an id no token names. The engine masks such ids now, and eval
    records an undecodable sample as failed instead of stopping."""
    r = run([retort_bin, "demo", "--quick", "--seed", str(seed), "--dir", str(tmp_path), "--threads", "2"], timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert r.stdout.count("  done in ") == 6
    db = sqlite3.connect(str(tmp_path / "run.db"))
    n, bad = db.execute("SELECT count(*), sum(finish_reason = 'error') FROM eval_results").fetchone()
    assert n > 0 and not bad, (n, bad)


def test_bad_arguments_are_usage_errors(retort_bin):
    r = run([retort_bin, "demo", "--seed", "x"])
    assert r.returncode == 2
    r = run([retort_bin, "demo", "extra"])
    assert r.returncode == 2
