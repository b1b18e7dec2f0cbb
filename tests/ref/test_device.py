"""The in-process teacher's device and vocabulary, end to end:

- `--device cpu|cuda` and `--gpu-memory-fraction` on generate (both modes), eval and serve:
  bad values are usage errors (exit 2); `--device cuda` where this build or machine cannot run
  it is one line (exit 1), and `--device cpu` is the default's output exactly. The line that
  reports the weights in memory says what the safetensors hold (f32 copies on the CPU engine),
  computed here from the files' headers.
- A model whose vocabulary is padded beyond its tokenizer (Qwen2.5: 151,936 rows for 151,665
  tokens) never draws an id the tokenizer does not name: the padded rows get no probability,
  as in vLLM. Expected greedy ids and logprobs come from transformers with those logits masked.
"""
import json
import math
import os
import re

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM

from conftest import ROOT, assert_one_error_line, jsonl_lines, run

torch.set_grad_enabled(False)
TINY_TOK = os.path.join(ROOT, "configs", "recipes", "tiny", "tokenizer.json")
N_TOK = 261   # ids the tiny tokenizer names (0..260)


@pytest.fixture(scope="module")
def padded(tmp_path_factory):
    """A tiny Llama with 512 rows for the tokenizer's 261 ids, the padded rows made the likeliest."""
    cfg = json.load(open(os.path.join(ROOT, "configs", "models", "tiny-llama.json")))
    d = tmp_path_factory.mktemp("padded") / "llama"
    torch.manual_seed(5)
    m = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), attn_implementation="eager").float().eval()
    g = torch.Generator().manual_seed(5)
    for name, p in m.named_parameters():
        if name.endswith("norm.weight"):
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
        elif p.ndim == 1:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
    # the padded rows: 3x copies of the real ones, so one of them wins every argmax whose best
    # real logit is positive
    w = m.lm_head.weight
    idx = torch.arange(N_TOK, w.shape[0]) % N_TOK
    w[N_TOK:] = 3 * w[idx]
    m.save_pretrained(str(d))
    m = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32, attn_implementation="eager").eval()
    return d, m


def write(tmp, lines):
    p = tmp / "in.jsonl"
    p.write_text("".join(json.dumps(l) + "\n" for l in lines))
    return p


def masked_greedy(m, ids, n):
    """Greedy decoding over the tokenizer's ids only; the log_softmax over them."""
    seq, lps = list(ids), []
    for _ in range(n):
        logits = m(torch.tensor([seq])).logits[0, -1].double()
        lp = torch.log_softmax(logits[:N_TOK], -1)
        t = int(torch.argmax(lp))
        seq.append(t)
        lps.append(lp[t].item())
    return seq[len(ids):], lps


def test_padded_rows_are_never_drawn(retort_bin, padded, tmp_path):
    d, m = padded
    # unmasked, the padded rows win: the test would fail without the mask
    raw = m(torch.tensor([[5, 17, 99]])).logits[0, -1]
    assert int(torch.argmax(raw)) >= N_TOK
    prompts = [[5, 17, 99], [77, 3], list(range(100, 130))]
    p = write(tmp_path, [{"prompt_ids": x} for x in prompts])
    r = run([retort_bin, "generate", "--model", str(d), "--tokenizer", TINY_TOK, "--jsonl", str(p), "--threads", "2",
             "--temperature", "0", "--max-tokens", "12", "--ignore-eos", "--logprobs", "2"])
    assert r.returncode == 0, r.stderr
    out = sorted(jsonl_lines(r.stdout), key=lambda o: o["index"])
    assert len(out) == 3
    for o in out:
        want, lps = masked_greedy(m, prompts[o["index"]], 12)
        assert o["ids"] == want
        assert all(0 <= t < N_TOK for t in o["ids"])
        for e, w in zip(o["logprobs"], lps):
            assert abs(e["logprob"] - w) < 1e-4
            assert all(t < N_TOK for t, _ in e["top"])
        assert isinstance(o["text"], str)


def test_padded_rows_are_never_sampled(retort_bin, padded, tmp_path):
    d, _ = padded
    p = write(tmp_path, [{"prompt_ids": [5, 17, 99]}])
    r = run([retort_bin, "generate", "--model", str(d), "--tokenizer", TINY_TOK, "--jsonl", str(p), "--threads", "2",
             "--temperature", "1.5", "--max-tokens", "40", "--ignore-eos", "--n", "8", "--seed", "3"])
    assert r.returncode == 0, r.stderr
    out = jsonl_lines(r.stdout)
    assert len(out) == 8
    assert all(0 <= t < N_TOK for o in out for t in o["ids"])


def held_bytes(d):
    """f32 bytes of every tensor in the directory's safetensors (the CPU engine's copies)."""
    n = 0
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(d, f), "pt") as s:
                for k in s.keys():
                    n += math.prod(s.get_slice(k).get_shape()) * 4
    return n


def test_device_cpu_is_the_default_and_reports_the_weights(retort_bin, padded, tmp_path):
    d, _ = padded
    p = write(tmp_path, [{"prompt_ids": [5, 17, 99]}])
    base = [retort_bin, "generate", "--model", str(d), "--tokenizer", TINY_TOK, "--jsonl", str(p), "--threads", "2",
            "--temperature", "0", "--max-tokens", "8", "--ignore-eos"]
    a, b = run(base), run(base + ["--device", "cpu"])
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout
    line = [l for l in b.stderr.splitlines() if "weights in memory" in l]
    assert len(line) == 1 and line[0].startswith("generate: ") and "; model on cpu, " in line[0], b.stderr
    mb = float(re.search(r"([0-9.]+) MB of weights", line[0]).group(1))
    assert abs(mb * 1e6 - held_bytes(d)) <= 0.051e6, (line[0], held_bytes(d))


@pytest.mark.parametrize("args, msg", [
    (["--device", "tpu"], "--device"),
    (["--device", ""], "--device"),
    (["--gpu-memory-fraction", "0"], "--gpu-memory-fraction"),
    (["--gpu-memory-fraction", "1.5"], "--gpu-memory-fraction"),
    (["--gpu-memory-fraction", "x"], "--gpu-memory-fraction"),
])
def test_bad_device_options_are_usage_errors(retort_bin, padded, tmp_path, args, msg):
    d, _ = padded
    p = write(tmp_path, [{"prompt_ids": [5]}])
    db = str(tmp_path / "run.db")
    for cmd in (["generate", "--model", str(d), "--jsonl", str(p)],
                ["generate", "--db", db, "--teacher", f"local:{d}"],
                ["eval", "--db", db, "--model", f"local:{d}", "--bench", "gsm8k"],
                ["serve", "--model", str(d), "--port", "0"]):
        r = run([retort_bin, *cmd, *args], timeout=60)
        assert r.returncode == 2, (cmd, r.stderr)
        assert msg in r.stderr, r.stderr


def test_device_cuda_without_a_usable_gpu_is_one_line(retort_bin, padded, tmp_path):
    """CI has no GPU: whatever the build (CPU-only, or CUDA without a device) it is one line."""
    if os.path.exists("/dev/nvidia0"):
        pytest.skip("skipped: a GPU is present (the GPU engine's own tests cover it)")
    d, _ = padded
    p = write(tmp_path, [{"prompt_ids": [5, 17]}])
    bench = tmp_path / "b.jsonl"
    bench.write_text('{"prompt": "1+1?", "answer": "2"}\n')
    db = str(tmp_path / "run.db")
    for cmd in (["generate", "--model", str(d), "--tokenizer", TINY_TOK, "--jsonl", str(p), "--threads", "1"],
                ["eval", "--db", db, "--model", f"local:{d}", "--tokenizer", TINY_TOK, "--bench", str(bench),
                 "--threads", "1"],
                ["serve", "--model", str(d), "--tokenizer", TINY_TOK, "--port", "0", "--threads", "1"]):
        r = run([retort_bin, *cmd, "--device", "cuda"], timeout=60)
        assert_one_error_line(r, "cuda")
