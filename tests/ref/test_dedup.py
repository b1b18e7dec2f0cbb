"""`retort dedup` against exact Jaccard similarity on a planted set.

The planted set: families of near-duplicates (a base text and variants with random word
substitutions, insertions and deletions at rates that spread their Jaccard similarity to
the base from about 0.3 to 1, plus case/punctuation-only copies) and unrelated texts.
Exact Jaccard of word 5-gram sets is computed here, in Python, with its own normalization
(lowercase, digit runs → 0, punctuation → space). Targets (issue 5):
  recall       ≥ 0.95  pairs with Jaccard ≥ 0.8 end up in one cluster
  false merges ≤ 0.01  pairs put in one cluster that the exact-Jaccard graph (edges at
                       Jaccard ≥ 0.8, connected components) keeps apart
"""
import json
import os
import random
import re
import subprocess
import unicodedata

import pytest
from conftest import jsonl_lines

RETORT = os.environ.get("RETORT", os.path.join(os.path.dirname(__file__), "..", "..", "retort"))
ASSETS = os.environ.get("RETORT_ASSETS", "")


def norm_words(text):
    t = unicodedata.normalize("NFD", text.lower())
    t = "".join(c for c in t if unicodedata.category(c) != "Mn")
    t = re.sub(r"\d+([.,]\d+)?", "0", t)
    t = "".join(" " if unicodedata.category(c)[0] in "PSZC" else c for c in t)
    return t.split()


def shingles(text, n=5):
    w = norm_words(text)
    if not w:
        return frozenset()
    if len(w) < n:
        return frozenset([" ".join(w)])
    return frozenset(" ".join(w[i:i + n]) for i in range(len(w) - n + 1))


def jaccard(a, b):
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def base_texts(rng, count):
    path = os.path.join(ASSETS, "benchmarks", "gsm8k_train.jsonl")
    if os.path.exists(path):
        rows = [json.loads(l) for l in open(path, encoding="utf-8")]
        rng.shuffle(rows)
        return [r["question"] + "\n" + r["answer"] for r in rows[:count]]
    vocab = ["w%d" % i for i in range(5000)]  # no assets: synthetic prose
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(60, 250))) for _ in range(count)]


def mutate(text, rate, rng, vocab):
    out = []
    for w in text.split(" "):
        r = rng.random()
        if r < rate / 3:
            continue                                   # delete
        if r < 2 * rate / 3:
            out.append(rng.choice(vocab))              # substitute
            continue
        out.append(w)
        if r < rate:
            out.append(rng.choice(vocab))              # insert
    return " ".join(out)


def planted(seed=7, families=300, unrelated=500):
    rng = random.Random(seed)
    texts = base_texts(rng, families + unrelated)
    vocab = sorted({w for t in texts for w in t.split()})
    docs, family = [], []
    for f in range(families):
        base = texts[f]
        members = [base]
        for _ in range(rng.randint(1, 5)):
            kind = rng.random()
            if kind < 0.15:
                members.append(base.upper().replace(".", " .").replace(",", ""))  # same after normalization
            else:
                members.append(mutate(base, rng.uniform(0.0, 0.12), rng, vocab))
        for m in members:
            docs.append(m)
            family.append(f)
    for u in range(unrelated):
        docs.append(texts[families + u])
        family.append(-1 - u)
    order = list(range(len(docs)))
    rng.shuffle(order)
    return [docs[i] for i in order], [family[i] for i in order]


def find(p, x):
    while p[x] != x:
        p[x] = p[p[x]]
        x = p[x]
    return x


def test_dedup_recall_and_false_merges_against_exact_jaccard(capsys):
    if not os.path.exists(RETORT):
        pytest.skip("skipped: retort binary not built")
    docs, family = planted()
    sh = [shingles(d) for d in docs]
    inp = "".join(json.dumps({"id": "d%d" % i, "text": d}) + "\n" for i, d in enumerate(docs))
    out = subprocess.run([RETORT, "dedup", "--threads", "2"], input=inp, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = jsonl_lines(out.stdout)
    assert [r["id"] for r in res] == ["d%d" % i for i in range(len(docs))], "ids out of order"
    cluster = [int(r["cluster"][1:]) for r in res]
    # the cluster id is the first (kept) member
    for i, c in enumerate(cluster):
        assert c <= i and cluster[c] == c

    # ground truth: exact Jaccard within families (others share no text), components at ≥ 0.8
    n = len(docs)
    by_family = {}
    for i, f in enumerate(family):
        by_family.setdefault(f, []).append(i)
    parent = list(range(n))
    high = []
    for members in by_family.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                i, j = members[a], members[b]
                if jaccard(sh[i], sh[j]) >= 0.8:
                    high.append((i, j))
                    parent[find(parent, i)] = find(parent, j)
    merged = {}
    for i, c in enumerate(cluster):
        merged.setdefault(c, []).append(i)
    merged_pairs = false_pairs = below = 0
    for members in merged.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                i, j = members[a], members[b]
                merged_pairs += 1
                if family[i] != family[j] and jaccard(sh[i], sh[j]) >= 0.8:
                    parent[find(parent, i)] = find(parent, j)  # a real cross-family duplicate
                if find(parent, i) != find(parent, j):
                    false_pairs += 1
                if jaccard(sh[i], sh[j]) < 0.8:
                    below += 1
    found = sum(cluster[i] == cluster[j] for i, j in high)
    recall = found / len(high)
    false_rate = false_pairs / max(merged_pairs, 1)
    with capsys.disabled():
        print(f"\n   dedup planted set: {n} docs, {len(high)} pairs with Jaccard >= 0.8: recall {recall:.4f}; "
              f"{merged_pairs} merged pairs: false merges {false_rate:.4f} "
              f"(merged pairs below 0.8 Jaccard: {below / max(merged_pairs, 1):.4f})")
    assert len(high) > 300
    assert recall >= 0.95
    assert false_rate <= 0.01


def test_dedup_exact_copies_share_the_first_id():
    if not os.path.exists(RETORT):
        pytest.skip("skipped: retort binary not built")
    docs = ["Hello, World!  This is one text.", "hello world this is one text", "Another one entirely.",
            "HELLO WORLD. THIS IS ONE TEXT!!!", ""]
    inp = "".join(json.dumps({"id": i * 10, "text": d}) + "\n" for i, d in enumerate(docs))
    out = subprocess.run([RETORT, "dedup", "--exact-only"], input=inp, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = jsonl_lines(out.stdout)
    assert got == [{"id": 0, "cluster": 0}, {"id": 10, "cluster": 0}, {"id": 20, "cluster": 20},
                   {"id": 30, "cluster": 0}, {"id": 40, "cluster": 40}]


@pytest.mark.parametrize("line,needle", [
    ('{"id": 1, "text": "a"}\nnot json\n', "line 2"),
    ('{"id": 1}\n', "line 1"),
    ('{"id": [1], "text": "x"}\n', "line 1"),
    ('[1, 2]\n', "line 1"),
])
def test_dedup_bad_input_is_one_clear_error(line, needle):
    if not os.path.exists(RETORT):
        pytest.skip("skipped: retort binary not built")
    out = subprocess.run([RETORT, "dedup"], input=line, capture_output=True, text=True)
    assert out.returncode == 1
    assert needle in out.stderr and out.stderr.count("\n") == 1


@pytest.mark.parametrize("args", [["--threshold", "1.5"], ["--threshold", "x"], ["--bogus"], ["extra"]])
def test_dedup_usage_errors_exit_2(args):
    if not os.path.exists(RETORT):
        pytest.skip("skipped: retort binary not built")
    out = subprocess.run([RETORT, "dedup"] + args, input="", capture_output=True, text=True)
    assert out.returncode == 2


def test_dedup_output_is_identical_at_1_2_3_threads():
    """The planted set plus a family of 60 one-word variants of one text (more than the 32
    earlier bucket members a document is checked against): byte-identical output whatever
    the thread count."""
    if not os.path.exists(RETORT):
        pytest.skip("skipped: retort binary not built")
    docs, _ = planted(seed=11)
    rng = random.Random(5)
    base = docs[0].split(" ")
    for k in range(60):
        w = list(base)
        w[rng.randrange(len(w))] = "variant" + "".join(rng.choice("xyz") for _ in range(6))
        docs.insert(rng.randrange(len(docs) + 1), " ".join(w))
    inp = "".join(json.dumps({"id": "d%d" % i, "text": d}) + "\n" for i, d in enumerate(docs))
    outs = []
    for threads in (1, 2, 3):
        out = subprocess.run([RETORT, "dedup", "--threads", str(threads)], input=inp, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        outs.append(out.stdout)
    assert outs[0] == outs[1] == outs[2]
    assert len(jsonl_lines(outs[0])) == len(docs)


def test_dedup_reads_lines_across_chunks_and_names_the_first_bad_line():
    """stdin is parsed in 16 MiB chunks by the threads: a line longer than a chunk, ids in
    order across chunk boundaries, and of two bad lines the first is the one reported, with
    its line number counted over all chunks."""
    if not os.path.exists(RETORT):
        pytest.skip("skipped: retort binary not built")
    # punctuation normalizes to nothing, so this costs little beyond reading the JSON
    big = "." * (17 << 20)                                            # one line > 16 MiB
    lines = [json.dumps({"id": 0, "text": big}), ""] + \
            [json.dumps({"id": i, "text": "doc %s " % chr(97 + i % 26) + "," * 8000}) for i in range(2, 3001)]
    inp = "\n".join(lines) + "\n"  # about 41 MB: the chunk after the long line starts near line 1900
    out = subprocess.run([RETORT, "dedup", "--threads", "3"], input=inp, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert [r["id"] for r in jsonl_lines(out.stdout)] == [0] + list(range(2, 3001))
    bad = list(lines)
    bad[2599] = "not json"          # both in the second chunk, on different threads
    bad[2199] = '{"id": 2200}'
    out = subprocess.run([RETORT, "dedup", "--threads", "3"], input="\n".join(bad) + "\n", capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 1
    assert "stdin line 2200:" in out.stderr and out.stderr.count("\n") == 1, out.stderr
