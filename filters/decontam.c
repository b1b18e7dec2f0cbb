/* filters/decontam.c — the n-gram decontamination index (contract in decontam.h). */
#include "filters/decontam.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>
#include <xxhash.h>

#include "core/alloc.h"
#include "core/status.h"

typedef struct {
    uint32_t bench;  /* index into names */
    char *id;
} dc_doc;

struct dc_index {
    int n;
    uint64_t *keys;    /* open addressing; 0 = empty slot */
    uint32_t *vals;    /* document of the key */
    size_t cap, used;  /* cap: power of two */
    uint64_t *bloom;   /* 4 bits per slot (cap * 4 bits), one bit set per key: most lookups of
                        * absent n-grams stop in this small array instead of the table */
    dc_doc *docs;
    size_t n_docs, docs_cap;
    char **names;
    size_t n_names, names_cap;
};

int dc_index_new(int n, dc_index **out) {
    *out = NULL;
    if (n < 1 || n > DC_MAX_N) return rt_fail(RT_EINVAL, "decontamination n-gram size must be 1..%d, got %d", DC_MAX_N, n);
    dc_index *ix = rt_calloc(1, sizeof *ix);
    if (!ix) return RT_ENOMEM;
    ix->n = n;
    ix->cap = 1024;
    ix->keys = rt_calloc(ix->cap, sizeof *ix->keys);
    ix->vals = rt_calloc(ix->cap, sizeof *ix->vals);
    ix->bloom = rt_calloc(ix->cap / 16, sizeof *ix->bloom);
    if (!ix->keys || !ix->vals || !ix->bloom) { dc_index_free(ix); return RT_ENOMEM; }
    *out = ix;
    return 0;
}

void dc_index_free(dc_index *ix) {
    if (!ix) return;
    for (size_t i = 0; i < ix->n_docs; i++) free(ix->docs[i].id);
    for (size_t i = 0; i < ix->n_names; i++) free(ix->names[i]);
    free(ix->docs);
    free(ix->names);
    free(ix->keys);
    free(ix->vals);
    free(ix->bloom);
    free(ix);
}

int dc_index_n(const dc_index *ix) { return ix->n; }
size_t dc_index_ngrams(const dc_index *ix) { return ix->used; }
size_t dc_index_docs(const dc_index *ix) { return ix->n_docs; }

/* ---- normalization ---- */

static bool is_word_cp(utf8proc_int32_t c) {
    if (c < 128) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return true;
    default: return false;
    }
}

int dc_normalize(const char *text, size_t len, char **out, size_t *out_len, size_t *n_words) {
    /* lower-casing can grow a code point's encoding (at most 4 bytes per input byte), plus spaces */
    size_t cap;
    if (!rt_mul_ok(len, 4, &cap) || cap + 2 < cap) return rt_fail(RT_ENOMEM, "text too long to normalize");
    char *buf = rt_malloc(cap + 2);
    if (!buf) return RT_ENOMEM;
    size_t o = 0, words = 0;
    bool in_word = false;
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)text;
    size_t i = 0;
    while (i < len) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k;
        if (p[i] < 128) { c = p[i]; k = 1; }
        else {
            k = utf8proc_iterate(p + i, (utf8proc_ssize_t)(len - i), &c);
            if (k <= 0) { c = -1; k = 1; } /* invalid byte: a separator */
        }
        i += (size_t)k;
        if (c >= 0 && is_word_cp(c)) {
            if (!in_word) {
                if (words) buf[o++] = ' ';
                words++;
                in_word = true;
            }
            if (c < 128) buf[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
            else o += (size_t)utf8proc_encode_char(utf8proc_tolower(c), (utf8proc_uint8_t *)buf + o);
        } else {
            in_word = false;
        }
    }
    buf[o] = 0;
    *out = buf;
    if (out_len) *out_len = o;
    if (n_words) *n_words = words;
    return 0;
}

/* Word start offsets of a normalized string; *starts malloc'd. */
static int word_starts(const char *norm, size_t len, size_t n_words, size_t **starts) {
    size_t *s = rt_malloc((n_words ? n_words : 1) * sizeof *s);
    if (!s) return RT_ENOMEM;
    size_t w = 0;
    for (size_t i = 0; i < len; i++)
        if (i == 0 || norm[i - 1] == ' ') s[w++] = i;
    *starts = s;
    return 0;
}

/* n-gram j spans [starts[j], end) where end is the end of word j + n - 1. */
static size_t ngram_end(const char *norm, size_t len, const size_t *starts, size_t n_words, size_t j, int n) {
    size_t last = j + (size_t)n - 1;
    return last + 1 < n_words ? starts[last + 1] - 1 : len;
}

static uint64_t key_of(const char *s, size_t len) {
    uint64_t h = XXH64(s, len, 0);
    return h ? h : 1;
}

/* ---- the table ---- */

/* The bloom bit of a key: from its high bits (the table slot uses the low ones). */
static inline size_t bloom_bit(uint64_t key, size_t cap) { return (size_t)(key >> 32) & (cap * 4 - 1); }

static int grow_table(dc_index *ix) {
    size_t ncap = ix->cap * 2;
    uint64_t *k = rt_calloc(ncap, sizeof *k);
    uint32_t *v = rt_calloc(ncap, sizeof *v);
    uint64_t *b = rt_calloc(ncap / 16, sizeof *b);
    if (!k || !v || !b) { free(k); free(v); free(b); return RT_ENOMEM; }
    for (size_t i = 0; i < ix->cap; i++) {
        if (!ix->keys[i]) continue;
        size_t j = (size_t)ix->keys[i] & (ncap - 1);
        while (k[j]) j = (j + 1) & (ncap - 1);
        k[j] = ix->keys[i];
        v[j] = ix->vals[i];
        size_t bb = bloom_bit(ix->keys[i], ncap);
        b[bb / 64] |= 1ull << (bb % 64);
    }
    free(ix->keys);
    free(ix->vals);
    free(ix->bloom);
    ix->keys = k;
    ix->vals = v;
    ix->bloom = b;
    ix->cap = ncap;
    return 0;
}

/* Inserts key → doc unless present; returns 1 when inserted, 0 when present, < 0 on error. */
static int table_put(dc_index *ix, uint64_t key, uint32_t doc) {
    if ((ix->used + 1) * 2 > ix->cap) {
        int rc = grow_table(ix);
        if (rc) return rc;
    }
    size_t j = (size_t)key & (ix->cap - 1);
    while (ix->keys[j]) {
        if (ix->keys[j] == key) return 0;
        j = (j + 1) & (ix->cap - 1);
    }
    ix->keys[j] = key;
    ix->vals[j] = doc;
    ix->used++;
    size_t bb = bloom_bit(key, ix->cap);
    ix->bloom[bb / 64] |= 1ull << (bb % 64);
    return 1;
}

static bool table_get(const dc_index *ix, uint64_t key, uint32_t *doc) {
    size_t bb = bloom_bit(key, ix->cap);
    if (!(ix->bloom[bb / 64] >> (bb % 64) & 1)) return false;
    size_t j = (size_t)key & (ix->cap - 1);
    while (ix->keys[j]) {
        if (ix->keys[j] == key) { *doc = ix->vals[j]; return true; }
        j = (j + 1) & (ix->cap - 1);
    }
    return false;
}

static int bench_id(dc_index *ix, const char *name, uint32_t *out) {
    for (size_t i = 0; i < ix->n_names; i++)
        if (!strcmp(ix->names[i], name)) { *out = (uint32_t)i; return 0; }
    if (rt_grow((void **)&ix->names, &ix->names_cap, ix->n_names + 1, sizeof *ix->names)) return RT_ENOMEM;
    if (!(ix->names[ix->n_names] = rt_strdup(name))) return RT_ENOMEM;
    *out = (uint32_t)ix->n_names++;
    return 0;
}

int dc_index_add(dc_index *ix, const char *benchmark, const char *doc_id, const char *text, size_t len) {
    char *norm;
    size_t nlen, nw;
    int rc = dc_normalize(text, len, &norm, &nlen, &nw);
    if (rc) return rc;
    if (nw < (size_t)ix->n) { free(norm); return 0; }
    size_t *starts;
    if ((rc = word_starts(norm, nlen, nw, &starts))) { free(norm); return rc; }
    uint32_t b;
    if (ix->n_docs >= UINT32_MAX) rc = rt_fail(RT_ERANGE, "decontamination index: too many documents");
    if (!rc) rc = bench_id(ix, benchmark, &b);
    if (!rc && rt_grow((void **)&ix->docs, &ix->docs_cap, ix->n_docs + 1, sizeof *ix->docs)) rc = RT_ENOMEM;
    char *idc = rc ? NULL : rt_strdup(doc_id ? doc_id : "");
    if (!rc && !idc) rc = RT_ENOMEM;
    if (!rc) {
        uint32_t d = (uint32_t)ix->n_docs;
        ix->docs[ix->n_docs++] = (dc_doc){b, idc};
        for (size_t j = 0; j + (size_t)ix->n <= nw && !rc; j++) {
            size_t e = ngram_end(norm, nlen, starts, nw, j, ix->n);
            int r = table_put(ix, key_of(norm + starts[j], e - starts[j]), d);
            if (r < 0) rc = r;
        }
    }
    free(starts);
    free(norm);
    return rc;
}

static const char *const default_fields[] = {"question", "problem", "prompt", "answer", "solution"};

int dc_index_add_jsonl(dc_index *ix, const char *path, const char *benchmark, const char *const *fields,
                       size_t n_fields, size_t *n_records) {
    if (!fields) { fields = default_fields; n_fields = sizeof default_fields / sizeof *default_fields; }
    if (n_records) *n_records = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return rt_fail(RT_EIO, "%s: cannot open: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0, lineno = 0, recs = 0;
    ssize_t got;
    int rc = 0;
    char *text = NULL;
    size_t tcap = 0;
    while (!rc && (got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t n = (size_t)got;
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ')) n--;
        if (!n) continue;
        json_error_t e;
        json_t *o = json_loadb(line, n, JSON_REJECT_DUPLICATES, &e);
        if (!o || !json_is_object(o)) {
            json_decref(o);
            rc = rt_fail(RT_EFORMAT, "%s:%zu: %s", path, lineno, o ? "not a JSON object" : e.text);
            break;
        }
        size_t tl = 0;
        for (size_t k = 0; k < n_fields && !rc; k++) {
            json_t *v = json_object_get(o, fields[k]);
            char num[64];
            const char *s = NULL;
            size_t sl = 0;
            if (json_is_string(v)) { s = json_string_value(v); sl = json_string_length(v); }
            else if (json_is_integer(v)) { snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v)); s = num; sl = strlen(num); }
            if (!s) continue;
            /* the fields are joined by newlines into one document: an n-gram may span question
             * and answer, as a sample quoting both back to back would */
            if (rt_grow((void **)&text, &tcap, tl + sl + 2, 1)) { rc = RT_ENOMEM; break; }
            memcpy(text + tl, s, sl);
            tl += sl;
            text[tl++] = '\n';
        }
        char idbuf[64];
        const char *id = NULL;
        json_t *jid = json_object_get(o, "id");
        if (json_is_string(jid)) id = json_string_value(jid);
        else if (json_is_integer(jid)) { snprintf(idbuf, sizeof idbuf, "id %lld", (long long)json_integer_value(jid)); id = idbuf; }
        char linebuf[64];
        if (!id) { snprintf(linebuf, sizeof linebuf, "line %zu", lineno); id = linebuf; }
        if (!rc && tl) rc = dc_index_add(ix, benchmark, id, text, tl);
        json_decref(o);
        recs++;
    }
    if (!rc && ferror(f)) rc = rt_fail(RT_EIO, "%s: read error", path);
    free(text);
    free(line);
    fclose(f);
    if (n_records) *n_records = recs;
    return rc;
}

int dc_index_find(const dc_index *ix, const char *text, size_t len, dc_hit *hit) {
    memset(hit, 0, sizeof *hit);
    if (!ix->used) return 0;
    char *norm;
    size_t nlen, nw;
    int rc = dc_normalize(text, len, &norm, &nlen, &nw);
    if (rc) return rc;
    if (nw < (size_t)ix->n) { free(norm); return 0; }
    size_t *starts;
    if ((rc = word_starts(norm, nlen, nw, &starts))) { free(norm); return rc; }
    for (size_t j = 0; j + (size_t)ix->n <= nw; j++) {
        size_t e = ngram_end(norm, nlen, starts, nw, j, ix->n);
        uint32_t d;
        if (table_get(ix, key_of(norm + starts[j], e - starts[j]), &d)) {
            hit->found = true;
            hit->benchmark = ix->names[ix->docs[d].bench];
            hit->doc_id = ix->docs[d].id;
            size_t l = e - starts[j];
            if (l >= sizeof hit->ngram) {
                l = sizeof hit->ngram - 1;
                while (l && ((unsigned char)norm[starts[j] + l] & 0xC0) == 0x80) l--; /* whole code points */
            }
            memcpy(hit->ngram, norm + starts[j], l);
            hit->ngram[l] = 0;
            break;
        }
    }
    free(starts);
    free(norm);
    return 0;
}
