/* tests/gpu/test_ds_norm_gpu.c — the teacher's GPU RMSNorm (fused residual add) and YaRN rope
 * (kernels/cuda/ds_norm.cu, ds_rope.cu) against rmsnorm_fwd (kernels/cpu/norm.c) and the
 * interleaved rotation of kernels/rope.h (see test_rope) on R1's shapes. Needs a GPU.
 * Tolerances: the residual sum is one bf16 rounding of an exact f32 sum: exact. RMSNorm: f32
 * sum of squares in another order (CPU: double) and one bf16 rounding: |d| ≤ 2^-8·|ref| +
 * 1e-6·max|ref|. Rope: CUDA's cosf/sinf are within 2 ulp of glibc's, then two products and
 * one bf16 rounding: |d| ≤ 2^-8·|ref| + 2^-12·|x|max of the pair. */
#include "tests/gpu/ds_gpu_test.h"
#include "kernels/norm.h"
#include "kernels/rope.h"

static void test_rmsnorm(void) {
    int64_t M = 33, D = 7168;
    uint16_t *x = malloc((size_t)(M * D) * 2), *res = malloc((size_t)(M * D) * 2), *y = malloc((size_t)(M * D) * 2), *gx = malloc((size_t)(M * D) * 2);
    float *xs = malloc((size_t)(M * D) * 4), *w = malloc((size_t)D * 4), *ref = malloc((size_t)(M * D) * 4);
    for (int64_t i = 0; i < M * D; i++) { x[i] = f32_to_bf16(rnd_normal() * (1 + i / D)); res[i] = f32_to_bf16(rnd_normal()); }
    for (int64_t j = 0; j < D; j++) w[j] = 0.5f + rnd_unit();
    for (int64_t i = 0; i < M * D; i++) xs[i] = bf16_to_f32(f32_to_bf16(bf16_to_f32(x[i]) + bf16_to_f32(res[i])));
    rmsnorm_fwd(ref, NULL, xs, w, M, D, 1e-6f, NULL);
    uint16_t *dx = dev_copy(x, (size_t)(M * D) * 2), *dres = dev_copy(res, (size_t)(M * D) * 2), *dy = dev_poison((size_t)(M * D) * 2);
    float *dw = dev_copy(w, (size_t)D * 4);
    CHECK(dx && dres && dy && dw, "cudaMalloc");
    RT(ds_rmsnorm_cuda(dx, D, dres, dw, M, D, 1e-6f, dy, D, NULL));
    CU(cudaDeviceSynchronize());
    CHECK(!dev_get(y, dy, (size_t)(M * D) * 2) && !dev_get(gx, dx, (size_t)(M * D) * 2), "copy back");
    for (int64_t m = 0; m < M; m++) {
        float mx = 0;
        for (int64_t j = 0; j < D; j++) mx = fmaxf(mx, fabsf(ref[m * D + j]));
        for (int64_t j = 0; j < D; j++) {
            int64_t i = m * D + j;
            CHECK(bf16_to_f32(gx[i]) == xs[i], "residual [%lld,%lld]: gpu %g cpu %g", (long long)m, (long long)j, bf16_to_f32(gx[i]), xs[i]);
            CHECK(fabsf(bf16_to_f32(y[i]) - ref[i]) <= 0x1p-8f * fabsf(ref[i]) + 1e-6f * mx, "rmsnorm [%lld,%lld]: gpu %g cpu %g", (long long)m, (long long)j, bf16_to_f32(y[i]), ref[i]);
        }
    }
    cudaFree(dx); cudaFree(dres); cudaFree(dy); cudaFree(dw);
    free(x); free(res); free(y); free(gx); free(xs); free(w); free(ref);
    passed++;
}

/* q rows [T, H, 192] with the rope part at 128…191 (R1's q layout), positions up to 160k.
 * The reference is kernels/rope.h's documented interleaved rotation written out here, with
 * the angle and cos/sin formed as yarn_tables does ((f32)pos·inv_freq, cosf/sinf, times
 * cs_scale): kernels/cpu/yarn.c itself cannot be linked in the GPU-only build (its yarn_init
 * needs core/model_config.h, hence jansson). inv_freq: theta 10000, the upper half divided by
 * YaRN's factor 40, cs_scale 1.3 (R1's mscale ratio is 1.0; any value tests the scaling). */
static void test_rope(void) {
    int64_t T = 37, H = 128, stride = 192, off = 128, dim = 64, half = 32;
    float inv[32], cs = 1.3f;
    for (int i = 0; i < half; i++) inv[i] = powf(10000.0f, -(float)(2 * i) / (float)dim) / (i >= 16 ? 40.0f : 1.0f);
    int32_t *pos = malloc((size_t)T * 4);
    for (int64_t t = 0; t < T; t++) pos[t] = t < 5 ? (int32_t)t : (int32_t)(rnd() % 163840);
    uint16_t *xb = malloc((size_t)(T * H * stride) * 2), *got = malloc((size_t)(T * H * stride) * 2);
    for (int64_t i = 0; i < T * H * stride; i++) xb[i] = f32_to_bf16(rnd_normal());
    uint16_t *dx = dev_copy(xb, (size_t)(T * H * stride) * 2);
    int32_t *dpos = dev_copy(pos, (size_t)T * 4);
    float *dinv = dev_copy(inv, sizeof inv);
    CHECK(dx && dpos && dinv, "cudaMalloc");
    RT(ds_rope_cuda(dx + off, T, H * stride, H, stride, dim, dpos, dinv, cs, NULL));
    CU(cudaDeviceSynchronize());
    CHECK(!dev_get(got, dx, (size_t)(T * H * stride) * 2), "copy back");
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) {
            const uint16_t *x = xb + (t * H + h) * stride, *g = got + (t * H + h) * stride;
            for (int64_t j = 0; j < off; j++) CHECK(g[j] == x[j], "nope part changed at [%lld,%lld,%lld]", (long long)t, (long long)h, (long long)j);
            for (int64_t i = 0; i < half; i++) {
                float ang = (float)pos[t] * inv[i], c = cosf(ang) * cs, s = sinf(ang) * cs;
                float a = bf16_to_f32(x[off + 2 * i]), b = bf16_to_f32(x[off + 2 * i + 1]);
                float y0 = a * c - b * s, y1 = b * c + a * s, pm = fmaxf(fabsf(a), fabsf(b));
                float g0 = bf16_to_f32(g[off + i]), g1 = bf16_to_f32(g[off + i + half]);
                CHECK(fabsf(g0 - y0) <= 0x1p-8f * fabsf(y0) + 0x1p-12f * pm * cs && fabsf(g1 - y1) <= 0x1p-8f * fabsf(y1) + 0x1p-12f * pm * cs,
                      "rope [%lld,%lld] pair %lld pos %d: gpu %g %g, ref %g %g", (long long)t, (long long)h, (long long)i, pos[t], g0, g1, y0, y1);
            }
        }
    cudaFree(dx); cudaFree(dpos); cudaFree(dinv);
    free(pos); free(xb); free(got);
    passed++;
}

int main(void) {
    if (!ds_have_device()) return 0;
    test_rmsnorm();
    test_rope();
    return ds_finish();
}
