"""The PyTorch peer of bench/train_gpu.sh: full fine-tuning steps of a Qwen2 model with
random weights, the way one would train it well in PyTorch today.

  transformers Qwen2ForCausalLM built from a config (configs/models/qwen2.5-*.json, or any
  HF config.json), f32 parameters (the master weights) under bf16 autocast, SDPA attention
  (the flash backend for causal bf16 on sm80+; flash_attention_2 when the flash-attn package
  is installed and --attn flash2), torch.compile, fused AdamW, activation checkpointing
  (--ckpt, non-reentrant), packed sequences.

Packing. A sequence of --seq tokens holds --docs documents of seq/docs tokens each, with
positions restarting and attention kept inside each document. Documents of equal length
packed end to end are exactly a batch of (batch·docs) sequences of seq/docs tokens, which is
what this script runs (so SDPA keeps its flash kernel; no block-diagonal mask is built).
The loss is the mean next-token cross-entropy over every target of the step (HF's loss).

Printed, one "key value" per line: params, flops_per_token, tokens_per_s, step_s, mfu,
peak_mem_gib, device, attn, compile. FLOPs per token follow the issue's formula:
6·N (N: parameters taking part in matmuls — all of them, less the input embedding when it is
not tied to the LM head) plus attention, 12·layers·heads·head_dim·c per token with c the
mean causal context (L+1)/2 of a document of L tokens (forward 4·…, backward 8·…);
activation recomputation is not counted (model FLOPs). MFU = FLOPs per token × tokens/s /
peak, with the peak from --peak-tflops (default 989, H100 SXM dense bf16). Peak memory is
torch.cuda.max_memory_allocated over the timed steps (weights, gradients and AdamW state
included, allocated before them), in GiB.

CPU smoke test (no GPU): --device cpu --model tiny --no-compile (bf16 autocast on the CPU).
--flops-only prints params and flops_per_token from the config alone (for the retort side);
--print-config the config JSON.
"""
import argparse
import json
import os
import sys
import time

import torch

TINY = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 512, "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 65536, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "tie_word_embeddings": True, "hidden_act": "silu"}


def load_config(name):
    if name == "tiny":
        return dict(TINY)
    here = os.path.dirname(os.path.abspath(__file__))
    for p in (name, os.path.join(here, "..", "configs", "models", f"qwen2.5-{name.lower()}.json")):
        if os.path.isfile(p):
            with open(p) as f:
                return json.load(f)
    sys.exit(f"train_gpu_torch: no config {name!r} (0.5b, 1.5b, tiny or a config.json path)")


def count_params(cfg):
    """Qwen2 parameters from the config alone (q/k/v biases; tied or untied LM head)."""
    D, F, L, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    Hq, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or D // Hq
    layer = 2 * D + D * Hq * hd + Hq * hd + 2 * (D * Hkv * hd + Hkv * hd) + Hq * hd * D + 3 * D * F
    return V * D * (1 if cfg.get("tie_word_embeddings") else 2) + L * layer + D


def flops_per_token(cfg, n_params, doc_len):
    L, H = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // H
    embed = cfg["vocab_size"] * cfg["hidden_size"]
    n_mm = n_params if cfg.get("tie_word_embeddings") else n_params - embed
    return 6 * n_mm + 12 * L * H * hd * (doc_len + 1) / 2


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="0.5b")
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--docs", type=int, default=1, help="equal documents per packed sequence")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "flash2", "eager"])
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--ckpt", action="store_true", help="activation checkpointing per layer")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flops-only", action="store_true", help="print params and flops_per_token, run nothing")
    ap.add_argument("--print-config", action="store_true", help="print the model's config JSON, run nothing")
    a = ap.parse_args()
    if a.seq % a.docs:
        sys.exit("train_gpu_torch: --seq must be a multiple of --docs")
    if a.print_config:
        print(json.dumps(load_config(a.model)))
        return
    if a.flops_only:
        cfg = load_config(a.model)
        n = count_params(cfg)
        print(f"params {n}")
        print(f"flops_per_token {flops_per_token(cfg, n, a.seq // a.docs):.6g}")
        return
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("train_gpu_torch: no CUDA device visible to torch (use --device cpu for the smoke test)")

    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = load_config(a.model)
    attn = {"sdpa": "sdpa", "flash2": "flash_attention_2", "eager": "eager"}[a.attn]
    torch.manual_seed(a.seed)
    hf_cfg = Qwen2Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "torch_dtype")})
    hf_cfg.use_cache = False
    model = Qwen2ForCausalLM._from_config(hf_cfg, attn_implementation=attn, dtype=torch.float32).to(dev)
    model.train()
    if a.ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    n_params = sum(p.numel() for p in model.parameters())
    if n_params != count_params(cfg):
        sys.exit(f"train_gpu_torch: the model has {n_params} parameters, count_params says {count_params(cfg)}")
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
        fused = True
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.1)
        fused = False
    step_model = model if a.no_compile else torch.compile(model)

    doc = a.seq // a.docs
    rows = a.batch * a.docs
    gen = torch.Generator(device="cpu").manual_seed(a.seed)

    def step():
        ids = torch.randint(0, cfg["vocab_size"], (rows, doc), generator=gen).to(dev, non_blocking=True)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
            loss = step_model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(a.warmup):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    sync()
    dt = (time.perf_counter() - t0) / a.steps
    tps = a.batch * a.seq / dt
    fpt = flops_per_token(cfg, n_params, doc)
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    print(f"params {n_params}")
    print(f"flops_per_token {fpt:.6g}")
    print(f"tokens_per_s {tps:.6g}")
    print(f"step_s {dt:.6g}")
    print(f"mfu {fpt * tps / (a.peak_tflops * 1e12):.6g}")
    print(f"peak_mem_gib {peak:.4g}")
    print(f"loss {float(loss.detach()):.6g}")
    print(f"device {name}")
    print(f"attn {attn}{' +ckpt' if a.ckpt else ''}")
    print(f"compile {0 if a.no_compile else 1}")
    print(f"fused_adamw {int(fused)}")


if __name__ == "__main__":
    main()
