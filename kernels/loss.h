/* kernels/loss.h — the LM head fused with softmax cross-entropy, in chunks of rows.
 *
 * h [M, D] (final-norm hidden states), w [V, D] (lm_head, or the tied embedding table),
 * target [M]: a class < V for rows that carry loss, negative for rows that do not.
 * ce_fused() gathers the rows with a target into chunks of at most `chunk` rows; for each
 * chunk it forms the logits z = h·wᵀ ([chunk, V], the only logits that ever exist), the
 * per-row loss logsumexp(z) − z[target], and, when dh != NULL, the gradient of
 * scale · Σ loss: dh (overwritten; rows without a target get zeros) and dw (accumulated).
 * The loss sum is returned in *loss_sum (double, rows added in order), so the result is
 * the same for any pool size. The logsumexp of each row is taken with its maximum
 * subtracted and the sum of exponentials accumulated in double.
 *
 * The workspace is owned by the caller: ce_workspace_init() allocates it for a chunk size,
 * ce_workspace_free() releases it (NULL-safe members). Errors: RT_ENOMEM (init only).
 */
#ifndef RT_KERNELS_LOSS_H
#define RT_KERNELS_LOSS_H

#include <stdint.h>

#include "core/threadpool.h"

typedef struct {
    int64_t chunk, V, D;
    float *logits;     /* [chunk, V] */
    float *hc, *dhc;   /* [chunk, D] */
    int64_t *rows;     /* [chunk] */
    double *row_loss;  /* [chunk] */
} ce_workspace;

int ce_workspace_init(ce_workspace *ws, int64_t chunk, int64_t V, int64_t D);
void ce_workspace_free(ce_workspace *ws);

void ce_fused(double *loss_sum, float *dh, float *dw, const float *h, const float *w, const int32_t *target, int64_t M,
              float scale, ce_workspace *ws, tp_pool *pool);

#endif
