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

#ifdef __cplusplus
extern "C" {
#endif

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

/* ---- CUDA twins (kernels/cuda/loss.cu; tiling and tolerances in docs/kernels.md) ----
 * Device pointers; bf16 values are uint16_t bit patterns (rounded to nearest even), math in
 * f32. Asynchronous on `stream` (a cudaStream_t; NULL = default stream). Return 0, or
 * RT_EINTERNAL with the failing CUDA call in the message (RT_EINVAL for a shape not handled).
 * Results are deterministic (no floating-point atomics). */
#ifdef RT_HAVE_CUDA
/* The fused, chunked LM head + cross-entropy (the full [M, V] logits never exist).
 * ce_cuda_ws holds, for up to `chunk` rows: the gathered hidden rows (bf16), the logits (f32
 * [chunk, V]), their gradient (bf16 [chunk, V]), per-row losses, and a cuBLASLt context.
 * Created/freed by the caller (device allocation: RT_ENOMEM / RT_EINTERNAL). */
typedef struct ce_cuda_ws ce_cuda_ws;
int ce_cuda_ws_create(ce_cuda_ws **out, int64_t chunk, int64_t V, int64_t D);
void ce_cuda_ws_free(ce_cuda_ws *ws);   /* NULL is fine */
/* h [M,D], w [V,D] bf16; target [M] int32 (device; < 0: no loss). rows [n_rows] (device) lists
 * the rows that carry a target, ascending (NULL: rows 0..M−1, i.e. n_rows = M, and rows with a
 * negative target contribute nothing). For each chunk: logits = h_c·wᵀ (f32), row loss
 * logsumexp − z[target], dz = scale·(softmax − onehot) (bf16), dh_c = dz·w scattered into dh
 * (bf16, overwritten; rows without a target get zeros), dw (f32) += dzᵀ·h_c. dh == NULL: loss
 * only. *loss_sum (device double) = Σ loss over rows in order (overwritten). */
int ce_fused_cuda(double *loss_sum, uint16_t *dh, float *dw, const uint16_t *h, const uint16_t *w,
                  const int32_t *target, const int32_t *rows, int64_t n_rows, int64_t M, float scale, ce_cuda_ws *ws,
                  void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif
