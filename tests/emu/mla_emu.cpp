/* tests/emu/mla_emu.cpp — the MLA kernels of kernels/cuda/ds_mla.cu (cache append, flash-decoding
 * attention over the paged latent cache, the merge of its splits) run on the CPU through the
 * emulator in tests/emu/cuda_emu.h, against the CPU twin mla_attn_absorbed (kernels/cpu/mla.c,
 * checked against the naive path and transformers in tests/unit/test_mla.c). The kernel's output
 * is the latent o_lat before W_UV; the twin is given nope = v = kv_rank = 512 and W_UK[h] =
 * W_UV[h] = I, so its q_nope·W_UK is q and its output is o_lat, both exactly (sums of one
 * product and zeros). The batched bf16 GEMMs around the kernel on the GPU (bf16_gemm_batched_cuda)
 * are cuBLASLt and cannot run here.
 * Shapes: 80 heads (a full 64-head tile and a partial one), pages of 16 rows shuffled over the
 * cache, 3 sequences, queries at context 1, 37, 600, 300, 64 (partial 32-row chunks, one chunk,
 * many); the split plan of the file's plan_splits() for 1 SM (one split) and for 132 SMs (three
 * splits of 224 rows and the merge kernel); bf16 and e4m3 caches, both filled by the append kernel
 * on a grid smaller than its rows (grid_for's cap: the kernel must loop).
 * Tolerances:
 *   append: bf16 rows bit-identical; e4m3 rows: scale = amax/448 and every code = fp8_from_f32
 *     (kernels/cpu/fp8.c) of value/scale — exact (the same IEEE division and RNE cast).
 *   attention: the kernel rounds the softmax probabilities and its output to bf16 (2^-9
 *     relative each) and, with an e4m3 cache, each dequantized value once more; a float64
 *     emulation of these roundings at this logit spread (≈ 1.7) puts the worst output ≈ 1 %
 *     of its head's largest value away (tests/gpu/test_ds_mla_gpu.c): |emu − cpu| ≤
 *     2^-5·max|cpu| per (query, head). A wrong page, row, head or split weight is ~100 %.
 * Built and run by tests/ref/test_cuda_emu.py. */
#define RT_EMU 1
#define RT_HAVE_CUDA 1
#include "tests/emu/cuda_emu.h"

#include "kernels/cuda/ds_mla.cu"

#include <stdio.h>
#include <stdlib.h>

#include "kernels/convert.h"
#include "kernels/fp8.h"

#define EMU_SEED 0x1d8e4e27c47d124full
#include "tests/emu/emu_check.h"


enum { H = 80, R = ML_DL, DR = ML_DR, DL = ML_DK, PAGE = 16, NS = 3, NQ = 5 };

static void run(bool fp8_cache) {
    const int64_t T[NS] = {37, 600, 300};
    const int32_t seq[NQ] = {0, 0, 1, 2, 1}, ctx[NQ] = {1, 37, 600, 300, 64};
    const int64_t max_ctx = 600, pages_per_seq = (max_ctx + PAGE - 1) / PAGE, n_pages = NS * pages_per_seq;
    const float scale = 1.0f / sqrtf(192.0f);
    // queries (bf16 values), page table (a random permutation of all pages), the rows to append
    std::vector<uint16_t> q16((size_t)NQ * H * DL);
    std::vector<float> q(q16.size());
    for (size_t i = 0; i < q16.size(); i++) q16[i] = f32_to_bf16(rnd_normal()), q[i] = bf16_to_f32(q16[i]);
    std::vector<int32_t> bt((size_t)n_pages);
    for (int64_t i = 0; i < n_pages; i++) bt[i] = (int32_t)i;
    for (int64_t i = n_pages - 1; i > 0; i--) std::swap(bt[i], bt[rnd() % (i + 1)]);
    int64_t nrows = 0;
    for (int s = 0; s < NS; s++) nrows += T[s];
    std::vector<uint16_t> src((size_t)(nrows * DL));
    std::vector<int32_t> slot((size_t)nrows);
    std::vector<std::vector<float>> lat(NS);
    std::vector<uint8_t> want_code((size_t)(nrows * DL));
    std::vector<float> want_scale((size_t)nrows);
    for (int s = 0, k = 0; s < NS; s++) {
        lat[s].resize((size_t)(T[s] * DL));
        for (int64_t t = 0; t < T[s]; t++, k++) {
            slot[k] = bt[s * pages_per_seq + t / PAGE] * PAGE + (int32_t)(t % PAGE);
            float amax = 0;
            for (int j = 0; j < DL; j++) {
                src[(size_t)k * DL + j] = f32_to_bf16(rnd_normal());
                amax = fmaxf(amax, fabsf(bf16_to_f32(src[(size_t)k * DL + j])));
            }
            float sc = amax / 448.0f;
            if (!(sc > 0)) sc = 1.0f;
            want_scale[k] = sc;
            for (int j = 0; j < DL; j++) {
                float v = bf16_to_f32(src[(size_t)k * DL + j]);
                want_code[(size_t)k * DL + j] = fp8_from_f32(v / sc);
                lat[s][t * DL + j] = fp8_cache ? fp8e4m3_to_f32(want_code[(size_t)k * DL + j]) * sc : v;
            }
        }
    }
    // the twin, per sequence: W_UK = W_UV = I
    mla_dims d = {H, R, DR, R, R, scale};
    std::vector<float> kvb((size_t)H * 2 * R * R, 0.0f), ref((size_t)NQ * H * R);
    for (int h = 0; h < H; h++)
        for (int j = 0; j < R; j++) kvb[((size_t)h * 2 * R + j) * R + j] = kvb[((size_t)h * 2 * R + R + j) * R + j] = 1.0f;
    std::vector<float> qs((size_t)NQ * H * (R + DR)), outs((size_t)NQ * H * R);
    for (int s = 0; s < NS; s++) {
        int32_t c1[NQ];
        int cnt = 0, idx[NQ];
        for (int i = 0; i < NQ; i++)
            if (seq[i] == s) idx[cnt] = i, c1[cnt++] = ctx[i];
        for (int j = 0; j < cnt; j++) memcpy(&qs[(size_t)j * H * DL], &q[(size_t)idx[j] * H * DL], (size_t)H * DL * 4);
        if (mla_attn_absorbed(&d, qs.data(), cnt, lat[s].data(), T[s], kvb.data(), c1, outs.data(), NULL)) {
            report(false, "mla_attn_absorbed", "the twin failed");
            return;
        }
        for (int j = 0; j < cnt; j++) memcpy(&ref[(size_t)idx[j] * H * R], &outs[(size_t)j * H * R], (size_t)H * R * 4);
    }
    // append through the kernel (a warp per row), on a grid of 3 blocks (24 warps) for the 937 rows,
    // as grid_for's cap of 65535·16 blocks makes it for more than 8.4M rows
    const int64_t rows = n_pages * PAGE;
    std::vector<uint8_t> cache((size_t)(rows * DL) * (fp8_cache ? 1 : 2), 0xff);
    std::vector<float> cs(fp8_cache ? (size_t)rows : 0, NAN);
    emu::launch(dim3(3), dim3(256), 0,
                [&] { k_append(src.data(), nrows, slot.data(), cache.data(), fp8_cache ? cs.data() : NULL); });
    bool ok = true;
    for (int64_t k = 0; k < nrows && ok; k++) {
        int64_t r = slot[k];
        if (fp8_cache)
            ok = cs[r] == want_scale[k] && !memcmp(&cache[(size_t)r * DL], &want_code[(size_t)k * DL], DL);
        else ok = !memcmp(&cache[(size_t)r * DL * 2], &src[(size_t)k * DL], DL * 2);
    }
    char what[120];
    snprintf(what, sizeof what, "cache append, %s rows (%lld), capped grid", fp8_cache ? "e4m3" : "bf16", (long long)nrows);
    report(ok, what, fp8_cache ? "exact (codes = fp8_from_f32, scales)" : "exact");
    // decode, one split and several
    for (int sms : {1, 132}) {
        int64_t rps;
        int ns = plan_splits(NQ, H, max_ctx, sms, &rps);
        std::vector<uint16_t> out((size_t)NQ * H * R, 0xffff);
        std::vector<float> part(ns > 1 ? (size_t)NQ * H * ns * R : 0, NAN), lse(ns > 1 ? (size_t)NQ * H * ns : 0, NAN);
        ml_args a;
        a.q = q16.data(), a.kv = cache.data(), a.kv_scale = fp8_cache ? cs.data() : NULL, a.bt = bt.data();
        a.seq = seq, a.ctx = ctx, a.bt_stride = pages_per_seq, a.H = H, a.page = PAGE, a.rows_per_split = (int)rps;
        a.nsplit = ns, a.scale = scale, a.out = out.data(), a.part = part.data(), a.lse = lse.data();
        emu::launch(dim3(NQ, (H + ML_HT - 1) / ML_HT, ns), dim3(ML_THREADS), ML_SMEM, [&] { k_mla_decode(a); });
        if (ns > 1) emu::launch(dim3(NQ * H), dim3(128), 0, [&] { k_mla_merge(part.data(), lse.data(), ns, out.data()); });
        double worst = 0;
        int bad = 0, bi = -1, bh = -1, bj = -1;
        for (int i = 0; i < NQ; i++)
            for (int h = 0; h < H; h++) {
                const float *rr = &ref[((size_t)i * H + h) * R];
                const uint16_t *g = &out[((size_t)i * H + h) * R];
                float mx = 0;
                for (int j = 0; j < R; j++) mx = fmaxf(mx, fabsf(rr[j]));
                for (int j = 0; j < R; j++) {
                    double e = fabs((double)bf16_to_f32(g[j]) - rr[j]) / mx;
                    if (!(e <= 0x1p-5)) {
                        if (!bad++) bi = i, bh = h, bj = j;
                        e = e == e ? e : INFINITY;
                    }
                    worst = fmax(worst, e);
                }
            }
        char det[160];
        if (bad)
            snprintf(det, sizeof det, "worst %.4f of head max (bound 0.0312); %d bad, first query %d head %d dim %d: %g vs %g",
                     worst, bad, bi, bh, bj, bf16_to_f32(out[((size_t)bi * H + bh) * R + bj]),
                     ref[((size_t)bi * H + bh) * R + bj]);
        else snprintf(det, sizeof det, "worst %.4f of head max (bound 0.0312)", worst);
        snprintf(what, sizeof what, "decode %s cache, H=%d, %d split%s of %lld rows%s", fp8_cache ? "e4m3" : "bf16", H, ns,
                 ns > 1 ? "s" : "", (long long)rps, ns > 1 ? " + merge" : "");
        report(!bad, what, det);
    }
}

int main(int argc, char **argv) {
    const char *only = argc > 1 ? argv[1] : "";   // "bf16" or "e4m3": one cache (planted-bug runs)
    if (strcmp(only, "e4m3")) run(false);
    if (strcmp(only, "bf16")) run(true);
    printf("%s\n", failures ? "mla emulation: FAILED" : "mla emulation: all ok");
    return failures ? 1 : 0;
}
