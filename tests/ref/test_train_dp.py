"""Data-parallel `retort train` under mpirun (MPI backend of core/comm, 1–4 ranks on this
machine; ZeRO-3 in test_train_zero3.py): ZeRO-0/1/2 at 2 and 4 ranks against the 1-rank run of the same global batch, step
by step and in the final weights and AdamW moments; a DP loss curve against PyTorch's
(transformers Qwen2 + torch.optim.AdamW, float64) for the same global batch; exact resume of
a DP checkpoint and resume at another rank count; the collectives the trainer uses, in place;
bad combinations → one error line.

Tolerances. A P-rank step differs from the 1-rank step only in the order of f32 additions:
each rank's backward sums over its own sequences' rows, the ranks' gradients are then added in
rank order (core/comm), where one rank adds over all rows at once; the loss sums and the
squared norm are f64. One step's gradient differs by a few f32 ulps of the magnitudes summed
(relative ~1e-7), the loss of the step after by as little (measured ≤ 1e-8 relative over 10
steps), and AdamW turns that into a weight difference of the same relative size of the
update lr·m̂/(√v̂+ε) — except where the gradient is itself rounding noise: the k_proj bias
(softmax is invariant to a per-query shift of the scores, so its gradient is exactly zero
mathematically and AdamW's normalized step on the residue can take either sign in any
implementation) is left out of the weight comparison. Bounds: loss 1e-6 relative, gradient
norm 1e-5 relative, weights 0.02·lr (2% of the most one AdamW step moves a weight), moments
1e-4 of each tensor's largest magnitude; measured worst: see docs/student.md. A wrong shard, a
missed or doubled sequence or a wrong scale moves them by far more (checked: a different
global batch exceeds every bound many times)."""
import json
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest
from conftest import run

QWEN = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 256, "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": True,
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu"}
LOSS_RTOL, NORM_RTOL, W_LR, M_RTOL = 1e-6, 1e-5, 0.02, 1e-4


def tool(tools_dir, name):
    p = os.path.join(tools_dir, name)
    if not os.access(p, os.X_OK):
        pytest.fail(f"test tool {p} not built (make tests-build)")
    return p


def mpi(ranks, args, timeout=600):
    """Run args on `ranks` MPI ranks (1: plainly, no mpirun)."""
    if ranks == 1:
        return run(args, timeout=timeout)
    mpirun = shutil.which("mpirun")
    if not mpirun:
        pytest.skip("skipped: mpirun not installed (make deps installs openmpi-bin)")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if "ASAN_OPTIONS" in env:      # Open MPI's own start-up allocations (see test_comm.py)
        env["ASAN_OPTIONS"] += ":detect_leaks=0"
    return subprocess.run([mpirun, "--oversubscribe", "-np", str(ranks), "--mca", "btl", "self,vader", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def data(tmp_path_factory, tools_dir):
    d = tmp_path_factory.mktemp("shards")
    mk = tool(tools_dir, "student_mkshard")
    for i, n in enumerate((24, 16)):
        subprocess.run([mk, str(d / f"shard-{i:05d}.bin"), "32", str(n), "256", str(i + 1)], check=True)
    return str(d)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "qwen.json"
    p.write_text(json.dumps(QWEN))
    return str(p)


def train(retort_bin, ranks, *args, timeout=600):
    p = mpi(ranks, [retort_bin, "train", "--threads", "1", *args], timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def read_log(path):
    return [json.loads(line) for line in open(path)]


def load(path):
    from safetensors.numpy import load_file
    return load_file(str(path))


# Global batch 8 sequences a step (40 in the data: 10 steps cross an epoch boundary twice).
COMMON = ["--grad-accum", "2", "--steps", "10", "--lr", "3e-3", "--warmup", "2", "--weight-decay", "0.1",
          "--clip", "0.5", "--seed", "7", "--dtype", "f32"]


@pytest.fixture(scope="module")
def one_rank(retort_bin, data, cfg, tmp_path_factory):
    d = tmp_path_factory.mktemp("one")
    train(retort_bin, 1, "--init", cfg, "--data", data, "--batch", "4", *COMMON, "--out", str(d / "o"),
          "--log", str(d / "l.jsonl"))
    return read_log(d / "l.jsonl"), d / "o" / "step-10"


def differences(ref_log, ref_ck, log, ck, lr=3e-3):
    """Worst relative loss and norm differences per step; worst weight difference in units of
    lr (model.safetensors, k_proj biases aside); worst moment difference relative to each
    tensor's largest magnitude."""
    assert [r["step"] for r in log] == [r["step"] for r in ref_log]
    out = {"loss": 0.0, "norm": 0.0, "weights": 0.0, "moments": 0.0}
    for x, y in zip(ref_log, log):
        assert x["tokens"] == y["tokens"] and x["lr"] == y["lr"], (x, y)
        out["loss"] = max(out["loss"], abs(x["loss"] - y["loss"]) / abs(x["loss"]))
        out["norm"] = max(out["norm"], abs(x["grad_norm"] - y["grad_norm"]) / x["grad_norm"])
    a, b = load(ref_ck / "model.safetensors"), load(ck / "model.safetensors")
    assert a.keys() == b.keys()
    out["weights"] = max(float(np.abs(a[k] - b[k]).max()) / lr for k in a if "k_proj.bias" not in k)
    a, b = load(ref_ck.with_name(ref_ck.name + ".state") / "optimizer.safetensors"), load(ck.with_name(ck.name + ".state") / "optimizer.safetensors")
    assert a.keys() == b.keys()
    out["moments"] = max(float(np.abs(a[k] - b[k]).max() / (np.abs(a[k]).max() + 1e-30)) for k in a)
    return out


def assert_close_runs(ref_log, ref_ck, log, ck):
    d = differences(ref_log, ref_ck, log, ck)
    assert d["loss"] <= LOSS_RTOL and d["norm"] <= NORM_RTOL, d
    assert d["weights"] <= W_LR and d["moments"] <= M_RTOL, d


@pytest.mark.parametrize("ranks,zero", [(2, 0), (2, 1), (2, 2), (4, 1), (4, 2)])
def test_ranks_give_the_one_rank_losses_and_weights(retort_bin, data, cfg, one_rank, tmp_path, ranks, zero):
    train(retort_bin, ranks, "--init", cfg, "--data", data, "--batch", str(4 // ranks), *COMMON, "--zero", str(zero),
          "--out", str(tmp_path / "o"), "--log", str(tmp_path / "l.jsonl"))
    assert_close_runs(*one_rank, read_log(tmp_path / "l.jsonl"), tmp_path / "o" / "step-10")


def test_a_wrong_split_would_be_caught(retort_bin, data, cfg, one_rank, tmp_path):
    """The bounds are tight enough to see a different global batch (the test can fail)."""
    train(retort_bin, 2, "--init", cfg, "--data", data, "--batch", "1", *COMMON, "--out", str(tmp_path / "o"),
          "--log", str(tmp_path / "l.jsonl"))
    ref_log, ref_ck = one_rank
    log = [dict(r, tokens=x["tokens"]) for r, x in zip(read_log(tmp_path / "l.jsonl"), ref_log)]
    d = differences(ref_log, ref_ck, log, tmp_path / "o" / "step-10")
    assert d["loss"] > 100 * LOSS_RTOL and d["weights"] > 10 * W_LR and d["moments"] > 10 * M_RTOL, d


def test_only_rank_0_prints_and_writes(retort_bin, data, cfg, tmp_path):
    p = train(retort_bin, 4, "--init", cfg, "--data", data, "--batch", "1", "--steps", "3", "--lr", "1e-3",
              "--out", str(tmp_path / "o"), "--log", str(tmp_path / "l.jsonl"))
    assert p.stderr.count("step 3/3") == 1, p.stderr
    rows = read_log(tmp_path / "l.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["tokens"] == 4 * 32 for r in rows)
    assert sorted(os.listdir(tmp_path / "o")) == ["step-3", "step-3.state"]


def test_dp_resume_continues_bit_exactly_and_at_another_rank_count(retort_bin, data, cfg, tmp_path):
    common = ["--data", data, "--batch", "1", *COMMON]
    train(retort_bin, 4, "--init", cfg, *common, "--zero", "2", "--out", str(tmp_path / "a"), "--save-every", "5",
          "--log", str(tmp_path / "a.jsonl"))
    ck = str(tmp_path / "a" / "step-5")
    train(retort_bin, 4, "--resume", ck, *common, "--zero", "2", "--out", str(tmp_path / "b"),
          "--log", str(tmp_path / "b.jsonl"))
    a, b = read_log(tmp_path / "a.jsonl"), read_log(tmp_path / "b.jsonl")
    assert [r["step"] for r in b] == list(range(6, 11))
    for x, y in zip(a[5:], b):
        assert (x["loss"], x["grad_norm"], x["lr"]) == (y["loss"], y["grad_norm"], y["lr"]), (x, y)
    for f in ("step-10/model.safetensors", "step-10.state/optimizer.safetensors"):
        wa, wb = load(tmp_path / "a" / f), load(tmp_path / "b" / f)
        assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa), f
    # the checkpoint holds the whole optimizer state: 2 ranks (ZeRO-1, batch 2) continue it
    train(retort_bin, 2, "--resume", ck, "--data", data, "--batch", "2", *COMMON, "--zero", "1",
          "--out", str(tmp_path / "c"), "--log", str(tmp_path / "c.jsonl"))
    c = read_log(tmp_path / "c.jsonl")
    assert [r["step"] for r in c] == list(range(6, 11))
    assert_close_runs(a[5:], tmp_path / "a" / "step-10", c, tmp_path / "c" / "step-10")


def test_dp_resume_from_a_bf16_checkpoint_uses_the_f32_master_weights(retort_bin, data, cfg, tmp_path):
    common = ["--data", data, "--batch", "2", *COMMON, "--dtype", "bf16", "--zero", "1"]
    train(retort_bin, 2, "--init", cfg, *common, "--out", str(tmp_path / "a"), "--save-every", "4",
          "--log", str(tmp_path / "a.jsonl"))
    train(retort_bin, 2, "--resume", str(tmp_path / "a" / "step-4"), *common, "--out", str(tmp_path / "b"),
          "--log", str(tmp_path / "b.jsonl"))
    a, b = read_log(tmp_path / "a.jsonl"), read_log(tmp_path / "b.jsonl")
    assert [(r["loss"], r["grad_norm"]) for r in a[4:]] == [(r["loss"], r["grad_norm"]) for r in b]
    wa, wb = load(tmp_path / "a" / "step-10.state" / "optimizer.safetensors"), load(tmp_path / "b" / "step-10.state" / "optimizer.safetensors")
    assert any(k.startswith("master.") for k in wa)
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


def read_shard(path):
    """A packed shard (docs/formats.md): tokens [S, N], mask [S, N], documents (seq, start, len)."""
    b = open(path, "rb").read()
    assert b[:8] == b"RTSHARD\0"
    _, dt, N, V, S, D = struct.unpack_from("<IIII QQ", b, 8)
    tok = np.frombuffer(b, {2: np.uint16, 4: np.uint32}[dt], S * N, 64).reshape(S, N).astype(np.int64)
    off = 64 + S * N * dt
    mask = np.frombuffer(b, np.uint8, S * N, off).reshape(S, N)
    off = (off + S * N + 7) // 8 * 8
    docs = [struct.unpack_from("<QIII", b, off + 32 * i)[1:] for i in range(D)]
    return tok, mask, docs


@pytest.mark.parametrize("zero", [2, 3])
def test_dp_loss_curve_matches_pytorch(retort_bin, tools_dir, tmp_path, zero):
    """4 ranks × batch 2 = every sequence of an 8-sequence shard each step, so the data order
    cannot matter; PyTorch runs the same model (transformers Qwen2, float64, per document) and
    AdamW (decay on matrices, clipping) from the same initial weights. ZeRO-2, and ZeRO-3
    (parameters sharded too, gathered per layer: tests/ref/test_train_zero3.py)."""
    import torch

    # Other test modules switch autograd off at import (torch.set_grad_enabled(False)), and
    # pytest imports them all before running anything: turn it on for this test only.
    with torch.enable_grad():
        _dp_loss_curve_vs_pytorch(retort_bin, tools_dir, tmp_path, zero)


def _dp_loss_curve_vs_pytorch(retort_bin, tools_dir, tmp_path, zero=2):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    d = tmp_path / "shards"
    d.mkdir()
    subprocess.run([tool(tools_dir, "student_mkshard"), str(d / "shard-00000.bin"), "32", "8", "256", "5"], check=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(Qwen2Config(**{k: v for k, v in QWEN.items() if k != "architectures"}),
                                             attn_implementation="eager").to(torch.float64)
    model.save_pretrained(str(tmp_path / "init"), safe_serialization=True)   # read by retort as F64
    steps, lr, wd, clip = 6, 2e-3, 0.1, 0.5
    train(retort_bin, 4, "--model", str(tmp_path / "init"), "--data", str(d), "--batch", "2", "--steps", str(steps),
          "--lr", str(lr), "--schedule", "constant", "--weight-decay", str(wd), "--clip", str(clip), "--zero", str(zero),
          "--out", str(tmp_path / "o"), "--log", str(tmp_path / "l.jsonl"))
    ours = read_log(tmp_path / "l.jsonl")

    tok, mask, docs = read_shard(d / "shard-00000.bin")
    decay = [p for n, p in model.named_parameters() if p.ndim == 2]
    rest = [p for n, p in model.named_parameters() if p.ndim != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}], lr=lr,
                            betas=(0.9, 0.95), eps=1e-8, foreach=False)
    ref = []
    for _ in range(steps):
        opt.zero_grad()
        total, count = 0.0, 0
        for s, a, n in docs:
            ids = torch.from_numpy(tok[s, a:a + n])[None]
            keep = torch.from_numpy(mask[s, a + 1:a + n].astype(bool))
            if not keep.any():
                continue
            logits = model(input_ids=ids, position_ids=torch.arange(n)[None]).logits[0, :-1]
            ce = torch.nn.functional.cross_entropy(logits[keep], ids[0, 1:][keep], reduction="sum")
            total = total + ce
            count += int(keep.sum())
        loss = total / count
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
        opt.step()
        ref.append((float(loss.detach()), norm))
    print(f"ZeRO-{zero}: worst relative loss / norm difference vs torch:",
          max(abs(r["loss"] - l) / l for (l, _), r in zip(ref, ours)),
          max(abs(r["grad_norm"] - n) / n for (_, n), r in zip(ref, ours)))
    for (l_ref, n_ref), r in zip(ref, ours):
        # retort is f32 throughout, torch f64: f32 rounding of sums over ~10^4 terms, a few
        # 1e-8 relative measured (3e-8 loss, 2e-8 norm over 6 steps)
        assert abs(r["loss"] - l_ref) <= 1e-6 * l_ref, (r, l_ref)
        assert abs(r["grad_norm"] - n_ref) <= 1e-5 * n_ref, (r, n_ref)


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_collectives_in_place_and_gather(tools_dir, ranks):
    p = mpi(ranks, [tool(tools_dir, "comm_zero_check")], timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [l for l in p.stdout.splitlines() if l.startswith("rank ")]
    assert len(lines) == ranks and all(", 0 failed" in l for l in lines), p.stdout


def test_nccl_backend_matches_mpi_on_gpus(tools_dir):
    """Needs a CUDA build and GPUs (one rank per GPU); skipped otherwise."""
    exe = tool(tools_dir, "comm_nccl_check")
    p = run([exe], timeout=300)
    if p.returncode == 0 and p.stdout.startswith("skipped:"):
        pytest.skip(p.stdout.strip())
    assert p.returncode == 0, p.stdout + p.stderr
    smi = shutil.which("nvidia-smi")
    gpus = subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.count("GPU ") if smi else 1
    for ranks in sorted({1, max(1, min(2, gpus)), max(1, gpus)}):
        p = mpi(ranks, [exe], timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        lines = [l for l in p.stdout.splitlines() if l.startswith("rank ")]
        assert len(lines) == ranks and all(", 0 failed" in l for l in lines), p.stdout


def retort_lines(p):
    return [l for l in p.stderr.splitlines() if l.startswith("retort")]


def test_more_ranks_than_sequences_fails_with_one_line(retort_bin, data, cfg, tmp_path):
    # 4 ranks × batch 8 × accum 2 = 64 sequences a step; the data has 40
    p = mpi(4, [retort_bin, "train", "--threads", "1", "--init", cfg, "--data", data, "--batch", "8",
                "--grad-accum", "2", "--steps", "1", "--lr", "1e-3", "--out", str(tmp_path / "o")])
    assert p.returncode != 0
    lines = retort_lines(p)
    assert len(lines) == 1, p.stderr
    assert "64 sequences" in lines[0] and "4 ranks" in lines[0] and "40 sequences" in lines[0], lines[0]
    assert not os.path.exists(tmp_path / "o" / "step-1")


def test_bad_data_under_mpirun_fails_with_one_line(retort_bin, cfg, tmp_path):
    p = mpi(2, [retort_bin, "train", "--threads", "1", "--init", cfg, "--data", str(tmp_path), "--batch", "1",
                "--steps", "1", "--lr", "1e-3", "--out", str(tmp_path / "o")])
    assert p.returncode != 0
    lines = retort_lines(p)
    assert len(lines) == 1 and "no shard files" in lines[0], p.stderr


def test_rank_0_alone_failing_at_setup_stops_every_rank(retort_bin, data, cfg, tmp_path):
    # only rank 0 opens the log; the others must not wait for it in a collective
    p = mpi(2, [retort_bin, "train", "--threads", "1", "--init", cfg, "--data", data, "--batch", "1", "--steps", "1",
                "--lr", "1e-3", "--out", str(tmp_path / "o"), "--log", str(tmp_path / "no" / "such" / "l.jsonl")],
            timeout=120)
    assert p.returncode != 0
    lines = retort_lines(p)
    assert len(lines) == 1 and "cannot open log" in lines[0], p.stderr


def test_epochs_count_the_sequences_of_all_ranks(retort_bin, data, cfg, tmp_path):
    train(retort_bin, 4, "--init", cfg, "--data", data, "--batch", "1", "--grad-accum", "2", "--epochs", "1",
          "--lr", "1e-3", "--out", str(tmp_path / "o"), "--log", str(tmp_path / "l.jsonl"))
    assert [r["step"] for r in read_log(tmp_path / "l.jsonl")] == [1, 2, 3, 4, 5]   # 40 / (1 × 2 × 4)


@pytest.mark.parametrize("value,needle", [("4", "--zero"), ("5", "--zero"), ("x", "--zero")])
def test_bad_zero_level_is_a_usage_error(retort_bin, data, cfg, value, needle):
    p = run([retort_bin, "train", "--init", cfg, "--data", data, "--batch", "1", "--steps", "1", "--lr", "1e-3",
             "--out", "/tmp/x", "--zero", value])
    assert p.returncode == 2 and needle in p.stderr, p.stderr
    p = mpi(2, [retort_bin, "train", "--init", cfg, "--data", data, "--batch", "1", "--steps", "1", "--lr", "1e-3",
                "--out", "/tmp/x", "--zero", value])
    assert p.returncode == 2 and len(retort_lines(p)) == 1 and needle in p.stderr, p.stderr
