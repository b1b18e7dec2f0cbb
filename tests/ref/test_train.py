"""`retort train` end to end: exact resume, export that transformers loads, the loss falling,
and CLI errors. Shards come from tests/tools/student_mkshard (core/shard's writer);
logits of a checkpoint from tests/tools/student_forward (student/model)."""
import json
import os
import shutil
import subprocess

import pytest
from conftest import assert_one_error_line, run

QWEN = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 256, "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": True,
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu"}
LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 256, "hidden_size": 64,
         "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "head_dim": 16, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
         "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 64},
         "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "bos_token_id": 1,
         "eos_token_id": 2, "hidden_act": "silu"}


def tool(tools_dir, name):
    p = os.path.join(tools_dir, name)
    if not os.access(p, os.X_OK):
        pytest.fail(f"test tool {p} not built (make tests-build)")
    return p


@pytest.fixture(scope="module")
def data(tmp_path_factory, tools_dir):
    d = tmp_path_factory.mktemp("shards")
    mk = tool(tools_dir, "student_mkshard")
    for i, n in enumerate((24, 16)):
        subprocess.run([mk, str(d / f"shard-{i:05d}.bin"), "32", str(n), "256", str(i + 1)], check=True)
    return str(d)


def write_config(tmp_path, cfg, name):
    p = tmp_path / name
    p.write_text(json.dumps(cfg))
    return str(p)


def train(retort_bin, *args):
    p = run([retort_bin, "train", "--threads", "2", *args], timeout=600)
    assert p.returncode == 0, p.stderr
    return p


def read_log(path):
    return [json.loads(line) for line in open(path)]


def test_resume_continues_bit_exactly(retort_bin, data, tmp_path):
    cfg = write_config(tmp_path, QWEN, "qwen.json")
    common = ["--data", data, "--batch", "2", "--grad-accum", "2", "--steps", "40", "--lr", "3e-3", "--warmup", "5",
              "--weight-decay", "0.1", "--clip", "0.5", "--seed", "7"]
    train(retort_bin, "--init", cfg, *common, "--out", str(tmp_path / "a"), "--save-every", "20",
          "--log", str(tmp_path / "a.jsonl"))
    train(retort_bin, "--resume", str(tmp_path / "a" / "step-20"), *common, "--out", str(tmp_path / "b"),
          "--log", str(tmp_path / "b.jsonl"))
    a, b = read_log(tmp_path / "a.jsonl"), read_log(tmp_path / "b.jsonl")
    assert [r["step"] for r in a] == list(range(1, 41))
    assert [r["step"] for r in b] == list(range(21, 41))
    for x, y in zip(a[20:], b):
        assert (x["loss"], x["grad_norm"], x["lr"]) == (y["loss"], y["grad_norm"], y["lr"]), (x, y)
    # the final weights agree bit for bit too
    from safetensors.numpy import load_file
    wa = load_file(str(tmp_path / "a" / "step-40.state" / "optimizer.safetensors"))
    wb = load_file(str(tmp_path / "b" / "step-40.state" / "optimizer.safetensors"))
    assert wa.keys() == wb.keys()
    assert all((wa[k] == wb[k]).all() for k in wa)


def test_log_has_one_object_per_step_with_the_documented_fields(retort_bin, data, tmp_path):
    cfg = write_config(tmp_path, QWEN, "qwen.json")
    p = train(retort_bin, "--init", cfg, "--data", data, "--seq", "32", "--batch", "2", "--epochs", "0.5",
              "--lr", "1e-3", "--out", str(tmp_path / "o"), "--log", str(tmp_path / "l.jsonl"))
    rows = read_log(tmp_path / "l.jsonl")
    assert len(rows) == 10        # 40 sequences × 0.5 / 2 per step
    for r in rows:
        assert set(r) == {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s"}
        assert r["tokens"] == 64 and r["tokens_per_s"] > 0
    assert "step 10/10" in p.stderr and "tok/s" in p.stderr and "ETA" in p.stderr
    assert os.path.isdir(tmp_path / "o" / "step-10")


def test_loss_falls_on_synthetic_documents(retort_bin, data, tmp_path):
    cfg = write_config(tmp_path, QWEN, "qwen.json")
    train(retort_bin, "--init", cfg, "--data", data, "--batch", "4", "--steps", "60", "--lr", "1e-2", "--warmup", "5",
          "--out", str(tmp_path / "o"), "--log", str(tmp_path / "l.jsonl"))
    losses = [r["loss"] for r in read_log(tmp_path / "l.jsonl")]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 1.5, losses


@pytest.mark.parametrize("arch,dtype", [("llama", "f32"), ("qwen2", "bf16")])
def test_exported_checkpoint_loads_in_transformers_with_the_same_logits(retort_bin, data, tools_dir, tmp_path, arch, dtype):
    import numpy as np
    import torch
    from safetensors.numpy import load_file, save_file
    from transformers import AutoModelForCausalLM

    cfg = write_config(tmp_path, LLAMA if arch == "llama" else QWEN, "cfg.json")
    train(retort_bin, "--init", cfg, "--data", data, "--batch", "2", "--steps", "3", "--lr", "1e-2",
          "--dtype", dtype, "--out", str(tmp_path / "o"))
    ck = str(tmp_path / "o" / "step-3")
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 256, size=(2, 40), dtype=np.int32)
    docs = np.array([[0, 0, 40], [1, 0, 15], [1, 15, 25]], dtype=np.int32)
    save_file({"tokens": tokens, "docs": docs}, str(tmp_path / "in.safetensors"))
    p = run([tool(tools_dir, "student_forward"), ck, str(tmp_path / "in.safetensors"), str(tmp_path / "out.safetensors")])
    assert p.returncode == 0, p.stderr
    ours = load_file(str(tmp_path / "out.safetensors"))["logits"]

    model = AutoModelForCausalLM.from_pretrained(ck, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    worst = 0.0
    with torch.no_grad():
        for s, a, n in docs:
            ids = torch.from_numpy(tokens[s, a:a + n].astype(np.int64))[None]
            ref = model(input_ids=ids, position_ids=torch.arange(n)[None]).logits[0].numpy()
            worst = max(worst, float(np.abs(ref - ours[s, a:a + n]).max()))
    assert worst < 1e-4, f"max |logit difference| {worst}"


def test_usage_errors_exit_2(retort_bin, data):
    p = run([retort_bin, "train", "--data", data, "--batch", "1", "--steps", "1", "--lr", "1e-3", "--out", "/tmp/x"])
    assert p.returncode == 2 and "--init" in p.stderr
    p = run([retort_bin, "train", "--init", "c.json", "--data", data, "--batch", "0", "--steps", "1", "--lr", "1",
             "--out", "/tmp/x"])
    assert p.returncode == 2 and "--batch" in p.stderr
    p = run([retort_bin, "train", "--init", "c.json", "--data", data, "--batch", "1", "--steps", "1", "--epochs", "1",
             "--lr", "1", "--out", "/tmp/x"])
    assert p.returncode == 2


def test_bad_inputs_fail_with_one_line(retort_bin, data, tmp_path):
    cfg = write_config(tmp_path, QWEN, "qwen.json")
    base = ["--batch", "1", "--steps", "1", "--lr", "1e-3", "--out", str(tmp_path / "o")]
    assert_one_error_line(run([retort_bin, "train", "--init", cfg, "--data", str(tmp_path), *base]), "no shard files")
    assert_one_error_line(run([retort_bin, "train", "--init", cfg, "--data", data, "--seq", "64", *base]), "--seq 64", "32")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "shard-00000.bin").write_bytes(b"RTSHARD\0" + b"\1" * 100)
    assert_one_error_line(run([retort_bin, "train", "--init", cfg, "--data", str(bad), *base]), "shard-00000.bin")
    small = dict(QWEN, vocab_size=100)
    assert_one_error_line(run([retort_bin, "train", "--init", write_config(tmp_path, small, "s.json"), "--data", data,
                               *base]), "vocabulary")


def test_loss_falls_on_packed_gsm8k_chats(retort_bin, assets, tmp_path):
    """SFT from random init on GSM8K chats rendered and packed by `retort pack` (Qwen3 tokenizer)."""
    src = os.path.join(assets, "benchmarks", "gsm8k_train.jsonl")
    tok = os.path.join(assets, "tokenizers", "qwen3", "tokenizer.json")
    if not (os.path.exists(src) and os.path.exists(tok)):
        pytest.skip(f"skipped: {src} or {tok} absent")
    chats = tmp_path / "chat.jsonl"
    with open(src) as f, open(chats, "w") as out:
        for i, line in enumerate(f):
            if i == 400:
                break
            d = json.loads(line)
            out.write(json.dumps({"messages": [{"role": "user", "content": d["question"]},
                                               {"role": "assistant", "content": d["answer"]}]}) + "\n")
    p = run([retort_bin, "pack", "--tokenizer", tok, "--template", "qwen", "--jsonl", str(chats), "--seq", "256",
             "--out", str(tmp_path / "shards")])
    assert p.returncode == 0, p.stderr
    cfg = dict(QWEN, vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
               bos_token_id=151643, eos_token_id=151645)
    train(retort_bin, "--init", write_config(tmp_path, cfg, "small.json"), "--data", str(tmp_path / "shards"),
          "--seq", "256", "--batch", "2", "--steps", "12", "--lr", "1e-2", "--warmup", "2", "--schedule", "constant",
          "--out", str(tmp_path / "o"), "--log", str(tmp_path / "l.jsonl"))
    losses = [r["loss"] for r in read_log(tmp_path / "l.jsonl")]
    assert losses[0] > 11.0                      # ≈ ln(151936) at random init
    assert sum(losses[-3:]) / 3 < losses[0] - 2.0, losses


# ---------------------------------------------------------------- output directory, resume, NaN (issue #16)

COMMON = ["--batch", "2", "--lr", "3e-3", "--warmup", "2", "--seed", "5"]


def steps_in(d):
    """The model directories step-N (each with its step-N.state beside it)."""
    return sorted(e for e in os.listdir(d) if e.startswith("step-") and not e.endswith(".state"))


def one_line(p, *needles):
    lines = [l for l in p.stderr.splitlines() if l.startswith("retort: ")]
    assert p.returncode == 1 and len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_out_with_another_runs_checkpoints_is_refused_unless_overwrite(retort_bin, data, tmp_path):
    cfg = write_config(tmp_path, QWEN, "qwen.json")
    out = tmp_path / "o"
    train(retort_bin, "--init", cfg, "--data", data, *COMMON, "--steps", "4", "--save-every", "2", "--out", str(out))
    before = {s: (out / s / "model.safetensors").read_bytes() for s in steps_in(out)}
    assert list(before) == ["step-2", "step-4"]
    # another run (a different learning rate) into the same directory: refused, nothing touched
    other = ["--init", cfg, "--data", data, "--batch", "2", "--lr", "1e-2", "--warmup", "2", "--seed", "5",
             "--steps", "4", "--save-every", "3", "--out", str(out)]
    p = run([retort_bin, "train", "--threads", "2", *other])
    one_line(p, str(out), "step-4", "lr", "--overwrite")
    assert {s: (out / s / "model.safetensors").read_bytes() for s in steps_in(out)} == before
    # a different model: refused too
    cfg2 = write_config(tmp_path, dict(QWEN, intermediate_size=96), "qwen96.json")
    p = run([retort_bin, "train", "--threads", "2", "--init", cfg2, "--data", data, *COMMON, "--steps", "4",
             "--save-every", "2", "--out", str(out)])
    one_line(p, "model", "qwen96.json", "--overwrite")
    # --overwrite deletes the old run's checkpoints first: no step-2 of the old run survives
    train(retort_bin, *other, "--overwrite")
    assert steps_in(out) == ["step-3", "step-4"]
    st = json.load(open(out / "step-4.state" / "trainer_state.json"))
    assert st["options"]["lr"] == 1e-2 and st["step"] == 4
    # --overwrite with --resume is a usage error
    p = run([retort_bin, "train", *other, "--overwrite", "--resume", "auto"])
    assert p.returncode == 2


def test_rerun_after_a_kill_resumes_the_same_run_and_logs_each_step_once(retort_bin, data, tmp_path):
    cfg = write_config(tmp_path, QWEN, "qwen.json")
    args = ["--init", cfg, "--data", data, *COMMON, "--steps", "6", "--save-every", "3"]
    train(retort_bin, *args, "--out", str(tmp_path / "ref"), "--log", str(tmp_path / "ref.jsonl"))
    ref = read_log(tmp_path / "ref.jsonl")
    out, log = tmp_path / "o", tmp_path / "o.jsonl"
    train(retort_bin, *args, "--out", str(out), "--log", str(log))
    # as if killed during step 6: its checkpoint never written, the log holding steps 1..5
    # and half of a line
    import shutil
    shutil.rmtree(out / "step-6")
    lines = open(log).read().splitlines(keepends=True)
    with open(log, "w") as f:
        f.writelines(lines[:5])
        f.write(lines[5][:20])
    p = train(retort_bin, *args, "--out", str(out), "--log", str(log))
    assert "resuming from " + str(out / "step-3") in p.stderr
    got = read_log(log)
    assert [r["step"] for r in got] == list(range(1, 7))
    for x, y in zip(ref, got):
        assert (x["loss"], x["grad_norm"], x["lr"]) == (y["loss"], y["grad_norm"], y["lr"]), (x, y)
    assert (out / "step-6.state" / "optimizer.safetensors").read_bytes() == \
        (tmp_path / "ref" / "step-6.state" / "optimizer.safetensors").read_bytes()
    # the explicit form cuts the log back the same way
    p = train(retort_bin, "--resume", str(out / "step-3"), "--data", data, *COMMON, "--steps", "6",
              "--out", str(out), "--log", str(log))
    assert [r["step"] for r in read_log(log)] == list(range(1, 7))
    # a finished run rerun: nothing left to do, nothing duplicated
    train(retort_bin, *args, "--out", str(out), "--log", str(log))
    assert [r["step"] for r in read_log(log)] == list(range(1, 7))


def test_resume_auto_refusals(retort_bin, data, tmp_path):
    cfg = write_config(tmp_path, QWEN, "qwen.json")
    out = tmp_path / "o"
    out.mkdir()
    p = run([retort_bin, "train", "--resume", "auto", "--data", data, *COMMON, "--steps", "2", "--out", str(out)])
    one_line(p, "holds no checkpoint", "--init")
    (out / "step-7").mkdir()     # not written by retort train
    p = run([retort_bin, "train", "--init", cfg, "--data", data, *COMMON, "--steps", "2", "--out", str(out)])
    one_line(p, "step-7", "not a checkpoint", "--overwrite")
    # other data: refused
    train(retort_bin, "--init", cfg, "--data", data, *COMMON, "--steps", "2", "--out", str(tmp_path / "d"))
    one = tmp_path / "one"
    one.mkdir()
    os.symlink(os.path.join(data, "shard-00000.bin"), one / "shard-00000.bin")
    p = run([retort_bin, "train", "--init", cfg, "--data", str(one), *COMMON, "--steps", "2",
             "--out", str(tmp_path / "d")])
    one_line(p, "data", str(one), "--overwrite")
    # a directory holding other things and no checkpoint: refused; --overwrite starts there and
    # deletes only step-* entries
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    args = ["--init", cfg, "--data", data, *COMMON, "--steps", "2", "--out", str(busy)]
    one_line(run([retort_bin, "train", "--threads", "2", *args]), str(busy), "not empty", "notes.txt", "--overwrite")
    assert sorted(os.listdir(busy)) == ["notes.txt"]
    train(retort_bin, *args, "--overwrite")
    assert sorted(os.listdir(busy)) == ["notes.txt", "step-2", "step-2.state"]
    train(retort_bin, *args)                      # now it holds this run's checkpoint: a rerun is fine
    # the log inside --out does not count
    inside = tmp_path / "inside"
    args = ["--init", cfg, "--data", data, *COMMON, "--steps", "2", "--out", str(inside),
            "--log", str(inside / "train.jsonl")]
    train(retort_bin, *args)
    shutil.rmtree(inside / "step-2")             # killed before its first checkpoint
    train(retort_bin, *args)
    assert [r["step"] for r in read_log(inside / "train.jsonl")] == [1, 2]


def test_stale_partial_is_removed_and_a_failed_save_leaves_none(retort_bin, data, tmp_path):
    cfg = write_config(tmp_path, QWEN, "qwen.json")
    out = tmp_path / "o"
    (out / "step-2.partial").mkdir(parents=True)
    (out / "step-2.partial" / "model.safetensors.tmp.1234").write_bytes(b"half")
    train(retort_bin, "--init", cfg, "--data", data, *COMMON, "--steps", "2", "--out", str(out))
    assert steps_in(out) == ["step-2"]
    # a save that fails (step-4 is a file, so the checkpoint cannot be renamed into place)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "step-4").write_text("in the way")
    p = run([retort_bin, "train", "--threads", "2", "--resume", str(out / "step-2"), "--data", data, *COMMON,
             "--steps", "4", "--out", str(bad)])
    one_line(p, "step-4")
    assert sorted(os.listdir(bad)) == ["step-4"], os.listdir(bad)


def test_nan_weights_are_refused_by_train_and_nothing_is_saved(retort_bin, data, tmp_path):
    import numpy as np
    from safetensors.numpy import load_file, save_file
    cfg = write_config(tmp_path, QWEN, "qwen.json")
    train(retort_bin, "--init", cfg, "--data", data, *COMMON, "--steps", "1", "--dtype", "f32", "--out", str(tmp_path / "a"))
    src = tmp_path / "a" / "step-1"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_bytes((src / "config.json").read_bytes())
    w = load_file(str(src / "model.safetensors"))
    w["model.layers.0.mlp.up_proj.weight"][3, 5] = np.nan
    save_file(w, str(bad / "model.safetensors"))
    out = tmp_path / "o"
    p = run([retort_bin, "train", "--threads", "2", "--model", str(bad), "--data", data, *COMMON, "--steps", "3",
             "--out", str(out), "--log", str(tmp_path / "l.jsonl")])
    one_line(p, "model.layers.0.mlp.up_proj.weight", "1 NaN", "not finite")
    assert not os.path.exists(out) or steps_in(out) == []
    assert not os.path.exists(tmp_path / "l.jsonl") or read_log(tmp_path / "l.jsonl") == []


def test_divergence_stops_at_the_first_non_finite_step(retort_bin, data, tmp_path):
    import numpy as np
    from safetensors.numpy import load_file
    cfg = write_config(tmp_path, QWEN, "qwen.json")
    out = tmp_path / "o"
    # AdamW moves every weight by about lr at its first step: 1e30 overflows the next forward
    p = run([retort_bin, "train", "--threads", "2", "--init", cfg, "--data", data, "--batch", "2", "--lr", "1e30",
             "--steps", "5", "--save-every", "1", "--dtype", "f32", "--out", str(out), "--log", str(tmp_path / "l.jsonl")])
    log = read_log(tmp_path / "l.jsonl")
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["grad_norm"]) for r in log)
    k = len(log) + 1
    assert k <= 5
    one_line(p, f"step {k}:", "not finite")
    assert steps_in(out) == [f"step-{i}" for i in range(1, k)]
    for s in steps_in(out):
        for f in ("model.safetensors", "../" + s + ".state/optimizer.safetensors"):
            assert all(np.isfinite(v).all() for v in load_file(str(out / s / f)).values()), (s, f)


def test_divergence_under_mpirun_is_one_line_on_every_rank_count(retort_bin, data, tmp_path):
    """The step's loss and norm are global: every rank stops at the same step, rank 0 alone says so."""
    import shutil
    from test_train_dp import mpi
    if not shutil.which("mpirun"):
        pytest.skip("skipped: mpirun not installed (make deps installs openmpi-bin)")
    cfg = write_config(tmp_path, QWEN, "qwen.json")
    p = mpi(2, [retort_bin, "train", "--threads", "1", "--init", cfg, "--data", data, "--batch", "1", "--lr", "1e30",
                "--steps", "5", "--zero", "1", "--out", str(tmp_path / "o"), "--log", str(tmp_path / "l.jsonl")],
            timeout=120)
    k = len(read_log(tmp_path / "l.jsonl")) + 1
    one_line(p, f"step {k}:", "not finite")
    assert "rank" not in [l for l in p.stderr.splitlines() if l.startswith("retort: ")][0]
