"""`retort inspect` on Hugging Face checkpoints written by transformers (llama, qwen2,
deepseek_v3; single file and sharded; F32, BF16, and DeepSeek FP8 with 128×128 block scales,
with and without the MTP layer), and its refusal of every kind of corrupt checkpoint.
Expected counts come from the PyPI safetensors library reading the same files."""
import glob
import json
import os
import shutil
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

from conftest import ROOT, run, assert_one_error_line

PRESETS = os.path.join(ROOT, "configs", "models")
QUANTIZED = ("q_a_proj", "q_b_proj", "q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj", "up_proj",
             "down_proj", "eh_proj")


def preset(name):
    return json.load(open(os.path.join(PRESETS, name + ".json")))


def hf_state(cfg_dict, dtype=torch.float32, seed=0):
    d = dict(cfg_dict)
    d.pop("quantization_config", None)
    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_config(AutoConfig.for_model(**d)).to(dtype)
    return m


def save_hf(tmp_path, name, dtype=torch.float32, shard=None):
    """A checkpoint as transformers writes it."""
    d = tmp_path / f"{name}-{str(dtype)[6:]}-{shard or 'single'}"
    m = hf_state(preset(name), dtype)
    kw = {"max_shard_size": shard} if shard else {}
    m.save_pretrained(str(d), **kw)
    return d


def file_counts(d):
    """(parameters without scales, tensor count, dtypes) read with PyPI safetensors."""
    params, n, dtypes = 0, 0, {}
    for fn in glob.glob(os.path.join(d, "*.safetensors")):
        with safe_open(fn, "pt") as f:
            for k in f.keys():
                s = f.get_slice(k)
                n += 1
                dt = s.get_dtype()
                dtypes[dt] = dtypes.get(dt, 0) + 1
                if not k.endswith(".weight_scale_inv"):
                    numel = 1
                    for x in s.get_shape():
                        numel *= x
                    params += numel
    return params, n, dtypes


def inspect_json(retort_bin, d):
    p = run([retort_bin, "inspect", str(d), "--json"])
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.parametrize("name,arch", [("tiny-llama", "LlamaForCausalLM"), ("tiny-qwen2", "Qwen2ForCausalLM"),
                                       ("tiny-qwen3", "Qwen3ForCausalLM"),
                                       ("tiny-deepseek-v3", "DeepseekV3ForCausalLM")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shard", [None, "1MB"])
def test_transformers_checkpoints(tmp_path, retort_bin, name, arch, dtype, shard):
    d = save_hf(tmp_path, name, dtype, shard)
    if shard:
        assert os.path.exists(d / "model.safetensors.index.json"), "expected a sharded checkpoint"
    j = inspect_json(retort_bin, d)
    params, n, dtypes = file_counts(d)
    assert j["architecture"] == arch
    assert j["model_type"] == preset(name)["model_type"]
    assert j["parameters"] == params
    assert j["tensors"] == n
    assert j["dtypes"] == dtypes
    assert j["files"] == len(glob.glob(os.path.join(d, "*.safetensors")))
    p = run([retort_bin, "inspect", str(d)])
    assert p.returncode == 0 and "parameters" in p.stdout and arch in p.stdout


def quantize_block(w, block=128):
    """DeepSeek's scheme: per 128×128 block, scale = amax / 448, weight = fp8(w / scale)."""
    rows, cols = w.shape
    br, bc = -(-rows // block), -(-cols // block)
    scale = torch.empty(br, bc, dtype=torch.float32)
    q = torch.empty(rows, cols, dtype=torch.float8_e4m3fn)
    for i in range(br):
        for j in range(bc):
            blk = w[i * block:(i + 1) * block, j * block:(j + 1) * block].float()
            s = max(blk.abs().max().item(), 1e-12) / 448.0
            scale[i, j] = s
            q[i * block:(i + 1) * block, j * block:(j + 1) * block] = (blk / s).to(torch.float8_e4m3fn)
    return q, scale


def fp8_deepseek(tmp_path, mtp=True, n_shards=3, drop=None, mutate=None, tag="fp8"):
    """An FP8 DeepSeek-V3 checkpoint shaped like R1's release: projections in e4m3 with
    weight_scale_inv, the rest BF16, the MTP layer as model.layers.<num_hidden_layers>.*."""
    cfg = preset("tiny-deepseek-v3")
    # on-disk names as save_pretrained writes them (in memory, transformers fuses the experts)
    hf_dir = tmp_path / f"{tag}-hf"
    hf_state(cfg).save_pretrained(str(hf_dir))
    sd = {}
    for fn in glob.glob(str(hf_dir / "*.safetensors")):
        with safe_open(fn, "pt") as f:
            sd.update({k: f.get_tensor(k) for k in f.keys()})
    L = cfg["num_hidden_layers"]
    if mtp:
        last = f"model.layers.{L - 1}."
        for k in list(sd):
            if k.startswith(last):
                sd[f"model.layers.{L}." + k[len(last):]] = sd[k].clone()
        h, V = cfg["hidden_size"], cfg["vocab_size"]
        sd[f"model.layers.{L}.embed_tokens.weight"] = torch.randn(V, h)
        sd[f"model.layers.{L}.enorm.weight"] = torch.ones(h)
        sd[f"model.layers.{L}.hnorm.weight"] = torch.ones(h)
        sd[f"model.layers.{L}.eh_proj.weight"] = torch.randn(h, 2 * h) * 0.02
        sd[f"model.layers.{L}.shared_head.norm.weight"] = torch.ones(h)
        sd[f"model.layers.{L}.shared_head.head.weight"] = torch.randn(V, h) * 0.02
    out = {}
    for k, v in sd.items():
        if k.endswith(".weight") and v.ndim == 2 and k.split(".")[-2] in QUANTIZED:
            q, s = quantize_block(v)
            out[k], out[k + "_scale_inv"] = q, s
        elif k.endswith("e_score_correction_bias"):
            out[k] = v.float()
        else:
            out[k] = v.to(torch.bfloat16)
    if drop:
        for k in drop:
            out.pop(k)
    if mutate:
        mutate(out)
    d = tmp_path / tag
    d.mkdir()
    cfg_out = dict(cfg)
    cfg_out["num_nextn_predict_layers"] = 1
    (d / "config.json").write_text(json.dumps(cfg_out))
    names = sorted(out)
    per = -(-len(names) // n_shards)
    wm = {}
    for s in range(n_shards):
        fn = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: out[k].contiguous() for k in names[s * per:(s + 1) * per]}
        save_file(part, str(d / fn), metadata={"format": "pt"})
        wm.update({k: fn for k in part})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    return d, out


@pytest.mark.parametrize("mtp", [True, False])
def test_fp8_deepseek_sharded(tmp_path, retort_bin, mtp):
    d, out = fp8_deepseek(tmp_path, mtp=mtp)
    j = inspect_json(retort_bin, d)
    params, n, dtypes = file_counts(d)
    assert j["architecture"] == "DeepseekV3ForCausalLM" and j["model_type"] == "deepseek_v3"
    assert j["parameters"] == params and j["tensors"] == n == len(out) and j["dtypes"] == dtypes
    assert j["files"] == 3
    assert j["quantization"]["weight_block_size"] == [128, 128]
    assert j["quantization"]["fp8_weights"] == sum(1 for k in out if k.endswith("_scale_inv"))
    assert j["mtp_layers"] == (1 if mtp else 0)


def test_fp8_partial_edge_blocks_have_rounded_up_scales(tmp_path, retort_bin):
    # kv_a_proj_with_mqa is [kv_lora + rope = 80, 256]: one partial block row
    d, out = fp8_deepseek(tmp_path, mtp=False)
    assert list(out["model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv"].shape) == [1, 2]
    assert inspect_json(retort_bin, d)["tensors"] == len(out)


# ---------------------------------------------------------------- refusals

def write_raw(path, header_bytes, data=b"", length=None):
    n = len(header_bytes) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + header_bytes + data)


@pytest.fixture
def llama_dir(tmp_path):
    return save_hf(tmp_path, "tiny-llama")


def corrupt_case(d, kind):
    f = d / "model.safetensors"
    data = f.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    if kind == "empty":
        f.write_bytes(b"")
    elif kind == "truncated":
        f.write_bytes(data[: len(data) // 2])
    elif kind == "tiny":
        f.write_bytes(data[:5])
    elif kind == "header_beyond_file":
        f.write_bytes(struct.pack("<Q", len(data) * 2) + data[8:])
    elif kind == "header_not_json":
        write_raw(f, b"{this is not json" + b" " * 7, body)
    elif kind in ("offsets_out_of_range", "overlap", "shape_mismatch"):
        k = "model.layers.0.input_layernorm.weight"
        b, e = header[k]["data_offsets"]
        if kind == "offsets_out_of_range":
            header[k]["data_offsets"] = [len(body) + 4, len(body) + 4 + (e - b)]
        elif kind == "overlap":
            other = "model.norm.weight"
            header[k]["data_offsets"] = header[other]["data_offsets"]
        else:
            header[k]["shape"] = [header[k]["shape"][0] + 1]
        write_raw(f, json.dumps(header).encode(), body)
    return f


@pytest.mark.parametrize("kind,needles", [
    ("empty", ["empty file"]),
    ("tiny", ["too short"]),
    ("truncated", ["model.safetensors"]),
    ("header_beyond_file", ["runs past the end"]),
    ("header_not_json", ["invalid JSON"]),
    ("offsets_out_of_range", ["model.layers.0.input_layernorm.weight", "beyond the data section"]),
    ("overlap", ["overlap"]),
    ("shape_mismatch", ["model.layers.0.input_layernorm.weight", "bytes"]),
])
def test_corrupt_files_are_refused(llama_dir, retort_bin, kind, needles):
    corrupt_case(llama_dir, kind)
    assert_one_error_line(run([retort_bin, "inspect", str(llama_dir)]), *needles)
    assert_one_error_line(run([retort_bin, "inspect", str(llama_dir), "--json"]), *needles)


def rewrite(d, fn):
    f = d / "model.safetensors"
    with safe_open(str(f), "pt") as s:
        t = {k: s.get_tensor(k) for k in s.keys()}
    fn(t)
    save_file(t, str(f))


def test_missing_tensor(llama_dir, retort_bin):
    rewrite(llama_dir, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    assert_one_error_line(run([retort_bin, "inspect", str(llama_dir)]), "model.layers.1.mlp.up_proj.weight", "missing")


def test_unexpected_tensor(llama_dir, retort_bin):
    rewrite(llama_dir, lambda t: t.__setitem__("model.layers.9.extra.weight", torch.zeros(3)))
    assert_one_error_line(run([retort_bin, "inspect", str(llama_dir)]), "model.layers.9.extra.weight", "unexpected")


def test_misshaped_tensor(llama_dir, retort_bin):
    rewrite(llama_dir, lambda t: t.__setitem__("model.layers.0.self_attn.k_proj.weight", torch.zeros(8, 256)))
    assert_one_error_line(run([retort_bin, "inspect", str(llama_dir)]), "model.layers.0.self_attn.k_proj.weight",
                          "[8, 256]", "[128, 256]")


def test_wrong_dtype(llama_dir, retort_bin):
    rewrite(llama_dir, lambda t: t.__setitem__("model.norm.weight", torch.zeros(256, dtype=torch.int32)))
    assert_one_error_line(run([retort_bin, "inspect", str(llama_dir)]), "model.norm.weight", "I32")


def test_fp8_weight_without_scale(tmp_path, retort_bin):
    k = "model.layers.1.mlp.experts.3.up_proj.weight_scale_inv"
    d, _ = fp8_deepseek(tmp_path, mtp=False, drop=[k])
    assert_one_error_line(run([retort_bin, "inspect", str(d)]), "model.layers.1.mlp.experts.3.up_proj.weight", "scale")


def test_fp8_scale_with_wrong_shape(tmp_path, retort_bin):
    k = "model.layers.0.self_attn.o_proj.weight_scale_inv"
    d, _ = fp8_deepseek(tmp_path, mtp=False, mutate=lambda o: o.__setitem__(k, torch.ones(1, 1)))
    assert_one_error_line(run([retort_bin, "inspect", str(d)]), k, "[1, 1]", "[2, 1]")


def test_partial_mtp_layer(tmp_path, retort_bin):
    d, _ = fp8_deepseek(tmp_path, mtp=True, drop=["model.layers.3.enorm.weight"])
    assert_one_error_line(run([retort_bin, "inspect", str(d)]), "model.layers.3.enorm.weight", "missing")


def test_index_pointing_at_wrong_shard(tmp_path, retort_bin):
    d, out = fp8_deepseek(tmp_path, mtp=False)
    idx = json.loads((d / "model.safetensors.index.json").read_text())
    k = sorted(out)[0]
    idx["weight_map"][k] = "model-00003-of-00003.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(idx))
    assert_one_error_line(run([retort_bin, "inspect", str(d)]), k)


def test_missing_shard(tmp_path, retort_bin):
    d, _ = fp8_deepseek(tmp_path, mtp=False)
    os.remove(d / "model-00002-of-00003.safetensors")
    assert_one_error_line(run([retort_bin, "inspect", str(d)]), "model-00002-of-00003.safetensors")


def test_config_problems(llama_dir, retort_bin, tmp_path):
    cfg = json.loads((llama_dir / "config.json").read_text())
    cfg["model_type"] = "mistral"
    (llama_dir / "config.json").write_text(json.dumps(cfg))
    assert_one_error_line(run([retort_bin, "inspect", str(llama_dir)]), "unknown model_type", "mistral")
    (llama_dir / "config.json").write_text("{not json")
    assert_one_error_line(run([retort_bin, "inspect", str(llama_dir)]), "config.json", "invalid JSON")
    os.remove(llama_dir / "config.json")
    assert_one_error_line(run([retort_bin, "inspect", str(llama_dir)]), "config.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps(preset("tiny-llama")))
    assert_one_error_line(run([retort_bin, "inspect", str(empty)]), "no .safetensors")
    assert_one_error_line(run([retort_bin, "inspect", str(tmp_path / "nope")]), "not a directory")


def test_usage_errors(retort_bin, llama_dir):
    assert run([retort_bin, "inspect"]).returncode == 2
    assert run([retort_bin, "inspect", str(llama_dir), "--bogus"]).returncode == 2
    assert run([retort_bin, "inspect", str(llama_dir), str(llama_dir)]).returncode == 2
    p = run([retort_bin, "inspect", "--help"])
    assert p.returncode == 0 and "usage: retort inspect" in p.stdout
    p = run([retort_bin, "help", "inspect"])
    assert p.returncode == 0 and "usage: retort inspect" in p.stdout
    assert run([retort_bin, "no-such-command"]).returncode == 2
    assert run([retort_bin]).returncode == 2
    p = run([retort_bin, "--help"])
    assert p.returncode == 0 and "inspect" in p.stdout
    p = run([retort_bin, "version"])
    assert p.returncode == 0 and p.stdout.startswith("retort ")


def test_trained_checkpoint_with_optimizer_state_beside_it(tmp_path, retort_bin, tools_dir):
    shard = tmp_path / "s.bin"
    p = run([os.path.join(tools_dir, "student_mkshard"), str(shard), "32", "4", "512", "1"])
    assert p.returncode == 0, p.stderr
    p = run([retort_bin, "train", "--init", os.path.join(PRESETS, "tiny-llama.json"), "--data", str(shard), "--seq", "32",
             "--batch", "2", "--steps", "1", "--lr", "1e-3", "--out", str(tmp_path / "out")])
    assert p.returncode == 0, p.stderr
    d = tmp_path / "out" / "step-1"
    assert (tmp_path / "out" / "step-1.state" / "optimizer.safetensors").exists()
    assert not (d / "optimizer.safetensors").exists()   # the state is beside the model directory
    j = inspect_json(retort_bin, d)
    params, n, _ = file_counts_of(d / "model.safetensors")
    assert j["parameters"] == params and j["tensors"] == n and j["files"] == 1


def file_counts_of(path):
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        return sum(torch.Size(f.get_slice(k).get_shape()).numel() for k in keys), len(keys), None


# ---------------------------------------------------------------- --check-values (issue #16)

def torch_non_finite(d):
    """{tensor: (nan, inf)} for every tensor holding a non-finite value, counted by torch on
    the tensors as PyPI safetensors reads them back."""
    bad = {}
    for fn in glob.glob(os.path.join(d, "*.safetensors")):
        with safe_open(fn, "pt") as f:
            for k in f.keys():
                t = f.get_tensor(k)
                if not t.is_floating_point():
                    continue
                t = t.float()   # e4m3 NaN stays NaN; bf16/f16 Inf stays Inf
                nan, inf = int(t.isnan().sum()), int(t.isinf().sum())
                if nan or inf:
                    bad[k] = (nan, inf)
    return bad


def check_values(retort_bin, d):
    p = run([retort_bin, "inspect", str(d), "--json", "--check-values"])
    return p, (json.loads(p.stdout) if p.stdout.strip() else None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_check_values_finds_nan_and_inf(tmp_path, retort_bin, dtype):
    d = save_hf(tmp_path, "tiny-llama", dtype)
    p, j = check_values(retort_bin, d)
    assert p.returncode == 0, p.stderr
    assert j["values"]["nan"] == 0 and j["values"]["inf"] == 0 and j["values"]["non_finite"] == []
    assert j["values"]["values"] == file_counts(d)[0]

    def poison(t):
        w = t["model.layers.1.self_attn.q_proj.weight"]
        w.view(-1)[[3, 17, 400]] = float("nan")
        n = t["model.norm.weight"]
        n[5], n[9] = float("inf"), float("-inf")
        e = t["model.embed_tokens.weight"]
        e[0, 0], e[7, 3] = float("nan"), float("-inf")
    rewrite(d, poison)
    want = torch_non_finite(d)
    assert len(want) == 3
    p, j = check_values(retort_bin, d)
    assert p.returncode == 1
    got = {b["name"]: (b["nan"], b["inf"]) for b in j["values"]["non_finite"]}
    assert got == want
    assert j["values"]["nan"] == sum(v[0] for v in want.values()) == 4
    assert j["values"]["inf"] == sum(v[1] for v in want.values()) == 3
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("retort: inspect ") and "3 tensors hold non-finite values" in lines[0]
    # the text report lists each tensor with its counts
    p = run([retort_bin, "inspect", str(d), "--check-values"])
    assert p.returncode == 1
    assert "NOT all finite" in p.stdout
    for name, (nan, inf) in want.items():
        row = [l for l in p.stdout.splitlines() if l.strip().startswith("non-finite") and name in l]
        assert len(row) == 1 and f"{nan} NaN, {inf} Inf" in row[0], p.stdout
    # without --check-values inspect only checks the layout, as before
    assert run([retort_bin, "inspect", str(d)]).returncode == 0


def test_check_values_fp8(tmp_path, retort_bin):
    def poison(out):
        w = out["model.layers.0.self_attn.kv_b_proj.weight"]       # float8_e4m3fn
        flat = w.view(torch.uint8).view(-1)
        flat[[1, 2]] = 0x7F                                        # +NaN
        flat[10] = 0xFF                                            # -NaN
        out["model.layers.0.self_attn.o_proj.weight_scale_inv"][0, 0] = float("inf")
    d, out = fp8_deepseek(tmp_path, mtp=False, mutate=poison)
    want = torch_non_finite(d)
    assert want == {"model.layers.0.self_attn.kv_b_proj.weight": (3, 0),
                    "model.layers.0.self_attn.o_proj.weight_scale_inv": (0, 1)}
    p, j = check_values(retort_bin, d)
    assert p.returncode == 1, p.stderr
    assert {b["name"]: (b["nan"], b["inf"]) for b in j["values"]["non_finite"]} == want
    d2, _ = fp8_deepseek(tmp_path, mtp=False, tag="clean")
    p, j = check_values(retort_bin, d2)
    assert p.returncode == 0 and j["values"]["non_finite"] == [], p.stderr


@pytest.mark.parametrize("field,value,needles", [
    ("hidden_size", -64, ['"hidden_size" = -64 is invalid']),
    ("eos_token_id", -5, ['"eos_token_id" -5 is outside the vocabulary [0, 512)']),
    ("eos_token_id", 10 ** 9, ['"eos_token_id" 1000000000 is outside the vocabulary']),
])
def test_config_values_out_of_sense_are_named(llama_dir, retort_bin, field, value, needles):
    cfg = json.loads((llama_dir / "config.json").read_text())
    cfg[field] = value
    (llama_dir / "config.json").write_text(json.dumps(cfg))
    assert_one_error_line(run([retort_bin, "inspect", str(llama_dir)]), *needles)
