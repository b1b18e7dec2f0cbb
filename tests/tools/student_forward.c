/* tests/tools/student_forward.c — logits of a checkpoint on a packed batch, for the Python tests.
 *
 *   student_forward MODEL_DIR IN.safetensors OUT.safetensors
 *
 * IN holds "tokens" I32 [S, N] and optionally "docs" I32 [n, 3] (seq, start, len); without
 * docs each sequence is one document. MODEL_DIR is loaded with student/model (sm_load).
 * OUT gets "logits" F32 [S, N, V]. Exit 0, or 1 with the library's message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"
#include "core/status.h"
#include "kernels/matmul.h"
#include "student/model.h"

static int fail(const char *what) {
    fprintf(stderr, "student_forward: %s: %s\n", what, rt_errmsg());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: student_forward MODEL_DIR IN.safetensors OUT.safetensors\n");
        return 2;
    }
    mm_blas_single_thread();
    sm_model *m;
    if (sm_load(argv[1], &m)) return fail(argv[1]);
    st_file *in;
    if (st_open(argv[2], &in)) return fail(argv[2]);
    const st_tensor *tt = st_find(in, "tokens"), *td = st_find(in, "docs");
    if (!tt || tt->dtype != RT_DT_I32 || tt->ndim != 2) {
        fprintf(stderr, "student_forward: %s: I32 [S, N] \"tokens\" expected\n", argv[2]);
        return 1;
    }
    int64_t S = tt->shape[0], N = tt->shape[1], T = S * N;
    int32_t *tokens = malloc((size_t)T * 4), *ds = malloc((size_t)T * 4), *pos = malloc((size_t)T * 4),
            *tg = malloc((size_t)T * 4);
    uint8_t *mask = calloc((size_t)T, 1);
    shard_doc *docs = calloc((size_t)(td ? td->shape[0] : S) + 1, sizeof *docs);
    const shard_doc **dp = calloc((size_t)S, sizeof *dp);
    size_t *nd = calloc((size_t)S, sizeof *nd);
    memcpy(tokens, tt->data, (size_t)T * 4);
    size_t n = 0;
    if (td) {
        int32_t *d = malloc(td->nbytes);
        memcpy(d, td->data, td->nbytes);
        for (int64_t i = 0; i < td->shape[0]; i++, n++) docs[n] = (shard_doc){.seq = (uint32_t)d[3 * i], .start = (uint32_t)d[3 * i + 1], .len = (uint32_t)d[3 * i + 2]};
        free(d);
    } else {
        for (int64_t s = 0; s < S; s++, n++) docs[n] = (shard_doc){.seq = (uint32_t)s, .start = 0, .len = (uint32_t)N};
    }
    for (int64_t s = 0; s < S; s++) {   /* docs are ordered by (seq, start) */
        size_t i = 0;
        while (i < n && docs[i].seq != s) i++;
        dp[s] = &docs[i];
        while (i + nd[s] < n && docs[i + nd[s]].seq == s) nd[s]++;
    }
    sm_batch_targets(tokens, mask, S, N, dp, nd, ds, pos, tg);
    sm_acts *a;
    if (sm_acts_create(m, T, false, 0, &a)) return fail("activations");
    float *logits = malloc((size_t)(T * m->V) * sizeof *logits);
    sm_batch b = {T, tokens, ds, pos, tg};
    if (sm_forward_logits(m, a, &b, logits, NULL)) return fail("forward");
    st_wtensor w = {"logits", RT_DT_F32, 3, {S, N, m->V}, logits};
    if (st_write(argv[3], &w, 1, NULL)) return fail(argv[3]);
    free(logits); free(tokens); free(ds); free(pos); free(tg); free(mask); free(docs); free(dp); free(nd);
    sm_acts_free(a);
    st_close(in);
    sm_free(m);
    return 0;
}
