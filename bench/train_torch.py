"""PyTorch peer of bench/train.c: the same config through transformers on CPU (f32, SDPA
attention), random init, random tokens, every next token a target; forward with labels,
backward, torch.optim.AdamW. One warm-up step, then STEPS timed steps; prints tokens_per_s and tokens_per_cpu_s (per second of process CPU time).

usage: train_torch.py CONFIG.json BATCH SEQ STEPS THREADS"""
import json, os, sys, time, warnings
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()
cfg_path, B, N, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
torch.manual_seed(0)
cfg = AutoConfig.for_model(**json.load(open(cfg_path)))
model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").float().train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
ids = torch.randint(0, cfg.vocab_size, (B, N))
total = cpu = 0.0
for s in range(steps + 1):
    t0, c0 = time.perf_counter(), time.process_time()
    opt.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids, use_cache=False)
    out.loss.backward()
    opt.step()
    if s >= 1:
        total += time.perf_counter() - t0
        cpu += time.process_time() - c0
print(f"params {sum(p.numel() for p in model.parameters())}")
print(f"loss {out.loss.item():.4f}")
print(f"tokens_per_s {B * N * steps / total:.1f}")
print(f"tokens_per_cpu_s {B * N * steps / cpu:.1f}")
