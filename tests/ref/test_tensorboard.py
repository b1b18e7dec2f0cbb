"""`retort train --tensorboard DIR --val-data SHARDS --val-every N`: tensorboard's own
EventAccumulator reads back every scalar exactly (the values of the JSONL log, as float32),
each TFRecord's CRCs agree with tensorboard's masked CRC-32C, and the validation loss equals
the mean cross-entropy transformers computes on the validation shards with the saved model."""
import json
import os
import struct
import subprocess

import pytest
from conftest import run
from test_train import QWEN, tool, write_config
from test_train_dp import read_shard


@pytest.fixture(scope="module")
def run_dir(retort_bin, tools_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("tb")
    mk = tool(tools_dir, "student_mkshard")
    subprocess.run([mk, str(d / "train.bin"), "32", "16", "256", "1"], check=True)
    subprocess.run([mk, str(d / "val.bin"), "32", "5", "256", "9"], check=True)   # 5: not a multiple of the batch
    cfg = write_config(d, QWEN, "qwen.json")
    p = run([retort_bin, "train", "--threads", "2", "--init", cfg, "--data", str(d / "train.bin"), "--batch", "2",
             "--steps", "6", "--lr", "3e-3", "--dtype", "f32", "--out", str(d / "o"), "--log", str(d / "l.jsonl"),
             "--tensorboard", str(d / "tb"), "--val-data", str(d / "val.bin"), "--val-every", "4"], timeout=600)
    assert p.returncode == 0, p.stderr
    assert "step 4: validation loss" in p.stderr and "step 6: validation loss" in p.stderr, p.stderr
    return d


def test_event_accumulator_reads_the_scalars_exactly(run_dir):
    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    log = [json.loads(line) for line in open(run_dir / "l.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in log if "val_loss" in r] == [4, 6]
    ea = EventAccumulator(str(run_dir / "tb"))
    ea.Reload()
    assert sorted(ea.Tags()["scalars"]) == ["train/grad_norm", "train/loss", "train/lr", "train/tokens_per_s", "val/loss"]
    for tag, key in (("train/loss", "loss"), ("train/lr", "lr"), ("train/grad_norm", "grad_norm"),
                     ("train/tokens_per_s", "tokens_per_s"), ("val/loss", "val_loss")):
        got = [(e.step, e.value) for e in ea.Scalars(tag)]
        want = [(r["step"], float(np.float32(r[key]))) for r in log if key in r]
        assert got == want, (tag, got, want)


def test_records_carry_tensorboards_crc32c(run_dir):
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    (name,) = os.listdir(run_dir / "tb")
    assert name.startswith("events.out.tfevents.")
    b = open(run_dir / "tb" / name, "rb").read()
    off, n = 0, 0
    while off < len(b):
        (length,) = struct.unpack_from("<Q", b, off)
        (hcrc,) = struct.unpack_from("<I", b, off + 8)
        assert hcrc == masked_crc32c(b[off:off + 8])
        data = b[off + 12:off + 12 + length]
        (dcrc,) = struct.unpack_from("<I", b, off + 12 + length)
        assert dcrc == masked_crc32c(data)
        off += 16 + length
        n += 1
    assert off == len(b) and n == 1 + 6 * 4 + 2   # the version event, 4 scalars a step, 2 val/loss


def reference_loss(model_dir, shard, seqs=None):
    """Mean cross-entropy (and target count) of transformers on the documents of a shard's
    sequences (all, or those listed), each document on its own."""
    import torch
    from transformers import AutoModelForCausalLM
    tok, mask, docs = read_shard(shard)
    m = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float64).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for s, a, n in docs:
            if seqs is not None and s not in seqs:
                continue
            ids = torch.tensor(tok[s, a:a + n])[None]
            lp = torch.log_softmax(m(input_ids=ids, position_ids=torch.arange(n)[None]).logits[0], -1)
            for t in range(n - 1):
                if mask[s, a + t + 1]:
                    total -= float(lp[t, tok[s, a + t + 1]])
                    count += 1
    return total / count, count


def test_validation_loss_equals_transformers(run_dir):
    want, count = reference_loss(run_dir / "o" / "step-6", run_dir / "val.bin")
    last = [json.loads(line) for line in open(run_dir / "l.jsonl")][-1]
    assert last["val_targets"] == count
    assert abs(last["val_loss"] - want) <= 1e-5 * abs(want), (last["val_loss"], want)


def test_val_frac_holds_out_the_last_sequences(retort_bin, run_dir, tmp_path):
    """--val-frac 0.25 of 16 sequences: the last 4 (file order) are the validation split."""
    p = run([retort_bin, "train", "--threads", "2", "--init", str(run_dir / "qwen.json"), "--data",
             str(run_dir / "train.bin"), "--batch", "4", "--epochs", "1", "--lr", "3e-3", "--dtype", "f32",
             "--val-frac", "0.25", "--out", str(tmp_path / "o"), "--log", str(tmp_path / "l.jsonl")], timeout=600)
    assert p.returncode == 0, p.stderr
    log = [json.loads(line) for line in open(tmp_path / "l.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3]   # one epoch of the 12 training sequences, 4 a step
    want, count = reference_loss(tmp_path / "o" / "step-3", run_dir / "train.bin", seqs={12, 13, 14, 15})
    assert log[-1]["val_targets"] == count
    assert abs(log[-1]["val_loss"] - want) <= 1e-5 * abs(want), (log[-1]["val_loss"], want)


def test_zero3_at_2_ranks_gives_the_one_rank_validation_loss(retort_bin, run_dir, tmp_path):
    """--zero 3 under mpirun: the validation pass is collective (every rank opens the validation
    shards and gathers each unit for each batch, student/train.h tr_eval); the same global batch
    as the 1-rank run above, so every step's loss (1e-6, test_train_zero3.py's bound) and the
    validation loss at steps 4 and 6 (1e-6) agree, and the TensorBoard file has val/loss."""
    from test_train_dp import mpi
    p = mpi(2, [retort_bin, "train", "--threads", "1", "--init", str(run_dir / "qwen.json"), "--data",
                str(run_dir / "train.bin"), "--batch", "1", "--steps", "6", "--lr", "3e-3", "--dtype", "f32", "--zero", "3",
                "--out", str(tmp_path / "o"), "--log", str(tmp_path / "l.jsonl"), "--tensorboard", str(tmp_path / "tb"),
                "--val-data", str(run_dir / "val.bin"), "--val-every", "4"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stderr.count("step 4: validation loss") == 1, p.stderr   # printed by rank 0 alone
    one = [json.loads(line) for line in open(run_dir / "l.jsonl")]
    two = [json.loads(line) for line in open(tmp_path / "l.jsonl")]
    assert [r["step"] for r in two if "val_loss" in r] == [4, 6]
    for a, b in zip(one, two):
        assert abs(a["loss"] - b["loss"]) <= 1e-6 * a["loss"], (a, b)
        if "val_loss" in a:
            assert a["val_targets"] == b["val_targets"] and abs(a["val_loss"] - b["val_loss"]) <= 1e-6 * a["val_loss"], (a, b)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(tmp_path / "tb"))
    ea.Reload()
    assert [e.step for e in ea.Scalars("val/loss")] == [4, 6]


def test_val_options_misused_are_usage_errors(retort_bin, run_dir):
    base = ["train", "--init", str(run_dir / "qwen.json"), "--data", str(run_dir / "train.bin"), "--steps", "1",
            "--lr", "1e-3", "--out", str(run_dir / "x")]
    p = run([retort_bin, *base, "--val-every", "2"])
    assert p.returncode == 2 and "--val-every needs --val-data" in p.stderr
    p = run([retort_bin, *base, "--val-frac", "0.5", "--val-data", str(run_dir / "val.bin")])
    assert p.returncode == 2 and "exclude each other" in p.stderr
    p = run([retort_bin, *base, "--val-frac", "1.5"])
    assert p.returncode == 2 and "--val-frac" in p.stderr
    p = run([retort_bin, *base, "--val-data", str(run_dir / "missing.bin")])
    assert p.returncode == 1 and len([l for l in p.stderr.splitlines() if l.startswith("retort")]) == 1, p.stderr


def test_report_plots_the_validation_loss_beside_the_training_loss(retort_bin, run_dir, tmp_path):
    import re
    p = run([retort_bin, "db", "init", str(tmp_path / "run.db")])
    assert p.returncode == 0, p.stderr
    p = run([retort_bin, "report", "--db", str(tmp_path / "run.db"), "--out", str(tmp_path / "r.html"),
             "--train-log", str(run_dir / "l.jsonl")])
    assert p.returncode == 0, p.stderr
    html = (tmp_path / "r.html").read_text()
    loss = html[html.index("<h3>Loss</h3>"):html.index("<h3>Learning rate</h3>")]
    assert "training and validation loss" in loss and "l.jsonl validation" in loss
    lines = re.findall(r'<polyline[^>]*points="([^"]*)"', loss)
    assert [len(pts.split()) for pts in lines] == [6, 2]   # every step; the two validation points
