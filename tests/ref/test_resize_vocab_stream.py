"""`retort resize-vocab` streams the model: on a bf16 model of ~240 MB whose largest tensor is
the ~39 MB embedding, its peak resident memory stays far below the model's size (it holds one
grown tensor, never the weights), every tensor but the embedding keeps its stored bytes, the new
rows are the f64 mean of the old ones, and --max-shard-size shards the output as transformers
does. Expected values come from the safetensors and torch packages reading the files."""
import json
import os
import resource  # noqa: F401  (used by the measuring child below)
import shutil
import subprocess
import sys

import pytest
from conftest import run

R1_ADDED = 4   # <｜begin▁of▁sentence｜> <｜end▁of▁sentence｜> <｜User｜> <｜Assistant｜>: not in Qwen3's tokenizer

# Runs argv[1:] and prints the child's peak RSS (kB: getrusage of the children of this fresh
# process, so nothing the test process ran before counts).
MEASURE = ("import resource, subprocess, sys\n"
           "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
           "sys.stderr.write(p.stderr)\n"
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
           "sys.exit(p.returncode)\n")


@pytest.fixture(scope="module")
def qwen_tok_dir(assets):
    d = os.path.join(assets, "tokenizers", "qwen3")
    if not os.path.exists(os.path.join(d, "tokenizer.json")):
        pytest.skip(f"skipped: {d}/tokenizer.json missing")
    return d


def make_model(path, tok_dir, hidden, inter, layers):
    """A random bf16 Qwen2 (tied embeddings) whose vocabulary is the Qwen3 tokenizer's."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM
    V = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    cfg = AutoConfig.for_model("qwen2", vocab_size=V, hidden_size=hidden, intermediate_size=inter,
                               num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                               tie_word_embeddings=True, max_position_embeddings=256, bos_token_id=151643,
                               eos_token_id=151645)
    torch.manual_seed(11)
    m = AutoModelForCausalLM.from_config(cfg).to(torch.bfloat16)
    m.save_pretrained(path, max_shard_size="10GB")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok_dir, f), os.path.join(path, f))
    return V


def peak_kb(retort_bin, model, out, *extra):
    p = subprocess.run([sys.executable, "-c", MEASURE, retort_bin, "resize-vocab", "--model", str(model),
                        "--add-tokens-from", "deepseek-r1", "--out", str(out), *extra],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return int(p.stdout.strip().splitlines()[-1])


def read_weights(d):
    """name -> tensor of a model directory (one file or an index), read by safetensors."""
    from safetensors.torch import load_file
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    w = {}
    for f in files:
        w.update(load_file(os.path.join(d, f)))
    return w


def test_streams_a_model_bigger_than_its_tensors(retort_bin, qwen_tok_dir, tmp_path):
    import torch
    tiny, big = tmp_path / "tiny", tmp_path / "big"
    make_model(tiny, qwen_tok_dir, 32, 64, 1)
    V = make_model(big, qwen_tok_dir, 128, 8192, 32)
    size = os.path.getsize(big / "model.safetensors")
    assert size > 200e6, size
    base = peak_kb(retort_bin, tiny, tmp_path / "tiny_out")   # the binary, the tokenizer, the JSON
    peak = peak_kb(retort_bin, big, tmp_path / "out", "--max-shard-size", "50e6")
    grow = (V + R1_ADDED) * 128 * 2                              # the one buffer: the grown embedding
    print(f"model {size / 1e6:.0f} MB; peak RSS {peak / 1e3:.0f} MB, baseline {base / 1e3:.0f} MB, "
          f"grown embedding {grow / 1e6:.0f} MB")
    if not os.environ.get("ASAN_OPTIONS"):   # ASan's shadow and quarantine are no measure of the code
        # loading the model would cost ≥ 2 bytes a parameter (the old path: 8); streaming: the
        # grown tensor plus at most 64 MB of mapped pages not yet given back, and slack
        assert (peak - base) * 1024 < grow + 64e6 + 30e6, (peak, base)
        assert (peak - base) * 1024 < size / 2, (peak, base)
    # the output: sharded at 50 MB as transformers shards (a new file when the next tensor would pass)
    out = tmp_path / "out"
    idx = json.load(open(out / "model.safetensors.index.json"))
    files = sorted(set(idx["weight_map"].values()))
    assert len(files) > 1 and files[0] == f"model-00001-of-{len(files):05d}.safetensors", files
    for f in files:
        assert os.path.getsize(out / f) < 50e6 + 40e6, f   # a tensor over the limit gets a file of its own
    src, got = read_weights(big), read_weights(out)
    assert set(idx["weight_map"]) == set(got) == set(src)
    assert idx["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in got.values())
    assert json.load(open(out / "config.json"))["vocab_size"] == V + R1_ADDED
    for k, t in src.items():
        if k == "model.embed_tokens.weight":
            continue
        assert got[k].dtype == t.dtype == torch.bfloat16 and torch.equal(got[k].view(torch.int16), t.view(torch.int16)), k
    e, e0 = got["model.embed_tokens.weight"], src["model.embed_tokens.weight"]
    assert e.dtype == torch.bfloat16 and e.shape == (V + R1_ADDED, 128)
    assert torch.equal(e[:V].view(torch.int16), e0.view(torch.int16))
    mean = e0.double().mean(0)
    for r in range(V, V + R1_ADDED):   # the f64 mean, rounded once more to bf16 (half an ulp: 2^-9 relative)
        assert torch.allclose(e[r].double(), mean, rtol=2 ** -8, atol=0), (e[r].double() - mean).abs().max()
    # transformers loads it
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True, dtype=torch.bfloat16)
    assert m.get_input_embeddings().weight.shape == (V + R1_ADDED, 128)


def test_bad_max_shard_size_is_a_usage_error(retort_bin, tmp_path):
    p = run([retort_bin, "resize-vocab", "--model", str(tmp_path), "--add-tokens-from", "qwen", "--out",
             str(tmp_path / "o"), "--max-shard-size", "lots"])
    assert p.returncode == 2 and "--max-shard-size" in p.stderr, p.stderr
