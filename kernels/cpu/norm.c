/* kernels/cpu/norm.c — RMSNorm forward and backward. */
#include "kernels/norm.h"

#include <math.h>

typedef struct {
    float *y, *rstd, *dx, *dw;
    const float *x, *w, *dy, *rs;
    int64_t M, D;
    float eps;
} norm_ctx;

static void fwd_rows(void *p, size_t begin, size_t end, int thread) {
    const norm_ctx *c = p;
    for (size_t i = begin; i < end; i++) {
        const float *x = c->x + (int64_t)i * c->D;
        float *y = c->y + (int64_t)i * c->D;
        double ss = 0;
        for (int64_t j = 0; j < c->D; j++) ss += (double)x[j] * x[j];
        float r = (float)(1.0 / sqrt(ss / (double)c->D + (double)c->eps));
        if (c->rstd) c->rstd[i] = r;
        for (int64_t j = 0; j < c->D; j++) y[j] = c->w[j] * (x[j] * r);
    }
}

void rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, int64_t M, int64_t D, float eps,
                 tp_pool *pool) {
    norm_ctx c = {.y = y, .rstd = rstd, .x = x, .w = w, .M = M, .D = D, .eps = eps};
    tp_parallel_for(pool, (size_t)M, fwd_rows, &c);
}

void rmsnorm_heads_fwd(float *x, int64_t ld, int64_t T, int64_t H, int64_t hd, const float *w, float eps) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) {
            float *v = x + t * ld + h * hd;
            double ss = 0;
            for (int64_t j = 0; j < hd; j++) ss += (double)v[j] * v[j];
            float r = (float)(1.0 / sqrt(ss / (double)hd + (double)eps));
            for (int64_t j = 0; j < hd; j++) v[j] = w[j] * (v[j] * r);
        }
}

/* The residual add fused in front (the twin of rmsnorm_fwd_cuda / rmsnorm_residual_fwd_cuda):
 * sum = x + add row by row, then the norm of that row; one pass over the rows. */
typedef struct {
    float *y, *rstd, *sum;
    const float *x, *add, *w;
    int64_t D;
    float eps;
} res_ctx;

static void res_rows(void *p, size_t begin, size_t end, int thread) {
    const res_ctx *c = p;
    for (size_t i = begin; i < end; i++) {
        const float *x = c->x + (int64_t)i * c->D, *a = c->add + (int64_t)i * c->D;
        float *s = c->sum + (int64_t)i * c->D;
        for (int64_t j = 0; j < c->D; j++) s[j] = x[j] + a[j];
        norm_ctx n = {.y = c->y, .rstd = c->rstd, .x = c->sum, .w = c->w, .D = c->D, .eps = c->eps};
        fwd_rows(&n, i, i + 1, thread);
    }
}

void rmsnorm_residual_fwd(float *y, float *rstd, float *sum, const float *x, const float *add, const float *w, int64_t M,
                          int64_t D, float eps, tp_pool *pool) {
    res_ctx c = {.y = y, .rstd = rstd, .sum = sum, .x = x, .add = add, .w = w, .D = D, .eps = eps};
    tp_parallel_for(pool, (size_t)M, res_rows, &c);
}

/* With xh = x·r and g = dy ⊙ w: dx = r · (g − xh · mean(g ⊙ xh)). */
static void bwd_rows(void *p, size_t begin, size_t end, int thread) {
    const norm_ctx *c = p;
    for (size_t i = begin; i < end; i++) {
        const float *x = c->x + (int64_t)i * c->D, *dy = c->dy + (int64_t)i * c->D;
        float *dx = c->dx + (int64_t)i * c->D;
        float r = c->rs[i];
        double dot = 0;
        for (int64_t j = 0; j < c->D; j++) dot += (double)(dy[j] * c->w[j]) * (x[j] * r);
        float mean = (float)(dot / (double)c->D);
        for (int64_t j = 0; j < c->D; j++) dx[j] += r * (dy[j] * c->w[j] - x[j] * r * mean);
    }
}

#define COLS 64
static void bwd_cols(void *p, size_t begin, size_t end, int thread) {
    const norm_ctx *c = p;
    for (size_t blk = begin; blk < end; blk++) {
        int64_t j0 = (int64_t)blk * COLS, j1 = j0 + COLS < c->D ? j0 + COLS : c->D;
        float acc[COLS] = {0};
        for (int64_t i = 0; i < c->M; i++) {
            const float *x = c->x + i * c->D, *dy = c->dy + i * c->D;
            float r = c->rs[i];
            for (int64_t j = j0; j < j1; j++) acc[j - j0] += dy[j] * (x[j] * r);
        }
        for (int64_t j = j0; j < j1; j++) c->dw[j] += acc[j - j0];
    }
}

void rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd, int64_t M,
                 int64_t D, tp_pool *pool) {
    norm_ctx c = {.dx = dx, .dw = dw, .x = x, .w = w, .dy = dy, .rs = rstd, .M = M, .D = D};
    tp_parallel_for(pool, (size_t)M, bwd_rows, &c);
    tp_parallel_for(pool, (size_t)((D + COLS - 1) / COLS), bwd_cols, &c);
}
