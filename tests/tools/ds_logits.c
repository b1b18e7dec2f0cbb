/* tests/tools/ds_logits.c — test helper: DeepSeek-V3 logits for the pytest comparisons.
 *
 *   ds_logits MODEL_DIR IN OUT [naive|absorbed|decode] [THREADS]
 *
 * IN holds prompts as I32 tensors "p0", "p1", … (token ids). For each, OUT gets "p<i>" [n, vocab]
 * F32 logits from a fresh cache: "naive" (default) and "absorbed" run the prompt in one call
 * through that attention path; "decode" runs the first half in one naive call, then one token
 * at a time through the absorbed path. Exit 0 ok, 1 with the library's message on stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "teacher/deepseek.h"

static int fail(const char *what) {
    fprintf(stderr, "ds_logits: %s: %s\n", what, rt_errmsg());
    return 1;
}

static int run_prompt(ds_model *m, const int32_t *tok, int64_t n, const char *mode, float *out) {
    int64_t V = ds_vocab(m);
    int32_t *pos = malloc((size_t)n * sizeof *pos);
    ds_cache *c = NULL;
    int rc = pos ? ds_cache_create(m, n, &c) : RT_ENOMEM;
    for (int64_t i = 0; !rc && i < n; i++) pos[i] = (int32_t)i;
    if (!rc && !strcmp(mode, "decode")) {
        int64_t k = n / 2 > 0 ? n / 2 : 1;
        rc = ds_forward(m, c, tok, pos, k, DS_ATTN_NAIVE, out, NULL);
        for (int64_t i = k; !rc && i < n; i++) rc = ds_forward(m, c, tok + i, pos + i, 1, DS_ATTN_ABSORBED, out + i * V, NULL);
    } else if (!rc) {
        rc = ds_forward(m, c, tok, pos, n, strcmp(mode, "absorbed") ? DS_ATTN_NAIVE : DS_ATTN_ABSORBED, out, NULL);
    }
    ds_cache_free(c);
    free(pos);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: ds_logits MODEL_DIR IN OUT [naive|absorbed|decode] [THREADS]\n");
        return 2;
    }
    const char *mode = argc > 4 ? argv[4] : "naive";
    tp_pool *pool = NULL;
    if (argc > 5 && atoi(argv[5]) > 1 && tp_create(atoi(argv[5]), &pool)) return fail("threads");
    ds_model *m = NULL;
    ds_load_opts o = {.pool = pool};
    if (ds_load(argv[1], &o, &m)) return fail(argv[1]);
    st_file *in = NULL;
    if (st_open(argv[2], &in)) return fail(argv[2]);
    size_t np = 0;
    char name[32];
    for (;; np++) {
        snprintf(name, sizeof name, "p%zu", np);
        if (!st_find(in, name)) break;
    }
    st_wtensor *ts = calloc(np ? np : 1, sizeof *ts);
    char (*names)[32] = calloc(np ? np : 1, sizeof *names);
    int rc = ts && names ? 0 : 1;
    for (size_t i = 0; !rc && i < np; i++) {
        snprintf(names[i], sizeof names[i], "p%zu", i);
        const st_tensor *t = st_find(in, names[i]);
        if (t->dtype != RT_DT_I32 || t->ndim != 1) {
            fprintf(stderr, "ds_logits: %s must be a 1-D I32 tensor\n", names[i]);
            rc = 1;
            break;
        }
        int64_t n = t->shape[0];
        float *out = malloc((size_t)(n * ds_vocab(m)) * sizeof *out);
        int32_t *tok = malloc((size_t)n * sizeof *tok);
        if (!out || !tok) { free(out); free(tok); rc = 1; break; }
        memcpy(tok, t->data, (size_t)n * sizeof *tok);
        ts[i] = (st_wtensor){.name = names[i], .dtype = RT_DT_F32, .ndim = 2, .shape = {n, ds_vocab(m)}, .data = out};
        if (run_prompt(m, tok, n, mode, out)) rc = fail(names[i]);
        free(tok);
    }
    if (!rc && st_write(argv[3], ts, np, NULL)) rc = fail(argv[3]);
    for (size_t i = 0; ts && i < np; i++) free((void *)ts[i].data);
    free(ts);
    free(names);
    st_close(in);
    ds_free(m);
    tp_free(pool);
    return rc;
}
