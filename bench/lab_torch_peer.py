"""bench/lab_torch_peer.py — the PyTorch peer of the kernel labs (bench/lab_*.c).

Times the same operations at the same shapes with plain PyTorch on the GPU (cuBLAS through
torch.matmul, F.scaled_dot_product_attention with is_causal over equal-length documents as a
batch, F.rms_norm, autograd backward, torch.optim.AdamW(fused=True), F.cross_entropy on the full
logits) and prints lines named exactly like the labs' lines, so

    python3 bench/lab_torch_peer.py > torch.log
    python3 bench/lab_torch_peer.py --ratios gpu-bench.log torch.log

prints, per variant both ran, retort's time, torch's time and the ratio (torch / retort: above 1
means retort is faster). Timing: CUDA events, 3 warm-up calls, median of LAB_REPS (10) calls.
Run by bench/gpu_student.sh.
"""
import math
import os
import re
import sys

# bench/ holds tokenize.py, which would shadow the standard library's (torch imports it): drop
# this script's folder from the import path (what `python -P` does on Python >= 3.11).
_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _here]


def ratios(lab_log, peer_log):
    pat = re.compile(r"^  (.+?)\s+([0-9.]+) ms\b")
    def parse(path):
        out = {}
        for line in open(path, encoding="utf-8", errors="replace"):
            m = pat.match(line.rstrip("\n"))
            if m:
                out[m.group(1).strip()] = float(m.group(2))
        return out
    a, b = parse(lab_log), parse(peer_log)
    print(f"{'variant':<48} {'retort ms':>10} {'torch ms':>10} {'ratio':>7}")
    for name, t in a.items():
        if name in b:
            print(f"{name:<48} {t:10.3f} {b[name]:10.3f} {b[name] / t:6.2f}x")
    common = [n for n in a if n in b]
    if common:
        g = math.exp(sum(math.log(b[n] / a[n]) for n in common) / len(common))
        print(f"{'geometric mean over ' + str(len(common)) + ' variants':<70} {g:6.2f}x")


def main():
    import torch
    import torch.nn.functional as F

    reps = int(os.environ.get("LAB_REPS", "10"))
    # older torch: no F.rms_norm (2.4) or SDPA enable_gqa (2.5); plain equivalents then
    if not hasattr(F, "rms_norm"):
        def _rms_norm(x, shape, w, eps):
            xf = x.float()
            return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w
        F.rms_norm = _rms_norm
    _sdpa = F.scaled_dot_product_attention
    def sdpa_gqa(q, k, v, is_causal=True, enable_gqa=True):
        try:
            return _sdpa(q, k, v, is_causal=is_causal, enable_gqa=enable_gqa)
        except TypeError:
            g = q.shape[1] // k.shape[1]
            return _sdpa(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1), is_causal=is_causal)
    F.scaled_dot_product_attention = sdpa_gqa
    # LAB_PEER_SMOKE=1: every variant at 1/32 of the sizes on the CPU (checks the script, not speed)
    smoke = bool(os.environ.get("LAB_PEER_SMOKE"))
    dev = "cpu" if smoke else "cuda"
    S = 32 if smoke else 1
    if smoke:
        reps = 1
    bf = torch.bfloat16

    def timeit(fn):
        if smoke:
            import time
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
        for _ in range(3):
            fn()
        times = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        times.sort()
        return times[len(times) // 2]

    def report(name, fn):
        try:
            ms = timeit(fn)
            print(f"  {name:<44} {ms:9.3f} ms", flush=True)
        except torch.cuda.OutOfMemoryError if hasattr(torch.cuda, "OutOfMemoryError") else MemoryError:
            print(f"  {name:<44} out of memory", flush=True)
        except Exception as e:   # one variant failing must not stop the others
            print(f"  {name:<44} failed: {type(e).__name__}: {e}", flush=True)
        if not smoke:
            torch.cuda.empty_cache()

    print(f"torch {torch.__version__} on {'cpu (smoke)' if smoke else torch.cuda.get_device_name()}")
    M = 8192 // S
    # ---- GEMMs (lab_gemm) ----
    shapes = [("qwen7b qkv  3584->4608", 4608, 3584), ("qwen7b o    3584->3584", 3584, 3584),
              ("qwen7b gate_up 3584->37888", 37888, 3584), ("qwen7b down 18944->3584", 3584, 18944),
              ("llama8b qkv 4096->6144", 6144, 4096), ("llama8b gate_up 4096->28672", 28672, 4096),
              ("llama8b down 14336->4096", 4096, 14336)]
    for sname, N, K in shapes:
        N, K = N // S, K // S
        x = torch.randn(M, K, device=dev, dtype=bf)
        w = torch.randn(N, K, device=dev, dtype=bf) * 0.02
        b = torch.randn(N, device=dev, dtype=bf)
        dy = torch.randn(M, N, device=dev, dtype=bf)
        dx = torch.zeros(M, K, device=dev, dtype=bf)
        dw = torch.zeros(N, K, device=dev, dtype=torch.float32)
        report(f"{sname} fwd M={M}", lambda: F.linear(x, w))
        report(f"{sname} fwd+bias M={M}", lambda: F.linear(x, w, b))
        report(f"{sname} bwd_x+= M={M}", lambda: dx.add_(dy @ w))
        report(f"{sname} bwd_w f32+= M={M}", lambda: dw.add_(dy.t() @ x))
        del x, w, b, dy, dx, dw
    # ---- attention (lab_attention) ----
    T = 8192 // S
    for hname, Hq, Hkv, hd in [("qwen7b 28/4x128", 28, 4, 128), ("llama8b 32/8x128", 32, 8, 128),
                               ("hd64 16/4x64", 16, 4, 64)]:
        for L in (T, 2048 // S, 512 // S):
            B = T // L
            q = torch.randn(B, Hq, L, hd, device=dev, dtype=bf, requires_grad=True)
            k = torch.randn(B, Hkv, L, hd, device=dev, dtype=bf, requires_grad=True)
            v = torch.randn(B, Hkv, L, hd, device=dev, dtype=bf, requires_grad=True)
            do = torch.randn(B, Hq, L, hd, device=dev, dtype=bf)
            sdpa = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            report(f"attn fwd {hname} T={T} doc={L}", sdpa)
            o = sdpa()
            report(f"attn bwd {hname} T={T} doc={L}",
                   lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True))
            del q, k, v, do, o
    # ---- memory-bound kernels (lab_memory) ----
    for D in (3584 // S, 4096 // S):
        res = torch.randn(M, D, device=dev, dtype=bf)
        add = torch.randn(M, D, device=dev, dtype=bf) * 0.1
        w = torch.ones(D, device=dev, dtype=bf)
        report(f"rmsnorm fwd D={D} M={M}", lambda: F.rms_norm(res, (D,), w, 1e-6))
        def fwd_res():
            r = res + add
            return F.rms_norm(r, (D,), w, 1e-6)
        report(f"rmsnorm fwd +residual D={D} M={M}", fwd_res)
        xr = res.clone().requires_grad_(True)
        wr = w.clone().float().requires_grad_(True)
        y = F.rms_norm(xr, (D,), wr.to(bf), 1e-6)
        dres = torch.zeros_like(res)
        report(f"rmsnorm bwd +residual D={D} M={M}",
               lambda: dres.add_(torch.autograd.grad(y, (xr, wr), add, retain_graph=True)[0]))
        del res, add, w, xr, wr, y, dres
    q = torch.randn(M, 28, 128, device=dev, dtype=bf)
    pos = torch.arange(M, device=dev) % (4096 // S)
    inv = 1.0 / (1e6 ** (torch.arange(0, 128, 2, device=dev).float() / 128))
    ang = pos[:, None].float() * inv[None]
    cos = torch.cat([ang.cos(), ang.cos()], -1).to(bf)[:, None]
    sin = torch.cat([ang.sin(), ang.sin()], -1).to(bf)[:, None]
    def rope():
        x1, x2 = q[..., :64], q[..., 64:]
        return q * cos + torch.cat([-x2, x1], -1) * sin
    report(f"rope q 28x128 M={M}", rope)
    del q
    Fd = 18944 // S
    g = torch.randn(M, Fd, device=dev, dtype=bf) * 2
    u = torch.randn(M, Fd, device=dev, dtype=bf) * 2
    gu = torch.randn(M, 2 * Fd, device=dev, dtype=bf) * 2
    report(f"swiglu fwd F=18944 M={M}", lambda: F.silu(g) * u)
    def fused():
        a, b_ = gu.chunk(2, -1)
        return F.silu(a) * b_
    report(f"swiglu fwd fused gate_up F=18944 M={M}", fused)
    gg, uu = g.clone().requires_grad_(True), u.clone().requires_grad_(True)
    a = F.silu(gg) * uu
    da = torch.randn_like(a)
    report(f"swiglu bwd F=18944 M={M}", lambda: torch.autograd.grad(a, (gg, uu), da, retain_graph=True))
    del g, u, gu, gg, uu, a, da
    V, D = 151936 // S, 3584 // S
    table = (torch.randn(V, D, device=dev) * 0.02).requires_grad_(True)
    tb = table.detach().to(bf)
    ids = torch.randint(0, V, (M,), device=dev)
    ids[1::2] = ids[1::2] % 2000
    report(f"embed fwd D=3584 M={M}", lambda: F.embedding(ids, tb))
    e = F.embedding(ids, table)
    de = torch.randn_like(e)
    nseg = int(torch.unique(ids).numel())
    report(f"embed bwd D=3584 M={M} ({nseg} ids)", lambda: torch.autograd.grad(e, table, de, retain_graph=True))
    del table, tb, e, de
    n = 1_000_000_000 // (S * S * S)
    p = torch.zeros(n, device=dev, requires_grad=True)
    p.grad = torch.zeros(n, device=dev)
    pb = torch.empty(n, device=dev, dtype=bf)
    opt = torch.optim.AdamW([p], lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=not smoke)
    def adam():
        opt.step()
        pb.copy_(p.detach())
    report("adamw f32 + bf16 copy n=1e9", adam)
    report("grad sumsq n=1e9", lambda: torch.linalg.vector_norm(p.grad))
    del opt, p, pb
    # ---- one Qwen2.5-7B decoder layer, forward + backward (lab_layer) ----
    T, doc, D, Hq, Hkv, hd, Ff = 8192 // S, 2048 // S, 3584 // S, 28, 4, 128, 18944 // S
    P = lambda *shape: (torch.randn(*shape, device=dev, dtype=bf) * 0.02).requires_grad_(True)
    wq, wk, wv, wo = P(Hq * hd, D), P(Hkv * hd, D), P(Hkv * hd, D), P(D, Hq * hd)
    bq, bk, bv = P(Hq * hd), P(Hkv * hd), P(Hkv * hd)
    wg, wu, wd = P(Ff, D), P(Ff, D), P(D, Ff)
    n1 = torch.ones(D, device=dev, dtype=bf, requires_grad=True)
    n2 = torch.ones(D, device=dev, dtype=bf, requires_grad=True)
    x = torch.randn(T, D, device=dev, dtype=bf, requires_grad=True)
    posl = torch.arange(T, device=dev) % doc
    inv = 1.0 / (1e6 ** (torch.arange(0, hd, 2, device=dev).float() / hd))
    ang = posl[:, None].float() * inv[None]
    cs = torch.cat([ang.cos(), ang.cos()], -1).to(bf)[:, None]
    sn = torch.cat([ang.sin(), ang.sin()], -1).to(bf)[:, None]
    def rot(t):
        h = t.shape[-1] // 2
        return t * cs + torch.cat([-t[..., h:], t[..., :h]], -1) * sn
    def layer():
        h1 = F.rms_norm(x, (D,), n1, 1e-6)
        q = rot(F.linear(h1, wq, bq).view(T, Hq, hd))
        k = rot(F.linear(h1, wk, bk).view(T, Hkv, hd))
        v = F.linear(h1, wv, bv).view(T, Hkv, hd)
        B = T // doc
        qb, kb, vb = (t.view(B, doc, -1, hd).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, enable_gqa=True)
        a = a.transpose(1, 2).reshape(T, Hq * hd)
        mid = x + F.linear(a, wo)
        h2 = F.rms_norm(mid, (D,), n2, 1e-6)
        out = mid + F.linear(F.silu(F.linear(h2, wg)) * F.linear(h2, wu), wd)
        out.backward(torch.ones_like(out) * 1e-3)
    report(f"layer fwd+bwd T={T} doc={doc}", layer)
    del wq, wk, wv, wo, bq, bk, bv, wg, wu, wd, n1, n2, x
    # ---- fused cross-entropy (lab_loss): torch forms the full logits ----
    Mc = 32768 // S
    h = (torch.randn(Mc, D, device=dev, dtype=bf)).requires_grad_(True)
    wl = (torch.randn(V, D, device=dev, dtype=bf) * 0.02).requires_grad_(True)
    tg = (torch.arange(Mc, device=dev) * 7919) % V
    def ce_fb():
        loss = F.cross_entropy((h @ wl.t()).float(), tg, reduction="sum") / Mc
        return torch.autograd.grad(loss, (h, wl))
    def ce_f():
        with torch.no_grad():
            return F.cross_entropy((h @ wl.t()).float(), tg, reduction="sum")
    for chunk in (1024, 2048, 4096):   # torch has no chunking: the same full-logits time under each name
        report(f"ce fwd+bwd V={V} D={D} M={Mc} chunk={chunk}", ce_fb)
        report(f"ce loss only M={Mc} chunk={chunk}", ce_f)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--ratios":
        ratios(sys.argv[2], sys.argv[3])
    else:
        main()
