/* kernels/cpu/act.c — SwiGLU. */
#include "kernels/act.h"

#include <math.h>

typedef struct {
    float *a, *dg, *du;
    const float *g, *u, *da;
} act_ctx;

static void fwd(void *p, size_t begin, size_t end, int thread) {
    const act_ctx *c = p;
    for (size_t i = begin; i < end; i++) {
        float g = c->g[i];
        c->a[i] = g / (1.0f + expf(-g)) * c->u[i];
    }
}

void swiglu_fwd(float *a, const float *g, const float *u, size_t n, tp_pool *pool) {
    act_ctx c = {.a = a, .g = g, .u = u};
    tp_parallel_for(pool, n, fwd, &c);
}

static void bwd(void *p, size_t begin, size_t end, int thread) {
    const act_ctx *c = p;
    for (size_t i = begin; i < end; i++) {
        float g = c->g[i], den = 1.0f + expf(-g), s = 1.0f / den, da = c->da[i];
        if (c->a) c->a[i] = g / den * c->u[i];   /* the same operations as swiglu_fwd */
        c->du[i] = da * g * s;
        c->dg[i] = da * c->u[i] * s * (1.0f + g * (1.0f - s));
    }
}

void swiglu_bwd(float *dg, float *du, float *a, const float *da, const float *g, const float *u, size_t n,
                tp_pool *pool) {
    act_ctx c = {.a = a, .dg = dg, .du = du, .da = da, .g = g, .u = u};
    tp_parallel_for(pool, n, bwd, &c);
}
