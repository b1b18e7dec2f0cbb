/* teacher/deepseek_int.h — the weight types teacher/deepseek.c and teacher/parallel.c share,
 * and the math on them (teacher/deepseek_int.c).
 *
 * The DeepSeek-V3 teacher's files depend one way: deepseek_int (weights, linear layers, MLP)
 * ← parallel (the rank layout and the collective steps) ← deepseek (loading, the forward,
 * ds_load_parallel) ← engine. Nothing below calls up.
 *
 * A ds_mat is one linear layer's [rows, cols] weight as the model holds it: f32 (converted
 * at load from BF16/F16/F32), or FP8 e4m3 with its f32 block scales exactly as stored
 * (kernels/fp8.h's fp8_weight, about one byte per parameter), never both. rows = cols = 0:
 * absent (an optional tensor). ds_linear(): y [M, rows] = x [M, cols]·Wᵀ (+ b), through
 * fp8_linear_fwd for FP8 (dequantized one tile at a time) or OpenBLAS for f32 (output
 * features split over the pool when M is small, rows otherwise, as kernels/matmul.h).
 * ds_mlp_fwd(): out [n, dim] = down(silu(gate·x) ⊙ up·x) (overwrites), kernels/moe.h's
 * moe_mlp_fwd on these weights — the same calls, bit for bit, when all three are f32.
 * scratch: NULL (allocated here) or n·3·inter floats. Errors: RT_ENOMEM.
 * ds_linear_f32(): y [M, N] = x [M, K]·wᵀ (+ b) on plain f32 weights, output features split
 * over the pool when M is small. ds_linear_rows(): ds_linear without bias, rows always over the
 * pool (the dense-MLP form, kernels/moe.h's calls).
 * The weights belong to the model (ds_free); these structs only point at them.
 */
#ifndef RT_TEACHER_DEEPSEEK_INT_H
#define RT_TEACHER_DEEPSEEK_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/threadpool.h"
#include "kernels/fp8.h"

typedef struct {
    const float *f32;      /* [rows, cols], or NULL when FP8 / absent */
    fp8_weight fp8;        /* used when f32 is NULL and rows > 0 */
    int64_t rows, cols;
} ds_mat;

typedef struct {
    ds_mat w1, w3;         /* gate_proj, up_proj [inter, dim] */
    ds_mat w2;             /* down_proj [dim, inter] */
} ds_mlp;

static inline bool ds_mat_present(const ds_mat *w) { return w->rows > 0; }

void ds_linear(float *y, const float *x, const ds_mat *w, const float *b, int64_t M, tp_pool *pool);
void ds_linear_f32(float *y, const float *x, const float *w, const float *b, int64_t M, int64_t N, int64_t K,
                   tp_pool *pool);
void ds_linear_rows(float *y, const float *x, const ds_mat *w, int64_t M, tp_pool *pool);
int ds_mlp_fwd(const ds_mlp *e, int64_t dim, int64_t inter, const float *x, int64_t n, float *out, float *scratch,
               tp_pool *pool);

#endif
