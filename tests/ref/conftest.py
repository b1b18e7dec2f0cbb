"""Shared fixtures for the pytest suites: the retort binary, the C test tools, assets."""
import json
import os
import subprocess
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _binary():
    return os.environ.get("RETORT", os.path.join(ROOT, "retort"))


@pytest.fixture(scope="session")
def retort_bin():
    b = _binary()
    if not os.access(b, os.X_OK):
        pytest.fail(f"retort binary {b} not built (run `make`)")
    return b


@pytest.fixture(scope="session")
def tools_dir():
    return os.environ.get("TOOLS_DIR", os.path.join(ROOT, "build", "cpu", "tools"))


@pytest.fixture(scope="session")
def assets():
    d = os.environ.get("RETORT_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
    if not os.path.isdir(d):
        pytest.skip(f"skipped: assets directory {d} absent (set RETORT_ASSETS)")
    return d


def run(args, input=None, timeout=300):
    """Runs a command; returns CompletedProcess with text stdout/stderr."""
    return subprocess.run(args, input=input, capture_output=True, text=True, timeout=timeout)


def jsonl_lines(text):
    """Parses JSONL output. Splits on "\n" only: str.splitlines() also splits inside JSON
    strings that hold U+2028, U+0085 and other line separators, which JSON leaves unescaped."""
    return [json.loads(l) for l in text.split("\n") if l.strip()]


def assert_one_error_line(p, *needles):
    """Exit status 1 and exactly one 'retort: …' line on stderr mentioning every needle."""
    assert p.returncode == 1, f"exit {p.returncode}, stderr: {p.stderr}"
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one error line, got: {p.stderr!r}"
    assert lines[0].startswith("retort: "), lines[0]
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    assert p.stdout == "", f"no partial output expected, got {p.stdout[:200]!r}"
