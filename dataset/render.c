#include "dataset/render.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/status.h"

#define RD_CHUNK 512

typedef struct {
    json_t *conv;
    char *what;
    int32_t *ids;
    uint8_t *mask;
    size_t n;
    uint8_t *tn;     /* with top-k: [n] */
    int32_t *tid;    /* [n · K] */
    float *tlp;      /* [n · K] */
    int rc;
    char msg[320];
} rd_item;

struct rd_session {
    const tok_tokenizer *t;
    const ct_template *ct;
    char *dir;
    pk_options o;
    tp_pool *pool;
    rd_item items[RD_CHUNK];
    size_t n_items;
    char *spill_path;
    FILE *spill;
    uint64_t spill_bytes;
    uint64_t *doc_off;   /* per document: offset of its tokens in the spill file */
    size_t *doc_len;
    size_t n_docs, off_cap, len_cap;
    bool created_dir;    /* out_dir was made by rd_begin: a failed pack removes it */
};

int rd_begin(const tok_tokenizer *t, const ct_template *ct, const char *out_dir, const pk_options *o, tp_pool *pool,
             rd_session **out) {
    *out = NULL;
    bool created = false;
    if (!rt_is_dir(out_dir)) {
        if (mkdir(out_dir, 0755) == 0) created = true;
        else if (errno != EEXIST)
            return rt_fail(RT_EIO, "cannot create the directory %s: %s", out_dir, strerror(errno));
    } else {
        rt_atomic_clean_stale(out_dir, ".pack-spill", false); /* left by a killed pack */
    }
    rd_session *s = rt_calloc(1, sizeof *s);
    if (!s) { if (created) rmdir(out_dir); return RT_ENOMEM; }
    s->created_dir = created;
    s->t = t;
    s->ct = ct;
    s->o = *o;
    if (!s->o.vocab_size) s->o.vocab_size = (uint32_t)tok_vocab_size(t);
    s->pool = pool;
    s->dir = rt_strdup(out_dir);
    s->spill_path = rt_path_join(out_dir, ".pack-spill.tmp.XXXXXX");
    if (!s->dir || !s->spill_path) { rd_abort(s); return RT_ENOMEM; }
    int fd = mkstemp(s->spill_path);
    if (fd < 0) {
        int e = errno;
        free(s->spill_path);
        s->spill_path = NULL;
        rd_abort(s);
        return rt_fail(RT_EIO, "cannot create a temporary file in %s: %s", out_dir, strerror(e));
    }
    flock(fd, LOCK_EX | LOCK_NB); /* held while this pack lives (see rt_atomic_clean_stale) */
    s->spill = fdopen(fd, "w+b");
    if (!s->spill) { close(fd); rd_abort(s); return rt_fail(RT_EIO, "%s: fdopen failed", out_dir); }
    *out = s;
    return 0;
}

static void session_free(rd_session *s, bool failed) {
    if (!s) return;
    for (size_t i = 0; i < s->n_items; i++) {
        json_decref(s->items[i].conv);
        free(s->items[i].what);
        free(s->items[i].ids);
        free(s->items[i].mask);
        free(s->items[i].tn);
        free(s->items[i].tid);
        free(s->items[i].tlp);
    }
    if (s->spill) fclose(s->spill);
    if (s->spill_path) unlink(s->spill_path);
    if (failed && s->created_dir) pk_remove_dir(s->dir);
    free(s->spill_path);
    free(s->dir);
    free(s->doc_off);
    free(s->doc_len);
    free(s);
}

void rd_abort(rd_session *s) { session_free(s, true); }

/* The conversation's messages as ct_messages (pointing into conv). */
static int to_messages(json_t *conv, ct_message **out, size_t *n) {
    json_t *msgs = json_is_object(conv) ? json_object_get(conv, "messages") : NULL;
    if (!json_is_array(msgs) || !json_array_size(msgs))
        return rt_fail(RT_EFORMAT, "expected {\"messages\": [...]} with at least one message");
    size_t k = json_array_size(msgs);
    ct_message *m = rt_calloc(k, sizeof *m);
    if (!m) return RT_ENOMEM;
    for (size_t i = 0; i < k; i++) {
        json_t *x = json_array_get(msgs, i), *r = json_object_get(x, "reasoning_content");
        m[i].role = json_string_value(json_object_get(x, "role"));
        m[i].content = json_string_value(json_object_get(x, "content"));
        m[i].reasoning_content = json_string_value(r);
        if (!m[i].role || !m[i].content || (r && !json_is_null(r) && !json_is_string(r))) {
            free(m);
            return rt_fail(RT_EFORMAT, "messages[%zu] needs string \"role\" and \"content\" (and a string "
                                       "\"reasoning_content\" when present)", i);
        }
    }
    *out = m;
    *n = k;
    return 0;
}

/* conv["teacher_topk"] (one entry per token the teacher generated: ids and logprobs, the
 * best first) onto the rendered document: the j-th position with loss mask 1 gets the
 * teacher's j-th entry, its first K alternatives (positions past the teacher's tokens get none).
 * With the student's tokenizer this is the teacher's own token sequence when re-encoding the
 * completion reproduces it; across tokenizers it is ULD's positional alignment. */
static int attach_topk(rd_item *it, uint32_t K, uint32_t tv) {
    json_t *tk = json_object_get(it->conv, "teacher_topk");
    it->tn = rt_calloc(it->n ? it->n : 1, 1);
    it->tid = rt_calloc((it->n ? it->n : 1) * K, sizeof *it->tid);
    it->tlp = rt_calloc((it->n ? it->n : 1) * K, sizeof *it->tlp);
    if (!it->tn || !it->tid || !it->tlp) return RT_ENOMEM;
    if (!tk || json_is_null(tk)) return 0;
    json_t *ids = json_object_get(tk, "ids"), *lps = json_object_get(tk, "logprobs");
    if (!json_is_array(ids) || !json_is_array(lps) || json_array_size(ids) != json_array_size(lps))
        return rt_fail(RT_EFORMAT, "\"teacher_topk\" needs arrays \"ids\" and \"logprobs\" of the same length");
    size_t nt = json_array_size(ids), j = 0;
    for (size_t p = 0; p < it->n && j < nt; p++) {
        if (!it->mask[p]) continue;
        json_t *a = json_array_get(ids, j), *b = json_array_get(lps, j);
        if (!json_is_array(a) || !json_is_array(b) || json_array_size(a) != json_array_size(b))
            return rt_fail(RT_EFORMAT, "teacher_topk entry %zu: ids and logprobs differ in length", j);
        size_t k = 0;
        for (size_t x = 0; x < json_array_size(a) && k < K; x++) {
            json_t *id = json_array_get(a, x), *lp = json_array_get(b, x);
            if (!json_is_integer(id) || !json_is_number(lp))
                return rt_fail(RT_EFORMAT, "teacher_topk entry %zu: alternative %zu is not an integer id and a number", j, x);
            /* an alternative whose id the endpoint did not give (stored as −1, logprob −inf) is left out */
            if (json_integer_value(id) < 0 || !isfinite(json_number_value(lp))) continue;
            if ((uint64_t)json_integer_value(id) >= tv || !(json_number_value(lp) <= 1e-3))
                return rt_fail(RT_EFORMAT, "teacher_topk entry %zu: alternative %zu (id %lld, logprob %g) is not a token "
                               "below %u with a logprob <= 0", j, x, (long long)json_integer_value(id),
                               json_number_value(lp), tv);
            it->tid[p * K + k] = (int32_t)json_integer_value(id);
            it->tlp[p * K + k] = (float)json_number_value(lp);
            k++;
        }
        it->tn[p] = (uint8_t)k;
        j++;
    }
    return 0;
}

typedef struct {
    rd_session *s;
} render_job;

static void render_range(void *ctx, size_t begin, size_t end, int thread) {
    (void)thread;
    rd_session *s = ((render_job *)ctx)->s;
    for (size_t i = begin; i < end; i++) {
        rd_item *it = &s->items[i];
        ct_message *m = NULL;
        size_t nm = 0;
        it->rc = to_messages(it->conv, &m, &nm);
        if (!it->rc) {
            it->rc = ct_template_render(s->t, s->ct, m, nm, false, &it->ids, &it->mask, &it->n);
            free(m);
        }
        if (!it->rc && !memchr(it->mask, 1, it->n))
            it->rc = rt_fail(RT_EINVAL, "no assistant turn: the conversation has nothing to train on");
        if (!it->rc && s->o.top_k)
            it->rc = attach_topk(it, s->o.top_k, s->o.teacher_vocab ? s->o.teacher_vocab : s->o.vocab_size);
        if (it->rc) snprintf(it->msg, sizeof it->msg, "%s", rt_errmsg());
    }
}

static int spill_write(rd_session *s, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, s->spill) != n)
        return rt_fail(RT_EIO, "%s: writing the temporary file failed: %s", s->dir, strerror(errno));
    s->spill_bytes += n;
    return 0;
}

/* Renders the queued chunk and appends its documents to the spill file. */
static int flush_chunk(rd_session *s) {
    render_job job = {s};
    tp_parallel_for(s->pool, s->n_items, render_range, &job);
    int rc = 0;
    for (size_t i = 0; i < s->n_items && !rc; i++) {
        rd_item *it = &s->items[i];
        if (it->rc) { rc = rt_fail(it->rc, "%s: %s", it->what, it->msg); break; }
        if (rt_grow((void **)&s->doc_off, &s->off_cap, s->n_docs + 1, sizeof *s->doc_off) ||
            rt_grow((void **)&s->doc_len, &s->len_cap, s->n_docs + 1, sizeof *s->doc_len)) { rc = RT_ENOMEM; break; }
        s->doc_off[s->n_docs] = s->spill_bytes;
        s->doc_len[s->n_docs++] = it->n;
        static const uint8_t zeros[4] = {0};
        if (!(rc = spill_write(s, it->ids, it->n * sizeof *it->ids)) && !(rc = spill_write(s, it->mask, it->n)))
            rc = spill_write(s, zeros, (4 - it->n % 4) % 4); /* keep the next document's ids aligned */
        if (!rc && s->o.top_k) {   /* then its top-k: n, padding to 4, ids, logprobs */
            size_t K = s->o.top_k;
            if (!(rc = spill_write(s, it->tn, it->n)) && !(rc = spill_write(s, zeros, (4 - it->n % 4) % 4)) &&
                !(rc = spill_write(s, it->tid, it->n * K * sizeof *it->tid)))
                rc = spill_write(s, it->tlp, it->n * K * sizeof *it->tlp);
        }
    }
    for (size_t i = 0; i < s->n_items; i++) {
        rd_item *it = &s->items[i];
        json_decref(it->conv);
        free(it->what);
        free(it->ids);
        free(it->mask);
        free(it->tn);
        free(it->tid);
        free(it->tlp);
        memset(it, 0, sizeof *it);
    }
    s->n_items = 0;
    return rc;
}

int rd_add(rd_session *s, json_t *conversation, const char *what) {
    if (s->n_items == RD_CHUNK) {
        int rc = flush_chunk(s);
        if (rc) return rc;
    }
    rd_item *it = &s->items[s->n_items];
    it->what = rt_strdup(what ? what : "conversation");
    if (!it->what) return RT_ENOMEM;
    it->conv = json_incref(conversation);
    s->n_items++;
    return 0;
}

int rd_finish(rd_session *s, const json_t *meta, pk_report *rep) {
    int rc = flush_chunk(s);
    if (!rc && fflush(s->spill) != 0) rc = rt_fail(RT_EIO, "%s: writing the temporary file failed: %s", s->dir, strerror(errno));
    void *map = NULL;
    if (!rc && s->spill_bytes) {
        map = mmap(NULL, (size_t)s->spill_bytes, PROT_READ, MAP_PRIVATE, fileno(s->spill), 0);
        if (map == MAP_FAILED) { map = NULL; rc = rt_fail(RT_EIO, "%s: cannot map the temporary file: %s", s->dir, strerror(errno)); }
    }
    pk_doc *docs = rc ? NULL : rt_malloc((s->n_docs ? s->n_docs : 1) * sizeof *docs);
    if (!rc && !docs) rc = RT_ENOMEM;
    for (size_t i = 0; !rc && i < s->n_docs; i++) {
        const uint8_t *base = (const uint8_t *)map + s->doc_off[i];
        size_t n = s->doc_len[i], K = s->o.top_k;
        docs[i] = (pk_doc){(const int32_t *)(const void *)base, base + n * sizeof(int32_t), n, NULL, NULL, NULL};
        if (K) {
            const uint8_t *t = base + n * sizeof(int32_t) + n + (4 - n % 4) % 4;
            size_t ids_at = n + (4 - n % 4) % 4;
            docs[i].top_n = t;
            docs[i].top_ids = (const int32_t *)(const void *)(t + ids_at);
            docs[i].top_lps = (const float *)(const void *)(t + ids_at + n * K * sizeof(int32_t));
        }
    }
    if (!rc) rc = pk_write_dir(s->dir, docs, s->n_docs, &s->o, meta, rep);
    free(docs);
    if (map) munmap(map, (size_t)s->spill_bytes);
    session_free(s, rc != 0);
    return rc;
}

/* rd_finish with meta's copy plus "generation_config": gen (taken; NULL: meta as it is). */
static int finish_with_sampling(rd_session *s, const json_t *meta, json_t *gen, pk_report *rep) {
    if (!gen) return rd_finish(s, meta, rep);
    json_t *m = meta ? json_copy((json_t *)meta) : json_object();
    if (!m || json_object_set_new(m, "generation_config", gen)) {
        json_decref(m);
        rd_abort(s);
        return rt_fail(RT_ENOMEM, "out of memory");
    }
    int rc = rd_finish(s, m, rep);
    json_decref(m);
    return rc;
}

int rd_pack_jsonl(const tok_tokenizer *t, const ct_template *ct, const char *jsonl, const char *out_dir, const pk_options *o,
                  tp_pool *pool, const json_t *meta, pk_report *rep) {
    FILE *in = fopen(jsonl, "rb");
    if (!in) return rt_fail(errno == ENOENT ? RT_ENOTFOUND : RT_EIO, "cannot open %s: %s", jsonl, strerror(errno));
    rd_session *s;
    int rc = rd_begin(t, ct, out_dir, o, pool, &s);
    if (rc) { fclose(in); return rc; }
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t n;
    exp_sampling_acc acc = {0};   /* the rows' metadata.sampling (retort export's chat-jsonl) */
    while (!rc && (n = getline(&line, &cap, in)) >= 0) {
        lineno++;
        size_t len = (size_t)n;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' ')) len--;
        if (!len) continue;
        char what[1100];
        snprintf(what, sizeof what, "%s:%zu", jsonl, lineno);
        json_error_t e;
        json_t *conv = json_loadb(line, len, JSON_REJECT_DUPLICATES, &e);
        if (!conv) { rc = rt_fail(RT_EFORMAT, "%s: invalid JSON at column %d: %s", what, e.column, e.text); break; }
        exp_sampling_add(&acc, json_object_get(json_object_get(conv, "metadata"), "sampling"));
        rc = rd_add(s, conv, what);
        json_decref(conv);
    }
    if (!rc && ferror(in)) rc = rt_fail(RT_EIO, "cannot read %s: %s", jsonl, strerror(errno));
    free(line);
    fclose(in);
    json_t *gen = exp_sampling_take(&acc);
    if (rc) { json_decref(gen); rd_abort(s); return rc; }
    return finish_with_sampling(s, meta, gen, rep);
}

typedef struct {
    rd_session *s;
} snap_ctx;

static int add_sample(void *ctx, int64_t sample_id, json_t *conv) {
    char what[64];
    snprintf(what, sizeof what, "sample %lld", (long long)sample_id);
    return rd_add(((snap_ctx *)ctx)->s, conv, what);
}

int rd_export_snapshot(db_conn *db, const exp_filter *flt, const tok_tokenizer *t, const ct_template *ct, const char *out_dir,
                       const pk_options *o, tp_pool *pool, const json_t *meta, pk_report *rep) {
    rd_session *s;
    int rc = rd_begin(t, ct, out_dir, o, pool, &s);
    if (rc) return rc;
    snap_ctx c = {s};
    rc = db_each_conversation(db, flt, add_sample, &c);
    json_t *gen = NULL;
    if (!rc) rc = db_sampling_defaults(db, flt, &gen);
    if (rc) { rd_abort(s); return rc; }
    return finish_with_sampling(s, meta, gen, rep);
}
