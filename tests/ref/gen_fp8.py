"""Expected values for kernels/fp8 (e4m3 encoding, DeepSeek act_quant, block-scaled GEMM) from
torch's float8_e4m3fn and float64 matmuls (independent of retort's code).

Writes REF_DIR/fp8.safetensors, read by tests/unit/test_fp8.c:
  enc_in [N] F32 -> enc_out [N] U8     torch .to(float8_e4m3fn) bytes (|x| <= 448: random over
                                       the whole range, every midpoint between neighbours, ±0)
  aq_x [M, K] F32 -> aq_q [M, K] U8, aq_s [M, K/128] F32
                                       DeepSeek's act_quant: s = amax/448 per 128 channels
                                       (1 for an all-zero block), q = (x / s).to(e4m3fn)
  sw_gu [M, 2I] F32 -> sw_q [M, I] U8, sw_s [M, I/128] F32   silu(g)·u, then act_quant
  gm_w [N, K] U8, gm_ws [ceil(N/128), K/128] F32, gm_out [M, N] F64
                                       out = dequant(aq_q, aq_s) @ dequant(gm_w, gm_ws)ᵀ in f64
  gm_bf16 [M, N] U16                   gm_out rounded to bf16 (torch, from f64 through f32:
                                       the f32 sum is then one more rounding, compared within 1 ulp)
"""
import sys
import numpy as np
import torch
from safetensors.torch import save_file

out = sys.argv[1]
g = torch.Generator().manual_seed(8)
E4 = torch.float8_e4m3fn


def u8(t):
    return t.view(torch.uint8).contiguous()


# every finite non-negative e4m3 value; midpoints between neighbours are exact ties
vals = torch.arange(0, 0x7F, dtype=torch.uint8).view(E4).to(torch.float64)
mids = ((vals[:-1] + vals[1:]) / 2).to(torch.float32)
rnd = (torch.rand(20000, generator=g) * 2 - 1) * torch.pow(2.0, torch.randint(-12, 9, (20000,), generator=g).float())
rnd = rnd.clamp(-448, 448)
enc_in = torch.cat([rnd, mids, -mids, vals.to(torch.float32), torch.tensor([0.0, -0.0, 448.0, -448.0, 2.0**-10])])
enc_out = u8(enc_in.to(E4))


def act_quant(x):
    M, K = x.shape
    xb = x.view(M, K // 128, 128)
    s = xb.abs().amax(-1) / 448.0
    s = torch.where(s > 0, s, torch.ones_like(s))
    q = (xb / s.unsqueeze(-1)).to(E4).view(M, K)
    return q, s


M, K, N, I = 37, 512, 300, 256
aq_x = torch.randn(M, K, generator=g) * torch.pow(2.0, torch.randint(-6, 6, (M, 1), generator=g).float())
aq_x[3, 128:256] = 0.0                      # an all-zero block: scale 1
aq_x[5, 0:128] *= 1e3                       # one loud block
aq_q, aq_s = act_quant(aq_x)

sw_gu = torch.randn(M, 2 * I, generator=g) * 3
gate, up = sw_gu[:, :I], sw_gu[:, I:]
h = gate / (1 + torch.exp(-gate)) * up
sw_q, sw_s = act_quant(h.contiguous())

w = (torch.randn(N, K, generator=g) * 60).clamp(-448, 448).to(E4)
ws = torch.rand((N + 127) // 128, K // 128, generator=g) * 0.02 + 1e-3
wd = w.to(torch.float64) * ws.to(torch.float64).repeat_interleave(128, 0)[:N].repeat_interleave(128, 1)
ad = aq_q.to(torch.float64) * aq_s.to(torch.float64).repeat_interleave(128, 1)
gm_out = ad @ wd.T
gm_bf16 = gm_out.to(torch.float32).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)

save_file({
    "enc_in": enc_in.contiguous(), "enc_out": enc_out,
    "aq_x": aq_x.contiguous(), "aq_q": u8(aq_q), "aq_s": aq_s.contiguous(),
    "sw_gu": sw_gu.contiguous(), "sw_q": u8(sw_q), "sw_s": sw_s.contiguous(),
    "gm_w": u8(w), "gm_ws": ws.contiguous(), "gm_out": gm_out.contiguous(),
    "gm_bf16": torch.from_numpy(gm_bf16.astype(np.uint16).copy()),
}, f"{out}/fp8.safetensors")
