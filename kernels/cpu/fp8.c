/* kernels/cpu/fp8.c — e4m3 encoding, DeepSeek's activation quantization and the block-scaled
 * FP8 GEMM: the CPU twins of kernels/cuda/fp8_gemm.cu (see kernels/fp8.h). */
#include "kernels/fp8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "kernels/convert.h"

uint8_t fp8_from_f32(float f) {
    if (isnan(f)) return 0x7f;
    uint8_t sign = signbit(f) ? 0x80 : 0;
    float a = fabsf(f);
    if (a >= FP8_E4M3_MAX) return sign | 0x7e;            /* saturate (also ±inf) */
    if (a < 0x1p-6f) {                                      /* subnormal: units of 2^-9 */
        float m = rintf(a * 512.0f);                        /* exact scaling, ties to even */
        return sign | (uint8_t)m;                           /* m = 8 is the smallest normal */
    }
    int ex;
    frexpf(a, &ex);                                         /* a = fr·2^ex, fr ∈ [0.5, 1) */
    int e = ex - 1;                                         /* a ∈ [2^e, 2^(e+1)) */
    float m = rintf(ldexpf(a, 3 - e));                      /* ∈ [8, 16], exact scaling */
    if (m == 16.0f) {
        m = 8.0f;
        e++;
    }
    int code = ((e + 7) << 3) | ((int)m - 8);
    if (code > 0x7e) code = 0x7e;
    return sign | (uint8_t)code;
}

static float block_scale(const float *x, int64_t n) {
    float amax = 0.0f;
    for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    float s = amax / FP8_E4M3_MAX;
    return s > 0.0f ? s : 1.0f;
}

int fp8_act_quant(const float *x, int64_t M, int64_t K, uint8_t *q, float *scale) {
    if (K <= 0 || K % FP8_BLOCK) return rt_fail(RT_EINVAL, "fp8 quantization: K = %lld is not a multiple of 128", (long long)K);
    int64_t nb = K / FP8_BLOCK;
    for (int64_t m = 0; m < M; m++)
        for (int64_t b = 0; b < nb; b++) {
            const float *xb = x + m * K + b * FP8_BLOCK;
            float s = block_scale(xb, FP8_BLOCK);
            scale[m * nb + b] = s;
            for (int i = 0; i < FP8_BLOCK; i++) q[m * K + b * FP8_BLOCK + i] = fp8_from_f32(xb[i] / s);
        }
    return 0;
}

int fp8_swiglu_quant(const float *gu, int64_t M, int64_t I, uint8_t *q, float *scale) {
    if (I <= 0 || I % FP8_BLOCK) return rt_fail(RT_EINVAL, "fp8 swiglu: I = %lld is not a multiple of 128", (long long)I);
    float h[FP8_BLOCK];
    int64_t nb = I / FP8_BLOCK;
    for (int64_t m = 0; m < M; m++)
        for (int64_t b = 0; b < nb; b++) {
            const float *g = gu + m * 2 * I + b * FP8_BLOCK, *u = g + I;
            for (int i = 0; i < FP8_BLOCK; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
            float s = block_scale(h, FP8_BLOCK);
            scale[m * nb + b] = s;
            for (int i = 0; i < FP8_BLOCK; i++) q[m * I + b * FP8_BLOCK + i] = fp8_from_f32(h[i] / s);
        }
    return 0;
}

typedef struct {
    const uint8_t *a, *w;
    const float *a_scale, *w_scale;
    int64_t row0, N, K;
    float *out_f32;
    uint16_t *out_bf16;
    float *scratch;        /* K floats per thread */
    float lut[256];
} gemm_ctx;

static void gemm_rows(void *p, size_t r0, size_t r1, int thread) {
    const gemm_ctx *c = p;
    int64_t K = c->K, N = c->N, nb = K / FP8_BLOCK;
    float *af = c->scratch + (size_t)thread * (size_t)K;
    for (size_t r = r0; r < r1; r++) {
        int64_t m = c->row0 + (int64_t)r;
        for (int64_t k = 0; k < K; k++) af[k] = c->lut[c->a[m * K + k]];
        for (int64_t n = 0; n < N; n++) {
            const uint8_t *wr = c->w + n * K;
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                double blk = 0.0;
                for (int64_t k = b * FP8_BLOCK; k < (b + 1) * FP8_BLOCK; k++) blk += (double)(af[k] * c->lut[wr[k]]);
                float s = c->a_scale[m * nb + b] * c->w_scale[(n / FP8_BLOCK) * nb + b];
                acc += (float)blk * s;
            }
            if (c->out_f32) c->out_f32[m * N + n] = acc;
            if (c->out_bf16) c->out_bf16[m * N + n] = f32_to_bf16(acc);
        }
    }
}

static void gemm_run(gemm_ctx *c, int64_t rows, tp_pool *pool) {
    if (rows > 0) tp_parallel_for(pool, (size_t)rows, gemm_rows, c);
}

static int scratch_init(gemm_ctx *c, tp_pool *pool) {
    size_t n;
    if (!rt_mul_ok((size_t)tp_size(pool), (size_t)c->K, &n) || !(c->scratch = rt_malloc(n * sizeof(float))))
        return rt_fail(RT_ENOMEM, "fp8 gemm: no memory for %lld-wide rows", (long long)c->K);
    return 0;
}

static void lut_init(float *lut) {
    for (int i = 0; i < 256; i++) {
        lut[i] = fp8e4m3_to_f32((uint8_t)i);
        if (isnan(lut[i])) lut[i] = 0.0f;   /* 0x7f/0xff never come out of fp8_from_f32 */
    }
}

int fp8_gemm(const uint8_t *a, const float *a_scale, const uint8_t *w, const float *w_scale, int64_t M, int64_t N,
             int64_t K, float *out_f32, uint16_t *out_bf16, tp_pool *pool) {
    if (K <= 0 || K % FP8_BLOCK) return rt_fail(RT_EINVAL, "fp8 gemm: K = %lld is not a multiple of 128", (long long)K);
    gemm_ctx c = {.a = a, .w = w, .a_scale = a_scale, .w_scale = w_scale, .row0 = 0, .N = N, .K = K,
                  .out_f32 = out_f32, .out_bf16 = out_bf16};
    lut_init(c.lut);
    if (scratch_init(&c, pool)) return RT_ENOMEM;
    gemm_run(&c, M, pool);
    free(c.scratch);
    return 0;
}

int fp8_gemm_grouped(const uint8_t *a, const float *a_scale, const uint8_t *w, const float *w_scale,
                     const int64_t *offsets, int64_t G, int64_t N, int64_t K, float *out_f32, uint16_t *out_bf16,
                     tp_pool *pool) {
    if (K <= 0 || K % FP8_BLOCK) return rt_fail(RT_EINVAL, "fp8 gemm: K = %lld is not a multiple of 128", (long long)K);
    for (int64_t g = 0; g < G; g++)
        if (offsets[g] < 0 || offsets[g + 1] < offsets[g])
            return rt_fail(RT_EINVAL, "fp8 grouped gemm: offsets[%lld..%lld] = %lld, %lld are not ascending", (long long)g,
                           (long long)g + 1, (long long)offsets[g], (long long)offsets[g + 1]);
    int64_t nb = K / FP8_BLOCK, nsb = (N + FP8_BLOCK - 1) / FP8_BLOCK;
    gemm_ctx c = {.a = a, .a_scale = a_scale, .N = N, .K = K, .out_f32 = out_f32, .out_bf16 = out_bf16};
    lut_init(c.lut);
    if (scratch_init(&c, pool)) return RT_ENOMEM;
    for (int64_t g = 0; g < G; g++) {
        c.w = w + g * N * K;
        c.w_scale = w_scale + g * nsb * nb;
        c.row0 = offsets[g];
        gemm_run(&c, offsets[g + 1] - offsets[g], pool);
    }
    free(c.scratch);
    return 0;
}
