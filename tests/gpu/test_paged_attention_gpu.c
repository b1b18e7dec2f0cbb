/* tests/gpu/test_paged_attention_gpu.c — paged inference attention (attn_paged_fwd_cuda,
 * attn_paged_store_cuda; kernels/cuda/paged_attention.cu) against the CPU twin attn_paged_fwd
 * (kernels/cpu/attention.c, tested against torch SDPA) on the same bf16 values: decode batches
 * of mixed contexts, a chunked prefill continuing a cached prefix, GQA groups of 1, 2, 7 and 16
 * heads, hd 64 and 128, block sizes 16 and 7, shuffled block tables, and split-KV (few queries,
 * contexts up to 5000). K/V are stored by attn_paged_store_cuda from rows of a fused-QKV-shaped
 * buffer; the stored cache must equal the source rows bit for bit. The chunked-prefill cases also
 * run the tensor-core prefill (attn_paged_prefill_cuda) against the same twin: chunks continuing
 * prefixes of 0, a partial block, several blocks and several key tiles, lengths off the query
 * tile, GQA 1, 4, 6, 7 and 8, hd 64 and 128, block sizes 7, 16 and 128.
 *
 * Tolerance: the output is rounded to bf16 once (2^-8 relative); the f32 softmax and sums
 * differ from the twin's in order and in exp2(x·log2 e) vs exp(x) only (a few 2^-24 per term),
 * so |got − want| ≤ 2·2^-8·|want| + 2·2^-8·max|v| per element. The prefill also rounds each
 * probability to bf16 before P·V (2^-9 relative, at most 2^-9·max|v| on the output): inside the
 * same bound. */
#include "tests/gpu/gpu_test.h"

#include "core/status.h"
#include "kernels/attention.h"


static void paged_case_p(int64_t Hq, int64_t Hkv, int64_t hd, int64_t bs, int n_seq, const int *ctx_of, const int *chunk,
                         int prefill) {
    int64_t kd = Hkv * hd, ld = (Hq + 2 * Hkv) * hd, stride = 2 * bs * kd + 8;
    float scale = 1.0f / sqrtf((float)hd);
    int table_ld = 0, n_blocks = 0, T = 0, n = 0, max_ctx = 1;
    for (int s = 0; s < n_seq; s++) {
        int nb = (int)((ctx_of[s] + bs - 1) / bs);
        table_ld = nb > table_ld ? nb : table_ld;
        n_blocks += nb, T += ctx_of[s], n += chunk[s];
    }
    int32_t *perm = malloc((size_t)n_blocks * 4), *tables = malloc((size_t)n_seq * table_ld * 4);
    for (int b = 0; b < n_blocks; b++) perm[b] = b;
    for (int b = n_blocks - 1; b > 0; b--) {
        int j = (int)(tg_u32() % (uint32_t)(b + 1));
        int32_t t = perm[b];
        perm[b] = perm[j], perm[j] = t;
    }
    for (int s = 0, at = 0; s < n_seq; s++)
        for (int b = 0; b < table_ld; b++) tables[s * table_ld + b] = b * bs < ctx_of[s] ? perm[at++] : -1;
    /* cached positions' K/V rows, token-major inside [T, ld] rows */
    float *rows = tg_randn_arr((size_t)T * ld, 1.f);
    uint16_t *drows = tg_dev_bf16(rows, (size_t)T * ld);
    int32_t *seq_t = malloc((size_t)T * 4), *pos_t = malloc((size_t)T * 4);
    for (int s = 0, t = 0; s < n_seq; s++)
        for (int p = 0; p < ctx_of[s]; p++, t++) seq_t[t] = s, pos_t[t] = p;
    size_t pool = (size_t)n_blocks * stride;
    uint16_t *dcache = tg_dev(NULL, pool * 2);
    int32_t *dtab = tg_dev(tables, (size_t)n_seq * table_ld * 4), *dseq_t = tg_dev(seq_t, (size_t)T * 4),
            *dpos_t = tg_dev(pos_t, (size_t)T * 4);
    CHECK(!attn_paged_store_cuda(dcache, dcache + bs * kd, drows + Hq * hd, drows + Hq * hd + kd, ld, T, kd, bs, stride,
                                 dtab, table_ld, dseq_t, dpos_t, NULL), "store: %s", rt_errmsg());
    CU(cudaDeviceSynchronize());
    uint16_t *hcache = malloc(pool * 2), *hrows = malloc((size_t)T * ld * 2);
    CU(cudaMemcpy(hcache, dcache, pool * 2, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(hrows, drows, (size_t)T * ld * 2, cudaMemcpyDeviceToHost));
    int stored = 1;
    for (int t = 0; t < T && stored; t++) {
        size_t at = (size_t)tables[seq_t[t] * table_ld + pos_t[t] / bs] * stride + (size_t)(pos_t[t] % bs) * kd;
        stored = !memcmp(hcache + at, hrows + (size_t)t * ld + Hq * hd, (size_t)kd * 2) &&
                 !memcmp(hcache + at + bs * kd, hrows + (size_t)t * ld + Hq * hd + kd, (size_t)kd * 2);
    }
    CHECK(stored, "the stored cache differs from the K/V rows");
    /* queries */
    int32_t *qseq = malloc((size_t)n * 4), *qctx = malloc((size_t)n * 4);
    for (int s = 0, i = 0; s < n_seq; s++)
        for (int j = 0; j < chunk[s]; j++, i++) {
            qseq[i] = s, qctx[i] = ctx_of[s] - chunk[s] + j + 1;
            max_ctx = qctx[i] > max_ctx ? qctx[i] : max_ctx;
        }
    float *q = tg_randn_arr((size_t)n * ld, 1.f);
    uint16_t *dq = tg_dev_bf16(q, (size_t)n * ld);
    float *qd = malloc((size_t)n * Hq * hd * 4), *cf = malloc(pool * 4), *want = malloc((size_t)n * Hq * hd * 4);
    for (int i = 0; i < n; i++) memcpy(qd + (size_t)i * Hq * hd, q + (size_t)i * ld, (size_t)(Hq * hd) * 4);
    cvt_bf16_to_f32(hcache, cf, pool);
    const int32_t **tabs = malloc((size_t)n * sizeof *tabs);
    for (int i = 0; i < n; i++) tabs[i] = tables + qseq[i] * table_ld;
    float *ws = malloc(attn_paged_workspace_floats(max_ctx, 1) * 4);
    attn_paged_fwd(want, qd, n, Hq, Hkv, hd, scale, cf, cf + bs * kd, bs, stride, tabs, qctx, ws, NULL);
    size_t wsb = attn_paged_cuda_ws_bytes(n, Hq, Hkv, hd, max_ctx);
    void *dws = wsb ? tg_dev(NULL, wsb) : NULL;
    uint16_t *dout = tg_dev(NULL, (size_t)n * Hq * hd * 2);
    int32_t *dqseq = tg_dev(qseq, (size_t)n * 4), *dqctx = tg_dev(qctx, (size_t)n * 4);
    CHECK(!attn_paged_fwd_cuda(dout, dq, ld, n, Hq, Hkv, hd, scale, dcache, dcache + bs * kd, bs, stride, dtab, table_ld,
                               dqseq, dqctx, max_ctx, dws, NULL), "launch: %s", rt_errmsg());
    CU(cudaDeviceSynchronize());
    float *got = tg_get_bf16(dout, (size_t)n * Hq * hd), vmax = 0;
    for (size_t i = 0; i < (size_t)T * ld; i++) vmax = fmaxf(vmax, fabsf(rows[i]));
    char what[96];
    snprintf(what, sizeof what, "hd%lld Hq%lld/%lld bs%lld n%d ctx%d ws%zu", (long long)hd, (long long)Hq, (long long)Hkv,
             (long long)bs, n, max_ctx, wsb);
    int ok = tg_close(what, got, want, NULL, (size_t)n * Hq * hd, 2 * BF16_U * vmax, 2 * BF16_U);
    if (prefill) {   /* the tensor-core prefill on the same cache, output poisoned first */
        int32_t *tiles = malloc((size_t)n * 4);
        int64_t nt = attn_paged_prefill_tiles(tiles, qseq, n, Hq, Hkv);
        int32_t *dtiles = tg_dev(tiles, (size_t)n * 4);
        CU(cudaMemset(dout, 0xff, (size_t)n * Hq * hd * 2));
        CHECK(!attn_paged_prefill_cuda(dout, dq, ld, n, Hq, Hkv, hd, scale, dcache, dcache + bs * kd, bs, stride, dtab,
                                       table_ld, dqseq, dqctx, dtiles, nt, NULL), "prefill launch: %s", rt_errmsg());
        CU(cudaDeviceSynchronize());
        float *got2 = tg_get_bf16(dout, (size_t)n * Hq * hd);
        snprintf(what, sizeof what, "prefill hd%lld Hq%lld/%lld bs%lld n%d ctx%d tiles%lld", (long long)hd,
                 (long long)Hq, (long long)Hkv, (long long)bs, n, max_ctx, (long long)nt);
        ok &= tg_close(what, got2, want, NULL, (size_t)n * Hq * hd, 2 * BF16_U * vmax, 2 * BF16_U);
        free(tiles), free(got2);
        cudaFree(dtiles);
    }
    cudaFree(drows), cudaFree(dcache), cudaFree(dtab), cudaFree(dseq_t), cudaFree(dpos_t), cudaFree(dq), cudaFree(dout);
    cudaFree(dqseq), cudaFree(dqctx), cudaFree(dws);
    free(perm), free(tables), free(rows), free(seq_t), free(pos_t), free(hcache), free(hrows), free(qseq), free(qctx);
    free(q), free(qd), free(cf), free(want), free(tabs), free(ws), free(got);
    CHECK(ok, "outside tolerance");
}

static void paged_case(int64_t Hq, int64_t Hkv, int64_t hd, int64_t bs, int n_seq, const int *ctx_of, const int *chunk) {
    paged_case_p(Hq, Hkv, hd, bs, n_seq, ctx_of, chunk, 0);
}

static void paged_decode_matches_cpu(void) {
    int c1[] = {1, 16, 17, 70, 129, 300}, k1[] = {1, 1, 1, 1, 1, 1};
    paged_case(4, 2, 64, 16, 6, c1, k1);
    int c2[] = {33, 5, 64, 1000}, k2[] = {1, 1, 1, 1};
    paged_case(28, 4, 128, 16, 4, c2, k2);   /* Qwen2.5-7B's heads: 7 per kv head */
    int c3[] = {9, 50, 22}, k3[] = {1, 1, 1};
    paged_case(2, 2, 64, 7, 3, c3, k3);
    int c4[] = {40, 3}, k4[] = {1, 1};
    paged_case(16, 1, 128, 16, 2, c4, k4);
}

static void paged_chunked_prefill_matches_cpu(void) {
    int c[] = {200, 21}, k[] = {120, 1};
    paged_case_p(8, 2, 128, 16, 2, c, k, 1);
    int c2[] = {513}, k2[] = {256};
    paged_case_p(14, 2, 64, 16, 1, c2, k2, 1);
    /* prefixes 0, 5 (a partial block), 48, 700 (several key tiles); chunks off the query tile */
    int c3[] = {37, 5 + 90, 48 + 33, 700 + 129}, k3[] = {37, 90, 33, 129};
    paged_case_p(12, 2, 128, 16, 4, c3, k3, 1);   /* Qwen2.5-1.5B's heads: 6 per kv head */
    paged_case_p(32, 8, 128, 7, 4, c3, k3, 1);    /* Llama-3-8B's: 4 per kv head, block size 7 */
    paged_case_p(4, 4, 64, 128, 4, c3, k3, 1);    /* MHA, hd 64, block size 128 */
    paged_case_p(28, 4, 128, 16, 4, c3, k3, 1);   /* Qwen2.5-7B's: 7 */
    paged_case_p(64, 8, 128, 16, 4, c3, k3, 1);   /* Llama-70B's: 8 */
}

static void paged_split_kv_matches_cpu(void) {
    int c[] = {5000, 30}, k[] = {1, 1};
    paged_case(8, 1, 128, 16, 2, c, k);
    int c2[] = {2049, 700, 1}, k2[] = {1, 1, 1};
    paged_case(64, 8, 128, 16, 3, c2, k2);   /* Llama-70B's heads */
}

GPU_TEST_MAIN(RUN(paged_decode_matches_cpu); RUN(paged_chunked_prefill_matches_cpu); RUN(paged_split_kv_matches_cpu);)
