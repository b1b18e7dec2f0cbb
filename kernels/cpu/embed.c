/* kernels/cpu/embed.c — embedding gather and scatter-add. */
#include "kernels/embed.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    float *out;
    const float *in;
    const int32_t *ids;
    int64_t M, D;
} emb_ctx;

static void fwd(void *p, size_t begin, size_t end, int thread) {
    const emb_ctx *c = p;
    for (size_t i = begin; i < end; i++)
        memcpy(c->out + (int64_t)i * c->D, c->in + (int64_t)c->ids[i] * c->D, (size_t)c->D * sizeof(float));
}

void embed_fwd(float *out, const float *table, const int32_t *ids, int64_t M, int64_t D, tp_pool *pool) {
    emb_ctx c = {.out = out, .in = table, .ids = ids, .M = M, .D = D};
    tp_parallel_for(pool, (size_t)M, fwd, &c);
}

void embed_fwd_rows(float *out, const float *table, const int32_t *ids, int64_t M, int64_t D, int64_t v0, int64_t nv) {
    for (int64_t i = 0; i < M; i++) {
        int64_t r = (int64_t)ids[i] - v0;
        if (r >= 0 && r < nv) memcpy(out + i * D, table + r * D, (size_t)D * sizeof(float));
        else memset(out + i * D, 0, (size_t)D * sizeof(float));
    }
}

#define COLS 64
static void bwd(void *p, size_t begin, size_t end, int thread) {
    const emb_ctx *c = p;
    for (size_t blk = begin; blk < end; blk++) {
        int64_t j0 = (int64_t)blk * COLS, j1 = j0 + COLS < c->D ? j0 + COLS : c->D;
        for (int64_t i = 0; i < c->M; i++) {
            float *dst = c->out + (int64_t)c->ids[i] * c->D;
            const float *src = c->in + i * c->D;
            for (int64_t j = j0; j < j1; j++) dst[j] += src[j];
        }
    }
}

void embed_bwd(float *dtable, const float *dout, const int32_t *ids, int64_t M, int64_t D, tp_pool *pool) {
    emb_ctx c = {.out = dtable, .in = dout, .ids = ids, .M = M, .D = D};
    tp_parallel_for(pool, (size_t)((D + COLS - 1) / COLS), bwd, &c);
}

/* Counting sort by id: two passes over ids, stable within an id. The distinct ids are
 * found by compacting the counts; order is then filled by a running offset per id. Ids are
 * bounded by the largest id seen, so the count array is allocated here (the one exception
 * to "no allocation": on failure −1 is returned). */
int64_t embed_bwd_plan(const int32_t *ids, int64_t M, int32_t *order, int32_t *seg) {
    int32_t vmax = -1;
    for (int64_t i = 0; i < M; i++) if (ids[i] > vmax) vmax = ids[i];
    if (M == 0) { seg[0] = 0; return 0; }
    int32_t *off = calloc((size_t)vmax + 2, sizeof *off);
    if (!off) return -1;
    for (int64_t i = 0; i < M; i++) off[ids[i] + 1]++;
    int64_t n_seg = 0;
    for (int32_t v = 0; v <= vmax; v++) {
        if (off[v + 1]) seg[n_seg++] = off[v];
        off[v + 1] += off[v];
    }
    seg[n_seg] = (int32_t)M;
    for (int64_t i = 0; i < M; i++) order[off[ids[i]]++] = (int32_t)i;
    free(off);
    return n_seg;
}
