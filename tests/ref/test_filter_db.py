"""`retort filter` on hand-built run databases: one verdict per sample per filter with its
reason, the gold-less verify skip, dedup representatives by policy, resume after kill -9,
configuration errors, and the db stats funnel. Expected values are hand-built cases and
Python sqlite3 queries on the same database, never retort's own output."""
import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import run, assert_one_error_line

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TEXT_FILTERS = ["format", "language", "readability", "repetition", "length"]


def q(db, sql, *args):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def chat(prompt, thinking, answer, gold=None, **meta):
    r = {"messages": [{"role": "user", "content": prompt},
                      {"role": "assistant", "content": answer, "reasoning_content": thinking}]}
    if gold is not None:
        r["gold"] = gold
    r.update(meta)
    return r


def make_db(retort_bin, tmp_path, records, name="run.db"):
    """Imports records in order (runs of records with and without a gold answer go in separate
    files, since import needs --answer-field present on every line it is given for)."""
    db = str(tmp_path / name)
    groups = []
    for r in records:
        if groups and ("gold" in r) == ("gold" in groups[-1][0]):
            groups[-1].append(r)
        else:
            groups.append([r])
    for k, g in enumerate(groups):
        src = tmp_path / f"{name}.{k}.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in g))
        extra = ["--answer-field", "gold"] if "gold" in g[0] else []
        p = run([retort_bin, "import", "--db", db, "--format", "chat", "--as-samples", *extra, "--source", "hand", str(src)])
        assert p.returncode == 0, p.stderr
    return db


def write_config(tmp_path, text, name="filters.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


THINK = ("First I read the problem carefully and write down what is given. Then I add the two numbers "
         "together, check the arithmetic once more, and make sure the units are right.")

# (prompt, thinking, answer, gold, metadata) -> the filters expected to fail
CASES = [
    ("What is 2 + 3? Explain briefly.", THINK, "Adding gives 5.\n\nThe answer is \\boxed{5}.", "5", {}, set()),
    ("What is 4 + 4? Explain briefly.", THINK, "Adding gives 9.\n\nThe answer is \\boxed{9}.", "8", {}, {"verify"}),
    ("What is 1 + 6? Explain briefly.", "", "It is 7, so the answer is \\boxed{7}.", "7", {}, {"format"}),
    ("What is 3 + 3? Explain briefly.",
     "我先读题，然后把两个数加起来，再检查一遍计算结果是否正确，最后确认答案没有问题。" * 3,
     "The answer is \\boxed{6}.", "6", {}, {"language"}),
    ("What is 5 + 5? Explain briefly.", THINK,
     "```python\nprint(5 + 5)\n```\n\nThe answer is \\boxed{10}.", "10", {}, {"readability"}),
    ("Write code to print 5 + 6.", THINK,
     "```python\nprint(5 + 6)\n```\n\nThe answer is \\boxed{11}.", "11", {"task": "code"}, set()),
    ("What is 6 + 6? Explain briefly.", ("I keep adding six and six again. " * 60).strip(),
     "The answer is \\boxed{12}.", "12", {}, {"repetition"}),
    ("Name a primary color.", THINK, "A primary color is red, so the answer is \\boxed{red}.", None, {}, set()),
]


def case_records():
    return [chat(p, t, a, gold=g, **m) for p, t, a, g, m, _ in CASES]


def test_every_sample_gets_one_verdict_per_filter_with_its_reason(retort_bin, tmp_path):
    db = make_db(retort_bin, tmp_path, case_records())
    cfg = write_config(tmp_path, "filters: [verify, format, language, readability, repetition, length]\n")
    p = run([retort_bin, "filter", "--db", db, "--config", cfg, "--threads", "2"])
    assert p.returncode == 0, p.stderr
    assert "1 samples have no gold answer" in p.stderr and "no verify verdict" in p.stderr
    rows = q(db, "SELECT s.id, p.gold FROM samples s JOIN prompts p ON p.id = s.prompt_id ORDER BY s.id")
    assert len(rows) == len(CASES)
    for (sid, gold), case in zip(rows, CASES):
        verdicts = dict((f, (ok, reason)) for f, ok, reason in
                        q(db, "SELECT filter, pass, reason FROM verdicts WHERE sample_id = ?", sid))
        want = set(TEXT_FILTERS) | ({"verify"} if gold is not None else set())
        assert set(verdicts) == want, (case[0], verdicts)
        failed = {f for f, (ok, _) in verdicts.items() if not ok}
        assert failed == case[5], (case[0], verdicts)
        for f, (ok, reason) in verdicts.items():
            assert reason and reason.strip(), (f, sid)
            if ok:
                assert reason.startswith("ok"), (f, reason)
    # the reasons say what was measured
    wrong = q(db, "SELECT reason FROM verdicts WHERE filter = 'verify' AND pass = 0")[0][0]
    assert "9" in wrong and "8" in wrong, wrong
    # every verdict has a reason (SQL over the whole table)
    assert q(db, "SELECT COUNT(*) FROM verdicts WHERE reason IS NULL OR trim(reason) = ''")[0][0] == 0


def test_rerun_scores_nothing_and_changes_nothing(retort_bin, tmp_path):
    db = make_db(retort_bin, tmp_path, case_records())
    cfg = write_config(tmp_path, "filters: [verify, format, length, dedup]\n")
    p = run([retort_bin, "filter", "--db", db, "--config", cfg])
    assert p.returncode == 0, p.stderr
    before = q(db, "SELECT * FROM verdicts ORDER BY 1, 2")
    p = run([retort_bin, "filter", "--db", db, "--config", cfg])
    assert p.returncode == 0, p.stderr
    assert "scored 0 of 0 pending samples" in p.stdout, p.stdout
    assert "dedup: 0 new samples" in p.stdout
    assert q(db, "SELECT * FROM verdicts ORDER BY 1, 2") == before
    # a filter added later scores only that filter
    cfg2 = write_config(tmp_path, "filters: [verify, format, length, dedup, readability]\n", "f2.yaml")
    p = run([retort_bin, "filter", "--db", db, "--config", cfg2])
    assert p.returncode == 0, p.stderr
    assert f"scored {len(CASES)} of {len(CASES)}" in p.stdout
    assert q(db, "SELECT COUNT(*) FROM verdicts WHERE filter = 'readability'")[0][0] == len(CASES)
    assert q(db, "SELECT * FROM verdicts WHERE filter != 'readability' ORDER BY 1, 2") == before
    runs = q(db, "SELECT config, scored, finished_at FROM filter_runs ORDER BY id")
    assert len(runs) == 3 and all(r[2] is not None for r in runs)
    assert json.loads(runs[2][0])["filters"] == ["verify", "format", "readability", "length", "dedup"]


def test_dedup_keeps_one_representative_by_policy(retort_bin, tmp_path):
    base = ("To solve this we first compute the total number of apples in every basket and then we divide "
            "that total evenly between the four children who are waiting at the table for their share")
    recs = [
        chat("Problem one about apples.", THINK, base + " of fruit.", "1"),                         # id 1
        chat("Problem two about apples.", THINK, base + " of fruit today, and that is all.", "1"),  # id 2, longer
        chat("Problem three about apples.", THINK, base + ".", "1"),                               # id 3, shortest
        chat("Problem four.", THINK, "Something entirely different: the answer is \\boxed{4}.", "4"),
        chat("Problem five.", THINK, "Something ENTIRELY different -- the answer is \\boxed{4}!", "4"),  # exact after norm
    ]
    # the exact pair: sample 5 is two characters longer than sample 4
    for keep, rep, rep2 in (("first", 1, 4), ("shortest", 3, 4), ("longest", 2, 5)):
        db = make_db(retort_bin, tmp_path, recs, f"{keep}.db")
        ids = {r[1]: r[0] for r in q(db, "SELECT s.id, p.messages FROM samples s JOIN prompts p ON p.id = s.prompt_id")}
        cfg = write_config(tmp_path, f"filters: [dedup]\ndedup:\n  threshold: 0.7\n  keep: {keep}\n", f"{keep}.yaml")
        p = run([retort_bin, "filter", "--db", db, "--config", cfg])
        assert p.returncode == 0, p.stderr
        cl = {sid: (c, r) for sid, c, r in q(db, "SELECT sample_id, cluster, representative FROM clusters WHERE method = 'minhash'")}
        assert len(cl) == 5
        apples = [1, 2, 3]
        assert all(cl[i][0] == rep for i in apples), (keep, cl)
        assert [cl[i][1] for i in apples] == [int(i == rep) for i in apples], (keep, cl)
        assert cl[4] == (rep2, int(rep2 == 4)) and cl[5] == (rep2, int(rep2 == 5)), cl
        v = {sid: (ok, reason) for sid, ok, reason in q(db, "SELECT sample_id, pass, reason FROM verdicts WHERE filter = 'dedup'")}
        for i in apples:
            if i == rep:
                assert v[i][0] == 1 and "representative of a cluster of 3" in v[i][1]
            else:
                assert v[i][0] == 0 and f"near-duplicate of sample {rep}" in v[i][1], v[i]
        other = 9 - rep2
        assert v[other][0] == 0 and f"exact duplicate of sample {rep2}" in v[other][1], v[other]
        # a later sample that duplicates a kept representative fails against it
        extra = tmp_path / f"{keep}-more.jsonl"
        extra.write_text(json.dumps(chat("Problem six about apples.", THINK, base + " of fruit!", "1")) + "\n")
        assert run([retort_bin, "import", "--db", db, "--format", "chat", "--as-samples", "--answer-field", "gold", "--source", "hand",
                    str(extra)]).returncode == 0
        p = run([retort_bin, "filter", "--db", db, "--config", cfg])
        assert p.returncode == 0 and "dedup: 1 new samples, 1 removed" in p.stdout, p.stdout
        assert q(db, "SELECT cluster, representative FROM clusters WHERE sample_id = 6") == [(rep, 0)]


def test_funnel_matches_python_sqlite(retort_bin, tmp_path):
    recs = case_records() + [chat("Copy of problem one.", THINK, CASES[0][2], "5")]
    db = make_db(retort_bin, tmp_path, recs)
    p = run([retort_bin, "filter", "--db", db, "--assets", str(tmp_path / "none")])
    assert p.returncode == 0, p.stderr
    assert "decontam skipped" in p.stderr
    p = run([retort_bin, "db", "stats", db, "--json"])
    assert p.returncode == 0, p.stderr
    funnel = json.loads(p.stdout)["funnel"]
    order = ["verify", "format", "language", "readability", "repetition", "length", "decontam", "dedup"]
    present = [f for f in order if q(db, "SELECT COUNT(*) FROM verdicts WHERE filter = ?", f)[0][0]]
    assert [e["filter"] for e in funnel] == present
    remaining = q(db, "SELECT COUNT(*) FROM samples")[0][0]
    earlier = []
    for e in funnel:
        f = e["filter"]
        marks = ",".join("?" * len(earlier)) or "''"
        removed = q(db, f"SELECT COUNT(*) FROM verdicts v WHERE v.filter = ? AND v.pass = 0 AND NOT EXISTS "
                        f"(SELECT 1 FROM verdicts w WHERE w.sample_id = v.sample_id AND w.pass = 0 AND w.filter IN ({marks}))",
                    f, *earlier)[0][0]
        remaining -= removed
        assert (e["removed"], e["remaining"]) == (removed, remaining), (f, e)
        earlier.append(f)
    # the last row is what passed everything
    passed = q(db, "SELECT COUNT(*) FROM samples s WHERE NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.sample_id = s.id AND v.pass = 0)")[0][0]
    assert funnel[-1]["remaining"] == passed
    assert any(e["filter"] == "dedup" and e["removed"] >= 1 for e in funnel)


def test_resume_after_kill_scores_every_sample_exactly_once(retort_bin, tmp_path):
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()
    recs = []
    for i in range(4000):
        think = " ".join(words[(i * 7 + k * 3) % len(words)] + str(k % 13) for k in range(300))
        recs.append(chat(f"Problem number {i}: what is {i} + 1?", think, f"The answer is \\boxed{{{i + 1}}}.", str(i + 1)))
    db = make_db(retort_bin, tmp_path, recs)
    total = 4000
    cfg = write_config(tmp_path, "filters: [verify, format, language, repetition, length]\nbatch: 16\n")
    proc = subprocess.Popen([retort_bin, "filter", "--db", db, "--config", cfg, "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    done = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            done = q(db, "SELECT COUNT(DISTINCT sample_id) FROM verdicts")[0][0]
        except sqlite3.OperationalError:
            done = 0
        if done >= 200:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "filter finished before it could be killed; make the set larger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    scored = q(db, "SELECT COUNT(DISTINCT sample_id) FROM verdicts")[0][0]
    assert 0 < scored < total
    # committed batches are whole: every scored sample has all five verdicts
    assert q(db, "SELECT COUNT(*) FROM verdicts")[0][0] == 5 * scored
    before = q(db, "SELECT sample_id, filter, pass, score, reason, created_at FROM verdicts ORDER BY 1, 2")
    p = run([retort_bin, "filter", "--db", db, "--config", cfg, "--threads", "2"])
    assert p.returncode == 0, p.stderr
    left = total - scored
    assert f"scored {left:,} of {left:,} pending samples" in p.stdout, p.stdout
    assert q(db, "SELECT COUNT(*) FROM verdicts")[0][0] == 5 * total
    assert q(db, "SELECT COUNT(*) FROM (SELECT sample_id FROM verdicts GROUP BY sample_id HAVING COUNT(*) = 5)")[0][0] == total
    after = q(db, f"SELECT sample_id, filter, pass, score, reason, created_at FROM verdicts WHERE sample_id IN "
                  f"(SELECT DISTINCT sample_id FROM verdicts) ORDER BY 1, 2")
    assert [r for r in after if r[0] in {b[0] for b in before}] == before, "verdicts written before the kill changed"
    p = run([retort_bin, "db", "check", db])
    assert p.returncode == 0 and "integrity ok" in p.stdout, p.stdout + p.stderr


def test_r1_preset_is_the_documented_yaml(retort_bin):
    a = run([retort_bin, "filter", "--preset", "r1", "--print-config"])
    b = run([retort_bin, "filter", "--config", os.path.join(ROOT, "configs", "filters", "r1.yaml"), "--print-config"])
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert json.loads(a.stdout) == json.loads(b.stdout)
    cfg = json.loads(a.stdout)
    assert cfg["decontam"]["n"] == 10 and cfg["language"]["min_script_share"] == 0.95
    assert cfg["readability"]["allow_code_blocks"] is False and "verify" in cfg["filters"]
    # the example file lists every option at its default
    c = run([retort_bin, "filter", "--config", os.path.join(ROOT, "configs", "filters", "example.yaml"), "--print-config"])
    d = run([retort_bin, "filter", "--print-config"])
    assert json.loads(c.stdout) == json.loads(d.stdout)


def test_json_config_is_accepted(retort_bin, tmp_path):
    cfg = write_config(tmp_path, json.dumps({"filters": ["length"], "length": {"max_answer_tokens": 5}}), "f.json")
    p = run([retort_bin, "filter", "--config", cfg, "--print-config"])
    assert p.returncode == 0, p.stderr
    c = json.loads(p.stdout)
    assert c["filters"] == ["length"] and c["length"]["max_answer_tokens"] == 5


def test_configuration_errors(retort_bin, tmp_path):
    db = make_db(retort_bin, tmp_path, case_records()[:1])
    bad = write_config(tmp_path, "filters: [verify]\nrepetition:\n  max_dup_line_fraction: 0.3\n")
    assert_one_error_line(run([retort_bin, "filter", "--db", db, "--config", bad]), "repetition.max_dup_line_fraction", "unknown key")
    bad = write_config(tmp_path, "filters: [verify, spelling]\n", "b2.yaml")
    assert_one_error_line(run([retort_bin, "filter", "--db", db, "--config", bad]), "unknown filter 'spelling'")
    bad = write_config(tmp_path, "dedup:\n  keep: middle\n", "b3.yaml")
    assert_one_error_line(run([retort_bin, "filter", "--db", db, "--config", bad]), "dedup.keep")
    bad = write_config(tmp_path, "language:\n\tmin_letters: 3\n", "b4.yaml")
    assert_one_error_line(run([retort_bin, "filter", "--db", db, "--config", bad]), "b4.yaml:2", "tab")
    assert_one_error_line(run([retort_bin, "filter", "--db", db, "--config", str(tmp_path / "missing.yaml")]), "missing.yaml")
    p = run([retort_bin, "filter", "--db", db, "--preset", "r2"])
    assert p.returncode == 2 and "unknown preset 'r2'" in p.stderr
    p = run([retort_bin, "filter", "--db", db, "--preset", "r1", "--config", bad])
    assert p.returncode == 2
    p = run([retort_bin, "filter"])
    assert p.returncode == 2 and "--db" in p.stderr
    assert q(db, "SELECT COUNT(*) FROM verdicts")[0][0] == 0


def test_dedup_prefers_a_member_that_passed_the_other_filters(retort_bin, tmp_path):
    body = ("We count the marbles in each of the three jars, add the counts together and then subtract the "
            "marbles that were given away to the neighbours on the way home from the park")
    recs = [chat("Marbles A.", THINK, body + ". The answer is \\boxed{41}.", "42"),   # id 1: wrong answer
            chat("Marbles B.", THINK, body + ". The answer is \\boxed{42}.", "42")]   # id 2: right
    db = make_db(retort_bin, tmp_path, recs)
    cfg = write_config(tmp_path, "filters: [verify, dedup]\ndedup:\n  keep: first\n")
    p = run([retort_bin, "filter", "--db", db, "--config", cfg])
    assert p.returncode == 0, p.stderr
    assert q(db, "SELECT sample_id, cluster, representative FROM clusters ORDER BY 1") == [(1, 2, 0), (2, 2, 1)]
    v = dict(q(db, "SELECT sample_id, pass FROM verdicts WHERE filter = 'dedup'"))
    assert v == {1: 0, 2: 1}


DUP_ANSWER = ("To solve this we first list every step of the computation in order, then we check each "
              "intermediate value against the statement, and finally we write the result below. "
              "The answer is \\boxed{42}.")


def dup_records(first, count):
    """count samples of distinct prompts whose texts are all the same answer."""
    return [chat(f"Question number {i}: compute the value asked for.", "", DUP_ANSWER) for i in range(first, first + count)]


def test_filter_runs_scored_counts_each_sample_once(retort_bin, tmp_path):
    db = make_db(retort_bin, tmp_path, case_records())
    n = q(db, "SELECT COUNT(*) FROM samples")[0][0]
    cfg = write_config(tmp_path, "filters: [format, length, dedup]\n")
    p = run([retort_bin, "filter", "--db", db, "--config", cfg])
    assert p.returncode == 0, p.stderr
    # every sample got its verdicts from this run: the per-sample filters and dedup together score it once
    assert q(db, "SELECT COUNT(DISTINCT sample_id) FROM verdicts")[0][0] == n
    assert q(db, "SELECT scored FROM filter_runs ORDER BY id DESC LIMIT 1") == [(n,)]
    # a later run with dedup alone over new samples counts those once too
    make_db(retort_bin, tmp_path, dup_records(0, 3), name="run.db")
    p = run([retort_bin, "filter", "--db", db, "--config", write_config(tmp_path, "filters: [dedup]\n", "d.yaml")])
    assert p.returncode == 0, p.stderr
    assert q(db, "SELECT scored FROM filter_runs ORDER BY id DESC LIMIT 1") == [(3,)]


def test_dedup_reasons_name_the_whole_cluster_across_runs(retort_bin, tmp_path):
    cfg = write_config(tmp_path, "filters: [dedup]\n")
    db = make_db(retort_bin, tmp_path, dup_records(0, 3))
    assert run([retort_bin, "filter", "--db", db, "--config", cfg]).returncode == 0
    make_db(retort_bin, tmp_path, dup_records(3, 2), name="run.db")
    p = run([retort_bin, "filter", "--db", db, "--config", cfg])
    assert p.returncode == 0, p.stderr
    rows = q(db, "SELECT v.pass, v.score, v.reason FROM verdicts v WHERE v.filter = 'dedup' ORDER BY v.sample_id")
    assert len(rows) == 5
    # five samples share one text: one cluster of five, whichever run saw which member
    assert [r[0] for r in rows] == [1, 0, 0, 0, 0], rows
    for ok, score, reason in rows:
        assert "cluster of 5" in reason, rows
        assert score == 5
    assert q(db, "SELECT COUNT(DISTINCT cluster), COUNT(*) FROM clusters") == [(1, 5)]


def letters(n):
    """n as a word of letters (normalization drops digits)."""
    w = ""
    for _ in range(4):
        w += "abcdefghijklmnopqrstuvwxyz"[n % 26]
        n //= 26
    return w


def test_dedup_writes_are_all_or_nothing_when_killed(retort_bin, tmp_path):
    """kill -9 as soon as any dedup verdict is visible: the dedup rows of a run are one
    transaction, so the database holds none of them or all of them, never a partial cluster."""
    recs = []
    for i in range(3000):
        # clusters of three identical texts; the clusters share no words
        body = " ".join(letters((i // 3) * 40 + k) for k in range(40))
        recs.append(chat(f"Item {i}: restate the text.", "", body))
    db = make_db(retort_bin, tmp_path, recs)
    cfg = write_config(tmp_path, "filters: [dedup]\nbatch: 1\n")
    proc = subprocess.Popen([retort_bin, "filter", "--db", db, "--config", cfg, "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            seen = q(db, "SELECT COUNT(*) FROM verdicts WHERE filter = 'dedup'")[0][0]
        except sqlite3.OperationalError:
            seen = 0
        if seen:
            break
        time.sleep(0.002)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n = q(db, "SELECT COUNT(*) FROM verdicts WHERE filter = 'dedup'")[0][0]
    assert n in (0, 3000), f"{n} of 3000 dedup verdicts after the kill"
    assert q(db, "SELECT COUNT(*) FROM clusters")[0][0] == n
    p = run([retort_bin, "filter", "--db", db, "--config", cfg])
    assert p.returncode == 0, p.stderr
    sizes = q(db, "SELECT reason FROM verdicts WHERE filter = 'dedup' AND pass = 0")
    assert len(sizes) == 2000 and all("cluster of 3" in r for (r,) in sizes), sizes[:3]


def test_dedup_verdicts_are_identical_at_1_2_3_threads(retort_bin, tmp_path):
    """Families of one-word variants of a 120-word text (any two share at least 106 of 126
    shingles: Jaccard >= 0.84) plus exact copies (case and punctuation only); one family has 40
    members, more than the 32 earlier bucket members a sample is checked against. The same
    database filtered with 1, 2 and 3 threads gets the same verdict and cluster rows, and each
    family is one cluster."""
    import random
    import shutil
    rng = random.Random(3)
    recs, family = [], []
    sizes = [40] + [rng.randint(1, 6) for _ in range(40)]
    members = [f for f, n in enumerate(sizes) for _ in range(n)]
    rng.shuffle(members)
    for i, f in enumerate(members):
        words = [letters(f * 1000 + k) for k in range(120)]
        if rng.random() < 0.2:
            body = " ".join(words).upper().replace(" ", ", ")
        else:
            words[rng.randrange(120)] = "variant" + letters(i)
            body = " ".join(words)
        recs.append(chat(f"Item {letters(i)}: restate the text.", "", body))
        family.append(f)
    db = make_db(retort_bin, tmp_path, recs)
    cfg = write_config(tmp_path, "filters: [dedup]\n")
    tables = []
    for threads in (1, 2, 3):
        copy = str(tmp_path / f"t{threads}.db")
        shutil.copy(db, copy)
        p = run([retort_bin, "filter", "--db", copy, "--config", cfg, "--threads", str(threads)])
        assert p.returncode == 0, p.stderr
        tables.append((q(copy, "SELECT sample_id, filter, pass, score, reason FROM verdicts ORDER BY sample_id, filter"),
                       q(copy, "SELECT * FROM clusters ORDER BY sample_id, method")))
    assert tables[0] == tables[1] == tables[2]
    verdicts = tables[0][0]
    assert len(verdicts) == len(recs)
    # sample ids follow import order; the kept member of each family is its first (keep: first)
    first = {}
    for sid, _, ok, score, _ in verdicts:
        f = family[sid - 1]
        first.setdefault(f, sid)
        assert ok == (first[f] == sid), (sid, f)
        assert score == sizes[f]
