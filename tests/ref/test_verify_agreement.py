"""`retort verify` against PyPI math-verify, and the CLI contract.

The pairs and math-verify's verdicts come from tests/ref/gen_verify.py (REF_DIR/
verify_pairs.jsonl): MATH-500 and GSM8K answers against reference solutions, model-style
solutions and perturbed answers. retort runs with --last-number, the extraction mode that
matches math-verify's default (it also falls back to the last number). The test prints the
agreement and the disagreements by kind; docs/filters.md explains each class.
"""
import collections
import json
import os
import subprocess

import pytest
from conftest import jsonl_lines

RETORT = os.environ.get("RETORT", os.path.join(os.path.dirname(__file__), "..", "..", "retort"))
REF_DIR = os.environ.get("REF_DIR")


def run_verify(lines, *args):
    return subprocess.run([RETORT, "verify", *args], input=lines, capture_output=True, text=True, timeout=300)


def test_verify_agreement_with_math_verify(capsys):
    path = os.path.join(REF_DIR or "", "verify_pairs.jsonl")
    if not REF_DIR or not os.path.exists(path):
        pytest.skip("skipped: REF_DIR/verify_pairs.jsonl missing (gen_verify.py needs shared/assets benchmarks)")
    if not os.path.exists(RETORT):
        pytest.skip("skipped: retort binary not built")
    pairs = [json.loads(l) for l in open(path, encoding="utf-8")]
    out = run_verify("".join(json.dumps({"gold": p["gold"], "pred": p["pred"]}) + "\n" for p in pairs), "--last-number")
    assert out.returncode == 0, out.stderr
    res = jsonl_lines(out.stdout)
    assert len(res) == len(pairs)
    agree = sum(r["correct"] == p["mv"] for r, p in zip(res, pairs))
    rate = agree / len(pairs)
    by_kind = collections.Counter()
    for r, p in zip(res, pairs):
        if r["correct"] != p["mv"]:
            by_kind[(p["kind"], "retort says correct" if r["correct"] else "math-verify says correct")] += 1
    with capsys.disabled():
        print(f"\n   verify agreement with math-verify: {agree}/{len(pairs)} = {rate:.4f}")
        for (kind, who), n in by_kind.most_common():
            print(f"      {n:4d}  {kind}: {who}")
    assert rate >= 0.98


def test_verify_output_is_line_for_line_in_order():
    if not os.path.exists(RETORT):
        pytest.skip("skipped: retort binary not built")
    rows = [{"gold": "18", "pred": "... so she makes $18 a day.\n#### 18"},
            {"gold": 18, "pred": "The answer is 17."},
            {"gold": "\\frac{1}{2}", "pred": "Thus $\\boxed{0.5}$."},
            {"gold": "\\text{Evelyn}", "pred": "nothing to see"}]
    out = run_verify("".join(json.dumps(r) + "\n" for r in rows))
    assert out.returncode == 0, out.stderr
    got = jsonl_lines(out.stdout)
    assert got == [
        {"correct": True, "pred_answer": "18", "gold_answer": "18"},
        {"correct": False, "pred_answer": "17", "gold_answer": "18"},
        {"correct": True, "pred_answer": "0.5", "gold_answer": "\\frac{1}{2}"},
        {"correct": False, "pred_answer": None, "gold_answer": "\\text{Evelyn}"},
    ]


@pytest.mark.parametrize("text,line", [
    ('{"gold": "1", "pred": "1"}\n{"gold": "1", "pred": \n', 2),
    ('{"gold": "1", "pred": "1"}\n\n{"gold": "1"}\n', 3),
    ('["gold", "pred"]\n', 1),
    ('{"gold": {"a": 1}, "pred": "1"}\n', 1),
])
def test_verify_bad_line_is_one_error_naming_the_line(text, line):
    if not os.path.exists(RETORT):
        pytest.skip("skipped: retort binary not built")
    out = run_verify(text)
    assert out.returncode == 1
    assert f"line {line}" in out.stderr
    assert out.stderr.count("\n") == 1, out.stderr


@pytest.mark.parametrize("args", [["--float-digits", "0"], ["--float-digits", "x"], ["--nope"], ["file.jsonl"]])
def test_verify_usage_errors_exit_2(args):
    if not os.path.exists(RETORT):
        pytest.skip("skipped: retort binary not built")
    out = run_verify("", *args)
    assert out.returncode == 2
    assert "retort verify" in out.stderr


def test_verify_decimal_places_is_math_verify_rounding():
    if not os.path.exists(RETORT):
        pytest.skip("skipped: retort binary not built")
    line = json.dumps({"gold": "\\frac{14}{3}", "pred": "4.66667"}) + "\n"
    assert json.loads(run_verify(line).stdout)["correct"] is True
    assert json.loads(run_verify(line, "--decimal-places").stdout)["correct"] is False
