"""`retort eval` under mpirun (issue #15): a model that splits over the ranks (DeepSeek-V3 on
the CPU) is loaded in parts, rank 0 alone reads the questions and writes eval_results and the
summary, the other ranks follow through pe_step; a dense model on the CPU (no split) and an
endpoint model are rank 0's alone, the other ranks exiting 0.

Models: test_generate_parallel.py's small FP8 DeepSeek-V3 (2 shards, 4 heads, 8 routed experts,
R1's special tokens in a byte-level tokenizer) and test_eval.py's tiny Qwen2 with its digits
benchmark. Expected values: the plain run (no mpirun) of the same command, whose engine the
other suites hold against transformers (test_generate_parallel.py's greedy check on this very
checkpoint, test_eval.py's metrics recomputed in Python); the metrics printed here are checked
against Python's computation from the stored rows (test_eval.expected). P ranks sum partial
products in another order, which moves logits by a few ulp; seeded sampling draws the same
tokens (as test_generate_parallel.py's stored samples), so texts, extracted answers, verdicts,
token counts and finish reasons must be identical. Every subprocess has a timeout: a rank left
waiting in a collective fails the test instead of hanging it."""
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from conftest import run

sys.path.insert(0, os.path.dirname(__file__))
from test_eval import K, N_Q, expected, model as dense, printed, rows  # noqa: E402,F401  the tiny Qwen2 fixture
from test_generate_db import Server  # noqa: E402
from test_ds_parallel import mpi_env, mpirun_cmd  # noqa: E402
from test_generate_parallel import HEADS, ds, mpi, retort_lines  # noqa: E402,F401  the FP8 DeepSeek-V3 fixture

DS_ARGS = ["--k", "3", "--max-tokens", "12", "--temperature", "0.8", "--top-p", "0.9", "--seed", "7", "--threads", "1"]
DS_QUESTIONS = 4


@pytest.fixture(scope="module")
def ds_bench(tmp_path_factory):
    """Four questions with numeric answers (a custom benchmark: used as written)."""
    p = tmp_path_factory.mktemp("evalpar") / "sums.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"What is {i} + {2 * i + 1}?", "answer": str(3 * i + 1)}) + "\n"
                         for i in range(DS_QUESTIONS)))
    return p


def eval_cmd(retort_bin, db, model_dir, bench, args):
    return [retort_bin, "eval", "--db", str(db), "--model", f"local:{model_dir}", "--bench", str(bench), *args]


def summary_lines(stdout, bench_name):
    return [l for l in stdout.splitlines() if l.startswith(bench_name + " ")]


def test_ds_eval_under_mpirun_stores_the_plain_runs_results_once(ds, ds_bench, retort_bin, tmp_path):
    """2 ranks: the same rows (response bytes, extracted answer, verdict, tokens, finish) and the
    same printed table (pass@1 recomputed from the rows) as one process; one progress summary, one table; a rerun under
    mpirun generates nothing."""
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    r = run(eval_cmd(retort_bin, a, ds["dir"], ds_bench, DS_ARGS))
    assert r.returncode == 0, r.stderr
    p = mpi(2, eval_cmd(retort_bin, b, ds["dir"], ds_bench, DS_ARGS))
    assert p.returncode == 0, p.stderr
    want, got = rows(a), rows(b)
    assert len(want) == DS_QUESTIONS * 3
    assert got == want
    assert len({w[5] for w in want}) > DS_QUESTIONS, "sampling, not greedy: the samples should differ"
    assert all(w[8] >= 1 and w[9] in ("stop", "length") for w in want)
    n = DS_QUESTIONS * 3
    assert [l for l in p.stderr.splitlines() if l.startswith("eval: ") and "samples generated" in l] == \
        [f"eval: {n} samples generated, 0 already stored"], p.stderr
    assert "(rank 0's part)" in p.stderr, p.stderr
    assert len(summary_lines(p.stdout, "sums")) == 1, p.stdout
    assert summary_lines(p.stdout, "sums") == summary_lines(r.stdout, "sums")
    f = summary_lines(p.stdout, "sums")[0].split()
    # pass@1 from the rows (the answers are arbitrary text here, so cons@k is held to the plain run's)
    p1 = sum(sum(w[7] for w in want if w[3] == q) / 3 for q in {w[3] for w in want}) / DS_QUESTIONS
    assert (int(f[1]), int(f[2])) == (DS_QUESTIONS, 3)
    assert abs(float(f[3]) - p1) < 5e-5, (p.stdout, p1)

    again = mpi(2, eval_cmd(retort_bin, b, ds["dir"], ds_bench, DS_ARGS))
    assert again.returncode == 0, again.stderr
    assert f"eval: 0 samples generated, {n} already stored" in again.stderr, again.stderr
    assert rows(b) == want

    # a killed run: the rerun under mpirun regenerates exactly the deleted samples, identically
    c = sqlite3.connect(str(b))
    c.execute("DELETE FROM eval_results WHERE sample_index = 2 OR prompt_id % 2 = 0")
    c.commit()
    c.close()
    resumed = mpi(2, eval_cmd(retort_bin, b, ds["dir"], ds_bench, DS_ARGS))
    assert resumed.returncode == 0, resumed.stderr
    assert "0 samples generated" not in resumed.stderr
    assert rows(b) == want


def assert_one_line(p, *needles):
    assert p.returncode != 0, p.stderr
    lines = retort_lines(p)
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert p.stdout == "", p.stdout[:300]


def test_ds_eval_setup_failures_under_mpirun_are_one_line(ds, ds_bench, retort_bin, tmp_path):
    """Rank 0's failure (a missing benchmark file), a failure of the split every rank meets (more
    ranks than heads) and a bad model directory: one line, every rank exits, nothing written."""
    db = tmp_path / "x.db"
    p = mpi(2, eval_cmd(retort_bin, db, ds["dir"], tmp_path / "missing.jsonl", DS_ARGS), timeout=120)
    assert_one_line(p, "missing.jsonl", "not found")
    p = mpi(HEADS + 1, eval_cmd(retort_bin, db, ds["dir"], ds_bench, DS_ARGS), timeout=120)
    assert_one_line(p, f"{HEADS + 1} ranks but the model has {HEADS} attention heads")
    assert rows(db) == []
    p = mpi(2, eval_cmd(retort_bin, db, tmp_path / "nomodel", ds_bench, DS_ARGS), timeout=120)
    assert_one_line(p, "nomodel", "not found")
    p = mpi(2, eval_cmd(retort_bin, db, ds["dir"], ds_bench, [*DS_ARGS, "--k", "0"]), timeout=120)
    assert p.returncode != 0
    assert len([l for l in p.stderr.splitlines() if "--k wants" in l]) == 1, p.stderr


def test_ds_eval_failure_on_one_follower_only_is_one_line_from_that_rank(ds, ds_bench, retort_bin, tmp_path):
    """MPMD mpirun: rank 1 alone gets a tokenizer that does not exist. The ranks agree after
    setup: rank 1 names itself in the one line, rank 0 (fine) stays quiet, all exit."""
    base = eval_cmd(retort_bin, tmp_path / "x.db", ds["dir"], ds_bench, DS_ARGS)
    np_at = mpirun_cmd(1).index("-np")
    cmd = mpirun_cmd(1)[:np_at] + mpirun_cmd(1)[np_at + 2:] + ["-np", "1", *base, ":", "-np", "1", *base,
                                                               "--tokenizer", "/nonexistent/tok.json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=mpi_env())
    assert_one_line(p, "rank 1 of 2", "/nonexistent/tok.json")


def test_ds_eval_question_that_cannot_fit_ends_every_rank_with_one_line(ds, retort_bin, tmp_path):
    """Mid-run: a question longer than the model's 1024 positions is refused on every rank; rank 0
    says so in one line (the plain run's line), the followers are released, every rank exits."""
    bench = tmp_path / "long.jsonl"
    bench.write_text(json.dumps({"prompt": "What is 1 + 1?", "answer": "2"}) + "\n" +
                     json.dumps({"prompt": "x" * 1500, "answer": "3"}) + "\n")
    r = run(eval_cmd(retort_bin, tmp_path / "a.db", ds["dir"], bench, DS_ARGS))
    assert r.returncode == 1 and len(retort_lines(r)) == 1, r.stderr
    assert "long question 2" in retort_lines(r)[0], r.stderr
    p = mpi(2, eval_cmd(retort_bin, tmp_path / "b.db", ds["dir"], bench, DS_ARGS), timeout=120)
    assert_one_line(p, "long question 2")
    assert retort_lines(p) == retort_lines(r)


DENSE_ARGS = ["--k", str(K), "--max-tokens", "2", "--temperature", "1", "--top-p", "1", "--threads", "2", "--seed", "5"]


def test_dense_cpu_model_under_mpirun_is_rank_0s_alone(dense, retort_bin, tmp_path):
    """A dense model does not split on the CPU: under mpirun -np 2 rank 1 exits 0 and rank 0
    gives the plain run's rows and metrics, once."""
    d, bench = dense
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    r = run(eval_cmd(retort_bin, a, d, bench, DENSE_ARGS))
    assert r.returncode == 0, r.stderr
    p = mpi(2, eval_cmd(retort_bin, b, d, bench, DENSE_ARGS), timeout=300)
    assert p.returncode == 0, p.stderr   # every rank exited 0
    want = rows(a)
    assert len(want) == N_Q * K and rows(b) == want
    assert [l for l in p.stderr.splitlines() if "samples generated" in l] == \
        [f"eval: {N_Q * K} samples generated, 0 already stored"], p.stderr
    assert "rank 0's part" not in p.stderr
    assert printed(p.stdout) == printed(r.stdout)
    p1, cons = expected(want)
    assert 0 < p1 < 1, "the fixture should give some right and some wrong answers"
    assert abs(printed(p.stdout)[2] - p1) < 5e-5 and abs(printed(p.stdout)[3] - cons) < 5e-5


def test_endpoint_model_under_mpirun_is_rank_0s_alone(dense, retort_bin, tmp_path):
    """An endpoint model: rank 0 sends each sample's request once, the other ranks exit 0."""
    _, bench = dense
    s = Server()
    try:
        db = tmp_path / "remote.db"
        p = mpi(3, [retort_bin, "eval", "--db", str(db), "--model", s.url, "--bench", str(bench), "--k", "2",
                    "--concurrency", "2"], timeout=120)
        assert p.returncode == 0, p.stderr
        assert len(s.stats()["requests"]) == N_Q * 2
        assert len(rows(db)) == N_Q * 2
        assert len([l for l in p.stderr.splitlines() if "samples generated" in l]) == 1, p.stderr
    finally:
        s.close()
