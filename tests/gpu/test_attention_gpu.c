/* tests/gpu/test_attention_gpu.c — flash attention (kernels/cuda/attention.cu) against the
 * CPU twin attn_fwd / attn_bwd (kernels/cpu/attention.c, tested against torch SDPA), on the
 * same bf16 inputs: packed documents of mixed lengths (1 token, shorter than a tile, across
 * tile edges, several tiles), GQA (Hq = 8, Hkv = 2) and plain MHA, head dims 64 and 128.
 *
 * Tolerances (the CPU twin works in f32 on the same bf16 inputs).
 *  o: the GPU rounds each probability to bf16 before P·V (relative 2^-8 per term), so
 *     |Δo| ≤ 2^-8·Σ_s p_s|v_s| ≤ 2^-8·max|v|; the f32 accumulations differ far less; o is
 *     rounded to bf16 (2^-8·|want|). Allowed: 2^-8·|want| + 2^-7·max|v| (2× on the first term).
 *  lse: differs only through the f32 score sums (≤ hd·2^-24·scale·Σ|q_d k_d| ≈ 1e-4 here, for
 *     |q|, |k| ~ N(0, 1)) and the log/exp: 1e-3 absolute.
 *  dq, dk, dv: P and dS = P ⊙ (dP − Δ) are rounded to bf16 before their products (2^-8 each),
 *     the outputs once more; dS can cancel elementwise, so the check is normwise:
 *     ‖err‖₂ ≤ 2^-6·‖want‖₂ (twice the ≈ 2^-7 that two roundings give) and
 *     max|err| ≤ 2^-5·max|want|.
 * Determinism: the backward runs twice and must give the same bits. */
#include "tests/gpu/gpu_test.h"

#include "kernels/attention.h"

static int64_t make_docs(int32_t *ds, int64_t T) {
    static const int lens[] = {1, 37, 64, 130, 5, 300, 63, 65, 200};
    int64_t t = 0, nd = 0;
    while (t < T) {
        int64_t len = lens[nd % 9] + (int64_t)(tg_u32() % 7);
        for (int64_t i = 0; i < len && t + i < T; i++) ds[t + i] = (int32_t)t;
        t += len, nd++;
    }
    return nd;
}

static void attn_case(int64_t T, int64_t Hq, int64_t Hkv, int64_t hd) {
    float scale = 1.0f / sqrtf((float)hd);
    size_t nq = (size_t)(T * Hq * hd), nk = (size_t)(T * Hkv * hd);
    int32_t *ds = malloc((size_t)T * 4);
    int64_t nd = make_docs(ds, T);
    float *q = tg_randn_arr(nq, 1.f), *k = tg_randn_arr(nk, 1.f), *v = tg_randn_arr(nk, 1.f), *dO = tg_randn_arr(nq, 1.f);
    uint16_t *dq_ = tg_dev_bf16(q, nq), *dk_ = tg_dev_bf16(k, nk), *dv_ = tg_dev_bf16(v, nk), *ddO = tg_dev_bf16(dO, nq);
    int32_t *dds = (int32_t *)tg_dev(ds, (size_t)T * 4);
    float *ws = malloc(attn_workspace_floats(T, Hq, 1) * 4);
    /* forward */
    float *o = malloc(nq * 4), *lse = malloc((size_t)(T * Hq) * 4);
    attn_fwd(o, lse, q, k, v, ds, T, Hq, Hkv, hd, scale, ws, NULL);
    uint16_t *dout = (uint16_t *)tg_dev(NULL, nq * 2);
    float *dlse = (float *)tg_dev(NULL, (size_t)(T * Hq) * 4);
    CHECK(!attn_fwd_cuda(dout, dlse, dq_, dk_, dv_, dds, T, Hq, Hkv, hd, scale, NULL), "fwd launch");
    CU(cudaDeviceSynchronize());
    float vmax = 0;
    for (size_t i = 0; i < nk; i++) vmax = fmaxf(vmax, fabsf(v[i]));
    float *go = tg_get_bf16(dout, nq), *glse = tg_get_f32(dlse, (size_t)(T * Hq));
    char what[96];
    snprintf(what, sizeof what, "o T=%lld Hq=%lld Hkv=%lld hd=%lld", (long long)T, (long long)Hq, (long long)Hkv,
             (long long)hd);
    printf("     (%lld documents)\n", (long long)nd);
    int ok = tg_close(what, go, o, NULL, nq, 2 * BF16_U * vmax, 2 * BF16_U);
    ok &= tg_close("lse", glse, lse, NULL, (size_t)(T * Hq), 1e-3f, 0);
    CHECK(ok, "forward outside tolerance");
    {   /* the 128-query tile variant */
        uint16_t *dout2 = (uint16_t *)tg_dev(NULL, nq * 2);
        float *dlse2 = (float *)tg_dev(NULL, (size_t)(T * Hq) * 4);
        attn_cuda_layout lay = {.block_q = 128};
        CHECK(!attn_fwd_cuda_ex(dout2, dlse2, dq_, dk_, dv_, dds, T, Hq, Hkv, hd, scale, &lay, NULL), "fwd bq128");
        CU(cudaDeviceSynchronize());
        float *go2 = tg_get_bf16(dout2, nq), *glse2 = tg_get_f32(dlse2, (size_t)(T * Hq));
        ok = tg_close("o (query tile 128)", go2, o, NULL, nq, 2 * BF16_U * vmax, 2 * BF16_U);
        ok &= tg_close("lse (query tile 128)", glse2, lse, NULL, (size_t)(T * Hq), 1e-3f, 0);
        cudaFree(dout2), cudaFree(dlse2);
        free(go2), free(glse2);
        CHECK(ok, "forward (tile 128) outside tolerance");
    }
    /* backward, from the CPU's o (rounded to bf16, as the GPU would store it) and lse */
    uint16_t *do_ = tg_dev_bf16(o, nq);
    float *dlse_c = (float *)tg_dev(lse, (size_t)(T * Hq) * 4);
    float *wdq = malloc(nq * 4), *wdk = malloc(nk * 4), *wdv = malloc(nk * 4);
    attn_bwd(wdq, wdk, wdv, dO, o, lse, q, k, v, ds, T, Hq, Hkv, hd, scale, ws, NULL);
    uint16_t *gdq = (uint16_t *)tg_dev(NULL, nq * 2), *gdk = (uint16_t *)tg_dev(NULL, nk * 2);
    uint16_t *gdv = (uint16_t *)tg_dev(NULL, nk * 2);
    void *gws = tg_dev(NULL, attn_bwd_cuda_ws_bytes(T, Hq));
    CHECK(!attn_bwd_cuda(gdq, gdk, gdv, ddO, do_, dlse_c, dq_, dk_, dv_, dds, T, Hq, Hkv, hd, scale, gws, NULL), "bwd");
    CU(cudaDeviceSynchronize());
    float *rq = tg_get_bf16(gdq, nq), *rk = tg_get_bf16(gdk, nk), *rv = tg_get_bf16(gdv, nk);
    ok = tg_close_norm("dq", rq, wdq, nq, 1.0 / 64, 1.0 / 32);
    ok &= tg_close_norm("dk", rk, wdk, nk, 1.0 / 64, 1.0 / 32);
    ok &= tg_close_norm("dv", rv, wdv, nk, 1.0 / 64, 1.0 / 32);
    /* again: same bits */
    CHECK(!attn_bwd_cuda(gdq, gdk, gdv, ddO, do_, dlse_c, dq_, dk_, dv_, dds, T, Hq, Hkv, hd, scale, gws, NULL), "bwd 2");
    CU(cudaDeviceSynchronize());
    float *rq2 = tg_get_bf16(gdq, nq), *rk2 = tg_get_bf16(gdk, nk), *rv2 = tg_get_bf16(gdv, nk);
    ok &= !memcmp(rq, rq2, nq * 4) && !memcmp(rk, rk2, nk * 4) && !memcmp(rv, rv2, nk * 4);
    printf("     backward repeated: %s\n", !memcmp(rq, rq2, nq * 4) && !memcmp(rk, rk2, nk * 4) && !memcmp(rv, rv2, nk * 4)
                                               ? "bit-identical" : "DIFFERENT");
    cudaFree(dq_), cudaFree(dk_), cudaFree(dv_), cudaFree(ddO), cudaFree(dds), cudaFree(dout), cudaFree(dlse);
    cudaFree(do_), cudaFree(dlse_c), cudaFree(gdq), cudaFree(gdk), cudaFree(gdv), cudaFree(gws);
    free(ds), free(q), free(k), free(v), free(dO), free(ws), free(o), free(lse), free(go), free(glse);
    free(wdq), free(wdk), free(wdv), free(rq), free(rk), free(rv), free(rq2), free(rk2), free(rv2);
    CHECK(ok, "backward outside tolerance or not deterministic");
}

/* The fused layout: q, k, v read in place from one [T, (Hq + 2·Hkv)·hd] buffer, dq/dk/dv written
 * into one such buffer; must give the dense layout's bits exactly (same kernels, same order). */
static void flash_attention_fused_qkv_layout_matches_dense(void) {
    int64_t T = 300, Hq = 4, Hkv = 2, hd = 128, W = (Hq + 2 * Hkv) * hd;
    float scale = 1.0f / sqrtf((float)hd);
    size_t nq = (size_t)(T * Hq * hd), nk = (size_t)(T * Hkv * hd), nw = (size_t)(T * W);
    int32_t *ds = malloc((size_t)T * 4);
    make_docs(ds, T);
    float *qkv = tg_randn_arr(nw, 1.f), *dO = tg_randn_arr(nq, 1.f);
    uint16_t *dqkv_in = tg_dev_bf16(qkv, nw), *ddO = tg_dev_bf16(dO, nq);
    uint16_t *q = (uint16_t *)tg_dev(NULL, nq * 2), *k = (uint16_t *)tg_dev(NULL, nk * 2), *v = (uint16_t *)tg_dev(NULL, nk * 2);
    CU(cudaMemcpy2D(q, (size_t)(Hq * hd) * 2, dqkv_in, (size_t)W * 2, (size_t)(Hq * hd) * 2, (size_t)T, cudaMemcpyDeviceToDevice));
    CU(cudaMemcpy2D(k, (size_t)(Hkv * hd) * 2, dqkv_in + Hq * hd, (size_t)W * 2, (size_t)(Hkv * hd) * 2, (size_t)T, cudaMemcpyDeviceToDevice));
    CU(cudaMemcpy2D(v, (size_t)(Hkv * hd) * 2, dqkv_in + (Hq + Hkv) * hd, (size_t)W * 2, (size_t)(Hkv * hd) * 2, (size_t)T, cudaMemcpyDeviceToDevice));
    int32_t *dds = (int32_t *)tg_dev(ds, (size_t)T * 4);
    uint16_t *o1 = (uint16_t *)tg_dev(NULL, nq * 2), *o2 = (uint16_t *)tg_dev(NULL, nq * 2);
    float *l1 = (float *)tg_dev(NULL, (size_t)(T * Hq) * 4), *l2 = (float *)tg_dev(NULL, (size_t)(T * Hq) * 4);
    attn_cuda_layout lay = {.ld_q = W, .ld_kv = W, .ld_dq = W, .ld_dkv = W};
    CHECK(!attn_fwd_cuda(o1, l1, q, k, v, dds, T, Hq, Hkv, hd, scale, NULL), "dense fwd");
    CHECK(!attn_fwd_cuda_ex(o2, l2, dqkv_in, dqkv_in + Hq * hd, dqkv_in + (Hq + Hkv) * hd, dds, T, Hq, Hkv, hd, scale, &lay, NULL), "fused fwd");
    uint16_t *g1q = (uint16_t *)tg_dev(NULL, nq * 2), *g1k = (uint16_t *)tg_dev(NULL, nk * 2), *g1v = (uint16_t *)tg_dev(NULL, nk * 2);
    uint16_t *g2 = (uint16_t *)tg_dev(NULL, nw * 2);
    void *ws = tg_dev(NULL, attn_bwd_cuda_ws_bytes(T, Hq));
    CHECK(!attn_bwd_cuda(g1q, g1k, g1v, ddO, o1, l1, q, k, v, dds, T, Hq, Hkv, hd, scale, ws, NULL), "dense bwd");
    CHECK(!attn_bwd_cuda_ex(g2, g2 + Hq * hd, g2 + (Hq + Hkv) * hd, ddO, o2, l2, dqkv_in, dqkv_in + Hq * hd,
                            dqkv_in + (Hq + Hkv) * hd, dds, T, Hq, Hkv, hd, scale, &lay, ws, NULL), "fused bwd");
    CU(cudaDeviceSynchronize());
    uint16_t *h1 = malloc(nq * 2), *h2 = malloc(nq * 2), *a = malloc(nw * 2), *b = malloc(nw * 2);
    CU(cudaMemcpy(h1, o1, nq * 2, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(h2, o2, nq * 2, cudaMemcpyDeviceToHost));
    int ok = tg_equal_u16("o (fused = dense)", h2, h1, nq);
    /* assemble the dense gradients in the fused layout */
    CU(cudaMemcpy(b, g2, nw * 2, cudaMemcpyDeviceToHost));
    uint16_t *tq = malloc(nq * 2), *tk = malloc(nk * 2), *tv = malloc(nk * 2);
    CU(cudaMemcpy(tq, g1q, nq * 2, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(tk, g1k, nk * 2, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(tv, g1v, nk * 2, cudaMemcpyDeviceToHost));
    for (int64_t t = 0; t < T; t++) {
        memcpy(a + t * W, tq + t * Hq * hd, (size_t)(Hq * hd) * 2);
        memcpy(a + t * W + Hq * hd, tk + t * Hkv * hd, (size_t)(Hkv * hd) * 2);
        memcpy(a + t * W + (Hq + Hkv) * hd, tv + t * Hkv * hd, (size_t)(Hkv * hd) * 2);
    }
    ok &= tg_equal_u16("dqkv (fused = dense)", b, a, nw);
    cudaFree(dqkv_in), cudaFree(ddO), cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(dds), cudaFree(o1), cudaFree(o2);
    cudaFree(l1), cudaFree(l2), cudaFree(g1q), cudaFree(g1k), cudaFree(g1v), cudaFree(g2), cudaFree(ws);
    free(ds), free(qkv), free(dO), free(h1), free(h2), free(a), free(b), free(tq), free(tk), free(tv);
    CHECK(ok, "fused layout differs from dense");
}

static void flash_attention_gqa_packed_hd128(void) { attn_case(1000, 8, 2, 128); }
static void flash_attention_gqa_packed_hd64(void) { attn_case(777, 8, 2, 64); }
static void flash_attention_mha_hd64_short(void) { attn_case(45, 3, 3, 64); }

GPU_TEST_MAIN(RUN(flash_attention_gqa_packed_hd128); RUN(flash_attention_gqa_packed_hd64);
              RUN(flash_attention_mha_hd64_short); RUN(flash_attention_fused_qkv_layout_matches_dense);)
