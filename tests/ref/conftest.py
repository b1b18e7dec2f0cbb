"""Shared fixtures for the pytest suites: the retort binary, the C test tools, assets."""
import json
import os
import subprocess
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cpu_has_avx2_fma():
    """The CPU's own flags (/proc/cpuinfo): AVX2 and FMA, what retort's AVX2 kernels need."""
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return False
    return "avx2" in flags and "fma" in flags


def onednn_loads():
    """Whether oneDNN's library opens here (ctypes, independently of retort's loader)."""
    import ctypes
    for name in ("libdnnl.so.3", "libdnnl.so.2"):
        try:
            return hasattr(ctypes.CDLL(name), "dnnl_sgemm")
        except OSError:
            continue
    return False


def _binary():
    return os.environ.get("RETORT", os.path.join(ROOT, "retort"))


@pytest.fixture(scope="session")
def retort_bin():
    b = _binary()
    if not os.access(b, os.X_OK):
        pytest.fail(f"retort binary {b} not built (run `make`)")
    return b


@pytest.fixture(scope="session")
def tools_dir():
    return os.environ.get("TOOLS_DIR", os.path.join(ROOT, "build", "cpu", "tools"))


@pytest.fixture(scope="session")
def assets():
    d = os.environ.get("RETORT_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
    if not os.path.isdir(d):
        pytest.skip(f"skipped: assets directory {d} absent (set RETORT_ASSETS)")
    return d


def run(args, input=None, timeout=300):
    """Runs a command; returns CompletedProcess with text stdout/stderr."""
    return subprocess.run(args, input=input, capture_output=True, text=True, timeout=timeout)


def jsonl_lines(text):
    """Parses JSONL output. Splits on "\n" only: str.splitlines() also splits inside JSON
    strings that hold U+2028, U+0085 and other line separators, which JSON leaves unescaped."""
    return [json.loads(l) for l in text.split("\n") if l.strip()]


def assert_one_error_line(p, *needles):
    """Exit status 1 and exactly one 'retort: …' line on stderr mentioning every needle."""
    assert p.returncode == 1, f"exit {p.returncode}, stderr: {p.stderr}"
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one error line, got: {p.stderr!r}"
    assert lines[0].startswith("retort: "), lines[0]
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    assert p.stdout == "", f"no partial output expected, got {p.stdout[:200]!r}"


def save_byte_qwen(d, hidden, intermediate, heads, kv_heads):
    """A tiny random Qwen2 (2 layers, f32, saved by transformers into d) over a byte-level
    tokenizer: 256 bytes, <|im_start|>, <|im_end|> (eos), <think>, </think> — 260 ids."""
    import torch
    import tokenizers
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tk = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken("<|im_start|>", special=True), AddedToken("<|im_end|>", special=True)])
    tk.add_tokens([AddedToken("<think>", special=False), AddedToken("</think>", special=False)])
    cfg = json.load(open(os.path.join(ROOT, "configs", "models", "tiny-qwen2.json")))
    cfg.update(vocab_size=tk.get_vocab_size(), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=2,
               num_attention_heads=heads, num_key_value_heads=kv_heads, eos_token_id=tk.token_to_id("<|im_end|>"))
    torch.manual_seed(5)
    m = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg)).float()
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(1 + 0.2 * torch.randn(p.shape) if "norm" in name else torch.randn(p.shape) / p.shape[-1] ** 0.5)
    m.save_pretrained(str(d))
    tk.save(str(d / "tokenizer.json"))
