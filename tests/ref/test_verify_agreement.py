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
import re
import subprocess

import pytest
from conftest import jsonl_lines

RETORT = os.environ.get("RETORT", os.path.join(os.path.dirname(__file__), "..", "..", "retort"))
REF_DIR = os.environ.get("REF_DIR")


def run_verify(lines, *args):
    return subprocess.run([RETORT, "verify", *args], input=lines, capture_output=True, text=True, timeout=300)


# False accepts (retort correct, math-verify not) that docs/filters.md lists as deliberate,
# each recognised by what causes it; any other false accept fails the test.
def deliberate_false_accept(p, r, r_dp):
    ans = r["pred_answer"] or ""
    if "####" in p["pred"]:
        return "#### line read"  # math-verify has no #### rule
    if not r_dp["correct"]:
        return "6 significant digits"  # math-verify counts 6 places after the point only
    if re.search(r"\d,(\\!)?\s*\d{3}", ans) and ("\\{" in ans or "=" in ans):
        return "thousands separator inside braces or after x ="
    if re.search(r"\d\\,\d{3}(?!\d)", ans):
        return "thin space as thousands separator"  # math-verify does not read 14\,600 as 14600
    if re.search(r"\\,\s*\\%", ans):
        return "thin space before \\%"  # math-verify fails to parse 11\,\% in a box or \( \)
    if re.search(r"[<>]|\\[lg]eq?\b|\\[lg]t\b", ans) and re.search(r"[\s}](t|h|c|o|s|d|l|m|g)\s*$", ans):
        return "relation ending in a unit letter"  # math-verify strips 't', 'h', … as units
    return None


def test_verify_agreement_with_math_verify(capsys):
    path = os.path.join(REF_DIR or "", "verify_pairs.jsonl")
    if not REF_DIR or not os.path.exists(path):
        pytest.skip("skipped: REF_DIR/verify_pairs.jsonl missing (gen_verify.py needs shared/assets benchmarks)")
    if not os.path.exists(RETORT):
        pytest.skip("skipped: retort binary not built")
    pairs = [json.loads(l) for l in open(path, encoding="utf-8")]
    assert len(pairs) >= 20000
    lines = "".join(json.dumps({"gold": p["gold"], "pred": p["pred"]}) + "\n" for p in pairs)
    out = run_verify(lines, "--last-number")
    out_dp = run_verify(lines, "--last-number", "--decimal-places")
    assert out.returncode == 0, out.stderr
    assert out_dp.returncode == 0, out_dp.stderr
    res, res_dp = jsonl_lines(out.stdout), jsonl_lines(out_dp.stdout)
    assert len(res) == len(pairs) == len(res_dp)
    agree = sum(r["correct"] == p["mv"] for r, p in zip(res, pairs))
    rate = agree / len(pairs)
    total, same = collections.Counter(), collections.Counter()
    deliberate, unexplained = collections.Counter(), []
    for r, r_dp, p in zip(res, res_dp, pairs):
        cat = ":".join(p["kind"].split(":")[:2])
        total[cat] += 1
        same[cat] += r["correct"] == p["mv"]
        if r["correct"] and not p["mv"]:
            why = deliberate_false_accept(p, r, r_dp)
            if why:
                deliberate[why] += 1
            else:
                unexplained.append((p["kind"], p["gold"], r["pred_answer"], r["reason"]))
    with capsys.disabled():
        print(f"\n   verify agreement with math-verify: {agree}/{len(pairs)} = {rate:.4f}")
        for cat in sorted(total):
            print(f"      {same[cat] / total[cat]:7.2%}  {same[cat]:5d}/{total[cat]:<5d} {cat}")
        for why, n in deliberate.most_common():
            print(f"      deliberate false accepts ({why}): {n}")
    assert not unexplained, f"{len(unexplained)} false accepts where math-verify rejects: {unexplained[:10]}"
    assert rate >= 0.99


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
        {"correct": True, "pred_answer": "18", "gold_answer": "18", "reason": "#### answer equal"},
        {"correct": False, "pred_answer": "17", "gold_answer": "18", "reason": "answer phrase different"},
        {"correct": True, "pred_answer": "0.5", "gold_answer": "\\frac{1}{2}", "reason": "boxed answer equal"},
        {"correct": False, "pred_answer": None, "gold_answer": "\\text{Evelyn}", "reason": "no answer in pred"},
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
