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

/* ---- Logit distillation from a teacher's stored top-k (docs/student.md, "Logit distillation") ----
 * kd_fused() is ce_fused() with, for every row that has a target, the loss
 *     (1 − alpha)·CE + alpha·T²·D(teacher ‖ student)
 * where D compares two distributions over n+1 buckets: the teacher's n ≤ KD_MAX_K top tokens
 * (top_lps: logprobs at the teacher's own temperature) and one tail bucket for the rest of
 * the vocabulary. Teacher bucket masses P_b = exp(lp_b), P_tail = max(0, 1 − Σ P_b), each
 * floored at KD_TEACHER_FLOOR, then tempered: q_b ∝ P_b^(1/T). Student: p = softmax(z/T) over
 * the whole vocabulary; s_b = p(id_b), s_tail = the mass of every other token.
 *   KD_FORWARD  Σ q_b log(q_b/s_b)                 (KL(teacher‖student))
 *   KD_REVERSE  Σ s_b log(s_b/q_b)                 (KL(student‖teacher))
 *   KD_JSD      β·KL(q‖m) + (1−β)·KL(s‖m), m = β·q + (1−β)·s, 0 < β < 1
 *   KD_ULD      Σ_i |s_(i) − q_(i)| + |s_tail − q_tail|: the teacher's n probabilities and the
 *               student's n largest, both sorted descending (Boizard et al. 2024); the tail
 *               is what they leave. Teacher ids are not read: the vocabularies may differ.
 * A row with n = 0 (no teacher data, e.g. a token the teacher did not generate) gets plain
 * CE (weight 1). For forward/reverse/jsd every teacher id of
 * a used row must be < V and the ids of a row distinct (RT_EINVAL otherwise, checked before
 * anything is computed). *loss_sum gets Σ rows' combined loss; *ce_sum and *kd_sum (either may
 * be NULL) Σ CE and Σ D over the rows, unweighted. Gradients as in ce_fused, of scale·Σ combined loss.
 * Per row: one exponential per logit at T = 1 (as ce_fused), two otherwise (the second row kept
 * in a per-thread scratch row, so the gradient pass needs none). Besides ws, each call
 * allocates 2·chunk doubles and, T ≠ 1, (pool threads)·V floats: RT_ENOMEM.
 */
#define KD_MAX_K 20
#define KD_TEACHER_FLOOR 1e-9
typedef enum { KD_FORWARD, KD_REVERSE, KD_JSD, KD_ULD } kd_kind;
typedef struct {
    kd_kind kind;
    double alpha, temperature, beta;   /* beta: KD_JSD only */
    int k;                             /* slots per row in top_ids / top_lps, ≤ KD_MAX_K */
    const int32_t *top_ids;            /* [M, k] */
    const float *top_lps;              /* [M, k] */
    const uint8_t *top_n;              /* [M]: entries of the row in use (≤ k), 0: none */
} kd_spec;

/* Parses "forward", "reverse", "jsd:B" (0 < B < 1), "uld" into kind (and beta). RT_EINVAL. */
int kd_parse_kind(const char *s, kd_kind *kind, double *beta);
int kd_check(const kd_spec *kd, const int32_t *target, int64_t M, int64_t V);
int kd_fused(double *loss_sum, double *ce_sum, double *kd_sum, float *dh, float *dw, const float *h, const float *w,
             const int32_t *target, int64_t M, float scale, const kd_spec *kd, ce_workspace *ws, tp_pool *pool);

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
/* kd_fused's twin on ce_fused_cuda's chunks: kd's top_ids / top_lps / top_n are device pointers
 * indexed by the row of h ([M·k], [M·k], [M]); kd_check() on a host copy is the caller's.
 * sums (device double[3], overwritten) = Σ combined loss, Σ CE, Σ D over the rows in order. */
int kd_fused_cuda(double *sums, uint16_t *dh, float *dw, const uint16_t *h, const uint16_t *w, const int32_t *target,
                  const int32_t *rows, int64_t n_rows, int64_t M, float scale, const kd_spec *kd, ce_cuda_ws *ws,
                  void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif
