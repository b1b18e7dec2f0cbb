"""What the run database says when it cannot be used: one line naming the file and the
reason in words, no C expressions or source locations (those are for --verbose), and nothing
changed in a file that is not a retort database. Expected values are the files' own bytes
and Python's sqlite3 on them, never retort's output."""
import os
import re
import sqlite3
import subprocess

import pytest

from conftest import run, assert_one_error_line

LEAK = re.compile(r"\.c:\d+|sqlite3_\w+\(|db->h|\bs failed\b|failed at ")


def no_leak(p):
    assert not LEAK.search(p.stderr), p.stderr


def files(d):
    return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))}


def test_foreign_sqlite_file_is_refused_unchanged(retort_bin, tmp_path):
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    con.execute("INSERT INTO notes (body) VALUES ('keep me')")
    con.commit()
    con.close()
    before = files(tmp_path)
    src = tmp_path / "p.jsonl"
    src.write_text('{"prompt": "hi"}\n')
    for args in (["import", "--db", str(other), "--format", "jsonl", "--prompt-field", "prompt", str(src)],
                 ["db", "init", str(other)], ["db", "dict", str(other)], ["db", "snapshot", str(other), "s"]):
        p = run([retort_bin, *args])
        assert_one_error_line(p, str(other), "not a retort")
        no_leak(p)
    after = files(tmp_path)
    del after["p.jsonl"]
    # no -wal or -shm beside it, and not a byte changed (the journal mode is in the header)
    assert after == before


def test_a_file_that_is_not_sqlite(retort_bin, tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"plain text, not a database\n" * 200)
    for args in (["db", "stats", str(junk)], ["db", "init", str(junk)], ["export", "--db", str(junk), "--format", "jsonl",
                                                                          "--out", str(tmp_path / "o.jsonl")]):
        p = run([retort_bin, *args])
        assert_one_error_line(p, f"{junk} is not a SQLite database")
        no_leak(p)
    assert sorted(os.listdir(tmp_path)) == ["junk.db"]


def test_verbose_shows_the_failing_call(retort_bin, tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"plain text, not a database\n" * 200)
    p = run([retort_bin, "--verbose", "db", "stats", str(junk)])
    assert p.returncode == 1
    assert re.search(r"failed at dataset/db\.c:\d+", p.stderr), p.stderr
    assert p.stderr.strip().splitlines()[-1] == f"retort: db stats: {junk} is not a SQLite database"


@pytest.mark.parametrize("table", ["prompts", "samples"])
def test_corrupt_page_gives_an_integrity_report(retort_bin, assets, tmp_path, table):
    """prompts' root page: SQLite's integrity_check reports it; samples' root page: the
    whole-file check stops at it, and the report goes table by table."""
    bench = os.path.join(assets, "benchmarks", "gsm8k_test.jsonl")
    if not os.path.exists(bench):
        pytest.skip(f"skipped: {bench} absent")
    db = str(tmp_path / "run.db")
    assert run([retort_bin, "import", "--db", db, "--format", "gsm8k", "--as-samples", bench]).returncode == 0
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # the table's root page, as SQLite itself names it
    root = con.execute("SELECT rootpage FROM sqlite_schema WHERE name = ?", (table,)).fetchone()[0]
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)
    p = run([retort_bin, "db", "check", db])
    assert p.returncode == 1, p.stderr
    no_leak(p)
    report = p.stdout.split("integrity ", 1)[1]
    assert report.strip() and not report.startswith("ok"), p.stdout
    assert "\n\n" not in report.strip(), p.stdout
    if table == "samples":
        assert "table samples: cannot be read" in report, p.stdout
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"retort: db check {db}: integrity check failed"), p.stderr
    # other commands name the file, say it is corrupt and point at db check
    p = run([retort_bin, "export", "--db", db, "--format", "chat-jsonl", "--out", str(tmp_path / "o.jsonl")])
    assert_one_error_line(p, db, "corrupt", "db check")
    no_leak(p)
    assert not [f for f in os.listdir(tmp_path) if f.startswith("o.jsonl")]


@pytest.fixture
def unwritable_dir(tmp_path):
    """(directory, preexec) that the retort child cannot create files in."""
    d = tmp_path / "ro"
    d.mkdir()
    os.chmod(tmp_path, 0o755)
    if os.getuid() == 0:
        def drop():
            os.setgid(65534)
            os.setuid(65534)
        if subprocess.run(["true"], preexec_fn=drop).returncode != 0:
            pytest.skip("skipped: cannot drop root privileges to test an unwritable directory")
        os.chmod(d, 0o755)
        yield str(d), drop
    else:
        os.chmod(d, 0o555)
        yield str(d), None
    os.chmod(d, 0o755)


def test_new_database_where_nothing_can_be_created(retort_bin, unwritable_dir):
    d, preexec = unwritable_dir
    db = os.path.join(d, "new.db")
    p = subprocess.run([retort_bin, "db", "init", db], capture_output=True, text=True, preexec_fn=preexec)
    assert_one_error_line(p, db, "Permission denied")
    assert "No such file" not in p.stderr
    no_leak(p)
    assert os.listdir(d) == []
    # a directory that does not exist is named as such
    p = run([retort_bin, "db", "init", os.path.join(d, "missing", "x.db")])
    assert_one_error_line(p, "missing/x.db", "No such file or directory")


def test_database_path_is_a_directory(retort_bin, tmp_path):
    p = run([retort_bin, "db", "init", str(tmp_path)])
    assert_one_error_line(p, f"{tmp_path} is a directory")
