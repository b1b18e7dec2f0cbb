"""Expected values for the student's kernels from torch (independent of retort's code).

Writes REF_DIR/kernels_student.safetensors, read by tests/unit/test_kernels_optim.c and
tests/unit/test_kernels_loss.c:
  adamw_p0 [P] F32, adamw_grads [20, P] F32, adamw_lr [20] F64, adamw_hp [4] F64 (beta1, beta2,
  eps, weight_decay), adamw_params [20, P] F32 — torch.optim.AdamW (single-tensor path) after
  each step given those gradients and per-step learning rates; adamw_m / adamw_v [P] the moments
  at the end.
  ce_h [M, D] F32, ce_w [V, D] F32, ce_target [M] I32 (−1: no loss), ce_loss_sum [1] F64,
  ce_dh [M, D], ce_dw [V, D] F32 — gradients of sum(loss)/count via autograd (float64).
"""
import sys
import torch
from safetensors.torch import save_file

out = sys.argv[1]
g = torch.Generator().manual_seed(99)

P, STEPS = 1000, 20
p0 = torch.randn(P, generator=g) * 0.5
grads = torch.randn(STEPS, P, generator=g) * torch.logspace(-4, 0, STEPS)[:, None]
lrs = torch.linspace(1e-3, 2e-4, STEPS, dtype=torch.float64)
beta1, beta2, eps, wd = 0.9, 0.95, 1e-8, 0.1
param = torch.nn.Parameter(p0.clone())
opt = torch.optim.AdamW([param], lr=1e-3, betas=(beta1, beta2), eps=eps, weight_decay=wd, foreach=False)
history = []
for s in range(STEPS):
    for grp in opt.param_groups:
        grp["lr"] = float(lrs[s])
    param.grad = grads[s].clone()
    opt.step()
    history.append(param.detach().clone())
st = opt.state[param]

M, D, V = 37, 24, 50
h = torch.randn(M, D, generator=g)
w = torch.randn(V, D, generator=g) * 0.3
target = torch.randint(0, V, (M,), generator=g, dtype=torch.int32)
target[torch.rand(M, generator=g) < 0.3] = -1
h64, w64 = h.double().requires_grad_(), w.double().requires_grad_()
keep = target >= 0
logits = h64 @ w64.T
losses = torch.nn.functional.cross_entropy(logits[keep], target[keep].long(), reduction="none")
loss_sum = losses.sum()
(loss_sum / int(keep.sum())).backward()

save_file({
    "adamw_p0": p0, "adamw_grads": grads.contiguous(), "adamw_lr": lrs,
    "adamw_hp": torch.tensor([beta1, beta2, eps, wd], dtype=torch.float64),
    "adamw_params": torch.stack(history).contiguous(), "adamw_m": st["exp_avg"].clone(), "adamw_v": st["exp_avg_sq"].clone(),
    "ce_h": h, "ce_w": w, "ce_target": target, "ce_loss_sum": loss_sum.detach().reshape(1),
    "ce_dh": h64.grad.float(), "ce_dw": w64.grad.float(),
}, f"{out}/kernels_student.safetensors")
