"""The peer of bench/filter.sh: the same per-sample checks in Python on one core.

usage: filter.py SAMPLES.jsonl BENCH_DIR REPS
Prints "label MB_per_s samples_per_s" (medians).

What it runs per sample, mirroring retort's verify + format + language + readability +
repetition + length + 10-gram decontamination:
  - answer: the last \\boxed{...} after </think> compared as a normalized string with the gold
    (far less than retort's verifier does: an optimistic peer);
  - format: one <think>…</think> block, non-empty answer, a final answer present (regex);
  - language: letters per script (unicodedata names) in thinking and answer;
  - readability: longest blank-line paragraph, ``` fences;
  - repetition: datatrove's GopherRepetitionFilter measures (duplicate lines and their
    characters, top 2/3/4-gram character fractions, duplicated 5..10-gram fractions) and a
    zlib compression ratio (Python has no zstd in the standard library);
  - length: whitespace words of thinking and answer;
  - decontam: words = re.findall(r"[^\\W_]+", text.lower()), 10-gram tuples in a set built
    from the same benchmark files.
"""
import json
import os
import re
import statistics
import sys
import time
import unicodedata
import zlib
from collections import Counter

path, bdir, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
samples = [json.loads(l) for l in open(path, encoding="utf-8")]
nbytes = sum(len(s["text"].encode("utf-8")) for s in samples)

N = 10
grams = set()
for b in ("gsm8k_test", "math500_test", "aime24_test"):
    for l in open(os.path.join(bdir, b + ".jsonl"), encoding="utf-8"):
        r = json.loads(l)
        t = "\n".join(str(r[k]) for k in ("question", "problem", "prompt", "answer", "solution") if k in r)
        w = re.findall(r"[^\W_]+", t.lower())
        grams.update(tuple(w[i:i + N]) for i in range(len(w) - N + 1))

THINK = re.compile(r"^\s*<think>(.*?)</think>(.*)$", re.S)
BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")


def script_share(text):
    counts = Counter()
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            counts[name.split(" ")[0]] += 1
    total = sum(counts.values())
    return counts.most_common(1)[0][1] / total if total else 1.0


def find_dup(words, n):
    seen, dup_chars, i = set(), 0, 0
    while i + n <= len(words):
        g = tuple(words[i:i + n])
        if g in seen:
            dup_chars += sum(len(w) for w in g)
            i += n
        else:
            seen.add(g)
            i += 1
    return dup_chars


def gopher(text):
    lines = [l for l in text.split("\n") if l.strip()]
    c = Counter(lines)
    dup_lines = sum(v for v in c.values() if v > 1)
    dup_line_chars = sum(len(k) * v for k, v in c.items() if v > 1)
    words = text.split()
    total = sum(len(w) for w in words) or 1
    out = [dup_lines / max(len(lines), 1), dup_line_chars / max(len(text), 1)]
    for n in (2, 3, 4):
        ng = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        if ng:
            g, k = ng.most_common(1)[0]
            out.append(sum(len(w) for w in g) * k / total)
    for n in range(5, 11):
        out.append(find_dup(words, n) / total)
    return out


def check(s):
    text = s["text"]
    m = THINK.match(text)
    think, ans = (m.group(1), m.group(2)) if m else ("", text)
    boxes = BOXED.findall(ans)
    correct = bool(boxes) and boxes[-1].replace(" ", "") == s["gold"].replace(" ", "")
    fmt = bool(m) and bool(ans.strip()) and bool(boxes)
    lang = min(script_share(think), script_share(ans))
    para = max((len(p) for p in re.split(r"\n\s*\n", text)), default=0)
    code = "```" in text
    rep = gopher(text)
    ratio = len(zlib.compress(text.encode("utf-8"), 3)) / max(len(text), 1)
    length = (len(think.split()), len(ans.split()))
    contaminated = False
    for t in (s["prompt"], text):
        w = re.findall(r"[^\W_]+", t.lower())
        if any(tuple(w[i:i + N]) in grams for i in range(len(w) - N + 1)):
            contaminated = True
            break
    return correct, fmt, lang, para, code, rep, ratio, length, contaminated


times = []
for _ in range(reps):
    t0 = time.perf_counter()
    for s in samples:
        check(s)
    times.append(time.perf_counter() - t0)
med = statistics.median(times)
print("own-python-rewrite", nbytes / 1e6 / med, len(samples) / med)
