/* tests/gpu/test_ds_mla_gpu.c — MLA on the GPU (the per-head absorption as batched bf16 GEMMs,
 * kernels/cuda/ds_mla.cu's attention over a paged latent cache, the W_UV projection) against
 * the engine's mla_attn_absorbed (kernels/cpu/mla.c, which tests/unit/test_mla.c checks
 * against the naive path and transformers). R1's real head shapes: 128 heads, nope 128,
 * rope 64, v 128, kv_rank 512; three sequences with pages shuffled over the cache, queries
 * at several context lengths (1 to 2100 rows: one and several flash-decoding splits).
 * Needs a GPU.
 * Tolerance: inputs are bf16 values on both sides; the GPU rounds q·W_UK, the softmax
 * probabilities, the latent output and the result to bf16 (each 2^-9 relative) and sums in
 * a different order. Logits here have a standard deviation near 2; a float64 emulation of
 * exactly these roundings (chunks of 32, online softmax) puts the worst output 0.8% (bf16
 * cache) and 1.2% (e4m3 cache) of its head's largest value away from the exact result:
 * |gpu − cpu| ≤ 2^-5·max|cpu| per (query, head). A wrong page, context or head is ~100%. The cache is filled by mla_cache_append_cuda; e4m3 rows: the CPU reads the
 * rows quantized the same way (scale amax/448, one RNE cast each: exact) dequantized in f32;
 * the GPU rounds each dequantized value to bf16 once more — the same bound. */
#include "tests/gpu/ds_gpu_test.h"
#include "core/threadpool.h"
#include "kernels/fp8.h"
#include "kernels/matmul.h"
#include "kernels/mla.h"

enum { H = 128, DN = 128, DR = 64, DV = 128, R = 512, DQ = DN + DR, DL = R + DR, PAGE = 64, NS = 3, NQ = 6 };

static void run(int fp8_cache) {
    int64_t T[NS] = {1, 300, 2100};
    int32_t seq[NQ] = {0, 1, 1, 2, 2, 2}, ctx[NQ] = {1, 300, 129, 2100, 2047, 64};
    int64_t max_ctx = 2100, pages_per_seq = (max_ctx + PAGE - 1) / PAGE, n_pages = NS * pages_per_seq;
    mla_dims d = {.n_heads = H, .nope_dim = DN, .rope_dim = DR, .v_dim = DV, .kv_rank = R, .scale = 1.0f / sqrtf((float)DQ)};
    tp_pool *pool = NULL;
    RT(tp_create(0, &pool));
    /* weights, queries, caches (bf16 values) */
    int64_t nkv = (int64_t)H * (DN + DV) * R;
    float *kvb = malloc((size_t)nkv * 4), *q = malloc((size_t)NQ * H * DQ * 4);
    uint16_t *kvb16 = malloc((size_t)nkv * 2), *q16 = malloc((size_t)NQ * H * DQ * 2);
    for (int64_t i = 0; i < nkv; i++) { kvb16[i] = f32_to_bf16(rnd_normal() / sqrtf(128.0f)); kvb[i] = bf16_to_f32(kvb16[i]); }
    for (int64_t i = 0; i < NQ * H * DQ; i++) { q16[i] = f32_to_bf16(rnd_normal()); q[i] = bf16_to_f32(q16[i]); }
    /* page table: a random permutation of all pages */
    int32_t *perm = malloc((size_t)n_pages * 4), *bt = malloc((size_t)n_pages * 4);
    for (int64_t i = 0; i < n_pages; i++) perm[i] = (int32_t)i;
    for (int64_t i = n_pages - 1; i > 0; i--) { int64_t j = rnd() % (i + 1); int32_t t = perm[i]; perm[i] = perm[j]; perm[j] = t; }
    memcpy(bt, perm, (size_t)n_pages * 4);   /* sequence s owns bt[s·pages_per_seq …] */
    int64_t rows = n_pages * PAGE, nrows = 0;
    for (int s = 0; s < NS; s++) nrows += T[s];
    uint16_t *src = malloc((size_t)(nrows * DL) * 2);   /* the rows the GPU appends, in order */
    int32_t *slot = malloc((size_t)nrows * 4);
    float **lat = malloc(NS * sizeof *lat);
    int64_t k = 0;
    for (int s = 0; s < NS; s++) {
        lat[s] = malloc((size_t)(T[s] * DL) * 4);
        for (int64_t t = 0; t < T[s]; t++, k++) {
            slot[k] = bt[s * pages_per_seq + t / PAGE] * PAGE + (int32_t)(t % PAGE);
            float amax = 0;
            for (int j = 0; j < DL; j++) {
                src[k * DL + j] = f32_to_bf16(rnd_normal());
                amax = fmaxf(amax, fabsf(bf16_to_f32(src[k * DL + j])));
            }
            float sc = amax / 448.0f;   /* mla_cache_append_cuda's e4m3 rows */
            if (!(sc > 0)) sc = 1.0f;
            for (int j = 0; j < DL; j++) {
                float v = bf16_to_f32(src[k * DL + j]);
                lat[s][t * DL + j] = fp8_cache ? fp8e4m3_to_f32(fp8_from_f32(v / sc)) * sc : v;
            }
        }
    }
    /* CPU: per sequence, its queries */
    float *ref = malloc((size_t)NQ * H * DV * 4);
    for (int s = 0; s < NS; s++) {
        int32_t c1[NQ];
        int first = -1, cnt = 0;
        for (int i = 0; i < NQ; i++) if (seq[i] == s) { if (first < 0) first = i; c1[cnt++] = ctx[i]; }
        RT(mla_attn_absorbed(&d, q + (int64_t)first * H * DQ, cnt, lat[s], T[s], kvb, c1, ref + (int64_t)first * H * DV, pool));
    }
    /* GPU */
    fp8_lt *lt = NULL;
    RT(fp8_gemm_lt_create(&lt));
    size_t wsb = mla_decode_workspace_bytes(NQ, H, max_ctx);
    uint16_t *dq = dev_copy(q16, (size_t)NQ * H * DQ * 2), *dkvb = dev_copy(kvb16, (size_t)nkv * 2);
    uint16_t *dqa = dev_poison((size_t)NQ * H * DL * 2), *dol = dev_poison((size_t)NQ * H * R * 2), *dout = dev_poison((size_t)NQ * H * DV * 2);
    void *dcache = dev_poison((size_t)(rows * DL) * (fp8_cache ? 1 : 2));
    float *dcs = fp8_cache ? dev_poison((size_t)rows * 4) : NULL;
    uint16_t *dsrc = dev_copy(src, (size_t)(nrows * DL) * 2);
    int32_t *dslot = dev_copy(slot, (size_t)nrows * 4);
    int32_t *dbt = dev_copy(bt, (size_t)n_pages * 4), *dseq = dev_copy(seq, sizeof seq), *dctx = dev_copy(ctx, sizeof ctx);
    void *dws = dev_poison(wsb);
    CHECK(dq && dkvb && dqa && dol && dout && dcache && (dcs || !fp8_cache) && dbt && dseq && dctx && dws && dsrc && dslot, "cudaMalloc");
    RT(mla_cache_append_cuda(dsrc, nrows, dslot, dcache, dcs, NULL));
    /* q_abs[:, h, :512] = q_nope[:, h] · W_UK[h]; q_abs[:, h, 512:] = q_rope[:, h] */
    RT(bf16_gemm_batched_cuda(lt, 0, dq, H * DQ, DQ, dkvb, R, (DN + DV) * R, dqa, H * DL, DL, NQ, R, DN, H, NULL));
    CU(cudaMemcpy2D(dqa + R, DL * 2, dq + DN, DQ * 2, DR * 2, (size_t)NQ * H, cudaMemcpyDeviceToDevice));
    RT(mla_decode_cuda(&d, dqa, NQ, dcache, dcs, PAGE, dbt, pages_per_seq, dseq, dctx, max_ctx, dws, wsb, dol, NULL));
    /* out[:, h·128 …] = o_lat[:, h] · W_UV[h]ᵀ */
    RT(bf16_gemm_batched_cuda(lt, 1, dol, H * R, R, dkvb + DN * R, R, (DN + DV) * R, dout, H * DV, DV, NQ, DV, R, H, NULL));
    CU(cudaDeviceSynchronize());
    uint16_t *out = malloc((size_t)NQ * H * DV * 2);
    CHECK(!dev_get(out, dout, (size_t)NQ * H * DV * 2), "copy back");
    double worst = 0;
    for (int i = 0; i < NQ; i++)
        for (int h = 0; h < H; h++) {
            const float *r = ref + ((int64_t)i * H + h) * DV;
            const uint16_t *g = out + ((int64_t)i * H + h) * DV;
            float mx = 0;
            for (int j = 0; j < DV; j++) mx = fmaxf(mx, fabsf(r[j]));
            for (int j = 0; j < DV; j++) {
                double e = fabs(bf16_to_f32(g[j]) - r[j]);
                if (e / mx > worst) worst = e / mx;
                CHECK(e <= 0x1p-5 * mx, "%s cache, query %d (ctx %d) head %d dim %d: gpu %g cpu %g (head max %g)",
                      fp8_cache ? "e4m3" : "bf16", i, ctx[i], h, j, bf16_to_f32(g[j]), r[j], mx);
            }
        }
    printf("mla (%s cache): worst error %.5f of the head's largest output\n", fp8_cache ? "e4m3" : "bf16", worst);
    fp8_gemm_lt_free(lt);
    void *devs[] = {dq, dkvb, dqa, dol, dout, dcache, dcs, dbt, dseq, dctx, dws, dsrc, dslot};
    for (size_t di = 0; di < sizeof devs / sizeof *devs; di++) cudaFree(devs[di]);
    for (int s = 0; s < NS; s++) free(lat[s]);
    free(lat); free(kvb); free(q); free(kvb16); free(q16); free(perm); free(bt); free(src); free(slot); free(ref); free(out);
    tp_free(pool);
    passed++;
}

int main(void) {
    if (!ds_have_device()) return 0;
    run(0);
    run(1);
    return ds_finish();
}
