/* tests/emu/attn_emu.cpp — the flash attention kernels of kernels/cuda/attention.cu, run on the
 * CPU through the emulator in tests/emu/cuda_emu.h, against the CPU twin attn_fwd / attn_bwd
 * (kernels/cpu/attention.c, itself tested against torch SDPA). Same inputs and tolerances as
 * tests/gpu/test_attention_gpu.c (see there for why): packed documents of mixed lengths, GQA,
 * hd 64 and 128, with tiles cut by the sequence end. Prints one line per comparison and exits
 * 1 on any failure. Built and run by tests/ref/test_cuda_emu.py. */
#define RT_EMU 1
#define RT_HAVE_CUDA 1
#include "tests/emu/cuda_emu.h"

#include "kernels/cuda/attention.cu"

#include <stdio.h>
#include <stdlib.h>

#include <algorithm>

#include "kernels/convert.h"

static uint64_t rng = 88172645463325252ull;
static float randn() {
    auto u = [] {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        return ((float)(rng >> 40) + 0.5f) / 16777216.0f;
    };
    float a = u(), b = u();
    return sqrtf(-2.f * logf(a)) * cosf(6.2831853f * b);
}

static std::vector<uint16_t> to_bf16(std::vector<float> &x) {   // rounds x in place
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

#include "tests/emu/emu_check.h"
static void close_norm(const char *what, const std::vector<float> &got, const std::vector<float> &want) {
    double e2 = 0, w2 = 0, em = 0, wm = 0;
    bool nan = false;
    for (size_t i = 0; i < got.size(); i++) {
        double d = (double)got[i] - want[i];
        if (d != d) nan = true;
        e2 += d * d, w2 += (double)want[i] * want[i], em = fmax(em, fabs(d)), wm = fmax(wm, fabs(want[i]));
    }
    double r = sqrt(e2 / w2), m = em / wm;
    bool ok = !nan && r <= 1.0 / 64 && m <= 1.0 / 32;
    printf("%-8s %-34s rel‖err‖ %.4f  max %.4f%s\n", ok ? "ok" : "FAIL", what, r, m, nan ? " NaN" : "");
    if (!ok) failures++;
}

template <int HD> static void run_case(int T, int Hq, int Hkv, bool fused = false) {
    const int hd = HD;
    float scale = 1.0f / sqrtf((float)hd);
    size_t nq = (size_t)T * Hq * hd, nk = (size_t)T * Hkv * hd;
    std::vector<int32_t> ds(T);
    static const int lens[] = {1, 37, 64, 130, 5, 300, 63, 65, 200};
    for (int t = 0, d = 0; t < T; d++) {
        int len = lens[d % 9];
        for (int i = 0; i < len && t + i < T; i++) ds[t + i] = t;
        t += len;
    }
    std::vector<float> q(nq), k(nk), v(nk), dO(nq);
    for (auto &x : q) x = randn();
    for (auto &x : k) x = randn();
    for (auto &x : v) x = randn();
    for (auto &x : dO) x = randn();
    auto qh = to_bf16(q), kh = to_bf16(k), vh = to_bf16(v), doh = to_bf16(dO);
    // inputs as the kernels read them: dense, or one fused [T, (Hq + 2·Hkv)·hd] QKV buffer
    int64_t W = (int64_t)(Hq + 2 * Hkv) * hd;
    attn_ld ld = fused ? attn_ld{W, W, W, W} : attn_ld{(int64_t)Hq * hd, (int64_t)Hkv * hd, (int64_t)Hq * hd, (int64_t)Hkv * hd};
    std::vector<uint16_t> qkv(fused ? (size_t)T * W : 0);
    for (int t = 0; fused && t < T; t++) {
        memcpy(&qkv[(size_t)t * W], &qh[(size_t)t * Hq * hd], (size_t)Hq * hd * 2);
        memcpy(&qkv[(size_t)t * W + Hq * hd], &kh[(size_t)t * Hkv * hd], (size_t)Hkv * hd * 2);
        memcpy(&qkv[(size_t)t * W + (Hq + Hkv) * hd], &vh[(size_t)t * Hkv * hd], (size_t)Hkv * hd * 2);
    }
    const uint16_t *Q = fused ? qkv.data() : qh.data(), *K = fused ? qkv.data() + Hq * hd : kh.data(),
                   *Vv = fused ? qkv.data() + (Hq + Hkv) * hd : vh.data();
    std::vector<float> ws(attn_workspace_floats(T, Hq, 1)), o(nq), lse((size_t)T * Hq);
    attn_fwd(o.data(), lse.data(), q.data(), k.data(), v.data(), ds.data(), T, Hq, Hkv, hd, scale, ws.data(), NULL);
    // forward through the emulator
    std::vector<uint16_t> go(nq, 0xffff);
    std::vector<float> glse((size_t)T * Hq, NAN);
    float vmax = 0;
    for (float x : v) vmax = fmaxf(vmax, fabsf(x));
    char what[96];
    for (int nw = 4; nw <= 8; nw += 4) {   // query tiles of 64 (4 warps) and 128 (8 warps)
        std::fill(go.begin(), go.end(), 0xffff);
        std::fill(glse.begin(), glse.end(), NAN);
        dim3 grid((T + 16 * nw - 1) / (16 * nw), Hq);
        emu::launch(grid, dim3(32 * nw), (size_t)(16 * nw + 4 * 64) * (HD + 8) * 2, [&] {
            if (nw == 4)
                k_attn_fwd<HD, 4>(go.data(), glse.data(), Q, K, Vv, ds.data(), T, Hq, Hkv, scale * LOG2E, ld);
            else
                k_attn_fwd<HD, 8>(go.data(), glse.data(), Q, K, Vv, ds.data(), T, Hq, Hkv, scale * LOG2E, ld);
        });
        snprintf(what, sizeof what, "o   T=%d Hq=%d Hkv=%d hd=%d bq=%d%s", T, Hq, Hkv, hd, 16 * nw, fused ? " qkv" : "");
        close_elem(what, from_bf16(go), o, 2 * 0.00390625f * vmax, 2 * 0.00390625f);
        close_elem("lse", glse, lse, 1e-3f, 0);
    }
    // backward, from the CPU's o (rounded to bf16) and lse
    auto oh = to_bf16(o);
    std::vector<float> wdq(nq), wdk(nk), wdv(nk);
    attn_bwd(wdq.data(), wdk.data(), wdv.data(), dO.data(), o.data(), lse.data(), q.data(), k.data(), v.data(),
             ds.data(), T, Hq, Hkv, hd, scale, ws.data(), NULL);
    std::vector<float> delta((size_t)T * Hq, NAN);
    // outputs: dense, or one fused dQKV buffer with the same layout as qkv
    std::vector<uint16_t> gdq(nq, 0xffff), gdk(nk, 0xffff), gdv(nk, 0xffff), dqkv(fused ? (size_t)T * W : 0, 0xffff);
    uint16_t *DQ = fused ? dqkv.data() : gdq.data(), *DK = fused ? dqkv.data() + Hq * hd : gdk.data(),
             *DV = fused ? dqkv.data() + (Hq + Hkv) * hd : gdv.data();
    size_t warps = (size_t)T * Hq;
    emu::launch(dim3((unsigned)((warps * 32 + 255) / 256)), dim3(256), 0,
                [&] { k_attn_delta(delta.data(), doh.data(), oh.data(), T, Hq, hd); });
    constexpr int BQ = HD == 64 ? 64 : 32;
    emu::launch(dim3((T + 63) / 64, Hq), dim3(NTHR), (size_t)(2 * 64 + 4 * 64) * (HD + 8) * 2, [&] {
        k_attn_dq<HD>(DQ, doh.data(), lse.data(), delta.data(), Q, K, Vv, ds.data(), T, Hq, Hkv, scale * LOG2E, scale,
                      ld);
    });
    emu::launch(dim3((T + 63) / 64, Hkv), dim3(NTHR), (size_t)(2 * 64 + 4 * BQ) * (HD + 8) * 2, [&] {
        k_attn_dkv<HD, BQ>(DK, DV, doh.data(), lse.data(), delta.data(), Q, K, Vv, ds.data(), T, Hq, Hkv,
                           scale * LOG2E, scale, ld);
    });
    for (int t = 0; fused && t < T; t++) {
        memcpy(&gdq[(size_t)t * Hq * hd], &dqkv[(size_t)t * W], (size_t)Hq * hd * 2);
        memcpy(&gdk[(size_t)t * Hkv * hd], &dqkv[(size_t)t * W + Hq * hd], (size_t)Hkv * hd * 2);
        memcpy(&gdv[(size_t)t * Hkv * hd], &dqkv[(size_t)t * W + (Hq + Hkv) * hd], (size_t)Hkv * hd * 2);
    }
    close_norm("dq", from_bf16(gdq), wdq);
    close_norm("dk", from_bf16(gdk), wdk);
    close_norm("dv", from_bf16(gdv), wdv);
}

int main() {
    run_case<64>(150, 4, 2);
    run_case<128>(140, 2, 1);
    run_case<64>(70, 3, 3);
    run_case<128>(100, 4, 1, true);   // fused QKV input and dQKV output layout
    run_case<64>(90, 2, 2, true);
    printf("%s\n", failures ? "attention emulation: FAILED" : "attention emulation: all ok");
    return failures ? 1 : 0;
}
