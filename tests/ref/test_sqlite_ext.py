"""The loadable SQLite extension (build/*/retort_sqlite.so): retort_text() decompresses the
store's zstd text from outside retort, through Python's sqlite3. Expected texts come from
the source files, read with Python's json."""
import glob
import json
import os
import sqlite3

import shutil
import subprocess

import pytest

from conftest import run, ROOT


def ext_path(tools_dir):
    cands = [os.environ.get("RETORT_SQLITE_EXT", ""), os.path.join(os.path.dirname(tools_dir), "retort_sqlite.so")]
    cands += sorted(glob.glob(os.path.join(ROOT, "build", "*", "retort_sqlite.so")))
    for c in cands:
        if c and os.path.exists(c):
            return c
    pytest.skip("skipped: retort_sqlite.so not built (make)")


class SqlError(Exception):
    pass


def query(db, ext, sql, *params):
    """Rows of sql with the extension loaded: through Python's sqlite3 when it can load
    extensions (many builds cannot), else through the sqlite3 shell (-json)."""
    con = sqlite3.connect(db)
    try:
        if hasattr(con, "enable_load_extension"):
            con.enable_load_extension(True)
            con.load_extension(os.path.splitext(ext)[0])  # SQLite adds the suffix itself
            try:
                return [tuple(r) for r in con.execute(sql, params)]
            except sqlite3.OperationalError as e:
                raise SqlError(str(e))
    finally:
        con.close()
    shell = shutil.which("sqlite3")
    if not shell:
        pytest.skip("skipped: neither Python's sqlite3 nor a sqlite3 shell can load extensions here")
    for v in params:  # the shell takes no parameters: inline blobs as x'..'
        sql = sql.replace("?", "x'" + v.hex() + "'", 1)
    p = subprocess.run([shell, "-json", db, ".load " + os.path.splitext(ext)[0], sql], capture_output=True, text=True)
    if p.returncode:
        raise SqlError(p.stderr.strip())
    return [tuple(r.values()) for r in json.loads(p.stdout or "[]")]


def gsm_rows(assets, name, n=None):
    p = os.path.join(assets, "benchmarks", name + ".jsonl")
    if not os.path.exists(p):
        pytest.skip(f"skipped: {p} absent")
    with open(p, encoding="utf-8") as f:
        rows = [json.loads(l) for l in f if l.strip()]
    return rows[:n] if n else rows


def test_retort_text_reads_plain_and_dictionary_frames(retort_bin, tools_dir, assets, tmp_path):
    ext = ext_path(tools_dir)
    rows = gsm_rows(assets, "gsm8k_train", 3000)
    src = tmp_path / "gsm.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    db = str(tmp_path / "run.db")
    p = run([retort_bin, "import", "--db", db, "--format", "gsm8k", "--as-samples", str(src)])
    assert p.returncode == 0, p.stderr
    want = [r["answer"] for r in rows]
    assert [t for (t,) in query(db, ext, "SELECT retort_text(text) FROM samples ORDER BY id")] == want
    assert query(db, ext, "SELECT COUNT(dict_id) FROM samples") == [(0,)]
    # recompressed with a trained dictionary: one argument still works, and so does naming it
    p = run([retort_bin, "db", "dict", db, "--recompress"])
    assert p.returncode == 0, p.stderr
    assert query(db, ext, "SELECT COUNT(dict_id) FROM samples") == [(len(rows),)]
    assert [t for (t,) in query(db, ext, "SELECT retort_text(text) FROM samples ORDER BY id")] == want
    assert [t for (t,) in query(db, ext, "SELECT retort_text(text, dict_id) FROM samples ORDER BY id")] == want
    # lengths agree with what the store recorded
    assert query(db, ext, "SELECT COUNT(*) FROM samples WHERE length(CAST(retort_text(text) AS BLOB)) != text_bytes") \
        == [(0,)]


def test_retort_text_null_and_bad_input(tools_dir, tmp_path):
    ext = ext_path(tools_dir)
    db = str(tmp_path / "x.db")
    assert query(db, ext, "SELECT retort_text(NULL)") == [(None,)]
    import zlib
    with pytest.raises(SqlError, match="retort_text: not a zstd frame"):
        query(db, ext, "SELECT retort_text(?)", zlib.compress(b"hello"))
    with pytest.raises(SqlError, match="retort_text: not a zstd frame"):
        query(db, ext, "SELECT retort_text(x'28b52ffd', 7)")
