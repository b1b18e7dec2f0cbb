/* core/tokenizer_encode.c — the encode pipeline, batch encoding and decoding (see
 * tokenizer.c for the order of the steps). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "core/tokenizer_int.h"
#include "core/utf8.h"

typedef struct {
    const tok_tokenizer *t;
    tok_state *st;
    tok_ivec *ids;
    tok_zvec *offs;          /* NULL when offsets are not wanted */
    tok_zvec word_offs;      /* scratch: offsets of one word's tokens */
    size_t seg_base;         /* original offset of the current segment */
    bool identity;           /* the segment's normalized text is its original text */
} enc_ctx;

/* Original [start, end) of normalized bytes [a, b) of the current segment. */
static void map_range(const enc_ctx *c, size_t a, size_t b, size_t *s, size_t *e) {
    if (c->identity) {
        *s = c->seg_base + a;
        *e = c->seg_base + b;
    } else if (a >= b) {
        *s = *e = c->st->align[2 * a];
    } else {
        *s = c->st->align[2 * a];
        *e = c->st->align[2 * (b - 1) + 1];
    }
}

static int on_word(void *ctx, const char *w, size_t n, size_t off) {
    enc_ctx *c = ctx;
    if (!c->offs) return tok_bpe_word(c->t, c->st, w, n, c->ids, NULL);
    c->word_offs.n = 0;
    int rc = tok_bpe_word(c->t, c->st, w, n, c->ids, &c->word_offs);
    for (size_t i = 0; !rc && i < c->word_offs.n; i += 2) {
        size_t s, e;
        map_range(c, off + c->word_offs.v[i], off + c->word_offs.v[i + 1], &s, &e);
        rc = tok_zvec_push2(c->offs, s, e);
    }
    return rc;
}

static size_t prev_char_start(const char *s, size_t i) {
    do i--;
    while (i && ((unsigned char)s[i] & 0xC0) == 0x80);
    return i;
}

static uint32_t char_at(const char *s, size_t n, size_t i) {
    size_t k = rt_utf8_seqlen((const unsigned char *)s + i, n - i);
    return k ? rt_utf8_decode((const unsigned char *)s + i, k) : 0xFFFD;
}

/* Longest added token starting at s[p]: its end, or 0 (with *which = its index). */
static size_t trie_longest(const tok_trie *tr, const char *s, size_t n, size_t p, int32_t *which) {
    uint32_t node = 0;
    size_t best = 0;
    for (size_t i = p; i < n; i++) {
        uint32_t ch = tr->first[node];
        while (ch && tr->byte[ch] != (uint8_t)s[i]) ch = tr->next[ch];
        if (!ch) break;
        node = ch;
        if (tr->added[node] >= 0) best = i + 1, *which = tr->added[node];
    }
    return best;
}

static int push3(tok_zvec *v, size_t a, size_t b, size_t c) {
    if (tok_zvec_push2(v, a, b)) return RT_ENOMEM;
    if (v->n + 1 > v->cap && rt_grow((void **)&v->v, &v->cap, v->n + 1, sizeof *v->v)) return RT_ENOMEM;
    v->v[v->n++] = c;
    return 0;
}

/* HF AddedVocabulary::find_matches: leftmost-longest matches, filtered by single_word,
 * widened by lstrip / rstrip. Writes triples (start, end, added index + 1, or 0 for text). */
static int split_added(const tok_tokenizer *t, const tok_trie *tr, const char *s, size_t n, tok_zvec *out) {
    out->n = 0;
    size_t start_offset = 0;
    for (size_t p = 0; tr->n && p < n;) {
        if (!tr->first_byte[(uint8_t)s[p]]) { p++; continue; }
        int32_t which = -1;
        size_t stop = trie_longest(tr, s, n, p, &which), start = p;
        if (!stop) { p++; continue; }
        p = stop; /* the match is consumed even when a filter below discards it */
        const tok_added *a = &t->added[which];
        if (a->single_word) {
            bool word_before = start > 0 && tok_is_word_char(char_at(s, n, prev_char_start(s, start)));
            bool word_after = stop < n && tok_is_word_char(char_at(s, n, stop));
            if (word_before || word_after) continue;
        }
        if (a->lstrip)
            while (start > start_offset) {
                size_t q = prev_char_start(s, start);
                if (!tok_is_unicode_space(char_at(s, n, q))) break;
                start = q;
            }
        if (a->rstrip)
            while (stop < n && tok_is_unicode_space(char_at(s, n, stop)))
                stop += rt_utf8_seqlen((const unsigned char *)s + stop, n - stop);
        if (start < start_offset) start = start_offset;
        if (start_offset < start && push3(out, start_offset, start, 0)) return RT_ENOMEM;
        if (push3(out, start, stop, (size_t)which + 1)) return RT_ENOMEM;
        start_offset = stop;
    }
    if (start_offset < n && push3(out, start_offset, n, 0)) return RT_ENOMEM;
    return 0;
}

static int push_token(enc_ctx *c, int32_t id, size_t s, size_t e) {
    if (tok_ivec_push(c->ids, id)) return RT_ENOMEM;
    return c->offs ? tok_zvec_push2(c->offs, s, e) : 0;
}

/* One segment of the original text between non-normalized added tokens. */
static int encode_segment(enc_ctx *c, const char *s, size_t n, size_t base) {
    const tok_tokenizer *t = c->t;
    tok_state *st = c->st;
    const char *norm = s;
    size_t nn = n;
    c->seg_base = base;
    c->identity = true;
    if (t->n_norm) {
        int rc = tok_normalize(t, st, s, n, base, c->offs != NULL, &nn);
        if (rc) return rc;
        norm = st->norm;
        c->identity = nn == n && !memcmp(norm, s, n);
    }
    if (!t->trie_norm.n) return tok_pretokenize(t, st, 0, norm, nn, 0, on_word, c);
    tok_zvec *sp = &st->seg[1];
    int rc = split_added(t, &t->trie_norm, norm, nn, sp);
    for (size_t i = 0; !rc && i < sp->n; i += 3) {
        size_t a = sp->v[i], b = sp->v[i + 1], which = sp->v[i + 2];
        if (which) {
            size_t os = 0, oe = 0;
            if (c->offs) map_range(c, a, b, &os, &oe); /* st->align exists only then */
            rc = push_token(c, t->added[which - 1].id, os, oe);
        } else {
            rc = tok_pretokenize(t, st, 0, norm + a, b - a, a, on_word, c);
        }
    }
    return rc;
}

static int encode_with(const tok_tokenizer *t, tok_state *st, const char *text, size_t len, bool add_special,
                       tok_ivec *ids, tok_zvec *offs) {
    size_t bad;
    if (!rt_utf8_check(text, len, &bad))
        return rt_fail(RT_EFORMAT, "text is not valid UTF-8 (byte %zu: 0x%02X)", bad, (unsigned char)text[bad]);
    enc_ctx c = {.t = t, .st = st, .ids = ids, .offs = offs};
    int rc = 0;
    for (size_t i = 0; add_special && !rc && i < t->n_post_pre; i++) rc = push_token(&c, t->post_pre[i], 0, 0);
    tok_zvec *sp = &st->seg[0];
    if (!rc) rc = split_added(t, &t->trie_raw, text, len, sp);
    for (size_t i = 0; !rc && i < sp->n; i += 3) {
        size_t a = sp->v[i], b = sp->v[i + 1], which = sp->v[i + 2];
        /* encode_segment may reuse st->seg[1] but never st->seg[0] */
        rc = which ? push_token(&c, t->added[which - 1].id, a, b) : encode_segment(&c, text + a, b - a, a);
    }
    for (size_t i = 0; add_special && !rc && i < t->n_post_post; i++) rc = push_token(&c, t->post_post[i], 0, 0);
    free(c.word_offs.v);
    return rc;
}

static int finish(int rc, tok_ivec *ids, tok_zvec *offs, int32_t **out_ids, size_t **out_offs, size_t *n) {
    if (rc) {
        free(ids->v);
        if (offs) free(offs->v);
        return rc;
    }
    if (!ids->v && !(ids->v = rt_malloc(sizeof *ids->v))) return RT_ENOMEM;
    *out_ids = ids->v;
    *n = ids->n;
    if (out_offs) {
        if (!offs->v && !(offs->v = rt_malloc(sizeof *offs->v))) return free(ids->v), RT_ENOMEM;
        *out_offs = offs->v;
    }
    return 0;
}

int tok_encode_offsets(const tok_tokenizer *t, const char *text, size_t len, bool add_special_tokens, int32_t **ids,
                       size_t **offsets, size_t *n) {
    *ids = NULL;
    if (offsets) *offsets = NULL;
    *n = 0;
    tok_state *st = tok_state_get(t);
    if (!st) return RT_ENOMEM;
    tok_ivec iv = {0};
    tok_zvec zv = {0};
    int rc = encode_with(t, st, text, len, add_special_tokens, &iv, offsets ? &zv : NULL);
    tok_state_put(t, st);
    return finish(rc, &iv, offsets ? &zv : NULL, ids, offsets, n);
}

int tok_encode(const tok_tokenizer *t, const char *text, size_t len, bool add_special_tokens, int32_t **ids,
               size_t *n) {
    return tok_encode_offsets(t, text, len, add_special_tokens, ids, NULL, n);
}

/* ---- batch ---- */

typedef struct {
    const tok_tokenizer *t;
    const char *const *texts;
    const size_t *lens;
    bool add_special;
    int32_t **ids;
    size_t *n;
    pthread_mutex_t lock;
    size_t err_at;           /* index of the first failing text, SIZE_MAX when none */
    int err;
    char msg[RT_ERRMSG_MAX];
} batch_ctx;

static void batch_range(void *ctx, size_t begin, size_t end, int thread) {
    batch_ctx *b = ctx;
    tok_state *st = tok_state_get(b->t);
    for (size_t i = begin; i < end; i++) {
        int rc = RT_ENOMEM;
        b->ids[i] = NULL;
        b->n[i] = 0;
        if (st) {
            tok_ivec iv = {0};
            rc = encode_with(b->t, st, b->texts[i], b->lens[i], b->add_special, &iv, NULL);
            if (!rc) rc = finish(rc, &iv, NULL, &b->ids[i], NULL, &b->n[i]);
            else free(iv.v);
        }
        if (rc) {
            pthread_mutex_lock(&b->lock);
            if (i < b->err_at) {
                b->err_at = i;
                b->err = rc;
                snprintf(b->msg, sizeof b->msg, "%s", rt_errmsg());
            }
            pthread_mutex_unlock(&b->lock);
            break;
        }
    }
    tok_state_put(b->t, st);
}

int tok_encode_batch(const tok_tokenizer *t, const char *const *texts, const size_t *lens, size_t count,
                     bool add_special_tokens, tp_pool *pool, int32_t **ids, size_t *n) {
    batch_ctx b = {.t = t, .texts = texts, .lens = lens, .add_special = add_special_tokens, .ids = ids, .n = n,
                   .err_at = SIZE_MAX};
    for (size_t i = 0; i < count; i++) ids[i] = NULL, n[i] = 0;
    pthread_mutex_init(&b.lock, NULL);
    tp_parallel_for(pool, count, batch_range, &b);
    pthread_mutex_destroy(&b.lock);
    if (b.err_at == SIZE_MAX) return 0;
    for (size_t i = 0; i < count; i++) {
        free(ids[i]);
        ids[i] = NULL;
        n[i] = 0;
    }
    return rt_fail(b.err, "text %zu: %s", b.err_at, b.msg);
}

/* ---- decoding ---- */

int tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, bool skip_special_tokens, char **text,
               size_t *len) {
    *text = NULL;
    *len = 0;
    if (t->decoder == DEC_UNSUPPORTED) return rt_fail(RT_EUNSUPPORTED, "decoder %s", t->decoder_name);
    bool bl = t->decoder == DEC_BYTELEVEL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= t->n_ids || t->str_off[ids[i]] == UINT32_MAX)
            return rt_fail(RT_ERANGE, "id %d at position %zu names no token (vocabulary size %zu)", ids[i], i, t->n_ids);
        total += (bl ? t->raw_len[ids[i]] : strlen(t->str_arena + t->str_off[ids[i]])) + 1;
    }
    char *b = rt_malloc(total + 1);
    if (!b) return RT_ENOMEM;
    size_t w = 0;
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (skip_special_tokens && t->is_special[id]) continue;
        if (bl) {
            memcpy(b + w, t->raw_arena + t->raw_off[id], t->raw_len[id]);
            w += t->raw_len[id];
        } else {
            const char *s = t->str_arena + t->str_off[id];
            size_t k = strlen(s);
            if (!first) b[w++] = ' ';
            memcpy(b + w, s, k);
            w += k;
        }
        first = false;
    }
    b[w] = 0;
    if (!bl) {
        *text = b;
        *len = w;
        return 0;
    }
    int rc = rt_utf8_lossy(b, w, text, len);
    free(b);
    return rc;
}
