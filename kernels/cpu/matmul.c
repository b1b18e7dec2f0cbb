/* kernels/cpu/matmul.c — linear layers over OpenBLAS, split over the thread pool. */
#include "kernels/matmul.h"

#include <cblas.h>

void mm_blas_single_thread(void) { openblas_set_num_threads(1); }

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
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)c->N, (int)c->K, 1.0f,
                c->a + (int64_t)begin * c->K, (int)c->K, c->b, (int)c->K, c->bias ? 1.0f : 0.0f, y, (int)c->N);
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
    if (c->M == 1) {   /* one row: a matrix-vector product streams w at memory speed */
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)c->K, 1.0f, c->b + j0 * c->K, (int)c->K, c->a, 1,
                    c->bias ? 1.0f : 0.0f, c->out + j0, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c->M, (int)n, (int)c->K, 1.0f, c->a, (int)c->K,
                c->b + j0 * c->K, (int)c->K, c->bias ? 1.0f : 0.0f, c->out + j0, (int)c->N);
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
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)c->K, (int)c->N, 1.0f,
                c->a + (int64_t)begin * c->N, (int)c->N, c->b, (int)c->K, c->acc ? 1.0f : 0.0f,
                c->out + (int64_t)begin * c->K, (int)c->K);
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
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)c->K, (int)c->M, 1.0f, c->a + begin,
                (int)c->N, c->b, (int)c->K, 1.0f, c->out + (int64_t)begin * c->K, (int)c->K);
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
