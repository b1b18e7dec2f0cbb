#include "core/checkpoint.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"

typedef struct {
    int problems;
    char first[RT_ERRMSG_MAX];
} problems;

static void problem(problems *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(problems *p, const char *fmt, ...) {
    if (p->problems++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->first, sizeof p->first, fmt, ap);
        va_end(ap);
    }
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && o < n; d++) o += (size_t)snprintf(buf + o, n - o, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

static bool same_shape(const st_tensor *t, int ndim, const int64_t *shape) {
    if (t->ndim != ndim) return false;
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d]) return false;
    return true;
}

/* Checks one present tensor against its spec; marks the scale tensor it uses. */
static void check_one(const mc_config *c, const st_file *f, const mc_tensor_spec *s, const st_tensor *t,
                      unsigned char *used, problems *p, ck_summary *sum) {
    char want[64], got[64];
    if (!same_shape(t, s->ndim, s->shape)) {
        shape_str(want, sizeof want, s->ndim, s->shape);
        shape_str(got, sizeof got, t->ndim, t->shape);
        problem(p, "tensor %s: shape %s, expected %s", s->name, got, want);
        return;
    }
    if (t->dtype == RT_DT_F8_E4M3 && s->kind == MC_T_LINEAR && c->quant.fp8) {
        char sname[128];
        snprintf(sname, sizeof sname, "%s_scale_inv", s->name);
        const st_tensor *sc = st_find(f, sname);
        int64_t ss[2];
        mc_scale_shape(c, s->shape, ss);
        if (!sc) { problem(p, "tensor %s: FP8 weight without its scale %s", s->name, sname); return; }
        used[sc - st_get(f, 0)] = 1;
        if (sc->dtype != RT_DT_F32) {
            problem(p, "tensor %s: dtype %s, expected F32", sname, rt_dtype_name(sc->dtype));
            return;
        }
        if (!same_shape(sc, 2, ss)) {
            shape_str(want, sizeof want, 2, ss);
            shape_str(got, sizeof got, sc->ndim, sc->shape);
            problem(p, "tensor %s: shape %s, expected %s (%d x %d blocks)", sname, got, want, c->quant.block_rows,
                    c->quant.block_cols);
            return;
        }
        sum->fp8_weights++;
        return;
    }
    if (!rt_dtype_is_float(t->dtype)) {
        problem(p, "tensor %s: dtype %s, expected %s", s->name, rt_dtype_name(t->dtype),
                (s->kind == MC_T_LINEAR && c->quant.fp8) ? "F8_E4M3 (with block scales) or BF16/F16/F32"
                                                          : "BF16, F16 or F32");
    }
}

int ck_validate(const mc_config *c, const st_file *f, ck_summary *sum) {
    memset(sum, 0, sizeof *sum);
    mc_tensor_spec *specs;
    size_t ns, nt = st_count(f);
    int rc = mc_expected_tensors(c, &specs, &ns);
    if (rc) return rc;
    unsigned char *used = rt_calloc(nt + 1, 1);
    if (!used) { free(specs); return RT_ENOMEM; }
    problems p = {0};

    size_t mtp_total = 0, mtp_present = 0;
    const char *mtp_missing = NULL;
    for (size_t i = 0; i < ns; i++) {
        if (specs[i].group != MC_GROUP_MTP) continue;
        mtp_total++;
        if (st_find(f, specs[i].name)) mtp_present++;
        else if (!mtp_missing) mtp_missing = specs[i].name;
    }
    sum->mtp_present = mtp_total > 0 && mtp_present == mtp_total;
    if (mtp_present > 0 && mtp_present < mtp_total)
        problem(&p, "tensor %s is missing (the multi-token-prediction layer is only partly stored: %zu of %zu tensors)",
                mtp_missing, mtp_present, mtp_total);

    for (size_t i = 0; i < ns; i++) {
        const mc_tensor_spec *s = &specs[i];
        const st_tensor *t = st_find(f, s->name);
        if (s->group == MC_GROUP_REQUIRED) sum->expected_parameters += s->shape[0] * (s->ndim == 2 ? s->shape[1] : 1);
        if (!t) {
            if (s->group == MC_GROUP_REQUIRED) problem(&p, "tensor %s is missing", s->name);
            continue;
        }
        used[t - st_get(f, 0)] = 1;
        if (s->group == MC_GROUP_TIED_HEAD) sum->tied_head_stored = true;
        check_one(c, f, s, t, used, &p, sum);
    }
    for (size_t i = 0; i < nt; i++) {
        const st_tensor *t = st_get(f, i);
        sum->dtype_count[t->dtype]++;
        if (!ends_with(t->name, ".weight_scale_inv")) sum->parameters += (int64_t)t->nelem;
        if (used[i] || ends_with(t->name, ".rotary_emb.inv_freq")) continue;
        if (ends_with(t->name, ".weight_scale_inv"))
            problem(&p, "tensor %s is unexpected (a scale for a weight that is not FP8 or not expected)", t->name);
        else
            problem(&p, "tensor %s is unexpected for %s", t->name, c->model_type);
    }
    sum->tensors = nt;
    sum->files = st_nshards(f);
    free(used);
    free(specs);
    if (p.problems > 1) return rt_fail(RT_EFORMAT, "%s (and %d more problems)", p.first, p.problems - 1);
    if (p.problems) return rt_fail(RT_EFORMAT, "%s", p.first);
    return 0;
}
