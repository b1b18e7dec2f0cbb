"""The command-line contract of the option tables (eval/cmdopts.c), checked from outside.

- --seed, wherever it is taken, is an unsigned 64-bit integer: 1.5, -1 and 2^64 are one usage
  error line naming the flag (exit 2), 2^64 - 1 is accepted; a recipe's seed likewise.
- Every key docs/recipes.md lists for a stage is a flag of `retort help STAGE`, and a recipe
  stage that sets it renders that flag (retort run --dry-run).
The expected bounds are written out by hand; the key lists come from the documentation, not
from the tables under test."""
import os
import re

import pytest

from conftest import ROOT, assert_one_error_line, run

U64_MAX = str(2**64 - 1)
BAD_SEEDS = ["1.5", "-1", str(2**64), "1e3", "", "0x10"]

# every command that takes --seed, with the words that select its parser
SEED_COMMANDS = [["select"], ["export"], ["pack"], ["train"], ["generate"], ["generate", "--db", "x.db"],
                 ["eval"], ["demo"]]


@pytest.mark.parametrize("cmd", SEED_COMMANDS, ids=lambda c: "-".join(w.strip("-") for w in c))
@pytest.mark.parametrize("bad", BAD_SEEDS, ids=lambda b: b or "empty")
def test_seed_rejects_what_is_not_an_unsigned_64_bit_integer(retort_bin, tmp_path, cmd, bad):
    r = run([retort_bin, *cmd, "--seed", bad], timeout=60)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines[0] == f"retort {cmd[0]}: --seed must be an integer from 0 to {U64_MAX}, got '{bad}'", lines
    assert lines[1:] == [f"(see 'retort help {cmd[0]}')"], lines
    assert r.stdout == ""


@pytest.mark.parametrize("cmd", SEED_COMMANDS, ids=lambda c: "-".join(w.strip("-") for w in c))
def test_seed_takes_the_largest_unsigned_64_bit_integer(retort_bin, tmp_path, cmd):
    # the seed parses; the command then stops at something else (a missing option or file)
    r = run([retort_bin, *cmd, "--seed", U64_MAX, "--no-such-flag"], timeout=60)
    assert "--seed" not in r.stderr, r.stderr
    assert r.returncode == 2 and "--no-such-flag" in r.stderr, (r.returncode, r.stderr)


def documented_stage_keys():
    """{stage: [(key, type letter)]} from the stage table of docs/recipes.md."""
    text = open(os.path.join(ROOT, "docs", "recipes.md")).read()
    out = {}
    for line in text.splitlines():
        m = re.match(r"\| ([a-z-]+) \| (.*) \|$", line)
        if not m or m.group(1) in ("stage", "key"):
            continue
        keys = []
        for item in m.group(2).split(", "):
            km = re.match(r"\**([a-z0-9-]+)\** ([sinblu])\b", item.strip())
            if km:
                keys.append((km.group(1), km.group(2)))
        if keys:
            out[m.group(1)] = keys
    return out


STAGE_KEYS = documented_stage_keys()
POSITIONAL = {("import", "files"), ("compare", "runs")}
FLAG_OF = {("eval", "run"): "name"}   # docs/recipes.md: run is --name (name: is the stage's)


def test_the_documentation_lists_the_stages():
    assert {"import", "generate", "filter", "select", "export", "pack", "train", "eval", "compare",
            "report"} <= set(STAGE_KEYS), sorted(STAGE_KEYS)


@pytest.mark.parametrize("stage", sorted(STAGE_KEYS))
def test_documented_recipe_keys_are_flags_of_the_help(retort_bin, stage):
    r = run([retort_bin, "help", stage])
    assert r.returncode == 0
    for key, _ in STAGE_KEYS[stage]:
        if (stage, key) in POSITIONAL:
            continue
        flag = "--" + FLAG_OF.get((stage, key), key)
        assert re.search(r"(^|\s)" + re.escape(flag) + r"([\s,=]|$)", r.stdout, re.M), f"{flag} not in retort help {stage}"
    r2 = run([retort_bin, stage, "--help"])
    assert r2.returncode == 0 and r2.stdout == r.stdout


VALUE = {"s": '"x"', "i": "3", "u": "3", "n": "0.5", "b": "true", "l": "[a, b]"}


@pytest.mark.parametrize("stage", sorted(STAGE_KEYS))
def test_documented_recipe_keys_render_their_flags(retort_bin, tmp_path, stage):
    keys = STAGE_KEYS[stage]
    body = "".join(f"    {k}: {VALUE[t]}\n" for k, t in keys)
    (tmp_path / "r.yaml").write_text(f"work_dir: ./w\nstages:\n  - stage: {stage}\n{body}")
    r = run([retort_bin, "run", str(tmp_path / "r.yaml"), "--dry-run"], timeout=60)
    assert r.returncode == 0, r.stderr
    words = r.stdout.split()
    for key, t in keys:
        if (stage, key) in POSITIONAL:
            assert "a" in words and "b" in words
            continue
        assert "--" + FLAG_OF.get((stage, key), key) in words, (key, r.stdout)


@pytest.mark.parametrize("seed, shown", [("-1", "-1"), ("1.5", "1.5"), ('"18446744073709551616"', "18446744073709551616"),
                                         ("true", None)])
def test_recipe_seed_is_an_unsigned_64_bit_integer(retort_bin, tmp_path, seed, shown):
    (tmp_path / "r.yaml").write_text(
        f"work_dir: ./w\nstages:\n  - stage: select\n    db: x.db\n    snapshot: s\n    seed: {seed}\n")
    r = run([retort_bin, "run", str(tmp_path / "r.yaml"), "--dry-run"], timeout=60)
    if shown is None:
        assert_one_error_line(r, "r.yaml:6", "seed: expected an integer, got a boolean")
    else:
        assert_one_error_line(r, "r.yaml:6", f"seed: expected an integer from 0 to {U64_MAX}, got '{shown}'")


def test_recipe_seed_takes_the_largest_unsigned_64_bit_integer(retort_bin, tmp_path):
    # quoted: the recipe reader keeps YAML integers as signed 64-bit
    (tmp_path / "r.yaml").write_text(
        f'work_dir: ./w\nstages:\n  - stage: select\n    db: x.db\n    snapshot: s\n    seed: "{U64_MAX}"\n')
    r = run([retort_bin, "run", str(tmp_path / "r.yaml"), "--dry-run"], timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"--seed {U64_MAX}" in r.stdout
