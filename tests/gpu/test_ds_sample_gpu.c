/* tests/gpu/test_ds_sample_gpu.c — batched GPU sampling (kernels/cuda/ds_sample.cu) against
 * smp_sample / smp_logprob (kernels/cpu/sample.c, tested in tests/unit/test_sample.c), on
 * R1's vocabulary size with per-row parameters and RNG streams. Needs a GPU.
 * Tolerance: tokens exact (both sides compute the same double probabilities, keep the same
 * set and walk the same cumulative mass; a mismatch needs an exact tie or a draw within
 * ~1e-16 of a boundary); logprobs within 1e-6·max(1, |lp|) (double sums in another order,
 * one f32 rounding). */
#include "tests/gpu/ds_gpu_test.h"
#include "kernels/sample.h"

static void run(int64_t V, int64_t n, float spread) {
    const smp_params ps[] = {
        SMP_GREEDY,
        {.temperature = 0.6f, .top_k = 0, .top_p = 0.95f, .min_p = 0.0f},   /* R1's recommended */
        {.temperature = 1.0f, .top_k = 50, .top_p = 1.0f, .min_p = 0.0f},
        {.temperature = 0.7f, .top_k = 40, .top_p = 0.9f, .min_p = 0.05f},
        {.temperature = 1.3f, .top_k = 0, .top_p = 1.0f, .min_p = 0.1f},
        {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f},
        {.temperature = 0.3f, .top_k = 1, .top_p = 1.0f, .min_p = 0.0f},
        {.temperature = 2.0f, .top_k = 0, .top_p = 0.5f, .min_p = 0.0f},
    };
    int np = (int)(sizeof ps / sizeof *ps);
    float *l = malloc((size_t)(n * V) * 4), *lp = malloc((size_t)n * 4);
    smp_params *p = malloc((size_t)n * sizeof *p);
    uint64_t *rng = malloc((size_t)n * 3 * 8);
    int32_t *tok = malloc((size_t)n * 4);
    void *ws = malloc(smp_workspace_bytes(V));
    for (int64_t i = 0; i < n * V; i++) l[i] = rnd_normal() * spread;
    for (int64_t r = 0; r < n; r++) {
        p[r] = ps[r % np];
        rng[3 * r] = ((uint64_t)rnd() << 32) | rnd();
        rng[3 * r + 1] = (uint64_t)r;
        rng[3 * r + 2] = rnd() % 5000;
    }
    size_t wsb = smp_cuda_workspace_bytes(n, V);
    float *dl = dev_copy(l, (size_t)(n * V) * 4), *dlp = dev_poison((size_t)n * 4);
    smp_params *dp = dev_copy(p, (size_t)n * sizeof *p);
    uint64_t *drng = dev_copy(rng, (size_t)n * 3 * 8);
    int32_t *dtok = dev_poison((size_t)n * 4);
    void *dws = dev_poison(wsb);
    CHECK(dl && dlp && dp && drng && dtok && dws, "cudaMalloc");
    RT(smp_sample_cuda(dl, n, V, dp, drng, dws, wsb, dtok, dlp, NULL));
    CU(cudaDeviceSynchronize());
    CHECK(!dev_get(tok, dtok, (size_t)n * 4) && !dev_get(lp, dlp, (size_t)n * 4), "copy back");
    for (int64_t r = 0; r < n; r++) {
        int32_t want;
        double u = smp_uniform(rng[3 * r], rng[3 * r + 1], rng[3 * r + 2]);
        RT(smp_sample(l + r * V, V, &p[r], u, ws, &want));
        CHECK(tok[r] == want, "V %lld row %lld (T %g, top_k %d, top_p %g, min_p %g, u %.17g): gpu %d cpu %d", (long long)V,
              (long long)r, p[r].temperature, p[r].top_k, p[r].top_p, p[r].min_p, u, tok[r], want);
        float wl = smp_logprob(l + r * V, V, want);
        CHECK(fabsf(lp[r] - wl) <= 1e-6f * fmaxf(1.0f, fabsf(wl)), "row %lld logprob gpu %.9g cpu %.9g", (long long)r, lp[r], wl);
    }
    cudaFree(dl); cudaFree(dlp); cudaFree(dp); cudaFree(drng); cudaFree(dtok); cudaFree(dws);
    free(l); free(lp); free(p); free(rng); free(tok); free(ws);
    passed++;
}

int main(void) {
    if (!ds_have_device()) return 0;
    run(129280, 64, 3.0f);   /* R1's vocabulary, peaked logits: filtered rows take the compacted path */
    run(129280, 16, 0.5f);   /* flat: nuclei of ~10^5 tokens, more than the 8192 compacted: global path */
    run(7, 32, 1.0f);        /* fewer tokens than threads; top_k ≥ V */
    return ds_finish();
}
