"""The peer of bench/import.sh: a plain Python json + sqlite3 loader doing the same job as
`retort import --format gsm8k --as-samples` — parse each line, take the gold after "####",
store the prompt (messages JSON, metadata JSON, a content hash, INSERT OR IGNORE on it) and
the reference answer as a sample, in transactions of 5000 rows, WAL mode. It does not
compress the sample text (the standard library has no zstd), so it does less work than
retort.

usage: import.py DB FILE                 the Python loader
       import.py DB FILE RETORT ARGS...   the same file through a retort command
prints "wall_seconds cpu_seconds rows bytes" (cpu: user + system of the loader, or of the
retort process and its threads; on a busy machine it is steadier than wall time).
"""
import os
import sys

# bench/ holds scripts named like standard modules (tokenize.py): keep it off the import path
sys.path = [p for p in sys.path if p not in ("", os.path.dirname(os.path.abspath(__file__)))]

import hashlib
import json
import os
import sqlite3
import sys
import time

import resource
import subprocess

db, path = sys.argv[1], sys.argv[2]
if len(sys.argv) > 3:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(sys.argv[3:], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    rows = sum(1 for l in open(path, encoding="utf-8") if l.strip())
    print(f"{wall:.4f} {cpu:.4f} {rows} {os.path.getsize(path)}")
    sys.exit(0)
t0 = time.perf_counter()
con = sqlite3.connect(db)
con.execute("PRAGMA journal_mode = WAL")
con.execute("PRAGMA synchronous = NORMAL")
con.executescript("""
CREATE TABLE IF NOT EXISTS prompts (id INTEGER PRIMARY KEY, source TEXT NOT NULL, content_hash BLOB NOT NULL UNIQUE,
  messages TEXT NOT NULL, gold TEXT, metadata TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (id INTEGER PRIMARY KEY, prompt_id INTEGER NOT NULL REFERENCES prompts(id),
  teacher TEXT NOT NULL, text TEXT NOT NULL, text_hash BLOB NOT NULL, UNIQUE (prompt_id, teacher, text_hash));
""")
source = os.path.splitext(os.path.basename(path))[0]
rows = 0
batch = []


def flush():
    with con:
        for messages, h, gold, meta, text in batch:
            con.execute("INSERT OR IGNORE INTO prompts (source, content_hash, messages, gold, metadata) "
                        "VALUES (?, ?, ?, ?, ?)", (source, h, messages, gold, meta))
            pid = con.execute("SELECT id FROM prompts WHERE content_hash = ?", (h,)).fetchone()[0]
            con.execute("INSERT OR IGNORE INTO samples (prompt_id, teacher, text, text_hash) VALUES (?, 'reference', ?, ?)",
                        (pid, text, hashlib.blake2b(text.encode(), digest_size=16).digest()))
    batch.clear()


with open(path, encoding="utf-8") as f:
    for line in f:
        if not line.strip():
            continue
        r = json.loads(line)
        messages = json.dumps([{"role": "user", "content": r["question"]}], ensure_ascii=False, separators=(",", ":"))
        gold = r["answer"].split("####")[-1].strip()
        meta = json.dumps({k: v for k, v in r.items() if k != "question"}, ensure_ascii=False, separators=(",", ":"))
        batch.append((messages, hashlib.blake2b(messages.encode(), digest_size=16).digest(), gold, meta, r["answer"]))
        rows += 1
        if len(batch) == 5000:
            flush()
flush()
con.close()
ru = resource.getrusage(resource.RUSAGE_SELF)
print(f"{time.perf_counter() - t0:.4f} {ru.ru_utime + ru.ru_stime:.4f} {rows} {os.path.getsize(path)}")
