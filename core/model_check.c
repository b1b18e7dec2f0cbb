/* core/model_check.c — tokenizer/vocabulary pairing and finite-weight scans. */
#include "core/model_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"

int mk_check_vocab(int64_t model_vocab, const char *model, size_t tok_ids, const char *tok) {
    if (model_vocab > 0 && (uint64_t)tok_ids <= (uint64_t)model_vocab) return 0;
    return rt_fail(RT_EINVAL,
                   "%s has ids up to %zu, but model %s has a vocabulary of %lld: they do not belong together "
                   "(a tokenizer may have fewer ids than the vocabulary, never more)",
                   tok, tok_ids ? tok_ids - 1 : 0, model, (long long)model_vocab);
}

int mk_check_tokenizer(const mc_config *c, const char *model, const tok_tokenizer *t, const char *tok) {
    size_t n = strlen(tok) + 16;
    char *what = rt_malloc(n);
    if (!what) return RT_ENOMEM;
    snprintf(what, n, "tokenizer %s", tok);
    int rc = mk_check_vocab(c->vocab_size, model, tok_vocab_size(t), what);
    free(what);
    return rc;
}

/* ---- finite values ---------------------------------------------------------------------- */

typedef struct {
    uint64_t nan, inf;
    char pad[48];             /* one cache line per thread */
} counts;

typedef struct {
    const unsigned char *p;
    rt_dtype dt;
    counts *c;                /* [threads] */
} scan_job;

static uint16_t ld16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t ld32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t ld64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* Non-finite: every exponent bit set; NaN when the mantissa is not zero, else ±Inf. */
static void scan_range(void *ctx, size_t b, size_t e, int th) {
    const scan_job *j = ctx;
    uint64_t nan = 0, inf = 0;
    const unsigned char *p = j->p;
    switch (j->dt) {
    case RT_DT_F64:
        for (size_t i = b; i < e; i++) {
            uint64_t v = ld64(p + 8 * i) & 0x7fffffffffffffffull;
            if (v >= 0x7ff0000000000000ull) { if (v > 0x7ff0000000000000ull) nan++; else inf++; }
        }
        break;
    case RT_DT_F32:
        for (size_t i = b; i < e; i++) {
            uint32_t v = ld32(p + 4 * i) & 0x7fffffffu;
            if (v >= 0x7f800000u) { if (v > 0x7f800000u) nan++; else inf++; }
        }
        break;
    case RT_DT_BF16:
        for (size_t i = b; i < e; i++) {
            uint16_t v = ld16(p + 2 * i) & 0x7fff;
            if (v >= 0x7f80) { if (v > 0x7f80) nan++; else inf++; }
        }
        break;
    case RT_DT_F16:
        for (size_t i = b; i < e; i++) {
            uint16_t v = ld16(p + 2 * i) & 0x7fff;
            if (v >= 0x7c00) { if (v > 0x7c00) nan++; else inf++; }
        }
        break;
    case RT_DT_F8_E5M2:
        for (size_t i = b; i < e; i++) {
            unsigned v = p[i] & 0x7f;
            if (v >= 0x7c) { if (v > 0x7c) nan++; else inf++; }
        }
        break;
    case RT_DT_F8_E4M3:   /* e4m3fn: S.1111.111 is NaN; there is no infinity */
        for (size_t i = b; i < e; i++) nan += (p[i] & 0x7f) == 0x7f;
        break;
    default: break;
    }
    j->c[th].nan += nan;
    j->c[th].inf += inf;
}

static bool is_float(rt_dtype dt) {
    return dt == RT_DT_F64 || dt == RT_DT_F32 || dt == RT_DT_F16 || dt == RT_DT_BF16 || dt == RT_DT_F8_E4M3 ||
           dt == RT_DT_F8_E5M2;
}

static bool is_projection(const char *name) {
    static const char suf[] = "_proj.weight";
    size_t a = strlen(name), b = sizeof suf - 1;
    return a >= b && !strcmp(name + a - b, suf);
}

void mk_values_free(mk_values *v) {
    if (!v) return;
    free(v->bad);
    v->bad = NULL;
    v->n_bad = 0;
}

int mk_scan_values(const st_file *f, bool projections, tp_pool *pool, mk_values *out) {
    memset(out, 0, sizeof *out);
    int nt = tp_size(pool);
    counts *c = rt_calloc((size_t)nt, sizeof *c);
    if (!c) return RT_ENOMEM;
    size_t cap = 0;
    int rc = 0;
    for (size_t i = 0; i < st_count(f) && !rc; i++) {
        const st_tensor *t = st_get(f, i);
        if (!is_float(t->dtype) || (!projections && is_projection(t->name))) {
            out->skipped++;
            continue;
        }
        memset(c, 0, (size_t)nt * sizeof *c);
        scan_job j = {t->data, t->dtype, c};
        if (t->nelem < ((size_t)1 << 16)) scan_range(&j, 0, t->nelem, 0);   /* not worth waking the pool */
        else tp_parallel_for(pool, t->nelem, scan_range, &j);
        uint64_t nan = 0, inf = 0;
        for (int k = 0; k < nt; k++) {
            nan += c[k].nan;
            inf += c[k].inf;
        }
        out->tensors++;
        out->values += t->nelem;
        out->nan += nan;
        out->inf += inf;
        if (!nan && !inf) continue;
        if (rt_grow((void **)&out->bad, &cap, out->n_bad + 1, sizeof *out->bad)) { rc = RT_ENOMEM; break; }
        out->bad[out->n_bad++] = (mk_bad_tensor){t->name, t->dtype, t->nelem, nan, inf};
    }
    free(c);
    if (rc) mk_values_free(out);
    return rc;
}

int mk_check_weights(const char *dir, tp_pool *pool) {
    st_file *f;
    int rc = st_open(dir, &f);
    if (rc) return rc;
    uint64_t bytes = 0;
    for (size_t i = 0; i < st_count(f); i++) bytes += st_get(f, i)->nbytes;
    bool full = bytes <= MK_FULL_SCAN_BYTES;
    mk_values v;
    rc = mk_scan_values(f, full, pool, &v);
    if (!rc && v.n_bad) {
        const mk_bad_tensor *b = &v.bad[0];
        char more[64] = "";
        if (v.n_bad > 1) snprintf(more, sizeof more, " (and %zu more tensors)", v.n_bad - 1);
        rc = rt_fail(RT_EFORMAT,
                     "%s: tensor %s holds %llu NaN and %llu Inf of %llu values%s: the weights are not finite (a "
                     "diverged training run?); `retort inspect --check-values %s` lists every such tensor",
                     dir, b->name, (unsigned long long)b->nan, (unsigned long long)b->inf,
                     (unsigned long long)b->elements, more, dir);
    }
    mk_values_free(&v);
    st_close(f);
    return rc;
}
