/* tests/gpu/test_optim_gpu.c — AdamW, sum of squares and scaling (kernels/cuda/optim.cu)
 * against the CPU twins adamw_step / vec_sumsq / vec_scale (kernels/cpu/optim.c, AdamW
 * tested against torch.optim.AdamW).
 *
 * Tolerances. AdamW and scaling: exact — the kernel performs the twin's f32 operations in the
 * same order with no FMA contraction (_rn intrinsics), and the twin is built without FMA, so
 * p, m, v after several steps (with a clipping factor folded in) must be bit-identical, and
 * the bf16 copy must equal f32_to_bf16(p). Sum of squares: both sum in double, in different
 * orders: relative 1e-12 (n·2^-53 ≈ 1e-10 is the worst case for 2^20 terms; random terms stay
 * far below; all terms are positive, so there is no cancellation). */
#include "tests/gpu/gpu_test.h"

#include "kernels/optim.h"

static void adamw_case(size_t n, size_t offset) {
    float *p = tg_randn_arr(n, 0.5f), *m = calloc(n, 4), *v = calloc(n, 4);
    float *pd = (float *)tg_dev(NULL, (n + offset) * 4), *md = (float *)tg_dev(NULL, (n + offset) * 4);
    float *vd = (float *)tg_dev(NULL, (n + offset) * 4), *gd = (float *)tg_dev(NULL, (n + offset) * 4);
    uint16_t *bd = (uint16_t *)tg_dev(NULL, (n + offset) * 2);
    CU(cudaMemcpy(pd + offset, p, n * 4, cudaMemcpyHostToDevice));
    CU(cudaMemset(md, 0, (n + offset) * 4));
    CU(cudaMemset(vd, 0, (n + offset) * 4));
    adamw_hparams h = {.lr = 3e-4, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    for (int step = 1; step <= 4; step++) {
        float *g = tg_randn_arr(n, step == 2 ? 30.f : 1.f);
        float gs = step == 2 ? 0.125f : 1.f;   /* a clipped step */
        CU(cudaMemcpy(gd + offset, g, n * 4, cudaMemcpyHostToDevice));
        h.step = step;
        CHECK(!adamw_step_cuda(pd + offset, bd + offset, gd + offset, md + offset, vd + offset, n, &h, gs, NULL), "launch");
        if (gs != 1.f) vec_scale(g, n, gs, NULL);
        adamw_step(p, g, m, v, n, &h, NULL);
        free(g);
    }
    CU(cudaDeviceSynchronize());
    float *gp = malloc(n * 4), *gm = malloc(n * 4), *gv = malloc(n * 4);
    uint16_t *gb = malloc(n * 2), *wb = malloc(n * 2);
    CU(cudaMemcpy(gp, pd + offset, n * 4, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(gm, md + offset, n * 4, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(gv, vd + offset, n * 4, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(gb, bd + offset, n * 2, cudaMemcpyDeviceToHost));
    cvt_f32_to_bf16(p, wb, n);
    int ok = tg_equal_f32(offset ? "p (unaligned path)" : "p", gp, p, n);
    ok &= tg_equal_f32("m", gm, m, n) & tg_equal_f32("v", gv, v, n) & tg_equal_u16("p as bf16", gb, wb, n);
    cudaFree(pd), cudaFree(md), cudaFree(vd), cudaFree(gd), cudaFree(bd);
    free(p), free(m), free(v), free(gp), free(gm), free(gv), free(gb), free(wb);
    CHECK(ok, "not identical");
}

static void adamw_bit_identical_to_cpu(void) {
    adamw_case((1u << 20) + 3, 0);   /* float4 body + scalar tail */
    adamw_case(10001, 1);            /* misaligned: scalar kernel */
}

static void sumsq_and_scale(void) {
    size_t n = (1u << 22) + 12345;
    float *x = tg_randn_arr(n, 0.01f);
    float *dx = (float *)tg_dev(x, n * 4);
    double *dout = (double *)tg_dev(NULL, 8), got = 0, got2 = 0;
    void *ws = tg_dev(NULL, vec_sumsq_cuda_ws_bytes(n));
    CHECK(!vec_sumsq_cuda(dout, false, dx, n, ws, NULL), "sumsq");
    CU(cudaMemcpy(&got, dout, 8, cudaMemcpyDeviceToHost));
    CHECK(!vec_sumsq_cuda(dout, true, dx, n / 3, ws, NULL), "sumsq acc");
    CU(cudaMemcpy(&got2, dout, 8, cudaMemcpyDeviceToHost));
    double want = vec_sumsq(x, n, NULL), want2 = want + vec_sumsq(x, n / 3, NULL);
    printf("     sumsq got %.17g want %.17g; accumulated got %.17g want %.17g\n", got, want, got2, want2);
    CHECK(fabs(got - want) <= 1e-12 * want && fabs(got2 - want2) <= 1e-12 * want2, "sumsq outside 1e-12");
    CHECK(!vec_scale_cuda(dx, n, 0.37f, NULL), "scale");
    float *gx = tg_get_f32(dx, n);
    vec_scale(x, n, 0.37f, NULL);
    int ok = tg_equal_f32("vec_scale", gx, x, n);
    cudaFree(dx), cudaFree(dout), cudaFree(ws);
    free(x), free(gx);
    CHECK(ok, "scale not identical");
}

GPU_TEST_MAIN(RUN(adamw_bit_identical_to_cpu); RUN(sumsq_and_scale);)
