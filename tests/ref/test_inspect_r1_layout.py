"""`retort inspect` on a checkpoint with the exact layout of the DeepSeek-R1 release (61 layers,
256 experts, FP8 e4m3 projections with 128×128 F32 block scales, BF16 norms/embeddings/router,
F32 correction bias, the MTP layer as model.layers.61) across 8 shards. The files are sparse:
headers are real, the 685 GB of data are holes, so this runs in seconds and takes no disk.
Expected counts: the sum over what this script writes, and transformers' own parameter count
for the main model (built on the meta device)."""
import json
import math
import os

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from conftest import ROOT, run

FP8 = "F8_E4M3"


def r1_tensors(c):
    h, V = c["hidden_size"], c["vocab_size"]
    t = {}

    def lin(name, rows, cols):
        t[name + ".weight"] = (FP8, [rows, cols])
        t[name + ".weight_scale_inv"] = ("F32", [math.ceil(rows / 128), math.ceil(cols / 128)])

    def layer(i):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = ("BF16", [h])
        t[p + "post_attention_layernorm.weight"] = ("BF16", [h])
        a = p + "self_attn."
        nh, qk = c["num_attention_heads"], c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
        lin(a + "q_a_proj", c["q_lora_rank"], h)
        t[a + "q_a_layernorm.weight"] = ("BF16", [c["q_lora_rank"]])
        lin(a + "q_b_proj", nh * qk, c["q_lora_rank"])
        lin(a + "kv_a_proj_with_mqa", c["kv_lora_rank"] + c["qk_rope_head_dim"], h)
        t[a + "kv_a_layernorm.weight"] = ("BF16", [c["kv_lora_rank"]])
        lin(a + "kv_b_proj", nh * (c["qk_nope_head_dim"] + c["v_head_dim"]), c["kv_lora_rank"])
        lin(a + "o_proj", h, nh * c["v_head_dim"])
        m = p + "mlp."
        if i < c["first_k_dense_replace"]:
            lin(m + "gate_proj", c["intermediate_size"], h)
            lin(m + "up_proj", c["intermediate_size"], h)
            lin(m + "down_proj", h, c["intermediate_size"])
            return
        t[m + "gate.weight"] = ("BF16", [c["n_routed_experts"], h])
        t[m + "gate.e_score_correction_bias"] = ("F32", [c["n_routed_experts"]])
        f = c["moe_intermediate_size"]
        for e in list(range(c["n_routed_experts"])):
            lin(m + f"experts.{e}.gate_proj", f, h)
            lin(m + f"experts.{e}.up_proj", f, h)
            lin(m + f"experts.{e}.down_proj", h, f)
        lin(m + "shared_experts.gate_proj", f * c["n_shared_experts"], h)
        lin(m + "shared_experts.up_proj", f * c["n_shared_experts"], h)
        lin(m + "shared_experts.down_proj", h, f * c["n_shared_experts"])

    t["model.embed_tokens.weight"] = ("BF16", [V, h])
    for i in range(c["num_hidden_layers"]):
        layer(i)
    t["model.norm.weight"] = ("BF16", [h])
    t["lm_head.weight"] = ("BF16", [V, h])
    L = c["num_hidden_layers"]
    layer(L)
    p = f"model.layers.{L}."
    t[p + "embed_tokens.weight"] = ("BF16", [V, h])
    t[p + "enorm.weight"] = ("BF16", [h])
    t[p + "hnorm.weight"] = ("BF16", [h])
    t[p + "eh_proj.weight"] = ("BF16", [h, 2 * h])
    t[p + "shared_head.norm.weight"] = ("BF16", [h])
    t[p + "shared_head.head.weight"] = ("BF16", [V, h])
    return t


SIZE = {"BF16": 2, "F32": 4, FP8: 1}


def write_sparse_shards(d, tensors, n_shards):
    names = sorted(tensors)
    per = -(-len(names) // n_shards)
    wm = {}
    for s in range(n_shards):
        fn = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for k in names[s * per:(s + 1) * per]:
            dt, shape = tensors[k]
            n = SIZE[dt] * math.prod(shape)
            header[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + n]}
            off += n
            wm[k] = fn
        hb = json.dumps(header).encode()
        hb += b" " * (-len(hb) % 8)
        with open(d / fn, "wb") as f:
            f.write(len(hb).to_bytes(8, "little") + hb)
            f.truncate(8 + len(hb) + off)      # a hole: no disk blocks
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))


def test_r1_release_layout(tmp_path, retort_bin):
    cfg = json.load(open(os.path.join(ROOT, "configs", "models", "deepseek-r1.json")))
    d = tmp_path / "r1"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    tensors = r1_tensors(cfg)
    try:
        write_sparse_shards(d, tensors, 8)
    except OSError as e:
        pytest.skip(f"skipped: cannot create sparse files here ({e})")
    p = run([retort_bin, "inspect", str(d), "--json"], timeout=600)
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    params = sum(math.prod(s) for k, (dt, s) in tensors.items() if not k.endswith("_scale_inv"))
    assert j["parameters"] == params
    # the release's "685B" counts every stored element, scales included: 684.53B
    assert round(sum(math.prod(s) for dt, s in tensors.values()) / 1e9) == 685
    assert j["tensors"] == len(tensors)
    assert j["files"] == 8
    assert j["mtp_layers"] == 1
    assert j["dtypes"] == {dt: sum(1 for v in tensors.values() if v[0] == dt) for dt in ("BF16", "F32", FP8)}
    main = dict(cfg)
    main.pop("quantization_config")
    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(AutoConfig.for_model(**main))
    hf = sum(t.numel() for t in m.state_dict().values())
    assert j["expected_parameters"] == hf == 671026419200
