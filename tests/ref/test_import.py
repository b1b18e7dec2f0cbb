"""`retort import` and `retort db` on the real benchmark files and on malformed input.
Expected values come from Python's json and sqlite3 reading the same files and database,
never from retort itself."""
import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import run, assert_one_error_line

BENCH = ("gsm8k_train", "gsm8k_test", "math500_test", "aime24_test")


def bench_file(assets, name):
    p = os.path.join(assets, "benchmarks", name + ".jsonl")
    if not os.path.exists(p):
        pytest.skip(f"skipped: {p} absent")
    return p


def rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def q(db, sql, *args):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def dump(db):
    """Every row of every table, for before/after comparisons."""
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")]
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}
    finally:
        con.close()


def imp(retort_bin, db, fmt, *files, extra=()):
    return run([retort_bin, "import", "--db", db, "--format", fmt, *extra, *files])


def test_db_init_stats_check(retort_bin, tmp_path):
    db = str(tmp_path / "run.db")
    p = run([retort_bin, "db", "init", db])
    assert p.returncode == 0, p.stderr
    assert q(db, "PRAGMA user_version")[0][0] >= 1
    assert q(db, "PRAGMA journal_mode")[0][0] == "wal"
    tables = {r[0] for r in q(db, "SELECT name FROM sqlite_schema WHERE type = 'table'")}
    assert {"prompts", "samples", "sample_topk", "verdicts", "clusters", "snapshots", "snapshot_samples",
            "eval_results", "zstd_dicts"} <= tables
    p = run([retort_bin, "db", "stats", db, "--json"])
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["prompts"] == 0 and s["samples"] == 0 and s["verdicts"] == {}
    p = run([retort_bin, "db", "check", db])
    assert p.returncode == 0 and "integrity ok" in p.stdout and "schema version" in p.stdout


def test_db_refuses_what_it_cannot_use(retort_bin, tmp_path):
    missing = str(tmp_path / "nope.db")
    assert_one_error_line(run([retort_bin, "db", "stats", missing]), "no such database")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    assert_one_error_line(run([retort_bin, "db", "check", str(junk)]), f"{junk} is not a SQLite database")
    newer = str(tmp_path / "newer.db")
    assert run([retort_bin, "db", "init", newer]).returncode == 0
    con = sqlite3.connect(newer)
    con.execute("PRAGMA user_version = 99")
    con.close()
    assert_one_error_line(run([retort_bin, "db", "stats", newer]), "schema version 99", "newer")


@pytest.mark.parametrize("name,fmt", [("gsm8k_test", "gsm8k"), ("math500_test", "math"), ("aime24_test", "aime")])
def test_import_benchmark_gold_and_metadata(retort_bin, assets, tmp_path, name, fmt):
    src = bench_file(assets, name)
    recs = rows(src)
    db = str(tmp_path / "run.db")
    p = imp(retort_bin, db, fmt, src)
    assert p.returncode == 0, p.stderr
    key = "question" if fmt == "gsm8k" else "problem"
    got = {json.loads(m)[0]["content"]: (g, json.loads(meta), s, ext)
           for m, g, meta, s, ext in q(db, "SELECT messages, gold, metadata, source, external_id FROM prompts")}
    assert len(got) == len(recs)
    for r in recs:
        gold, meta, source, ext = got[r[key]]
        want = r["answer"].split("####")[-1].strip() if fmt == "gsm8k" else str(r["answer"])
        assert gold == want
        assert source == name
        assert meta == {k: v for k, v in r.items() if k != key}
        assert ext == (str(r["id"]) if "id" in r else None)
    s = json.loads(run([retort_bin, "db", "stats", db, "--json"]).stdout)
    assert s["prompts"] == len(recs) and s["samples"] == 0


def test_reimport_changes_nothing(retort_bin, assets, tmp_path):
    src = bench_file(assets, "gsm8k_train")
    db = str(tmp_path / "run.db")
    assert imp(retort_bin, db, "gsm8k", src, extra=["--as-samples"]).returncode == 0
    n = len(rows(src))
    assert q(db, "SELECT COUNT(*), COUNT(DISTINCT content_hash) FROM prompts")[0] == (n, n)
    assert q(db, "SELECT COUNT(*) FROM samples WHERE teacher = 'reference'")[0][0] == n
    before = dump(db)
    p = imp(retort_bin, db, "gsm8k", src, extra=["--as-samples"])
    assert p.returncode == 0, p.stderr
    assert "0 new prompts" in p.stdout and "0 new samples" in p.stdout
    assert dump(db) == before


def test_as_samples_reference_text(retort_bin, assets, tmp_path):
    src = bench_file(assets, "math500_test")
    db = str(tmp_path / "run.db")
    assert imp(retort_bin, db, "math", src, extra=["--as-samples", "--source", "m5"]).returncode == 0
    out = str(tmp_path / "out.jsonl")
    p = run([retort_bin, "export", "--db", db, "--format", "chat-jsonl", "--out", out])
    assert p.returncode == 0, p.stderr
    want = [{"messages": [{"role": "user", "content": r["problem"]},
                          {"role": "assistant", "content": r["solution"]}]} for r in rows(src)]
    assert [{"messages": r["messages"]} for r in rows(out)] == want
    assert {r[0] for r in q(db, "SELECT DISTINCT source FROM prompts")} == {"m5"}
    assert q(db, "SELECT SUM(text_bytes) FROM samples")[0][0] == sum(len(r["solution"].encode()) for r in rows(src))


MALFORMED = [
    ("bad_json", '{"question": "q2", "answer": "#### 2"\n', "invalid JSON"),
    ("missing_field", '{"question": "q2"}\n', 'missing field "answer"'),
    ("wrong_type", '{"question": ["q2"], "answer": "#### 2"}\n', '"question" must be a string'),
    ("not_object", '["q2", "#### 2"]\n', "not a JSON object"),
    ("duplicate_key", '{"question": "q2", "question": "q3", "answer": "#### 2"}\n', "duplicate"),
    ("no_final_answer", '{"question": "q2", "answer": "two"}\n', "####"),
    ("empty_prompt", '{"question": "", "answer": "#### 2"}\n', 'empty prompt (field "question")'),
    ("blank_prompt", '{"question": " \\n\\t ", "answer": "#### 2"}\n', 'empty prompt (field "question")'),
]


@pytest.mark.parametrize("case,bad,needle", MALFORMED + [("invalid_utf8", None, "invalid UTF-8")])
def test_malformed_line_aborts_file(retort_bin, tmp_path, case, bad, needle):
    good = [json.dumps({"question": f"q{i}", "answer": f"so\n#### {i}"}) + "\n" for i in range(5)]
    data = "".join(good[:2]).encode() + (bad.encode() if bad else b'{"question": "caf\xc3\x28", "answer": "#### 1"}\n') + \
        "".join(good[2:]).encode()
    src = tmp_path / "in.jsonl"
    src.write_bytes(data)
    db = str(tmp_path / "run.db")
    assert run([retort_bin, "db", "init", db]).returncode == 0
    p = imp(retort_bin, db, "gsm8k", str(src))
    assert_one_error_line(p, f"{src}:3:", needle)
    assert q(db, "SELECT COUNT(*) FROM prompts")[0][0] == 0
    p = imp(retort_bin, db, "gsm8k", str(src), extra=["--skip-bad"])
    assert p.returncode == 0, p.stderr
    assert "1 bad" in p.stdout and "skipped 1 bad line" in p.stderr and "line 3" in p.stderr
    assert q(db, "SELECT COUNT(*) FROM prompts")[0][0] == 5
    assert sorted(r[0] for r in q(db, "SELECT gold FROM prompts")) == [str(i) for i in range(5)]


def test_malformed_chat(retort_bin, tmp_path):
    lines = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
             {"messages": [{"role": "user", "content": "hi"}]},                       # no assistant turn
             {"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}]},
             {"messages": "hi"},
             {"conversation": []}]
    for i, bad in enumerate(lines[1:], start=2):
        src = tmp_path / f"c{i}.jsonl"
        src.write_text(json.dumps(lines[0]) + "\n" + json.dumps(bad) + "\n")
        db = str(tmp_path / f"c{i}.db")
        p = imp(retort_bin, db, "chat", str(src), extra=["--as-samples"])
        assert_one_error_line(p, f"{src}:2:")
        assert q(db, "SELECT COUNT(*) FROM prompts")[0][0] == 0


def test_one_bad_file_does_not_stop_the_others(retort_bin, assets, tmp_path):
    good = bench_file(assets, "aime24_test")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "p"}\n')
    db = str(tmp_path / "run.db")
    p = imp(retort_bin, db, "aime", str(bad), good)
    assert p.returncode == 1
    assert f"{bad}:1:" in p.stderr
    assert q(db, "SELECT COUNT(*) FROM prompts")[0][0] == 30


def test_jsonl_fields_and_usage_errors(retort_bin, tmp_path):
    src = tmp_path / "x.jsonl"
    src.write_text("".join(json.dumps({"q": f"question {i}", "a": str(i), "extra": i}) + "\n" for i in range(10)))
    db = str(tmp_path / "run.db")
    p = imp(retort_bin, db, "jsonl", str(src), extra=["--prompt-field", "q", "--answer-field", "a", "--as-samples"])
    assert p.returncode == 0, p.stderr
    assert q(db, "SELECT COUNT(*), MIN(source), MAX(source) FROM prompts")[0] == (10, "x", "x")
    assert sorted(int(g) for (g,) in q(db, "SELECT gold FROM prompts")) == list(range(10))
    assert q(db, "SELECT COUNT(*) FROM samples")[0][0] == 10
    assert imp(retort_bin, db, "jsonl", str(src)).returncode == 2            # no --prompt-field
    assert imp(retort_bin, db, "yaml", str(src)).returncode == 2
    assert run([retort_bin, "import", "--format", "gsm8k", str(src)]).returncode == 2


def test_killed_import_resumes_without_duplicates(retort_bin, tmp_path):
    """kill -9 in the middle of a 300k-line import; the rerun completes it, every row once."""
    n = 300_000
    src = tmp_path / "big.jsonl"
    with open(src, "w") as f:
        for i in range(n):
            f.write(json.dumps({"question": f"Question number {i}: what is {i} + {i}?",
                                "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"}) + "\n")
    db = str(tmp_path / "run.db")
    assert run([retort_bin, "db", "init", db]).returncode == 0
    proc = subprocess.Popen([retort_bin, "import", "--db", db, "--format", "gsm8k", "--as-samples", "--batch", "2000",
                             str(src)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            committed = q(db, "SELECT COUNT(*) FROM prompts")[0][0]
        except sqlite3.OperationalError:
            committed = 0
        if committed >= 4000:
            break
        time.sleep(0.005)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    if not killed:
        pytest.skip("skipped: the import finished before it could be killed")
    first = q(db, "SELECT COUNT(*) FROM prompts")[0][0]
    assert 0 < first < n
    assert first % 2000 == 0, "only whole batches are committed"
    assert q(db, "PRAGMA integrity_check")[0][0] == "ok"
    p = imp(retort_bin, db, "gsm8k", str(src), extra=["--as-samples"])
    assert p.returncode == 0, p.stderr
    assert q(db, "SELECT COUNT(*), COUNT(DISTINCT content_hash) FROM prompts")[0] == (n, n)
    assert q(db, "SELECT COUNT(*), COUNT(DISTINCT prompt_id) FROM samples")[0] == (n, n)
    assert q(db, "SELECT COUNT(*) FROM prompts WHERE CAST(gold AS INTEGER) % 2 != 0")[0][0] == 0
    assert q(db, "PRAGMA integrity_check")[0][0] == "ok"
    assert q(db, "PRAGMA foreign_key_check") == []


def test_empty_chat_prompt_is_malformed(retort_bin, tmp_path):
    ok = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    empty = {"messages": [{"role": "system", "content": " "}, {"role": "user", "content": ""},
                          {"role": "assistant", "content": "yo"}]}
    src = tmp_path / "c.jsonl"
    src.write_text(json.dumps(ok) + "\n" + json.dumps(empty) + "\n")
    db = str(tmp_path / "run.db")
    p = imp(retort_bin, db, "chat", str(src), extra=["--as-samples"])
    assert_one_error_line(p, f"{src}:2:", "empty prompt")
    assert q(db, "SELECT COUNT(*) FROM prompts")[0][0] == 0
    p = imp(retort_bin, db, "chat", str(src), extra=["--as-samples", "--skip-bad"])
    assert p.returncode == 0 and "skipped 1 bad line" in p.stderr and "line 2" in p.stderr, p.stderr
    assert q(db, "SELECT COUNT(*) FROM prompts")[0][0] == 1


def test_max_prompt_bytes(retort_bin, tmp_path):
    # the limit counts the prompt's bytes as stored: 3000 x "é" is 6000 bytes (JSON escapes it as 18000)
    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps({"prompt": "short"}) + "\n" + json.dumps({"prompt": "\u00e9" * 3000}) + "\n")
    db = str(tmp_path / "run.db")
    p = imp(retort_bin, db, "jsonl", str(src), extra=["--prompt-field", "prompt", "--max-prompt-bytes", "5999"])
    assert_one_error_line(p, f"{src}:2:", "6000 bytes", "--max-prompt-bytes")
    assert q(db, "SELECT COUNT(*) FROM prompts")[0][0] == 0
    p = imp(retort_bin, db, "jsonl", str(src), extra=["--prompt-field", "prompt", "--max-prompt-bytes", "6000"])
    assert p.returncode == 0, p.stderr
    assert q(db, "SELECT COUNT(*) FROM prompts")[0][0] == 2
    for bad in ("0", "-1", "12Q", "", "5T"):
        assert imp(retort_bin, db, "jsonl", str(src), extra=["--prompt-field", "prompt", "--max-prompt-bytes", bad]).returncode == 2


def test_huge_line_is_refused_without_reading_it(retort_bin, tmp_path):
    """A 64 MiB single-line prompt: refused naming file:line, with the child's peak RSS far
    below the line's size (measured by getrusage in a wrapper process of its own)."""
    src = tmp_path / "huge.jsonl"
    with open(src, "w") as f:
        f.write(json.dumps({"prompt": "ok"}) + "\n")
        f.write('{"prompt": "' + "x" * (64 << 20) + '"}\n')
        f.write(json.dumps({"prompt": "fine too"}) + "\n")
    db = str(tmp_path / "run.db")
    wrapper = ("import resource, subprocess, sys\n"
               "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "sys.stdout.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) + '\\n')\n"
               "sys.stderr.write(p.stderr)\n"
               "sys.exit(p.returncode)\n")
    small = tmp_path / "small.jsonl"
    small.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"prompt": "fine too"}) + "\n")
    p = run(["python3", "-c", wrapper, retort_bin, "import", "--db", str(tmp_path / "base.db"), "--format", "jsonl",
             "--prompt-field", "prompt", str(small)])
    assert p.returncode == 0, p.stderr
    base_kib = int(p.stdout.split()[0])  # the same binary on a small file (sanitizer builds start larger)
    for extra, code in ((["--skip-bad"], 0), ([], 1)):
        p = run(["python3", "-c", wrapper, retort_bin, "import", "--db", db, "--format", "jsonl", "--prompt-field", "prompt",
                 *extra, str(src)])
        assert p.returncode == code, p.stderr
        assert f"line 2" in p.stderr or f"{src}:2:" in p.stderr, p.stderr
        assert "not read" in p.stderr, p.stderr
        rss_kib = int(p.stdout.split()[0])
        assert rss_kib < base_kib + 16 * 1024, f"peak RSS {rss_kib} KiB for a 64 MiB line ({base_kib} KiB on a small file)"
    assert sorted(r[0] for r in q(db, "SELECT json_extract(messages, '$[0].content') FROM prompts")) == ["fine too", "ok"]
    # through a pipe the same: the line is dropped as it streams in
    with open(src, "rb") as f:
        p = subprocess.run([retort_bin, "import", "--db", db, "--format", "jsonl", "--prompt-field", "prompt", "/dev/stdin"],
                           stdin=f, capture_output=True, text=True)
    assert_one_error_line(p, "/dev/stdin:2:", "not read")


def test_import_of_a_directory_or_unreadable_file_says_why(retort_bin, tmp_path):
    db = str(tmp_path / "run.db")
    d = tmp_path / "prompts"
    d.mkdir()
    assert_one_error_line(imp(retort_bin, db, "jsonl", str(d), extra=["--prompt-field", "p"]), f"{d} is a directory")
    assert_one_error_line(imp(retort_bin, db, "jsonl", str(tmp_path / "absent.jsonl"), extra=["--prompt-field", "p"]),
                          "absent.jsonl", "No such file or directory")


def compact(v):
    """JSON as the store writes it: jansson's compact form, i.e. Python's compact dump with
    non-ASCII as it is and the \\u00XX escapes of control characters in upper-case hex."""
    import re
    s = json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    return re.sub(r'(?<!\\)((?:\\\\)*)\\u00([0-9a-f]{2})', lambda m: m.group(1) + "\\u00" + m.group(2).upper(), s)


def tricky_records(n, seed):
    import random
    rnd = random.Random(seed)
    alpha = ["plain text run ", "a", " ", '"', "\\", "/", "\n", "\t", "\r", "\b", "\f", "\x01", "\x1f", "\x7f", "é", "€",
             "😀", "\u2028", "####", "0123456789"]
    def s(lo=0, hi=30):
        return "".join(rnd.choice(alpha) for _ in range(rnd.randint(lo, hi)))
    recs = []
    for i in range(n):
        r = {"q": f"{i} " + s(), "a": s() + f" #### {i}"}
        for _ in range(rnd.randint(0, 4)):
            r[s(1, 3) + f"k{len(r)}"] = rnd.choice([s(), rnd.randint(-10**17, 10**17), True, False, None,
                                                    [1, s()], {"x": s()}, 0.5])
        if rnd.random() < 0.3:
            r["id"] = rnd.choice([s(1, 5), i])
        recs.append(r)
    return recs


def test_stored_json_is_jansson_compact_for_flat_and_nested_lines(retort_bin, tmp_path):
    """Flat lines take a reader of their own, nested ones jansson's; both must store what
    jansson writes (so content hashes agree), written out by Python here."""
    recs = tricky_records(3000, 7)
    src = tmp_path / "t.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for i, r in enumerate(recs):
            f.write(json.dumps(r, ensure_ascii=bool(i % 2), separators=[(",", ":"), (", ", ": ")][i % 3 == 0]) + "\n")
    db = str(tmp_path / "run.db")
    p = imp(retort_bin, db, "jsonl", str(src), extra=["--prompt-field", "q", "--answer-field", "a", "--as-samples"])
    assert p.returncode == 0, p.stderr
    got = q(db, "SELECT p.messages, p.metadata, p.gold, p.external_id, p.prompt_key, s.sample_index FROM prompts p "
                "JOIN samples s ON s.prompt_id = p.id ORDER BY p.id")
    assert len(got) == len(recs)
    for r, (messages, meta, gold, ext, key, idx) in zip(recs, got):
        assert messages == compact([{"role": "user", "content": r["q"]}])
        assert meta == compact({k: v for k, v in r.items() if k != "q"})
        assert gold == r["a"] and key == "q" and idx == 0
        assert ext == (str(r["id"]) if "id" in r else None)
    out = str(tmp_path / "out.jsonl")
    assert run([retort_bin, "export", "--db", db, "--format", "chat-jsonl", "--out", out]).returncode == 0
    assert [x["messages"][1]["content"] for x in rows(out)] == [r["a"] for r in recs]


def test_batch_size_does_not_change_the_rows(retort_bin, tmp_path):
    """Batches of 1, 7 and the default give the same rows; a repeated prompt keeps one row and
    gets its other reference text as sample 1, its same text once."""
    recs = [{"question": f"q{i % 40}", "answer": f"a{i % 3}\n#### {i % 40}"} for i in range(100)]
    src = tmp_path / "b.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    dumps = []
    for batch in (["--batch", "1"], ["--batch", "7"], []):
        db = str(tmp_path / f"b{len(dumps)}.db")
        p = imp(retort_bin, db, "gsm8k", str(src), extra=["--as-samples", *batch])
        assert p.returncode == 0, p.stderr
        con = sqlite3.connect(db)
        dumps.append((con.execute("SELECT id, content_hash, messages, gold, metadata FROM prompts ORDER BY id").fetchall(),
                      con.execute("SELECT id, prompt_id, sample_index, text, text_hash FROM samples ORDER BY id").fetchall()))
        con.close()
    assert dumps[0] == dumps[1] == dumps[2]
    prompts, samples = dumps[0]
    assert len(prompts) == 40
    want = {}
    for i, r in enumerate(recs):                         # the reference texts each prompt gets, in order
        texts = want.setdefault(i % 40 + 1, [])
        if r["answer"] not in texts:
            texts.append(r["answer"])
    assert len(samples) == sum(len(t) for t in want.values())
    assert sorted((pid, idx) for _, pid, idx, _, _ in samples) == sorted((pid, k) for pid, t in want.items() for k in range(len(t)))
