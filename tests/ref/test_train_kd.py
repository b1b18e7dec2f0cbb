"""`retort train --kd-alpha` (logit distillation from the teacher top-k in the shards) end to end.

The step-1 loss and gradient norm of a tiny Qwen2 student equal transformers + torch.autograd
(float64) on the formula of docs/student.md, written here independently; alpha 0 is SFT bit
for bit; shards without top-k, and a teacher vocabulary other than the student's without
--kd-loss uld, are one clear error; `retort pack --top-k` puts a conversation's
"teacher_topk" on its assistant tokens; under mpirun with ZeRO the KD losses equal the
1-rank run. Shards come from tests/tools/student_mkshard (core/shard's writer)."""
import json
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest
from conftest import assert_one_error_line, run

QWEN = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 256, "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": True,
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu"}
QWEN64 = dict(QWEN, hidden_size=128, intermediate_size=256, num_attention_heads=2, num_key_value_heads=1,
              head_dim=64)   # the GPU trainer's attention takes head_dim 64 or 128
FLOOR = 1e-9


def tool(tools_dir, name):
    p = os.path.join(tools_dir, name)
    if not os.access(p, os.X_OK):
        pytest.fail(f"test tool {p} not built (make tests-build)")
    return p


def mkshard(tools_dir, path, n_seqs, seed, topk=None, teacher_vocab=256, seq=32):
    args = [tool(tools_dir, "student_mkshard"), str(path), str(seq), str(n_seqs), "256", str(seed)]
    if topk:
        args += [str(topk), str(teacher_vocab)]
    subprocess.run(args, check=True)
    return str(path)


def read_shard(path):
    """core/shard.h, versions 1 and 2, read here from the documented layout."""
    b = open(path, "rb").read()
    magic, ver, dt, n, vocab, s, d, pad, flags, _ck, k, tv = struct.unpack("<8sIIIIQQIIQII", b[:64])
    assert magic == b"RTSHARD\0" and ver in (1, 2)
    tok = np.frombuffer(b, dtype="<u2" if dt == 2 else "<u4", count=s * n, offset=64).reshape(s, n).astype(np.int64)
    mo = 64 + s * n * dt
    mask = np.frombuffer(b, dtype=np.uint8, count=s * n, offset=mo).reshape(s, n)
    do = (mo + s * n + 7) // 8 * 8
    docs = [struct.unpack_from("<QIIIII", b, do + 32 * i) for i in range(d)]
    out = {"tokens": tok, "mask": mask, "docs": docs, "k": k, "teacher_vocab": tv, "flags": flags}
    if flags & 1:
        off, stride = do + 32 * d, n * (1 + 8 * k)
        tn, ids, lps = [], [], []
        for q in range(s):
            base = off + q * stride
            tn.append(np.frombuffer(b, np.uint8, n, base))
            ids.append(np.frombuffer(b, "<u4", n * k, base + n).reshape(n, k))
            lps.append(np.frombuffer(b, "<f4", n * k, base + n + 4 * n * k).reshape(n, k))
        out.update(top_n=np.array(tn), top_ids=np.array(ids), top_lps=np.array(lps))
        assert len(b) == off + s * stride
    return out


def train(retort_bin, *args):
    p = run([retort_bin, "train", "--threads", "2", *args], timeout=600)
    assert p.returncode == 0, p.stderr
    return p


def read_log(path):
    return [json.loads(line) for line in open(path)]


def divergence(torch, kind, q, s, beta):
    if kind == "forward":
        return (q * (q.log() - s.clamp_min(1e-300).log())).sum()
    if kind == "reverse":
        return (s * (s.clamp_min(1e-300).log() - q.log())).sum()
    if kind == "jsd":
        m = beta * q + (1 - beta) * s
        return beta * (q * (q.log() - m.log())).sum() + (1 - beta) * (s * (s.clamp_min(1e-300).log() - m.log())).sum()
    return (s - q).abs().sum()


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("student")
    torch.manual_seed(5)
    cfg = {k: v for k, v in QWEN.items() if k != "architectures"}
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**cfg)).float()
    model.save_pretrained(str(d), safe_serialization=True)
    return str(d)


@pytest.mark.parametrize("kind,alpha,temp", [("forward", 0.5, 1.0), ("forward", 1.0, 2.0), ("reverse", 0.7, 1.5),
                                             ("jsd:0.3", 0.5, 1.0), ("uld", 0.6, 2.0)])
def test_step_loss_and_gradient_match_torch(retort_bin, tools_dir, student, tmp_path, kind, alpha, temp):
    torch = pytest.importorskip("torch")
    # Other test modules switch autograd off at import (torch.set_grad_enabled(False)), and
    # pytest imports them all before running anything: on for this test only.
    with torch.enable_grad():
        _step_loss_and_gradient(retort_bin, tools_dir, student, tmp_path, kind, alpha, temp)


def _step_loss_and_gradient(retort_bin, tools_dir, student, tmp_path, kind, alpha, temp):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tv = 300 if kind == "uld" else 256   # ULD: another vocabulary
    data = mkshard(tools_dir, tmp_path / "one.bin", 1, 11, topk=5, teacher_vocab=tv)
    train(retort_bin, "--model", student, "--data", data, "--batch", "1", "--steps", "1", "--lr", "1e-9",
          "--clip", "0", "--kd-alpha", str(alpha), "--kd-temperature", str(temp), "--kd-loss", kind,
          "--out", str(tmp_path / "o"), "--log", str(tmp_path / "l.jsonl"))
    got = read_log(tmp_path / "l.jsonl")[0]

    sh = read_shard(data)
    name, beta = (kind.split(":")[0], float(kind.split(":")[1])) if ":" in kind else (kind, 0.0)
    model = transformers.Qwen2ForCausalLM.from_pretrained(student, torch_dtype=torch.float64)
    total, ce_total, d_total, count = torch.zeros((), dtype=torch.float64), 0.0, 0.0, 0
    tok, mask = sh["tokens"][0], sh["mask"][0]
    for _id, _seq, start, ln, _off, _fl in sh["docs"]:
        ids = torch.tensor(tok[start:start + ln])[None]
        logits = model(input_ids=ids, position_ids=torch.arange(ln)[None]).logits[0]
        for t in range(ln - 1):
            p = start + t + 1                       # the position the row predicts
            if not mask[p]:
                continue
            count += 1
            z = logits[t]
            ce = torch.logsumexp(z, 0) - z[int(tok[p])]
            ce_total += float(ce.detach())
            k = int(sh["top_n"][0][p])
            if k == 0:
                total = total + ce
                continue
            P = torch.tensor(sh["top_lps"][0][p][:k], dtype=torch.float64).exp()
            if name == "uld":
                P = torch.sort(P, descending=True).values
            P = torch.cat([P, (1 - P.sum()).clamp_min(0).reshape(1)]).clamp_min(FLOOR)
            q = torch.softmax(P.log() / temp, 0)
            ps = torch.softmax(z / temp, 0)
            s_top = torch.sort(ps, descending=True).values[:k] if name == "uld" else ps[sh["top_ids"][0][p][:k].astype(np.int64)]
            s = torch.cat([s_top, (1 - s_top.sum()).reshape(1)])
            dv = divergence(torch, name, q, s, beta)
            d_total += float(dv.detach())
            total = total + (1 - alpha) * ce + alpha * temp * temp * dv
    (total / count).backward()
    norm = float(torch.sqrt(sum((x.grad ** 2).sum() for x in model.parameters() if x.grad is not None)))
    want = float(total.detach()) / count
    # f32 forward/backward on the CPU trainer against float64: ~1e-6 relative
    assert abs(got["loss"] - want) <= 2e-5 * abs(want), (got, want)
    assert abs(got["ce_loss"] - ce_total / count) <= 2e-5 * ce_total / count, (got, ce_total / count)
    assert abs(got["kd_loss"] - d_total / count) <= 2e-5 * abs(d_total / count) + 1e-7, (got, d_total / count)
    assert abs(got["grad_norm"] - norm) <= 1e-4 * norm, (got, norm)


def test_alpha_zero_is_sft_bit_for_bit(retort_bin, tools_dir, tmp_path):
    cfg = tmp_path / "q.json"
    cfg.write_text(json.dumps(QWEN))
    data = mkshard(tools_dir, tmp_path / "kd.bin", 8, 3, topk=4)
    common = ["--init", str(cfg), "--data", data, "--batch", "2", "--steps", "6", "--lr", "3e-3", "--seed", "2",
              "--dtype", "f32"]
    train(retort_bin, *common, "--out", str(tmp_path / "a"), "--log", str(tmp_path / "a.jsonl"))
    train(retort_bin, *common, "--kd-alpha", "0", "--kd-loss", "reverse", "--out", str(tmp_path / "b"),
          "--log", str(tmp_path / "b.jsonl"))
    a, b = read_log(tmp_path / "a.jsonl"), read_log(tmp_path / "b.jsonl")
    assert [(x["loss"], x["grad_norm"]) for x in a] == [(x["loss"], x["grad_norm"]) for x in b]
    assert all("kd_loss" not in x for x in b)
    ma = open(tmp_path / "a" / "step-6" / "model.safetensors", "rb").read()
    mb = open(tmp_path / "b" / "step-6" / "model.safetensors", "rb").read()
    assert ma == mb


def test_kd_needs_topk_in_the_shards(retort_bin, tools_dir, tmp_path):
    cfg = tmp_path / "q.json"
    cfg.write_text(json.dumps(QWEN))
    data = mkshard(tools_dir, tmp_path / "sft.bin", 4, 3)
    p = run([retort_bin, "train", "--init", str(cfg), "--data", data, "--steps", "1", "--kd-alpha", "0.5",
             "--out", str(tmp_path / "o")])
    assert_one_error_line(p, "--kd-alpha 0.5 needs the teacher's top-k", "carry none")


def test_another_teacher_vocabulary_needs_uld(retort_bin, tools_dir, tmp_path):
    cfg = tmp_path / "q.json"
    cfg.write_text(json.dumps(QWEN))
    data = mkshard(tools_dir, tmp_path / "x.bin", 4, 3, topk=3, teacher_vocab=1000)
    args = [retort_bin, "train", "--init", str(cfg), "--data", data, "--steps", "1", "--kd-alpha", "0.5"]
    p = run(args + ["--kd-loss", "jsd:0.5", "--out", str(tmp_path / "o")])
    assert_one_error_line(p, "teacher's vocabulary (1000 tokens)", "student's (256)", "--kd-loss uld")
    p = run(args + ["--kd-loss", "uld", "--out", str(tmp_path / "u")])
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("value,needle", [("kl", "unknown KD loss 'kl'"), ("jsd:1", "0 < B < 1")])
def test_bad_kd_loss_is_a_usage_error(retort_bin, tools_dir, tmp_path, value, needle):
    p = run([retort_bin, "train", "--init", "x.json", "--data", "x", "--steps", "1", "--kd-loss", value, "--out", "o"])
    assert p.returncode == 2 and needle in p.stderr, p.stderr


def test_pack_puts_teacher_topk_on_the_assistant_tokens(retort_bin, assets, tmp_path):
    tokj = os.path.join(assets, "tokenizers", "qwen3", "tokenizer.json")
    convs = []
    for i in range(3):
        n = 4 + 3 * i        # teacher tokens given; the rendered answer has more: the rest get none
        convs.append({"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                                   {"role": "assistant", "content": f"The answer is {2 * i}, because {i} and {i} make it."}],
                      "teacher_topk": {"ids": [[100 + 10 * t + a for a in range(1 + t % 4)] for t in range(n)],
                                       "logprobs": [[-0.1 - a - 0.01 * t for a in range(1 + t % 4)] for t in range(n)]}})
    convs.append({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(c) + "\n" for c in convs))
    p = run([retort_bin, "pack", "--tokenizer", tokj, "--template", "qwen", "--jsonl", str(src), "--seq", "64",
             "--out", str(tmp_path / "s"), "--top-k", "3"])
    assert p.returncode == 0, p.stderr
    sh = read_shard(tmp_path / "s" / "shard-00000.bin")
    assert sh["flags"] == 1 and sh["k"] == 3
    seen = set()
    for q in range(sh["tokens"].shape[0]):
        for doc_id, _s, start, ln, off, _f in (d for d in sh["docs"] if d[1] == q):
            assert off == 0
            c = convs[doc_id]
            masked = [start + t for t in range(ln) if sh["mask"][q][start + t]]
            tk = c.get("teacher_topk", {"ids": []})
            for j, pos in enumerate(masked):
                n = int(sh["top_n"][q][pos])
                if j < len(tk["ids"]):
                    want = tk["ids"][j][:3]
                    assert n == len(want)
                    assert list(sh["top_ids"][q][pos][:n]) == want
                    assert np.allclose(sh["top_lps"][q][pos][:n], tk["logprobs"][j][:3], atol=1e-6)
                else:
                    assert n == 0
            unmasked = [start + t for t in range(ln) if not sh["mask"][q][start + t]]
            assert all(sh["top_n"][q][pos] == 0 for pos in unmasked)
            seen.add(doc_id)
    assert seen == set(range(len(convs)))
    # without --top-k: version 2 without the section
    p = run([retort_bin, "pack", "--tokenizer", tokj, "--template", "qwen", "--jsonl", str(src), "--seq", "64",
             "--out", str(tmp_path / "n")])
    assert p.returncode == 0, p.stderr
    assert read_shard(tmp_path / "n" / "shard-00000.bin")["flags"] == 0


def mpi(ranks, args, timeout=600):
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


@pytest.mark.parametrize("zero", [1, 3])
def test_zero_ranks_give_the_one_rank_kd_losses(retort_bin, tools_dir, tmp_path, zero):
    cfg = tmp_path / "q.json"
    cfg.write_text(json.dumps(QWEN))
    data = mkshard(tools_dir, tmp_path / "kd.bin", 16, 4, topk=4)
    common = ["--init", str(cfg), "--data", data, "--grad-accum", "2", "--steps", "4", "--lr", "3e-3", "--seed", "7",
              "--kd-alpha", "0.7", "--kd-temperature", "2", "--kd-loss", "jsd:0.5", "--dtype", "f32"]
    runs = {}
    for ranks in (1, 2):
        p = mpi(ranks, [retort_bin, "train", "--threads", "1", *common, "--batch", str(2 // ranks), "--zero",
                        str(zero if ranks > 1 else 0), "--out", str(tmp_path / f"o{ranks}"),
                        "--log", str(tmp_path / f"l{ranks}.jsonl")])
        assert p.returncode == 0, p.stdout + p.stderr
        runs[ranks] = read_log(tmp_path / f"l{ranks}.jsonl")
    # the same global batch summed in another order: equal to f64 rounding of f32 sums (as test_train_dp.py)
    for a, b in zip(runs[1], runs[2]):
        for key in ("loss", "ce_loss", "kd_loss"):
            assert abs(a[key] - b[key]) <= 1e-6 * abs(a[key]), (key, a, b)
        assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-5 * a["grad_norm"], (a, b)


@pytest.mark.parametrize("zero", ["1", "3"])
def test_gpu_path_on_stand_ins_at_two_ranks_gives_the_one_rank_kd_losses(tools_dir, tmp_path, zero):
    """student/gpu_train.c's KD head (kd_fused_cuda, here its CPU stand-in of tests/unit/fake_cuda.h)
    under mpirun with ZeRO: the same global batch on 1 and 2 ranks (tests/tools/gpu_train_fake_dp)."""
    cfg = tmp_path / "q.json"
    cfg.write_text(json.dumps(QWEN64))
    data = mkshard(tools_dir, tmp_path / "kd.bin", 16, 4, topk=4)
    fake = tool(tools_dir, "gpu_train_fake_dp")
    runs = {}
    for ranks, spec, accum in ((1, "0:kd", 2), (2, zero + ":kd", 1)):
        p = mpi(ranks, [fake, str(cfg), data, "4", spec, "2", str(accum), "5"])
        assert p.returncode == 0, p.stdout + p.stderr
        runs[ranks] = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    assert [r["step"] for r in runs[2]] == [1, 2, 3, 4]
    for a, b in zip(runs[1], runs[2]):
        assert a["loss_tokens"] == b["loss_tokens"] and a["kd_loss"] > 0, (a, b)
        for key in ("loss", "ce_loss", "kd_loss"):
            assert abs(a[key] - b[key]) <= 1e-6 * abs(a[key]), (key, a, b)
        assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-5 * a["grad_norm"], (a, b)


def test_kd_resume_continues_bit_exactly(retort_bin, tools_dir, tmp_path):
    cfg = tmp_path / "q.json"
    cfg.write_text(json.dumps(QWEN))
    data = mkshard(tools_dir, tmp_path / "kd.bin", 8, 6, topk=4)
    common = ["--data", data, "--batch", "2", "--steps", "6", "--lr", "3e-3", "--kd-alpha", "0.4", "--kd-temperature",
              "1.5", "--kd-loss", "reverse", "--dtype", "f32"]
    train(retort_bin, "--init", str(cfg), *common, "--out", str(tmp_path / "a"), "--save-every", "3",
          "--log", str(tmp_path / "a.jsonl"))
    state = json.loads((tmp_path / "a" / "step-3.state" / "trainer_state.json").read_text())
    assert state["options"]["kd_alpha"] == 0.4 and state["options"]["kd_loss"] == "reverse"
    train(retort_bin, "--resume", str(tmp_path / "a" / "step-3"), *common, "--out", str(tmp_path / "b"),
          "--log", str(tmp_path / "b.jsonl"))
    a, b = read_log(tmp_path / "a.jsonl"), read_log(tmp_path / "b.jsonl")
    assert [(x["loss"], x["kd_loss"], x["grad_norm"]) for x in a[3:]] == [(x["loss"], x["kd_loss"], x["grad_norm"]) for x in b]
    assert (tmp_path / "a" / "step-6" / "model.safetensors").read_bytes() == \
        (tmp_path / "b" / "step-6" / "model.safetensors").read_bytes()


def test_pack_leaves_out_alternatives_without_an_id(retort_bin, assets, tmp_path):
    """An endpoint that names alternatives only by text stores them as id -1 (export writes
    them so); pack keeps the others, in order."""
    tokj = os.path.join(assets, "tokenizers", "qwen3", "tokenizer.json")
    conv = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
            "teacher_topk": {"ids": [[19, -1, 23], [-1]], "logprobs": [[-0.1, 0.0, -2.5], [0.0]]}}
    (tmp_path / "c.jsonl").write_text(json.dumps(conv) + "\n")
    p = run([retort_bin, "pack", "--tokenizer", tokj, "--template", "qwen", "--jsonl", str(tmp_path / "c.jsonl"),
             "--seq", "64", "--out", str(tmp_path / "s"), "--top-k", "3"])
    assert p.returncode == 0, p.stderr
    sh = read_shard(tmp_path / "s" / "shard-00000.bin")
    masked = [int(x) for x in np.nonzero(sh["mask"][0])[0]]
    assert list(sh["top_n"][0][masked[:2]]) == [2, 0]
    assert list(sh["top_ids"][0][masked[0]][:2]) == [19, 23]
    assert np.allclose(sh["top_lps"][0][masked[0]][:2], [-0.1, -2.5])
    conv["teacher_topk"]["ids"][0][0] = 10 ** 7    # past the vocabulary: one clear error
    (tmp_path / "c.jsonl").write_text(json.dumps(conv) + "\n")
    p = run([retort_bin, "pack", "--tokenizer", tokj, "--template", "qwen", "--jsonl", str(tmp_path / "c.jsonl"),
             "--seq", "64", "--out", str(tmp_path / "t"), "--top-k", "3"])
    assert_one_error_line(p, "c.jsonl:1", "teacher_topk entry 0", "id 10000000")
