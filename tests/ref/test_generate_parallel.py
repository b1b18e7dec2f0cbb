"""`retort generate` on the tensor/expert-parallel DeepSeek-V3 path under mpirun (issue #11):
every rank loads its slice (te_model_load_comm → ds_load_parallel), rank 0 reads the prompts
or the database and writes stdout or the samples, the other ranks follow through pe_step.

The model is test_ds_parallel.py's small DeepSeek-V3 stored as R1 is (FP8 e4m3 projections
with 128x128 block scales, 2 shards, 4 heads, 8 routed experts), with a byte-level tokenizer
padded to its 512 ids (DeepSeek-R1's special tokens, <think>, </think>) for text and --db.

Expected values: the plain run (no mpirun) of the same command, whose greedy continuation is
checked here against transformers' DeepseekV3ForCausalLM on the dequantized weights (from
test_ds_parallel.build) — the engine's own tests compare it further. One rank gives the plain
run's bytes; P > 1 ranks sum o_proj and the dense MLP in P partial sums (teacher/parallel.h),
so logprobs may move by a few ulp (bound 1e-4, as test_ds_parallel.py) while ids, texts,
finish reasons and token counts stay identical. Every subprocess has a timeout: a rank left
waiting in a collective fails the test instead of hanging it."""
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from conftest import jsonl_lines, run

sys.path.insert(0, os.path.dirname(__file__))
from test_ds_parallel import HEADS, build, mpi_env, mpirun_cmd  # noqa: E402  the FP8 DeepSeek-V3 builder
from test_generate_db import Server, check_complete, make_db, rows  # noqa: E402

TOL = 1e-4
R1_SPECIAL = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"]


def write_tokenizer(path, vocab_size):
    """Byte-level BPE (256 bytes), R1's special tokens, <think>, </think>, then plain added
    tokens "<xN>" up to vocab_size, so every id the model draws decodes."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(t, special=True) for t in R1_SPECIAL])
    tk.add_tokens([AddedToken("<think>", special=False), AddedToken("</think>", special=False)])
    tk.add_tokens([AddedToken(f"<x{i}>", special=False) for i in range(vocab_size - tk.get_vocab_size())])
    assert tk.get_vocab_size() == vocab_size
    tk.save(path)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    pytest.importorskip("tokenizers")
    m = build(tmp_path_factory.mktemp("genpar"))
    cfg = json.load(open(os.path.join(m["dir"], "config.json")))
    write_tokenizer(os.path.join(m["dir"], "tokenizer.json"), cfg["vocab_size"])
    from safetensors.torch import load_file
    m["prompt"] = load_file(m["in"])["prompt"].tolist()
    return m


def mpi(ranks, args, timeout=300):
    return subprocess.run(mpirun_cmd(ranks) + args, capture_output=True, text=True, timeout=timeout, env=mpi_env())


def retort_lines(p):
    return [l for l in p.stderr.splitlines() if l.startswith("retort")]


def assert_one_retort_line(p, *needles):
    """Under mpirun: a non-zero exit and exactly one 'retort: …' line in all ranks' stderr
    (mpirun adds its own banner about the exit status)."""
    assert p.returncode != 0, p.stderr
    lines = retort_lines(p)
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("retort: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert p.stdout == "", p.stdout[:300]


def write_prompts(path, ds, extra=()):
    lines = [{"prompt_ids": ds["prompt"]}, {"prompt_ids": [3, 1, 4, 1, 5, 9, 2, 6]}, {"prompt": "What is 2 + 3?"},
             *extra]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return str(path)


def same_samples(got, want, exact):
    assert len(got) == len(want) and len(want) > 0
    for g, w in zip(got, want):
        for k in ("index", "sample", "ids", "text", "finish_reason"):
            assert g[k] == w[k], (k, g, w)
        if "logprobs" in w:
            for a, b in zip(g["logprobs"], w["logprobs"]):
                assert a["id"] == b["id"]
                assert (a["logprob"] == b["logprob"]) if exact else abs(a["logprob"] - b["logprob"]) < TOL, (a, b)


GREEDY = ["--temperature", "0", "--n", "2", "--max-tokens", "8", "--ignore-eos", "--logprobs", "2"]
SAMPLED = ["--temperature", "0.8", "--top-p", "0.9", "--n", "3", "--max-tokens", "16", "--seed", "11"]


@pytest.fixture(scope="module")
def plain(ds, retort_bin, tmp_path_factory):
    """The plain runs (no mpirun): greedy and seeded sampling."""
    d = tmp_path_factory.mktemp("genpar-plain")
    prompts = write_prompts(d / "in.jsonl", ds)
    out = {}
    for name, args in (("greedy", GREEDY), ("sampled", SAMPLED)):
        r = run([retort_bin, "generate", "--model", ds["dir"], "--jsonl", prompts, "--threads", "1", *args])
        assert r.returncode == 0, r.stderr
        out[name] = (r.stdout, jsonl_lines(r.stdout))
    return prompts, out


def test_plain_greedy_matches_transformers(ds, plain):
    _, out = plain
    lines = out["greedy"][1]
    assert len(lines) == 6
    for o in lines:
        if o["index"] == 0:   # transformers' greedy continuation of the builder's prompt
            assert o["ids"] == ds["tokens"], o
    assert all(o["text"] is not None for o in lines)
    sampled = out["sampled"][1]
    assert len(sampled) == 9
    assert len({tuple(o["ids"]) for o in sampled if o["index"] == 0}) == 3, "samples of one prompt should differ"


@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_jsonl_under_mpirun_equals_the_plain_run(ds, plain, retort_bin, ranks):
    prompts, out = plain
    for name, args in (("greedy", GREEDY), ("sampled", SAMPLED)):
        p = mpi(ranks, [retort_bin, "generate", "--model", ds["dir"], "--jsonl", prompts, "--threads", "1", *args])
        assert p.returncode == 0, p.stderr
        assert not retort_lines(p), p.stderr
        progress = [l for l in p.stderr.splitlines() if l.startswith("generate: ")]
        assert progress and all("samples" in l for l in progress), p.stderr   # rank 0 alone reports
        assert len([l for l in progress if f"{len(out[name][1])}/{len(out[name][1])} samples" in l]) == 1, p.stderr
        if ranks == 1:   # one rank: the serial forward's bits, so the very same bytes
            assert p.stdout == out[name][0]
        same_samples(jsonl_lines(p.stdout), out[name][1], exact=ranks == 1)


def test_jsonl_prompt_that_cannot_fit_is_one_line_and_no_output(ds, retort_bin, tmp_path):
    """Refused by te_submit on every rank in the first lockstep step: rank 0 names the prompt,
    the followers are released, nothing is written."""
    prompts = write_prompts(tmp_path / "in.jsonl", ds, extra=[{"prompt_ids": [7] * 1100}])   # > 1024 positions
    p = mpi(2, [retort_bin, "generate", "--model", ds["dir"], "--jsonl", prompts, "--threads", "1", "--max-tokens", "4"])
    assert_one_retort_line(p, "prompt 4:")
    alone = run([retort_bin, "generate", "--model", ds["dir"], "--jsonl", prompts, "--threads", "1", "--max-tokens", "4"])
    assert alone.returncode == 1
    assert retort_lines(p) == [l for l in alone.stderr.splitlines() if l.strip()]


def test_bad_input_line_is_one_line(ds, retort_bin, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt_ids": [1, 2]}\n{"prompt_ids": [1, 99999]}\n')
    p = mpi(2, [retort_bin, "generate", "--model", ds["dir"], "--jsonl", str(bad), "--threads", "1"])
    assert_one_retort_line(p, "line 2", "prompt_ids[1]")


def test_usage_error_is_one_line(ds, retort_bin, tmp_path):
    p = mpi(2, [retort_bin, "generate", "--model", ds["dir"], "--jsonl", "x.jsonl", "--n", "0"])
    assert p.returncode != 0
    assert len([l for l in p.stderr.splitlines() if "--n wants a number" in l]) == 1, p.stderr


def test_dense_model_is_refused_over_ranks(retort_bin, tmp_path, ds):
    """Dense models have no parallel layout: one line, every rank exits (no hang)."""
    from test_generate import make_model
    cfg = json.load(open(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "models", "tiny-qwen2.json")))
    cfg.update(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)
    d = tmp_path / "dense"
    make_model(d, cfg, 3)
    prompts = tmp_path / "in.jsonl"
    prompts.write_text(json.dumps({"prompt_ids": [1, 2, 3]}) + "\n")
    p = mpi(2, [retort_bin, "generate", "--model", str(d), "--jsonl", str(prompts), "--threads", "1"], timeout=120)
    assert_one_retort_line(p, "only DeepSeek-V3", "without mpirun")
    r = run([retort_bin, "generate", "--model", str(d), "--jsonl", str(prompts), "--threads", "1", "--max-tokens", "2"])
    assert r.returncode == 0, r.stderr   # alone it runs
    db = make_db(retort_bin, tmp_path, n_math=1, n_chat=0)
    p = mpi(2, [retort_bin, "generate", "--db", str(db), "--teacher", f"local:{d}", "--tokenizer",
                os.path.join(ds["dir"], "tokenizer.json"), "--threads", "1"], timeout=120)
    assert_one_retort_line(p, "only DeepSeek-V3")


def test_more_ranks_than_heads_is_one_line(ds, plain, retort_bin):
    prompts, _ = plain
    p = mpi(HEADS + 1, [retort_bin, "generate", "--model", ds["dir"], "--jsonl", prompts, "--threads", "1"])
    assert_one_retort_line(p, f"{HEADS + 1} ranks but the model has {HEADS} attention heads")


DB_ARGS = ["--n", "2", "--max-tokens", "24", "--threads", "1", "--concurrency", "3", "--logprobs", "2"]


def stored(db):
    return {(x["messages"], x["index"]): x for x in rows(db)}


def topk_blobs(db):
    con = sqlite3.connect(str(db))
    out = {(r[0], r[1]): (r[2], r[3]) for r in con.execute(
        "SELECT s.prompt_id, s.sample_index, t.k, t.n_tokens FROM sample_topk t JOIN samples s ON s.id = t.sample_id")}
    con.close()
    return out


def test_db_local_teacher_under_mpirun_stores_the_plain_runs_samples(ds, retort_bin, tmp_path):
    """Seeded sampling (the R1 defaults): the same texts, seeds, token counts and finish reasons
    as the plain run; mean logprobs within 1e-4; counts, indices 0..K-1 and integrity checked;
    a rerun under mpirun finds nothing to do."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = make_db(retort_bin, tmp_path / "a", n_math=4, n_chat=2)
    b = make_db(retort_bin, tmp_path / "b", n_math=4, n_chat=2)
    teacher = ["--teacher", f"local:{ds['dir']}"]
    r = run([retort_bin, "generate", "--db", str(a), *teacher, *DB_ARGS])
    assert r.returncode == 0, r.stderr
    p = mpi(2, [retort_bin, "generate", "--db", str(b), *teacher, *DB_ARGS])
    assert p.returncode == 0, p.stderr
    assert len([l for l in p.stderr.splitlines() if l.startswith("generate: done: 12 sample(s)")]) == 1, p.stderr
    want, got = check_complete(a, 2, 6, "fp8"), check_complete(b, 2, 6, "fp8")
    assert len(want) == len(got) == 12
    want, got = stored(a), stored(b)
    assert got.keys() == want.keys()
    for k, w in want.items():
        g = got[k]
        for f in ("text", "seed", "params", "prompt_tokens", "thinking", "answer", "finish"):
            assert g[f] == w[f], (f, g, w)
        assert abs(g["mean_lp"] - w["mean_lp"]) < TOL
    assert len({w["text"] for w in want.values()}) == 12   # sampling, not greedy
    assert all(w["text"].startswith("<think>\n") for w in want.values())
    assert topk_blobs(a) == topk_blobs(b) and len(topk_blobs(a)) == 12
    p = mpi(2, [retort_bin, "generate", "--db", str(b), *teacher, *DB_ARGS])
    assert p.returncode == 0 and "12 already stored" in p.stderr, p.stderr
    assert len(rows(b)) == 12


def test_db_prompt_that_cannot_fit_is_skipped_under_mpirun(ds, retort_bin, tmp_path):
    db = make_db(retort_bin, tmp_path, n_math=2, n_chat=0)
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"prompt": "x" * 1500}) + "\n")   # 1500 byte tokens > 1024 positions
    r = run([retort_bin, "import", "--db", str(db), "--format", "jsonl", "--prompt-field", "prompt", str(long)])
    assert r.returncode == 0, r.stderr
    p = mpi(2, [retort_bin, "generate", "--db", str(db), "--teacher", f"local:{ds['dir']}", "--max-tokens", "8",
                "--n", "2", "--threads", "1", "--quiet"])
    assert p.returncode != 0
    lines = retort_lines(p)
    assert len(lines) == 1 and "2 sample(s) cannot be generated" in lines[0] and "context" in lines[0], p.stderr
    rs = rows(db)
    assert len(rs) == 4 and {x["source"] for x in rs} == {"gsm8k_mini"}


def test_endpoint_teacher_under_mpirun_runs_once(retort_bin, tmp_path):
    """An endpoint teacher has nothing to split: ranks > 0 exit 0, rank 0 sends every request
    once."""
    s = Server()
    try:
        db = make_db(retort_bin, tmp_path, n_math=3, n_chat=1)
        p = mpi(3, [retort_bin, "generate", "--db", str(db), "--teacher", s.url, "--n", "2", "--concurrency", "2"])
        assert p.returncode == 0, p.stderr
        assert len([l for l in p.stderr.splitlines() if l.startswith("generate: done: 8 sample(s)")]) == 1, p.stderr
        check_complete(db, 2, 4)
        assert len(s.stats()["requests"]) == 8
    finally:
        s.close()


# ---- retort serve under mpirun ----

def start_server(cmd, env=None):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1, env=env)
    lines = []
    while True:
        line = p.stderr.readline()
        if not line:
            p.wait(timeout=60)
            pytest.fail("the server exited: " + "".join(lines))
        lines.append(line)
        if line.startswith("retort serve: listening on http://"):
            return p, int(line.rsplit(":", 1)[1]), lines


def post(port, path, body, timeout=120):
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def rank_pids(mpirun_pid):
    """The ranks mpirun started (its children), by OMPI_COMM_WORLD_RANK."""
    out = {}
    for task in os.listdir(f"/proc/{mpirun_pid}/task"):
        for c in open(f"/proc/{mpirun_pid}/task/{task}/children").read().split():
            env = open(f"/proc/{c}/environ", "rb").read().split(b"\0")
            for e in env:
                if e.startswith(b"OMPI_COMM_WORLD_RANK="):
                    out[int(e.split(b"=")[1])] = int(c)
    return out


REQUESTS = [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "What is 2 + 3?"}], "temperature": 0,
                              "max_tokens": 12}),
    ("/v1/completions", {"prompt": "Once upon a time", "temperature": 0.8, "top_p": 0.9, "seed": 5, "n": 2,
                         "max_tokens": 10}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Name a prime."}], "temperature": 0.7,
                              "seed": 9, "max_tokens": 14, "stream": False}),
]


def answers(port):
    """The requests sent at once (they share engine steps), answers without ids/timestamps."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(len(REQUESTS)) as ex:
        got = list(ex.map(lambda pr: post(port, pr[0], dict(pr[1], model="fp8")), REQUESTS))
    return [(g["choices"], g["usage"]) for g in got]


def test_serve_under_mpirun_answers_as_one_rank_and_stops_on_sigterm(ds, retort_bin):
    """mpirun -np 2 retort serve: greedy chat and seeded completions equal the 1-rank server's
    answers; SIGTERM to rank 0 drains, ends the follower, and every rank exits 0."""
    import signal
    args = [retort_bin, "serve", "--model", ds["dir"], "--port", "0", "--threads", "1"]
    p, port, _ = start_server(args)
    try:
        want = answers(port)
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 0
    assert want[0][0][0]["finish_reason"] == "length" and want[0][1]["completion_tokens"] == 12
    assert len(want[1][0]) == 2 and want[1][0][0]["text"] != want[1][0][1]["text"]
    mp, port, head = start_server(mpirun_cmd(2) + args, env=mpi_env())
    try:
        assert any("split over 2 ranks" in l for l in head), head
        assert answers(port) == want
        assert answers(port) == want   # and again, on the same engines
        ranks = rank_pids(mp.pid)
        assert sorted(ranks) == [0, 1], ranks
        os.kill(ranks[0], signal.SIGTERM)
        assert mp.wait(timeout=120) == 0
        err = mp.stderr.read()
        assert "retort serve: stopped" in err and not [l for l in err.splitlines() if l.startswith("retort: ")], err
    finally:
        if mp.poll() is None:
            mp.kill()
            mp.wait()


def session(port):
    """A refusal by te_submit (two prompts, the second needing more cache than there is: the
    job gets 400, its accepted prompt is cancelled with the next step), a streaming client that
    hangs up after its first chunk (cancelled), then REQUESTS — whose answers show that every
    rank still makes the same decisions."""
    import socket
    import urllib.error
    try:
        post(port, "/v1/completions", {"model": "fp8", "prompt": [[1, 2, 3], list(range(10, 110))], "max_tokens": 60,
                                       "temperature": 0})
        refusal = None
    except urllib.error.HTTPError as e:
        refusal = (e.code, json.load(e)["error"]["message"])
    sock = socket.create_connection(("127.0.0.1", port))
    body = json.dumps({"prompt": [1, 2, 3], "max_tokens": 100, "ignore_eos": True, "stream": True}).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    got = b""
    while b"data: " not in got:
        piece = sock.recv(4096)
        assert piece, got
        got += piece
    sock.close()
    return refusal, answers(port)


def test_serve_under_mpirun_refusals_and_cancels_stay_in_lockstep(ds, retort_bin):
    import signal
    args = [retort_bin, "serve", "--model", ds["dir"], "--port", "0", "--threads", "1", "--cache-tokens", "128"]
    p, port, _ = start_server(args)
    try:
        want = session(port)
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 0
    assert want[0] is not None and want[0][0] == 400, want[0]
    mp, port, _ = start_server(mpirun_cmd(2) + args, env=mpi_env())
    try:
        assert session(port) == want
        os.kill(rank_pids(mp.pid)[0], signal.SIGTERM)
        assert mp.wait(timeout=120) == 0
    finally:
        if mp.poll() is None:
            mp.kill()
            mp.wait()


def wait_for_a_stored_sample(db, proc, timeout=1200):
    """Poll the database (read-only, as another process would) until the run has committed a
    sample, so that a signal sent next interrupts a run that has stored something."""
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "the run ended before it stored a sample"
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                if con.execute("SELECT count(*) FROM samples").fetchone()[0] > 0:
                    return
            finally:
                con.close()
        except sqlite3.OperationalError:
            pass   # the writer holds the lock: look again
        time.sleep(0.2)
    raise AssertionError(f"no sample stored within {timeout} s")


def test_db_sigterm_on_rank_0_stops_cleanly_and_a_rerun_completes(ds, retort_bin, tmp_path):
    """SIGTERM to rank 0 mid-run: it stops between steps, releases the follower, exits 130
    (so does mpirun); every stored sample is whole; a rerun under mpirun stores exactly the
    missing ones."""
    import signal
    db = make_db(retort_bin, tmp_path, n_math=40, n_chat=0)
    cmd = mpirun_cmd(2) + [retort_bin, "generate", "--db", str(db), "--teacher", f"local:{ds['dir']}", "--n", "8",
                           "--max-tokens", "900", "--threads", "1"]
    mp = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1, env=mpi_env())
    try:
        first = mp.stderr.readline()   # the first progress line: the run is under way
        assert first.startswith("generate: prompts"), first
        wait_for_a_stored_sample(db, mp)   # under ASan the first line comes long before the first row
        os.kill(rank_pids(mp.pid)[0], signal.SIGTERM)
        err = mp.stderr.read()
        assert mp.wait(timeout=120) == 130, err
    finally:
        if mp.poll() is None:
            mp.kill()
            mp.wait()
    lines = retort_lines(subprocess.CompletedProcess([], 130, "", err))
    assert len(lines) == 1 and "interrupted" in lines[0], err
    stored_n = int(lines[0].split("; ")[1].split()[0])
    assert 0 < stored_n < 320 and len(rows(db)) == stored_n
    # the rerun decodes the rest: minutes under ASan (make sanitize) on 2 shared cores
    p = mpi(2, cmd[len(mpirun_cmd(2)):], timeout=1800 if "ASAN_OPTIONS" in os.environ else 600)
    assert p.returncode == 0, p.stderr
    assert f"{stored_n} already stored" in p.stderr, p.stderr
    assert len(check_complete(db, 8, 40, "fp8")) == 320


def test_a_failure_on_one_follower_only_is_one_line_from_that_rank(ds, plain, retort_bin):
    """MPMD mpirun: rank 1 alone gets a tokenizer path that does not exist. The ranks agree
    after setup: rank 1 names itself in the one line, rank 0 (fine) stays quiet, all exit."""
    prompts, _ = plain
    base = [retort_bin, "generate", "--model", ds["dir"], "--jsonl", prompts, "--threads", "1"]
    np_at = mpirun_cmd(1).index("-np")   # mpirun's options without -np: one per program below
    cmd = mpirun_cmd(1)[:np_at] + mpirun_cmd(1)[np_at + 2:] + ["-np", "1", *base, ":", "-np", "1", *base,
                                                               "--tokenizer", "/nonexistent/tok.json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=mpi_env())
    assert_one_retort_line(p, "rank 1 of 2", "/nonexistent/tok.json")
