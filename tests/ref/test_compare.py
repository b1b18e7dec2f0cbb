"""`retort compare` on two fixed runs written directly into a database with sqlite3; the
expected numbers (pass@1, its 95% normal interval over questions, cons@k by majority vote
with ties to the earliest answer, mean length, truncation, agreement, solved-by-one lists)
are computed here in Python."""
import json
import math
import random
import sqlite3

import pytest

from conftest import assert_one_error_line, run

RUNS = {  # run -> (model, k, benchmarks)
    "teacher": ("local:/m/teacher", 4, ("gsm8k", "math500")),
    "student": ("local:/m/student", 3, ("gsm8k",)),
}


@pytest.fixture(scope="module")
def db(tmp_path_factory, retort_bin):
    path = tmp_path_factory.mktemp("cmp") / "run.db"
    r = run([retort_bin, "db", "init", str(path)])
    assert r.returncode == 0, r.stderr
    rnd = random.Random(7)
    c = sqlite3.connect(str(path))
    prompts = {}
    for bench, n in (("gsm8k", 12), ("math500", 5)):
        prompts[bench] = []
        for i in range(n):
            cur = c.execute("INSERT INTO prompts (source, content_hash, messages, gold) VALUES (?, ?, ?, ?)",
                            (bench, rnd.randbytes(16), json.dumps([{"role": "user", "content": f"{bench} {i}"}]),
                             str(i % 4)))
            prompts[bench].append((cur.lastrowid, str(i % 4)))
    rows = []
    for run_name, (model, k, benches) in RUNS.items():
        for bench in benches:
            for pid, gold in prompts[bench]:
                if run_name == "student" and pid == prompts[bench][-1][0]:
                    continue  # the student missed one question: not common
                for j in range(k):
                    ans = rnd.choice([gold, gold, str(int(gold) + 1), str(int(gold) + 2), None])
                    fin = rnd.choice(["stop", "stop", "length"])
                    rows.append((run_name, model, bench, pid, j, b"x", ans, int(ans == gold), rnd.randint(5, 500), fin))
    c.executemany("INSERT INTO eval_results (run, model, benchmark, prompt_id, sample_index, response, extracted, "
                  "correct, n_tokens, finish_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    c.commit()
    c.close()
    return path, rows


def summarize(rows, run_name, bench):
    qs = {}
    for r in rows:
        if r[0] == run_name and r[2] == bench:
            qs.setdefault(r[3], []).append(r)
    p1, solved = [], {}
    for pid, q in sorted(qs.items()):
        q.sort(key=lambda r: r[4])
        p1.append(sum(r[7] for r in q) / len(q))
        votes, first = {}, {}
        for r in q:
            if r[6] is not None:
                votes[r[6]] = votes.get(r[6], 0) + 1
                first.setdefault(r[6], r)
        best = max(votes, key=lambda a: (votes[a], -first[a][4])) if votes else None
        solved[pid] = bool(best is not None and first[best][7])
    n = len(p1)
    m = sum(p1) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in p1) / (n - 1))
    h = 1.96 * sd / math.sqrt(n)
    samples = [r for q in qs.values() for r in q]
    return dict(questions=n, samples=len(samples), k=max(len(q) for q in qs.values()), pass1=m,
                pass1_ci=[max(0, m - h), min(1, m + h)], cons=sum(solved.values()) / n,
                mean_tokens=sum(r[8] for r in samples) / len(samples),
                truncation=sum(r[9] == "length" for r in samples) / len(samples)), solved


def test_compare_json_matches_python(retort_bin, db):
    path, rows = db
    r = run([retort_bin, "compare", "--db", str(path), "teacher", "student", "--json"])
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["runs"] == ["teacher", "student"] and "normal" in j["interval"]
    assert list(j["benchmarks"]) == ["gsm8k", "math500"]
    solved = {}
    for run_name, (model, k, benches) in RUNS.items():
        for bench in benches:
            want, solved[run_name, bench] = summarize(rows, run_name, bench)
            got = j["benchmarks"][bench]["runs"][run_name]
            assert got["model"] == model
            for key, v in want.items():
                assert got[key] == pytest.approx(v, abs=1e-9), (run_name, bench, key)
    assert list(j["benchmarks"]["math500"]["runs"]) == ["teacher"] and j["benchmarks"]["math500"]["pairs"] == []
    (p,) = j["benchmarks"]["gsm8k"]["pairs"]
    a, b = solved["teacher", "gsm8k"], solved["student", "gsm8k"]
    common = sorted(set(a) & set(b))
    assert (p["a"], p["b"], p["common"]) == ("teacher", "student", len(common)) and len(common) == 11
    assert p["agreement"] == pytest.approx(sum(a[q] == b[q] for q in common) / len(common))
    assert p["both"] == sum(a[q] and b[q] for q in common)
    assert p["neither"] == sum(not a[q] and not b[q] for q in common)
    assert p["only_a"] == [q for q in common if a[q] and not b[q]]
    assert p["only_b"] == [q for q in common if b[q] and not a[q]]
    assert p["only_a"] or p["only_b"], "the fixture should have disagreements"


def test_compare_table(retort_bin, db):
    path, rows = db
    r = run([retort_bin, "compare", "--db", str(path), "teacher", "student"])
    assert r.returncode == 0, r.stderr
    want, _ = summarize(rows, "student", "gsm8k")
    line = [l for l in r.stdout.splitlines() if l.startswith("student ")][0].split()
    assert int(line[1]) == 11 and int(line[2]) == 3
    assert float(line[3]) == pytest.approx(want["pass1"], abs=5e-5)
    assert float(line[6]) == pytest.approx(want["cons"], abs=5e-5)
    assert "== gsm8k" in r.stdout and "== math500" in r.stdout
    assert "teacher vs student: 11 common questions" in r.stdout
    assert "solved only by teacher" in r.stdout


def test_compare_errors(retort_bin, db):
    path, _ = db
    assert_one_error_line(run([retort_bin, "compare", "--db", str(path), "teacher", "nobody"]), "nobody")
    assert run([retort_bin, "compare", "--db", str(path), "teacher"]).returncode == 2
    assert run([retort_bin, "compare", "teacher", "student"]).returncode == 2
    assert run([retort_bin, "compare", "--db", str(path), "teacher", "teacher"]).returncode == 2
