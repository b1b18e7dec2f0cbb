"""`retort select` on hand-built data: verdicts and clusters are written here with Python's
sqlite3 (not by retort filter), so what select keeps follows from the rules alone:
passed every filter that was run (verify only where there is gold), dedup representatives,
up to K per prompt by policy, source balancing, and frozen snapshot names."""
import json
import sqlite3

import pytest

from conftest import run, assert_one_error_line


def q(db, sql, *args):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def ex(db, sql, rows):
    con = sqlite3.connect(db)
    try:
        con.executemany(sql, rows)
        con.commit()
    finally:
        con.close()


def chat(prompt, answer, gold=None):
    r = {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}
    if gold is not None:
        r["gold"] = gold
    return r


def imp(retort_bin, db, tmp_path, name, records, source, gold=True):
    f = tmp_path / name
    f.write_text("".join(json.dumps(r) + "\n" for r in records))
    extra = ["--answer-field", "gold"] if gold else []
    p = run([retort_bin, "import", "--db", db, "--format", "chat", "--as-samples", *extra, "--source", source, str(f)])
    assert p.returncode == 0, p.stderr


@pytest.fixture
def hand_db(retort_bin, tmp_path):
    """Prompts A..E; sample texts of chosen lengths; verdicts for filters verify and format.

    A (gold): a1 300 B, a2 100 B, a3 200 B, a4 150 B        all pass
    B (gold): b1 50 B fails format, b2 400 B passes
    C (gold): c1 120 B has no format verdict (unscored)     not eligible
    D (no gold): d1 80 B passes format, no verify verdict   eligible
    E (gold, source other): e1 90 B, e2 60 B pass; e2 is a non-representative dedup member
    """
    db = str(tmp_path / "sel.db")
    spec = {"A": [300, 100, 200, 150], "B": [50, 400], "C": [120]}
    # texts of exactly the chosen lengths
    recs = []
    for p, lens in spec.items():
        for i, n in enumerate(lens):
            tag = f"{p}{i + 1} "
            recs.append(chat(f"Prompt {p}", tag + "x" * (n - len(tag)), gold="1"))
    imp(retort_bin, db, tmp_path, "main.jsonl", recs, "main")
    imp(retort_bin, db, tmp_path, "nogold.jsonl", [chat("Prompt D", "D1 " + "x" * 77)], "main", gold=False)
    imp(retort_bin, db, tmp_path, "other.jsonl",
        [chat("Prompt E", "E1 " + "x" * 87, gold="1"), chat("Prompt E", "E2 " + "x" * 57, gold="1")], "other")
    rows = q(db, "SELECT s.id, s.text_bytes, p.messages FROM samples s JOIN prompts p ON p.id = s.prompt_id ORDER BY s.id")
    names = ["A1", "A2", "A3", "A4", "B1", "B2", "C1", "D1", "E1", "E2"]
    assert len(rows) == len(names)
    sid = {n: r[0] for n, r in zip(names, rows)}
    assert [r[1] for r in rows] == [300, 100, 200, 150, 50, 400, 120, 80, 90, 60]
    v = []
    for n in names:
        if n != "D1":
            v.append((sid[n], "verify", 1, "ok: hand"))
        if n != "C1":
            v.append((sid[n], "format", 0 if n == "B1" else 1, "hand"))
    ex(db, "INSERT INTO verdicts (sample_id, filter, pass, reason) VALUES (?, ?, ?, ?)", v)
    ex(db, "INSERT INTO clusters (method, sample_id, cluster, representative) VALUES ('minhash', ?, ?, ?)",
       [(sid["E1"], sid["E1"], 1), (sid["E2"], sid["E1"], 0)])
    return db, sid


def members(db, name):
    return sorted(r[0] for r in q(db, "SELECT m.sample_id FROM snapshot_samples m JOIN snapshots s ON s.id = m.snapshot_id "
                                       "WHERE s.name = ?", name))


def select(retort_bin, db, name, *args):
    p = run([retort_bin, "select", "--db", db, "--snapshot", name, *args])
    assert p.returncode == 0, p.stderr
    return p


def test_policies_per_prompt(retort_bin, hand_db):
    db, sid = hand_db
    S = lambda *ns: sorted(sid[n] for n in ns)
    select(retort_bin, db, "short1")
    assert members(db, "short1") == S("A2", "B2", "D1", "E1")
    select(retort_bin, db, "short2", "--per-prompt", "2", "--policy", "shortest")
    assert members(db, "short2") == S("A2", "A4", "B2", "D1", "E1")
    select(retort_bin, db, "long2", "--per-prompt", "2", "--policy", "longest")
    assert members(db, "long2") == S("A1", "A3", "B2", "D1", "E1")
    p = select(retort_bin, db, "all", "--policy", "all")
    assert members(db, "all") == S("A1", "A2", "A3", "A4", "B2", "D1", "E1")
    assert "7 samples from 4 prompts (7 eligible" in p.stdout, p.stdout
    assert q(db, "SELECT n_samples FROM snapshots WHERE name = 'all'") == [(7,)]


def test_random_policy_is_seeded(retort_bin, hand_db):
    db, sid = hand_db
    picks = []
    for i, seed in enumerate(["1", "1", "2", "3", "4", "5"]):
        select(retort_bin, db, f"r{i}", "--policy", "random", "--per-prompt", "2", "--seed", seed)
        m = members(db, f"r{i}")
        a = [x for x in m if x in {sid[n] for n in ("A1", "A2", "A3", "A4")}]
        assert len(a) == 2 and {sid["B2"], sid["D1"], sid["E1"]} <= set(m)
        picks.append(tuple(a))
    assert picks[0] == picks[1], "same seed, same pick"
    assert len(set(picks)) > 1, "different seeds should not all pick the same pair"


def test_balance_sources(retort_bin, hand_db):
    db, sid = hand_db
    # per prompt 1: main has A2, B2, D1 (3), other has E1 (1) -> main keeps 1
    p = select(retort_bin, db, "bal", "--balance-sources", "--seed", "7")
    m = members(db, "bal")
    assert len(m) == 2 and sid["E1"] in m, m
    assert "2 dropped to balance sources" in p.stdout


def test_snapshot_config_and_refusal(retort_bin, hand_db):
    db, sid = hand_db
    select(retort_bin, db, "s", "--per-prompt", "3", "--policy", "longest", "--seed", "9")
    cfg = json.loads(q(db, "SELECT filter_config FROM snapshots WHERE name = 's'")[0][0])
    assert cfg["selection"] == {"per_prompt": 3, "policy": "longest", "seed": 9, "balance_sources": False}
    assert cfg["filters_required"] == ["format", "verify"]
    assert cfg["filter_runs"] == []
    before = q(db, "SELECT * FROM snapshot_samples ORDER BY 1, 2")
    assert_one_error_line(run([retort_bin, "select", "--db", db, "--snapshot", "s"]), "snapshot 's' already exists")
    assert q(db, "SELECT * FROM snapshot_samples ORDER BY 1, 2") == before
    p = run([retort_bin, "select", "--db", db, "--snapshot", "x", "--policy", "best"])
    assert p.returncode == 2 and "unknown policy 'best'" in p.stderr
    p = run([retort_bin, "select", "--db", db, "--snapshot", "x", "--per-prompt", "0"])
    assert p.returncode == 2
    p = run([retort_bin, "select", "--db", db])
    assert p.returncode == 2 and "--snapshot" in p.stderr


def test_needs_verdicts(retort_bin, tmp_path):
    db = str(tmp_path / "empty.db")
    imp(retort_bin, db, tmp_path, "a.jsonl", [chat("P", "answer", gold="1")], "main")
    assert_one_error_line(run([retort_bin, "select", "--db", db, "--snapshot", "s"]), "no verdicts", "retort filter")


def test_select_after_filter_records_the_filter_run(retort_bin, tmp_path):
    db = str(tmp_path / "f.db")
    imp(retort_bin, db, tmp_path, "a.jsonl",
        [chat("What is 1+1?", "<think>\nOne plus one.\n</think>\n\nThe answer is \\boxed{2}.", gold="2"),
         chat("What is 1+1?", "<think>\nHmm.\n</think>\n\nThe answer is \\boxed{3}.", gold="2")], "main")
    cfgf = tmp_path / "c.yaml"
    cfgf.write_text("filters: [verify, format]\n")
    p = run([retort_bin, "filter", "--db", db, "--config", str(cfgf)])
    assert p.returncode == 0, p.stderr
    select(retort_bin, db, "snap", "--policy", "all")
    assert members(db, "snap") == [1]
    cfg = json.loads(q(db, "SELECT filter_config FROM snapshots WHERE name = 'snap'")[0][0])
    assert len(cfg["filter_runs"]) == 1 and cfg["filter_runs"][0]["config"]["filters"] == ["verify", "format"]
    assert cfg["filter_runs"][0]["finished"] is True
