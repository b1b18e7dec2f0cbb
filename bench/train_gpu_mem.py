"""Peak GPU memory of a full fine-tune with retort's GPU training design, by arithmetic:
bf16 weights and activations, f32 master weights, f32 gradients, f32 AdamW moments, per-layer
activation checkpointing, the LM head fused with cross-entropy over chunks of rows.

  python bench/train_gpu_mem.py [--model 1.5b|0.5b|CONFIG.json] [--tokens 32768] [--docs 1]
                                [--ce-chunk 4096] [--ranks 1 --zero 0|1|2] [--grad-dtype f32|bf16]

Terms (bytes; N parameters, T tokens of one micro-batch, D hidden, F FFN, L layers, V vocab,
Hq/Hkv heads of hd):
  weights     2N                  bf16 copy the kernels read
  master      4N / P·[zero≥1]     f32 master weights (sharded by ZeRO-1/2 over P ranks)
  moments     8N / P·[zero≥1]     AdamW m and v, f32
  grads       4N / P·[zero=2]     f32 gradient accumulator (ZeRO-2: the reduced shard; the
                                  backward's bucket before reduce-scatter is counted in workspace)
  checkpoints 2·L·T·D             each layer's input, bf16 (the residual stream kept between layers)
  layer       2·T·(4D + 2·Hq·hd + 2·Hkv·hd + 3F) + 4·T·(Hq + 2)
              one layer's forward recomputed in its backward: normed input, q, k, v, attention
              output, mid residual, normed mid, gate, up, SwiGLU output (bf16); log-sum-exp
              per head and two RMSNorm 1/rms per token (f32)
  layer grads 2·T·(2D + 2F) + 2·T·(Hq + 2·Hkv)·hd
              the backward's transients: d(residual) in and out, d(gate), d(up), dq, dk, dv (bf16)
  head        4·c·V·2 + 2·T·D·2   one chunk of c rows of f32 logits and their gradient; the final
              normed hidden and its gradient (bf16)
  workspace   4·max tensor        one bf16→f32 staging / bucket of the largest weight (the
                                  embedding) for the optimizer and the reduce-scatter
Not counted: the CUDA context and cuBLAS/NCCL workspaces (≈ 0.5–1 GiB in practice) and the
allocator's fragmentation; the measured peak on the GPU (bench/train_gpu.sh) is what counts.

This is the design's first arithmetic (ZeRO-0/1/2, kept because tests/unit/test_gpu_train_plan.c
quotes its numbers). The trainer's own per-rank plan — exactly what it allocates, with the
ZeRO-2/3 gradient buckets, ZeRO-3's gathered layers and the optimizer / layer-input offloads —
is `retort train --plan --init CONFIG --ranks N --seq T --zero Z [--json]` (docs/student.md,
"Per-rank memory plan").
"""
import argparse
import json
import os

GiB = 2**30


def load(name):
    here = os.path.dirname(os.path.abspath(__file__))
    p = name if os.path.isfile(name) else os.path.join(here, "..", "configs", "models", f"qwen2.5-{name}.json")
    with open(p) as f:
        return json.load(f)


def estimate(cfg, T, chunk, ranks=1, zero=0, grad_bytes=4):
    D, F, L, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    Hq, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or D // Hq
    tied = cfg.get("tie_word_embeddings", False)
    layer_p = 2 * D + D * Hq * hd + Hq * hd + 2 * (D * Hkv * hd + Hkv * hd) + Hq * hd * D + 3 * D * F
    N = V * D * (1 if tied else 2) + L * layer_p + D
    P = ranks
    rows = [
        ("weights (bf16)", 2 * N),
        ("master weights (f32)", 4 * N / (P if zero >= 1 else 1)),
        ("AdamW moments (f32)", 8 * N / (P if zero >= 1 else 1)),
        (f"gradients ({'f32' if grad_bytes == 4 else 'bf16'})", grad_bytes * N / (P if zero >= 2 else 1)),
        ("layer inputs kept (bf16)", 2 * L * T * D),
        ("one layer recomputed", 2 * T * (4 * D + 2 * Hq * hd + 2 * Hkv * hd + 3 * F) + 4 * T * (Hq + 2)),
        ("its backward transients", 2 * T * (2 * D + 2 * F) + 2 * T * (Hq + 2 * Hkv) * hd),
        (f"LM head + CE, chunk {chunk}", 4 * chunk * V * 2 + 2 * T * D * 2),
        ("workspace (largest tensor, f32)", 4 * V * D),
    ]
    return N, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="1.5b")
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--ce-chunk", type=int, default=4096)
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--zero", type=int, default=0)
    ap.add_argument("--grad-dtype", default="f32", choices=["f32", "bf16"])
    a = ap.parse_args()
    cfg = load(a.model)
    N, rows = estimate(cfg, a.tokens, a.ce_chunk, a.ranks, a.zero, 4 if a.grad_dtype == "f32" else 2)
    print(f"{a.model}: {N:,} parameters, {a.tokens:,} tokens per micro-batch, {a.ranks} rank(s), ZeRO-{a.zero}")
    for name, b in rows:
        print(f"  {name:34s} {b / GiB:8.2f} GiB")
    total = sum(b for _, b in rows)
    print(f"  {'total':34s} {total / GiB:8.2f} GiB  ({total / 1e9:.1f} GB)")


if __name__ == "__main__":
    main()
