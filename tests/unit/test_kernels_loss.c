/* kernels/loss (chunked LM head + cross-entropy) against torch autograd in float64
 * (tests/ref/gen_kernels_student.py), for chunk sizes that split the rows unevenly.
 * Tolerance: loss 1e-5 relative, gradients 1e-5 relative to the largest element: f32
 * logits over D = 24 are good to ~1e-7. */
#include <math.h>

#include "kernels/loss.h"
#include "kernels/matmul.h"
#include "testutil.h"

static void run_ce(int64_t chunk, int threads) {
    st_file *f = ref_open("kernels_student.safetensors");
    const st_tensor *th = ref_tensor(f, "ce_h"), *tw = ref_tensor(f, "ce_w"), *tt = ref_tensor(f, "ce_target");
    int64_t M = th->shape[0], D = th->shape[1], V = tw->shape[0];
    const float *h = th->data, *w = tw->data, *wdh = ref_tensor(f, "ce_dh")->data, *wdw = ref_tensor(f, "ce_dw")->data;
    const int32_t *target = tt->data;
    double want;
    memcpy(&want, ref_tensor(f, "ce_loss_sum")->data, 8);
    int64_t count = 0;
    for (int64_t i = 0; i < M; i++) count += target[i] >= 0;
    mm_blas_single_thread();
    tp_pool *pool = NULL;
    if (threads > 1) cr_assert_eq(tp_create(threads, &pool), 0);
    ce_workspace ws;
    cr_assert_eq(ce_workspace_init(&ws, chunk, V, D), 0);
    float *dh = malloc((size_t)(M * D) * sizeof *dh), *dw = calloc((size_t)(V * D), sizeof *dw);
    for (int64_t i = 0; i < M * D; i++) dh[i] = NAN;   /* poison: every row must be written */
    double loss, loss_only;
    ce_fused(&loss, dh, dw, h, w, target, M, 1.0f / (float)count, &ws, pool);
    ce_fused(&loss_only, NULL, NULL, h, w, target, M, 1.0f, &ws, pool);
    cr_expect_lt(fabs(loss - want), 1e-5 * want, "chunk %lld: loss %.9g, torch %.9g", (long long)chunk, loss, want);
    cr_expect_eq(loss, loss_only);
    double mdh = 0, mxh = 0, mdw = 0, mxw = 0;
    for (int64_t i = 0; i < M * D; i++) { mdh = fmax(mdh, fabs((double)dh[i] - wdh[i])); mxh = fmax(mxh, fabs(wdh[i])); }
    for (int64_t i = 0; i < V * D; i++) { mdw = fmax(mdw, fabs((double)dw[i] - wdw[i])); mxw = fmax(mxw, fabs(wdw[i])); }
    cr_expect_lt(mdh, 1e-5 * mxh, "chunk %lld: dh differs by %g (scale %g)", (long long)chunk, mdh, mxh);
    cr_expect_lt(mdw, 1e-5 * mxw, "chunk %lld: dw differs by %g (scale %g)", (long long)chunk, mdw, mxw);
    free(dh);
    free(dw);
    ce_workspace_free(&ws);
    tp_free(pool);
    st_close(f);
}

Test(kernels_loss, one_row_chunks_match_torch) { run_ce(1, 1); }
Test(kernels_loss, uneven_chunks_match_torch) { run_ce(7, 2); }
Test(kernels_loss, single_chunk_matches_torch) { run_ce(64, 3); }
