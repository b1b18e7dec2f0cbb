/* tests/emu/fp8_emu.cpp — the FP8 kernels of kernels/cuda/fp8_gemm.cu run on the CPU through
 * the emulator in tests/emu/cuda_emu.h, against their CPU twins in kernels/cpu/fp8.c (tested
 * against torch in tests/unit/test_fp8.c): the activation and SwiGLU quantization (both scale
 * layouts), the grouped block-scaled GEMM (mma.sync m16n8k32 e4m3, and with -DRT_EMU_SM80 the
 * scalar sm_80 path), the dense form with split-K and its summing kernel. Launch shapes come from
 * the file's own launch arithmetic (gb_grouped_tiles, gb_splits); the cuBLASLt paths
 * (fp8_gemm_lt, bf16_gemm*) cannot run here. Shapes are small but cut every tile edge: groups
 * that are empty, of 1 row, of exactly one m-tile and one past it, more than 32 groups (two
 * rounds of the warp scan), offsets not starting at 0, N not a multiple of the 128-wide tile
 * (odd N: the scalar stores), 4–5 K blocks (the 3-stage cp.async ring wraps), uneven splits;
 * the quantization also on a grid smaller than its work (grid_for's cap, reached by a long
 * prefill: the kernel must loop).
 * Tolerances:
 *   quantization: exact. Both sides do the same IEEE operations (one division by the same
 *     scale, one RNE cast; the SwiGLU's expf is glibc's on both sides here — on a GPU it is
 *     CUDA's, hence tests/gpu's one-code slack).
 *   GEMM, "exact" data (e4m3 codes of 0, ±½, ±1, ±1½, ±2): every 128-block sum is exact in f32,
 *     so what differs is the promotion (fmaf vs the twin's product then sum: ≤ 2 f32 roundings
 *     per block) and the bf16 output: |emu − cpu| ≤ 2^-8·|cpu| + 2^-20·Σ|a·w|.
 *   GEMM, random data (every e4m3 code): the emulated mma sums 32 exact products per step in
 *     f32, four steps per block, against the twin's exact double block sum: ≤ 128·2^-24 of the
 *     block's Σ|a·w| each, so |emu − cpu| ≤ 2^-8·|cpu| + 2^-15·Σ|a·w| (a 4× margin; a wrong
 *     fragment, scale, row or group is off by the whole magnitude).
 * Rows outside the groups and outputs never written are checked through poison (0xffff).
 * Built and run by tests/ref/test_cuda_emu.py. */
#define RT_EMU 1
#define RT_HAVE_CUDA 1
#include "tests/emu/cuda_emu.h"

#include "kernels/cuda/fp8_gemm.cu"

#include <stdio.h>
#include <stdlib.h>

#include "kernels/convert.h"

#define EMU_SEED 0x853c49e6748fea9bull
#include "tests/emu/emu_check.h"
static uint8_t rnd_fp8() {
    uint8_t b = (uint8_t)rnd();
    return (b & 0x7f) == 0x7f ? 0x7e : b;   // no NaN
}
static uint8_t small_fp8() {   // 0, ±0.5, ±1, ±1.5, ±2
    static const uint8_t c[9] = {0x00, 0x30, 0x38, 0x3c, 0x40, 0xb0, 0xb8, 0xbc, 0xc0};
    return c[rnd() % 9];
}


// ---- quantization -------------------------------------------------------------------------
// capped: a grid of one block (8 warps) for 10 (row, block) pairs, as grid_for's cap of 65535·16
// blocks makes it for more than 8.4M pairs (M·K/128: a 60k-token prefill through an 18432-wide MLP)
static void quant_case(bool swiglu, bool capped = false) {
    const int64_t M = 5, K = 256, W = swiglu ? 2 * K : K, nb = K / 128;
    std::vector<float> x((size_t)(M * W));
    std::vector<uint16_t> xb((size_t)(M * W));
    for (int64_t m = 0; m < M; m++) {
        float mag = ldexpf(1.0f, (int)(rnd() % 24) - 12);
        for (int64_t j = 0; j < W; j++) {
            xb[m * W + j] = f32_to_bf16(rnd_normal() * mag * (swiglu ? 4 : 1));
            x[m * W + j] = bf16_to_f32(xb[m * W + j]);
        }
    }
    for (int64_t j = 0; j < 128; j++) x[3 * W + 128 + j] = 0.0f, xb[3 * W + 128 + j] = 0;   // an all-zero block
    std::vector<uint8_t> q((size_t)(M * K));
    std::vector<float> s((size_t)(M * nb));
    if (swiglu) fp8_swiglu_quant(x.data(), M, K, q.data(), s.data());
    else fp8_act_quant(x.data(), M, K, q.data(), s.data());
    for (int t = 0; t < 2; t++) {
        std::vector<uint8_t> gq((size_t)(M * K), 0xff);
        std::vector<float> gs((size_t)(M * nb), NAN);
        size_t threads = (size_t)(M * nb) * 32;
        emu::launch(dim3(capped ? 1 : grid_for(threads, 256)), dim3(256), 0, [&] {
            if (swiglu) k_quant<true>(xb.data(), M, K, gq.data(), gs.data(), t);
            else k_quant<false>(xb.data(), M, K, gq.data(), gs.data(), t);
        });
        bool ok = true;
        for (int64_t m = 0; m < M; m++)
            for (int64_t b = 0; b < nb; b++) ok = ok && gs[t ? b * M + m : m * nb + b] == s[m * nb + b];
        ok = ok && !memcmp(gq.data(), q.data(), q.size());
        char what[96];
        snprintf(what, sizeof what, "%s M=%lld K=%lld scale_t=%d%s", swiglu ? "swiglu_quant" : "act_quant", (long long)M,
                 (long long)K, t, capped ? ", capped grid" : "");
        report(ok, what, "exact (codes and scales)");
    }
}

// ---- GEMM -----------------------------------------------------------------------------------
// Σ_k |a·w| dequantized: the scale of the accumulation error.
static double mag_of(const uint8_t *a, const float *as, const uint8_t *w, const float *ws, int64_t m, int64_t n,
                     int64_t K) {
    int64_t nb = K / 128;
    double s = 0;
    for (int64_t k = 0; k < K; k++)
        s += fabs((double)emu::e4m3(a[m * K + k]) * emu::e4m3(w[n * K + k])) * as[m * nb + k / 128] *
             ws[(n / 128) * nb + k / 128];
    return s;
}
struct gemm_check {
    double mag_tol, worst = 0;
    long bad = 0, first_r = -1, first_n = -1;
    float first_got = 0, first_want = 0;
    void add(int64_t r, int64_t n, float got, float want, double mag) {
        double d = fabs((double)got - want), b = 0x1p-8 * fabs(want) + mag_tol * mag;
        if (!(d <= b)) {
            if (!bad++) first_r = r, first_n = n, first_got = got, first_want = want;
        }
        if (b > 0 && d / b > worst) worst = d / b;
        if (d != d) worst = INFINITY;
    }
    void done(const char *what) {
        char det[160];
        if (bad)
            snprintf(det, sizeof det, "worst err/bound %.3g; %ld bad, first [%ld,%ld] got %g want %g", worst, bad, first_r,
                     first_n, first_got, first_want);
        else snprintf(det, sizeof det, "worst err/bound %.3f", worst);
        report(!bad, what, det);
    }
};

static void fill(std::vector<uint8_t> &v, bool exact) {
    for (auto &b : v) b = exact ? small_fp8() : rnd_fp8();
}

static void grouped_case(bool exact) {
    enum { G = 37 };
    const int64_t N = 192, K = 512, nb = K / 128, nsb = (N + 127) / 128;
    int64_t cnt[G] = {0};
    cnt[0] = 1, cnt[1] = 64, cnt[2] = 65, cnt[5] = 7, cnt[33] = 33, cnt[36] = 2;   // and 31 empty groups
    int64_t off[G + 1];
    off[0] = 3;   // rows 0..2 belong to nobody
    for (int g = 0; g < G; g++) off[g + 1] = off[g] + cnt[g];
    const int64_t rows = off[G] - off[0], alloc = off[G] + 5;   // 5 more rows past the groups
    std::vector<uint8_t> a((size_t)(alloc * K)), w((size_t)(G * N * K));
    std::vector<float> as((size_t)(alloc * nb)), ws((size_t)(G * nsb * nb));
    fill(a, exact), fill(w, exact);
    for (auto &v : as) v = ldexpf(1.0f + rnd_unit(), -(int)(rnd() % 10));
    for (auto &v : ws) v = 1e-4f + rnd_unit() * 1e-3f;
    std::vector<float> ref((size_t)(alloc * N), 0.0f);
    fp8_gemm_grouped(a.data(), as.data(), w.data(), ws.data(), off, G, N, K, ref.data(), NULL, NULL);
    int32_t off32[G + 1];
    for (int g = 0; g <= G; g++) off32[g] = (int32_t)off[g];
    std::vector<uint16_t> out((size_t)(alloc * N), 0xffff);
    dim3 grid((unsigned)((N + GB_N - 1) / GB_N), (unsigned)gb_grouped_tiles(G, rows));
    emu::launch(grid, dim3(256), GB_STAGES * GB_STAGE, [&] {
        k_gemm_grouped(a.data(), as.data(), w.data(), ws.data(), off32, G, 0, (int)N, (int)K, out.data(), NULL, 0);
    });
    gemm_check c{exact ? 0x1p-20 : 0x1p-15};
    for (int g = 0; g < G; g++)
        for (int64_t r = off[g]; r < off[g + 1]; r++)
            for (int64_t n = 0; n < N; n++)
                c.add(r, n, bf16_to_f32(out[r * N + n]), ref[r * N + n],
                      mag_of(a.data(), as.data(), w.data() + g * N * K, ws.data() + g * nsb * nb, r, n, K));
    long untouched = 0;
    for (int64_t i = 0; i < off[0] * N; i++) untouched += out[i] != 0xffff;
    for (int64_t i = off[G] * N; i < alloc * N; i++) untouched += out[i] != 0xffff;
    if (untouched) c.bad += untouched, printf("         %ld outputs outside the groups were written\n", untouched);
    char what[96];
    snprintf(what, sizeof what, "grouped gemm%s G=%d rows=%lld N=%lld K=%lld %s", GB_TC ? "" : " (sm_80 path)", G,
             (long long)rows, (long long)N, (long long)K, exact ? "exact data" : "random");
    c.done(what);
}

static void dense_case(bool exact, int64_t M, const std::vector<int> &splits_list) {
    const int64_t N = 131, K = 640, nb = K / 128, nsb = (N + 127) / 128;
    std::vector<uint8_t> a((size_t)(M * K)), w((size_t)(N * K));
    std::vector<float> as((size_t)(M * nb)), ws((size_t)(nsb * nb));
    fill(a, exact), fill(w, exact);
    for (auto &v : as) v = ldexpf(1.0f + rnd_unit(), -(int)(rnd() % 8));
    for (auto &v : ws) v = 1e-4f + rnd_unit() * 1e-3f;
    std::vector<float> ref((size_t)(M * N));
    fp8_gemm(a.data(), as.data(), w.data(), ws.data(), M, N, K, ref.data(), NULL, NULL);
    for (int want : splits_list) {
        int64_t kbs;
        int splits = gb_splits(nb, want, &kbs);
        std::vector<uint16_t> out((size_t)(M * N), 0xffff);
        std::vector<float> part((size_t)(splits * M * N), NAN);
        dim3 grid((unsigned)((N + GB_N - 1) / GB_N), (unsigned)((M + GB_M - 1) / GB_M), (unsigned)splits);
        emu::launch(grid, dim3(256), GB_STAGES * GB_STAGE, [&] {
            k_gemm_grouped(a.data(), as.data(), w.data(), ws.data(), NULL, 1, (int)M, (int)N, (int)K, out.data(),
                           splits > 1 ? part.data() : NULL, (int)kbs);
        });
        if (splits > 1)
            emu::launch(dim3(grid_for((size_t)(M * N))), dim3(256), 0,
                        [&] { k_splitk_sum(part.data(), splits, (size_t)(M * N), out.data()); });
        gemm_check c{exact ? 0x1p-20 : 0x1p-15};
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++)
                c.add(m, n, bf16_to_f32(out[m * N + n]), ref[m * N + n],
                      mag_of(a.data(), as.data(), w.data(), ws.data(), m, n, K));
        char what[96];
        snprintf(what, sizeof what, "dense gemm M=%lld N=%lld K=%lld splits %d (asked %d) %s", (long long)M, (long long)N,
                 (long long)K, splits, want, exact ? "exact" : "random");
        c.done(what);
    }
}

int main(int argc, char **argv) {
    const char *only = argc > 1 ? argv[1] : "";   // "grouped", "dense", "quant": one family (planted-bug runs)
    if (!*only || !strcmp(only, "quant")) {
        quant_case(false);
        quant_case(true);
        quant_case(false, true);
        quant_case(true, true);
    }
    if (!*only || !strcmp(only, "grouped")) {
        grouped_case(true);
        grouped_case(false);
    }
    if (!*only || !strcmp(only, "dense")) {
        dense_case(true, 70, {1, 2});
        dense_case(false, 3, {1, 2, 5});
    }
    printf("%s\n", failures ? "fp8 emulation: FAILED" : "fp8 emulation: all ok");
    return failures ? 1 : 0;
}
