"""`retort eval` end to end on a tiny Qwen2 checkpoint (transformers save_pretrained) with a
digits-only byte-level tokenizer (PyPI tokenizers) and a small custom benchmark: the rows
stored in eval_results, resumability (a rerun adds nothing; deleted samples come back
identical), and the printed pass@1 / cons@k equal Python's computation from the stored rows.
Also: URL models and bad files are one-line errors (exit 1), usage errors exit 2."""
import json
import os
import re
import shutil
import sqlite3

import pytest

from conftest import ROOT, assert_one_error_line, run

K, N_Q = 6, 10


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import AutoConfig, AutoModelForCausalLM
    d = tmp_path_factory.mktemp("eval") / "tiny"
    vocab = {"<eos>": 0, "\u0120": 1, **{str(i): 2 + i for i in range(10)}}
    tk = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = tokenizers.decoders.ByteLevel()
    tk.add_special_tokens([tokenizers.AddedToken("<eos>", special=True)])
    cfg = json.load(open(os.path.join(ROOT, "configs", "models", "tiny-qwen2.json")))
    cfg.update(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, eos_token_id=0, bos_token_id=0)
    torch.manual_seed(3)
    m = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg)).float()
    with torch.no_grad():   # large random weights: peaked, varied next-token distributions
        for name, p in m.named_parameters():
            p.copy_(1 + 0.1 * torch.randn(p.shape) if "norm" in name else torch.randn(p.shape))
    m.save_pretrained(str(d))
    tk.save(str(d / "tokenizer.json"))
    bench = d.parent / "digits.jsonl"
    bench.write_text("".join(json.dumps({"prompt": f"{i} {i + 3} {7 * i % 10}", "answer": str(i * 3 % 10)}) + "\n"
                             for i in range(N_Q)))
    return d, bench


def evaluate(retort_bin, db, d, bench, *extra):
    return run([retort_bin, "eval", "--db", str(db), "--model", f"local:{d}", "--bench", str(bench), "--k", str(K),
                "--max-tokens", "2", "--temperature", "1", "--top-p", "1", "--threads", "2", "--seed", "5", *extra])


def rows(db):
    c = sqlite3.connect(str(db))
    out = c.execute("SELECT run, model, benchmark, prompt_id, sample_index, response, extracted, correct, n_tokens, "
                    "finish_reason FROM eval_results ORDER BY prompt_id, sample_index").fetchall()
    c.close()
    return out


def expected(rs):
    """pass@1 and cons@k from stored rows (answers are digit strings: equal as integers)."""
    by_q = {}
    for r in rs:
        by_q.setdefault(r[3], []).append(r)
    p1, cons = [], []
    for q in by_q.values():
        p1.append(sum(r[7] for r in q) / len(q))
        votes, first = {}, {}
        for r in q:
            if r[6] is None:
                continue
            key = int(r[6])
            votes[key] = votes.get(key, 0) + 1
            first.setdefault(key, r)
        if votes:
            best = max(votes, key=lambda a: (votes[a], -first[a][4]))
            cons.append(first[best][7])
        else:
            cons.append(0)
    return sum(p1) / len(p1), sum(cons) / len(cons)


def printed(stdout):
    line = [l for l in stdout.splitlines() if l.startswith("digits ")]
    assert len(line) == 1, stdout
    f = line[0].split()
    return int(f[1]), int(f[2]), float(f[3]), float(f[6])


def test_eval_stores_rows_resumes_and_prints_python_metrics(retort_bin, model, tmp_path):
    d, bench = model
    db = tmp_path / "run.db"
    r = evaluate(retort_bin, db, d, bench)
    assert r.returncode == 0, r.stderr
    assert "samples" in r.stderr
    rs = rows(db)
    assert len(rs) == N_Q * K
    gold = {json.loads(l)["prompt"]: json.loads(l)["answer"] for l in bench.read_text().splitlines()}
    c = sqlite3.connect(str(db))
    prompts = {pid: (json.loads(msgs)[-1]["content"], g, src)
               for pid, msgs, g, src in c.execute("SELECT id, messages, gold, source FROM prompts")}
    c.close()
    assert len(prompts) == N_Q and all(src == "digits" for _, _, src in prompts.values())
    for run_name, mdl, b, pid, j, resp, ex, ok, ntok, fin in rs:
        assert (run_name, mdl, b) == ("tiny", f"local:{os.path.realpath(d)}", "digits")
        text, g, _ = prompts[pid]
        assert gold[text] == g
        assert 1 <= ntok <= 2 and fin in ("stop", "length") and (fin == "stop" or ntok == 2)
        assert resp is not None and len(resp) > 0
        assert ok == (ex is not None and int(ex) == int(g))
    assert {r[4] for r in rs} == set(range(K))
    p1, cons = expected(rs)
    nq, k, got_p1, got_cons = printed(r.stdout)
    assert (nq, k) == (N_Q, K)
    assert abs(got_p1 - p1) < 5e-5 and abs(got_cons - cons) < 5e-5, (r.stdout, p1, cons)
    assert 0 < p1 < 1, "the fixture should give some right and some wrong answers"

    js = evaluate(retort_bin, db, d, bench, "--json")
    assert js.returncode == 0, js.stderr
    summary = json.loads(js.stdout)["benchmarks"]["digits"]["runs"]["tiny"]
    assert summary["pass1"] == pytest.approx(p1) and summary["cons"] == pytest.approx(cons)
    assert summary["samples"] == N_Q * K and summary["k"] == K

    again = evaluate(retort_bin, db, d, bench)
    assert again.returncode == 0, again.stderr
    assert "0 samples generated" in again.stderr
    assert rows(db) == rs
    assert printed(again.stdout) == printed(r.stdout)

    # a killed run: delete some samples; the rerun regenerates exactly those, identically
    c = sqlite3.connect(str(db))
    c.execute("DELETE FROM eval_results WHERE sample_index >= 4 OR prompt_id % 3 = 0")
    c.commit()
    c.close()
    resumed = evaluate(retort_bin, db, d, bench)
    assert resumed.returncode == 0, resumed.stderr
    assert "0 samples generated" not in resumed.stderr
    assert [x[:5] + x[6:] for x in rows(db)] == [x[:5] + x[6:] for x in rs]


def test_eval_k_and_name_make_a_separate_run(retort_bin, model, tmp_path):
    d, bench = model
    db = tmp_path / "run.db"
    r = evaluate(retort_bin, db, d, bench, "--name", "other", "--k", "1")
    assert r.returncode == 0, r.stderr
    assert len(rows(db)) == N_Q
    assert printed(r.stdout)[1] == 1


def test_eval_errors(retort_bin, model, tmp_path):
    d, bench = model
    db = tmp_path / "run.db"
    assert evaluate(retort_bin, db, d, bench, "--k", "1", "--limit", "2").returncode == 0
    other = tmp_path / "tiny"
    shutil.copytree(d, other)
    assert_one_error_line(evaluate(retort_bin, db, other, bench, "--k", "1"), "already holds results of model")
    p = run([retort_bin, "eval", "--db", str(db), "--model", "ftp://localhost/v1", "--bench", str(bench)])
    assert_one_error_line(p, "local:DIR")
    p = run([retort_bin, "eval", "--db", str(db), "--model", f"local:{d}", "--bench", str(tmp_path / "none.jsonl")])
    assert_one_error_line(p, "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1 2", "answer": "3"}\n{"prompt": "4"}\n')
    p = run([retort_bin, "eval", "--db", str(db), "--model", f"local:{d}", "--bench", str(bad)])
    assert_one_error_line(p, "bad.jsonl:2")
    for args in (["--model", f"local:{d}", "--bench", str(bench)], ["--db", str(db), "--bench", str(bench)],
                 ["--db", str(db), "--model", f"local:{d}", "--bench", str(bench), "--k", "0"],
                 ["--db", str(db), "--model", f"local:{d}", "--bench", str(bench), "--template", "nope"]):
        p = run([retort_bin, "eval", *args])
        assert p.returncode == 2, (args, p.stderr)


def test_eval_builtin_benchmark_with_chat_template(retort_bin, assets, tmp_path):
    """gsm8k from the assets, rendered with the Qwen template and the Qwen3 tokenizer asset,
    on the first 3 questions (--limit); a random model answers wrongly but every row is there."""
    torch = pytest.importorskip("torch")
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import AutoConfig, AutoModelForCausalLM
    tok_path = os.path.join(assets, "tokenizers", "qwen3", "tokenizer.json")
    if not os.path.exists(tok_path):
        pytest.skip(f"skipped: {tok_path} absent")
    tok = tokenizers.Tokenizer.from_file(tok_path)
    cfg = json.load(open(os.path.join(ROOT, "configs", "models", "tiny-qwen2.json")))
    cfg.update(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
               num_attention_heads=4, num_key_value_heads=2, eos_token_id=tok.token_to_id("<|im_end|>"))
    torch.manual_seed(0)
    d = tmp_path / "qwen"
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg)).float().save_pretrained(str(d))
    db = tmp_path / "run.db"
    r = run([retort_bin, "eval", "--db", str(db), "--model", f"local:{d}", "--bench", "gsm8k", "--limit", "3",
             "--k", "2", "--max-tokens", "4", "--tokenizer", tok_path, "--template", "qwen", "--threads", "2"])
    assert r.returncode == 0, r.stderr
    c = sqlite3.connect(str(db))
    got = c.execute("SELECT run, benchmark, COUNT(*), COUNT(DISTINCT prompt_id), MAX(n_tokens) FROM eval_results").fetchone()
    golds = [g for (g,) in c.execute("SELECT p.gold FROM prompts p WHERE p.id IN (SELECT prompt_id FROM eval_results) "
                                     "ORDER BY p.id")]
    c.close()
    assert got == ("qwen", "gsm8k", 6, 3, 4)
    first = [json.loads(l) for l in open(os.path.join(assets, "benchmarks", "gsm8k_test.jsonl")).readlines()[:3]]
    assert golds == [f["answer"].split("####")[-1].strip() for f in first]
    nq, k, _, _ = printed(r.stdout.replace("gsm8k ", "digits ", 1))
    assert (nq, k) == (3, 2)
