"""Deduplicating one million samples: memory and time (bench/dedup_1m.sh runs this).

usage: dedup_1m.py RETORT WORKDIR [N] [--no-db]

Generates N (default 1,000,000) synthetic samples of 60-120 words drawn from a 20,000-word
vocabulary, where one in ten is a near-duplicate (one word replaced) of an earlier one and
one in fifty an exact copy; then
  1. `retort dedup` (stdin JSONL → clusters, the library's mh_dedup_run on all cores), and
  2. unless --no-db: `retort import` into a run database and `retort filter` with only the
     dedup filter (reads and decompresses every sample, clusters, writes 1M clusters rows
     and verdicts),
and reports wall time and peak RSS of each (getrusage of the children), plus how many
duplicates were found against how many were planted."""
import json
import os
import random
import resource
import subprocess
import sys
import time

retort, work = sys.argv[1], sys.argv[2]
args = [a for a in sys.argv[3:] if not a.startswith("--")]
n = int(args[0]) if args else 1_000_000
use_db = "--no-db" not in sys.argv
os.makedirs(work, exist_ok=True)
rng = random.Random(1234)
letters = "abcdefghijklmnopqrstuvwxyz"
vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(20000)]

docs_path = os.path.join(work, "docs.jsonl")
chat_path = os.path.join(work, "chat.jsonl")
t0 = time.time()
texts = []
planted_exact = planted_near = 0
with open(docs_path, "w") as f, open(chat_path, "w") as g:
    for i in range(n):
        r = rng.random()
        if i > 100 and r < 0.02:
            t = texts[rng.randrange(len(texts))]
            planted_exact += 1
        elif i > 100 and r < 0.12:
            w = texts[rng.randrange(len(texts))].split()
            w[rng.randrange(len(w))] = rng.choice(vocab)  # one word: Jaccard of 5-grams ~0.9
            t = " ".join(w)
            planted_near += 1
        else:
            t = " ".join(rng.choice(vocab) for _ in range(rng.randint(60, 120)))
        if len(texts) < 200000:
            texts.append(t)
        else:
            texts[rng.randrange(len(texts))] = t
        f.write('{"id":%d,"text":"%s"}\n' % (i, t))
        if use_db:
            g.write(json.dumps({"messages": [{"role": "user", "content": f"prompt {i}"},
                                             {"role": "assistant", "content": t}]}) + "\n")
gen_s = time.time() - t0
mb = os.path.getsize(docs_path) / 1e6
print(f"bench/dedup_1m   {n:,} synthetic samples, {mb:.0f} MB of text "
      f"({planted_exact:,} exact and {planted_near:,} near copies planted; generated in {gen_s:.0f} s)")


def measure(cmd, stdin=None, stdout=subprocess.DEVNULL):
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.time()
    p = subprocess.run(cmd, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
    dt = time.time() - t
    if p.returncode:
        sys.exit(f"{' '.join(cmd)} failed: {p.stderr.decode()[-2000:]}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the maximum over all children so far: report it only when it grew
    return dt, max(rss, before) / 1024 / 1024, p


out_path = os.path.join(work, "clusters.jsonl")
with open(docs_path) as fi, open(out_path, "w") as fo:
    dt, rss, _ = measure([retort, "dedup"], stdin=fi, stdout=fo)
removed = 0
with open(out_path) as f:
    for l in f:
        r = json.loads(l)
        removed += r["id"] != r["cluster"]
print(f"  retort dedup (stdin)          {dt:7.1f} s   peak RSS {rss:5.2f} GiB   {removed:,} duplicates "
      f"({removed / n:.1%}; planted {planted_exact + planted_near:,})")
if use_db:
    db = os.path.join(work, "run.db")
    dt_i, rss_i, _ = measure([retort, "import", "--db", db, "--format", "chat", "--as-samples", chat_path])
    cfg = os.path.join(work, "dedup.yaml")
    open(cfg, "w").write("filters: [dedup]\nbatch: 4096\n")
    dt_f, rss_f, p = measure([retort, "filter", "--db", db, "--config", cfg, "--quiet"], stdout=subprocess.PIPE)
    line = [l for l in p.stdout.decode().splitlines() if l.startswith("dedup:")]
    print(f"  retort import ({n:,} samples) {dt_i:7.1f} s")
    print(f"  retort filter --db, dedup     {dt_f:7.1f} s   peak RSS {rss_f:5.2f} GiB   {line[0] if line else ''}")
    print(f"  (peak RSS is the largest of any child so far; the machine has "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB)")
