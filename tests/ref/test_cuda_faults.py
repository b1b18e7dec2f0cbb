"""A CUDA or NCCL error in the middle of a tensor-parallel run of the GPU teacher engines, on the
CPU: tests/tools/dense_cuda_tp `fault` runs teacher/dense_cuda.c (and ds_cuda_tp `fault`
teacher/ds_cuda.c: tensor- and expert-parallel, its all-to-all too) behind teacher/engine.c against
the CPU stand-ins of tests/unit/fake_cuda.h (NCCL = the MPI communicator), two ranks in lockstep,
and arms the stand-ins' fault injection (KIND:N@RANK: the N-th kernel launch, async copy or
collective from then on fails, sticky) on one rank only after some steps. The failing rank does
what `retort generate` does with a failed lockstep (cli/cmd_generate.c: one line naming the rank,
then comm_abort): the test holds the job to that — it ends (within the timeout: no rank is left
waiting in a collective), non-zero, with exactly one line from the tool, the failing rank's, that
names the failing call and the runtime's error (cudaGetErrorString's "unspecified launch failure",
NCCL's "unhandled cuda error" for ncclUnhandledCudaError), and --no-cuda-graphs when a graph was
launched. Without a fault the same run completes on both ranks.
"""
import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import run

TIMEOUT = 120   # a hang: a rank waiting forever in a collective


def tool(tools_dir, name="dense_cuda_tp"):
    p = os.path.join(tools_dir, name)
    if not os.access(p, os.X_OK):
        pytest.fail(f"{p} not built (make tests-build)")
    return p


@pytest.fixture(scope="module")
def model(tools_dir, tmp_path_factory):
    d = str(tmp_path_factory.mktemp("fault") / "qwen")
    p = run([tool(tools_dir), "make", "qwen", d, "14"])
    assert p.returncode == 0, p.stderr
    return d


@pytest.fixture(scope="module")
def ds_model(tools_dir, tmp_path_factory):
    d = str(tmp_path_factory.mktemp("fault") / "ds")
    p = run([tool(tools_dir, "ds_cuda_tp"), "make", d, "6"])
    assert p.returncode == 0, p.stderr
    return d


def mpi2(args):
    mpirun = shutil.which("mpirun")
    if not mpirun:
        pytest.skip("skipped: mpirun not installed (make deps installs openmpi-bin)")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if "ASAN_OPTIONS" in env:
        env["ASAN_OPTIONS"] += ":detect_leaks=0"   # MPI_Abort ends ranks without freeing
    t0 = time.monotonic()
    p = subprocess.run([mpirun, "--oversubscribe", "-np", "2", "--mca", "btl", "self,vader", *args],
                       capture_output=True, text=True, timeout=TIMEOUT, env=env)
    return p, time.monotonic() - t0


def test_without_a_fault_both_ranks_finish(tools_dir, model):
    p, _ = mpi2([tool(tools_dir), "fault", model, "kernel:100000000", "3"])
    assert p.returncode == 0, p.stderr
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    assert sorted(l["rank"] for l in lines) == [0, 1]
    assert lines[0]["steps"] == lines[1]["steps"] > 10
    assert not any(l["fired"] for l in lines)


# (spec, warm steps, flags, what the line must say). Step 0 is the prefill; the first decode step
# of a batch size runs eagerly and is captured; later ones replay the graph.
CASES = [
    ("kernel:9@1", "4", [], ["cudaGraphLaunch: unspecified launch failure", "--no-cuda-graphs"]),
    ("kernel:9@1", "4", ["--no-cuda-graphs"], ["cudaGetLastError() failed after ", "unspecified launch failure"]),
    ("nccl:7@1", "4", ["--no-cuda-graphs"], ["NCCL failed in ncclAllReduce: unhandled cuda error"]),
    ("nccl:7@1", "4", [], ["cudaGraphLaunch: unspecified launch failure", "--no-cuda-graphs"]),
    ("memcpy:3@1", "5", [], ["CUDA failed in cudaMemcpy", "unspecified launch failure"]),
    ("nccl:1@1", "1", [], ["unhandled cuda error"]),   # the first decode step, eager, before its capture
]


@pytest.mark.parametrize("spec,warm,flags,says", CASES, ids=[f"{c[0]}-{c[1]}{''.join(c[2])}" for c in CASES])
def test_a_fault_on_rank_1_mid_run_is_one_line_and_ends_the_job(tools_dir, model, spec, warm, flags, says):
    one_line_and_the_end(tools_dir, "dense_cuda_tp", model, spec, warm, flags, says)


# DeepSeek-V3 (6 steps of decode before the fault: step 0 is the prefill of both prompts)
DS_CASES = [
    ("kernel:20@1", "3", ["--no-cuda-graphs"], ["cudaGetLastError() failed after ", "unspecified launch failure"]),
    ("nccl:3@1", "3", ["--no-cuda-graphs"], ["NCCL failed in ncclAllReduce: unhandled cuda error"]),
    ("nccl:4@1", "3", ["--no-cuda-graphs"], ["NCCL failed in ncclGroupEnd: unhandled cuda error"]),   # the MoE all-to-all
    ("nccl:3@1", "3", [], ["cudaGraphLaunch: unspecified launch failure", "--no-cuda-graphs"]),
]


@pytest.mark.parametrize("spec,warm,flags,says", DS_CASES, ids=[f"{c[0]}-{c[1]}{''.join(c[2])}" for c in DS_CASES])
def test_deepseek_fault_on_rank_1_mid_run_is_one_line_and_ends_the_job(tools_dir, ds_model, spec, warm, flags, says):
    one_line_and_the_end(tools_dir, "ds_cuda_tp", ds_model, spec, warm, flags, says)


def test_deepseek_without_a_fault_both_ranks_finish(tools_dir, ds_model):
    p, _ = mpi2([tool(tools_dir, "ds_cuda_tp"), "fault", ds_model, "kernel:100000000", "3"])
    assert p.returncode == 0, p.stderr
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    assert sorted(l["rank"] for l in lines) == [0, 1]
    assert lines[0]["steps"] == lines[1]["steps"] > 6


def one_line_and_the_end(tools_dir, name, model, spec, warm, flags, says):
    p, took = mpi2([tool(tools_dir, name), "fault", model, spec, warm, *flags])
    assert p.returncode != 0, p.stdout + p.stderr
    assert took < TIMEOUT
    ours = [l for l in p.stderr.splitlines() if l.startswith(name + ":")]
    assert len(ours) == 1, p.stderr
    line = ours[0]
    assert line.startswith(name + ": rank 1 of 2: "), line
    for s in says:
        assert s in line, line
    # no rank reported finishing: rank 0 was ended while it waited in a collective
    assert not [l for l in p.stdout.splitlines() if l.startswith("{")], p.stdout


# ---- the full chain with storage: `retort generate --db` wiring, a fault mid-run, a rerun ----------

@pytest.fixture(scope="module")
def byte_qwen(tmp_path_factory):
    """A tiny Qwen2 the GPU engine takes (head_dim 64: 2 query heads, 1 kv head over hidden 128)
    over a byte-level tokenizer (256 bytes and 4 added tokens), saved by transformers (f32)."""
    pytest.importorskip("torch")
    pytest.importorskip("tokenizers")
    from conftest import save_byte_qwen
    d = tmp_path_factory.mktemp("fault-db") / "byte-qwen"
    save_byte_qwen(d, 128, 256, 2, 1)
    return str(d)


def import_prompts(retort, tmp_path, name, n):
    db = tmp_path / name
    src = tmp_path / f"{name}.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"Count to {i}."}) + "\n" for i in range(n)))
    r = run([retort, "import", "--db", str(db), "--format", "jsonl", "--prompt-field", "prompt", str(src)])
    assert r.returncode == 0, r.stderr
    return db


def stored(db):
    import sqlite3
    con = sqlite3.connect(str(db))
    rs = con.execute("SELECT prompt_id, sample_index, seed, text, finish_reason FROM samples ORDER BY 1, 2").fetchall()
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    con.close()
    return rs


@pytest.mark.parametrize("flags", [[], ["--no-cuda-graphs"]], ids=["graphs", "eager"])
def test_a_fault_mid_generate_keeps_what_was_stored_and_a_rerun_completes_exactly_the_rest(
        retort_bin, tools_dir, tmp_path, byte_qwen, flags):
    n_prompts, k = 6, 2
    t = tool(tools_dir, "cuda_fault_db")
    clean = import_prompts(retort_bin, tmp_path, "clean.db", n_prompts)
    p = run([t, str(clean), byte_qwen, str(k), "24", *flags])
    assert p.returncode == 0, p.stderr
    want = stored(clean)
    assert len(want) == n_prompts * k
    launches = json.loads(p.stdout)["kernels"]
    # the same run with the kernel launch half-way through failing (counted from the start)
    db = import_prompts(retort_bin, tmp_path, "fault.db", n_prompts)
    p = subprocess.run([t, str(db), byte_qwen, str(k), "24", *flags], capture_output=True, text=True, timeout=TIMEOUT,
                       env=dict(os.environ, FAKE_CUDA_FAIL=f"kernel:{launches // 2}"))
    assert p.returncode == 1, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cuda_fault_db: ") and "unspecified launch failure" in lines[0], \
        p.stderr
    kept = stored(db)
    assert 0 < len(kept) < n_prompts * k, len(kept)
    assert set(kept) <= set(want)   # what was committed is whole, and what an uninterrupted run stores
    p = run([t, str(db), byte_qwen, str(k), "24", *flags])
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["existing"] == len(kept) and out["done"] == n_prompts * k - len(kept)
    assert stored(db) == want   # every (prompt, index) once, as the clean run stored it
