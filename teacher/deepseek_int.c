/* teacher/deepseek_int.c — the linear layers and the SwiGLU MLP on ds_mat weights (see
 * deepseek_int.h): the lowest piece of the DeepSeek-V3 teacher, below both teacher/parallel.c
 * and teacher/deepseek.c. */
#include "teacher/deepseek_int.h"

#include <stdlib.h>

#include "core/alloc.h"
#include "core/status.h"
#include "kernels/act.h"
#include "kernels/matmul.h"

/* Few rows (decode): split the output features over the pool instead of the rows. */
void ds_linear_f32(float *y, const float *x, const float *w, const float *b, int64_t M, int64_t N, int64_t K,
                   tp_pool *pool) {
    if (M < 4 * tp_size(pool)) mm_linear_fwd_cols(y, x, w, b, M, N, K, pool);
    else mm_linear_fwd(y, x, w, b, M, N, K, pool);
}

void ds_linear(float *y, const float *x, const ds_mat *w, const float *b, int64_t M, tp_pool *pool) {
    if (w->f32) ds_linear_f32(y, x, w->f32, b, M, w->rows, w->cols, pool);
    else fp8_linear_fwd(y, x, &w->fp8, b, M, pool);
}

/* The dense-MLP form of a linear layer: rows over the pool for f32 (kernels/moe.h's calls). */
void ds_linear_rows(float *y, const float *x, const ds_mat *w, int64_t M, tp_pool *pool) {
    if (w->f32) mm_linear_fwd(y, x, w->f32, NULL, M, w->rows, w->cols, pool);
    else fp8_linear_fwd(y, x, &w->fp8, NULL, M, pool);
}

int ds_mlp_fwd(const ds_mlp *e, int64_t dim, int64_t inter, const float *x, int64_t n, float *out, float *scratch,
               tp_pool *pool) {
    float *own = NULL;
    if (!scratch) {
        size_t cnt;
        if (!rt_mul_ok((size_t)n, (size_t)(3 * inter), &cnt) || !(own = rt_malloc(cnt * sizeof *own))) return RT_ENOMEM;
        scratch = own;
    }
    (void)dim;
    float *g = scratch, *u = g + n * inter, *a = u + n * inter;
    ds_linear_rows(g, x, &e->w1, n, pool);
    ds_linear_rows(u, x, &e->w3, n, pool);
    swiglu_fwd(a, g, u, (size_t)(n * inter), pool);
    ds_linear_rows(out, a, &e->w2, n, pool);
    free(own);
    return 0;
}
