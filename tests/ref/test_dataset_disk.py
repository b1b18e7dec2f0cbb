"""A read-only location or a full disk gives one clear error line and corrupts nothing:
the database keeps what it had (integrity_check ok, whole batches only) and a rerun
completes the work; shard directories never hold partial files. A full disk is simulated
with RLIMIT_FSIZE (writes past the limit fail with EFBIG), and /dev/full for stdout; a
read-only location by running retort as an unprivileged user when the tests run as root."""
import json
import os
import resource
import signal
import sqlite3
import stat
import subprocess
import tempfile

import pytest

from conftest import assert_one_error_line


def run_as(args, preexec=None, stdout=subprocess.PIPE):
    return subprocess.run(args, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=300, preexec_fn=preexec)


def q(db, sql):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def bench(assets, name):
    p = os.path.join(assets, "benchmarks", name + ".jsonl")
    if not os.path.exists(p):
        pytest.skip(f"skipped: {p} absent")
    return p


@pytest.fixture
def readonly():
    """(directory, preexec): a world-readable directory the retort child cannot write to."""
    d = tempfile.mkdtemp(prefix="retort-ro.")
    os.chmod(d, 0o755)
    if os.getuid() == 0:
        def drop():
            os.setgid(65534)
            os.setuid(65534)
        probe = subprocess.run(["true"], preexec_fn=drop)
        if probe.returncode != 0:
            pytest.skip("skipped: cannot drop root privileges to test a read-only location")
        yield d, drop, lambda: None
    else:
        yield d, None, lambda: os.chmod(d, 0o555)
    os.chmod(d, 0o755)
    subprocess.run(["rm", "-rf", d])


def fsize_limit(nbytes):
    def f():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return f


def test_readonly_database_is_refused_and_unchanged(retort_bin, assets, readonly):
    d, preexec, lock = readonly
    db = os.path.join(d, "run.db")
    assert run_as([retort_bin, "import", "--db", db, "--format", "aime", bench(assets, "aime24_test")]).returncode == 0
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o644 if os.getuid() == 0 else 0o444)
    lock()
    before = q(db, "SELECT id, content_hash FROM prompts ORDER BY id")
    p = run_as([retort_bin, "import", "--db", db, "--format", "gsm8k", bench(assets, "gsm8k_test")], preexec)
    assert_one_error_line(p, "run.db", "read-only")
    p = run_as([retort_bin, "db", "init", db], preexec)
    assert_one_error_line(p, "read-only")
    # reading still works where nothing can be written
    p = run_as([retort_bin, "db", "stats", db, "--json"], preexec)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["prompts"] == 30
    assert run_as([retort_bin, "db", "check", db], preexec).returncode == 0
    assert q(db, "SELECT id, content_hash FROM prompts ORDER BY id") == before
    p = run_as([retort_bin, "db", "init", os.path.join(d, "new.db")], preexec)
    assert_one_error_line(p, "new.db")
    assert not os.path.exists(os.path.join(d, "new.db"))


def test_readonly_shard_directory(retort_bin, assets, readonly, tmp_path):
    d, preexec, lock = readonly
    tok = os.path.join(assets, "tokenizers", "qwen3", "tokenizer.json")
    if not os.path.exists(tok):
        pytest.skip(f"skipped: {tok} absent")
    src = os.path.join(d, "c.jsonl")
    with open(src, "w") as f:
        f.write(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}) + "\n")
    os.chmod(src, 0o644)
    lock()
    out = os.path.join(d, "shards")
    p = run_as([retort_bin, "pack", "--tokenizer", tok, "--template", "qwen", "--jsonl", src, "--seq", "64",
                "--out", out], preexec)
    assert_one_error_line(p, out, "Permission denied")
    assert not os.path.exists(out)


def test_full_disk_during_import_keeps_whole_batches(retort_bin, assets, tmp_path):
    src = bench(assets, "gsm8k_train")
    db = str(tmp_path / "run.db")
    assert run_as([retort_bin, "import", "--db", db, "--format", "aime", bench(assets, "aime24_test")]).returncode == 0
    p = run_as([retort_bin, "import", "--db", db, "--format", "gsm8k", "--as-samples", "--batch", "500", src],
               fsize_limit(1_500_000))
    assert_one_error_line(p, "gsm8k_train.jsonl", "writing lines")
    assert any(w in p.stderr for w in ("full", "too large", "disk I/O error")), p.stderr
    assert q(db, "PRAGMA integrity_check") == [("ok",)]
    n_gsm = q(db, "SELECT COUNT(*) FROM prompts WHERE source = 'gsm8k_train'")[0][0]
    assert n_gsm % 500 == 0 and n_gsm < 7473
    assert q(db, "SELECT COUNT(*) FROM prompts WHERE source = 'aime24_test'")[0][0] == 30
    assert q(db, "SELECT COUNT(*) FROM samples")[0][0] == n_gsm
    p = run_as([retort_bin, "import", "--db", db, "--format", "gsm8k", "--as-samples", src])
    assert p.returncode == 0, p.stderr
    assert q(db, "SELECT COUNT(*), COUNT(DISTINCT content_hash) FROM prompts") == [(7473 + 30, 7473 + 30)]
    assert q(db, "PRAGMA integrity_check") == [("ok",)]


def test_full_disk_during_pack_leaves_the_old_shards(retort_bin, assets, tmp_path):
    tok = os.path.join(assets, "tokenizers", "llama3_1", "tokenizer.json")
    if not os.path.exists(tok):
        pytest.skip(f"skipped: {tok} absent")
    rows = [json.loads(l) for l in open(bench(assets, "gsm8k_test"))]
    src = tmp_path / "c.jsonl"
    with open(src, "w") as f:
        for r in rows:
            f.write(json.dumps({"messages": [{"role": "user", "content": r["question"]},
                                             {"role": "assistant", "content": r["answer"]}]}) + "\n")
    out = tmp_path / "shards"
    args = [retort_bin, "pack", "--tokenizer", tok, "--template", "llama3", "--jsonl", str(src), "--seq", "4096",
            "--out", str(out)]
    small = [str(a) if a != str(src) else str(tmp_path / "small.jsonl") for a in args]
    with open(tmp_path / "small.jsonl", "w") as f:
        f.writelines(open(src).readlines()[:20])
    assert run_as(small).returncode == 0
    before = {f: open(out / f, "rb").read() for f in os.listdir(out)}
    p = run_as(args, fsize_limit(400_000))
    assert_one_error_line(p, str(out))
    assert {f: open(out / f, "rb").read() for f in os.listdir(out)} == before, "partial or temporary files left"


def test_stdout_on_a_full_device(retort_bin, assets, tmp_path):
    db = str(tmp_path / "run.db")
    assert run_as([retort_bin, "import", "--db", db, "--format", "math", bench(assets, "math500_test")]).returncode == 0
    with open("/dev/full", "w") as full:
        p = run_as([retort_bin, "export", "--db", db, "--format", "jsonl", "--out", "-"], stdout=full)
    assert p.returncode == 1 and "retort: " in p.stderr and "stdout" in p.stderr


def test_failed_dict_recompress_leaves_no_unused_dictionary(retort_bin, assets, tmp_path):
    """The disk fills while `db dict --recompress` rewrites its first batch: no dictionary row
    is left behind (it is written with that batch). A rerun completes; training again leaves
    one dictionary, the superseded one deleted."""
    db = str(tmp_path / "run.db")
    assert run_as([retort_bin, "import", "--db", db, "--format", "gsm8k", "--as-samples",
                   bench(assets, "gsm8k_test")]).returncode == 0
    samples = q(db, "SELECT id, text_hash FROM samples ORDER BY id")
    p = run_as([retort_bin, "db", "dict", db, "--recompress"], fsize_limit(300_000))
    assert_one_error_line(p, "run.db")
    assert q(db, "SELECT COUNT(*) FROM zstd_dicts") == [(0,)]
    assert q(db, "SELECT COUNT(*) FROM samples WHERE dict_id IS NOT NULL") == [(0,)]
    assert q(db, "PRAGMA integrity_check") == [("ok",)]
    for _ in range(2):
        p = run_as([retort_bin, "db", "dict", db, "--recompress"])
        assert p.returncode == 0, p.stderr
        (d,), = q(db, "SELECT id FROM zstd_dicts")
        assert q(db, "SELECT COUNT(*) FROM samples WHERE dict_id = ?".replace("?", str(d))) == [(len(samples),)]
    assert q(db, "SELECT id, text_hash FROM samples ORDER BY id") == samples
    assert run_as([retort_bin, "db", "check", db]).returncode == 0
