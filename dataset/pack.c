#include "dataset/pack.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/hash.h"
#include "core/shard.h"
#include "core/status.h"

/* ---- best-fit bins: open sequences grouped by the room they have left ---- */

typedef struct {
    uint32_t *tree;   /* counts of open bins per room, as a segment tree over [0, size) */
    size_t size;      /* a power of two > seq_len */
    int64_t *head;    /* per room: an open bin with that room, -1 when none */
    int64_t *next;    /* per bin: the next bin with the same room */
    size_t next_cap;
} bins;

static void bins_count(bins *b, uint32_t room, int d) {
    for (size_t i = b->size + room; i; i >>= 1) b->tree[i] = (uint32_t)((int64_t)b->tree[i] + d);
}

/* The smallest room in [need, hi) within node's range [lo, hi) that an open bin has; -1 when none.
 * Only one path partly overlaps [need, …), so this is O(log seq_len). */
static int64_t find_room(const bins *b, size_t node, size_t lo, size_t hi, uint32_t need) {
    if (hi <= need || !b->tree[node]) return -1;
    if (hi - lo == 1) return (int64_t)lo;
    size_t mid = (lo + hi) / 2;
    int64_t r = find_room(b, 2 * node, lo, mid, need);
    return r >= 0 ? r : find_room(b, 2 * node + 1, mid, hi, need);
}

static int64_t bins_find(const bins *b, uint32_t need) { return find_room(b, 1, 0, b->size, need); }

void pk_plan_free(pk_plan_t *plan) {
    if (!plan) return;
    free(plan->pieces);
    memset(plan, 0, sizeof *plan);
}

typedef struct {
    uint32_t len;
    uint64_t key, idx;
} order_key;

static int cmp_order(const void *a, const void *b) {
    const order_key *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int cmp_placed(const void *a, const void *b) {
    const pk_piece *x = a, *y = b;
    if (x->seq != y->seq) return x->seq < y->seq ? -1 : 1;
    return x->start < y->start ? -1 : x->start > y->start;
}

static int make_pieces(const size_t *lens, size_t n, const pk_options *o, pk_piece **out, size_t *np, pk_report *rep) {
    size_t cap = 0, k = 0;
    pk_piece *p = NULL;
    const uint32_t N = o->seq_len;
    for (size_t i = 0; i < n; i++) {
        size_t len = lens[i];
        rep->docs++;
        if (!len) { rep->docs_empty++; continue; }
        if (len > N && o->drop_long) { rep->docs_dropped++; rep->dropped_tokens += len; continue; }
        if (len > N) rep->docs_split++;
        for (size_t off = 0; off < len; off += N) {
            if (rt_grow((void **)&p, &cap, k + 1, sizeof *p)) { free(p); return RT_ENOMEM; }
            uint32_t l = (uint32_t)(len - off < N ? len - off : N);
            uint32_t fl = (off ? SHARD_DOC_CONT_PREV : 0) | (off + l < len ? SHARD_DOC_CONT_NEXT : 0);
            p[k++] = (pk_piece){.doc = i, .offset = (uint32_t)off, .len = l, .flags = fl};
            rep->tokens += l;
        }
    }
    *out = p;
    *np = k;
    return 0;
}

int pk_plan(const size_t *lens, size_t n, const pk_options *o, pk_plan_t *plan, pk_report *rep) {
    memset(plan, 0, sizeof *plan);
    if (!o->seq_len || o->seq_len > SHARD_MAX_SEQ_LEN)
        return rt_fail(RT_EINVAL, "sequence length %u, expected 1..%u", o->seq_len, SHARD_MAX_SEQ_LEN);
    for (size_t i = 0; i < n; i++)
        if (lens[i] > UINT32_MAX) return rt_fail(RT_ERANGE, "document %zu has %zu tokens", i, lens[i]);
    pk_piece *p;
    size_t np;
    int rc = make_pieces(lens, n, o, &p, &np, rep);
    if (rc) return rc;
    rep->pieces = np;
    const uint32_t N = o->seq_len;
    bins b = {0};
    b.size = 1;
    while (b.size <= N) b.size *= 2;
    order_key *ord = rt_malloc((np ? np : 1) * sizeof *ord);
    b.tree = rt_calloc(2 * b.size, sizeof *b.tree);
    b.head = rt_malloc(b.size * sizeof *b.head);
    uint32_t *room = NULL;       /* per bin */
    uint64_t *perm = NULL;
    size_t room_cap = 0;
    uint64_t nb = 0, rng = o->seed ^ 0x5EED5EED5EED5EEDull;
    rc = (!ord || !b.tree || !b.head) ? RT_ENOMEM : 0;
    if (!rc) {
        for (size_t r = 0; r < b.size; r++) b.head[r] = -1;
        for (size_t i = 0; i < np; i++) ord[i] = (order_key){p[i].len, rt_splitmix64(&rng), i};
        if (np) qsort(ord, np, sizeof *ord, cmp_order);
    }
    for (size_t k = 0; !rc && k < np; k++) {
        pk_piece *x = &p[ord[k].idx];
        int64_t r = bins_find(&b, x->len), bin;
        if (r >= 0) {
            bin = b.head[r];
            b.head[r] = b.next[bin];
            bins_count(&b, (uint32_t)r, -1);
        } else {
            if (rt_grow((void **)&room, &room_cap, nb + 1, sizeof *room) ||
                rt_grow((void **)&b.next, &b.next_cap, nb + 1, sizeof *b.next)) { rc = RT_ENOMEM; break; }
            bin = (int64_t)nb++;
            room[bin] = N;
        }
        x->seq = (uint64_t)bin;
        x->start = N - room[bin];
        room[bin] -= x->len;
        if (room[bin]) {
            b.next[bin] = b.head[room[bin]];
            b.head[room[bin]] = bin;
            bins_count(&b, room[bin], +1);
        }
    }
    if (!rc && !(perm = rt_malloc((nb ? nb : 1) * sizeof *perm))) rc = RT_ENOMEM;
    if (!rc) {
        for (uint64_t i = 0; i < nb; i++) perm[i] = i;
        for (uint64_t i = nb; i > 1; i--) {
            uint64_t j = rt_splitmix64(&rng) % i, t = perm[i - 1];
            perm[i - 1] = perm[j];
            perm[j] = t;
        }
        for (size_t i = 0; i < np; i++) p[i].seq = perm[p[i].seq];
        if (np) qsort(p, np, sizeof *p, cmp_placed);
        plan->pieces = p;
        plan->n_pieces = np;
        plan->n_seqs = nb;
        rep->seqs = nb;
        rep->pad_tokens = nb * N - rep->tokens;
        p = NULL;
    }
    free(p);
    free(ord);
    free(b.tree);
    free(b.head);
    free(b.next);
    free(room);
    free(perm);
    return rc;
}

/* ---- writing ---- */

static char *shard_name(const char *dir, size_t i) {
    char name[32];
    snprintf(name, sizeof name, "shard-%05zu.bin", i);
    return rt_path_join(dir, name);
}

/* *created says whether this call made the directory. */
static int ensure_dir(const char *dir, bool *created) {
    *created = false;
    if (rt_is_dir(dir)) return 0;
    if (mkdir(dir, 0755) != 0) {
        if (errno == EEXIST && rt_is_dir(dir)) return 0;
        return rt_fail(RT_EIO, "cannot create the directory %s: %s", dir, strerror(errno));
    }
    *created = true;
    return 0;
}

void pk_remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        unsigned k;
        char tail;
        if ((sscanf(e->d_name, "shard-%5u.bi%c", &k, &tail) == 2 && tail == 'n' && strlen(e->d_name) == 16) ||
            !strcmp(e->d_name, "index.json"))
            unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
    rt_atomic_clean_stale(dir, "", true);
    rmdir(dir); /* fails, harmlessly, when something else is in it */
}

static int write_index(const char *dir, const pk_options *o, const json_t *meta, json_t *shards, const pk_report *rep) {
    json_t *j = json_pack("{s:s,s:i,s:I,s:I,s:I,s:s,s:I,s:b,s:O,s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}}",
                          "format", "retort-shards", "version", SHARD_VERSION, "seq_len", (json_int_t)o->seq_len,
                          "vocab_size", (json_int_t)o->vocab_size, "pad_id", (json_int_t)o->pad_id, "dtype",
                          o->vocab_size <= 65536 ? "uint16" : "uint32", "seed", (json_int_t)o->seed, "drop_long",
                          o->drop_long, "shards", shards, "stats", "docs", (json_int_t)rep->docs, "docs_split",
                          (json_int_t)rep->docs_split, "docs_dropped", (json_int_t)rep->docs_dropped, "docs_empty",
                          (json_int_t)rep->docs_empty, "pieces", (json_int_t)rep->pieces, "seqs", (json_int_t)rep->seqs,
                          "tokens", (json_int_t)rep->tokens, "loss_tokens", (json_int_t)rep->loss_tokens, "pad_tokens",
                          (json_int_t)rep->pad_tokens, "dropped_tokens", (json_int_t)rep->dropped_tokens);
    if (!j) return rt_fail(RT_ENOMEM, "building index.json");
    if (o->top_k) {
        json_object_set_new(j, "top_k", json_integer(o->top_k));
        json_object_set_new(j, "teacher_vocab", json_integer(o->teacher_vocab ? o->teacher_vocab : o->vocab_size));
    }
    if (meta) json_object_update(j, (json_t *)meta);
    char *txt = json_dumps(j, JSON_INDENT(2));
    json_decref(j);
    char *path = rt_path_join(dir, "index.json");
    int rc = (!txt || !path) ? RT_ENOMEM : rt_atomic_write_text(path, txt);
    free(txt);
    free(path);
    return rc;
}

static int write_shards(const char *dir, const pk_doc *docs, const pk_plan_t *plan, const pk_options *o, json_t *shards,
                        pk_report *rep) {
    const uint32_t N = o->seq_len;
    const uint32_t K = o->top_k;
    uint64_t row = (uint64_t)N * (K ? 1 + 8 * (uint64_t)K : 1);
    uint64_t per = o->shard_seqs ? o->shard_seqs : ((1u << 28) / row ? (1u << 28) / row : 1);
    int32_t *tok = rt_malloc((size_t)N * sizeof *tok);
    uint8_t *mask = rt_malloc(N);
    shard_doc *sd = rt_malloc((size_t)N * sizeof *sd);
    uint8_t *tn = K ? rt_malloc(N) : NULL;
    int32_t *tid = K ? rt_malloc((size_t)N * K * sizeof *tid) : NULL;
    float *tlp = K ? rt_malloc((size_t)N * K * sizeof *tlp) : NULL;
    int rc = (!tok || !mask || !sd || (K && (!tn || !tid || !tlp))) ? RT_ENOMEM : 0;
    shard_writer *w = NULL;
    size_t k = 0, nshard = 0;
    uint64_t shard_tokens = 0, shard_loss = 0;
    for (uint64_t s = 0; !rc && s < plan->n_seqs; s++) {
        if (!w) {
            char *path = shard_name(dir, nshard);
            rc = path ? shard_writer_open(path, N, o->vocab_size, o->pad_id, &w) : RT_ENOMEM;
            free(path);
            if (!rc && K) rc = shard_writer_set_topk(w, K, o->teacher_vocab ? o->teacher_vocab : o->vocab_size);
            if (rc) break;
        }
        for (uint32_t i = 0; i < N; i++) tok[i] = (int32_t)o->pad_id;
        memset(mask, 0, N);
        if (K) memset(tn, 0, N);
        size_t nd = 0;
        for (; k < plan->n_pieces && plan->pieces[k].seq == s; k++) {
            const pk_piece *x = &plan->pieces[k];
            const pk_doc *d = &docs[x->doc];
            memcpy(tok + x->start, d->tokens + x->offset, (size_t)x->len * sizeof *tok);
            memcpy(mask + x->start, d->mask + x->offset, x->len);
            if (K && d->top_n) {
                memcpy(tn + x->start, d->top_n + x->offset, x->len);
                memcpy(tid + (size_t)x->start * K, d->top_ids + (size_t)x->offset * K, (size_t)x->len * K * sizeof *tid);
                memcpy(tlp + (size_t)x->start * K, d->top_lps + (size_t)x->offset * K, (size_t)x->len * K * sizeof *tlp);
            }
            sd[nd++] = (shard_doc){x->doc, 0, x->start, x->len, x->offset, x->flags};
            shard_tokens += x->len;
            for (uint32_t i = 0; i < x->len; i++) shard_loss += mask[x->start + i];
        }
        if ((rc = shard_writer_add_topk(w, tok, mask, sd, nd, tn, tid, tlp))) {
            rc = rt_errorf(rc, "document %llu", (unsigned long long)sd[nd ? nd - 1 : 0].doc_id);
            break;
        }
        if (shard_writer_seqs(w) == per || s + 1 == plan->n_seqs) {
            uint64_t seqs = shard_writer_seqs(w);
            rc = shard_writer_finish(w);
            w = NULL;
            if (rc) break;
            char name[32];
            snprintf(name, sizeof name, "shard-%05zu.bin", nshard++);
            json_array_append_new(shards, json_pack("{s:s,s:I,s:I,s:I}", "file", name, "seqs", (json_int_t)seqs, "tokens",
                                                    (json_int_t)shard_tokens, "loss_tokens", (json_int_t)shard_loss));
            rep->loss_tokens += shard_loss;
            shard_tokens = shard_loss = 0;
        }
    }
    shard_writer_abort(w);
    rep->shards = nshard;
    free(tok);
    free(mask);
    free(sd);
    free(tn);
    free(tid);
    free(tlp);
    return rc;
}

int pk_write_dir(const char *dir, const pk_doc *docs, size_t n, const pk_options *o, const json_t *meta, pk_report *rep) {
    memset(rep, 0, sizeof *rep);
    size_t *lens = rt_malloc((n ? n : 1) * sizeof *lens);
    if (!lens) return RT_ENOMEM;
    for (size_t i = 0; i < n; i++) lens[i] = docs[i].len;
    pk_plan_t plan;
    int rc = pk_plan(lens, n, o, &plan, rep);
    free(lens);
    if (rc) return rc;
    json_t *shards = json_array();
    if (!shards) rc = RT_ENOMEM;
    bool created = false;
    if (!rc) rc = ensure_dir(dir, &created);
    if (!rc && !created) { /* temporaries of a pack that was killed here */
        rt_atomic_clean_stale(dir, "shard-", true);
        rt_atomic_clean_stale(dir, "index.json", false);
    }
    if (!rc) rc = write_shards(dir, docs, &plan, o, shards, rep);
    if (!rc) rc = write_index(dir, o, meta, shards, rep);
    if (!rc) /* shard files an earlier pack left beyond the new count */
        for (size_t i = rep->shards;; i++) {
            char *path = shard_name(dir, i);
            int gone = !path || unlink(path) != 0;
            free(path);
            if (gone) break;
        }
    if (rc && created) pk_remove_dir(dir);
    json_decref(shards);
    pk_plan_free(&plan);
    return rc ? rt_errorf(rc, "writing shards to %s", dir) : 0;
}
