"""Expected values for the DeepSeek-V3 CPU forward (teacher/deepseek, kernels/mla, kernels/moe,
kernels/yarn) from PyPI transformers' DeepseekV3 implementation, never from retort's code.

Writes into REF_DIR (argv[1]):
  deepseek/f32/        tiny DeepSeek-V3 (3 layers: 1 dense + 2 MoE, YaRN with mscale_all_dim
                       != mscale, rms_norm_eps 1e-5) saved by save_pretrained in F32
  deepseek/fp8/        the same architecture (another seed, the preset's YaRN) as DeepSeek
                       ships R1: projections FP8 e4m3 with 128x128 weight_scale_inv, the rest
                       BF16, router bias F32, 3 shards, plus the MTP layer model.layers.3.*
  deepseek_ref.safetensors
    {f32,fp8}.p<i>.ids [n] I32, .logits [n, V] F32   transformers' logits (eager attention, f32;
                       for fp8: transformers on the dequantized weights); prompt lengths 1, 7,
                       33 and 300 (> original_max_position_embeddings = 256)
    mtp.ids [n] I32, mtp.next [n] I32, mtp.logits [n, V], mtp.hidden [n, D]
                       the MTP draft step derived by hand from transformers' modules:
                       x = eh_proj([enorm(embed(next)); hnorm(h)]), h = the main model's final
                       (normed) hidden state; DeepseekV3DecoderLayer(x) -> shared_head
    yarn.{f32,fp8}.inv_freq, .cs_scale [1], .softmax_scale [1]  DeepseekV3RotaryEmbedding and
                       DeepseekV3Attention.scaling
  deepseek_router.safetensors  DeepseekV3TopkRouter on given logits (weight = identity):
    c<k>.logits [N, E], .bias [E], .cfg [5] I64 (E, n_group, topk_group, top_k, norm),
    .scale [1], .idx [N, top_k] I32 and .w [N, top_k] (both sorted by expert id)
  deepseek_mla.safetensors  random MLA inputs and the attention output computed the plain
    way (decompress K/V, causal softmax): q, latent, kv_b, ctx, out, dims [6]
"""
import glob
import json
import math
import os
import sys

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as mdv3

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))
from test_inspect import quantize_block, QUANTIZED  # noqa: E402  DeepSeek's 128x128 scheme

out_dir = sys.argv[1]
torch.set_grad_enabled(False)
ref = {}
LENGTHS = [1, 7, 33, 300]


def preset():
    return json.load(open(os.path.join(ROOT, "configs", "models", "tiny-deepseek-v3.json")))


def randomize(m, seed):
    """Weights with enough signal that a wrong detail shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    for name, p in m.named_parameters():
        if name.endswith("norm.weight"):
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
        elif "embed_tokens" in name:
            p.copy_(torch.randn(p.shape, generator=g))
        elif name.endswith("gate.weight"):
            p.copy_(0.08 * torch.randn(p.shape, generator=g))
        else:
            fan_in = p.shape[-1]
            p.copy_(0.8 / math.sqrt(fan_in) * torch.randn(p.shape, generator=g))
    for name, b in m.named_buffers():
        if name.endswith("e_score_correction_bias"):
            b.copy_(0.1 * torch.randn(b.shape, generator=g))


def build(cfg, seed):
    d = dict(cfg)
    d.pop("quantization_config", None)
    d["num_nextn_predict_layers"] = 0
    conf = AutoConfig.for_model(**d)
    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_config(conf, attn_implementation="eager").float().eval()
    randomize(m, seed)
    return m


def prompts(seed, V):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (n,), generator=g) for n in LENGTHS]


def record(tag, m, ps):
    for i, ids in enumerate(ps):
        ref[f"{tag}.p{i}.ids"] = ids.to(torch.int32)
        ref[f"{tag}.p{i}.logits"] = m(ids[None]).logits[0].float().contiguous()


def record_rope(tag, m):
    rot = m.model.rotary_emb
    ref[f"yarn.{tag}.inv_freq"] = rot.inv_freq.float().contiguous()
    ref[f"yarn.{tag}.cs_scale"] = torch.tensor([float(rot.attention_scaling)])
    ref[f"yarn.{tag}.softmax_scale"] = torch.tensor([float(m.model.layers[0].self_attn.scaling)])


def read_dir(d):
    sd = {}
    for fn in glob.glob(os.path.join(d, "*.safetensors")):
        with safe_open(fn, "pt") as f:
            sd.update({k: f.get_tensor(k) for k in f.keys()})
    return sd


def write_sharded(d, tensors, cfg, n_shards=3):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    names = sorted(tensors)
    per = -(-len(names) // n_shards)
    wm = {}
    for s in range(n_shards):
        fn = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: tensors[k].contiguous() for k in names[s * per:(s + 1) * per]}
        save_file(part, os.path.join(d, fn), metadata={"format": "pt"})
        wm.update({k: fn for k in part})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": wm}, f)


# ---------------------------------------------------------------- F32 checkpoint
cfg32 = preset()
cfg32["rms_norm_eps"] = 1e-5
cfg32["n_group"], cfg32["topk_group"] = 4, 2
cfg32["rope_scaling"] = dict(cfg32["rope_scaling"], mscale=1.0, mscale_all_dim=0.8)
m32 = build(cfg32, seed=11)
m32.save_pretrained(os.path.join(out_dir, "deepseek", "f32"))
record("f32", m32, prompts(1, cfg32["vocab_size"]))
record_rope("f32", m32)

# ---------------------------------------------------------------- FP8 checkpoint with MTP
cfg8 = preset()
m8 = build(cfg8, seed=12)
tmp = os.path.join(out_dir, "deepseek", "fp8-src")
m8.save_pretrained(tmp)
sd = read_dir(tmp)
L, D, V = cfg8["num_hidden_layers"], cfg8["hidden_size"], cfg8["vocab_size"]
g = torch.Generator().manual_seed(13)
last = f"model.layers.{L - 1}."
for k in list(sd):  # the MTP decoder layer: a perturbed copy of the last layer
    if k.startswith(last):
        v = sd[k]
        sd[f"model.layers.{L}." + k[len(last):]] = v + 0.3 * v.std() * torch.randn(v.shape, generator=g) if v.numel() > 1 else v.clone()
sd[f"model.layers.{L}.embed_tokens.weight"] = sd["model.embed_tokens.weight"].clone()
sd[f"model.layers.{L}.enorm.weight"] = 1 + 0.2 * torch.randn(D, generator=g)
sd[f"model.layers.{L}.hnorm.weight"] = 1 + 0.2 * torch.randn(D, generator=g)
sd[f"model.layers.{L}.eh_proj.weight"] = 0.8 / math.sqrt(2 * D) * torch.randn(D, 2 * D, generator=g)
sd[f"model.layers.{L}.shared_head.norm.weight"] = 1 + 0.2 * torch.randn(D, generator=g)
sd[f"model.layers.{L}.shared_head.head.weight"] = 1 / math.sqrt(D) * torch.randn(V, D, generator=g)
stored, deq = {}, {}
for k, v in sd.items():
    if k.endswith(".weight") and v.ndim == 2 and k.split(".")[-2] in QUANTIZED:
        q, s = quantize_block(v)
        stored[k], stored[k + "_scale_inv"] = q, s
        r, c = v.shape
        deq[k] = q.float() * s.repeat_interleave(128, 0)[:r].repeat_interleave(128, 1)[:, :c]
    elif k.endswith("e_score_correction_bias"):
        stored[k] = deq[k] = v.float()
    else:
        stored[k] = v.to(torch.bfloat16)
        deq[k] = stored[k].float()
for fn in glob.glob(os.path.join(tmp, "*")):
    os.remove(fn)
os.rmdir(tmp)
cfg8_out = dict(cfg8, num_nextn_predict_layers=1)
write_sharded(os.path.join(out_dir, "deepseek", "fp8"), stored, cfg8_out)
# transformers on the dequantized weights (main model only)
deq_dir = os.path.join(out_dir, "deepseek", "fp8-deq")
main = {k: v for k, v in deq.items() if not k.startswith(f"model.layers.{L}.")}
cfg_deq = dict(cfg8, num_nextn_predict_layers=0)
cfg_deq.pop("quantization_config")
write_sharded(deq_dir, main, cfg_deq, n_shards=1)
r8 = AutoModelForCausalLM.from_pretrained(deq_dir, dtype=torch.float32, attn_implementation="eager").eval()
record("fp8", r8, prompts(2, V))
record_rope("fp8", r8)

# MTP draft step, from transformers' own modules and the dequantized MTP weights
mp = f"model.layers.{L}."
layer = mdv3.DeepseekV3DecoderLayer(r8.config, layer_idx=L).float().eval()
E = cfg8["n_routed_experts"]
lsd = {}
for k, v in deq.items():
    if k.startswith(mp) and ".mlp.experts." not in k:
        lsd[k[len(mp):]] = v
lsd["mlp.experts.gate_up_proj"] = torch.stack(
    [torch.cat([deq[f"{mp}mlp.experts.{e}.gate_proj.weight"], deq[f"{mp}mlp.experts.{e}.up_proj.weight"]]) for e in range(E)])
lsd["mlp.experts.down_proj"] = torch.stack([deq[f"{mp}mlp.experts.{e}.down_proj.weight"] for e in range(E)])
for k in ["embed_tokens.weight", "enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight",
          "shared_head.head.weight"]:
    lsd.pop(k)
missing, unexpected = layer.load_state_dict(lsd, strict=False)
assert not unexpected and all("e_score" not in k for k in missing) and not missing, (missing, unexpected)
eps = cfg8["rms_norm_eps"]


def rms(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


gm = torch.Generator().manual_seed(14)
ids = torch.randint(0, V, (40,), generator=gm)
nxt = torch.cat([ids[1:], torch.randint(0, V, (1,), generator=gm)])
h = r8.model(ids[None]).last_hidden_state  # after model.norm: what feeds lm_head
x = torch.nn.functional.linear(
    torch.cat([rms(deq[mp + "embed_tokens.weight"][nxt][None], deq[mp + "enorm.weight"]), rms(h, deq[mp + "hnorm.weight"])], -1),
    deq[mp + "eh_proj.weight"])
pos = torch.arange(len(ids))[None]
mask = torch.full((len(ids), len(ids)), float("-inf")).triu(1)[None, None]
y = layer(x, attention_mask=mask, position_ids=pos, position_embeddings=r8.model.rotary_emb(x, pos))
if isinstance(y, tuple):
    y = y[0]
ref["mtp.ids"], ref["mtp.next"] = ids.to(torch.int32), nxt.to(torch.int32)
ref["mtp.hidden"] = y[0].contiguous()
ref["mtp.logits"] = torch.nn.functional.linear(rms(y, deq[mp + "shared_head.norm.weight"]), deq[mp + "shared_head.head.weight"])[0].contiguous()
save_file(ref, os.path.join(out_dir, "deepseek_ref.safetensors"))

# ---------------------------------------------------------------- router
rr = {}
gr = torch.Generator().manual_seed(21)


def router_case(k, logits, bias, n_group, topk_group, top_k, norm, scale):
    N, E = logits.shape
    conf = AutoConfig.for_model("deepseek_v3", hidden_size=E, n_routed_experts=E, n_group=n_group, topk_group=topk_group,
                                num_experts_per_tok=top_k, norm_topk_prob=norm, routed_scaling_factor=scale)
    r = mdv3.DeepseekV3TopkRouter(conf)
    r.weight.copy_(torch.eye(E))
    r.e_score_correction_bias.copy_(bias)
    _, w, idx = r(logits)
    order = idx.argsort(-1)
    rr[f"c{k}.logits"], rr[f"c{k}.bias"] = logits.float().contiguous(), bias.float().contiguous()
    rr[f"c{k}.cfg"] = torch.tensor([E, n_group, topk_group, top_k, int(norm)], dtype=torch.int64)
    rr[f"c{k}.scale"] = torch.tensor([scale], dtype=torch.float32)
    rr[f"c{k}.idx"] = idx.gather(-1, order).to(torch.int32).contiguous()
    rr[f"c{k}.w"] = w.gather(-1, order).float().contiguous()


def logit(p):
    p = torch.tensor(p, dtype=torch.float32)
    return torch.log(p / (1 - p))


# a group whose top-2 sum wins although its best expert is worse than another group's best
adv = torch.stack([logit([0.95, 0.2, 0.2, 0.2, 0.6, 0.61, 0.01, 0.02]),     # top-2: group 1 (1.21) over 0 (1.15)
                   logit([0.1, 0.2, 0.3, 0.9, 0.55, 0.56, 0.4, 0.05])])     # max 0.9 in group 0; sums 1.2 vs 1.11
router_case(0, adv, torch.zeros(8), 2, 1, 2, True, 1.0)
# the bias decides the selection, the weights stay the plain sigmoid scores
router_case(1, logit([[0.9, 0.8, 0.3, 0.31, 0.5, 0.52, 0.1, 0.12]]), torch.tensor([0, 0, .5, .5, 0, 0, 0, 0.]), 4, 1, 2,
            True, 2.5)
router_case(2, torch.randn(64, 16, generator=gr) * 2, torch.randn(16, generator=gr) * 0.3, 4, 2, 4, True, 2.5)
router_case(3, torch.randn(64, 32, generator=gr) * 2, torch.randn(32, generator=gr) * 0.3, 8, 3, 6, False, 1.5)
router_case(4, torch.randn(64, 64, generator=gr), torch.randn(64, generator=gr) * 0.1, 8, 4, 8, True, 2.5)
router_case(5, torch.randn(32, 8, generator=gr) * 3, torch.zeros(8), 1, 1, 3, True, 1.0)
save_file(rr, os.path.join(out_dir, "deepseek_router.safetensors"))

# ---------------------------------------------------------------- MLA attention core
gq = torch.Generator().manual_seed(31)
H, dn, dr, dv, R, T = 3, 16, 8, 12, 24, 37
n = 9
q = torch.randn(n, H, dn + dr, generator=gq)
latent = torch.randn(T, R + dr, generator=gq)
kv_b = torch.randn(H * (dn + dv), R, generator=gq) * 0.3
ctx = torch.arange(T - n + 1, T + 1)  # the last n positions, causal
scale = 0.17
kv = (latent[:, :R] @ kv_b.T).view(T, H, dn + dv)
k = torch.cat([kv[..., :dn], latent[:, None, R:].expand(T, H, dr)], -1)
s = torch.einsum("nhd,thd->hnt", q, k) * scale
s = s.masked_fill(torch.arange(T)[None, None, :] >= ctx[None, :, None], float("-inf"))
o = torch.einsum("hnt,thd->nhd", s.softmax(-1), kv[..., dn:])
save_file({"q": q.contiguous(), "latent": latent, "kv_b": kv_b.contiguous(), "ctx": ctx.to(torch.int32),
           "out": o.reshape(n, H * dv).contiguous(), "dims": torch.tensor([H, dn, dr, dv, R, T], dtype=torch.int64),
           "scale": torch.tensor([scale])}, os.path.join(out_dir, "deepseek_mla.safetensors"))
