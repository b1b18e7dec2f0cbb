/* tests/gpu/test_loss_gpu.c — the fused, chunked LM head + cross-entropy
 * (kernels/cuda/loss.cu) against the CPU twin ce_fused (kernels/cpu/loss.c, tested against
 * torch cross_entropy), on the same bf16 h and w, several chunks, some rows without a target;
 * with and without a row list, and loss only.
 *
 * Tolerances. Loss sum: the logits are f32 sums of D bf16 products on both sides (another
 * order: ≤ D·2^-23·Σ|h_d w_d| ≈ 1e-5 per logit here), the sum of exponentials is f32 on the
 * GPU and double on the CPU (relative ≤ V·2^-24 worst, far less on random data): 1e-4 per row
 * plus 1e-6 relative. dh, dw: dz = scale·(softmax − onehot) is rounded to bf16 (2^-8) before
 * both products and dh once more: normwise ‖err‖₂ ≤ 2^-6·‖want‖₂ and max|err| ≤ 2^-5·max|want|. */
#include "tests/gpu/gpu_test.h"

#include "kernels/loss.h"

static void ce_case(int use_rows, int grad) {
    int64_t M = 300, V = 1000, D = 64, chunk = 128;
    float scale = 1.0f / 200;
    float *h = tg_randn_arr((size_t)(M * D), 1.f), *w = tg_randn_arr((size_t)(V * D), 0.5f);
    int32_t *target = malloc((size_t)M * 4), *rows = malloc((size_t)M * 4);
    int64_t n_rows = 0;
    for (int64_t i = 0; i < M; i++) {
        target[i] = tg_u32() % 4 == 0 ? -1 : (int32_t)(tg_u32() % (uint32_t)V);
        if (target[i] >= 0) rows[n_rows++] = (int32_t)i;
    }
    uint16_t *dh_ = tg_dev_bf16(h, (size_t)(M * D)), *dw_ = tg_dev_bf16(w, (size_t)(V * D));
    int32_t *dt = (int32_t *)tg_dev(target, (size_t)M * 4), *dr = (int32_t *)tg_dev(rows, (size_t)M * 4);
    float *dw0 = tg_randn_arr((size_t)(V * D), 0.01f);
    float *ddw = (float *)tg_dev(dw0, (size_t)(V * D) * 4);
    uint16_t *ddh = (uint16_t *)tg_dev(NULL, (size_t)(M * D) * 2);
    double *dloss = (double *)tg_dev(NULL, 8), gloss = 0;
    ce_cuda_ws *gws = NULL;
    CHECK(!ce_cuda_ws_create(&gws, chunk, V, D), "ws");
    CHECK(!ce_fused_cuda(dloss, grad ? ddh : NULL, grad ? ddw : NULL, dh_, dw_, dt, use_rows ? dr : NULL, n_rows, M,
                         scale, gws, NULL),
          "launch");
    CU(cudaDeviceSynchronize());
    CU(cudaMemcpy(&gloss, dloss, 8, cudaMemcpyDeviceToHost));
    ce_workspace cws;
    CHECK(!ce_workspace_init(&cws, 64, V, D), "cpu ws");
    float *wdh = malloc((size_t)(M * D) * 4), *wdw = malloc((size_t)(V * D) * 4);
    memcpy(wdw, dw0, (size_t)(V * D) * 4);
    double wloss = 0;
    ce_fused(&wloss, grad ? wdh : NULL, grad ? wdw : NULL, h, w, target, M, scale, &cws, NULL);
    printf("     loss sum (%s%s) got %.9g want %.9g over %lld rows\n", use_rows ? "row list" : "all rows",
           grad ? "" : ", loss only", gloss, wloss, (long long)n_rows);
    int ok = fabs(gloss - wloss) <= 1e-4 * (double)n_rows + 1e-6 * fabs(wloss);
    if (grad) {
        float *gdh = tg_get_bf16(ddh, (size_t)(M * D)), *gdw = tg_get_f32(ddw, (size_t)(V * D));
        ok &= tg_close_norm("dh", gdh, wdh, (size_t)(M * D), 1.0 / 64, 1.0 / 32);
        for (int64_t i = 0; i < V * D; i++) gdw[i] -= dw0[i], wdw[i] -= dw0[i];   /* compare the increments */
        ok &= tg_close_norm("dw increment", gdw, wdw, (size_t)(V * D), 1.0 / 64, 1.0 / 32);
        free(gdh), free(gdw);
    }
    ce_workspace_free(&cws);
    ce_cuda_ws_free(gws);
    cudaFree(dh_), cudaFree(dw_), cudaFree(dt), cudaFree(dr), cudaFree(ddw), cudaFree(ddh), cudaFree(dloss);
    free(h), free(w), free(target), free(rows), free(dw0), free(wdh), free(wdw);
    CHECK(ok, "outside tolerance");
}

static void ce_fused_all_rows(void) { ce_case(0, 1); }
static void ce_fused_row_list(void) { ce_case(1, 1); }
static void ce_fused_loss_only(void) { ce_case(1, 0); }

GPU_TEST_MAIN(RUN(ce_fused_all_rows); RUN(ce_fused_row_list); RUN(ce_fused_loss_only);)
