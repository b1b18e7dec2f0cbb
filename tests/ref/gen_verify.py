"""Reference verdicts for `retort verify`, from PyPI math-verify (independent of retort).

Builds a set of (gold, pred) pairs from the MATH-500 and GSM8K answers in shared/assets:
the reference solutions themselves, model-style solutions ending in several answer styles
(\\boxed{}, "The answer is", "#### N", bold "Answer:", a bare number at the end), and
perturbed answers — equivalent rewritings (\\dfrac, a/b, \\frac12, \\left/\\right, spaces,
units, degrees, dollars, thousands separators, trailing .00, decimal approximations, x = …,
reordered lists) and wrong ones (another problem's answer, off by one, negated, swapped
fraction, scaled). math-verify decides each pair the way it is used for MATH-500:
verify(parse("$" + gold + "$"), parse(pred)).

build_edge_pairs() adds issue 19's surface forms (kinds "edge:*") on MATH-500, GSM8K and
AIME 2024 answers: decimal commas, thousands separators with currency, currency signs,
units in text and words, percent words, relations in every spelling, chains with
\\approx, matrices (bmatrix, \\left[\\begin{array}…\\right], matrix expressions),
intervals/tuples/unions with \\left( … \\right), boxes inside prose, "Final Answer: The
smallest $k$ is 12." and long solutions — each with wrong twins.

Writes REF_DIR/verify_pairs.jsonl: {"gold", "pred", "kind", "mv": bool, "mv_pred": str}.
Used by tests/ref/test_verify_agreement.py (agreement ≥ 0.99, no unexplained false accept)
and bench/verify.sh.
Also writes REF_DIR/verify_cases.jsonl: hand-picked answer pairs, one per normalization and
comparison rule of issue 5, with math-verify's verdict (verify(parse("$g$"), parse("$p$"))),
read by tests/unit/test_verify.c. Pairs in a known disagreement class are not among them
(docs/filters.md lists those classes).

  python gen_verify.py REF_DIR [--scale full]   (default: the test-sized set)
"""
import json
import math
import multiprocessing as mp
import os
import random
import re
import sys

ASSETS = os.environ.get("RETORT_ASSETS") or os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "assets")
BENCH = os.path.join(ASSETS, "benchmarks")


def load(name):
    path = os.path.join(BENCH, name)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


# ---- rewritings of a gold answer ------------------------------------------------------------
FRAC = re.compile(r"\\frac\{(-?\d+)\}\{(\d+)\}")


def numeric_value(ans):
    """A float for plain numeric answers (integers, decimals, \\frac{a}{b}, -\\frac{a}{b})."""
    a = ans.strip().replace("\\!", "").replace("{,}", "").replace(",", "")
    m = re.fullmatch(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}", a)
    if m:
        v = int(m.group(2)) / int(m.group(3))
        return -v if m.group(1) else v
    if re.fullmatch(r"-?\d+(\.\d+)?", a):
        return float(a)
    return None


def equivalents(ans, rng):
    """Rewritings math-verify should (mostly) still accept."""
    out = []
    if "\\frac" in ans:
        out.append(("dfrac", ans.replace("\\frac", "\\dfrac")))
        m = FRAC.fullmatch(ans.strip())
        if m:
            out.append(("a/b", f"{m.group(1)}/{m.group(2)}"))
            if len(m.group(1)) == 1 and len(m.group(2)) == 1 and not m.group(1).startswith("-"):
                out.append(("frac12", f"\\frac{m.group(1)}{m.group(2)}"))
    if "\\sqrt{" in ans:
        m = re.search(r"\\sqrt\{(\d)\}", ans)
        if m:
            out.append(("sqrt3", ans.replace(m.group(0), "\\sqrt" + m.group(1), 1)))
    if ans.startswith("(") or ans.startswith("\\left("):
        inner = ans.replace("\\left(", "(").replace("\\right)", ")")
        out.append(("no-left-right", inner))
    if " " in ans:
        out.append(("no-spaces", ans.replace(" ", "")))
    else:
        out.append(("spaces", re.sub(r"([+=,-])", r" \1 ", ans)))
    v = numeric_value(ans)
    if v is not None:
        if re.fullmatch(r"-?\d+", ans.strip()):
            n = int(ans)
            out.append(("dot-zero", f"{n}.00"))
            out.append(("dollars", f"\\${n}"))
            out.append(("units", f"{n} \\text{{ units}}"))
            if abs(n) >= 1000:
                out.append(("thousands", f"{n:,}"))
                out.append(("thousands-brace", f"{n:,}".replace(",", "{,}")))
        else:
            out.append(("decimal-6sig", f"{v:.6g}"))
            out.append(("decimal-6dp", f"{v:.6f}"))
            out.append(("decimal-3dp", f"{v:.3f}"))
    if "^\\circ" in ans:
        out.append(("no-degrees", ans.replace("^\\circ", "")))
    if re.fullmatch(r"-?\d+", ans.strip()):
        out.append(("x=", f"x = {ans}"))
        out.append(("degrees", f"{ans}^\\circ"))
    if re.fullmatch(r"[^,]+(,[^,]+)+", ans) and "(" not in ans and "[" not in ans and "\\{" not in ans:
        parts = [p.strip() for p in ans.split(",")]
        rng.shuffle(parts)
        out.append(("reordered", ", ".join(parts)))
    if ans.startswith("\\text{"):
        out.append(("no-text", ans[6:-1] if ans.endswith("}") else ans))
    # LaTeX spacing and sizing that carry no meaning
    out.append(("thin-spaces", re.sub(r"([+=-])", r"\\,\1\\,", ans)))
    out.append(("displaystyle", "\\displaystyle " + ans))
    if ans.startswith("[") or ans.startswith("(") and ("," in ans):
        out.append(("left-right", "\\left" + ans[0] + ans[1:-1] + "\\right" + ans[-1]))
    if re.fullmatch(r"-?\d+", ans.strip()):
        out.append(("percent-sign", f"{ans}\\%"))
        out.append(("text-units", f"{ans}\\text{{ cm}}^2"))
        out.append(("mathrm-units", f"{ans}\\mathrm{{ km}}"))
        out.append(("dot-zero", f"{ans}.0"))
    m = re.fullmatch(r"(\d+)\\sqrt\{(\d+)\}", ans.strip())
    if m:
        out.append(("sqrt-in", f"\\sqrt{{{int(m.group(1)) ** 2 * int(m.group(2))}}}"))
    if re.fullmatch(r"[^,(\[{]+(,[^,]+)+", ans):
        out.append(("braced-set", "\\{" + ans + "\\}"))
    return out


def wrongs(ans, others, rng):
    out = [("other-answer", rng.choice(others))]
    m = re.search(r"\d+", ans)
    if m:
        n = int(m.group(0))
        out.append(("off-by-one", ans[: m.start()] + str(n + 1) + ans[m.end():]))
    if not ans.startswith("-"):
        out.append(("negated", "-" + ans if re.fullmatch(r"[\d.]+", ans) else "-(" + ans + ")"))
    f = FRAC.fullmatch(ans.strip())
    if f and f.group(1) != f.group(2):
        out.append(("swapped-frac", f"\\frac{{{f.group(2)}}}{{{f.group(1).lstrip('-')}}}"))
    v = numeric_value(ans)
    if v is not None and v != 0:
        out.append(("scaled", f"{v * 10:g}"))
        out.append(("rounded-2dp", f"{v:.2f}"))
    if re.fullmatch(r"[\[(][^,]+,[^,]+[\])]", ans.strip()):
        a = ans.strip()
        out.append(("open-closed", ("(" if a[0] == "[" else "[") + a[1:]))
        inner = a[1:-1].split(",")
        out.append(("swapped-pair", a[0] + inner[1].strip() + ", " + inner[0].strip() + a[-1]))
    if "\\sqrt" in ans:
        out.append(("dropped-sqrt", ans.replace("\\sqrt", "", 1)))
    if "x" in ans and "\\" not in ans:
        out.append(("x-to-y", ans.replace("x", "y")))
    return out


# ---- solution styles ---------------------------------------------------------------------------
PREAMBLES = [
    "Let me work through this step by step.\n\nFirst, we set up the problem carefully. ",
    "We need to find the requested quantity. Computing each part in turn, ",
    "<think>\nOkay, let me think. The key step is to simplify. Hmm, 2 + 2 = 4, so that part checks out.\n</think>\n\n",
    "",
]


def styled(ans, style, rng):
    pre = rng.choice(PREAMBLES)
    if style == "boxed":
        return f"{pre}Putting it together, the final answer is $\\boxed{{{ans}}}$."
    if style == "display-boxed":
        return f"{pre}Therefore\n\\[\n\\boxed{{{ans}}}\n\\]"
    if style == "answer-is":
        return f"{pre}The answer is ${ans}$."
    if style == "bold-answer":
        return f"{pre}\n\n**Answer:** ${ans}$"
    if style == "hash":
        return f"{pre}\n#### {ans}"
    if style == "last-number":
        return f"{pre}So the total comes to {ans} in the end."
    if style == "last-span":
        return f"{pre}Simplifying, we get $x = {ans}$."
    if style == "i-hope":
        return f"{pre}Final Answer: The final answer is ${ans}$. I hope it is correct."
    if style == "paren-math":
        return f"{pre}Hence the result is \\({ans}\\)."
    if style == "two-boxes":
        return f"{pre}At first I got $\\boxed{{0}}$, but that was a mistake.\n\nRedoing the computation carefully gives $\\boxed{{{ans}}}$."
    raise ValueError(style)


def gsm_gold(sol):
    return sol.split("####")[-1].strip().replace(",", "")


def build_pairs(scale="test", seed=20240501):
    rng = random.Random(seed)
    math500 = load("math500_test.jsonl")
    gsm = load("gsm8k_test.jsonl")
    if math500 is None or gsm is None:
        return None
    pairs = []

    def add(gold, pred, kind):
        pairs.append({"gold": gold, "pred": pred, "kind": kind})

    answers = [r["answer"] for r in math500]
    for r in math500:
        gold = r["answer"]
        add(gold, r["solution"], "math:reference-solution")
        for style in rng.sample(["boxed", "display-boxed", "answer-is", "bold-answer", "last-span", "i-hope",
                                 "paren-math", "two-boxes"], 3):
            add(gold, styled(gold, style, rng), f"math:styled:{style}")
        eqs = equivalents(gold, rng)
        if scale == "test":
            eqs = rng.sample(eqs, min(len(eqs), 4))
        for kind, variant in eqs:
            add(gold, styled(variant, "boxed", rng), f"math:equiv:{kind}")
        ws = wrongs(gold, answers, rng)
        if scale == "test":
            ws = rng.sample(ws, min(len(ws), 3))
        for kind, variant in ws:
            add(gold, styled(variant, rng.choice(["boxed", "answer-is"]), rng), f"math:wrong:{kind}")
        # the reference solution with its boxed answer swapped for a variant
        if eqs and "\\boxed{" + gold + "}" in r["solution"]:
            kind, variant = rng.choice(eqs)
            add(gold, r["solution"].replace("\\boxed{" + gold + "}", "\\boxed{" + variant + "}"), f"math:solution-equiv:{kind}")

    gsm_rows = gsm if scale != "test" else rng.sample(gsm, 700)
    golds = [gsm_gold(r["answer"]) for r in gsm]
    for r in gsm_rows:
        gold = gsm_gold(r["answer"])
        add(gold, r["answer"], "gsm:reference-solution")
        body = r["answer"].split("####")[0].rstrip()
        body = re.sub(r"<<[^>]*>>", "", body)
        for style in rng.sample(["boxed", "answer-is", "hash", "bold-answer", "last-number"], 3):
            add(gold, body + "\n" + styled(gold, style, rng), f"gsm:styled:{style}")
        eqs = [e for e in equivalents(gold, rng)
               if e[0] in ("dot-zero", "dollars", "units", "thousands", "x=", "percent-sign", "text-units")]
        for kind, variant in (eqs if scale != "test" else rng.sample(eqs, min(2, len(eqs)))):
            add(gold, body + "\n" + styled(variant, rng.choice(["boxed", "answer-is"]), rng), f"gsm:equiv:{kind}")
        ws = wrongs(gold, golds, rng)
        for kind, variant in (ws if scale != "test" else rng.sample(ws, min(2, len(ws)))):
            add(gold, body + "\n" + styled(variant, rng.choice(["boxed", "answer-is", "hash"]), rng), f"gsm:wrong:{kind}")
    return pairs


# ---- the surface forms of issue 19 ----------------------------------------------------------
def _ints(rows, key):
    out = []
    for r in rows:
        a = str(r[key]).strip()
        if key == "answer" and "####" in a:
            a = gsm_gold(a)
        if re.fullmatch(r"-?\d+", a):
            out.append(int(a))
    return out


def _frac(rng):
    a, b = rng.randint(1, 19), rng.randint(2, 23)
    while math.gcd(a, b) != 1 or b == 1:
        a, b = rng.randint(1, 19), rng.randint(2, 23)
    return a, b


def _wrap(ans, rng, math_mode=True):
    """A model-style sentence that ends in ans."""
    pre = rng.choice(PREAMBLES)
    if not math_mode:
        return pre + rng.choice(["The answer is {}.", "So the result is {}", "Therefore it comes to {}."]).format(ans)
    return pre + rng.choice(["The answer is ${}$.", "Thus $\\boxed{{{}}}$.", "Therefore\n\\[\n\\boxed{{{}}}\n\\]",
                             "**Answer:** ${}$", "Hence the result is \\({}\\)."]).format(ans)


UNITS = ["cm", "m", "km", "kg", "g", "hours", "minutes", "miles", "meters", "dollars", "cents", "pages", "apples"]


def edge_forms(n, rng):
    """(kind, gold, pred) for one integer n (right and wrong spellings)."""
    out = []
    w = n + rng.choice([1, 2, 10, -1]) if n > 2 else n + 3
    big = n * 1000 + rng.randint(1, 999) if abs(n) < 1000 else n
    cents = rng.choice([25, 5, 75, 50, 99])
    dec = f"{big}.{cents:02d}"
    # separators, currency, units after numbers
    out.append(("thousands+currency", dec, _wrap(f"{big:,}.{cents:02d} " + rng.choice(["USD", "dollars", "EUR"]), rng, False)))
    out.append(("thousands+currency:wrong", dec, _wrap(f"{big + 1000:,}.{cents:02d} USD", rng, False)))
    out.append(("currency-sign", str(n), _wrap(rng.choice([f"\\${n}", f"\\${n}.00", f"{n} \\text{{ dollars}}"]), rng)))
    out.append(("currency-sign:plain", str(n), _wrap(rng.choice([f"${n}", f"${n:,}.00", f"€{n}", f"{n} €", f"£{n}"]), rng, False)))
    out.append(("currency-sign:wrong", str(n), _wrap(f"\\${w}", rng)))
    small = f"{abs(n) % 100}.{cents:02d}"
    out.append(("decimal-comma", small, _wrap(small.replace(".", ",") + rng.choice([" €", " USD", " cm", ""]), rng, False)))
    out.append(("decimal-comma:math", small, _wrap(small.replace(".", "{,}"), rng)))
    out.append(("decimal-comma:wrong", small, _wrap(f"{abs(n) % 100 + 1},{cents:02d} €", rng, False)))
    out.append(("decimal-comma+units", dec, _wrap(f"${big},{cents:02d}$ cm²", rng, False)))
    u = rng.choice(UNITS)
    out.append(("units-text", str(n), _wrap(rng.choice([f"{n} \\text{{ {u}}}", f"{n}\\text{{{u}}}", f"{n} \\mbox{{ {u}}}",
                                                      f"{n}\\,\\mathrm{{{u}}}", f"{n} \\text{{ cm}}^2"]), rng)))
    out.append(("units-word", str(n), _wrap(rng.choice([f"{n} {u}", f"{n} cm²", f"{n} km/h", f"{n} square meters"]), rng, False)))
    out.append(("units:wrong", str(n), _wrap(f"{w} \\text{{ {u}}}", rng)))
    a, b = _frac(rng)
    out.append(("frac-units", f"\\frac{{{a}}}{{{b}}}", _wrap(f"\\frac{{{a}}}{{{b}}} \\text{{ {rng.choice(UNITS)}}}", rng)))
    out.append(("frac-units:wrong", f"\\frac{{{a}}}{{{b}}}", _wrap(f"\\frac{{{b}}}{{{a}}} \\text{{ cm}}", rng)))
    # percent
    p = abs(n) % 100 + 1
    out.append(("percent-word", rng.choice([f"{p}\\%", str(p)]), _wrap(f"{p} " + rng.choice(["percent", "per cent"]), rng, False)))
    out.append(("percent-sign", f"{p}\\%", _wrap(rng.choice([f"{p}\\%", f"{p}\\,\\%", f"{p}\\text{{ percent}}"]), rng)))
    out.append(("percent:wrong", f"{p}\\%", _wrap(f"{p + 1} percent", rng, False)))
    # relations
    v = rng.choice("xyakt")
    op_gold, spell, flips = rng.choice([
        ("\\ge", ["\\ge", "\\geq", "\\geqslant"], ["\\le", ">", "<"]),
        ("\\le", ["\\le", "\\leq", "\\leqslant"], ["\\ge", "<"]),
        ("<", ["<", "\\lt"], [">", "\\le"]),
        (">", [">", "\\gt"], ["<", "\\ge"]),
        ("\\ne", ["\\ne", "\\neq", "!="], ["="]),
    ])
    g = f"{v} {op_gold} {n}"
    out.append(("relation", g, _wrap(f"{v} {rng.choice(spell)} {n}", rng)))
    ascii_op = {"\\ge": ">=", "\\le": "<=", "<": "<", ">": ">", "\\ne": "!="}[op_gold]
    out.append(("relation-ascii", g, _wrap(f"{v} {ascii_op} {n}", rng)))
    out.append(("relation-ascii:plain", g, _wrap(f"{v} {ascii_op} {n}", rng, False)))
    rev = {"\\ge": "\\le", "\\le": "\\ge", "<": ">", ">": "<", "\\ne": "\\ne"}[op_gold]
    out.append(("relation-reversed", g, _wrap(f"{n} {rev} {v}", rng)))
    out.append(("relation:wrong-op", g, _wrap(f"{v} {rng.choice(flips)} {n}", rng)))
    out.append(("relation:wrong-bound", g, _wrap(f"{v} {op_gold} {w}", rng)))
    # chains
    approx = f"{a / b:.2f}"
    out.append(("chain-approx", f"\\frac{{{a}}}{{{b}}}", _wrap(rng.choice([f"{v} = {a}/{b} \\approx {approx}",
                                                                          f"{v} = \\frac{{{a}}}{{{b}}} \\approx {approx}"]), rng)))
    out.append(("chain-approx:wrong", f"\\frac{{{a}}}{{{b}}}", _wrap(f"{v} = {a + 1}/{b} \\approx {(a + 1) / b:.2f}", rng)))
    out.append(("chain-eq", str(n), _wrap(f"{v} = {n - 3} + 3 = {n}", rng)))
    # "Final Answer: The smallest $k$ is 12."
    what = rng.choice(["The smallest $k$ is", "The number of ways is", "The largest possible value of $n$ is", "She has"])
    out.append(("final-answer-prose", str(n), f"{rng.choice(PREAMBLES)}Final Answer: {what} {n}."))
    out.append(("final-answer-prose:math", str(n), f"{rng.choice(PREAMBLES)}Final Answer: {what} ${n}$."))
    out.append(("final-answer-prose:wrong", str(n), f"{rng.choice(PREAMBLES)}Final Answer: {what} {w}."))
    # long solution: the last answer is not the first number
    steps = [f"Step {i}: we have {rng.randint(2, 999)} items, and ${rng.randint(2, 99)} + {rng.randint(2, 99)} = {rng.randint(2, 200)}$."
             for i in range(1, rng.randint(4, 12))]
    tail = rng.choice([f"So the final answer is ${n}$.", f"Therefore, the answer is {n}.", f"Thus we get $\\boxed{{{n}}}$.",
                       f"Hence the total is {n}."])
    out.append(("long-solution", str(n), "\n\n".join(steps) + "\n\n" + tail))
    out.append(("long-solution:wrong", str(n), "\n\n".join(steps) + "\n\n" + tail.replace(str(n), str(w))))
    return out


def matrix_forms(rows, rng):
    """(kind, gold, pred) for one matrix given as rows of entries (LaTeX strings)."""
    body = " \\\\ ".join(" & ".join(r) for r in rows)
    gold = f"\\begin{{pmatrix}} {body} \\end{{pmatrix}}"
    cols = "c" * len(rows[0])
    out = []
    for kind, s in [("bmatrix", f"\\begin{{bmatrix}} {body} \\end{{bmatrix}}"),
                    ("pmatrix", f"\\begin{{pmatrix}}{body.replace(' ', '')}\\end{{pmatrix}}"),
                    ("left-array", f"\\left[\\begin{{array}}{{{cols}}} {body} \\end{{array}}\\right]"),
                    ("left-paren-array", f"\\left(\\begin{{array}}{{{cols}}} {body} \\end{{array}}\\right)")]:
        out.append(("matrix:" + kind, gold, _wrap(s, rng)))
    out.append(("matrix:vmatrix:wrong", gold, _wrap(f"\\begin{{vmatrix}} {body} \\end{{vmatrix}}", rng)))
    if all(re.fullmatch(r"-?\d+", x) for r in rows for x in r):
        # matrix expressions: a scalar multiple and a sum that come to the gold matrix
        half = " \\\\ ".join(" & ".join(str(int(x) // 2) if int(x) % 2 == 0 else f"\\frac{{{x}}}{{2}}" for x in r) for r in rows)
        out.append(("matrix:scalar-multiple", gold, _wrap(f"2\\begin{{pmatrix}} {half} \\end{{pmatrix}}", rng)))
        a = [[rng.randint(-5, 5) for _ in r] for r in rows]
        A = " \\\\ ".join(" & ".join(str(v) for v in r) for r in a)
        B = " \\\\ ".join(" & ".join(str(int(x) - v) for x, v in zip(r, ra)) for r, ra in zip(rows, a))
        Bw = " \\\\ ".join(" & ".join(str(int(x) - v + (i == 0 and j == 0)) for j, (x, v) in enumerate(zip(r, ra)))
                              for i, (r, ra) in enumerate(zip(rows, a)))
        out.append(("matrix:sum", gold, _wrap(f"\\begin{{pmatrix}} {A} \\end{{pmatrix}} + \\begin{{pmatrix}} {B} \\end{{pmatrix}}", rng)))
        out.append(("matrix:sum:wrong", gold, _wrap(f"\\begin{{pmatrix}} {A} \\end{{pmatrix}} + \\begin{{pmatrix}} {Bw} \\end{{pmatrix}}", rng)))
    flat = [x for r in rows for x in r]
    if len(set(flat)) > 1:
        sh = flat[:]
        while sh == flat:
            rng.shuffle(sh)
        it = iter(sh)
        bad = " \\\\ ".join(" & ".join(next(it) for _ in r) for r in rows)
        out.append(("matrix:wrong-entries", gold, _wrap(f"\\begin{{bmatrix}} {bad} \\end{{bmatrix}}", rng)))
    bad = " \\\\ ".join(" & ".join(r) for r in rows[:-1] + [[str(int(rows[-1][0]) + 1) if re.fullmatch(r"-?\d+", rows[-1][0]) else "0"] + rows[-1][1:]])
    if bad != body:
        out.append(("matrix:wrong-last", gold, _wrap(f"\\left[\\begin{{array}}{{{cols}}} {bad} \\end{{array}}\\right]", rng)))
    return out


def interval_forms(rng):
    """(kind, gold, pred): tuples, intervals and unions written with \\left( … \\right)."""
    out = []
    a, b, c, d = sorted(rng.sample(range(-20, 30), 4))
    lb, rb = rng.choice("[("), rng.choice("])")
    g = f"{lb}{a}, {b}{rb}"
    L, R = ("\\left" + lb if lb == "(" else "\\left["), ("\\right" + rb if rb == ")" else "\\right]")
    out.append(("interval:left-right", g, _wrap(f"{L} {a}, {b} {R}", rng)))
    out.append(("interval:in-boxed-prose", g, f"{rng.choice(PREAMBLES)}So $x \\in \\boxed{{{g}}}$."))
    out.append(("interval:wrong-open", g, _wrap(f"{'(' if lb == '[' else '['}{a}, {b}{rb}", rng)))
    out.append(("interval:wrong-end", g, _wrap(f"{L} {a}, {c} {R}", rng)))
    u = f"[{a},{b}) \\cup ({c},{d}]"
    out.append(("union", u, _wrap(rng.choice([f"\\left[{a}, {b}\\right) \\cup \\left({c}, {d}\\right]", f"[{a},{b})\\cup({c},{d}]"]), rng)))
    out.append(("union:in-boxed-prose", u, f"{rng.choice(PREAMBLES)}Therefore $y \\in \\boxed{{[{a},{b}) \\cup ({c},{d}]}}$."))
    out.append(("union:wrong", u, _wrap(f"[{a},{b}] \\cup ({c},{d}]", rng)))
    out.append(("union:inf", f"(-\\infty, {a}) \\cup ({b}, \\infty)", _wrap(f"\\left(-\\infty, {a}\\right) \\cup \\left({b}, \\infty\\right)", rng)))
    out.append(("union:inf-wrong", f"(-\\infty, {a}) \\cup ({b}, \\infty)", _wrap(f"(-\\infty, {a}] \\cup ({b}, \\infty)", rng)))
    p, q = _frac(rng)
    t = f"\\left( {a}, \\frac{{{p}}}{{{q}}} \\right)"
    out.append(("tuple:left-right", f"({a}, \\frac{{{p}}}{{{q}}})", _wrap(t, rng)))
    out.append(("tuple:point-prose", f"({a}, {b}, {c})", f"{rng.choice(PREAMBLES)}The point is $\\boxed{{\\left({a},{b},{c}\\right)}}$."))
    out.append(("tuple:wrong-order", f"({a}, {b}, {c})", _wrap(f"\\left({b}, {a}, {c}\\right)", rng)))
    return out


def build_edge_pairs(scale="test", seed=19):
    """Issue 19's surface forms on MATH-500, GSM8K and AIME answers (test: a sample of the
    numbers; full: all of them)."""
    rng = random.Random(seed)
    math500, gsm, aime = load("math500_test.jsonl"), load("gsm8k_test.jsonl"), load("aime24_test.jsonl")
    if math500 is None or gsm is None or aime is None:
        return None
    pairs = []
    nums = _ints(gsm, "answer") + _ints(aime, "answer") * 4 + _ints(math500, "answer")
    reps = 1 if scale == "test" else 3
    if scale == "test":
        nums = rng.sample(nums, 300)
    for _ in range(reps):
        for n in nums:
            for kind, g, p in edge_forms(n, rng):
                pairs.append({"gold": g, "pred": p, "kind": "edge:" + kind})
    # matrices: MATH-500's own, and random small integer ones
    mats = []
    for r in math500:
        m = re.fullmatch(r"\\begin\{pmatrix\}(.*)\\end\{pmatrix\}", r["answer"].strip())
        if m:
            mats.append([[x.strip() for x in row.split("&")] for row in m.group(1).split("\\\\")])
    for _ in range(200 * reps):
        h, w = rng.choice([(2, 1), (3, 1), (2, 2), (1, 3), (3, 3), (2, 3)])
        mats.append([[str(rng.randint(-9, 20)) for _ in range(w)] for _ in range(h)])
    for rows in mats:
        for kind, g, p in matrix_forms(rows, rng):
            pairs.append({"gold": g, "pred": p, "kind": "edge:" + kind})
    for _ in range(200 * reps):
        for kind, g, p in interval_forms(rng):
            pairs.append({"gold": g, "pred": p, "kind": "edge:" + kind})
    return pairs


# ---- math-verify ---------------------------------------------------------------------------------
def _judge(pair):
    import logging
    logging.disable(logging.CRITICAL)
    from math_verify import parse, verify
    try:
        g = parse("$" + pair["gold"] + "$")
        p = parse(pair["pred"])
        ok = bool(verify(g, p))
        shown = str(p[-1]) if p else ""
    except Exception as e:  # math-verify itself failing counts as "not verified"
        ok, shown = False, f"error: {type(e).__name__}"
    return ok, shown


def judge_all(pairs, procs=None):
    procs = procs or min(4, os.cpu_count() or 1)
    with mp.get_context("fork").Pool(procs) as pool:
        res = pool.map(_judge, pairs, chunksize=32)
    for p, (ok, shown) in zip(pairs, res):
        p["mv"] = ok
        p["mv_pred"] = shown
    return pairs


# (gold, pred): one or more per rule; math-verify decides each
CURATED = [
    ("\\frac{1}{2}", "\\dfrac{1}{2}"), ("\\frac{1}{2}", "\\tfrac12"), ("\\frac{1}{2}", "\\cfrac{1}{2}"),
    ("\\frac12", "0.5"), ("\\frac{3}{4}", "\\frac34"), ("\\frac{1}{3}", "0.333333"), ("\\frac{1}{3}", "0.33"),
    ("\\sqrt3", "\\sqrt{3}"), ("3\\sqrt{13}", "\\sqrt{117}"), ("2\\sqrt{2}", "\\sqrt{8}"), ("\\sqrt{2}", "2"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\pi/2)"), ("\\left( 3, \\frac{\\pi}{2} \\right)", "(\\pi/2, 3)"),
    ("\\text{Evelyn}", "Evelyn"), ("\\text{Evelyn}", "\\textbf{Evelyn}"), ("\\text{Evelyn}", "\\text{Devon}"),
    ("\\mathrm{(C)}", "C"), ("(C)", "C"), ("C", "D"),
    ("5 \\text{ cm}", "5"), ("10", "10 \\text{ dollars}"), ("\\$18", "18"), ("18", "\\$18.00"), ("18", "19"),
    ("90^\\circ", "90"), ("90", "90^{\\circ}"), ("45", "45^\\circ"),
    ("28\\%", "28"), ("28", "28\\%"), ("0.28", "28\\%"), ("10\\%", "0.1"), ("28\\%", "29"),
    ("1000", "1,000"), ("1000", "1{,}000"), ("1234567", "1,234,567"), ("1000", "1,001"),
    ("2\\frac{1}{2}", "5/2"), ("2\\frac{1}{2}", "2.5"), ("3\\frac{1}{4}", "3.25"), ("2\\frac{1}{2}", "3"),
    ("7", "7."), ("x=5", "5"), ("5", "x=5"), ("x=5", "y=5"), ("y=2x+3", "2x+3=y"), ("y=2x+3", "y=3x+2"),
    ("a<2", "2>a"), ("x \\ge 3", "3 \\le x"), ("x<2", "x>2"),
    ("1<x<2", "(1,2)"), ("x \\in [2,5)", "[2,5)"), ("[2,5)", "[2,5]"), ("(2,5]", "(2, 5]"),
    ("(-\\infty, 2) \\cup (3, \\infty)", "(-\\infty,2)\\cup(3,\\infty)"), ("(-\\infty, 2) \\cup (3, \\infty)", "(-\\infty,2)\\cup(4,\\infty)"),
    ("\\{1,2\\}", "\\{2,1\\}"), ("1,-2", "-2, 1"), ("3, 5, 7", "\\{3,5,7\\}"), ("3, 5, 7", "3, 5"), ("\\pm 2", "2,-2"),
    ("(3,5,7)", "3,5,7"), ("(1,2)", "(2,1)"),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}"),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\4&3\\end{pmatrix}"),
    ("\\begin{pmatrix} -1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}-1\\\\2\\end{pmatrix}"),
    ("6-5i", "6 - 5i"), ("6-5i", "6+5i"), ("p-q", "-q+p"), ("x^2+2x+1", "(x+1)^2"), ("x^2+2x+1", "(x-1)^2"),
    ("\\sin^2 x + \\cos^2 x", "1"), ("52_8", "52"), ("\\pi", "\\pi"), ("2\\pi", "6.283185"), ("\\frac{\\sqrt{3}}{2}", "0.866025"),
    ("-\\frac{1}{2}", "-0.5"), ("\\frac{-1}{2}", "-\\frac{1}{2}"), ("e^{2}", "e^2"), ("\\log_2 8", "3"), ("\\binom{5}{2}", "10"),
    ("5!", "120"), ("\\infty", "\\infty"), ("-\\infty", "\\infty"), ("\\emptyset", "\\emptyset"),
    # issue 19
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\left[\\begin{array}{cc}1&2\\\\3&4\\end{array}\\right]"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\left(\\begin{array}{c}1\\\\2\\end{array}\\right)"),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\left[\\begin{array}{cc}1&2\\\\4&3\\end{array}\\right]"),
    ("\\frac{2}{7}", "y = 2/7 \\approx 0.29"), ("0.29", "y = 2/7 \\approx 0.29"), ("\\frac{2}{7}", "y = 3/7 \\approx 0.43"),
    ("x \\ge 3", "x \\geq 3"), ("x \\ge 3", "x >= 3"), ("x < 3", "x \\lt 3"), ("x \\ne 3", "x != 3"), ("x \\ne 3", "x \\neq 3"),
    ("x \\ne 3", "3 \\ne x"), ("k \\ge 114200", "k \\ge 114202"), ("x \\ge 3", "x > 3"),
    ("3.5", "3{,}5"), ("25750", "25{,}750"), ("(1,2)", "\\left(1, 2\\right)"),
    ("[1,3) \\cup (5,7]", "\\left[1,3\\right) \\cup \\left(5,7\\right]"), ("[1,3) \\cup (5,7]", "[1,3] \\cup (5,7]"),
    ("\\frac{2}{5}", "\\frac{2}{5} \\text{ cm}"), ("45\\%", "45 \\text{ percent}"),
    ("\\begin{pmatrix}2\\\\4\\end{pmatrix}", "2\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("\\begin{pmatrix}2\\\\4\\end{pmatrix}", "\\begin{pmatrix}1\\\\1\\end{pmatrix} + \\begin{pmatrix}1\\\\3\\end{pmatrix}"),
    ("\\begin{pmatrix}2\\\\4\\end{pmatrix}", "\\begin{pmatrix}1\\\\1\\end{pmatrix} + \\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("\\begin{pmatrix}6&10\\\\2&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\0&1\\end{pmatrix}\\begin{pmatrix}2&2\\\\2&4\\end{pmatrix}"),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{vmatrix}1&2\\\\3&4\\end{vmatrix}"),
]


def curated_cases():
    import logging
    logging.disable(logging.CRITICAL)
    from math_verify import parse, verify
    out = []
    for g, p in CURATED:
        out.append({"gold": g, "pred": p, "mv": bool(verify(parse("$" + g + "$"), parse("$" + p + "$")))})
    return out


def main():
    out_dir = sys.argv[1]
    scale = "full" if "--scale" in sys.argv and sys.argv[sys.argv.index("--scale") + 1] == "full" else "test"
    pairs, edge = build_pairs(scale), build_edge_pairs(scale)
    if pairs is None or edge is None:
        print("gen_verify: skipped: benchmarks missing under", BENCH)
        return 0
    with open(os.path.join(out_dir, "verify_cases.jsonl"), "w", encoding="utf-8") as f:
        for c in curated_cases():
            f.write(json.dumps(c) + "\n")
    pairs += edge
    judge_all(pairs)
    with open(os.path.join(out_dir, "verify_pairs.jsonl"), "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(p) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
