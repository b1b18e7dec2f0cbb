/* kernels/cpu/loss.c — chunked LM head + cross-entropy. */
#include "kernels/loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "kernels/matmul.h"

int ce_workspace_init(ce_workspace *ws, int64_t chunk, int64_t V, int64_t D) {
    memset(ws, 0, sizeof *ws);
    if (chunk < 1) chunk = 1;
    ws->chunk = chunk;
    ws->V = V;
    ws->D = D;
    ws->logits = rt_aligned_alloc(64, (size_t)(chunk * V) * sizeof(float));
    ws->hc = rt_aligned_alloc(64, (size_t)(chunk * D) * sizeof(float));
    ws->dhc = rt_aligned_alloc(64, (size_t)(chunk * D) * sizeof(float));
    ws->rows = rt_malloc((size_t)chunk * sizeof(int64_t));
    ws->row_loss = rt_malloc((size_t)chunk * sizeof(double));
    if (!ws->logits || !ws->hc || !ws->dhc || !ws->rows || !ws->row_loss) {
        ce_workspace_free(ws);
        return rt_errorf(RT_ENOMEM, "cross-entropy workspace for %lld rows of %lld logits", (long long)chunk,
                         (long long)V);
    }
    return 0;
}

void ce_workspace_free(ce_workspace *ws) {
    free(ws->logits);
    free(ws->hc);
    free(ws->dhc);
    free(ws->rows);
    free(ws->row_loss);
    memset(ws, 0, sizeof *ws);
}

typedef struct {
    ce_workspace *ws;
    const int32_t *target;
    float scale;
    int grad;
} ce_ctx;

/* Row r of the chunk: loss, and (grad) its logits turned into scale·(softmax − onehot); one
 * exponential per logit. */
static void softmax_rows(void *p, size_t begin, size_t end, int thread) {
    const ce_ctx *c = p;
    int64_t V = c->ws->V;
    for (size_t r = begin; r < end; r++) {
        float *z = c->ws->logits + (int64_t)r * V;
        int32_t y = c->target[c->ws->rows[r]];
        float mx = z[0], zy = z[y];
        for (int64_t j = 1; j < V; j++) mx = z[j] > mx ? z[j] : mx;
        double sum = 0;
        for (int64_t j = 0; j < V; j++) sum += (z[j] = expf(z[j] - mx));   /* z now holds exp(z − max) */
        c->ws->row_loss[r] = (double)mx + log(sum) - (double)zy;
        if (!c->grad) continue;
        float k = (float)((double)c->scale / sum);
        for (int64_t j = 0; j < V; j++) z[j] *= k;
        z[y] -= c->scale;
    }
}

void ce_fused(double *loss_sum, float *dh, float *dw, const float *h, const float *w, const int32_t *target, int64_t M,
              float scale, ce_workspace *ws, tp_pool *pool) {
    int64_t D = ws->D, V = ws->V;
    double total = 0;
    if (dh) memset(dh, 0, (size_t)(M * D) * sizeof *dh);
    ce_ctx c = {.ws = ws, .target = target, .scale = scale, .grad = dh != NULL};
    int64_t i = 0;
    while (i < M) {
        int64_t n = 0;
        for (; i < M && n < ws->chunk; i++) {
            if (target[i] < 0) continue;
            ws->rows[n] = i;
            memcpy(ws->hc + n * D, h + i * D, (size_t)D * sizeof(float));
            n++;
        }
        if (n == 0) break;
        mm_linear_fwd(ws->logits, ws->hc, w, NULL, n, V, D, pool);
        tp_parallel_for(pool, (size_t)n, softmax_rows, &c);
        for (int64_t r = 0; r < n; r++) total += ws->row_loss[r];
        if (!dh) continue;
        mm_linear_bwd_x(ws->dhc, false, ws->logits, w, n, V, D, pool);
        mm_linear_bwd_w(dw, NULL, ws->logits, ws->hc, n, V, D, pool);
        for (int64_t r = 0; r < n; r++) memcpy(dh + ws->rows[r] * D, ws->dhc + r * D, (size_t)D * sizeof(float));
    }
    *loss_sum = total;
}
