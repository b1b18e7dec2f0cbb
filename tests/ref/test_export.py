"""`retort export` (chat-jsonl, jsonl), snapshots, verdict stats and the zstd dictionary:
import → export reproduces the source files, compared with Python's json."""
import json
import os
import sqlite3

import pytest

from conftest import run, assert_one_error_line


def bench_file(assets, name):
    p = os.path.join(assets, "benchmarks", name + ".jsonl")
    if not os.path.exists(p):
        pytest.skip(f"skipped: {p} absent")
    return p


def rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def chat_rows(assets, n=400):
    """Chats built from GSM8K: the worked solution as reasoning, the final answer as content
    (every few rows without reasoning, a system prompt, or a multi-turn history)."""
    out = []
    for i, r in enumerate(rows(bench_file(assets, "gsm8k_train"))[:n]):
        work, final = r["answer"].rsplit("####", 1)
        msgs = []
        if i % 7 == 0:
            msgs.append({"role": "system", "content": "You are a careful math tutor."})
        if i % 11 == 0:
            msgs += [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi! Ask away."}]
        msgs.append({"role": "user", "content": r["question"]})
        a = {"role": "assistant", "content": f"The answer is {final.strip()}."}
        if i % 5:
            a["reasoning_content"] = work.strip()
        msgs.append(a)
        out.append({"messages": msgs})
    return out


def write_jsonl(path, recs):
    with open(path, "w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def messages_only(recs):
    """chat-jsonl rows without their metadata."""
    return [{"messages": r["messages"]} for r in recs]


def export(retort_bin, db, fmt, out, *extra):
    p = run([retort_bin, "export", "--db", db, "--format", fmt, *extra, "--out", out])
    assert p.returncode == 0, p.stderr
    return rows(out)


def test_chat_import_export_round_trip(retort_bin, assets, tmp_path):
    chats = chat_rows(assets)
    src = tmp_path / "chats.jsonl"
    write_jsonl(src, chats)
    db = str(tmp_path / "run.db")
    p = run([retort_bin, "import", "--db", db, "--format", "chat", "--as-samples", str(src)])
    assert p.returncode == 0, p.stderr
    assert messages_only(export(retort_bin, db, "chat-jsonl", str(tmp_path / "out.jsonl"), "--reasoning", "field")) == chats
    # the prompt side: every message before the final assistant turn
    got = export(retort_bin, db, "jsonl", str(tmp_path / "prompts.jsonl"))
    assert got == [{"messages": c["messages"][:-1]} for c in chats]


@pytest.mark.parametrize("name,fmt", [("gsm8k_test", "gsm8k"), ("math500_test", "math"), ("aime24_test", "aime")])
def test_jsonl_export_gives_the_source_back(retort_bin, assets, tmp_path, name, fmt):
    src = bench_file(assets, name)
    db = str(tmp_path / "run.db")
    assert run([retort_bin, "import", "--db", db, "--format", fmt, src]).returncode == 0
    assert export(retort_bin, db, "jsonl", str(tmp_path / "out.jsonl")) == rows(src)


def test_think_split(retort_bin, tmp_path):
    """A sample text with think tags (here: an assistant turn that carries them inline) is
    exported as content = the text after </think>, reasoning_content = the text before it."""
    cases = [("<think>\nstep one\nstep two\n</think>\n\nThe answer is 4.", "The answer is 4.", "step one\nstep two"),
             ("plain answer, no tags", "plain answer, no tags", None),
             ("reasoning without the opening tag</think>final", "final", "reasoning without the opening tag"),
             ("<think>\n\n</think>\n\nempty reasoning", "empty reasoning", None)]
    src = tmp_path / "t.jsonl"
    write_jsonl(src, [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": t}]}
                      for i, (t, _, _) in enumerate(cases)])
    db = str(tmp_path / "run.db")
    assert run([retort_bin, "import", "--db", db, "--format", "chat", "--as-samples", str(src)]).returncode == 0
    got = export(retort_bin, db, "chat-jsonl", str(tmp_path / "out.jsonl"), "--reasoning", "field")
    for g, (_, content, reasoning) in zip(got, cases):
        a = g["messages"][-1]
        assert a["content"] == content
        assert a.get("reasoning_content") == reasoning
    # by default the reasoning is inline, in the form the R1 chat templates and SFT expect
    got = export(retort_bin, db, "chat-jsonl", str(tmp_path / "inline.jsonl"))
    for g, (_, content, reasoning) in zip(got, cases):
        a = g["messages"][-1]
        assert a == {"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{content}" if reasoning else content}


def test_snapshot_and_source_selection(retort_bin, assets, tmp_path):
    db = str(tmp_path / "run.db")
    g = bench_file(assets, "gsm8k_test")
    m = bench_file(assets, "math500_test")
    assert run([retort_bin, "import", "--db", db, "--format", "gsm8k", "--as-samples", g]).returncode == 0
    assert run([retort_bin, "import", "--db", db, "--format", "math", "--as-samples", m]).returncode == 0
    con = sqlite3.connect(db)
    con.execute("PRAGMA foreign_keys = ON")
    ids = [r[0] for r in con.execute("SELECT s.id FROM samples s JOIN prompts p ON p.id = s.prompt_id "
                                     "WHERE p.source = 'math500_test' ORDER BY s.id")]
    # verdicts from a pretend filter: every third math sample fails
    con.executemany("INSERT INTO verdicts (sample_id, filter, pass, score, reason) VALUES (?, 'len', ?, 0, NULL)",
                    [(i, int(k % 3 != 0)) for k, i in enumerate(ids)])
    con.commit()
    con.close()
    p = run([retort_bin, "db", "snapshot", db, "math-passed", "--source", "math500_test", "--passed"])
    assert p.returncode == 0, p.stderr
    passed = [i for k, i in enumerate(ids) if k % 3 != 0]
    stats = json.loads(run([retort_bin, "db", "stats", db, "--json"]).stdout)
    assert stats["verdicts"]["len"]["pass"] == len(passed)
    assert stats["verdicts"]["len"]["fail"] == len(ids) - len(passed)
    assert stats["snapshots"] == {"math-passed": len(passed)}
    assert stats["prompts"] == 1319 + 500 and stats["samples"] == 1319 + 500
    assert stats["sources"]["gsm8k_test"] == {"prompts": 1319, "samples": 1319}
    src = rows(m)
    want = [{"messages": [{"role": "user", "content": r["problem"]}, {"role": "assistant", "content": r["solution"]}]}
            for k, r in enumerate(src) if k % 3 != 0]
    got = export(retort_bin, db, "chat-jsonl", str(tmp_path / "snap.jsonl"), "--snapshot", "math-passed")
    assert messages_only(got) == want
    assert [r["metadata"] for r in got] == [{"sample_id": i, "prompt_id": i, "teacher": "reference",
                                             "filters": [{"filter": "len", "pass": True, "score": 0.0}]}
                                            for i in passed]
    assert export(retort_bin, db, "jsonl", str(tmp_path / "snapp.jsonl"), "--snapshot", "math-passed") == \
        [r for k, r in enumerate(src) if k % 3 != 0]
    assert export(retort_bin, db, "jsonl", str(tmp_path / "g.jsonl"), "--source", "gsm8k_test") == rows(g)
    # snapshots are frozen, and a missing one is an error
    assert_one_error_line(run([retort_bin, "db", "snapshot", db, "math-passed"]), "exists")
    assert_one_error_line(run([retort_bin, "export", "--db", db, "--format", "jsonl", "--snapshot", "nope", "--out",
                               str(tmp_path / "x.jsonl")]), "no snapshot named 'nope'")
    assert not os.path.exists(tmp_path / "x.jsonl")


def test_dictionary_beats_plain_zstd_and_keeps_text(retort_bin, assets, tmp_path):
    db = str(tmp_path / "run.db")
    for name, fmt in (("gsm8k_train", "gsm8k"), ("math500_test", "math")):
        assert run([retort_bin, "import", "--db", db, "--format", fmt, "--as-samples",
                    bench_file(assets, name)]).returncode == 0
    before = export(retort_bin, db, "chat-jsonl", str(tmp_path / "a.jsonl"))
    p = run([retort_bin, "db", "dict", db, "--recompress"])
    assert p.returncode == 0, p.stderr
    assert "plain zstd" in p.stdout and "dictionary" in p.stdout
    con = sqlite3.connect(db)
    raw, stored, with_dict = con.execute("SELECT SUM(text_bytes), SUM(length(text)), COUNT(dict_id) FROM samples").fetchone()
    con.close()
    assert with_dict == len(before)
    assert raw / stored > 2.0, "a trained dictionary should compress these short worked solutions > 2x"
    assert export(retort_bin, db, "chat-jsonl", str(tmp_path / "b.jsonl")) == before
    # new samples after the dictionary use it too
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"question": "What is 1+1?", "answer": "1+1=2\n#### 2"}) + "\n")
    assert run([retort_bin, "import", "--db", db, "--format", "gsm8k", "--as-samples", str(extra)]).returncode == 0
    assert export(retort_bin, db, "chat-jsonl", str(tmp_path / "c.jsonl"))[-1]["messages"][-1]["content"] == \
        "1+1=2\n#### 2"
    assert run([retort_bin, "db", "check", db]).returncode == 0


def test_stale_temporaries_of_the_target_are_removed(retort_bin, assets, tmp_path):
    """A killed export leaves OUT.tmp.XXXXXX; the next export to OUT removes it. A temporary
    that a live writer holds (flock) and those of other targets stay."""
    import fcntl
    db = str(tmp_path / "run.db")
    assert run([retort_bin, "import", "--db", db, "--format", "aime", bench_file(assets, "aime24_test")]).returncode == 0
    out = tmp_path / "out.jsonl"
    dead = tmp_path / "out.jsonl.tmp.k1LLed"
    live = tmp_path / "out.jsonl.tmp.L1veW2"
    other = tmp_path / "other.jsonl.tmp.k1LLed"
    for f in (dead, live, other):
        f.write_text("partial")
    with open(live, "r+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        recs = export(retort_bin, db, "jsonl", str(out))
        assert len(recs) == 30
        assert not dead.exists() and live.exists() and other.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(["run.db", "run.db-wal", "run.db-shm", "out.jsonl", live.name, other.name])


def test_failed_export_leaves_no_temporary(retort_bin, assets, tmp_path):
    db = str(tmp_path / "run.db")
    src = tmp_path / "c.jsonl"
    write_jsonl(src, chat_rows(assets, 20))
    assert run([retort_bin, "import", "--db", db, "--format", "chat", "--as-samples", str(src)]).returncode == 0
    con = sqlite3.connect(db)
    con.execute("UPDATE samples SET text = x'00112233' WHERE id = 7")  # not a zstd frame
    con.commit()
    con.close()
    p = run([retort_bin, "export", "--db", db, "--format", "chat-jsonl", "--out", str(tmp_path / "o.jsonl")])
    assert_one_error_line(p, "sample 7")
    assert not [f for f in os.listdir(tmp_path) if f.startswith("o.jsonl")]


def test_export_killed_midway_leaves_a_temporary_the_next_export_removes(retort_bin, assets, tmp_path):
    import signal
    import subprocess
    import time
    db = str(tmp_path / "run.db")
    assert run([retort_bin, "import", "--db", db, "--format", "gsm8k", "--as-samples",
                bench_file(assets, "gsm8k_train")]).returncode == 0
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "chats.jsonl"
    proc = subprocess.Popen([retort_bin, "export", "--db", db, "--format", "chat-jsonl", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline and proc.poll() is None and not os.listdir(outdir):
        time.sleep(0.0005)
    if proc.poll() is not None:
        pytest.skip("skipped: the export finished before it could be killed")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = os.listdir(outdir)
    assert len(left) == 1 and left[0].startswith("chats.jsonl.tmp."), left
    recs = export(retort_bin, db, "chat-jsonl", str(out))
    assert len(recs) == 7473
    assert os.listdir(outdir) == ["chats.jsonl"]


def test_dict_recompress_killed_leaves_no_unused_dictionary(retort_bin, assets, tmp_path):
    """kill -9 as soon as a dictionary row is visible: it is already in use (it was committed
    with the first rewritten batch); the rerun finishes and deletes what it superseded."""
    import signal
    import subprocess
    import time
    db = str(tmp_path / "run.db")
    assert run([retort_bin, "import", "--db", db, "--format", "gsm8k", "--as-samples",
                bench_file(assets, "gsm8k_train")]).returncode == 0
    before = export(retort_bin, db, "chat-jsonl", str(tmp_path / "a.jsonl"))
    proc = subprocess.Popen([retort_bin, "db", "dict", db, "--recompress"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            con = sqlite3.connect(db)
            n = con.execute("SELECT COUNT(*) FROM zstd_dicts").fetchone()[0]
            con.close()
        except sqlite3.OperationalError:
            n = 0
        if n:
            break
        time.sleep(0.001)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    con = sqlite3.connect(db)
    unused = con.execute("SELECT COUNT(*) FROM zstd_dicts d WHERE NOT EXISTS "
                         "(SELECT 1 FROM samples s WHERE s.dict_id = d.id)").fetchone()[0]
    con.close()
    assert unused == 0
    p = run([retort_bin, "db", "dict", db, "--recompress"])
    assert p.returncode == 0, p.stderr
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM zstd_dicts").fetchone()[0] == 1
    assert con.execute("SELECT COUNT(DISTINCT dict_id), COUNT(dict_id) FROM samples").fetchone() == (1, len(before))
    con.close()
    assert export(retort_bin, db, "chat-jsonl", str(tmp_path / "b.jsonl")) == before
