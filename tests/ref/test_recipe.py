"""`retort run RECIPE.yaml`: the shipped recipes, validation, and a real run of tiny-cpu.yaml.

Expected values for the R1-distill recipes are the DeepSeek-R1 paper's settings as issue #9
lists them (the table below, written here from the issue, not from the recipes): sampling at
temperature 0.6, top-p 0.95, up to 32,768 tokens; SFT with sequences of 32,768 tokens, 64
sequences per optimizer step, cosine to 0.1x the initial LR, and the per-model LR and base
model. They are checked in the commands `--dry-run` resolves, parsed here with shlex.

tiny-cpu.yaml runs for real (about a minute on 2 cores): end to end, then killed with SIGKILL
in the middle of its teacher's training and rerun, which must skip the finished stages, resume
the training from its last checkpoint and end with the same teacher weights as the
uninterrupted run (retort train's resume is bit-exact at the same thread count)."""
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import ROOT, assert_one_error_line, run

RECIPES = os.path.join(ROOT, "configs", "recipes")
TINY = os.path.join(RECIPES, "tiny-cpu.yaml")

# issue #22: model -> the GPU student's layout `retort train --plan` says fits 80 GB GPUs at
# 32k tokens (docs/student.md): ranks, ZeRO level, layer inputs in host memory
GPU_LAYOUT = {
    "qwen-1.5b": (1, 0, False),
    "qwen-7b": (8, 2, False),
    "qwen-14b": (16, 2, False),
    "qwen-32b": (16, 3, True),
    "llama-8b": (8, 2, False),
    "llama-70b": (32, 3, True),
}

# issue #9: model -> (initial LR, base model directory)
PAPER = {
    "qwen-1.5b": (1e-4, "Qwen2.5-Math-1.5B"),
    "qwen-7b": (8e-5, "Qwen2.5-Math-7B"),
    "qwen-14b": (7e-5, "Qwen2.5-14B"),
    "qwen-32b": (6e-5, "Qwen2.5-32B"),
    "llama-8b": (5e-5, "Llama-3.1-8B"),
    "llama-70b": (2e-5, "Llama-3.3-70B-Instruct"),
}


def opts(words):
    """--key value / --flag pairs of one command (repeated keys collect into lists)."""
    out, i = {}, 0
    while i < len(words):
        w = words[i]
        if w.startswith("--"):
            if i + 1 < len(words) and not words[i + 1].startswith("--"):
                out.setdefault(w[2:], []).append(words[i + 1])
                i += 2
                continue
            out.setdefault(w[2:], []).append(True)
        i += 1
    return {k: v[0] if len(v) == 1 else v for k, v in out.items()}


def ranks_of(launcher):
    """Processes a launcher starts: mpirun -np N, srun --nodes=A --ntasks-per-node=B or -n N."""
    if not launcher:
        return 1
    kv = {}
    for i, w in enumerate(launcher):
        if "=" in w:
            k, v = w.split("=", 1)
            kv[k] = v
        elif w in ("-np", "-n", "--ntasks", "--nodes", "-N", "--ntasks-per-node") and i + 1 < len(launcher):
            kv[w] = launcher[i + 1]
    if launcher[0] == "mpirun":
        return int(kv["-np"])
    assert launcher[0] == "srun", launcher
    if "--ntasks" in kv or "-n" in kv:
        return int(kv.get("--ntasks", kv.get("-n")))
    return int(kv.get("--nodes", kv.get("-N", 1))) * int(kv["--ntasks-per-node"])


def commands(out, retort_bin):
    """The dry run's commands: [(launcher words, subcommand, options, positionals)]."""
    exe = os.path.realpath(retort_bin)
    cmds = []
    for line in out.split("\n"):
        if not line or line.startswith("#"):
            continue
        w = shlex.split(line)
        k = w.index(exe)
        sub, rest = w[k + 1], w[k + 2:]
        pos = [x for j, x in enumerate(rest) if not x.startswith("--") and (j == 0 or not rest[j - 1].startswith("--"))]
        cmds.append((w[:k], sub, opts(rest), pos))
    return cmds


def dry(retort_bin, recipe, *extra, cwd=None):
    p = subprocess.run([retort_bin, "run", recipe, "--dry-run", *extra], capture_output=True, text=True, cwd=cwd, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    return p.stdout


@pytest.mark.parametrize("model", sorted(PAPER))
def test_r1_recipe_resolves_to_the_paper_settings(retort_bin, model, tmp_path):
    lr, base = PAPER[model]
    path = os.path.join(RECIPES, f"r1-distill-{model}.yaml")
    out = dry(retort_bin, path, "--set", f"work_dir={tmp_path}/w")
    cmds = commands(out, retort_bin)
    subs = [c[1] for c in cmds]
    assert subs[:2] == ["import", "import"] and "generate" in subs and subs[-2:] == ["compare", "report"], subs
    for s in ("filter", "select", "export", "train"):
        assert subs.count(s) == 1, (s, subs)
    assert subs.index("generate") < subs.index("filter") < subs.index("select") < subs.index("export") < subs.index("train")
    assert not os.path.exists(tmp_path / "w"), "--dry-run must write nothing"

    (gl, _, g, _), = [c for c in cmds if c[1] == "generate"]
    assert float(g["temperature"]) == 0.6 and float(g["top-p"]) == 0.95 and int(g["max-tokens"]) == 32768
    assert g["teacher"].startswith("local:") and g["teacher"].endswith("DeepSeek-R1")
    assert ranks_of(gl) == 8, gl  # the teacher's node: one rank per GPU of 8 x H200
    assert g["device"] == "cuda"  # the in-process teacher runs on the GPUs (issue #15)

    (_, _, x, _), = [c for c in cmds if c[1] == "export"]
    assert x["format"] == "shards" and int(x["seq"]) == 32768

    (tl, _, t, _), = [c for c in cmds if c[1] == "train"]
    assert float(t["lr"]) == lr
    assert t["schedule"] == "cosine" and float(t["min-lr-ratio"]) == 0.1
    assert int(t["seq"]) == 32768
    assert float(t["epochs"]) in (2.0, 3.0)
    assert int(t["batch"]) * int(t.get("grad-accum", 1)) * ranks_of(tl) == 64, (t, tl)
    rz = [c[2] for c in cmds if c[1] == "resize-vocab"]
    if rz:  # R1's markers added to the base model's tokenizer first; export and train use that copy
        assert os.path.basename(rz[0]["model"]) == base and rz[0]["add-tokens-from"] == "deepseek-r1"
        assert t["model"] == rz[0]["out"] and x["tokenizer"] == os.path.join(rz[0]["out"], "tokenizer.json")
        assert subs.index("resize-vocab") < subs.index("export")
    else:
        assert os.path.basename(t["model"]) == base
    assert t["data"] == x["out"]
    ranks, zero, host_inputs = GPU_LAYOUT[model]
    assert t["device"] == "cuda" and ranks_of(tl) == ranks and int(t["zero"]) == zero, (t, tl)
    assert t.get("offload-activations", False) is host_inputs and t["checkpoint-layers"] is True
    assert "offload-optimizer" not in t

    evals = [c[2] for c in cmds if c[1] == "eval"]
    assert {(e["bench"], e["name"].split("-")[0]) for e in evals} == {
        (b, who) for b in ("gsm8k", "math500", "aime24") for who in ("teacher", "student")}
    for e in evals:
        assert float(e["temperature"]) == 0.6 and float(e["top-p"]) == 0.95 and int(e["max-tokens"]) == 32768
        if e["bench"] == "aime24":
            assert int(e["k"]) == 64
        assert e["device"] == "cuda", e  # teacher and student evals on the GPU
    student = [e for e in evals if e["name"].startswith("student")]
    # the student is the train stage's newest checkpoint, bound when its eval starts
    assert all(e["model"] == "local:${checkpoint:train}" for e in student)
    (_, _, _, runs), = [c for c in cmds if c[1] == "compare"]
    assert sorted(runs) == sorted({"teacher", student[0]["name"]})


def test_set_overrides_variables_and_stage_options(retort_bin, tmp_path):
    path = os.path.join(RECIPES, "r1-distill-qwen-7b.yaml")
    out = dry(retort_bin, path, "--set", f"work_dir={tmp_path}", "--set", "epochs=3", "--set", "train.lr=3e-5",
              "--set", "train.launcher=srun --nodes=2 --ntasks-per-node=4", "--set", "teacher=http://127.0.0.1:9/v1",
              "--set", "teacher_launcher=", "--set", "eval_teacher=false")
    cmds = commands(out, retort_bin)
    (tl, _, t, _), = [c for c in cmds if c[1] == "train"]
    assert float(t["lr"]) == 3e-5 and t["epochs"] == "3"
    assert tl == ["srun", "--nodes=2", "--ntasks-per-node=4"]
    (gl, _, g, _), = [c for c in cmds if c[1] == "generate"]
    assert gl == [] and g["teacher"] == "http://127.0.0.1:9/v1"
    assert [c[1] for c in cmds].count("eval") == 3 and "compare" not in [c[1] for c in cmds]
    assert all(str(tmp_path) in c[2]["db"] for c in cmds if "db" in c[2])
    # an endpoint teacher is evaluated through the endpoint, without a launcher
    out = dry(retort_bin, path, "--set", f"work_dir={tmp_path}", "--set", "teacher=http://127.0.0.1:9/v1",
              "--set", "teacher_launcher=")
    teach = [c for c in commands(out, retort_bin) if c[1] == "eval" and c[2]["name"] == "teacher"]
    assert len(teach) == 3 and all(c[0] == [] and c[2]["model"] == "http://127.0.0.1:9/v1" for c in teach)


# ---- validation: one line naming the file, the line and the key; exit 1 ----

GOOD = """\
name: t
work_dir: {wd}
vars:
  db: ${{work_dir}}/run.db
stages:
  - stage: import
    db: ${{db}}
    format: jsonl
    prompt-field: prompt
    files: [ "{data}" ]
  - stage: select
    db: ${{db}}
    snapshot: s
"""


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.fixture
def good(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text('{"prompt": "1+1?", "answer": "2"}\n')
    return GOOD.format(wd=tmp_path / "w", data=data)


@pytest.mark.parametrize("edit, needles", [
    (("    format: jsonl\n", "    format: jsonl\n    temprature: 0.6\n"), [":9:", "temprature", "unknown key"]),
    (("name: t\n", "name: t\nworkdir: x\n"), [":2:", "workdir", "unknown key"]),
    (("  - stage: select\n", "  - stage: selekt\n"), [":11:", "selekt", "unknown stage"]),
    (("    snapshot: s\n", "    snapshot: s\n    per-prompt: many\n"), [":14:", "per-prompt", "integer"]),
    (("    snapshot: s\n", "    snapshot: s\n    seed: [1, 2]\n"), [":14:", "seed", "a list"]),
    (("    snapshot: s\n", "    snapshot: [a]\n"), [":13:", "snapshot", "a list"]),
    (("    format: jsonl\n", "    format: jsonl\n    as-samples: 1\n"), [":9:", "as-samples", "true or false"]),
    (("    snapshot: s\n", "    snapshot: ${nope}\n"), [":13:", "snapshot", "${nope}"]),
    (("  - stage: select\n", "  - stage: select\n    name: import\n"), [":11:", "second stage named 'import'"]),
    (("    db: ${db}\n    snapshot", "    db: ${db}\n\tsnapshot"), ["r.yaml:13"]),
    (("vars:\n", "vars: [\n"), ["r.yaml:3"]),
])
def test_bad_recipe_is_one_error_line(retort_bin, tmp_path, good, edit, needles):
    assert edit[0] in good
    path = write(tmp_path, good.replace(edit[0], edit[1], 1))
    for extra in ([], ["--dry-run"]):
        p = run([retort_bin, "run", path, *extra])
        assert_one_error_line(p, path, *needles)
    assert not (tmp_path / "w").exists()


def test_missing_input_is_reported_at_run_not_at_dry_run(retort_bin, tmp_path, good):
    path = write(tmp_path, good.replace(str(tmp_path / "p.jsonl"), str(tmp_path / "absent.jsonl")))
    assert "absent.jsonl" in dry(retort_bin, path)
    p = run([retort_bin, "run", path])
    assert_one_error_line(p, path + ":10:", "import", "files", "absent.jsonl", "does not exist")
    assert not (tmp_path / "w").exists()


def test_usage_errors_exit_2(retort_bin, tmp_path, good):
    path = write(tmp_path, good)
    for args in ([], [path, "--from", "nope"], [path, "--only", "nope"], [path, "--from", "import", "--only", "select"],
                 [path, "--set", "novalue"], [path, path], [path, "--frobnicate"]):
        p = run([retort_bin, "run", *args])
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.startswith("retort run: "), p.stderr
    p = run([retort_bin, "run", path, "--set", "nosuchvar=1"])
    assert_one_error_line(p, "nosuchvar")
    p = run([retort_bin, "run", path, "--set", "nosuchstage.seed=1"])
    assert_one_error_line(p, "nosuchstage")


def test_launcher_prefixes_the_stage_and_a_failed_stage_stops_the_run(retort_bin, tmp_path, good):
    log = tmp_path / "launched.txt"
    launcher = tmp_path / "launch.sh"
    launcher.write_text(f'#!/bin/sh\necho "$@" >> {log}\nshift\nexec "$@"\n')
    launcher.chmod(0o755)
    text = good.replace("    format: jsonl\n", f"    format: jsonl\n    launcher: {launcher} --flag\n")
    path = write(tmp_path, text)
    p = run([retort_bin, "run", path, "--only", "import"])
    assert p.returncode == 0, p.stderr
    words = log.read_text().split()
    assert words[0] == "--flag" and os.path.samefile(words[1], retort_bin) and words[2] == "import"
    # a launcher that does not exist: one line naming the stage
    path = write(tmp_path, text.replace(str(launcher), str(tmp_path / "nolauncher")), "r2.yaml")
    p = run([retort_bin, "run", path, "--set", f"work_dir={tmp_path}/w2"])
    assert p.returncode == 1 and "[1/2] import: " in p.stdout  # stdout has the progress so far
    err = p.stderr.strip().split("\n")
    assert len(err) == 1 and err[0].startswith("retort: run: stage import: cannot start ") and "nolauncher" in err[0], err
    # a stage that fails: the run stops there, its last line names the stage
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    path = write(tmp_path, good.replace(str(tmp_path / "p.jsonl"), str(bad)), "r3.yaml")
    p = run([retort_bin, "run", path, "--set", f"work_dir={tmp_path}/w3"])
    assert p.returncode == 1
    last = p.stderr.strip().split("\n")[-1]
    assert last.startswith("retort: run: stage import failed (exit status 1)"), p.stderr
    assert "[2/2] select" not in p.stdout
    state = json.loads((tmp_path / "w3" / "recipe-state.json").read_text())
    assert state["stages"]["import"]["status"] == "started" and "select" not in state["stages"]


# ---- tiny-cpu.yaml for real ----

def tiny(retort_bin, wd, *extra, timeout=900):
    return run([retort_bin, "run", TINY, "--set", f"work_dir={wd}", "--set", "threads=2", *extra], timeout=timeout)


def state(wd):
    return json.loads((wd / "recipe-state.json").read_text())["stages"]


STAGES = ["teacher-data", "teacher", "import", "generate", "filter", "select", "export", "student", "eval-teacher",
          "eval-student", "compare", "report"]


@pytest.fixture(scope="module")
def tiny_run(retort_bin, tmp_path_factory):
    wd = tmp_path_factory.mktemp("tiny") / "w"
    p = tiny(retort_bin, wd)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return wd, p.stdout


def test_tiny_runs_every_stage_in_order(tiny_run):
    wd, out = tiny_run
    pos = [out.index(f"] {s}: done in ") for s in STAGES]
    assert pos == sorted(pos)
    st = state(wd)
    assert list(st) == STAGES and all(v["status"] == "done" for v in st.values())
    assert (wd / "report.html").stat().st_size > 1000
    for d in ("teacher/step-150", "student/step-100"):
        assert (wd / d / "model.safetensors").exists()


def test_tiny_results_are_in_the_database(tiny_run):
    wd, out = tiny_run
    db = sqlite3.connect(str(wd / "run.db"))
    prompts = db.execute("select count(*) from prompts").fetchone()[0]
    teachers = dict(db.execute("select teacher, count(*) from samples group by teacher").fetchall())
    runs = dict(db.execute("select run, count(*) from eval_results group by run").fetchall())
    db.close()
    tests = sum(1 for l in open(os.path.join(RECIPES, "tiny", "test.jsonl")) if l.strip())
    trains = sum(1 for l in open(os.path.join(RECIPES, "tiny", "prompts.jsonl")) if l.strip())
    assert prompts >= trains  # eval adds the test questions as prompts too
    (name, n), = teachers.items()
    assert name.startswith("teacher-") and n == 2 * trains  # n: 2 per prompt
    assert sorted(r.split("-")[0] for r in runs) == ["student", "teacher"]
    assert all(n == 2 * tests for n in runs.values())  # k: 2 per question
    for r in runs:  # compare printed both runs
        assert r in out


def test_tiny_rerun_skips_everything(retort_bin, tiny_run):
    wd, _ = tiny_run
    before = state(wd)
    p = tiny(retort_bin, wd)
    assert p.returncode == 0, p.stderr
    assert "every stage is finished and unchanged" in p.stdout and "done in" not in p.stdout
    assert state(wd) == before


def test_tiny_changed_option_reruns_from_that_stage(retort_bin, tiny_run):
    wd, _ = tiny_run
    out = dry(retort_bin, TINY, "--set", f"work_dir={wd}", "--set", "threads=2", "--set", "student.lr=2e-3")
    lines = out.strip().split("\n")
    assert [l.split(":")[0] for l in lines[:7]] == ["# " + s for s in STAGES[:7]]
    assert all("skipped (finished, unchanged)" in l for l in lines[:7])
    assert len(lines) == 12 and not any(l.startswith("#") for l in lines[7:])
    assert "--lr 0.002" in lines[7]
    # the student's eval run gets a new name: results of the old student are not reused
    old = [c for c in commands(dry(retort_bin, TINY, "--set", f"work_dir={wd}", "--set", "threads=2", "--from", "eval-student"),
                               retort_bin) if c[1] == "eval"][-1][2]["name"]
    new = commands(lines[9] + "\n", retort_bin)[0][2]["name"]
    assert new.startswith("student-") and old.startswith("student-") and new != old


def test_tiny_only_and_from(retort_bin, tiny_run):
    wd, _ = tiny_run
    p = tiny(retort_bin, wd, "--only", "compare")
    assert p.returncode == 0, p.stderr
    started = [l for l in p.stdout.split("\n") if l.startswith("[") and ": done in " in l]
    assert len(started) == 1 and started[0].startswith("[11/12] compare:")
    assert "report" not in state(wd)  # what follows compare counts as not finished
    p = tiny(retort_bin, wd)
    assert p.returncode == 0, p.stderr
    assert [l.split("]")[1].split(":")[0].strip() for l in p.stdout.split("\n") if ": done in " in l] == ["report"]
    p = tiny(retort_bin, wd, "--from", "eval-student")
    assert p.returncode == 0, p.stderr
    assert [l.split("]")[1].split(":")[0].strip() for l in p.stdout.split("\n") if ": done in " in l] == [
        "eval-student", "compare", "report"]
    assert "0 samples generated, 80 already stored" in p.stdout + p.stderr  # eval resumes by itself
    assert all(v["status"] == "done" for v in state(wd).values()) and list(state(wd)) == STAGES


def test_tiny_killed_mid_stage_resumes(retort_bin, tiny_run, tmp_path):
    wd = tmp_path / "w"
    proc = subprocess.Popen([retort_bin, "run", TINY, "--set", f"work_dir={wd}", "--set", "threads=2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    ck = wd / "teacher" / "step-50.state" / "trainer_state.json"
    deadline = time.time() + 600
    while not ck.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ck.exists(), "the teacher never wrote its step-50 checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and the stage it runs
    proc.wait()
    st = state(wd)
    assert st["teacher-data"]["status"] == "done" and st["teacher"]["status"] == "started"
    assert not (wd / "teacher" / "step-150").exists()
    p = tiny(retort_bin, wd)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "[1/12] teacher-data: skipped (finished, unchanged)" in p.stdout
    assert "[2/12] teacher: resuming from " + str(wd / "teacher" / "step-") in p.stdout
    assert "--resume " + str(wd / "teacher" / "step-") in p.stdout and "[1/12] teacher-data: done" not in p.stdout
    st = state(wd)
    assert list(st) == STAGES and all(v["status"] == "done" for v in st.values())
    assert (wd / "report.html").exists()
    # the resumed teacher is the uninterrupted one, bit for bit
    full, _ = tiny_run
    a = (wd / "teacher" / "step-150" / "model.safetensors").read_bytes()
    b = (full / "teacher" / "step-150" / "model.safetensors").read_bytes()
    assert a == b


def test_tiny_student_under_mpirun(retort_bin, tiny_run):
    """The student stage behind a real launcher: `mpirun -np 2` with half the batch per rank
    trains on the same global batch as the 1-rank run (retort train's data parallelism), so
    its per-step losses match that run's; the change of batch reruns the student and what
    follows, not what precedes it. Runs last: it changes the shared run's student."""
    import shutil
    mpirun = shutil.which("mpirun")
    if not mpirun:
        pytest.skip("skipped: mpirun not installed (make deps installs openmpi-bin)")
    wd, _ = tiny_run
    one = [json.loads(l) for l in (wd / "student-train.jsonl").read_text().split("\n") if l.strip()]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if "ASAN_OPTIONS" in env:   # Open MPI's start-up allocations read as leaks (see test_comm.py)
        env["ASAN_OPTIONS"] += ":detect_leaks=0"
    p = subprocess.run([retort_bin, "run", TINY, "--set", f"work_dir={wd}", "--set", "threads=2",
                        "--set", f"student.launcher={mpirun} --oversubscribe -np 2 --mca btl self,vader",
                        "--set", "student.batch=4", "--set", "student.threads=1"],
                       capture_output=True, text=True, timeout=900, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    done = [l.split("]")[1].split(":")[0].strip() for l in p.stdout.split("\n") if ": done in " in l]
    assert done == STAGES[7:], done
    assert f"[8/12] student: {mpirun} --oversubscribe -np 2" in p.stdout
    two = [json.loads(l) for l in (wd / "student-train.jsonl").read_text().split("\n") if l.strip()]
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(1, 101))
    for a, b in zip(one, two):  # same global batch; the sums are split across ranks and threads
        assert abs(a["loss"] - b["loss"]) <= 1e-3 * abs(a["loss"]), (a, b)
