/* core/tokenizer_bpe.c — vocabulary and merge tables, the BPE merge loop, scratch states.
 *
 * The merge loop follows the definition HF tokenizers implements: repeatedly merge the
 * adjacent pair with the lowest merge rank, the leftmost one on ties, until no adjacent
 * pair has a merge. A binary heap keyed (rank, position) gives that order in O(n log n).
 */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "core/tokenizer_int.h"

enum { CACHE_SLOTS = 1 << 14, CACHE_MAX_WORD = 256 };

int tok_ivec_push(tok_ivec *a, int32_t x) {
    if (a->n == a->cap && rt_grow((void **)&a->v, &a->cap, a->n + 1, sizeof *a->v)) return RT_ENOMEM;
    a->v[a->n++] = x;
    return 0;
}

int tok_zvec_push2(tok_zvec *a, size_t x, size_t y) {
    if (a->n + 2 > a->cap && rt_grow((void **)&a->v, &a->cap, a->n + 2, sizeof *a->v)) return RT_ENOMEM;
    a->v[a->n++] = x;
    a->v[a->n++] = y;
    return 0;
}

uint64_t tok_hash(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* ---- vocabulary ---- */

int tok_strmap_init(tok_strmap *m, size_t n) {
    m->cap = pow2_at_least(n * 2);
    m->slot = rt_calloc(m->cap, sizeof *m->slot);
    m->tag = rt_malloc(m->cap * sizeof *m->tag);
    if (!m->slot || !m->tag) return RT_ENOMEM;
    return 0;
}

void tok_strmap_free(tok_strmap *m) {
    free(m->slot);
    free(m->tag);
    memset(m, 0, sizeof *m);
}

static bool key_is(const tok_tokenizer *t, int32_t id, const char *s, size_t n) {
    return t->raw_len[id] == n && !memcmp(t->raw_arena + t->raw_off[id], s, n);
}

void tok_strmap_put(const tok_tokenizer *t, tok_strmap *m, int32_t id) {
    const char *s = t->raw_arena + t->raw_off[id];
    size_t n = t->raw_len[id];
    uint64_t h = tok_hash(s, n);
    size_t i = h & (m->cap - 1);
    while (m->slot[i]) {
        int32_t o = (int32_t)m->slot[i] - 1;
        if (m->tag[i] == (uint32_t)h && key_is(t, o, s, n)) return;
        i = (i + 1) & (m->cap - 1);
    }
    m->slot[i] = (uint32_t)id + 1;
    m->tag[i] = (uint32_t)h;
}

int32_t tok_strmap_get(const tok_tokenizer *t, const tok_strmap *m, const char *s, size_t n) {
    if (!m->cap) return -1;
    uint64_t h = tok_hash(s, n);
    size_t i = h & (m->cap - 1);
    while (m->slot[i]) {
        int32_t o = (int32_t)m->slot[i] - 1;
        if (m->tag[i] == (uint32_t)h && key_is(t, o, s, n)) return o;
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

/* ---- merges ---- */

int tok_mergemap_init(tok_mergemap *m, size_t n) {
    m->cap = pow2_at_least(n * 2);
    m->key = rt_malloc(m->cap * sizeof *m->key);
    m->rank = rt_malloc(m->cap * sizeof *m->rank);
    m->merged = rt_malloc(m->cap * sizeof *m->merged);
    if (!m->key || !m->rank || !m->merged) return RT_ENOMEM;
    memset(m->key, 0xFF, m->cap * sizeof *m->key);
    return 0;
}

void tok_mergemap_free(tok_mergemap *m) {
    free(m->key);
    free(m->rank);
    free(m->merged);
    memset(m, 0, sizeof *m);
}

static inline size_t pair_slot(uint64_t k, size_t cap) {
    k *= 0x9E3779B97F4A7C15ull;
    return (size_t)(k >> 20) & (cap - 1);
}

void tok_mergemap_put(tok_mergemap *m, int32_t a, int32_t b, uint32_t rank, int32_t merged) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = pair_slot(k, m->cap);
    while (m->key[i] != UINT64_MAX) {
        if (m->key[i] == k) return; /* a repeated merge keeps its first (lowest) rank */
        i = (i + 1) & (m->cap - 1);
    }
    m->key[i] = k;
    m->rank[i] = rank;
    m->merged[i] = merged;
}

/* Rank of merging (a, b), UINT32_MAX when there is no such merge; *merged gets the result. */
static inline uint32_t merge_rank(const tok_mergemap *m, int32_t a, int32_t b, int32_t *merged) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = pair_slot(k, m->cap);
    for (;;) {
        uint64_t x = m->key[i];
        if (x == k) {
            *merged = m->merged[i];
            return m->rank[i];
        }
        if (x == UINT64_MAX) return UINT32_MAX;
        i = (i + 1) & (m->cap - 1);
    }
}

/* ---- scratch states ---- */

tok_state *tok_state_get(const tok_tokenizer *t) {
    tok_tokenizer *mt = (tok_tokenizer *)t; /* only the lock-protected pool changes */
    pthread_mutex_lock(&mt->lock);
    tok_state *st = mt->free_states;
    if (st) mt->free_states = st->next_free;
    pthread_mutex_unlock(&mt->lock);
    if (st) return st;
    st = rt_calloc(1, sizeof *st);
    if (!st) return NULL;
    st->md = pcre2_match_data_create(4, NULL);
    st->mctx = pcre2_match_context_create(NULL);
    st->jstack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    st->cache_cap = CACHE_SLOTS;
    st->cache = rt_calloc(st->cache_cap, sizeof *st->cache);
    if (!st->md || !st->mctx || !st->jstack || !st->cache) {
        tok_state_free(st);
        rt_fail(RT_ENOMEM, "tokenizer scratch state");
        return NULL;
    }
    pcre2_jit_stack_assign(st->mctx, NULL, st->jstack);
    return st;
}

void tok_state_put(const tok_tokenizer *t, tok_state *st) {
    if (!st) return;
    tok_tokenizer *mt = (tok_tokenizer *)t;
    pthread_mutex_lock(&mt->lock);
    st->next_free = mt->free_states;
    mt->free_states = st;
    pthread_mutex_unlock(&mt->lock);
}

void tok_state_free(tok_state *st) {
    if (!st) return;
    pcre2_match_data_free(st->md);
    pcre2_match_context_free(st->mctx);
    pcre2_jit_stack_free(st->jstack);
    free(st->cache);
    free(st->ckeys);
    free(st->cvals);
    free(st->sym);
    free(st->prev);
    free(st->nxt);
    free(st->sstart);
    free(st->slen);
    free(st->heap);
    for (int i = 0; i < 8; i++) free(st->marks[i]);
    free(st->tmp);
    free(st->norm);
    free(st->align);
    free(st->seg[0].v);
    free(st->seg[1].v);
    free(st);
}

/* ---- word cache ---- */

static void cache_clear(tok_state *st) {
    memset(st->cache, 0, st->cache_cap * sizeof *st->cache);
    st->cache_n = st->ckeys_n = st->cvals_n = 0;
}

/* Index of the entry for w, or of the empty slot where it belongs. */
static size_t cache_find(const tok_state *st, const char *w, size_t n, uint64_t h) {
    size_t i = h & (st->cache_cap - 1);
    for (;;) {
        const tok_cache_entry *e = &st->cache[i];
        if (!e->klen) return i;
        if (e->hash == h && e->klen == n && !memcmp(st->ckeys + e->koff, w, n)) return i;
        i = (i + 1) & (st->cache_cap - 1);
    }
}

static void cache_put(tok_state *st, size_t slot, const char *w, size_t n, uint64_t h, const int32_t *vals,
                      size_t nv) {
    if (st->cache_n * 2 >= st->cache_cap) {
        cache_clear(st);
        slot = cache_find(st, w, n, h);
    }
    if (st->ckeys_n + n > st->ckeys_cap && rt_grow((void **)&st->ckeys, &st->ckeys_cap, st->ckeys_n + n, 1)) return;
    if (st->cvals_n + nv > st->cvals_cap &&
        rt_grow((void **)&st->cvals, &st->cvals_cap, st->cvals_n + nv, sizeof *st->cvals))
        return;
    memcpy(st->ckeys + st->ckeys_n, w, n);
    memcpy(st->cvals + st->cvals_n, vals, nv * sizeof *vals);
    st->cache[slot] = (tok_cache_entry){h, (uint32_t)st->ckeys_n, (uint32_t)n, (uint32_t)st->cvals_n, (uint32_t)nv};
    st->ckeys_n += n;
    st->cvals_n += nv;
    st->cache_n++;
}

/* ---- the merge loop ---- */

static int reserve_symbols(tok_state *st, size_t n) {
    if (n <= st->sym_cap) return 0;
    size_t cap = n < 64 ? 64 : n * 2;
    int32_t *a = realloc(st->sym, cap * sizeof *a), *b, *c;
    if (a) st->sym = a;
    b = realloc(st->prev, cap * sizeof *b);
    if (b) st->prev = b;
    c = realloc(st->nxt, cap * sizeof *c);
    if (c) st->nxt = c;
    uint32_t *d = realloc(st->sstart, cap * sizeof *d), *e;
    if (d) st->sstart = d;
    e = realloc(st->slen, cap * sizeof *e);
    if (e) st->slen = e;
    uint64_t *f = realloc(st->heap, cap * sizeof *f);
    if (f) st->heap = f;
    if (!a || !b || !c || !d || !e || !f) return rt_fail(RT_ENOMEM, "BPE scratch for a %zu-symbol word", n);
    st->sym_cap = st->heap_cap = cap;
    return 0;
}

static void heap_push(uint64_t *h, size_t *n, uint64_t x) {
    size_t i = (*n)++;
    while (i) {
        size_t p = (i - 1) / 2;
        if (h[p] <= x) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], x = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && h[c + 1] < h[c]) c++;
        if (h[c] >= x) break;
        h[i] = h[c];
        i = c;
    }
    if (m) h[i] = x;
    return top;
}

/* Adds the initial symbol(s) for one unit (a byte, or a character when not byte-level). */
static void add_unit(const tok_tokenizer *t, tok_state *st, size_t *ns, int32_t id, size_t start, size_t len,
                     int32_t *unk_at) {
    if (id >= 0) {
        *unk_at = -1;
        st->sym[*ns] = id, st->sstart[*ns] = (uint32_t)start, st->slen[*ns] = (uint32_t)len, (*ns)++;
        return;
    }
    if (t->unk_id < 0) return; /* HF drops what it cannot represent when there is no unk token */
    if (t->fuse_unk && *unk_at >= 0) {
        st->slen[*unk_at] += (uint32_t)len;
        return;
    }
    *unk_at = (int32_t)*ns;
    st->sym[*ns] = t->unk_id, st->sstart[*ns] = (uint32_t)start, st->slen[*ns] = (uint32_t)len, (*ns)++;
}

/* Fills the initial symbols of w; returns their count. */
static size_t initial_symbols(const tok_tokenizer *t, tok_state *st, const char *w, size_t n) {
    size_t ns = 0;
    int32_t unk_at = -1;
    const unsigned char *u = (const unsigned char *)w;
    if (t->byte_level) {
        for (size_t i = 0; i < n; i++) {
            int32_t id = t->byte_id[u[i]];
            if (id < 0 && t->byte_fallback) id = t->fallback_id[u[i]];
            add_unit(t, st, &ns, id, i, 1, &unk_at);
        }
        return ns;
    }
    for (size_t i = 0; i < n;) {
        size_t k = 1;
        while (i + k < n && (u[i + k] & 0xC0) == 0x80) k++;
        int32_t id = tok_strmap_get(t, &t->vocab, w + i, k);
        if (id < 0 && t->byte_fallback) {
            bool all = true;
            for (size_t j = 0; j < k; j++) all = all && t->fallback_id[u[i + j]] >= 0;
            if (all) {
                for (size_t j = 0; j < k; j++) add_unit(t, st, &ns, t->fallback_id[u[i + j]], i + j, 1, &unk_at);
                i += k;
                continue;
            }
        }
        add_unit(t, st, &ns, id, i, k, &unk_at);
        i += k;
    }
    return ns;
}

static void push_pair(const tok_tokenizer *t, tok_state *st, size_t *hn, int32_t pos) {
    int32_t nx = st->nxt[pos], merged;
    if (nx < 0) return;
    uint32_t r = merge_rank(&t->merges, st->sym[pos], st->sym[nx], &merged);
    if (r != UINT32_MAX) heap_push(st->heap, hn, (uint64_t)r << 32 | (uint32_t)pos);
}

static void merge_all(const tok_tokenizer *t, tok_state *st, size_t ns) {
    for (size_t i = 0; i < ns; i++) {
        st->prev[i] = (int32_t)i - 1;
        st->nxt[i] = i + 1 < ns ? (int32_t)i + 1 : -1;
    }
    size_t hn = 0;
    for (size_t i = 0; i + 1 < ns; i++) push_pair(t, st, &hn, (int32_t)i);
    while (hn) {
        uint64_t top = heap_pop(st->heap, &hn);
        int32_t pos = (int32_t)(uint32_t)top, nx = st->nxt[pos], merged = -1;
        uint32_t rank = (uint32_t)(top >> 32);
        if (!st->slen[pos] || nx < 0) continue;
        if (merge_rank(&t->merges, st->sym[pos], st->sym[nx], &merged) != rank) continue; /* stale */
        st->sym[pos] = merged;
        st->slen[pos] += st->slen[nx];
        st->slen[nx] = 0;
        st->nxt[pos] = st->nxt[nx];
        if (st->nxt[nx] >= 0) st->prev[st->nxt[nx]] = pos;
        if (st->prev[pos] >= 0) push_pair(t, st, &hn, st->prev[pos]);
        push_pair(t, st, &hn, pos);
    }
}

int tok_bpe_word(const tok_tokenizer *t, tok_state *st, const char *w, size_t n, tok_ivec *out, tok_zvec *offs) {
    if (!n) return 0;
    if (t->ignore_merges) {
        int32_t id = tok_strmap_get(t, &t->vocab, w, n);
        if (id >= 0) {
            if (tok_ivec_push(out, id)) return RT_ENOMEM;
            return offs ? tok_zvec_push2(offs, 0, n) : 0;
        }
    }
    /* cached: pairs (id, byte length) */
    uint64_t h = 0;
    size_t slot = 0;
    bool cacheable = n <= CACHE_MAX_WORD;
    if (cacheable) {
        h = tok_hash(w, n);
        slot = cache_find(st, w, n, h);
        const tok_cache_entry *e = &st->cache[slot];
        if (e->klen) {
            size_t at = 0;
            for (uint32_t i = 0; i < e->vlen; i += 2) {
                int32_t id = st->cvals[e->voff + i], len = st->cvals[e->voff + i + 1];
                if (tok_ivec_push(out, id)) return RT_ENOMEM;
                if (offs && tok_zvec_push2(offs, at, at + (size_t)len)) return RT_ENOMEM;
                at += (size_t)len;
            }
            return 0;
        }
    }
    if (n > UINT32_MAX / 2) return rt_fail(RT_ERANGE, "word of %zu bytes", n);
    if (reserve_symbols(st, n)) return RT_ENOMEM;
    size_t ns = initial_symbols(t, st, w, n);
    merge_all(t, st, ns);
    size_t first = out->n;
    for (int32_t i = ns ? 0 : -1; i >= 0; i = st->nxt[i]) {
        if (tok_ivec_push(out, st->sym[i])) return RT_ENOMEM;
        if (offs && tok_zvec_push2(offs, st->sstart[i], st->sstart[i] + st->slen[i])) return RT_ENOMEM;
    }
    if (cacheable) {
        size_t nt = out->n - first;
        int32_t buf[2 * 64];
        if (nt <= 64) {
            size_t k = 0;
            for (int32_t i = ns ? 0 : -1; i >= 0; i = st->nxt[i]) buf[k++] = st->sym[i], buf[k++] = (int32_t)st->slen[i];
            cache_put(st, slot, w, n, h, buf, k);
        }
    }
    return 0;
}
