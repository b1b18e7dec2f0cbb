/* kernels/cpu/matmul.c — linear layers over mm_sgemm (kernels/cpu/gemm.c), split over the thread pool. */
#include "kernels/matmul.h"

typedef struct {
    float *out;
    const float *a, *b, *bias;
    int64_t M, N, K;
    bool acc;
} mm_ctx;

static void fwd_rows(void *p, size_t begin, size_t end, int thread) {
    const mm_ctx *c = p;
    int64_t m = (int64_t)(end - begin);
    float *y = c->out + (int64_t)begin * c->N;
    if (c->bias) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < c->N; j++) y[i * c->N + j] = c->bias[j];
    }
    mm_sgemm(false, true, m, c->N, c->K, 1.0f, c->a + (int64_t)begin * c->K, c->K, c->b, c->K, c->bias ? 1.0f : 0.0f, y,
             c->N);
}

void mm_linear_fwd(float *y, const float *x, const float *w, const float *b, int64_t M, int64_t N, int64_t K,
                   tp_pool *pool) {
    if (M <= 0 || N <= 0) return;
    mm_ctx c = {.out = y, .a = x, .b = w, .bias = b, .M = M, .N = N, .K = K};
    tp_parallel_for(pool, (size_t)M, fwd_rows, &c);
}

static void fwd_cols(void *p, size_t begin, size_t end, int thread) {
    const mm_ctx *c = p;
    int64_t j0 = (int64_t)begin * MM_COL_BLOCK, j1 = (int64_t)end * MM_COL_BLOCK;
    if (j1 > c->N) j1 = c->N;
    int64_t n = j1 - j0;
    if (c->bias)
        for (int64_t i = 0; i < c->M; i++)
            for (int64_t j = j0; j < j1; j++) c->out[i * c->N + j] = c->bias[j];
    /* (one row goes to a matrix-vector product inside mm_sgemm: it streams w at memory speed) */
    mm_sgemm(false, true, c->M, n, c->K, 1.0f, c->a, c->K, c->b + j0 * c->K, c->K, c->bias ? 1.0f : 0.0f, c->out + j0,
             c->N);
}

void mm_linear_fwd_cols(float *y, const float *x, const float *w, const float *b, int64_t M, int64_t N, int64_t K,
                        tp_pool *pool) {
    if (M <= 0 || N <= 0) return;
    mm_ctx c = {.out = y, .a = x, .b = w, .bias = b, .M = M, .N = N, .K = K};
    tp_parallel_for(pool, (size_t)((N + MM_COL_BLOCK - 1) / MM_COL_BLOCK), fwd_cols, &c);
}

static void bwd_x_rows(void *p, size_t begin, size_t end, int thread) {
    const mm_ctx *c = p;
    int64_t m = (int64_t)(end - begin);
    mm_sgemm(false, false, m, c->K, c->N, 1.0f, c->a + (int64_t)begin * c->N, c->N, c->b, c->K, c->acc ? 1.0f : 0.0f,
             c->out + (int64_t)begin * c->K, c->K);
}

void mm_linear_bwd_x(float *dx, bool accumulate_dx, const float *dy, const float *w, int64_t M, int64_t N, int64_t K,
                     tp_pool *pool) {
    if (!dx || M <= 0 || K <= 0) return;
    mm_ctx c = {.out = dx, .a = dy, .b = w, .M = M, .N = N, .K = K, .acc = accumulate_dx};
    tp_parallel_for(pool, (size_t)M, bwd_x_rows, &c);
}

static void bwd_w_cols(void *p, size_t begin, size_t end, int thread) {
    const mm_ctx *c = p;
    int64_t n = (int64_t)(end - begin);
    /* dw[begin:end, :] += dy[:, begin:end]ᵀ · x */
    mm_sgemm(true, false, n, c->K, c->M, 1.0f, c->a + begin, c->N, c->b, c->K, 1.0f, c->out + (int64_t)begin * c->K,
             c->K);
    if (c->bias) {
        float *db = (float *)c->bias;
        for (int64_t j = (int64_t)begin; j < (int64_t)end; j++) {
            float s = 0;
            for (int64_t i = 0; i < c->M; i++) s += c->a[i * c->N + j];
            db[j] += s;
        }
    }
}

void mm_linear_bwd_w(float *dw, float *db, const float *dy, const float *x, int64_t M, int64_t N, int64_t K,
                     tp_pool *pool) {
    if (M <= 0 || N <= 0) return;
    mm_ctx c = {.out = dw, .a = dy, .b = x, .bias = db, .M = M, .N = N, .K = K};
    tp_parallel_for(pool, (size_t)N, bwd_w_cols, &c);
}
