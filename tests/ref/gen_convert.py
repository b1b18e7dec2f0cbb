"""Expected values for kernels/convert from torch (independent of retort's code).

Writes REF_DIR/convert.safetensors, read by tests/unit/test_convert.c:
  fp8_e4m3_bytes [256] U8 / fp8_e4m3_f32 [256] F32   every e4m3fn byte and torch's value
  fp8_e5m2_bytes [256] U8 / fp8_e5m2_f32 [256] F32   the same for e5m2
  f32_in [N] F32 -> bf16_out [N] U16 (torch .to(bfloat16), round-to-nearest-even)
                 -> f16_out  [N] U16 (torch .to(float16))
  f16_bits [65536] U16 / f16_f32 [65536] F32         every half value
  bf16_bits [65536] U16 / bf16_f32 [65536] F32       every bfloat16 value (torch .float())
  dq_w [300, 260] F8_E4M3, dq_scale [3, 3] F32, dq_out [300, 260] F32   block dequantization
"""
import sys
import numpy as np
import torch
from safetensors.torch import save_file

out = sys.argv[1]
g = torch.Generator().manual_seed(1234)

b = torch.arange(256, dtype=torch.uint8)
e4 = b.view(torch.float8_e4m3fn).to(torch.float32)
e5 = b.view(torch.float8_e5m2).to(torch.float32)

# f32 inputs: random normals over many scales, exact ties for bf16 and f16, specials, subnormals
r = torch.randn(20000, generator=g) * torch.pow(2.0, torch.randint(-30, 30, (20000,), generator=g).float())
bits = torch.randint(0, 2**31 - 1, (20000,), generator=g, dtype=torch.int64).to(torch.int32)
rand_bits = bits.view(torch.float32)
ties = []
for hi in [0x3F80, 0x3F81, 0x4049, 0xC2F7, 0x0001, 0x7F7F]:
    ties.append((hi << 16) | 0x8000)  # exactly halfway between two bf16 values
ties = torch.tensor(ties, dtype=torch.int64).to(torch.int32).view(torch.float32)
f16ties = torch.tensor([1.0 + 2**-11, 1.0 + 3 * 2**-11, 65504.0, 65519.0, 65520.0, 65536.0, 2**-24, 2**-25,
                        3 * 2**-26, 2**-14 - 2**-25, 5.96e-8, 1e-10, -0.0, 0.0], dtype=torch.float32)
specials = torch.tensor([float("inf"), float("-inf"), 3.4028235e38, -3.4028235e38, 1.17549435e-38,
                         1e-45, -1e-45], dtype=torch.float32)
f32_in = torch.cat([r, rand_bits[torch.isfinite(rand_bits)], ties, f16ties, specials]).contiguous()
bf16_out = f32_in.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
f16_out = f32_in.to(torch.float16).view(torch.int16).numpy().view(np.uint16)

hb = np.arange(65536, dtype=np.uint16)
hf = torch.from_numpy(hb.view(np.int16).copy()).view(torch.float16).to(torch.float32)
hbf = torch.from_numpy(hb.view(np.int16).copy()).view(torch.bfloat16).float()

rows, cols, blk = 300, 260, 128
w = (torch.randn(rows, cols, generator=g) * 50).clamp(-448, 448).to(torch.float8_e4m3fn)
scale = torch.rand(3, 3, generator=g) * 0.01 + 1e-4
expand = scale.repeat_interleave(blk, 0)[:rows].repeat_interleave(blk, 1)[:, :cols]
dq = w.to(torch.float32) * expand

save_file({
    "fp8_e4m3_bytes": b, "fp8_e4m3_f32": e4, "fp8_e5m2_bytes": b.clone(), "fp8_e5m2_f32": e5,
    "f32_in": f32_in, "bf16_out": torch.from_numpy(bf16_out.astype(np.uint16).copy()),
    "f16_out": torch.from_numpy(f16_out.astype(np.uint16).copy()),
    "f16_bits": torch.from_numpy(hb.copy()), "f16_f32": hf,
    "bf16_bits": torch.from_numpy(hb.copy()), "bf16_f32": hbf,
    "dq_w": w, "dq_scale": scale, "dq_out": dq,
}, f"{out}/convert.safetensors")
