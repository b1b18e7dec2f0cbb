"""HF tokenizers' side of bench/tokenize.sh.

usage: tokenize.py TOKENIZER.json TEXTS.jsonl REPS
Prints "load_ms MB_per_s" (medians): Tokenizer.from_file, then encode_batch over all texts
(add_special_tokens=False) — one thread when run with RAYON_NUM_THREADS=1, else all."""
import json
import statistics
import sys
import time

from tokenizers import Tokenizer

path, corpus, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
texts = [json.loads(l)["text"] for l in open(corpus, encoding="utf-8")]
nbytes = sum(len(t.encode("utf-8")) for t in texts)
loads, speeds = [], []
for _ in range(reps):
    t0 = time.perf_counter()
    tk = Tokenizer.from_file(path)
    loads.append((time.perf_counter() - t0) * 1e3)
for _ in range(reps):
    t0 = time.perf_counter()
    tk.encode_batch(texts, add_special_tokens=False)
    speeds.append(nbytes / 1e6 / (time.perf_counter() - t0))
print(f"{statistics.median(loads):.1f} {statistics.median(speeds):.2f}")
