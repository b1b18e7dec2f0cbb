/* teacher/parallel_engine.c — the engine in lockstep over ranks (see parallel_engine.h).
 *
 * Message (native byte order), broadcast from rank 0 after its length (one I64):
 *   u64 magic "RTPE0001" · u64 last · u64 n_submit · u64 n_cancel · u64 tags[n_cancel]
 *   then per request: the te_request bytes (pointers meaningless, rebuilt on receipt),
 *   i32 prompt[n_prompt], i32 stop_ids[n_stop_ids], per stop string u64 length + bytes + NUL.
 */
#include "teacher/parallel_engine.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"

#define PE_MAGIC 0x3130303045505452ull   /* "RTPE0001" */

typedef struct {
    unsigned char *p;
    size_t len, cap;
} buf;

static int put(buf *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q) return RT_ENOMEM;
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

static int put_u64(buf *b, uint64_t v) { return put(b, &v, sizeof v); }

static int encode(const pe_input *in, buf *b) {
    pe_input none = {0};
    if (!in) in = &none;
    int rc = put_u64(b, PE_MAGIC);
    if (!rc) rc = put_u64(b, in->last);
    if (!rc) rc = put_u64(b, in->last ? 0 : in->n_submit);
    if (!rc) rc = put_u64(b, in->last ? 0 : in->n_cancel);
    if (in->last) return rc;
    if (!rc && in->n_cancel) rc = put(b, in->cancel, in->n_cancel * sizeof *in->cancel);
    for (size_t i = 0; i < in->n_submit && !rc; i++) {
        const te_request *r = &in->submit[i];
        rc = put(b, r, sizeof *r);
        if (!rc && r->n_prompt > 0) rc = put(b, r->prompt, (size_t)r->n_prompt * sizeof *r->prompt);
        if (!rc && r->n_stop_ids > 0) rc = put(b, r->stop_ids, (size_t)r->n_stop_ids * sizeof *r->stop_ids);
        for (int s = 0; s < r->n_stop && !rc; s++) {
            size_t len = strlen(r->stop[s]);
            rc = put_u64(b, len);
            if (!rc) rc = put(b, r->stop[s], len + 1);
        }
    }
    return rc;
}

typedef struct {
    const unsigned char *p;
    size_t len, at;
} reader;

static const void *take(reader *r, size_t n) {
    if (n > r->len - r->at) return NULL;
    const void *q = r->p + r->at;
    r->at += n;
    return q;
}

static int take_u64(reader *r, uint64_t *v) {
    const void *q = take(r, sizeof *v);
    if (!q) return rt_fail(RT_EFORMAT, "lockstep message truncated");
    memcpy(v, q, sizeof *v);
    return 0;
}

/* Applies one decoded message: submits (pointers into the message, which te_submit copies),
 * then cancels. */
static int apply(te_engine *e, reader *rd, uint64_t n_submit, uint64_t n_cancel, int *submit_rc) {
    const unsigned char *tags = take(rd, (size_t)n_cancel * sizeof(uint64_t));
    if (!tags) return rt_fail(RT_EFORMAT, "lockstep message truncated");
    for (uint64_t i = 0; i < n_submit; i++) {
        te_request r;
        const void *q = take(rd, sizeof r);
        if (!q) return rt_fail(RT_EFORMAT, "lockstep message truncated");
        memcpy(&r, q, sizeof r);
        const void *prompt = r.n_prompt > 0 ? take(rd, (size_t)r.n_prompt * sizeof(int32_t)) : NULL;
        const void *stop_ids = r.n_stop_ids > 0 ? take(rd, (size_t)r.n_stop_ids * sizeof(int32_t)) : NULL;
        if ((r.n_prompt > 0 && !prompt) || (r.n_stop_ids > 0 && !stop_ids) || r.n_stop < 0)
            return rt_fail(RT_EFORMAT, "lockstep message truncated");
        /* the ids may sit unaligned in the message: copy them out */
        int32_t *ids = rt_malloc((size_t)(r.n_prompt + r.n_stop_ids + 1) * sizeof *ids);
        const char **stop = rt_malloc((size_t)(r.n_stop + 1) * sizeof *stop);
        if (!ids || !stop) {
            free(ids);
            free(stop);
            return RT_ENOMEM;
        }
        if (prompt) memcpy(ids, prompt, (size_t)r.n_prompt * sizeof *ids);
        if (stop_ids) memcpy(ids + r.n_prompt, stop_ids, (size_t)r.n_stop_ids * sizeof *ids);
        int rc = 0;
        for (int s = 0; s < r.n_stop && !rc; s++) {
            uint64_t len = 0;
            rc = take_u64(rd, &len);
            if (!rc && !(stop[s] = take(rd, (size_t)len + 1))) rc = rt_fail(RT_EFORMAT, "lockstep message truncated");
        }
        r.prompt = prompt ? ids : NULL;
        r.stop_ids = stop_ids ? ids + r.n_prompt : NULL;
        r.stop = r.n_stop > 0 ? stop : NULL;
        int src = rc ? rc : te_submit(e, &r);
        free(ids);
        free(stop);
        if (rc) return rc;
        if (submit_rc) submit_rc[i] = src;
    }
    for (uint64_t i = 0; i < n_cancel; i++) {
        uint64_t tag;
        memcpy(&tag, tags + i * sizeof tag, sizeof tag);
        te_cancel(e, tag);
    }
    return 0;
}

int pe_step(rt_comm *c, te_engine *e, const pe_input *in, int *submit_rc, te_result **results, size_t *n_results,
            bool *last) {
    *results = NULL;
    *n_results = 0;
    *last = false;
    buf b = {0};
    int rc = 0;
    if (comm_rank(c) == 0) rc = encode(in, &b);
    int64_t len = (int64_t)b.len;
    if (rc) len = -1;   /* tell the followers before failing */
    int brc = comm_broadcast(c, &len, 1, RT_DT_I64, 0);
    if (rc || brc) {
        free(b.p);
        return rc ? rc : rt_errorf(brc, "lockstep");
    }
    if (len < 0) return rt_fail(RT_ENOMEM, "lockstep: rank 0 could not encode its step");
    if (comm_rank(c) != 0) {
        b.p = rt_malloc((size_t)len + 1);
        if (!b.p) return RT_ENOMEM;   /* the others go on: see the header */
        b.len = (size_t)len;
    }
    rc = comm_broadcast(c, b.p, (size_t)len, RT_DT_U8, 0);
    if (rc) {
        free(b.p);
        return rt_errorf(rc, "lockstep");
    }
    reader rd = {.p = b.p, .len = b.len};
    uint64_t magic = 0, fin = 0, n_submit = 0, n_cancel = 0;
    rc = take_u64(&rd, &magic);
    if (!rc && magic != PE_MAGIC) rc = rt_fail(RT_EFORMAT, "lockstep message: bad magic");
    if (!rc) rc = take_u64(&rd, &fin);
    if (!rc) rc = take_u64(&rd, &n_submit);
    if (!rc) rc = take_u64(&rd, &n_cancel);
    if (!rc && fin) *last = true;
    else if (!rc) rc = apply(e, &rd, n_submit, n_cancel, comm_rank(c) == 0 ? submit_rc : NULL);
    free(b.p);
    if (rc || *last) return rc;
    return te_step(e, results, n_results);
}

int pe_follow(rt_comm *c, te_engine *e) {
    for (bool last = false; !last;) {
        te_result *res = NULL;
        size_t n = 0;
        int rc = pe_step(c, e, NULL, NULL, &res, &n, &last);
        te_results_free(res, n);
        if (rc) return rc;
    }
    return 0;
}

int pe_end(rt_comm *c, te_engine *e) {
    pe_input in = {.last = true};
    te_result *res = NULL;
    size_t n = 0;
    bool last = false;
    int rc = pe_step(c, e, &in, NULL, &res, &n, &last);
    te_results_free(res, n);
    return rc;
}
