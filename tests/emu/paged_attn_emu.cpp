/* tests/emu/paged_attn_emu.cpp — the paged inference attention of kernels/cuda/paged_attention.cu
 * (k_attn_paged, its split-KV combine, k_kv_store) run on the CPU through tests/emu/cuda_emu.h,
 * against the CPU twin attn_paged_fwd (kernels/cpu/attention.c, itself tested against torch SDPA
 * in tests/unit/test_dense_teacher.c) on the same bf16 values. Cases: decode batches (one query
 * per sequence, contexts of mixed lengths, some crossing into a last partial block), a chunked
 * prefill (a chunk of queries of one sequence continuing its cached prefix), GQA with 1, 2, 7
 * and 16 query heads per kv head (16: two head groups per kv head), hd 64 and 128, block sizes 16
 * and 7, block tables that are shuffled permutations of the pool, and contexts long enough for
 * split-KV. The host-side plan (pa_make_plan) is the one the launcher uses.
 *
 * Tolerance (as tests/emu/attn_emu.cpp and tests/gpu/test_attention_gpu.c): the output is
 * rounded to bf16 once (2^-8 relative); the f32 softmax and sums differ from the twin's only in
 * order and in exp2(x·log2 e) for exp(x), a few 2^-24 relative per term; bound per element
 * 2·2^-8·|want| + 2·2^-8·max|v|. K/V stores: bit-exact. Exits 1 on any failure. Built and run by
 * tests/ref/test_cuda_emu.py. */
#define RT_EMU 1
#define RT_HAVE_CUDA 1
#include "tests/emu/cuda_emu.h"

#include "kernels/cuda/paged_attention.cu"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>

#include "kernels/convert.h"

static uint64_t rng = 0x853c49e6748fea9bull;
static uint32_t u32() {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}
static float randn() {
    float a = ((float)(u32() >> 8) + 0.5f) / 16777216.0f, b = ((float)(u32() >> 8) + 0.5f) / 16777216.0f;
    return sqrtf(-2.f * logf(a)) * cosf(6.2831853f * b);
}

#include "tests/emu/emu_check.h"

static bool prefill_only = false;   /* argv[1] == "prefill": the prefill cases only */

/* n_seq sequences with contexts ctx_of[s]; queries: the last `chunk[s]` positions of sequence s
 * (decode: 1). Cache rows of every sequence are written through k_kv_store from a token-major
 * [T, ld] K/V buffer with ld > kd (as inside a fused QKV GEMM output). */
template <int HD>
static void run_case(const char *name, int Hq, int Hkv, int bs, const std::vector<int> &ctx_of,
                     const std::vector<int> &chunk, bool prefill = false) {
    const int hd = HD, n_seq = (int)ctx_of.size(), kd = Hkv * hd;
    const int64_t ld = (int64_t)(Hq + 2 * Hkv) * hd;   // K and V read from a fused-QKV-like row
    float scale = 1.0f / sqrtf((float)hd);
    // the pool: every sequence's blocks, handed out in a shuffled order
    int64_t stride = (int64_t)2 * bs * kd + 8;   // two layers' worth is not needed; a pad keeps it honest
    int table_ld = 0, n_blocks = 0;
    for (int c : ctx_of) table_ld = std::max(table_ld, (c + bs - 1) / bs), n_blocks += (c + bs - 1) / bs;
    std::vector<int32_t> perm(n_blocks);
    for (int b = 0; b < n_blocks; b++) perm[b] = b;
    for (int b = n_blocks - 1; b > 0; b--) std::swap(perm[b], perm[u32() % (b + 1)]);
    std::vector<int32_t> tables((size_t)n_seq * table_ld, -1);
    for (int s = 0, at = 0; s < n_seq; s++)
        for (int b = 0; b < (ctx_of[s] + bs - 1) / bs; b++) tables[(size_t)s * table_ld + b] = perm[at++];
    // every cached position's K/V: written by k_kv_store from token-major rows
    int T = 0;
    for (int c : ctx_of) T += c;
    std::vector<float> kv_rows((size_t)T * ld);
    for (auto &x : kv_rows) x = randn();
    std::vector<uint16_t> kv_bf(kv_rows.size());
    cvt_f32_to_bf16(kv_rows.data(), kv_bf.data(), kv_rows.size());
    cvt_bf16_to_f32(kv_bf.data(), kv_rows.data(), kv_rows.size());
    std::vector<int32_t> seq_t(T), pos_t(T);
    for (int s = 0, t = 0; s < n_seq; s++)
        for (int p = 0; p < ctx_of[s]; p++, t++) seq_t[t] = s, pos_t[t] = p;
    size_t pool_elems = (size_t)n_blocks * stride;
    std::vector<uint16_t> cache(pool_elems, 0xffff);   // NaN: an unwritten row read shows
    uint16_t *kc = cache.data(), *vc = cache.data() + (size_t)bs * kd;
    const uint16_t *ksrc = kv_bf.data() + (size_t)Hq * hd, *vsrc = ksrc + kd;
    int64_t nvec = (int64_t)T * kd / 8;
    emu::launch(dim3((unsigned)((nvec + 255) / 256)), dim3(256), 0, [&] {
        k_kv_store(kc, vc, ksrc, vsrc, ld, T, kd, bs, stride, tables.data(), table_ld, seq_t.data(), pos_t.data());
    });
    bool stored = true;
    for (int t = 0; t < T && stored; t++) {
        size_t at = (size_t)tables[(size_t)seq_t[t] * table_ld + pos_t[t] / bs] * stride + (size_t)(pos_t[t] % bs) * kd;
        stored = !memcmp(kc + at, ksrc + (size_t)t * ld, (size_t)kd * 2) && !memcmp(vc + at, vsrc + (size_t)t * ld, (size_t)kd * 2);
    }
    printf("%-8s %-52s bit-exact\n", stored ? "ok" : "FAIL", "kv store");
    failures += !stored, checks++;
    // the queries
    std::vector<int32_t> qseq, qctx;
    for (int s = 0; s < n_seq; s++)
        for (int j = 0; j < chunk[s]; j++) qseq.push_back(s), qctx.push_back(ctx_of[s] - chunk[s] + j + 1);
    int n = (int)qseq.size(), max_ctx = *std::max_element(qctx.begin(), qctx.end());
    int64_t ldq = ld;
    std::vector<float> q((size_t)n * ldq);
    for (auto &x : q) x = randn();
    std::vector<uint16_t> qb(q.size());
    cvt_f32_to_bf16(q.data(), qb.data(), q.size());
    cvt_bf16_to_f32(qb.data(), q.data(), q.size());
    // the CPU twin on the same values: an f32 copy of the cache
    std::vector<float> cf(pool_elems);
    cvt_bf16_to_f32(cache.data(), cf.data(), pool_elems);
    std::vector<float> qd((size_t)n * Hq * hd), want((size_t)n * Hq * hd, NAN);
    for (int i = 0; i < n; i++) memcpy(&qd[(size_t)i * Hq * hd], &q[(size_t)i * ldq], (size_t)Hq * hd * 4);
    std::vector<const int32_t *> tabs(n);
    for (int i = 0; i < n; i++) tabs[i] = &tables[(size_t)qseq[i] * table_ld];
    std::vector<float> ws(attn_paged_workspace_floats(max_ctx, 1));
    attn_paged_fwd(want.data(), qd.data(), n, Hq, Hkv, hd, scale, cf.data(), cf.data() + (size_t)bs * kd, bs, stride,
                   tabs.data(), qctx.data(), ws.data(), NULL);
    // the kernel, launched as attn_paged_fwd_cuda launches it
    pa_plan p = pa_make_plan(n, Hq, Hkv, max_ctx);
    std::vector<uint16_t> o((size_t)n * Hq * hd, 0xffff);
    std::vector<float> part(p.n_splits > 1 ? (size_t)n * Hq * p.n_splits * (hd + 2) : 1, NAN);
    emu::launch(dim3(n, Hkv * p.groups, p.n_splits), dim3(PA_NT), pa_smem_bytes(p.G, hd), [&] {
        k_attn_paged<HD>(o.data(), part.data(), qb.data(), ldq, Hq, Hkv, p.G, scale * PA_LOG2E, kc, vc, bs, stride,
                         tables.data(), table_ld, qseq.data(), qctx.data(), p.span, p.n_splits);
    });
    if (p.n_splits > 1)
        emu::launch(dim3(n, Hq), dim3(HD), 0,
                    [&] { k_attn_paged_combine<HD>(o.data(), part.data(), qctx.data(), Hq, p.span, p.n_splits); });
    std::vector<float> got(o.size());
    cvt_bf16_to_f32(o.data(), got.data(), o.size());
    float vmax = 0;
    for (size_t i = 0; i < kv_rows.size(); i++) vmax = fmaxf(vmax, fabsf(kv_rows[i]));
    char what[128];
    snprintf(what, sizeof what, "%s hd=%d Hq=%d Hkv=%d bs=%d n=%d G=%d splits=%d", name, hd, Hq, Hkv, bs, n, p.G,
             p.n_splits);
    if (!prefill_only) close_elem(what, got, want, 2 * 0.00390625f * vmax, 2 * 0.00390625f);
    if (!prefill) return;
    // the tensor-core prefill, launched as attn_paged_prefill_cuda launches it, on the same cache
    pp_plan pp = pp_make_plan(Hq, Hkv);
    std::vector<int32_t> tiles(n);
    int nt = (int)pp_tiles(tiles.data(), qseq.data(), n, 16 * pp.WT);
    std::vector<uint16_t> o2((size_t)n * Hq * hd, 0xffff);   // NaN: an unwritten element shows
    emu::launch(dim3(nt, Hkv * pp.groups), dim3(32 * pp.G * pp.WT), pp_smem_bytes(pp, HD), [&] {
        k_attn_paged_prefill<HD>(o2.data(), qb.data(), ldq, n, Hq, Hkv, pp.G, pp.WT, scale * PA_LOG2E, kc, vc, bs,
                                 stride, tables.data(), table_ld, qseq.data(), qctx.data(), tiles.data());
    });
    cvt_bf16_to_f32(o2.data(), got.data(), o2.size());
    snprintf(what, sizeof what, "prefill %s hd=%d Hq=%d Hkv=%d bs=%d n=%d G=%d tiles=%dx%d", name, hd, Hq, Hkv, bs, n,
             pp.G, nt, 16 * pp.WT);
    close_elem(what, got, want, 2 * 0.00390625f * vmax, 2 * 0.00390625f);
}

int main(int argc, char **argv) {
    prefill_only = argc > 1 && !strcmp(argv[1], "prefill");
    // tensor-core prefill (each also through k_attn_paged): chunks continuing prefixes of 0, a
    // partial block, several blocks and several key tiles, chunk lengths off the query tile,
    // GQA 1, 4, 6 and 8, hd 64 and 128, block sizes 16, 7 and 128, shuffled block tables
    run_case<64>("mixed", 4, 1, 16, {37, 21 + 40, 150 + 29, 3}, {37, 40, 29, 3}, true);
    run_case<128>("mixed", 8, 1, 16, {19, 9 + 70, 64 + 33}, {19, 70, 33}, true);
    run_case<64>("mha bs7", 2, 2, 7, {45, 12 + 50, 130 + 17}, {45, 50, 17}, true);
    run_case<128>("mha", 3, 3, 16, {100, 5 + 66}, {100, 66}, true);
    run_case<128>("g6 bs128", 12, 2, 128, {200 + 45, 77}, {45, 77}, true);
    run_case<64>("g16", 16, 1, 16, {50 + 20, 1 + 1}, {20, 1}, true);
    if (prefill_only) {
        printf("%s (%d checks)\n", failures ? "paged attention emulation: FAILED" : "paged attention emulation: all ok",
               checks);
        return failures ? 1 : 0;
    }
    // decode: five sequences, contexts inside one block, on a block edge, across several
    run_case<64>("decode", 4, 2, 16, {1, 16, 17, 70, 129}, {1, 1, 1, 1, 1});
    run_case<128>("decode", 7, 1, 16, {33, 5, 64}, {1, 1, 1});
    run_case<64>("decode mha bs7", 2, 2, 7, {9, 50, 22}, {1, 1, 1});
    run_case<128>("decode g16", 16, 1, 16, {40, 3}, {1, 1});
    // chunked prefill: 24 queries continuing a cached prefix of 40, beside a decode
    run_case<64>("chunk", 4, 1, 16, {64, 21}, {24, 1});
    // split-KV: one sequence of 700 positions (few blocks, long context) and a short one that
    // stays in one split within the same launch
    run_case<64>("split", 2, 1, 16, {700, 30}, {1, 1});
    run_case<128>("split", 8, 2, 16, {520}, {1});
    printf("%s (%d checks)\n", failures ? "paged attention emulation: FAILED" : "paged attention emulation: all ok",
           checks);
    return failures ? 1 : 0;
}
