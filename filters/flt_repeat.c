/* filters/flt_repeat.c — repetition and degeneration measures (see flt.h).
 *
 * Gopher's measures (Rae et al. 2021, as datatrove computes them): lines are split on
 * '\n'; a line equal to an earlier one is a duplicate (its characters count toward the
 * character fraction). Words are split on whitespace. The top n-gram character fraction
 * is len(most frequent n-gram) × its count / len(text); the duplicated n-gram character
 * fraction walks the words and, at each n-gram already seen, adds the characters of its
 * words and jumps past it. N-grams are compared by 64-bit hashes.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

#include "core/alloc.h"
#include "core/status.h"
#include "filters/flt.h"

/* ---- a small open-addressing hash → count table -------------------------------------------- */
typedef struct { uint64_t *key; uint32_t *val; size_t cap; } htab;

static int ht_init(htab *h, size_t n) {
    size_t cap = 16;
    while (cap < 2 * n + 1) cap *= 2;
    h->cap = cap;
    h->key = rt_calloc(cap, sizeof *h->key);
    h->val = rt_calloc(cap, sizeof *h->val);
    if (!h->key || !h->val) { free(h->key); free(h->val); return RT_ENOMEM; }
    return 0;
}
static void ht_free(htab *h) { free(h->key); free(h->val); }
static void ht_clear(htab *h) { memset(h->val, 0, h->cap * sizeof *h->val); }

/* Adds one to key's count and returns the new count (key 0 is remapped). */
static uint32_t ht_inc(htab *h, uint64_t key) {
    if (!key) key = 1;
    size_t i = (size_t)(key * 0x9e3779b97f4a7c15ULL) & (h->cap - 1);
    while (h->val[i] && h->key[i] != key) i = (i + 1) & (h->cap - 1);
    h->key[i] = key;
    return ++h->val[i];
}

typedef struct { size_t b, len; uint64_t h; } word;

static uint64_t ngram_hash(const word *w, int n) {
    uint64_t h = 0x243f6a8885a308d3ULL;
    for (int k = 0; k < n; k++) h = (h ^ w[k].h) * 0x100000001b3ULL + (uint64_t)k;
    return h ^ (h >> 29);
}

/* ---- longest repeated substring: binary search on the length with a rolling hash ------------ */
static int has_repeat(const unsigned char *s, size_t len, size_t L, htab *pos_tab, size_t *pos, bool *found) {
    *found = false;
    if (L == 0) { *found = len > 0; return 0; }
    if (L >= len) return 0;
    const uint64_t B = 0x100000001b3ULL;
    uint64_t h = 0, pw = 1;
    for (size_t i = 0; i < L; i++) { h = h * B + s[i]; pw *= B; }
    ht_clear(pos_tab);
    for (size_t i = 0;; i++) {
        /* look up windows with the same hash: positions chained through pos[] */
        uint64_t key = h ? h : 1;
        size_t slot = (size_t)(key * 0x9e3779b97f4a7c15ULL) & (pos_tab->cap - 1);
        while (pos_tab->val[slot] && pos_tab->key[slot] != key) slot = (slot + 1) & (pos_tab->cap - 1);
        for (uint32_t p = pos_tab->val[slot]; p; p = (uint32_t)pos[p - 1])
            if (!memcmp(s + p - 1, s + i, L)) { *found = true; return 0; }
        pos[i] = pos_tab->val[slot];
        pos_tab->key[slot] = key;
        pos_tab->val[slot] = (uint32_t)(i + 1);
        if (i + L >= len) break;
        h = h * B + s[i + L] - pw * s[i];
    }
    return 0;
}

int flt_longest_repeat(const char *text, size_t len, size_t *out) {
    *out = 0;
    if (len < 2) return 0;
    if (len > UINT32_MAX - 1) return rt_fail(RT_ERANGE, "text of %zu bytes is too long to measure", len);
    htab t;
    if (ht_init(&t, len)) return RT_ENOMEM;
    size_t *pos = rt_malloc(sizeof *pos * len);
    if (!pos) { ht_free(&t); return RT_ENOMEM; }
    size_t lo = 0, hi = len - 1; /* the answer lies in [lo, hi] */
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;
        bool f;
        has_repeat((const unsigned char *)text, len, mid, &t, pos, &f);
        if (f) lo = mid;
        else hi = mid - 1;
    }
    free(pos);
    ht_free(&t);
    *out = lo;
    return 0;
}

/* ---- the measures --------------------------------------------------------------------------- */
int flt_repeat_measure(const char *text, size_t len, flt_repeat_stats *st) {
    memset(st, 0, sizeof *st);
    st->compression_ratio = 1;
    if (len == 0) return 0;
    int rc = 0;
    /* lines */
    size_t nlines = 1;
    for (size_t i = 0; i < len; i++) nlines += text[i] == '\n';
    htab t;
    if (ht_init(&t, nlines + 16)) return RT_ENOMEM;
    size_t dup_lines = 0, dup_line_chars = 0;
    for (size_t b = 0; b <= len;) {
        size_t e = b;
        while (e < len && text[e] != '\n') e++;
        if (ht_inc(&t, XXH64(text + b, e - b, 7)) > 1) { dup_lines++; dup_line_chars += e - b; }
        b = e + 1;
    }
    ht_free(&t);
    st->dup_line_frac = (double)dup_lines / (double)nlines;
    st->dup_line_char_frac = (double)dup_line_chars / (double)len;

    /* words */
    size_t nw = 0, cap = 0;
    word *w = NULL;
    for (size_t i = 0; i < len;) {
        while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\t' || text[i] == '\r')) i++;
        if (i >= len) break;
        size_t b = i;
        while (i < len && !(text[i] == ' ' || text[i] == '\n' || text[i] == '\t' || text[i] == '\r')) i++;
        if (rt_grow((void **)&w, &cap, nw + 1, sizeof *w)) { free(w); return RT_ENOMEM; }
        w[nw++] = (word){b, i - b, XXH64(text + b, i - b, 11)};
    }
    if (nw && ht_init(&t, nw + 16)) { free(w); return RT_ENOMEM; }
    for (int n = 2; n <= 4 && (size_t)n <= nw; n++) {
        ht_clear(&t);
        uint32_t best = 0;
        size_t best_i = 0;
        for (size_t i = 0; i + (size_t)n <= nw; i++) {
            uint32_t c = ht_inc(&t, ngram_hash(w + i, n));
            if (c > best) { best = c; best_i = i; }
        }
        size_t chars = w[best_i + (size_t)n - 1].b + w[best_i + (size_t)n - 1].len - w[best_i].b; /* with spaces */
        st->top_ngram_char_frac[n - 2] = best > 1 ? (double)chars * best / (double)len : 0;
        if (st->top_ngram_char_frac[n - 2] > 1) st->top_ngram_char_frac[n - 2] = 1;
    }
    for (int n = 5; n <= 10 && (size_t)n <= nw; n++) {
        ht_clear(&t);
        size_t rep = 0;
        for (size_t i = 0; i + (size_t)n <= nw;) {
            if (ht_inc(&t, ngram_hash(w + i, n)) > 1) {
                for (int k = 0; k < n; k++) rep += w[i + (size_t)k].len;
                i += (size_t)n;
            } else {
                i++;
            }
        }
        st->dup_ngram_char_frac[n - 5] = (double)rep / (double)len;
    }
    if (nw) ht_free(&t);
    free(w);

    if ((rc = flt_longest_repeat(text, len, &st->longest_repeat))) return rc;

    size_t bound = ZSTD_compressBound(len);
    void *z = rt_malloc(bound);
    if (!z) return RT_ENOMEM;
    size_t zn = ZSTD_compress(z, bound, text, len, 3);
    free(z);
    if (ZSTD_isError(zn)) return rt_fail(RT_EINTERNAL, "zstd: %s", ZSTD_getErrorName(zn));
    st->compression_ratio = (double)zn / (double)len;
    return 0;
}

int flt_repetition(const flt_config *c, const flt_sample *s, flt_verdict *v) {
    const char *t = s->text ? s->text : "";
    size_t len = strlen(t);
    flt_repeat_stats st;
    int rc = flt_repeat_measure(t, len, &st);
    if (rc) return rc;
    typedef struct { const char *what; double val, lim; } measure;
    measure m[14];
    int nm = 0;
    char names[9][40];
    m[nm++] = (measure){"duplicate lines", st.dup_line_frac, c->max_dup_line_frac};
    m[nm++] = (measure){"characters in duplicate lines", st.dup_line_char_frac, c->max_dup_line_char_frac};
    for (int n = 0; n < 3; n++) {
        snprintf(names[n], sizeof names[n], "characters in the top %d-gram", n + 2);
        m[nm++] = (measure){names[n], st.top_ngram_char_frac[n], c->max_top_ngram_char_frac[n]};
    }
    for (int n = 0; n < 6; n++) {
        snprintf(names[3 + n], sizeof names[3 + n], "characters in repeated %d-grams", n + 5);
        m[nm++] = (measure){names[3 + n], st.dup_ngram_char_frac[n], c->max_dup_ngram_char_frac[n]};
    }
    double worst = 0;
    int wi = -1;
    for (int k = 0; k < nm; k++) {
        if (m[k].lim <= 0) continue;
        double r = m[k].val / m[k].lim;
        if (r > worst) { worst = r; wi = k; }
    }
    double rep_ratio = c->max_repeated_substring ? (double)st.longest_repeat / (double)c->max_repeated_substring : 0;
    double z_ratio = c->min_compression_ratio > 0 && len >= c->min_compress_bytes && st.compression_ratio > 0
                         ? c->min_compression_ratio / st.compression_ratio : 0;
    v->kind = FLT_REPETITION;
    if (rep_ratio > worst) worst = rep_ratio, wi = -2;
    if (z_ratio > worst) worst = z_ratio, wi = -3;
    v->score = worst;
    v->pass = worst <= 1;
    if (v->pass) {
        snprintf(v->reason, sizeof v->reason, "ok: worst repetition measure at %.0f%% of its limit", 100 * worst);
    } else if (wi >= 0) {
        snprintf(v->reason, sizeof v->reason, "%.1f%% %s, more than %.1f%%", 100 * m[wi].val, m[wi].what, 100 * m[wi].lim);
    } else if (wi == -2) {
        snprintf(v->reason, sizeof v->reason, "a %zu-character substring repeats, longer than %zu", st.longest_repeat,
                 c->max_repeated_substring);
    } else {
        snprintf(v->reason, sizeof v->reason, "zstd compresses the text to %.1f%% of its size, under %.1f%% (degenerate)",
                 100 * st.compression_ratio, 100 * c->min_compression_ratio);
    }
    return 0;
}
