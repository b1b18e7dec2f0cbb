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
Everywhere, too: the data-parallel path of student/gpu_train.c on the CPU — tests/tools/
gpu_train_fake_dp, the trainer compiled against the CPU stand-ins of tests/unit/fake_cuda.h
(kernels = their CPU twins on bf16 values, NCCL = the MPI communicator) under mpirun: 2 and 4
ranks at ZeRO-0/1/2 against the same stand-in at 1 rank reading the same global batch
(batch × grad-accum × ranks sequences a step) — the same sums in another order, so 1e-6 on
the loss and 1e-5 on the norm — and against the CPU trainer's CLI at the bf16 tolerance;
its 2-rank ZeRO-1 checkpoint (master weights and moments gathered from the shards) resumes
on the CPU trainer and continues the CPU run. The same at ZeRO-2/3 (per-unit gradient
buckets, gathered weight shards), with the optimizer offloaded, with gradient accumulation
and for an untied Llama; the stand-in allocator's peak device bytes against `retort train
--plan` for the same run (5%).
Everywhere, too: `retort train --plan --json` for Qwen2.5-7B on 8 ranks against the per-rank
formula of docs/student.md written out here from the config; fits / does not fit; usage
errors exit 2, configs the GPU trainer cannot take exit 1 with one line.
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


def llama_config(tmp_path):
    """untied, no biases, 3 layers: the head is a unit of its own (ZeRO-2/3 buckets, gathers)"""
    p = tmp_path / "llama.json"
    p.write_text(json.dumps(dict(QWEN64, architectures=["LlamaForCausalLM"], model_type="llama",
                                 tie_word_embeddings=False, num_hidden_layers=3)))
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


@pytest.mark.parametrize("flags,needle", [(["--offload-optimizer"], "--device cuda"),
                                         (["--offload-activations"], "--device cuda"), (["--zero", "4"], "--zero")])
def test_gpu_only_options_without_device_cuda_are_usage_errors(retort_bin, data, tmp_path, flags, needle):
    p = run([retort_bin, "train", "--init", config(tmp_path), "--data", data, "--batch", "2", "--steps", "1",
             "--lr", "1e-3", "--out", str(tmp_path / "o"), *flags])
    assert p.returncode == 2 and needle in p.stderr, p.stderr
    assert not os.path.exists(tmp_path / "o")


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
    opt_g = load_file(str(tmp_path / "g" / "step-4.state" / "optimizer.safetensors"))
    opt_c = load_file(str(tmp_path / "c" / "step-4.state" / "optimizer.safetensors"))
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


def mpi(ranks, args, timeout=600):
    """Run args on `ranks` MPI ranks (1: plainly, no mpirun)."""
    if ranks == 1:
        return run(args, timeout=timeout)
    mpirun = shutil.which("mpirun")
    if not mpirun:
        pytest.skip("skipped: mpirun not installed (make deps installs openmpi-bin)")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if "ASAN_OPTIONS" in env:
        env["ASAN_OPTIONS"] += ":detect_leaks=0"
    return subprocess.run([mpirun, "--oversubscribe", "-np", str(ranks), "--mca", "btl", "self,vader", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def fake_dp(tools_dir, ranks, cfg, data, steps, zero, batch, accum, save=None):
    args = [tool(tools_dir, "gpu_train_fake_dp"), cfg, data, str(steps), str(zero), str(batch), str(accum), "5"]
    p = mpi(ranks, args + (save or []))
    assert p.returncode == 0, p.stdout + p.stderr
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("ranks,zero,accum", [(2, 0, 1), (2, 1, 1), (2, 2, 1), (4, 1, 1), (4, 2, 1), (2, "3", 1),
                                              (4, "3", 1), (2, "2:offload", 1), (2, "3:offload", 1), (2, "2", 2),
                                              (2, "3:ckpt", 2), (2, "3:offload", 2), (2, "1:offload", 2)])
def test_gpu_path_data_parallel_on_cpu_stand_ins_matches_one_rank(retort_bin, data, tools_dir, tmp_path, ranks, zero,
                                                                 accum):
    """accum 2: every level sums the four micro-batches in another order than one rank does —
    ZeRO-2/3's gradient shard accumulates the micro-batches' reduced buckets ((a0 + a2) + a1 +
    a3), ZeRO-0/1 reduce each rank's accumulated sum ((a0 + a1) + (a2 + a3)) — against ((a0 +
    a1) + a2) + a3: the first step's loss and norm still agree at 1e-6 / 1e-5 (a missing
    accumulation moves the norm by ~30%), but AdamW's first update is ±lr wherever a gradient is
    ~0 (the k bias), so from step 2 on the runs agree at the bf16 tolerance only (measured 1.2e-5
    on the norm at step 2, 1.5e-4 at step 3; ZeRO-1 with offload 1.3e-5 at step 3)."""
    cfg = config(tmp_path)
    one = fake_dp(tools_dir, 1, cfg, data, 4, 0, 2, ranks * accum)   # one rank, the same global batch
    dp = fake_dp(tools_dir, ranks, cfg, data, 4, zero, 2, accum)
    assert [r["step"] for r in dp] == [1, 2, 3, 4]
    reordered = accum > 1
    for a, b in zip(one, dp):
        assert a["lr"] == b["lr"] and a["loss_tokens"] == b["loss_tokens"], (a, b)
        lt, nt = (LOSS_RTOL, GNORM_RTOL) if reordered and a["step"] > 1 else (1e-6, 1e-5)
        assert close(a["loss"], b["loss"], lt) and close(a["grad_norm"], b["grad_norm"], nt), (a["step"], a, b)
    # and the CPU trainer (f32) on the same global batch, at the bf16 tolerance
    train(retort_bin, "--init", cfg, "--data", data, "--batch", "2", "--grad-accum", str(ranks * accum), "--steps", "4",
          "--lr", "3e-3", "--warmup", "2", "--weight-decay", "0.1", "--clip", "1.0", "--seed", "5",
          "--out", str(tmp_path / "c"), "--log", str(tmp_path / "c.jsonl"))
    assert_runs_agree(read_log(tmp_path / "c.jsonl"), dp)


def qwen3_config(tmp_path):
    """Qwen3: q_norm / k_norm per head before RoPE, head_dim 64 decoupled from hidden 128 (4 query
    heads: q is 256 wide), no biases, untied head"""
    p = tmp_path / "qwen3.json"
    p.write_text(json.dumps(dict(QWEN64, architectures=["Qwen3ForCausalLM"], model_type="qwen3", num_attention_heads=4,
                                 num_key_value_heads=2, attention_bias=False, tie_word_embeddings=False,
                                 rope_theta=1000000.0)))
    return str(p)


@pytest.mark.parametrize("zero", ["1", "3", "3:ckpt"])
def test_gpu_path_qwen3_and_val_loss_at_2_ranks_match_one_rank(retort_bin, data, tools_dir, tmp_path, zero):
    """Qwen3 (the per-head q/k norms on the device, their weights and gradients in the sharded
    layout) on the stand-in at 2 ranks against 1 rank reading the same global batch (1e-6 / 1e-5,
    as above), and the validation loss (gt_eval after every step, collective at ZeRO-3: each
    unit gathered for each batch) equal to the 1-rank one at 1e-6 (gt_eval against the CPU
    trainer's tr_eval: test_gpu_train_fake.c); and the CPU trainer's CLI on the same run at the
    bf16 tolerance."""
    cfg = qwen3_config(tmp_path)
    one = fake_dp(tools_dir, 1, cfg, data, 4, "0:val", 2, 2)
    dp = fake_dp(tools_dir, 2, cfg, data, 4, zero + ":val", 2, 1)
    assert [r["step"] for r in dp] == [1, 2, 3, 4]
    for a, b in zip(one, dp):
        assert a["lr"] == b["lr"] and a["loss_tokens"] == b["loss_tokens"], (a, b)
        assert close(a["loss"], b["loss"], 1e-6) and close(a["grad_norm"], b["grad_norm"], 1e-5), (a, b)
        assert a["val_targets"] == b["val_targets"] > 0, (a, b)
        assert close(a["val_loss"], b["val_loss"], 1e-6), (a, b)
    train(retort_bin, "--init", cfg, "--data", data, "--batch", "2", "--grad-accum", "2", "--steps", "4",
          "--lr", "3e-3", "--warmup", "2", "--weight-decay", "0.1", "--clip", "1.0", "--seed", "5",
          "--out", str(tmp_path / "c"), "--log", str(tmp_path / "c.jsonl"))
    assert_runs_agree(read_log(tmp_path / "c.jsonl"), dp)


@pytest.mark.parametrize("ranks,accum,llama", [(2, 1, False), (2, 2, False), (3, 1, True)])
def test_overlapped_offloaded_update_changes_no_bit(data, tools_dir, tmp_path, ranks, accum, llama):
    """--offload-optimizer at ZeRO-3: the host AdamW of step s runs on its own thread, unit by
    unit in forward order, while step s + 1 starts, each gather waiting for its unit's update
    only. The update is elementwise and its ranges are the same, so every step equals the
    device optimizer's (the stand-ins' AdamW is the same CPU twin) bit for bit — a gather that
    did not wait would read the previous step's weights (or, at step 1, the same ones: hence 6
    steps) and change the losses."""
    cfg = llama_config(tmp_path) if llama else config(tmp_path)
    on_dev = fake_dp(tools_dir, ranks, cfg, data, 6, "3", 2, accum)
    overlapped = fake_dp(tools_dir, ranks, cfg, data, 6, "3:offload", 2, accum)
    assert [r["step"] for r in overlapped] == list(range(1, 7))
    assert [(r["loss"], r["grad_norm"]) for r in overlapped] == [(r["loss"], r["grad_norm"]) for r in on_dev]


@pytest.mark.parametrize("zero", ["1", "3", "3:offload"])
def test_gpu_path_sharded_checkpoint_resumes_on_the_cpu_trainer(retort_bin, data, tools_dir, tmp_path, zero):
    cfg = config(tmp_path)
    common = ["--data", data, "--batch", "2", "--grad-accum", "2", "--lr", "3e-3", "--warmup", "2",
              "--weight-decay", "0.1", "--clip", "1.0", "--seed", "5", "--steps", "6"]
    # 2 ranks, ZeRO-1/3 (offloaded too), 6 steps, the checkpoint after step 3 (master weights and
    # moments gathered from the shards)
    dp = fake_dp(tools_dir, 2, cfg, data, 6, zero, 2, 1, save=[str(tmp_path / "g3"), "3"])
    state = json.load(open(tmp_path / "g3.state" / "trainer_state.json"))
    assert state["step"] == 3 and state["data"]["cursor"] == 12
    train(retort_bin, "--init", cfg, *common, "--out", str(tmp_path / "c"), "--log", str(tmp_path / "c.jsonl"))
    train(retort_bin, "--resume", str(tmp_path / "g3"), *common, "--out", str(tmp_path / "r"),
          "--log", str(tmp_path / "r.jsonl"))
    resumed = read_log(tmp_path / "r.jsonl")
    assert [r["step"] for r in resumed] == [4, 5, 6]
    assert_runs_agree(dp[3:], resumed)                            # continues the stand-in's run
    assert_runs_agree(read_log(tmp_path / "c.jsonl")[3:], resumed)   # and the CPU trainer's
    # and the sharded stand-in resumes its own checkpoint exactly (the shards' parts uploaded
    # from the gathered state; the stand-in's kernels and the MPI sums are deterministic)
    again = fake_dp(tools_dir, 2, cfg, data, 6, zero, 2, 1, save=["--resume", str(tmp_path / "g3")])
    assert [(r["step"], r["loss"], r["grad_norm"]) for r in again] == [(r["step"], r["loss"], r["grad_norm"]) for r in dp[3:]]


# ---- retort train --plan: the GPU trainer's per-rank memory (student/gpu_plan.h) ----

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def al(n, k):
    return (n + k - 1) // k * k


def plan_formula(cfg, ranks, seq, batch, zero, offload, accum=1):
    """docs/student.md "Per-rank memory plan", from the config's shapes alone (written here
    from the formula, independently of student/gpu_plan.c)."""
    D, F, L, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    Hq, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or D // Hq
    tied = cfg.get("tie_word_embeddings", False)
    qwen = cfg["model_type"] == "qwen2"
    qkn = cfg["model_type"] == "qwen3"   # q_norm, k_norm [hd] per layer; q and k before them kept, plus their rstd
    W, qd = (Hq + 2 * Hkv) * hd, Hq * hd
    a16 = lambda n: al(n, 16)
    layer = a16(D) + a16(W * D) + (a16(W) if qwen else 0) + a16(qd * D) + a16(D) + a16(2 * F * D) + a16(F * D)
    layer += 2 * a16(hd) if qkn else 0
    E, H = a16(V * D), a16(D) + (0 if tied else a16(V * D))
    n = E + L * layer + H
    S = a16(-(-n // ranks))
    level = zero if ranks > 1 else 0
    state = n if level == 0 else S
    A = E if tied else max(E, H)
    B = max(layer, H) if tied else layer
    T = seq * batch
    r = lambda b: al(b, 256)
    acts = (L + 1) * r(2 * T * D)
    keep = (r(2 * T * D) + r(2 * T * W) + r(2 * T * qd) + r(4 * T * Hq) + r(4 * T) + r(2 * T * D) + r(2 * T * D)
            + r(4 * T) + r(4 * T * F) + r(2 * T * F))
    Hqk = Hq + Hkv if qkn else 0
    keep += r(2 * T * Hqk * hd) + r(4 * T * Hqk)
    acts += keep  # with --checkpoint-layers: one set
    acts += 3 * r(2 * T * D) + r(4 * T) + 2 * r(2 * T * D) + r(2 * T * W) + r(2 * T * qd) + r(4 * T * F) + r(2 * T * F)
    acts += 2 * r(2 * T * Hqk * hd)   # the per-head norms' output / its gradient, and their input's gradient
    cpu_n = a16(V * D) * (1 if tied else 2) + a16(D) + L * (
        2 * a16(D) + a16(qd * D) + 2 * a16(Hkv * hd * D) + (a16(qd) + 2 * a16(Hkv * hd) if qwen else 0) + a16(D * qd)
        + 3 * a16(D * F) + (2 * a16(hd) if qkn else 0))
    norm_ws = max((T + 15) // 16 * D * 4, (T * Hq + 15) // 16 * hd * 4 if qkn else 0)
    ws = (r(norm_ws) + r(T * Hq * 4) + r(((cpu_n + 65535) // 65536 + 1) * 8) + r(4 * (7 * T + 1))
          + r(4 * (hd // 2)) + r(8 * accum) + r(8))
    chunk = min(T, max(1, 2**30 // (4 * V)))
    padded = S * ranks
    return {
        "parameters": 2 * (S if level == 3 else padded),
        "master_weights": 0 if offload else 4 * state,
        "moments": 0 if offload else 8 * state,
        "gradients": 0 if offload and level >= 2 else 4 * (S if level >= 2 else padded),   # offloaded: on the host
        "gradient_buckets": 4 * (A + B) if level >= 2 else 0,
        "gathered_layers": 2 * (2 * B + A) if level == 3 else 0,
        "activations": acts,
        "loss_chunk": chunk * (4 * D + 6 * V + 8),
        "workspace": ws,
    }


def plan_json(retort_bin, *args):
    p = run([retort_bin, "train", "--plan", "--json", *args])
    assert p.returncode == 0, p.stderr
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, p.stdout
    return json.loads(lines[0])


def test_plan_counts_the_kd_top_k_buffer(retort_bin):
    """--kd-top-k K adds logit distillation's buffer: per micro-batch of T tokens K (int32 id,
    f32 logprob) pairs and one count byte per token, and three f64 sums per micro-batch."""
    path = os.path.join(ROOT, "configs", "models", "qwen2.5-1.5b.json")
    base = ["--init", path, "--seq", "4096", "--batch", "2", "--grad-accum", "4", "--zero", "0"]
    plain = plan_json(retort_bin, *base)
    kd = plan_json(retort_bin, *base, "--kd-top-k", "20")
    T = 4096 * 2
    want = T * 20 * 8 + T + 4 * 3 * 8
    assert "kd_topk" not in plain["per_rank_bytes"]
    assert kd["per_rank_bytes"]["kd_topk"] == want
    assert kd["total_bytes"] == plain["total_bytes"] + want
    bad = run([retort_bin, "train", "--plan", *base, "--kd-top-k", "21"])
    assert bad.returncode == 2 and "--kd-top-k" in bad.stderr.splitlines()[0], bad.stderr


@pytest.mark.parametrize("zero,offload", [(2, False), (3, False), (3, True)])
def test_plan_qwen25_7b_on_8_ranks_follows_the_formula(retort_bin, zero, offload):
    path = os.path.join(ROOT, "configs", "models", "qwen2.5-7b.json")
    cfg = json.load(open(path))
    extra = ["--offload-optimizer"] if offload else []
    got = plan_json(retort_bin, "--init", path, "--ranks", "8", "--seq", "32768", "--batch", "1", "--zero", str(zero),
                    "--checkpoint-layers", *extra)
    want = plan_formula(cfg, 8, 32768, 1, zero, offload)
    assert got["per_rank_bytes"] == want
    assert got["total_bytes"] == sum(want.values())
    assert got["gpu_memory_bytes"] == 80 * 2**30 and got["fits"] is (got["total_bytes"] <= 80 * 2**30)
    # the headline terms, by hand: 7,615,616,512 parameters (the GPU layout has no gaps here:
    # every group is a multiple of 16), S = 951,952,064 per rank
    assert want["master_weights"] in (0, 4 * 951952064)
    if zero == 3:
        assert got["per_rank_bytes"]["parameters"] == 2 * 951952064
    else:
        assert got["per_rank_bytes"]["parameters"] == 2 * 8 * 951952064


@pytest.mark.parametrize("model,ranks,zero", [("qwen3-0.6b", 1, 0), ("qwen3-0.6b", 2, 3), ("qwen3-8b", 8, 3)])
def test_plan_qwen3_follows_the_formula_and_counts_transformers_parameters(retort_bin, model, ranks, zero):
    """Qwen3 on the GPU trainer's plan: q_norm / k_norm in every layer, q and k before their norm
    and its rstd kept, the norm scratch over T·heads rows of head_dim (0.6B: head_dim 128 with
    hidden 1024 and 16 heads, so q is twice the hidden size). The layout has no gaps here, so its
    length is the model's parameter count, which transformers gives (meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    path = os.path.join(ROOT, "configs", "models", f"{model}.json")
    cfg = json.load(open(path))
    got = plan_json(retort_bin, "--init", path, "--ranks", str(ranks), "--seq", "8192", "--batch", "1", "--zero",
                    str(zero), "--checkpoint-layers")
    want = plan_formula(cfg, ranks, 8192, 1, zero, False)
    assert got["per_rank_bytes"] == want
    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg))
    n = sum(p.numel() for p in m.parameters())
    S = al(-(-n // ranks), 16)
    assert got["per_rank_bytes"]["parameters"] == 2 * (S if zero == 3 else S * ranks)


def test_plan_says_when_it_does_not_fit_and_exits_0(retort_bin):
    path = os.path.join(ROOT, "configs", "models", "llama-3.3-70b.json")
    got = plan_json(retort_bin, "--init", path, "--ranks", "8", "--seq", "32768", "--zero", "2", "--checkpoint-layers")
    assert got["fits"] is False and got["total_bytes"] > 80 * 2**30
    got = plan_json(retort_bin, "--init", path, "--ranks", "8", "--seq", "32768", "--zero", "3", "--checkpoint-layers",
                    "--gpu-memory", "1000")
    assert got["fits"] is True and got["gpu_memory_bytes"] == 1000 * 2**30
    p = run([retort_bin, "train", "--plan", "--init", path, "--ranks", "8", "--seq", "32768", "--zero", "2"])
    assert p.returncode == 0 and "does not fit" in p.stdout, p.stdout + p.stderr


@pytest.mark.parametrize("args", [["--zero", "4"], ["--ranks", "0"], ["--gpu-memory", "x"], ["--data", "d"], []])
def test_plan_usage_errors_exit_2(retort_bin, args):
    base = ["--init", os.path.join(ROOT, "configs", "models", "qwen2.5-7b.json")] + ([] if not args else ["--seq", "64"])
    p = run([retort_bin, "train", "--plan", *base, *args])
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stdout == ""


@pytest.mark.parametrize("ranks,zero", [(1, "0"), (2, "2"), (2, "3"), (2, "3:offload"), (2, "1:ckpt"), (2, "1:offload")])
def test_stand_in_peak_device_bytes_equal_the_plan(retort_bin, data, tools_dir, tmp_path, ranks, zero):
    """The fake-CUDA trainer's measured peak (rank 0) against --plan for the same run, 5%."""
    cfg = config(tmp_path)
    rows = fake_dp(tools_dir, ranks, cfg, data, 2, zero, 2, 1)
    level = zero.split(":")[0]
    extra = (["--offload-optimizer"] if "offload" in zero else []) + (["--checkpoint-layers"] if "ckpt" in zero else [])
    got = plan_json(retort_bin, "--init", cfg, "--ranks", str(ranks), "--seq", "32", "--batch", "2", "--zero", level,
                    *extra)
    peak = max(r["peak_device_bytes"] for r in rows)
    assert abs(peak - got["total_bytes"]) <= 0.05 * got["total_bytes"], (peak, got)


@pytest.mark.parametrize("ranks,zero", [(2, "2"), (2, "3"), (4, "3"), (3, "3:offload")])
def test_untied_llama_on_stand_ins_matches_one_rank_and_the_plan(retort_bin, data, tools_dir, tmp_path, ranks, zero):
    """The untied head's unit (final norm + lm_head, its own bucket and gather slot) at 2–4
    ranks (3: shards that cut the units elsewhere) against one rank, and the measured peak
    against --plan."""
    cfg = llama_config(tmp_path)
    one = fake_dp(tools_dir, 1, cfg, data, 3, 0, 2, ranks)
    dp = fake_dp(tools_dir, ranks, cfg, data, 3, zero, 2, 1)
    for a, b in zip(one, dp):
        assert a["loss_tokens"] == b["loss_tokens"], (a, b)
        assert close(a["loss"], b["loss"], 1e-6) and close(a["grad_norm"], b["grad_norm"], 1e-5), (a, b)
    extra = ["--offload-optimizer"] if "offload" in zero else []
    got = plan_json(retort_bin, "--init", cfg, "--ranks", str(ranks), "--seq", "32", "--batch", "2", "--zero",
                    zero.split(":")[0], *extra)
    peak = max(r["peak_device_bytes"] for r in dp)
    assert abs(peak - got["total_bytes"]) <= 0.05 * got["total_bytes"], (peak, got)


@pytest.mark.parametrize("cfg,needle", [("tiny-llama.json", "head_dim"), ("deepseek-r1.json", "deepseek_v3"),
                                        ("absent.json", "absent.json")])
def test_plan_of_a_config_the_trainer_cannot_take_is_one_line(retort_bin, cfg, needle):
    p = run([retort_bin, "train", "--plan", "--json", "--init", os.path.join(ROOT, "configs", "models", cfg),
             "--seq", "64"])
    assert_one_error_line(p, "train --plan", needle)
