"""`retort tokenize` end to end against PyPI tokenizers: ids line for line on a corpus of
benchmark texts, hard cases and random strings; --special; --decode round trips and
--skip-special; bad lines named by number; usage errors."""
import json
import os
import random

import pytest

from conftest import run, jsonl_lines
from gen_tok_corpus import HARD, NAMES, benchmark_texts, random_strings, tokenizer_path

tokenizers = pytest.importorskip("tokenizers")


def tok_or_skip(name):
    p = tokenizer_path(name)
    if not os.path.exists(p):
        pytest.skip(f"skipped: {p} absent (set RETORT_ASSETS)")
    return p


def jsonl(objs):
    return "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs)


def outputs(p):
    return jsonl_lines(p.stdout)


@pytest.fixture(scope="module")
def corpus():
    seed = random.randrange(1 << 30)
    print(f"corpus seed {seed}")
    rng = random.Random(seed)
    bench = benchmark_texts()
    sample = rng.sample(bench, min(3000, len(bench))) if bench else []
    return sample + HARD + random_strings(rng, 1000)


@pytest.mark.parametrize("name", NAMES)
def test_ids_match_hf_line_for_line(retort_bin, corpus, name):
    path = tok_or_skip(name)
    hf = tokenizers.Tokenizer.from_file(path)
    p = run([retort_bin, "tokenize", "--tokenizer", path], input=jsonl({"text": t} for t in corpus))
    assert p.returncode == 0, p.stderr
    got = [o["ids"] for o in outputs(p)]
    want = [e.ids for e in hf.encode_batch(corpus, add_special_tokens=False)]
    assert len(got) == len(want)
    bad = [i for i in range(len(want)) if got[i] != want[i]]
    print(f"{name}: {len(want) - len(bad)}/{len(want)} identical")
    assert not bad, f"{len(bad)} lines differ, first: {corpus[bad[0]]!r}"


@pytest.mark.parametrize("name", NAMES)
def test_special_adds_what_hf_adds(retort_bin, name):
    path = tok_or_skip(name)
    hf = tokenizers.Tokenizer.from_file(path)
    texts = ["Hello", "", "<|begin_of_text|>already there", "x<｜begin▁of▁sentence｜>"]
    p = run([retort_bin, "tokenize", "--tokenizer", path, "--special"], input=jsonl({"text": t} for t in texts))
    assert p.returncode == 0, p.stderr
    assert [o["ids"] for o in outputs(p)] == [e.ids for e in hf.encode_batch(texts, add_special_tokens=True)]


@pytest.mark.parametrize("name", NAMES)
def test_decode_round_trips_and_skips_specials(retort_bin, corpus, name):
    path = tok_or_skip(name)
    hf = tokenizers.Tokenizer.from_file(path)
    texts = corpus[:800] + ["<|im_start|>user\nhi<|im_end|>", "<｜User｜>q<｜Assistant｜>a<｜end▁of▁sentence｜>",
                            "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"]
    ids = [e.ids for e in hf.encode_batch(texts, add_special_tokens=True)]
    for flag, skip in ((), False), (("--skip-special",), True):
        p = run([retort_bin, "tokenize", "--tokenizer", path, "--decode", *flag], input=jsonl({"ids": x} for x in ids))
        assert p.returncode == 0, p.stderr
        got = [o["text"] for o in outputs(p)]
        assert got == hf.decode_batch(ids, skip_special_tokens=skip)
    # without special tokens added, decoding gives the text back (Qwen: its NFC form)
    plain = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    p = run([retort_bin, "tokenize", "--tokenizer", path, "--decode"], input=jsonl({"ids": x} for x in plain))
    import unicodedata
    norm = (lambda s: unicodedata.normalize("NFC", s)) if name == "qwen3" else (lambda s: s)
    assert [o["text"] for o in outputs(p)] == [norm(t) for t in texts]


def test_bad_line_is_named_and_earlier_lines_are_written(retort_bin):
    path = tok_or_skip("qwen3")
    inp = '{"text": "one"}\n{"text": "two"}\n{"text": 3}\n{"text": "four"}\n'
    p = run([retort_bin, "tokenize", "--tokenizer", path], input=inp)
    assert p.returncode == 1
    assert len(outputs(p)) == 2
    assert p.stderr.startswith("retort: tokenize: line 3:"), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    for inp, line in [('{"text": "a"}\nnot json\n', 2), ('[1, 2]\n', 1), ('{"text": "a"}\n\n', 2),
                      ('{"txt": "a"}\n', 1), ('{"text": "a", "text": "b"}\n', 1)]:
        p = run([retort_bin, "tokenize", "--tokenizer", path], input=inp)
        assert p.returncode == 1 and f"line {line}:" in p.stderr, (inp, p.stderr)


def test_bad_decode_lines(retort_bin):
    path = tok_or_skip("llama3_1")
    for inp in ['{"ids": [1, "x"]}\n', '{"ids": [99999999]}\n', '{"ids": [-1]}\n', '{"text": "a"}\n', '{"ids": 5}\n']:
        p = run([retort_bin, "tokenize", "--tokenizer", path, "--decode"], input='{"ids": [9906]}\n' + inp)
        assert p.returncode == 1, inp
        assert "line 2:" in p.stderr, (inp, p.stderr)
        assert outputs(p) == [{"text": "Hello"}]


def test_usage_errors_exit_2(retort_bin):
    path = tok_or_skip("qwen3")
    for args in ([], ["--tokenizer"], ["--tokenizer", path, "--bogus"], ["--tokenizer", path, "extra"],
                 ["--tokenizer", path, "--decode", "--special", "--skip-special"],
                 ["--tokenizer", path, "--chat", "mistral"],
                 ["--tokenizer", path, "--threads", "0"], ["--tokenizer", path, "--skip-special"]):
        p = run([retort_bin, "tokenize", *args], input="")
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert p.stderr.startswith("retort tokenize:"), p.stderr
    p = run([retort_bin, "help", "tokenize"])
    assert p.returncode == 0 and "--decode" in p.stdout and "--chat" in p.stdout
    # --special with --decode keeps special tokens, which decode does anyway
    p = run([retort_bin, "tokenize", "--tokenizer", path, "--decode", "--special"], input='{"ids": [151644, 9707]}\n')
    assert p.returncode == 0 and outputs(p) == [{"text": "<|im_start|>Hello"}], p.stderr


def test_unreadable_tokenizer_is_a_runtime_error(retort_bin, tmp_path):
    p = run([retort_bin, "tokenize", "--tokenizer", str(tmp_path / "missing.json")], input="")
    assert p.returncode == 1 and p.stderr.startswith("retort: ")
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": {"type": "Unigram", "vocab": []}}')
    p = run([retort_bin, "tokenize", "--tokenizer", str(bad)], input="")
    assert p.returncode == 1 and "Unigram" in p.stderr


def test_empty_input_and_large_batches_keep_order(retort_bin):
    path = tok_or_skip("deepseek_v3")
    p = run([retort_bin, "tokenize", "--tokenizer", path], input="")
    assert p.returncode == 0 and p.stdout == ""
    hf = tokenizers.Tokenizer.from_file(path)
    texts = [f"line {i} " + "x" * (i % 50) for i in range(5000)]
    p = run([retort_bin, "tokenize", "--tokenizer", path, "--threads", "3"], input=jsonl({"text": t} for t in texts))
    assert p.returncode == 0
    assert [o["ids"] for o in outputs(p)] == [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
