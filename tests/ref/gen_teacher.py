"""Expected values for the dense teacher, the paged attention kernel, the sampler and the
engine (teacher/dense, teacher/engine, kernels/sample, attn_paged_fwd) from PyPI torch and
transformers, never from retort's code.

Writes into REF_DIR (argv[1]):
  teacher/llama/, teacher/qwen2/, teacher/qwen3/   tiny checkpoints from configs/models/tiny-llama.json and
                       tiny-qwen2.json (qwen2 with its q/k/v biases, tied embeddings), random
                       weights with enough signal that greedy decoding has clear winners,
                       saved by save_pretrained in F32
  teacher/llama-bf16/, teacher/qwen2-bf16/   the same llama and qwen2 saved in BF16
  teacher/deepseek/    tiny DeepSeek-V3 (configs/models/tiny-deepseek-v3.json, F32, no MTP)
  teacher/deepseek-mtp/  the same weights plus a random MTP layer (draft model)
  teacher_ref.safetensors
    {llama,qwen2,qwen3,deepseek}.p<i>.ids [n] I32, .logits [n, V]  transformers' forward (eager, f32)
    {llama,qwen2}-bf16.p<i>.ids [n], .logits [n, V]  transformers' forward of the bf16 files as f32
    {llama,qwen2,qwen3,deepseek}.g<i>.ids [n] I32, .out [64] I32   transformers' generate, greedy,
                       64 new tokens, EOS disabled
    attn.q [n, Hq, hd], attn.k, attn.v [T, Hkv, hd], attn.o [n, Hq, hd], attn.dims [4] I64
                       (n, Hq, Hkv, hd): the last n of T positions attending causally, by
                       torch.nn.functional.scaled_dot_product_attention with repeat_kv
    sample.logits [4, V], sample.logprobs [4, V]   torch.log_softmax
"""
import json
import math
import os
import sys

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
out_dir = sys.argv[1]
torch.set_grad_enabled(False)
torch.set_num_threads(2)
ref = {}


def preset(name):
    return json.load(open(os.path.join(ROOT, "configs", "models", name)))


def randomize(m, seed):
    g = torch.Generator().manual_seed(seed)
    for name, p in m.named_parameters():
        if name.endswith("norm.weight"):
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
        elif "embed_tokens" in name:   # tied (qwen2): also the head, so logits keep std ~1
            tied = m.config.tie_word_embeddings
            p.copy_(torch.randn(p.shape, generator=g) / (math.sqrt(p.shape[-1]) if tied else 1))
        elif name.endswith("gate.weight"):
            p.copy_(0.08 * torch.randn(p.shape, generator=g))
        elif p.ndim == 1:   # biases
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(1.0 / math.sqrt(p.shape[-1]) * torch.randn(p.shape, generator=g))
    for name, b in m.named_buffers():
        if name.endswith("e_score_correction_bias"):
            b.copy_(0.1 * torch.randn(b.shape, generator=g))


def build(tag, cfg, seed):
    cfg = dict(cfg)
    cfg.pop("quantization_config", None)
    if cfg["model_type"] == "deepseek_v3":
        cfg["num_nextn_predict_layers"] = 0
        cfg["n_group"], cfg["topk_group"] = 4, 2
    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), attn_implementation="eager").float().eval()
    randomize(m, seed)
    d = os.path.join(out_dir, "teacher", tag)
    m.save_pretrained(d)
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    V = cfg["vocab_size"]
    g = torch.Generator().manual_seed(seed + 1)
    for i, n in enumerate([1, 6, 37, 90]):
        ids = torch.randint(0, V, (n,), generator=g)
        ref[f"{tag}.p{i}.ids"] = ids.to(torch.int32)
        ref[f"{tag}.p{i}.logits"] = m(ids[None]).logits[0].float().contiguous()
    m.generation_config.eos_token_id = None
    for i, n in enumerate([3, 20]):
        ids = torch.randint(0, V, (n,), generator=g)
        out = m.generate(ids[None], max_new_tokens=64, do_sample=False, eos_token_id=None, pad_token_id=0)
        ref[f"{tag}.g{i}.ids"] = ids.to(torch.int32)
        ref[f"{tag}.g{i}.out"] = out[0, n:].to(torch.int32).contiguous()
        assert out.shape[1] == n + 64


build("llama", preset("tiny-llama.json"), 21)
build("qwen2", preset("tiny-qwen2.json"), 22)
build("qwen3", preset("tiny-qwen3.json"), 25)   # q/k norms, head_dim 48 decoupled from hidden/heads
build("deepseek", preset("tiny-deepseek-v3.json"), 23)

# teacher/llama-bf16, teacher/qwen2-bf16: the llama and qwen2 models above (qwen2: biases, tied
# embeddings) saved in BF16, with transformers' logits loading them as float32 (bf16 -> f32 is
# exact, so the f32 forward of the bf16 weights): the CPU engine keeps such matrices in bf16.
for tag, seed in (("llama", 21), ("qwen2", 22)):
    m = AutoModelForCausalLM.from_pretrained(os.path.join(out_dir, "teacher", tag), dtype=torch.bfloat16)
    d = os.path.join(out_dir, "teacher", tag + "-bf16")
    m.save_pretrained(d)
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    g = torch.Generator().manual_seed(seed + 100)
    for i, n in enumerate([1, 9, 40]):
        ids = torch.randint(0, m.config.vocab_size, (n,), generator=g)
        ref[f"{tag}-bf16.p{i}.ids"] = ids.to(torch.int32)
        ref[f"{tag}-bf16.p{i}.logits"] = m(ids[None]).logits[0].float().contiguous()

# teacher/deepseek-mtp: the same weights plus an MTP layer (model.layers.<L>.*: a perturbed copy
# of the last decoder layer, random enorm/hnorm/eh_proj/shared_head, the main embedding), for
# draft-and-verify decoding, whose tokens must equal transformers' greedy generate above.
src = os.path.join(out_dir, "teacher", "deepseek")
sd = load_file(os.path.join(src, "model.safetensors"))
cfg = json.load(open(os.path.join(src, "config.json")))
L, D, V = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]
g = torch.Generator().manual_seed(24)
last = f"model.layers.{L - 1}."
for k in list(sd):
    if k.startswith(last):
        v = sd[k]
        sd[f"model.layers.{L}." + k[len(last):]] = (v + 0.3 * v.std() * torch.randn(v.shape, generator=g)) if v.numel() > 1 else v.clone()
sd[f"model.layers.{L}.embed_tokens.weight"] = sd["model.embed_tokens.weight"].clone()
sd[f"model.layers.{L}.enorm.weight"] = 1 + 0.2 * torch.randn(D, generator=g)
sd[f"model.layers.{L}.hnorm.weight"] = 1 + 0.2 * torch.randn(D, generator=g)
sd[f"model.layers.{L}.eh_proj.weight"] = 1 / math.sqrt(2 * D) * torch.randn(D, 2 * D, generator=g)
sd[f"model.layers.{L}.shared_head.norm.weight"] = 1 + 0.2 * torch.randn(D, generator=g)
sd[f"model.layers.{L}.shared_head.head.weight"] = sd["lm_head.weight"].clone()
dst = os.path.join(out_dir, "teacher", "deepseek-mtp")
os.makedirs(dst, exist_ok=True)
save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
cfg["num_nextn_predict_layers"] = 1
json.dump(cfg, open(os.path.join(dst, "config.json"), "w"))

# paged attention
g = torch.Generator().manual_seed(31)
n, T, Hq, Hkv, hd = 5, 77, 6, 2, 16
q = torch.randn(n, Hq, hd, generator=g)
k = torch.randn(T, Hkv, hd, generator=g)
v = torch.randn(T, Hkv, hd, generator=g)
rep = Hq // Hkv
kk = k.repeat_interleave(rep, dim=1).transpose(0, 1)   # [Hq, T, hd]
vv = v.repeat_interleave(rep, dim=1).transpose(0, 1)
mask = torch.zeros(n, T, dtype=torch.bool)
for i in range(n):
    mask[i, : T - n + i + 1] = True
o = torch.nn.functional.scaled_dot_product_attention(q.transpose(0, 1), kk, vv, attn_mask=mask)
ref["attn.q"], ref["attn.k"], ref["attn.v"] = q, k, v
ref["attn.o"] = o.transpose(0, 1).contiguous()
ref["attn.dims"] = torch.tensor([n, Hq, Hkv, hd], dtype=torch.int64)

# sampler logprobs
lg = 3 * torch.randn(4, 1000, generator=g)
ref["sample.logits"] = lg
ref["sample.logprobs"] = torch.log_softmax(lg.double(), dim=-1).float()

save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(out_dir, "teacher_ref.safetensors"))
