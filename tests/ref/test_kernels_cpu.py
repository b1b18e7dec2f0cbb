"""The student's CPU kernels one at a time, against torch (float64 autograd) and transformers:
RMSNorm forward/backward (kernels/norm.h), RoPE forward/backward with plain theta, linear and
Llama-3 scaling (kernels/rope.h, against transformers' LlamaRotaryEmbedding and
apply_rotary_pos_emb) and DeepSeek's YaRN rope, interleaved or not (against
DeepseekV3RotaryEmbedding and apply_rotary_pos_emb_interleave), every GEMM of kernels/matmul.h (mm_sgemm in its four transpose cases on
each kernel, with strides, alpha and beta; the linear layer forward, its column-split twin and
both gradients), SwiGLU forward/backward (kernels/act.h) and the embedding lookup and its
scatter-add gradient with repeated ids (kernels/embed.h).

tests/tools/kernel_cpu runs one kernel on inputs written here and returns its outputs; every
expected value is computed here, from torch, never by retort. Inputs are fresh random values
(seeded per case, so a failure reproduces), never zeros; accumulated outputs start from random
values, so a kernel that overwrites instead of adding fails.

Tolerances, all for f32 kernels against float64 references (u = 2^-24, the f32 unit roundoff):
  a sum of n f32 terms, in any order, is within n·u·Σ|terms| of the exact sum (the classic
  worst-case bound), plus a few u of |result| for the rounding of the final products; that is
  the bound used for GEMMs (n = K, or M for weight gradients), the RMSNorm backward (n = D for
  the row dot, M for dw) and the embedding gradient (n = repeats of an id). It is far below the
  O(1) error of a wrong index, transpose or missing term (planted bugs fail by 10^3 to 10^6
  times the bound); correct kernels measured at most 0.5 of it (the small sums, where one or
  two roundings are all there is).
  Elementwise maps: RMSNorm y within 8u·|y| (three f32 products and rstd's rounding; a missing
  eps moves y by eps/(2·mean(x²)) ≥ 5e-6 relative here, ten times that), SwiGLU within 2^-20 of
  the magnitude of its terms (expf is within a few ulp; measured ≤ 0.7 of that).
  RoPE: retort forms the angle as (f32)(pos·inv_freq) and takes cosf/sinf of it, as
  transformers does in f32; cos/sin are compared with cos/sin of that same f32 angle taken in
  float64 (within 2^-22: libm's cosf/sinf are within an ulp), the rotation within
  2^-21·(|a| + |b|) of the pair. inv_freq is compared with transformers' own to 2 ulp; the
  rotation is then checked with retort's frequencies in transformers' rotary module, because a
  1-ulp difference in a frequency moves the angle at position 10^5 by ~10^-2 radians.
"""
import math
import os
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _autograd_on():
    """Other modules of the suite switch autograd off at import (torch.set_grad_enabled(False));
    the references here need it."""
    with torch.enable_grad():
        yield
from safetensors.torch import load_file, save_file  # noqa: E402

from conftest import cpu_has_avx2_fma, onednn_loads  # noqa: E402

U = 2.0 ** -24


@pytest.fixture(scope="module")
def kernel_cpu(tools_dir):
    p = os.path.join(tools_dir, "kernel_cpu")
    if not os.access(p, os.X_OK):
        pytest.fail(f"test tool {p} not built (make tests-build)")
    return p


def run_op(tool, tmp_path, op, tensors, **meta):
    """Runs `op` on the tensors (torch, contiguous) with the scalar parameters; returns the outputs
    as float64 torch tensors."""
    inp, out = tmp_path / f"{op}-in.safetensors", tmp_path / f"{op}-out.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(inp),
              metadata={"op": op, **{k: str(v) for k, v in meta.items()}})
    p = subprocess.run([tool, str(inp), str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return {k: v.double() for k, v in load_file(str(out)).items()}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def within(name, got, want, tol):
    """|got − want| ≤ tol elementwise (float64 tensors); the message names the worst element."""
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)}, want {tuple(want.shape)}"
    err = (got - want).abs()
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    excess = err - tol
    i = int(torch.argmax(excess))
    idx = np.unravel_index(i, tuple(got.shape))
    assert excess.flatten()[i] <= 0, (f"{name}: at {tuple(int(j) for j in idx)} got {got.flatten()[i].item():.9g}, "
                                      f"want {want.flatten()[i].item():.9g} (|d| {err.flatten()[i].item():.3g} > "
                                      f"tol {tol.flatten()[i].item() if torch.is_tensor(tol) else tol:.3g})")


# ---- RMSNorm -----------------------------------------------------------------------------------

def rms_reference(x, w, dy, eps):
    """y = w ⊙ x / sqrt(mean(x²) + eps) and its gradients, float64 autograd."""
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    rstd = torch.rsqrt((x64 * x64).mean(-1, keepdim=True) + eps)
    y = x64 * rstd * w64
    (y * dy.double()).sum().backward()
    return y.detach(), rstd.detach().squeeze(-1), x64.grad, w64.grad


@pytest.mark.parametrize("M,D,eps,threads,residual", [
    (17, 64, 1e-5, 1, None), (33, 200, 1e-6, 3, None), (9, 4096, 1e-5, 2, None),
    (12, 96, 1e-6, 2, "out_of_place"), (12, 96, 1e-6, 1, "in_place"),
], ids=["small", "odd_D_pool3", "wide", "residual", "residual_in_place"])
def test_rmsnorm_forward_backward_match_torch_autograd(kernel_cpu, tmp_path, M, D, eps, threads, residual):
    g = gen(M * 1000 + D)
    x = torch.randn(M, D, generator=g) * torch.logspace(-1, 1, M)[:, None]
    x[1] *= 1e-3   # a row whose mean square is below eps: eps dominates rstd there
    w = torch.rand(D, generator=g) + 0.5
    dy = torch.randn(M, D, generator=g)
    dx0, dw0 = torch.randn(M, D, generator=g), torch.randn(D, generator=g)
    t = {"x": x, "w": w, "dy": dy, "dx0": dx0, "dw0": dw0}
    meta = {"eps": repr(eps), "threads": threads}
    if residual:
        t["add"] = torch.randn(M, D, generator=g)
        meta["inplace"] = int(residual == "in_place")
    o = run_op(kernel_cpu, tmp_path, "rmsnorm", t, **meta)

    eps32 = float(np.float32(eps))   # the kernel takes eps as an f32
    norm_in = x.double()
    if residual:
        norm_in = (x + t["add"]).double()   # the f32 sum, one rounding: exact in float64 terms
        within("sum", o["sum"], (x + t["add"]).double(), 0.0)
    y, rstd, gx, gw = rms_reference(norm_in.float(), w, dy, eps32)
    within("rstd", o["rstd"], rstd, 4 * U * rstd.abs())
    within("y", o["y"], y, 8 * U * y.abs() + 1e-30)
    # backward: dx = dx0 + rstd·(g − x̂·mean(g·x̂)), g = dy ⊙ w, x̂ = x·rstd
    xh = norm_in * rstd[:, None]
    gg = dy.double() * w.double()
    scale = rstd[:, None] * (gg.abs() + xh.abs() * (gg * xh).abs().mean(-1, keepdim=True)) + dx0.double().abs()
    within("dx", o["dx"], dx0.double() + gx, (D + 8) * U * scale)
    within("dw", o["dw"], dw0.double() + gw, (M + 4) * U * ((dy.double() * xh).abs().sum(0) + dw0.double().abs()))


def test_rmsnorm_matches_transformers_llama_rmsnorm(kernel_cpu, tmp_path):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    g = gen(7)
    M, D, eps = 10, 128, 1e-5
    x, w = torch.randn(M, D, generator=g) * 3, torch.rand(D, generator=g) + 0.5
    o = run_op(kernel_cpu, tmp_path, "rmsnorm", {"x": x, "w": w, "dy": torch.randn(M, D, generator=g),
                                                 "dx0": torch.randn(M, D, generator=g), "dw0": torch.randn(D, generator=g)},
               eps=repr(eps))
    norm = LlamaRMSNorm(D, eps=eps)
    with torch.no_grad():
        norm.weight.copy_(w)
        ref = norm(x).double()
    # transformers computes in f32 too (mean of squares in f32): a few ulp apart
    within("y vs LlamaRMSNorm", o["y"], ref, 2.0 ** -20 * ref.abs() + 2.0 ** -22 * ref.abs().max())


def test_rmsnorm_results_do_not_depend_on_the_pool_size(kernel_cpu, tmp_path):
    g = gen(11)
    M, D = 40, 72
    t = {"x": torch.randn(M, D, generator=g), "w": torch.rand(D, generator=g) + 0.5, "dy": torch.randn(M, D, generator=g),
         "dx0": torch.randn(M, D, generator=g), "dw0": torch.randn(D, generator=g)}
    a = run_op(kernel_cpu, tmp_path, "rmsnorm", t, threads=1)
    b = run_op(kernel_cpu, tmp_path, "rmsnorm", t, threads=3)
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---- RoPE --------------------------------------------------------------------------------------

ROPES = {
    "theta": dict(rope_type="default", rope_theta=10000.0),
    "qwen_theta": dict(rope_type="default", rope_theta=1000000.0),
    "linear": dict(rope_type="linear", rope_theta=10000.0, factor=4.0),
    "llama3": dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=8192),
}


@pytest.mark.parametrize("hd", [64, 128])
@pytest.mark.parametrize("rope", list(ROPES))
def test_rope_matches_transformers_forward_and_backward(kernel_cpu, tmp_path, rope, hd):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb
    params = ROPES[rope]
    g = gen(hd + len(rope))
    T, H = 23, 3
    pos = torch.cat([torch.arange(8), torch.randint(8, 131072, (T - 8,), generator=g)]).to(torch.int32)
    x, dy = torch.randn(T, H, hd, generator=g), torch.randn(T, H, hd, generator=g)
    meta = {"rope_type": params["rope_type"], "theta": repr(params["rope_theta"])}
    for k in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
        if k in params:
            meta[k] = params[k]
    o = run_op(kernel_cpu, tmp_path, "rope", {"x": x, "dy": dy, "pos": pos}, **meta)

    cfg = LlamaConfig(hidden_size=H * hd, num_attention_heads=H, num_key_value_heads=H, head_dim=hd,
                      max_position_embeddings=131072, rope_parameters=dict(params))
    rot = LlamaRotaryEmbedding(cfg)
    assert rot.attention_scaling == 1.0
    hf_inv = rot.inv_freq.double()
    # 2 ulp (measured: up to 1 — torch's f32 pow is not correctly rounded, retort rounds a double
    # pow once); llama3 8 ulp: transformers also forms the smoothing factor of the medium band in
    # f32, retort in double (measured: up to 4 ulp there)
    ulps = 8 if params["rope_type"] == "llama3" else 2
    within("inv_freq", o["inv_freq"], hf_inv, ulps * 2.0 ** -23 * hf_inv.abs())

    # cos/sin of the f32 angle (one rounding of pos·inv_freq), in float64
    inv32 = o["inv_freq"].float()
    ang = (pos.float()[:, None] * inv32[None, :]).double()
    within("cos", o["cos"], torch.cos(ang), 2.0 ** -22)
    within("sin", o["sin"], torch.sin(ang), 2.0 ** -22)

    # the rotation: transformers' rotary module and apply_rotary_pos_emb (f32), with retort's inv_freq
    rot.inv_freq = inv32.clone()
    q = x.permute(1, 0, 2)[None]                                  # [1, H, T, hd]
    cos, sin = rot(q, pos.long()[None])
    want, _ = apply_rotary_pos_emb(q, q, cos, sin)
    want = want[0].permute(1, 0, 2).double()
    half = hd // 2
    pair = x.abs().double()
    pair = torch.cat([pair[..., :half] + pair[..., half:]] * 2, dim=-1)
    within("y", o["y"], want, 2.0 ** -21 * pair + 1e-30)

    # backward: float64 autograd through apply_rotary_pos_emb with the same cos/sin
    q64 = q.double().detach().requires_grad_()
    y64, _ = apply_rotary_pos_emb(q64, q64.detach(), cos.double(), sin.double())
    (y64 * dy.permute(1, 0, 2)[None].double()).sum().backward()
    gx = q64.grad[0].permute(1, 0, 2)
    dpair = dy.abs().double()
    dpair = torch.cat([dpair[..., :half] + dpair[..., half:]] * 2, dim=-1)
    within("dx", o["dx"], gx, 2.0 ** -21 * dpair + 1e-30)


YARNS = {
    "r1": dict(rope_type="yarn", rope_theta=10000.0, factor=40.0, beta_fast=32, beta_slow=1, mscale=1.0,
               mscale_all_dim=1.0, original_max_position_embeddings=4096),
    "mscale_ratio": dict(rope_type="yarn", rope_theta=10000.0, factor=40.0, beta_fast=32, beta_slow=1, mscale=0.707,
                         mscale_all_dim=1.0, original_max_position_embeddings=4096),
    "theta": dict(rope_type="default", rope_theta=10000.0),
}


@pytest.mark.parametrize("interleaved", [True, False], ids=["interleaved", "rotate_half"])
@pytest.mark.parametrize("rope", list(YARNS))
def test_deepseek_yarn_rope_matches_transformers(kernel_cpu, tmp_path, rope, interleaved):
    """yarn_init + yarn_tables + yarn_rope_apply (kernels/rope.h) vs transformers' DeepseekV3RotaryEmbedding
    and apply_rotary_pos_emb_interleave (or rotate_half), on R1's q layout: the 64 rope values at
    128…191 of each head's 192, the rest untouched."""
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as ds
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    params = YARNS[rope]
    g = gen(len(rope) + interleaved)
    T, H, VS, off, dim = 19, 2, 192, 128, 64
    pos = torch.cat([torch.arange(6), torch.randint(6, 163840, (T - 6,), generator=g)]).to(torch.int32)
    x = torch.randn(T, H, VS, generator=g)
    meta = {k: (repr(v) if isinstance(v, float) else v) for k, v in params.items() if k != "rope_theta"}
    o = run_op(kernel_cpu, tmp_path, "yarn", {"x": x, "pos": pos}, theta=repr(params["rope_theta"]), dim=dim,
               offset=off, interleaved=int(interleaved), **meta)

    cfg = DeepseekV3Config(hidden_size=256, num_attention_heads=H, qk_rope_head_dim=dim, qk_nope_head_dim=off,
                           v_head_dim=32, kv_lora_rank=64, q_lora_rank=64, max_position_embeddings=163840,
                           rope_parameters=dict(params))
    rot = ds.DeepseekV3RotaryEmbedding(cfg)
    hf_inv = rot.inv_freq.double()
    within("inv_freq", o["inv_freq"], hf_inv, 2 * 2.0 ** -23 * hf_inv.abs())   # measured: bit-identical
    within("cs_scale", o["cs_scale"], torch.tensor([float(np.float32(rot.attention_scaling))], dtype=torch.float64), 0.0)

    rot.inv_freq = o["inv_freq"].float().clone()   # the rotation with retort's frequencies (see the module note)
    q = x[..., off:].permute(1, 0, 2)[None]        # [1, H, T, dim]
    cos, sin = rot(q, pos.long()[None])
    if interleaved:
        want, _ = ds.apply_rotary_pos_emb_interleave(q, q, cos, sin)
        a, b = x[..., off::2][..., :dim // 2], x[..., off + 1::2]
    else:
        want, _ = apply_rotary_pos_emb(q, q, cos, sin)
        a, b = x[..., off:off + dim // 2], x[..., off + dim // 2:]
    want = want[0].permute(1, 0, 2).double()
    pair = (a.abs() + b.abs()).double() * float(rot.attention_scaling)
    within("y (rope part)", o["y"][..., off:], want, 2.0 ** -21 * torch.cat([pair, pair], dim=-1) + 1e-30)
    assert torch.equal(o["y"][..., :off], x[..., :off].double()), "values outside the rope part changed"


# ---- GEMM --------------------------------------------------------------------------------------

# the last two: decode products (up to 8 rows x·wᵀ: the streaming kernel; K off multiples of 8)
GEMM_SHAPES = [(7, 13, 5), (67, 45, 300), (3, 70, 260), (1, 33, 17), (8, 37, 771), (5, 7, 9)]


# dnnl@SSE41: oneDNN capped to its SSE4.1 code (ONEDNN_MAX_CPU_ISA), a second code path of it
@pytest.mark.parametrize("kernel", ["auto", "blas", "avx2", "dnnl", "dnnl@SSE41"])
@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in GEMM_SHAPES])
@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)], ids=["nn", "nt", "tn", "tt"])
def test_sgemm_matches_float64_in_every_transpose_case(kernel_cpu, tmp_path, monkeypatch, kernel, shape, ta, tb):
    if kernel == "avx2" and not cpu_has_avx2_fma():
        pytest.skip("skipped: no AVX2+FMA on this CPU (mm_sgemm_with runs OpenBLAS instead)")
    if kernel.startswith("dnnl"):
        if not onednn_loads():
            pytest.skip("skipped: oneDNN (libdnnl.so.3/.so.2) is not installed")
        kernel, _, isa = kernel.partition("@")
        if isa:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    M, N, K = shape
    g = gen(M * 7 + N * 3 + K + 2 * ta + tb)
    ar, ac = (K, M) if ta else (M, K)            # A as stored
    br, bc = (N, K) if tb else (K, N)            # B as stored
    lda, ldb, ldc = ac + 3, bc + 5, N + 2        # row strides wider than the rows
    A = torch.randn(ar, lda, generator=g)
    B = torch.randn(br, ldb, generator=g)
    C0 = torch.randn(M, ldc, generator=g)
    A[:, ac:] = float("nan")                     # padding must never be read
    B[:, bc:] = float("nan")
    for alpha, beta in ((0.75, 0.0), (1.0, 1.0), (-1.5, 0.5)):
        c0 = C0.clone()
        if beta == 0.0:
            c0[:, :N] = float("nan")             # beta = 0 must not read C
        o = run_op(kernel_cpu, tmp_path, "gemm", {"A": A, "B": B, "C0": c0}, ta=ta, tb=tb, M=M, N=N, K=K,
                   alpha=repr(alpha), beta=repr(beta), lda=lda, ldb=ldb, ldc=ldc, kernel=kernel)
        opA = A[:, :ac].double()
        opA = opA.T if ta else opA
        opB = B[:, :bc].double()
        opB = opB.T if tb else opB
        want = C0.double().clone()
        want[:, :N] = alpha * (opA @ opB) + (beta * C0[:, :N].double() if beta else 0.0)
        scale = abs(alpha) * (opA.abs() @ opB.abs()) + abs(beta) * C0[:, :N].double().abs()
        within(f"C[:, :N] (alpha {alpha}, beta {beta})", o["C"][:, :N], want[:, :N], (K + 2) * U * scale + 1e-30)
        # the columns past N (within ldc) are left alone, NaN included
        assert torch.equal(o["C"][:, N:], c0[:, N:].double()), "C's padding was written"


LINEAR_CASES = [(37, 29, 53, 1, True, False), (37, 29, 53, 3, False, True), (5, 131, 64, 2, True, True),
                (2, 7, 300, 1, False, False)]


@pytest.mark.parametrize("M,N,K,threads,bias,accumulate", LINEAR_CASES,
                         ids=["bias", "pool3_accumulate", "decode_rows_bias_acc", "deep_K"])
def test_linear_forward_and_gradients_match_torch_autograd(kernel_cpu, tmp_path, M, N, K, threads, bias, accumulate):
    g = gen(M + N + K + threads)
    x, w, dy = torch.randn(M, K, generator=g), torch.randn(N, K, generator=g) * 0.2, torch.randn(M, N, generator=g)
    dx0, dw0 = torch.randn(M, K, generator=g), torch.randn(N, K, generator=g)
    t = {"x": x, "w": w, "dy": dy, "dx0": dx0, "dw0": dw0}
    if bias:
        t["b"], t["db0"] = torch.randn(N, generator=g), torch.randn(N, generator=g)
    o = run_op(kernel_cpu, tmp_path, "linear", t, threads=threads, accumulate=int(accumulate))

    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    b64 = t["b"].double().requires_grad_() if bias else None
    y = torch.nn.functional.linear(x64, w64, b64)
    (y * dy.double()).sum().backward()
    xa, wa, dya = x.double().abs(), w.double().abs(), dy.double().abs()
    yscale = xa @ wa.T + (t["b"].double().abs() if bias else 0.0)
    within("y", o["y"], y.detach(), (K + 2) * U * yscale + 1e-30)
    within("y_cols", o["y_cols"], y.detach(), (K + 2) * U * yscale + 1e-30)
    dx_want = x64.grad + (dx0.double() if accumulate else 0.0)
    within("dx", o["dx"], dx_want, (N + 2) * U * (dya @ wa + (dx0.double().abs() if accumulate else 0.0)) + 1e-30)
    within("dw", o["dw"], dw0.double() + w64.grad, (M + 2) * U * (dya.T @ xa + dw0.double().abs()) + 1e-30)
    if bias:
        within("db", o["db"], t["db0"].double() + b64.grad, (M + 2) * U * (dya.sum(0) + t["db0"].double().abs()))
    else:
        assert "db" not in o


# ---- SwiGLU ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,threads", [(1000, 1), (4099, 3)])
def test_swiglu_forward_and_backward_match_torch_autograd(kernel_cpu, tmp_path, n, threads):
    gg = gen(n)
    g = torch.randn(n, generator=gg) * 4
    g[:5] = torch.tensor([0.0, -1.2785, 30.0, -30.0, -90.0])   # the zero of silu', saturation both ways
    u, da = torch.randn(n, generator=gg), torch.randn(n, generator=gg)
    o = run_op(kernel_cpu, tmp_path, "swiglu", {"g": g, "u": u, "da": da}, threads=threads)
    g64, u64 = g.double().requires_grad_(), u.double().requires_grad_()
    a = torch.nn.functional.silu(g64) * u64
    (a * da.double()).sum().backward()
    s = torch.sigmoid(g.double())
    tol_a = 2.0 ** -20 * (g.double() * s * u.double()).abs() + 1e-30
    within("a", o["a"], a.detach(), tol_a)
    within("a (written by the backward)", o["a_bwd"], a.detach(), tol_a)
    d = (da.double() * u.double()).abs()
    within("dg", o["dg"], g64.grad, 2.0 ** -20 * d * s * (1 + g.double().abs() * (1 - s)) + 1e-30)
    within("du", o["du"], u64.grad, 2.0 ** -20 * (da.double() * g.double() * s).abs() + 1e-30)


# ---- embedding ---------------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 3])
def test_embedding_forward_and_scatter_add_gradient_match_torch(kernel_cpu, tmp_path, threads):
    g = gen(5 + threads)
    V, D, M = 50, 24, 64
    ids = torch.randint(0, 12, (M,), generator=g, dtype=torch.int32)   # many repeats
    ids[:6] = torch.tensor([3, 3, 3, 49, 0, 3], dtype=torch.int32)       # first, last row, a run
    table, dout, dt0 = torch.randn(V, D, generator=g), torch.randn(M, D, generator=g), torch.randn(V, D, generator=g)
    o = run_op(kernel_cpu, tmp_path, "embed", {"table": table, "ids": ids, "dout": dout, "dtable0": dt0},
               threads=threads)
    t64 = table.double().requires_grad_()
    out = torch.nn.functional.embedding(ids.long(), t64)
    (out * dout.double()).sum().backward()
    within("out", o["out"], out.detach(), 0.0)   # a copy: exact
    count = torch.bincount(ids.long(), minlength=V).double()[:, None]
    mag = torch.zeros(V, D, dtype=torch.float64).index_add_(0, ids.long(), dout.double().abs())
    within("dtable", o["dtable"], dt0.double() + t64.grad, (count + 1) * U * (mag + dt0.double().abs()))
    untouched = count[:, 0] == 0
    assert torch.equal(o["dtable"][untouched], dt0.double()[untouched]), "rows of absent ids changed"


def test_embedding_gradient_does_not_depend_on_the_pool_size(kernel_cpu, tmp_path):
    g = gen(3)
    V, D, M = 20, 40, 200
    t = {"table": torch.randn(V, D, generator=g), "ids": torch.randint(0, V, (M,), generator=g, dtype=torch.int32),
         "dout": torch.randn(M, D, generator=g), "dtable0": torch.randn(V, D, generator=g)}
    a = run_op(kernel_cpu, tmp_path, "embed", t, threads=1)
    b = run_op(kernel_cpu, tmp_path, "embed", t, threads=4)
    assert torch.equal(a["dtable"], b["dtable"])


def test_tool_rejects_an_unknown_op_in_one_line(kernel_cpu, tmp_path):
    inp = tmp_path / "in.safetensors"
    save_file({"x": torch.ones(2)}, str(inp), metadata={"op": "softmax"})
    p = subprocess.run([kernel_cpu, str(inp), str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "unknown op" in p.stderr
