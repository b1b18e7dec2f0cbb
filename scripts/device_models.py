"""Random test models for bench/first_light.sh, written where the GPU machine's python (torch,
safetensors) can: a tiny FP8 DeepSeek-V3 (configs/models/tiny-deepseek-v3.json with R1's MLA latent, e4m3 with
128x128 block scales as DeepSeek stores them) and a Qwen2.5-1.5B-shaped model with random bf16
weights (configs/models/qwen2.5-1.5b.json), plus a prompts file for retort generate.

  python3 scripts/device_models.py OUT_DIR     -> OUT_DIR/{tiny-ds,qwen-1.5b,prompts.jsonl}
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DEV = "cuda" if torch.cuda.is_available() else "cpu"
QUANTIZED = {"q_a_proj", "q_b_proj", "q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj",
             "gate_proj", "up_proj", "down_proj"}


def preset(name):
    return json.load(open(os.path.join(ROOT, "configs", "models", name)))


def rand(g, shape, scale):
    return (torch.randn(shape, generator=g, device=DEV, dtype=torch.float32) * scale)


def quantize(w):
    """e4m3 values and one f32 scale per 128x128 block (amax / 448), partial edge blocks too."""
    r, c = w.shape
    br, bc = -(-r // 128), -(-c // 128)
    pad = torch.zeros(br * 128, bc * 128, device=w.device)
    pad[:r, :c] = w
    blocks = pad.view(br, 128, bc, 128)
    amax = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12)
    s = amax / 448.0
    q = (blocks / s[:, None, :, None]).view(br * 128, bc * 128)[:r, :c].to(torch.float8_e4m3fn)
    return q.contiguous(), s.float().contiguous()


def save(d, cfg, tensors):
    os.makedirs(d, exist_ok=True)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=1)
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, os.path.join(d, "model.safetensors"),
              metadata={"format": "pt"})


def qwen(d, cfg, seed):
    g = torch.Generator(device=DEV).manual_seed(seed)
    D, F, L, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    Hq, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = D // Hq
    t = {"model.embed_tokens.weight": rand(g, (V, D), 1.0), "model.norm.weight": 1 + rand(g, (D,), 0.1)}
    if not cfg.get("tie_word_embeddings", False):
        t["lm_head.weight"] = rand(g, (V, D), 1 / math.sqrt(D))
    for i in range(L):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = 1 + rand(g, (D,), 0.1)
        t[p + "post_attention_layernorm.weight"] = 1 + rand(g, (D,), 0.1)
        for n, rows in (("q", Hq * hd), ("k", Hkv * hd), ("v", Hkv * hd)):
            t[p + f"self_attn.{n}_proj.weight"] = rand(g, (rows, D), 1 / math.sqrt(D))
            t[p + f"self_attn.{n}_proj.bias"] = rand(g, (rows,), 0.1)
        t[p + "self_attn.o_proj.weight"] = rand(g, (D, Hq * hd), 1 / math.sqrt(Hq * hd))
        t[p + "mlp.gate_proj.weight"] = rand(g, (F, D), 1 / math.sqrt(D))
        t[p + "mlp.up_proj.weight"] = rand(g, (F, D), 1 / math.sqrt(D))
        t[p + "mlp.down_proj.weight"] = rand(g, (D, F), 1 / math.sqrt(F))
    save(d, cfg, {k: v.to(torch.bfloat16) for k, v in t.items()})


def deepseek(d, cfg, seed):
    """Random weights under DeepSeek-V3's checkpoint names; matrices in QUANTIZED stored as FP8."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    D, V, L, H = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    nope, rope, vd = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    ql, kvl, E = cfg.get("q_lora_rank"), cfg["kv_lora_rank"], cfg["n_routed_experts"]
    F, MF, S = cfg["intermediate_size"], cfg["moe_intermediate_size"], cfg.get("n_shared_experts", 0)
    shapes = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,), "lm_head.weight": (V, D)}
    for i in range(L):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (D,), p + "post_attention_layernorm.weight": (D,),
                       p + "self_attn.kv_a_proj_with_mqa.weight": (kvl + rope, D),
                       p + "self_attn.kv_a_layernorm.weight": (kvl,),
                       p + "self_attn.kv_b_proj.weight": (H * (nope + vd), kvl),
                       p + "self_attn.o_proj.weight": (D, H * vd)})
        if ql:
            shapes.update({p + "self_attn.q_a_proj.weight": (ql, D), p + "self_attn.q_a_layernorm.weight": (ql,),
                           p + "self_attn.q_b_proj.weight": (H * (nope + rope), ql)})
        else:
            shapes[p + "self_attn.q_proj.weight"] = (H * (nope + rope), D)
        if i < cfg.get("first_k_dense_replace", 0):
            shapes.update({p + "mlp.gate_proj.weight": (F, D), p + "mlp.up_proj.weight": (F, D),
                           p + "mlp.down_proj.weight": (D, F)})
            continue
        shapes.update({p + "mlp.gate.weight": (E, D), p + "mlp.gate.e_score_correction_bias": (E,)})
        for e in range(E):
            q = p + f"mlp.experts.{e}."
            shapes.update({q + "gate_proj.weight": (MF, D), q + "up_proj.weight": (MF, D), q + "down_proj.weight": (D, MF)})
        if S:
            q = p + "mlp.shared_experts."
            shapes.update({q + "gate_proj.weight": (MF * S, D), q + "up_proj.weight": (MF * S, D),
                           q + "down_proj.weight": (D, MF * S)})
    out = {}
    for k, shape in shapes.items():
        if k.endswith("norm.weight"):
            w = 1 + rand(g, shape, 0.2)
        elif "embed_tokens" in k:
            w = rand(g, shape, 1.0)
        elif k.endswith("e_score_correction_bias"):
            out[k] = rand(g, shape, 0.1)
            continue
        elif k.endswith("gate.weight"):
            w = rand(g, shape, 0.08)
        else:
            w = rand(g, shape, 0.8 / math.sqrt(shape[-1]))
        if len(shape) == 2 and k.split(".")[-2] in QUANTIZED:
            out[k], out[k + "_scale_inv"] = quantize(w)
        else:
            out[k] = w.to(torch.bfloat16)
    save(d, dict(cfg, num_nextn_predict_layers=0), out)


def main():
    o = sys.argv[1]
    os.makedirs(o, exist_ok=True)
    # the absorbed-MLA kernel is built for R1's latent (kv_lora_rank 512, rope 64) and heads in
    # multiples of 16 (teacher/ds_cuda.h): the tiny preset with those dimensions
    ds_cfg = dict(preset("tiny-deepseek-v3.json"), kv_lora_rank=512, qk_rope_head_dim=64, num_attention_heads=16,
                  num_key_value_heads=16)
    deepseek(os.path.join(o, "tiny-ds"), ds_cfg, 21)
    qwen(os.path.join(o, "qwen-1.5b"), preset("qwen2.5-1.5b.json"), 22)
    g = torch.Generator().manual_seed(23)
    with open(os.path.join(o, "prompts.jsonl"), "w") as f:
        for n in (1, 7, 33, 300):
            f.write(json.dumps({"prompt_ids": torch.randint(0, 1000, (n,), generator=g).tolist()}) + "\n")
    print(f"device_models: {o}/tiny-ds, {o}/qwen-1.5b, {o}/prompts.jsonl")


if __name__ == "__main__":
    main()
