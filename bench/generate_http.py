"""bench/generate_http: `retort generate --db` against the fake OpenAI-compatible server
(tests/ref/fake_openai.py, fixed latency per response, SSE), at concurrency 1, 8 and 64,
against a Python peer doing the same job with stdlib threads (one keep-alive http.client
connection per worker, SSE parsed line by line, each sample inserted into SQLite in its own
transaction), and against the ideal (concurrency / latency). Prints samples/s and ratios, and each client's
CPU time per sample (the fake server, in Python on the same cores, bounds the throughput at
high concurrency; the CPU time is what the client itself costs).

Threads: retort's client is one thread (libcurl's multi interface, one event loop); the Python
peer runs one stdlib thread per connection under the GIL. Where the machine has two CPUs or
more, both clients are pinned to the first and the fake server to the second (so the rows are
"1 core" for the client, whichever threads it starts). --rows FILE appends the summary rows
(tab-separated: name, unit, retort, peer, peer label, threads, load before, load after) for
bench/generate_http.sh to print through bench/common.sh's bench_row.

    python bench/generate_http.py RETORT [--latency S] [--levels 1,8,64] [--reps N] [--rows FILE]
"""
import argparse
import http.client
import json
import os
import queue
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(HERE, "..", "tests", "ref", "fake_openai.py")


def cores():
    """(client core, server core), or (None, None) where pinning is not possible."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)


CLIENT, SERVER = cores()


def pinned(core):
    """A preexec_fn putting the child on one core (None: no pinning)."""
    return None if core is None else (lambda: os.sched_setaffinity(0, {core}))


def start_server(latency):
    p = subprocess.Popen([sys.executable, FAKE, "--latency", str(latency)], stdout=subprocess.PIPE, text=True,
                         preexec_fn=pinned(SERVER))
    port = int(p.stdout.readline().split()[1])
    return p, port


def make_db(retort, path, n):
    src = path + ".jsonl"
    with open(src, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"Bench prompt number {i}: say something."}) + "\n")
    subprocess.run([retort, "import", "--db", path, "--format", "jsonl", "--prompt-field", "prompt", src],
                   check=True, capture_output=True)


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_retort(retort, db, port, c):
    """(wall s, CPU s of the retort process)."""
    t, c0 = time.perf_counter(), child_cpu()
    subprocess.run([retort, "generate", "--db", db, "--teacher", f"http://127.0.0.1:{port}/v1", "--model", "fake-r1",
                    "--concurrency", str(c), "--quiet"], check=True, preexec_fn=pinned(CLIENT))
    return time.perf_counter() - t, child_cpu() - c0


def run_python(db, port, c):
    con = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = NORMAL")
    con.execute("CREATE TABLE py_samples (prompt_id INTEGER, sample_index INTEGER, text TEXT, finish TEXT, "
                "prompt_tokens INTEGER, completion_tokens INTEGER, UNIQUE (prompt_id, sample_index))")
    todo = queue.Queue()
    for pid, msgs in con.execute("SELECT id, messages FROM prompts ORDER BY id"):
        todo.put((pid, json.loads(msgs)))
    lock = threading.Lock()

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port)
        while True:
            try:
                pid, msgs = todo.get_nowait()
            except queue.Empty:
                break
            body = json.dumps({"model": "fake-r1", "messages": msgs, "max_tokens": 32768, "temperature": 0.6,
                               "top_p": 0.95, "seed": pid, "stream": True,
                               "stream_options": {"include_usage": True}})
            for attempt in range(5):   # a reset connection is retried, as retort does
                try:
                    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
                    r = conn.getresponse()
                    break
                except (ConnectionError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port)
                    time.sleep(0.05 * 2 ** attempt)
            content, reasoning, finish, usage = [], [], None, {}
            for line in r:
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                d = line[5:].strip()
                if d == b"[DONE]":
                    break
                ev = json.loads(d)
                for ch in ev.get("choices", []):
                    delta = ch.get("delta", {})
                    content.append(delta.get("content") or "")
                    reasoning.append(delta.get("reasoning_content") or "")
                    finish = ch.get("finish_reason") or finish
                usage = ev.get("usage") or usage
            r.read()
            text = f"<think>\n{''.join(reasoning).strip()}\n</think>\n\n{''.join(content).strip()}"
            with lock:
                con.execute("BEGIN IMMEDIATE")
                con.execute("INSERT OR IGNORE INTO py_samples VALUES (?, 0, ?, ?, ?, ?)",
                            (pid, text, finish, usage.get("prompt_tokens"), usage.get("completion_tokens")))
                con.execute("COMMIT")
        conn.close()

    if CLIENT is not None:   # this thread's affinity, inherited by the workers it starts
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {CLIENT})
    t, c0 = time.perf_counter(), time.process_time()
    ts = [threading.Thread(target=worker) for _ in range(c)]
    for x in ts:
        x.start()
    for x in ts:
        x.join()
    el, cpu = time.perf_counter() - t, time.process_time() - c0
    if CLIENT is not None:
        os.sched_setaffinity(0, saved)
    n = con.execute("SELECT count(*) FROM py_samples").fetchone()[0]
    con.close()
    return el, cpu, n


def count(db):
    con = sqlite3.connect(db)
    n = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    con.close()
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("retort")
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--levels", default="1,8,64")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rows", help="append the summary rows to this file")
    a = ap.parse_args()
    rows = []
    srv, port = start_server(a.latency)
    try:
        print(f"bench/generate_http   fake OpenAI server on 127.0.0.1, {a.latency * 1000:.0f} ms per response, "
              f"SSE (~20 tokens), 1 sample per prompt, median of {a.reps}, {os.cpu_count()} CPUs, "
              + (f"clients pinned to CPU {CLIENT}, server to CPU {SERVER}" if CLIENT is not None else "not pinned"))
        with tempfile.TemporaryDirectory(prefix="retort-bench-gen.") as d:
            for c in [int(x) for x in a.levels.split(",")]:
                n = max(40, 12 * c)
                trs, tps, crs, cps = [], [], [], []
                lb = os.getloadavg()[0]
                for rep in range(a.reps):   # alternate, fresh databases each time
                    r_db, p_db = os.path.join(d, f"r{c}-{rep}.db"), os.path.join(d, f"p{c}-{rep}.db")
                    make_db(a.retort, r_db, n)
                    make_db(a.retort, p_db, n)
                    t, cpu = run_retort(a.retort, r_db, port, c)
                    trs.append(t)
                    crs.append(cpu)
                    assert count(r_db) == n, (count(r_db), n)
                    t, cpu, np_ = run_python(p_db, port, c)
                    assert np_ == n
                    tps.append(t)
                    cps.append(cpu)
                med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
                tr, tp, cr, cp = med(trs), med(tps), med(crs), med(cps)
                la = os.getloadavg()[0]
                ideal = c / a.latency
                print(f"  concurrency {c:3d}  {n:5d} samples  retort {n / tr:8.1f} samples/s   python threads "
                      f"{n / tp:8.1f} samples/s   retort/python {tp / tr:5.2f}x   ideal {ideal:7.1f} samples/s "
                      f"(retort at {100 * n / tr / ideal:3.0f}%)")
                print(f"  {'':17s}client CPU per sample: retort {1e3 * cr / n:6.2f} ms   python {1e3 * cp / n:6.2f} ms"
                      f"   python/retort {cp / cr if cr > 0 else float('inf'):5.1f}x   load {lb:.2f} -> {la:.2f}")
                core = "1 core" if CLIENT is not None else "unpinned"
                rows.append((f"generate http c={c} ({core})", "samples/s", f"{n / tr:.4g}", f"{n / tp:.4g}",
                             "python stdlib threads client", "1", f"{lb:.2f}", f"{la:.2f}"))
                rows.append((f"generate http c={c} client cpu", "ms/sample", f"{1e3 * cr / n:.4g}", f"{1e3 * cp / n:.4g}",
                             "python stdlib threads client", "1", f"{lb:.2f}", f"{la:.2f}"))
    finally:
        srv.kill()
        srv.wait()
    if a.rows:
        with open(a.rows, "a") as f:
            for r in rows:
                f.write("\t".join(r) + "\n")


if __name__ == "__main__":
    main()
