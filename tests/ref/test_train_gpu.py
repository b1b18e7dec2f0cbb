"""`retort train --device cuda`: the GPU training path (student/gpu_train.h).

Everywhere: the flag's errors — a CPU-only build says "built without CUDA", a CUDA build on a
machine without a usable device says so in one line, a bad value is a usage error.

With a CUDA device (nvidia-smi -L lists one) and a CUDA build, a tiny Qwen2 (head_dim 64, the
flash-attention kernels' smallest) is trained on the GPU and on the CPU trainer with the same
options and data, and the GPU run is compared with the CPU run (the independent reference:
f32 throughout, itself tested against transformers in test_train.py):
  * losses and gradient norms step by step within a bf16 tolerance: bf16 weights and
    activations round at 2^-8 relative; through two layers and the head the step-1 loss
    agrees to ~1e-3 relative, and 8 steps of AdamW at lr 3e-3 let trajectories drift a little,
    so |Δloss| ≤ 2e-2·loss and |Δgnorm| ≤ 1e-1·gnorm (stated, not fitted: a wrong gradient —
    a transposed weight, a missing 1/total — moves these by far more);
  * --checkpoint-layers gives bit-identical losses (the kernels are deterministic, so the
    recomputed activations equal the kept ones);
  * a GPU checkpoint resumes on the CPU, and a CPU checkpoint on the GPU, continuing the same
    run (checkpoint format shared), within the same tolerance;
  * the log carries peak_mem_gib.
Shards come from tests/tools/student_mkshard.
"""
import json
import os
import shutil
import subprocess

import pytest
from conftest import assert_one_error_line, run

QWEN64 = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 256, "hidden_size": 128,
          "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
          "head_dim": 64, "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
          "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu"}
LOSS_RTOL, GNORM_RTOL = 2e-2, 1e-1


def tool(tools_dir, name):
    p = os.path.join(tools_dir, name)
    if not os.access(p, os.X_OK):
        pytest.fail(f"test tool {p} not built (make tests-build)")
    return p


def cuda_build(retort_bin):
    """Only a CUDA build compiles student/gpu_train.c's device check, and with it its message."""
    with open(retort_bin, "rb") as f:
        return b"no usable CUDA device" in f.read()


def have_gpu():
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    p = subprocess.run([smi, "-L"], capture_output=True, text=True)
    return p.returncode == 0 and "GPU" in p.stdout


@pytest.fixture(scope="module")
def data(tmp_path_factory, tools_dir):
    d = tmp_path_factory.mktemp("shards")
    mk = tool(tools_dir, "student_mkshard")
    for i, n in enumerate((24, 16)):
        subprocess.run([mk, str(d / f"shard-{i:05d}.bin"), "32", str(n), "256", str(i + 1)], check=True)
    return str(d)


@pytest.fixture(scope="module")
def gpu(retort_bin):
    if not cuda_build(retort_bin):
        pytest.skip("skipped: a CPU-only build (the GPU comparison needs `make` with nvcc)")
    if not have_gpu():
        pytest.skip("skipped: no CUDA device (nvidia-smi -L lists none); bench/gpu_student.sh runs this on a GPU")


def train(retort_bin, *args):
    p = run([retort_bin, "train", "--threads", "2", *args], timeout=600)
    assert p.returncode == 0, p.stderr
    return p


def read_log(path):
    return [json.loads(line) for line in open(path)]


def config(tmp_path):
    p = tmp_path / "qwen.json"
    p.write_text(json.dumps(QWEN64))
    return str(p)


COMMON = ["--batch", "2", "--grad-accum", "2", "--lr", "3e-3", "--warmup", "2", "--weight-decay", "0.1",
          "--clip", "1.0", "--seed", "5"]


def close(a, b, rtol):
    return abs(a - b) <= rtol * max(abs(a), abs(b))


def assert_runs_agree(cpu, gpu_rows):
    assert [r["step"] for r in cpu] == [r["step"] for r in gpu_rows]
    for c, g in zip(cpu, gpu_rows):
        assert c["lr"] == g["lr"], (c, g)
        assert close(c["loss"], g["loss"], LOSS_RTOL), (c, g)
        assert close(c["grad_norm"], g["grad_norm"], GNORM_RTOL), (c, g)


def test_device_cuda_without_a_usable_gpu_is_one_line(retort_bin, data, tmp_path):
    if cuda_build(retort_bin) and have_gpu():
        pytest.skip("skipped: this machine has a CUDA device (the GPU tests below run instead)")
    p = run([retort_bin, "train", "--init", config(tmp_path), "--data", data, "--batch", "2", "--steps", "1",
             "--lr", "1e-3", "--out", str(tmp_path / "o"), "--device", "cuda"])
    if cuda_build(retort_bin):
        assert_one_error_line(p, "retort: train: --device cuda: no ", "CUDA device")
    else:
        assert_one_error_line(p)
        assert p.stderr.strip() == "retort: train: built without CUDA"
    assert not os.path.exists(tmp_path / "o"), "nothing is written before the device check"


def test_device_takes_cpu_or_cuda(retort_bin, data, tmp_path):
    p = run([retort_bin, "train", "--init", config(tmp_path), "--data", data, "--batch", "2", "--steps", "1",
             "--lr", "1e-3", "--out", str(tmp_path / "o"), "--device", "tpu"])
    assert p.returncode == 2 and "--device" in p.stderr, p.stderr
    # --device cpu is the CPU trainer (the default), unchanged
    train(retort_bin, "--init", config(tmp_path), "--data", data, "--batch", "2", "--steps", "2", "--lr", "1e-3",
          "--out", str(tmp_path / "c"), "--device", "cpu", "--log", str(tmp_path / "c.jsonl"))
    rows = read_log(tmp_path / "c.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all("peak_mem_gib" not in r for r in rows)


def test_gpu_losses_follow_the_cpu_trainer(retort_bin, data, tmp_path, gpu):
    cfg = config(tmp_path)
    train(retort_bin, "--init", cfg, "--data", data, *COMMON, "--steps", "8", "--out", str(tmp_path / "c"),
          "--log", str(tmp_path / "c.jsonl"))
    train(retort_bin, "--init", cfg, "--data", data, *COMMON, "--steps", "8", "--out", str(tmp_path / "g"),
          "--log", str(tmp_path / "g.jsonl"), "--device", "cuda")
    cpu, g = read_log(tmp_path / "c.jsonl"), read_log(tmp_path / "g.jsonl")
    assert_runs_agree(cpu, g)
    assert close(cpu[0]["loss"], g[0]["loss"], 5e-3), (cpu[0], g[0])
    assert all(r["peak_mem_gib"] > 0 for r in g)
    assert g[-1]["loss"] < g[0]["loss"]


def test_gpu_checkpoint_layers_is_bit_identical(retort_bin, data, tmp_path, gpu):
    cfg = config(tmp_path)
    for name, extra in (("a", []), ("b", ["--checkpoint-layers"])):
        train(retort_bin, "--init", cfg, "--data", data, *COMMON, "--steps", "4", "--out", str(tmp_path / name),
              "--log", str(tmp_path / f"{name}.jsonl"), "--device", "cuda", *extra)
    a, b = read_log(tmp_path / "a.jsonl"), read_log(tmp_path / "b.jsonl")
    assert [(r["loss"], r["grad_norm"]) for r in a] == [(r["loss"], r["grad_norm"]) for r in b]


def test_checkpoints_cross_between_gpu_and_cpu(retort_bin, data, tmp_path, gpu):
    cfg = config(tmp_path)
    full = ["--steps", "8"]
    train(retort_bin, "--init", cfg, "--data", data, *COMMON, *full, "--out", str(tmp_path / "c"),
          "--save-every", "4", "--log", str(tmp_path / "c.jsonl"))
    train(retort_bin, "--init", cfg, "--data", data, *COMMON, *full, "--out", str(tmp_path / "g"),
          "--save-every", "4", "--log", str(tmp_path / "g.jsonl"), "--device", "cuda")
    # the GPU checkpoint has the CPU trainer's files and tensors
    from safetensors.numpy import load_file
    opt_g = load_file(str(tmp_path / "g" / "step-4" / "optimizer.safetensors"))
    opt_c = load_file(str(tmp_path / "c" / "step-4" / "optimizer.safetensors"))
    assert opt_g.keys() == opt_c.keys()
    assert all(opt_g[k].shape == opt_c[k].shape and opt_g[k].dtype == opt_c[k].dtype for k in opt_g)
    # GPU step-4 resumed on the CPU; CPU step-4 resumed on the GPU
    train(retort_bin, "--resume", str(tmp_path / "g" / "step-4"), "--data", data, *COMMON, *full,
          "--out", str(tmp_path / "gc"), "--log", str(tmp_path / "gc.jsonl"))
    train(retort_bin, "--resume", str(tmp_path / "c" / "step-4"), "--data", data, *COMMON, *full,
          "--out", str(tmp_path / "cg"), "--log", str(tmp_path / "cg.jsonl"), "--device", "cuda")
    c, g = read_log(tmp_path / "c.jsonl"), read_log(tmp_path / "g.jsonl")
    gc, cg = read_log(tmp_path / "gc.jsonl"), read_log(tmp_path / "cg.jsonl")
    assert [r["step"] for r in gc] == [5, 6, 7, 8] and [r["step"] for r in cg] == [5, 6, 7, 8]
    assert_runs_agree(c[4:], gc)
    assert_runs_agree(c[4:], cg)
    assert_runs_agree(g[4:], gc)
