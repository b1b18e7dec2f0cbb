/* tests/gpu/test_embed_gpu.c — embedding gather and deterministic scatter-add
 * (kernels/cuda/embed.cu) against the CPU twin embed_fwd / embed_bwd (kernels/cpu/embed.c).
 *
 * Tolerance: exact. The forward copies bf16 rows. The backward starts each touched table row
 * from its f32 value and adds that id's rows in token order, in f32 — the CPU twin's order of
 * additions on the same (bf16-exact) inputs — so every element must be bit-identical. */
#include "tests/gpu/gpu_test.h"

#include "kernels/embed.h"

static void embed_fwd_bwd_exact(void) {
    int64_t V = 77, D = 2056, M = 1500;   /* many repeats; D spans two column blocks of 2048 */
    size_t nt = (size_t)(V * D), no = (size_t)(M * D);
    float *table = tg_randn_arr(nt, 1.f), *dout = tg_randn_arr(no, 1.f), *dt0 = tg_randn_arr(nt, 1.f);
    int32_t *ids = malloc((size_t)M * 4), *order = malloc((size_t)M * 4), *seg = malloc((size_t)(M + 1) * 4);
    for (int64_t i = 0; i < M; i++) ids[i] = (int32_t)(tg_u32() % (uint32_t)(V - 3));   /* the last ids are unused */
    int64_t n_seg = embed_bwd_plan(ids, M, order, seg);
    CHECK(n_seg > 0, "plan");
    uint16_t *dtab = tg_dev_bf16(table, nt), *ddout = tg_dev_bf16(dout, no), *dout_ = (uint16_t *)tg_dev(NULL, no * 2);
    int32_t *dids = (int32_t *)tg_dev(ids, (size_t)M * 4), *dord = (int32_t *)tg_dev(order, (size_t)M * 4);
    int32_t *dseg = (int32_t *)tg_dev(seg, (size_t)(n_seg + 1) * 4);
    float *ddt = (float *)tg_dev(dt0, nt * 4);
    CHECK(!embed_fwd_cuda(dout_, dtab, dids, M, D, NULL), "fwd");
    CHECK(!embed_bwd_cuda(ddt, ddout, dids, dord, dseg, n_seg, M, D, NULL), "bwd");
    CU(cudaDeviceSynchronize());
    float *want = malloc(no * 4), *wdt = malloc(nt * 4);
    embed_fwd(want, table, ids, M, D, NULL);
    memcpy(wdt, dt0, nt * 4);
    embed_bwd(wdt, dout, ids, M, D, NULL);
    float *got = tg_get_bf16(dout_, no), *gdt = tg_get_f32(ddt, nt);
    int ok = tg_equal_f32("embed_fwd", got, want, no);
    ok &= tg_equal_f32("embed_bwd (f32 table)", gdt, wdt, nt);
    cudaFree(dtab), cudaFree(ddout), cudaFree(dout_), cudaFree(dids), cudaFree(dord), cudaFree(dseg), cudaFree(ddt);
    free(table), free(dout), free(dt0), free(ids), free(order), free(seg), free(want), free(wdt), free(got), free(gdt);
    CHECK(ok, "not identical");
}

GPU_TEST_MAIN(RUN(embed_fwd_bwd_exact);)
