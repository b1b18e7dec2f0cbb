"""Expected values for logit distillation (kernels/loss.h kd_fused) from torch autograd.

The formula is written here from docs/student.md ("Logit distillation"), row by row in
float64, independently of retort's code: per row with a target,
  (1 - alpha) * CE + alpha * T^2 * D(teacher || student)   (plain CE when the row has no teacher entries)
over the teacher's n top tokens plus one tail bucket (teacher masses floored at 1e-9, then
tempered: q ∝ P^(1/T); student p = softmax(z / T)).

Writes REF_DIR/kd.safetensors, read by tests/unit/test_kernels_kd.c:
  kd_h [M, D], kd_w [V, D] F32, kd_target [M] I32 (-1: no loss), kd_ids [M, K] I32,
  kd_lps [M, K] F32, kd_n [M] U8, kd_hp [2] F64 (alpha, jsd beta), and per case
  CASE in forward_t1, forward_t2, reverse_t1, reverse_t2, jsd_t1, jsd_t2, uld_t1, uld_t2:
  CASE_loss [1] F64 (Σ combined loss), CASE_kd [1] F64 (Σ D), CASE_dh [M, D], CASE_dw [V, D]
  F32 — gradients of Σ loss / count.
"""
import sys
import torch
from safetensors.torch import save_file

out = sys.argv[1]
g = torch.Generator().manual_seed(1818)
M, D, V, K = 29, 16, 40, 5
ALPHA, BETA, FLOOR = 0.6, 0.3, 1e-9

h = torch.randn(M, D, generator=g)
w = torch.randn(V, D, generator=g) * 0.4
target = torch.randint(0, V, (M,), generator=g, dtype=torch.int32)
target[torch.rand(M, generator=g) < 0.2] = -1
teacher = torch.randn(M, V, generator=g, dtype=torch.float64) * 2.0
tlp = torch.log_softmax(teacher, dim=-1)
top = torch.topk(tlp, K, dim=-1)
ids = top.indices.to(torch.int32)
lps = top.values.float()
n = torch.randint(0, K + 1, (M,), generator=g)
n[:6] = K
n[6] = 0
# one row whose top-k hold (nearly) all the mass: the tail is floored
lps[7] = torch.tensor([-1e-7] + [-30.0] * (K - 1))
n = n.to(torch.uint8)


def divergence(kind, q, s):
    if kind == "forward":
        return (q * (q.log() - s.clamp_min(1e-300).log())).sum()
    if kind == "reverse":
        return torch.where(s > 0, s * (s.clamp_min(1e-300).log() - q.log()), torch.zeros_like(s)).sum()
    if kind == "jsd":
        m = BETA * q + (1 - BETA) * s
        kl_t = (q * (q.log() - m.log())).sum()
        kl_s = torch.where(s > 0, s * (s.clamp_min(1e-300).log() - m.log()), torch.zeros_like(s)).sum()
        return BETA * kl_t + (1 - BETA) * kl_s
    if kind == "uld":
        return (s - q).abs().sum()
    raise ValueError(kind)


def run(kind, T):
    h64, w64 = h.double().requires_grad_(), w.double().requires_grad_()
    logits = h64 @ w64.T
    total = torch.zeros((), dtype=torch.float64)
    total_kd = 0.0
    count = 0
    for i in range(M):
        y = int(target[i])
        if y < 0:
            continue
        count += 1
        z = logits[i]
        ce = torch.logsumexp(z, 0) - z[y]
        k = int(n[i])
        if k == 0:
            total = total + ce
            continue
        P = lps[i, :k].double().exp()
        if kind == "uld":
            P = torch.sort(P, descending=True).values
        P = torch.cat([P, (1 - P.sum()).clamp_min(0).reshape(1)]).clamp_min(FLOOR)
        q = torch.softmax(P.log() / T, 0)
        p = torch.softmax(z / T, 0)
        if kind == "uld":
            s_top = torch.sort(p, descending=True).values[:k]
        else:
            s_top = p[ids[i, :k].long()]
        s = torch.cat([s_top, (1 - s_top.sum()).reshape(1)])
        d = divergence(kind, q, s)
        total_kd += float(d.detach())
        total = total + (1 - ALPHA) * ce + ALPHA * T * T * d
    (total / count).backward()
    return total.detach().reshape(1), torch.tensor([total_kd], dtype=torch.float64), h64.grad.float(), w64.grad.float()


tensors = {"kd_h": h, "kd_w": w, "kd_target": target, "kd_ids": ids.contiguous(), "kd_lps": lps.contiguous(),
           "kd_n": n, "kd_hp": torch.tensor([ALPHA, BETA], dtype=torch.float64)}
for kind in ("forward", "reverse", "jsd", "uld"):
    for T in (1, 2):
        loss, kd, dh, dw = run(kind, float(T))
        c = f"{kind}_t{T}"
        tensors.update({f"{c}_loss": loss, f"{c}_kd": kd, f"{c}_dh": dh, f"{c}_dw": dw})
save_file(tensors, f"{out}/kd.safetensors")
