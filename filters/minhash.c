/* filters/minhash.c — see minhash.h. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>
#include <xxhash.h>

#include "core/alloc.h"
#include "core/hash.h"
#include "core/phase.h"
#include "core/status.h"
#include "filters/minhash.h"

#define MERSENNE61 ((1ULL << 61) - 1)

#ifndef __has_feature
#define __has_feature(x) 0
#endif

struct mh_hasher {
    mh_config c;
    int n;                 /* bands × rows */
    uint64_t a[MH_MAX_HASHES], b[MH_MAX_HASHES];
};

void mh_config_default(mh_config *c) {
    memset(c, 0, sizeof *c);
    c->ngram = 5;
    c->bands = 14;
    c->rows = 8;
    c->seed = 1;
    c->threshold = 0.8;
}

int mh_hasher_new(const mh_config *c, mh_hasher **out) {
    *out = NULL;
    if (c->ngram < 1 || c->ngram > 64) return rt_fail(RT_EINVAL, "minhash: n-gram size %d (want 1..64)", c->ngram);
    if (c->bands < 1 || c->rows < 1 || c->bands * c->rows > MH_MAX_HASHES)
        return rt_fail(RT_EINVAL, "minhash: %d bands × %d rows (want 1..%d hashes)", c->bands, c->rows, MH_MAX_HASHES);
    if (!(c->threshold >= 0 && c->threshold <= 1))
        return rt_fail(RT_EINVAL, "minhash: threshold %g (want 0..1)", c->threshold);
    mh_hasher *h = rt_calloc(1, sizeof *h);
    if (!h) return RT_ENOMEM;
    h->c = *c;
    h->n = c->bands * c->rows;
    uint64_t s = c->seed;
    for (int k = 0; k < h->n; k++) {
        h->a[k] = 1 + rt_splitmix64(&s) % (MERSENNE61 - 1); /* [1, p) */
        h->b[k] = rt_splitmix64(&s) % MERSENNE61;           /* [0, p) */
    }
    *out = h;
    return 0;
}

void mh_hasher_free(mh_hasher *h) { free(h); }
int mh_num_hashes(const mh_hasher *h) { return h->n; }

/* ---- normalization ------------------------------------------------------------------------ */
/* One pass: ASCII through a table, other characters through utf8proc one code point at a
 * time (case fold, decompose, strip marks). Digit runs become "0" (one inner . or , with
 * digits after it belongs to the run); punctuation, symbols, separators and control
 * characters become one space. */
enum { C_LETTER = 0, C_DIGIT = 1, C_SPACE = 2 };

static int class_of(utf8proc_int32_t cp) {
    if (cp < 0x80) {
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return C_LETTER;
        if (cp >= '0' && cp <= '9') return C_DIGIT;
        return C_SPACE;
    }
    utf8proc_category_t k = utf8proc_category(cp);
    if (k == UTF8PROC_CATEGORY_ND) return C_DIGIT;
    if ((k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO) || (k >= UTF8PROC_CATEGORY_SM && k <= UTF8PROC_CATEGORY_SO) ||
        (k >= UTF8PROC_CATEGORY_ZS && k <= UTF8PROC_CATEGORY_ZP) || k == UTF8PROC_CATEGORY_CC || cp == 0x200b || cp == 0xfeff)
        return C_SPACE;
    return C_LETTER;
}

typedef struct {
    char *o;
    size_t n;
    bool in_num;      /* the last output was a number's "0" */
    bool sep_pending; /* a . or , right after a number, not yet written */
    bool sep_used;    /* the number already took its one separator */
} norm_out;

static void emit_cp(norm_out *w, utf8proc_int32_t cp) {
    int cls = class_of(cp);
    if (cls == C_DIGIT) {
        if (w->in_num && (!w->sep_pending || !w->sep_used)) {
            if (w->sep_pending) w->sep_used = true;
            w->sep_pending = false;
            return; /* still the same number */
        }
        if (w->sep_pending) { /* "1.2.3": the second separator ends the number */
            w->sep_pending = false;
            if (w->n && w->o[w->n - 1] != ' ') w->o[w->n++] = ' ';
        }
        w->o[w->n++] = '0';
        w->in_num = true;
        w->sep_used = false;
        return;
    }
    if (w->sep_pending) { /* the separator was punctuation after all */
        w->sep_pending = false;
        if (w->n && w->o[w->n - 1] != ' ') w->o[w->n++] = ' ';
    }
    if (w->in_num && !w->sep_used && (cp == '.' || cp == ',' || cp == 0x60c || cp == 0x66b)) {
        w->sep_pending = true;
        return;
    }
    w->in_num = false;
    if (cls == C_SPACE) {
        if (w->n && w->o[w->n - 1] != ' ') w->o[w->n++] = ' ';
        return;
    }
    if (cp < 0x80) { w->o[w->n++] = (char)(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp); return; }
    w->n += (size_t)utf8proc_encode_char(cp, (utf8proc_uint8_t *)w->o + w->n);
}

int mh_normalize(const char *text, size_t len, char **out, size_t *out_len) {
    /* folding can grow a character (ß → ss, ﬃ → ffi): 3x the input bounds it */
    size_t cap;
    if (!rt_mul_ok(len + 1, 3 * 4, &cap)) return rt_fail(RT_ENOMEM, "minhash: text of %zu bytes", len);
    norm_out w = {rt_malloc(cap), 0, false, false, false};
    if (!w.o) return RT_ENOMEM;
    const utf8proc_uint8_t *s = (const utf8proc_uint8_t *)text;
    for (size_t i = 0; i < len;) {
        if (s[i] < 0x80) { emit_cp(&w, s[i]); i++; continue; }
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(s + i, (utf8proc_ssize_t)(len - i), &cp);
        if (k <= 0) { i++; continue; } /* invalid UTF-8: drop the byte */
        i += (size_t)k;
        utf8proc_int32_t d[8];
        int last = 0;
        utf8proc_ssize_t nd = utf8proc_decompose_char(cp, d, 8, UTF8PROC_DECOMPOSE | UTF8PROC_CASEFOLD | UTF8PROC_STRIPMARK, &last);
        if (nd < 0 || nd > 8) { emit_cp(&w, cp); continue; }
        for (utf8proc_ssize_t q = 0; q < nd; q++) emit_cp(&w, d[q]);
    }
    if (w.sep_pending) w.sep_pending = false;
    while (w.n && w.o[w.n - 1] == ' ') w.n--;
    w.o[w.n] = 0;
    *out = w.o;
    *out_len = w.n;
    return 0;
}

/* ---- signatures --------------------------------------------------------------------------- */

/* Calls fn(x, ctx) for the xxhash of every shingle of a normalized text; returns the count. */
static size_t each_shingle(int g, const char *norm, size_t len, void (*fn)(uint64_t, void *), void *ctx) {
    if (len == 0) return 0;
    size_t starts[65], count = 0;
    int have = 0;
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && norm[e] != ' ') e++;
        if (have < g) starts[have++] = i;
        else { memmove(starts, starts + 1, sizeof(size_t) * (size_t)(g - 1)); starts[g - 1] = i; }
        if (have == g) { fn(XXH64(norm + starts[0], e - starts[0], 0), ctx); count++; }
        i = e + 1;
    }
    if (count == 0 && have > 0) { fn(XXH64(norm, len, 0), ctx); count = 1; } /* fewer words than n */
    return count;
}

typedef struct { const mh_hasher *h; uint64_t *sig; } sig_acc;

/* The hot loop: sig[k] = min(sig[k], ((x·a[k] + b[k]) mod 2^64) mod (2^61 − 1)) for all k.
 * Written so compilers vectorize it (x mod p as min(v, v − p) in unsigned arithmetic);
 * built for AVX-512, AVX2 and plain x86-64, picked at run time. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("O3"), target_clones("arch=x86-64-v4", "avx2", "default")))
#elif defined(__x86_64__) && defined(__clang__) && !__has_feature(address_sanitizer)
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#endif
static void permute_min(uint64_t x, const uint64_t *restrict a, const uint64_t *restrict b, uint64_t *restrict sig, int n) {
    for (int k = 0; k < n; k++) {
        uint64_t v = x * a[k] + b[k];
        v = (v & MERSENNE61) + (v >> 61);
        uint64_t t = v - MERSENNE61;
        v = t < v ? t : v;
        sig[k] = v < sig[k] ? v : sig[k];
    }
}

static void sig_add(uint64_t x, void *ctx) {
    sig_acc *a = ctx;
    permute_min(x, a->h->a, a->h->b, a->sig, a->h->n);
}

void mh_signature_normalized(const mh_hasher *h, const char *norm, size_t len, uint64_t *sig, size_t *n_shingles) {
    for (int k = 0; k < h->n; k++) sig[k] = UINT64_MAX;
    sig_acc a = {h, sig};
    size_t count = each_shingle(h->c.ngram, norm, len, sig_add, &a);
    if (n_shingles) *n_shingles = count;
}

int mh_signature(const mh_hasher *h, const char *text, size_t len, uint64_t *sig, size_t *n_shingles) {
    char *norm;
    size_t nl;
    int rc = mh_normalize(text, len, &norm, &nl);
    if (rc) return rc;
    mh_signature_normalized(h, norm, nl, sig, n_shingles);
    free(norm);
    return 0;
}

double mh_similarity(const uint64_t *a, const uint64_t *b, int n) {
    int eq = 0;
    for (int k = 0; k < n; k++) eq += a[k] == b[k];
    return n ? (double)eq / n : 0;
}

/* ---- clustering --------------------------------------------------------------------------- */
static size_t uf_find(size_t *parent, size_t x) {
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

static void uf_union(size_t *parent, size_t a, size_t b) {
    a = uf_find(parent, a);
    b = uf_find(parent, b);
    if (a == b) return;
    if (a < b) parent[b] = a; /* the smaller index (first document) is the root */
    else parent[a] = b;
}

typedef struct {
    uint64_t key;
    size_t doc;
} keyed;

static int cmp_keyed(const void *x, const void *y) {
    const keyed *a = x, *b = y;
    if (a->key != b->key) return a->key < b->key ? -1 : 1;
    return a->doc < b->doc ? -1 : a->doc > b->doc;
}

typedef struct {
    const mh_hasher *h;
    const mh_doc *docs;
    uint64_t *sigs;       /* [n, nh] */
    uint64_t *exact;      /* [n] */
    bool *empty;          /* [n]: no words */
    bool *skip;           /* [n]: left out of LSH (empty, or a later exact copy) */
    uint64_t **sh;        /* [n]: sorted distinct shingle hashes, for exact Jaccard */
    size_t *nsh;          /* [n] */
    int err;
} sig_job;

typedef struct { uint64_t *v; size_t n, cap; bool oom; } u64vec;

static void vec_add(uint64_t x, void *ctx) {
    u64vec *v = ctx;
    if (v->oom) return;
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 256;
        uint64_t *p = realloc(v->v, cap * sizeof *p);
        if (!p) { v->oom = true; return; }
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = x;
}

static int cmp_u64(const void *x, const void *y) {
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

static void sig_worker(void *ctx, size_t begin, size_t end, int thread) {
    (void)thread;
    sig_job *j = ctx;
    int nh = j->h->n;
    for (size_t i = begin; i < end; i++) {
        char *norm;
        size_t nl;
        if (mh_normalize(j->docs[i].text, j->docs[i].len, &norm, &nl)) { __atomic_store_n(&j->err, RT_ENOMEM, __ATOMIC_RELAXED); return; }
        j->exact[i] = XXH64(norm, nl, 0x5eed);
        j->empty[i] = nl == 0;
        if (j->sigs) {
            u64vec v = {0};
            each_shingle(j->h->c.ngram, norm, nl, vec_add, &v);
            if (v.oom) { free(v.v); free(norm); __atomic_store_n(&j->err, RT_ENOMEM, __ATOMIC_RELAXED); return; }
            uint64_t *sig = j->sigs + i * (size_t)nh;
            for (int k = 0; k < nh; k++) sig[k] = UINT64_MAX;
            sig_acc a = {j->h, sig};
            for (size_t k = 0; k < v.n; k++) sig_add(v.v[k], &a);
            if (v.n) qsort(v.v, v.n, sizeof *v.v, cmp_u64);
            size_t u = 0;
            for (size_t k = 0; k < v.n; k++)
                if (!u || v.v[k] != v.v[u - 1]) v.v[u++] = v.v[k];
            j->sh[i] = v.v;
            j->nsh[i] = u;
        }
        free(norm);
    }
}

/* Exact Jaccard similarity of two sorted distinct hash sets. */
static double set_jaccard(const uint64_t *a, size_t na, const uint64_t *b, size_t nb) {
    if (!na && !nb) return 1;
    size_t i = 0, k = 0, both = 0;
    while (i < na && k < nb) {
        if (a[i] == b[k]) { both++; i++; k++; }
        else if (a[i] < b[k]) i++;
        else k++;
    }
    return (double)both / (double)(na + nb - both);
}

/* ---- LSH ----------------------------------------------------------------------------------
 * Each band is a pure function of the signatures, so bands run on any thread in any order
 * and the clusters (connected components of the accepted pairs, named by their smallest
 * index) do not depend on the thread count. Within a band, documents with equal band hashes
 * form a bucket; each is checked against up to 32 earlier members of its bucket, stopping at
 * one already joined to it in this band (a union-find over the bucket's positions) or at the
 * first that passes. A pair whose rows agree in an earlier band is left to that band. */
typedef struct {
    const sig_job *j;
    const mh_config *c;
    const bool *skip;     /* [n]: empty, or an exact copy of an earlier document */
    u64vec *edges;        /* [bands]: accepted pairs (q, d) flattened */
    size_t n;
    int err;
} band_job;

static size_t lf_find(size_t *p, size_t x) {
    while (p[x] != x) {
        p[x] = p[p[x]];
        x = p[x];
    }
    return x;
}

static bool agree_before(const uint64_t *sq, const uint64_t *sd, int band, int rows) {
    for (int b = 0; b < band; b++)
        if (!memcmp(sq + (size_t)b * (size_t)rows, sd + (size_t)b * (size_t)rows, sizeof(uint64_t) * (size_t)rows)) return true;
    return false;
}

static void band_worker(void *ctx, size_t begin, size_t end, int thread) {
    (void)thread;
    band_job *bj = ctx;
    const sig_job *j = bj->j;
    int nh = j->h->n, rows = bj->c->rows;
    double thr = bj->c->threshold;
    keyed *kb = malloc(sizeof *kb * (bj->n ? bj->n : 1));
    size_t *lp = NULL, lcap = 0;
    if (!kb) { __atomic_store_n(&bj->err, RT_ENOMEM, __ATOMIC_RELAXED); return; }
    for (size_t band = begin; band < end; band++) {
        u64vec *out = &bj->edges[band];
        size_t m = 0;
        for (size_t i = 0; i < bj->n; i++)
            if (!bj->skip[i])
                kb[m++] = (keyed){XXH64(j->sigs + i * (size_t)nh + band * (size_t)rows, sizeof(uint64_t) * (size_t)rows, (uint64_t)band), i};
        qsort(kb, m, sizeof *kb, cmp_keyed);
        for (size_t s = 0; s < m;) {
            size_t e = s + 1;
            while (e < m && kb[e].key == kb[s].key) e++;
            if (e - s == 1) { s = e; continue; }
            if (rt_grow((void **)&lp, &lcap, e - s, sizeof *lp)) { out->oom = true; break; }
            for (size_t x = s; x < e; x++) lp[x - s] = x - s;
            for (size_t x = s + 1; x < e; x++) {
                size_t d = kb[x].doc;
                const uint64_t *sd = j->sigs + d * (size_t)nh;
                size_t lo = x - s > 32 ? x - 32 : s;
                for (size_t y = x; y-- > lo;) {
                    size_t q = kb[y].doc;
                    const uint64_t *sq = j->sigs + q * (size_t)nh;
                    if (lf_find(lp, y - s) == lf_find(lp, x - s)) break;
                    if (agree_before(sq, sd, (int)band, rows)) continue;
                    if (mh_similarity(sd, sq, nh) >= thr - 0.15 && set_jaccard(j->sh[d], j->nsh[d], j->sh[q], j->nsh[q]) >= thr) {
                        size_t a = lf_find(lp, y - s), b = lf_find(lp, x - s);
                        lp[a > b ? a : b] = a < b ? a : b;
                        vec_add(q, out);
                        vec_add(d, out);
                        break;
                    }
                }
            }
            s = e;
        }
        if (out->oom) { __atomic_store_n(&bj->err, RT_ENOMEM, __ATOMIC_RELAXED); break; }
    }
    free(lp);
    free(kb);
}

static void free_worker(void *ctx, size_t begin, size_t end, int thread) {
    (void)thread;
    uint64_t **sh = ctx;
    for (size_t i = begin; i < end; i++) free(sh[i]);
}

int mh_dedup_run(const mh_config *c, const mh_doc *docs, size_t n, tp_pool *pool, size_t *cluster) {
    ph_clock pc;
    ph_start(&pc, "minhash");
    mh_hasher *h;
    int rc = mh_hasher_new(c, &h);
    if (rc) return rc;
    int nh = h->n;
    size_t sig_elems;
    sig_job j = {h, docs, NULL, NULL, NULL, NULL, NULL, NULL, 0};
    keyed *kb = NULL;
    size_t *parent = rt_malloc(sizeof *parent * (n ? n : 1));
    j.exact = rt_malloc(sizeof *j.exact * (n ? n : 1));
    j.empty = rt_calloc(n ? n : 1, sizeof *j.empty);
    if (!c->exact_only) {
        if (!rt_mul_ok(n, (size_t)nh, &sig_elems)) { rc = rt_fail(RT_ENOMEM, "minhash: %zu documents", n); goto done; }
        j.sigs = rt_malloc(sizeof *j.sigs * (sig_elems ? sig_elems : 1));
        j.sh = rt_calloc(n ? n : 1, sizeof *j.sh);
        j.nsh = rt_calloc(n ? n : 1, sizeof *j.nsh);
        j.skip = rt_calloc(n ? n : 1, sizeof *j.skip);
        if (!j.sh || !j.nsh || !j.skip) { rc = RT_ENOMEM; goto done; }
    }
    kb = rt_malloc(sizeof *kb * (n ? n : 1));
    if (!parent || !j.exact || !j.empty || (!c->exact_only && !j.sigs) || !kb) { rc = RT_ENOMEM; goto done; }
        tp_parallel_for(pool, n, sig_worker, &j);
    if (j.err) { rc = rt_fail(j.err, "minhash: normalizing documents"); goto done; }
    ph_lap(&pc, "signatures");
    for (size_t i = 0; i < n; i++) parent[i] = i;

    /* exact duplicates: equal hashes of the normalized text */
    for (size_t i = 0; i < n; i++) kb[i] = (keyed){j.exact[i], i};
    qsort(kb, n, sizeof *kb, cmp_keyed);
    for (size_t i = 1; i < n; i++)
        if (kb[i].key == kb[i - 1].key) uf_union(parent, kb[i - 1].doc, kb[i].doc);
    ph_lap(&pc, "exact");

    if (!c->exact_only) {
        /* non-first exact copies stay out of LSH: their first copy stands for them */
        for (size_t i = 0; i < n; i++) j.skip[i] = j.empty[i];
        for (size_t i = 1; i < n; i++)
            if (kb[i].key == kb[i - 1].key) j.skip[kb[i].doc] = true;
        band_job bj = {&j, c, j.skip, rt_calloc((size_t)c->bands, sizeof *bj.edges), n, 0};
        if (!bj.edges) { rc = RT_ENOMEM; goto done; }
        tp_parallel_for(pool, (size_t)c->bands, band_worker, &bj);
        for (int band = 0; band < c->bands; band++) {
            for (size_t e = 0; e < bj.edges[band].n; e += 2) uf_union(parent, bj.edges[band].v[e], bj.edges[band].v[e + 1]);
            free(bj.edges[band].v);
        }
        free(bj.edges);
        if (bj.err) { rc = rt_fail(bj.err, "minhash: LSH buckets"); goto done; }
    }
    ph_lap(&pc, "lsh");
    for (size_t i = 0; i < n; i++) cluster[i] = uf_find(parent, i);
done:
    free(parent);
    free(j.exact);
    free(j.empty);
    free(j.sigs);
    if (j.sh) tp_parallel_for(pool, n, free_worker, j.sh);
    free(j.sh);
    free(j.nsh);
    free(j.skip);
    free(kb);
    mh_hasher_free(h);
    ph_lap(&pc, "free");
    return rc;
}
