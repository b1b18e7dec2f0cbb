/* tests/emu/misc_emu.cpp — the memory-bound student kernels (RMSNorm with the residual, RoPE,
 * SwiGLU, embedding, AdamW, sum of squares, the cross-entropy softmax, the distillation softmax
 * against kd_fused) run on the CPU through
 * tests/emu/cuda_emu.h against their CPU twins. Tolerances as in tests/gpu/test_*_gpu.c (see
 * there for why); exact where those are exact. Built and run by tests/ref/test_cuda_emu.py. */
#define RT_EMU 1
#define RT_HAVE_CUDA 1
#include "tests/emu/cuda_emu.h"

#include "kernels/cuda/act.cu"
#include "kernels/cuda/embed.cu"
#include "kernels/cuda/loss.cu"
#include "kernels/cuda/norm.cu"
#include "kernels/cuda/optim.cu"
#include "kernels/cuda/rope.cu"

#include <stdio.h>
#include <stdlib.h>

#include "kernels/convert.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float randn() {
    auto u = [] {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        return ((float)(rng >> 40) + 0.5f) / 16777216.0f;
    };
    float a = u(), b = u();
    return sqrtf(-2.f * logf(a)) * cosf(6.2831853f * b);
}
static std::vector<float> rnd(size_t n, float s) {
    std::vector<float> x(n);
    for (auto &v : x) v = randn() * s;
    return x;
}
static std::vector<uint16_t> to_bf16(std::vector<float> &x) {
    std::vector<uint16_t> h(x.size());
    cvt_f32_to_bf16(x.data(), h.data(), x.size());
    cvt_bf16_to_f32(h.data(), x.data(), x.size());
    return h;
}
static std::vector<float> from_bf16(const std::vector<uint16_t> &h) {
    std::vector<float> f(h.size());
    cvt_bf16_to_f32(h.data(), f.data(), h.size());
    return f;
}

static int failures = 0;
static void report(bool ok, const char *what, double worst) {
    printf("%-8s %-40s worst err/bound %.3f\n", ok ? "ok" : "FAIL", what, worst);
    if (!ok) failures++;
}
/* |got − want| ≤ rtol·|want| + extra[i] */
static void close(const char *what, const std::vector<float> &got, const std::vector<float> &want, float rtol,
                  const std::vector<float> *extra = nullptr, float atol = 0) {
    double worst = 0;
    bool ok = got.size() == want.size();
    for (size_t i = 0; ok && i < got.size(); i++) {
        double d = fabs((double)got[i] - want[i]), b = atol + rtol * fabs((double)want[i]) + (extra ? (*extra)[i] : 0);
        if (!(d <= b)) ok = false;
        worst = fmax(worst, b > 0 ? d / b : (d > 0 ? 1e9 : 0));
    }
    report(ok, what, worst);
}
static void exact(const char *what, const std::vector<float> &got, const std::vector<float> &want) {
    bool ok = got.size() == want.size() && !memcmp(got.data(), want.data(), got.size() * 4);
    report(ok, what, 0);
}
const float BU = 0.00390625f, FU = 5.9604645e-08f;

/* Qwen3's per-head q/k norm in place on a fused q|k|v row layout: T rows of ld values, H heads of
 * hd at the start of each (the rest of the row untouched); bound as the row norm's (one bf16
 * rounding of the output, f32 sums). */
static void heads_case(int T, int H, int hd, int ld) {
    size_t n = (size_t)T * ld;
    auto x = rnd(n, 2), w = rnd(hd, 0.3f);
    for (auto &v : w) v += 1;
    auto xh = to_bf16(x), wh = to_bf16(w);
    std::vector<float> want = x;
    rmsnorm_heads_fwd(want.data(), ld, T, H, hd, w.data(), 1e-6f);
    unsigned blocks = (unsigned)(((int64_t)T * H + 7) / 8);
    emu::launch(dim3(blocks), dim3(256), 0, [&] { k_rms_heads(xh.data(), ld, T, H, hd, wh.data(), 1e-6f); });
    char what[80];
    snprintf(what, sizeof what, "rmsnorm heads T=%d H=%d hd=%d ld=%d", T, H, hd, ld);
    close(what, from_bf16(xh), want, BU + (hd + 8) * FU);
}

static void norm_case(int M, int D) {
    size_t n = (size_t)M * D;
    auto res = rnd(n, 1), add = rnd(n, 0.5f), w = rnd(D, 0.3f);
    for (auto &x : w) x += 1;
    auto rh = to_bf16(res), ah = to_bf16(add), wh = to_bf16(w);
    std::vector<uint16_t> y(n, 0xffff), y2(n, 0xffff), sum2(n, 0xffff), copy2(n, 0xffff), rh0 = rh;
    std::vector<float> rstd(M, NAN), rstd2(M, NAN);
    int nv = (D / 8 + NT - 1) / NT;
    auto fwd = [&](uint16_t *yy, float *rs, uint16_t *out, const uint16_t *in, const uint16_t *ad) {
        emu::launch(dim3(M), dim3(NT), 0, [&] {
            if (nv <= 1) k_rms_fwd<1>(yy, rs, out, in, ad, wh.data(), D, 1e-6f);
            else if (nv <= 2) k_rms_fwd<2>(yy, rs, out, in, ad, wh.data(), D, 1e-6f);
            else if (nv <= 4) k_rms_fwd<4>(yy, rs, out, in, ad, wh.data(), D, 1e-6f);
            else k_rms_fwd<8>(yy, rs, out, in, ad, wh.data(), D, 1e-6f);
        });
    };
    fwd(y.data(), rstd.data(), rh.data(), rh.data(), ah.data());          /* in place */
    fwd(y2.data(), rstd2.data(), sum2.data(), rh0.data(), ah.data());     /* out of place */
    {
        std::vector<uint16_t> yc(n);
        fwd(yc.data(), NULL, copy2.data(), rh0.data(), NULL);             /* out of place, no addend: a copy */
        report(copy2 == rh0, "rmsnorm fwd out of place without add copies", 0);
        report(sum2 == rh && y2 == y && !memcmp(rstd2.data(), rstd.data(), M * 4),
               "rmsnorm fwd out of place == in place", 0);
    }
    std::vector<float> sum(n), want(n), wr(M);
    for (size_t i = 0; i < n; i++) sum[i] = res[i] + add[i];
    auto sh = to_bf16(sum);
    rmsnorm_fwd(want.data(), wr.data(), sum.data(), w.data(), M, D, 1e-6f, NULL);
    char what[80];
    snprintf(what, sizeof what, "rmsnorm fwd residual D=%d", D);
    exact(what, from_bf16(rh), sum);
    snprintf(what, sizeof what, "rmsnorm fwd y D=%d", D);
    close(what, from_bf16(y), want, BU + (D + 8) * FU);
    close("rmsnorm fwd rstd", rstd, wr, (D + 8) * FU);
    /* backward: x = the rounded residual, dres0 random */
    auto dy = rnd(n, 1), dres0 = rnd(n, 1), dw0 = rnd(D, 1);
    auto dyh = to_bf16(dy), dh = to_bf16(dres0);
    std::vector<float> dw = dw0, part((size_t)((M + ROWS - 1) / ROWS) * D);
    int nb = (M + ROWS - 1) / ROWS;
    auto bbody = [&] {
        if (nv <= 1) k_rms_bwd<1>(dh.data(), part.data(), dyh.data(), sh.data(), wh.data(), wr.data(), M, D);
        else if (nv <= 2) k_rms_bwd<2>(dh.data(), part.data(), dyh.data(), sh.data(), wh.data(), wr.data(), M, D);
        else if (nv <= 4) k_rms_bwd<4>(dh.data(), part.data(), dyh.data(), sh.data(), wh.data(), wr.data(), M, D);
        else k_rms_bwd<8>(dh.data(), part.data(), dyh.data(), sh.data(), wh.data(), wr.data(), M, D);
    };
    emu::launch(dim3(nb), dim3(NT), 0, bbody);
    emu::launch(dim3((D + 255) / 256), dim3(256), 0, [&] { k_rms_dw(dw.data(), part.data(), nb, D); });
    std::vector<float> wdx = dres0, wdw = dw0, ex(n), exw(D, 0);
    rmsnorm_bwd(wdx.data(), wdw.data(), dy.data(), sum.data(), w.data(), wr.data(), M, D, NULL);
    for (int i = 0; i < M; i++) {
        double a = 0;
        for (int j = 0; j < D; j++) a += fabs((double)dy[(size_t)i * D + j] * w[j] * sum[(size_t)i * D + j] * wr[i]);
        a /= D;
        for (int j = 0; j < D; j++) {
            size_t e = (size_t)i * D + j;
            float xh = fabsf(sum[e] * wr[i]), g = fabsf(dy[e] * w[j]);
            ex[e] = wr[i] * (8 * FU * (g + xh * (float)a) + xh * (float)(2 * (D + 8) * a) * FU);
            exw[j] += fabsf(dy[e] * sum[e] * wr[i]);
        }
    }
    for (int j = 0; j < D; j++) exw[j] = exw[j] * (M + 8) * 2 * FU + 2 * FU * fabsf(dw0[j]);
    snprintf(what, sizeof what, "rmsnorm bwd dres D=%d", D);
    close(what, from_bf16(dh), wdx, BU, &ex);
    close("rmsnorm bwd dw", dw, wdw, 0, &exw);
}

static void rope_case(int T, int H, int hd, int pad) {
    int half = hd / 2;
    int64_t ld = (int64_t)H * hd + pad;   // pad > 0: rows inside a wider buffer (fused QKV)
    size_t n = (size_t)T * H * hd;
    auto xs = rnd((size_t)T * ld, 1);
    auto xsh = to_bf16(xs);
    std::vector<float> x(n);
    for (int t = 0; t < T; t++)
        for (int e = 0; e < H * hd; e++) x[(size_t)t * H * hd + e] = xs[(size_t)t * ld + e];
    std::vector<int32_t> pos(T);
    std::vector<float> inv(half), ct((size_t)T * half), st((size_t)T * half);
    for (int t = 0; t < T; t++) pos[t] = (int32_t)((t * 7919) % 32768);
    for (int i = 0; i < half; i++) inv[i] = (float)(1.0 / pow(10000.0, 2.0 * i / hd));
    rope_tables(ct.data(), st.data(), pos.data(), T, inv.data(), half);
    for (int inverse = 0; inverse < 2; inverse++) {
        std::vector<uint16_t> g = xsh;
        float sgn = inverse ? -1.f : 1.f;
        if (half % 8 == 0 && ld % 8 == 0)
            emu::launch(dim3(3), dim3(64), 0, [&] { k_rope8(g.data(), ld, pos.data(), inv.data(), T, H, half, sgn); });
        else
            emu::launch(dim3(3), dim3(64), 0, [&] { k_rope1(g.data(), ld, pos.data(), inv.data(), T, H, half, sgn); });
        std::vector<float> want = x, ex(n), got(n);
        rope_apply(want.data(), ct.data(), st.data(), T, H, hd, inverse, NULL);
        auto gf = from_bf16(g);
        bool pad_ok = true;
        for (int t = 0; t < T; t++) {
            for (int e = 0; e < H * hd; e++) got[(size_t)t * H * hd + e] = gf[(size_t)t * ld + e];
            for (int e = H * hd; e < ld; e++) pad_ok &= g[(size_t)t * ld + e] == xsh[(size_t)t * ld + e];
        }
        for (size_t e = 0; e < n; e++) {
            size_t i = e % hd, base = e - i, j = i < (size_t)half ? i + half : i - half;
            ex[e] = 8 * FU * (fabsf(x[base + i]) + fabsf(x[base + j]));
        }
        char what[80];
        snprintf(what, sizeof what, "rope hd=%d %s%s", hd, inverse ? "inverse" : "forward", pad ? " (strided rows)" : "");
        close(what, got, want, BU, &ex);
        report(pad_ok, "rope leaves the rest of each row alone", 0);
    }
}

static void swiglu_case(int M, int F) {
    int ld = 2 * F;
    size_t n = (size_t)M * F;
    auto gu = rnd((size_t)M * ld, 2), da = rnd(n, 1);
    auto guh = to_bf16(gu), dah = to_bf16(da);
    std::vector<float> g(n), u(n);
    for (int r = 0; r < M; r++)
        for (int c = 0; c < F; c++) g[(size_t)r * F + c] = gu[(size_t)r * ld + c], u[(size_t)r * F + c] = gu[(size_t)r * ld + F + c];
    std::vector<uint16_t> a(n, 0xffff), dgu((size_t)M * ld, 0xffff);
    emu::launch(dim3(2), dim3(64), 0, [&] { k_swiglu_fwd(a.data(), guh.data(), guh.data() + F, M, F, ld); });
    emu::launch(dim3(2), dim3(64), 0,
                [&] { k_swiglu_bwd(dgu.data(), dgu.data() + F, dah.data(), guh.data(), guh.data() + F, M, F, ld); });
    std::vector<float> wa(n), wg(n), wu(n), ea(n), eg(n), eu(n);
    swiglu_bwd(wg.data(), wu.data(), wa.data(), da.data(), g.data(), u.data(), n, NULL);
    for (size_t i = 0; i < n; i++) {
        ea[i] = 8 * FU * fabsf(g[i] * u[i]);
        eu[i] = 8 * FU * fabsf(da[i] * g[i]);
        eg[i] = 8 * FU * fabsf(da[i] * u[i]) * (1 + fabsf(g[i]));
    }
    auto all = from_bf16(dgu);
    std::vector<float> gg(n), gu2(n);
    for (int r = 0; r < M; r++)
        for (int c = 0; c < F; c++) gg[(size_t)r * F + c] = all[(size_t)r * ld + c], gu2[(size_t)r * F + c] = all[(size_t)r * ld + F + c];
    close("swiglu fwd (fused gate_up)", from_bf16(a), wa, BU, &ea);
    close("swiglu bwd dg", gg, wg, BU, &eg);
    close("swiglu bwd du", gu2, wu, BU, &eu);
}

static void embed_case() {
    int V = 23, D = 2056, M = 300;
    auto table = rnd((size_t)V * D, 1), dout = rnd((size_t)M * D, 1), dt0 = rnd((size_t)V * D, 1);
    auto th = to_bf16(table), doh = to_bf16(dout);
    std::vector<int32_t> ids(M), order(M), seg(M + 1);
    for (int i = 0; i < M; i++) ids[i] = (i * 37 + i / 7) % (V - 2);
    int64_t nseg = embed_bwd_plan(ids.data(), M, order.data(), seg.data());
    std::vector<uint16_t> out((size_t)M * D, 0xffff);
    std::vector<float> dt = dt0;
    emu::launch(dim3(4), dim3(128), 0, [&] { k_embed_fwd(out.data(), th.data(), ids.data(), M, D); });
    emu::launch(dim3((unsigned)nseg, (D / 8 + 255) / 256), dim3(256), 0,
                [&] { k_embed_bwd(dt.data(), doh.data(), ids.data(), order.data(), seg.data(), D); });
    std::vector<float> wo((size_t)M * D), wdt = dt0;
    embed_fwd(wo.data(), table.data(), ids.data(), M, D, NULL);
    embed_bwd(wdt.data(), dout.data(), ids.data(), M, D, NULL);
    exact("embed fwd", from_bf16(out), wo);
    exact("embed bwd (bit-identical)", dt, wdt);
    // vocabulary-parallel: rows [7, 7 + 9) of the table; ids outside give zero rows
    std::vector<uint16_t> outr((size_t)M * D, 0xffff);
    emu::launch(dim3(4), dim3(128), 0, [&] { k_embed_fwd_rows(outr.data(), th.data() + 7 * D, ids.data(), M, D, 7, 9); });
    std::vector<float> wr((size_t)M * D, NAN);
    embed_fwd_rows(wr.data(), table.data() + 7 * D, ids.data(), M, D, 7, 9);
    exact("embed fwd, rows 7..15 of the vocabulary", from_bf16(outr), wr);
}

static void optim_case() {
    size_t n = 1003;
    auto p = rnd(n, 0.5f);
    std::vector<float> m(n, 0), v(n, 0), gp = p, gm = m, gv = v;
    std::vector<uint16_t> pb(n);
    adamw_hparams h = {3e-4, 0.9, 0.95, 1e-8, 0.1, 0};
    for (int step = 1; step <= 3; step++) {
        auto g = rnd(n, step == 2 ? 30.f : 1.f);
        float gs = step == 2 ? 0.125f : 1.f;
        h.step = step;
        double bc1 = 1.0 - pow(h.beta1, (double)h.step), bc2 = 1.0 - pow(h.beta2, (double)h.step);
        adam_k k = {(float)(1.0 - h.lr * h.weight_decay), (float)(1.0 - h.beta1), (float)h.beta2, (float)(1.0 - h.beta2),
                    (float)sqrt(bc2), (float)h.eps, (float)(-(h.lr / bc1)), gs};
        emu::launch(dim3(2), dim3(64), 0, [&] { k_adamw4(gp.data(), pb.data(), g.data(), gm.data(), gv.data(), n / 4, k); });
        size_t d = n / 4 * 4;
        emu::launch(dim3(1), dim3(32), 0, [&] {
            k_adamw1(gp.data() + d, pb.data() + d, g.data() + d, gm.data() + d, gv.data() + d, n - d, k);
        });
        if (gs != 1.f) vec_scale(g.data(), n, gs, NULL);
        adamw_step(p.data(), g.data(), m.data(), v.data(), n, &h, NULL);
    }
    exact("adamw p (bit-identical)", gp, p);
    exact("adamw m", gm, m);
    exact("adamw v", gv, v);
    std::vector<uint16_t> wb(n);
    cvt_f32_to_bf16(p.data(), wb.data(), n);
    report(!memcmp(wb.data(), pb.data(), n * 2), "adamw bf16 copy", 0);
    size_t N = 200000;
    auto x = rnd(N, 0.01f);
    size_t nb = (N + SUMSQ_BLOCK - 1) / SUMSQ_BLOCK;
    std::vector<double> part(nb);
    double out = 0;
    emu::launch(dim3((unsigned)nb), dim3(256), 0, [&] { k_sumsq_part(part.data(), x.data(), N); });
    emu::launch(dim3(1), dim3(256), 0, [&] { k_sumsq_total(&out, false, part.data(), nb); });
    double want = vec_sumsq(x.data(), N, NULL);
    report(fabs(out - want) <= 1e-12 * want, "sumsq", fabs(out - want) / (1e-12 * want));
}

static void softmax_ce_case() {
    int n = 7, V = 1000;
    float scale = 0.25f;
    auto z = rnd((size_t)n * V, 3);
    std::vector<int32_t> target(n);
    for (int r = 0; r < n; r++) target[r] = r == 3 ? -1 : (r * 131) % V;
    std::vector<double> rl(n, NAN);
    std::vector<uint16_t> dz((size_t)n * V, 0xffff);
    double total = NAN;
    emu::launch(dim3(n), dim3(SM_T), 0, [&] {
        k_softmax_ce(rl.data(), dz.data(), z.data(), target.data(), NULL, 0, V, scale, 1);
    });
    emu::launch(dim3(1), dim3(256), 0, [&] { k_loss_total(&total, rl.data(), n, 1); });
    std::vector<float> wdz((size_t)n * V, 0), got = from_bf16(dz);
    double wtotal = 0;
    bool lok = true;
    for (int r = 0; r < n; r++) {
        if (target[r] < 0) continue;
        double mx = -1e300, s = 0;
        for (int j = 0; j < V; j++) mx = fmax(mx, z[(size_t)r * V + j]);
        for (int j = 0; j < V; j++) s += exp(z[(size_t)r * V + j] - mx);
        double loss = mx + log(s) - z[(size_t)r * V + target[r]];
        wtotal += loss;
        lok &= fabs(rl[r] - loss) <= 1e-5 + 1e-6 * fabs(loss);
        for (int j = 0; j < V; j++)
            wdz[(size_t)r * V + j] = (float)(scale * (exp(z[(size_t)r * V + j] - mx) / s - (j == target[r])));
    }
    report(lok && fabs(total - wtotal) <= 1e-5 * n, "ce row losses and their sum", fabs(total - wtotal));
    close("ce dz = scale(softmax - onehot)", got, wdz, BU + 1e-5f, nullptr, 1e-9f);
}

/* k_softmax_kd against kd_fused (kernels/cpu/loss.c) on the same logits: with D = V and an
 * identity head the CPU twin's logits are z exactly and its dh is its gradient of the logits. */
static void softmax_kd_case(kd_kind kind, double T, double beta) {
    const int n = 6, V = 600, K = 5;
    const float scale = 0.2f;
    auto z = rnd((size_t)n * V, 2.5f);
    std::vector<int32_t> target(n), ids((size_t)n * K, 0);
    std::vector<float> lps((size_t)n * K, 0.f);
    std::vector<uint8_t> tn(n);
    for (int r = 0; r < n; r++) {
        target[r] = r == 2 ? -1 : (r * 211 + 5) % V;
        tn[r] = r == 4 ? 0 : (uint8_t)(1 + r % K);
        double mass = 0.55 + 0.07 * r;
        for (int a = 0; a < tn[r]; a++) {
            ids[(size_t)r * K + a] = (r * 97 + a * 131 + (a == 1 ? target[r] : 0)) % V;   // distinct; sometimes the target
            lps[(size_t)r * K + a] = (float)log(mass * exp(-0.8 * a) / (1.0 + exp(-0.8) + exp(-1.6) + exp(-2.4) + exp(-3.2)));
        }
    }
    kd_spec kd = {kind, 0.6, T, beta, K, ids.data(), lps.data(), tn.data()};
    std::vector<double> rl(n, NAN), rc(n, NAN), rk(n, NAN);
    std::vector<uint16_t> dz((size_t)n * V, 0xffff);
    kd_dev kv = {(int)kind, K, kd.alpha, T, beta, ids.data(), lps.data(), tn.data()};
    emu::launch(dim3(n), dim3(SM_T), 0, [&] {
        k_softmax_kd(rl.data(), rc.data(), rk.data(), dz.data(), z.data(), target.data(), NULL, 0, V, scale, 1, kv);
    });
    std::vector<float> eye((size_t)V * V, 0.f), wdz((size_t)n * V), dw((size_t)V * V, 0.f);
    for (int j = 0; j < V; j++) eye[(size_t)j * V + j] = 1.f;
    ce_workspace ws;
    ce_workspace_init(&ws, 4, V, V);
    double loss = 0, ce = 0, dsum = 0;
    int ok = kd_fused(&loss, &ce, &dsum, wdz.data(), dw.data(), z.data(), eye.data(), target.data(), n, scale, &kd, &ws, NULL);
    ce_workspace_free(&ws);
    double tl = 0, tc = 0, td = 0;
    for (int r = 0; r < n; r++) tl += rl[r], tc += rc[r], td += rk[r];
    char what[64];
    snprintf(what, sizeof what, "kd %d T=%.1f row losses (loss, CE, D)", (int)kind, T);
    double e = fabs(tl - loss) + fabs(tc - ce) + fabs(td - dsum);
    report(ok == 0 && e <= 1e-5 * (1 + fabs(loss)), what, e / (1e-5 * (1 + fabs(loss))));
    snprintf(what, sizeof what, "kd %d T=%.1f dz (vs kd_fused)", (int)kind, T);
    close(what, from_bf16(dz), wdz, BU + 1e-4f, nullptr, 1e-8f);
}

int main() {
    norm_case(70, 64);
    heads_case(5, 3, 128, 3 * 128 + 2 * 128 + 8);   // q heads of a row with k, v after them
    heads_case(7, 2, 64, 4 * 64);
    norm_case(9, 896);
    norm_case(4, 4096);
    norm_case(2, 12288);
    rope_case(19, 3, 128, 0);
    rope_case(7, 2, 36, 0);
    rope_case(11, 4, 64, 2 * 64);   // q inside [T, (4 + 2·1)·64]
    rope_case(5, 2, 36, 6);
    swiglu_case(5, 48);
    embed_case();
    optim_case();
    softmax_ce_case();
    softmax_kd_case(KD_FORWARD, 1.0, 0);
    softmax_kd_case(KD_REVERSE, 2.0, 0);
    softmax_kd_case(KD_JSD, 1.5, 0.4);
    softmax_kd_case(KD_ULD, 1.0, 0);
    printf("%s\n", failures ? "misc emulation: FAILED" : "misc emulation: all ok");
    return failures ? 1 : 0;
}
