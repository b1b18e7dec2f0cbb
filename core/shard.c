#include "core/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_INLINE_ALL /* header-only: no library to link */
#include <xxhash.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/status.h"

static int host_is_le(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void wr64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }

/* ---- reader ---- */

struct shard_file {
    shard_info info;
    const uint8_t *tokens, *mask;
    const uint8_t *topk;  /* the top-k blocks (flag bit 0), else NULL */
    shard_doc *docs;      /* n_docs, copied out of the file */
    uint64_t *seq_first;  /* n_seqs + 1: docs of seq i are [seq_first[i], seq_first[i+1]) */
    void *map;            /* munmap'd on close when non-NULL */
    size_t map_len;
};

typedef struct {
    uint64_t tok_bytes, mask_off, docs_off, topk_off, topk_stride, total;
} layout;

static int compute_layout(const shard_info *h, layout *l) {
    uint64_t n;
    if (__builtin_mul_overflow(h->n_seqs, (uint64_t)h->seq_len, &n) ||
        __builtin_mul_overflow(n, (uint64_t)h->dtype_bytes, &l->tok_bytes))
        return rt_fail(RT_EFORMAT, "%llu sequences of %u tokens overflow the file size", (unsigned long long)h->n_seqs,
                       h->seq_len);
    l->mask_off = SHARD_HEADER_BYTES + l->tok_bytes;
    uint64_t mask_end = l->mask_off + n;
    if (mask_end < l->mask_off) return rt_fail(RT_EFORMAT, "token count overflows the file size");
    l->docs_off = (mask_end + 7) & ~(uint64_t)7;
    uint64_t db;
    if (__builtin_mul_overflow(h->n_docs, (uint64_t)SHARD_DOC_BYTES, &db) || l->docs_off + db < l->docs_off)
        return rt_fail(RT_EFORMAT, "%llu documents overflow the file size", (unsigned long long)h->n_docs);
    l->topk_off = l->total = l->docs_off + db;
    l->topk_stride = 0;
    if (h->top_k) {
        uint64_t tb;
        l->topk_stride = (uint64_t)h->seq_len * (1 + 8 * (uint64_t)h->top_k);
        if (__builtin_mul_overflow(h->n_seqs, l->topk_stride, &tb) || l->total + tb < l->total)
            return rt_fail(RT_EFORMAT, "the top-k section overflows the file size");
        l->total += tb;
    }
    return 0;
}

static int read_header(const uint8_t *p, size_t len, shard_info *h, layout *l) {
    if (len < SHARD_HEADER_BYTES)
        return rt_fail(RT_EFORMAT, "file is %zu bytes, shorter than the %d-byte header", len, SHARD_HEADER_BYTES);
    if (memcmp(p, SHARD_MAGIC, 8)) {
        char hex[40];
        for (int i = 0; i < 8; i++) snprintf(hex + 3 * i, 4, "%02x ", p[i]);
        hex[23] = 0;
        return rt_fail(RT_EFORMAT, "magic is %s, expected 52 54 53 48 41 52 44 00 (\"RTSHARD\\0\"): not a retort shard", hex);
    }
    h->version = rd32(p + 8);
    h->dtype_bytes = rd32(p + 12);
    h->seq_len = rd32(p + 16);
    h->vocab_size = rd32(p + 20);
    h->n_seqs = rd64(p + 24);
    h->n_docs = rd64(p + 32);
    h->pad_id = rd32(p + 40);
    uint32_t flags = rd32(p + 44);
    h->top_k = rd32(p + 56);
    h->teacher_vocab = rd32(p + 60);
    if (h->version != 1 && h->version != SHARD_VERSION)
        return rt_fail(RT_EFORMAT, "version %u, expected 1 or %d", h->version, SHARD_VERSION);
    if (h->dtype_bytes != 2 && h->dtype_bytes != 4)
        return rt_fail(RT_EFORMAT, "token dtype of %u bytes, expected 2 (uint16) or 4 (uint32)", h->dtype_bytes);
    if (h->seq_len < 1 || h->seq_len > SHARD_MAX_SEQ_LEN)
        return rt_fail(RT_EFORMAT, "sequence length %u, expected 1..%u", h->seq_len, SHARD_MAX_SEQ_LEN);
    if (h->vocab_size < 1) return rt_fail(RT_EFORMAT, "vocabulary size 0, expected at least 1");
    if (h->dtype_bytes == 2 && h->vocab_size > 65536)
        return rt_fail(RT_EFORMAT, "vocabulary size %u does not fit uint16 token ids (at most 65536)", h->vocab_size);
    if (h->pad_id >= h->vocab_size)
        return rt_fail(RT_EFORMAT, "pad id %u, expected below the vocabulary size %u", h->pad_id, h->vocab_size);
    if (h->version == 1 && flags) return rt_fail(RT_EFORMAT, "flags 0x%x, expected 0 in version 1", flags);
    if (h->version == 1 && (h->top_k || h->teacher_vocab)) return rt_fail(RT_EFORMAT, "reserved header bytes 56..63 are not zero");
    if (flags & ~(uint32_t)SHARD_FLAG_TOPK) return rt_fail(RT_EFORMAT, "flags 0x%x, expected only bit 0", flags);
    if ((flags & SHARD_FLAG_TOPK) && (h->top_k < 1 || h->top_k > SHARD_MAX_TOPK || h->teacher_vocab < 1))
        return rt_fail(RT_EFORMAT, "top-k flag with K %u and teacher vocabulary %u, expected K 1..%d and a vocabulary",
                       h->top_k, h->teacher_vocab, SHARD_MAX_TOPK);
    if (!(flags & SHARD_FLAG_TOPK) && (h->top_k || h->teacher_vocab))
        return rt_fail(RT_EFORMAT, "top-k fields (K %u, teacher vocabulary %u) without the top-k flag, expected 0",
                       h->top_k, h->teacher_vocab);
    int rc = compute_layout(h, l);
    if (rc) return rc;
    if (l->total != len)
        return rt_fail(RT_EFORMAT, "file is %zu bytes, expected %llu for %llu sequences of %u tokens and %llu documents",
                       len, (unsigned long long)l->total, (unsigned long long)h->n_seqs, h->seq_len,
                       (unsigned long long)h->n_docs);
    uint64_t want = rd64(p + 48), got = XXH64(p + SHARD_HEADER_BYTES, len - SHARD_HEADER_BYTES, 0);
    if (want != got)
        return rt_fail(RT_EFORMAT, "checksum is %016llx, expected %016llx from the header: the file is corrupt",
                       (unsigned long long)got, (unsigned long long)want);
    return 0;
}

static uint32_t token_at(const shard_file *f, uint64_t k) {
    const uint8_t *p = f->tokens + k * f->info.dtype_bytes;
    return f->info.dtype_bytes == 2 ? (uint32_t)p[0] | (uint32_t)p[1] << 8 : rd32(p);
}

/* Positions [a, b) of sequence s are padding: pad id, mask 0. */
static int check_padding(const shard_file *f, uint64_t s, uint32_t a, uint32_t b) {
    for (uint32_t k = a; k < b; k++) {
        uint64_t i = s * f->info.seq_len + k;
        if (f->mask[i]) return rt_fail(RT_EFORMAT, "sequence %llu position %u: mask 1 outside every document, expected 0",
                                       (unsigned long long)s, k);
        if (token_at(f, i) != f->info.pad_id)
            return rt_fail(RT_EFORMAT, "sequence %llu position %u: token %u outside every document, expected pad id %u",
                           (unsigned long long)s, k, token_at(f, i), f->info.pad_id);
        if (f->topk && f->topk[s * f->info.seq_len * (1 + 8 * (uint64_t)f->info.top_k) + k])
            return rt_fail(RT_EFORMAT, "sequence %llu position %u: teacher top-k outside every document, expected none",
                           (unsigned long long)s, k);
    }
    return 0;
}

static float rdf32(const uint8_t *p) {
    uint32_t u = rd32(p);
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static int check_topk(const shard_file *f) {
    const shard_info *h = &f->info;
    uint64_t N = h->seq_len, K = h->top_k, stride = N * (1 + 8 * K);
    for (uint64_t s = 0; s < h->n_seqs; s++) {
        const uint8_t *b = f->topk + s * stride, *ids = b + N, *lps = b + N + 4 * N * K;
        for (uint64_t t = 0; t < N; t++) {
            if (b[t] > K)
                return rt_fail(RT_EFORMAT, "sequence %llu position %llu: %u teacher alternatives, expected at most %llu",
                               (unsigned long long)s, (unsigned long long)t, b[t], (unsigned long long)K);
            for (uint64_t a = 0; a < K; a++) {
                uint32_t id = rd32(ids + 4 * (t * K + a));
                float lp = rdf32(lps + 4 * (t * K + a));
                if (a >= b[t] ? (id || lp != 0.0f || signbit(lp)) : 0)
                    return rt_fail(RT_EFORMAT, "sequence %llu position %llu: unused top-k slot %llu is not zero",
                                   (unsigned long long)s, (unsigned long long)t, (unsigned long long)a);
                if (a < b[t] && id >= h->teacher_vocab)
                    return rt_fail(RT_EFORMAT, "sequence %llu position %llu: teacher id %u, expected below %u",
                                   (unsigned long long)s, (unsigned long long)t, id, h->teacher_vocab);
                if (a < b[t] && !(isfinite(lp) && lp <= 1e-3f))
                    return rt_fail(RT_EFORMAT, "sequence %llu position %llu: teacher logprob %g, expected finite and <= 0",
                                   (unsigned long long)s, (unsigned long long)t, (double)lp);
            }
        }
    }
    return 0;
}

static int check_body(shard_file *f, const uint8_t *p, const layout *l) {
    const shard_info *h = &f->info;
    uint64_t n = h->n_seqs * h->seq_len;
    for (uint64_t i = 0; i < n; i++) {
        if (token_at(f, i) >= h->vocab_size)
            return rt_fail(RT_EFORMAT, "token %llu (sequence %llu) is id %u, expected below the vocabulary size %u",
                           (unsigned long long)i, (unsigned long long)(i / h->seq_len), token_at(f, i), h->vocab_size);
        if (f->mask[i] > 1)
            return rt_fail(RT_EFORMAT, "mask byte %llu is %u, expected 0 or 1", (unsigned long long)i, f->mask[i]);
    }
    for (uint64_t k = SHARD_HEADER_BYTES + l->tok_bytes + n; k < l->docs_off; k++)
        if (p[k]) return rt_fail(RT_EFORMAT, "alignment byte %llu is not zero", (unsigned long long)k);
    f->docs = rt_malloc((h->n_docs ? h->n_docs : 1) * sizeof *f->docs);
    f->seq_first = rt_malloc((h->n_seqs + 1) * sizeof *f->seq_first);
    if (!f->docs || !f->seq_first) return RT_ENOMEM;
    uint64_t s = 0;   /* the sequence whose documents come next */
    uint32_t end = 0; /* where the previous document of sequence s ended */
    f->seq_first[0] = 0;
    for (uint64_t d = 0; d < h->n_docs; d++) {
        const uint8_t *r = p + l->docs_off + d * SHARD_DOC_BYTES;
        shard_doc *x = &f->docs[d];
        *x = (shard_doc){rd64(r), rd32(r + 8), rd32(r + 12), rd32(r + 16), rd32(r + 20), rd32(r + 24)};
        if (rd32(r + 28)) return rt_fail(RT_EFORMAT, "document %llu: reserved field is not zero", (unsigned long long)d);
        if (!(x->flags & SHARD_DOC_CONT_PREV) != !x->offset)
            return rt_fail(RT_EFORMAT, "document %llu: offset %u with flags 0x%x; expected bit 0 set exactly when the "
                           "offset is not 0", (unsigned long long)d, x->offset, x->flags);
        if (x->seq >= h->n_seqs)
            return rt_fail(RT_EFORMAT, "document %llu: sequence %u, expected below %llu", (unsigned long long)d, x->seq,
                           (unsigned long long)h->n_seqs);
        if (x->len < 1 || x->start >= h->seq_len || x->len > h->seq_len - x->start)
            return rt_fail(RT_EFORMAT, "document %llu: tokens [%u, %u+%u) of sequence %u, expected a non-empty range "
                           "within its %u tokens", (unsigned long long)d, x->start, x->start, x->len, x->seq, h->seq_len);
        if (x->flags & ~(uint32_t)(SHARD_DOC_CONT_PREV | SHARD_DOC_CONT_NEXT))
            return rt_fail(RT_EFORMAT, "document %llu: flags 0x%x, expected only bits 0 and 1", (unsigned long long)d, x->flags);
        if (x->seq < s || (x->seq == s && x->start < end))
            return rt_fail(RT_EFORMAT, "document %llu (sequence %u, start %u) overlaps or precedes the one before it; "
                           "expected ordered, disjoint documents", (unsigned long long)d, x->seq, x->start);
        while (s < x->seq) { /* close sequence s */
            int rc = check_padding(f, s, end, h->seq_len);
            if (rc) return rc;
            f->seq_first[++s] = d;
            end = 0;
        }
        int rc = check_padding(f, s, end, x->start);
        if (rc) return rc;
        end = x->start + x->len;
    }
    for (; s < h->n_seqs; s++) {
        int rc = check_padding(f, s, end, h->seq_len);
        if (rc) return rc;
        f->seq_first[s + 1] = h->n_docs;
        end = 0;
    }
    return 0;
}

int shard_open_buffer(const void *buf, size_t len, shard_file **out) {
    *out = NULL;
    if (!host_is_le()) return rt_fail(RT_EUNSUPPORTED, "shards are little-endian; this host is not");
    shard_file *f = rt_calloc(1, sizeof *f);
    if (!f) return RT_ENOMEM;
    layout l;
    const uint8_t *p = buf;
    int rc = read_header(p, len, &f->info, &l);
    if (!rc) {
        f->tokens = p + SHARD_HEADER_BYTES;
        f->mask = p + l.mask_off;
        f->topk = f->info.top_k ? p + l.topk_off : NULL;
        rc = check_body(f, p, &l);
        if (!rc && f->topk) rc = check_topk(f);
    }
    if (rc) { shard_close(f); return rc; }
    *out = f;
    return 0;
}

int shard_open(const char *path, shard_file **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return rt_fail(errno == ENOENT ? RT_ENOTFOUND : RT_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return rt_fail(RT_EIO, "%s: not a regular file", path);
    }
    size_t len = (size_t)st.st_size;
    void *m = len ? mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    int e = errno;
    close(fd);
    if (m == MAP_FAILED) return rt_fail(RT_EIO, "%s: cannot map: %s", path, strerror(e));
    static const uint8_t empty[1];
    int rc = shard_open_buffer(m ? m : (const void *)empty, len, out);
    if (rc) {
        if (m) munmap(m, len);
        return rt_errorf(rc, "%s", path);
    }
    (*out)->map = m;
    (*out)->map_len = len;
    return 0;
}

void shard_close(shard_file *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->map_len);
    free(f->docs);
    free(f->seq_first);
    free(f);
}

const shard_info *shard_get_info(const shard_file *f) { return &f->info; }

void shard_read_seq(const shard_file *f, uint64_t i, int32_t *tokens, uint8_t *mask) {
    uint64_t base = i * f->info.seq_len;
    if (tokens)
        for (uint32_t k = 0; k < f->info.seq_len; k++) tokens[k] = (int32_t)token_at(f, base + k);
    if (mask) memcpy(mask, f->mask + base, f->info.seq_len);
}

const shard_doc *shard_seq_docs(const shard_file *f, uint64_t i, size_t *n) {
    *n = (size_t)(f->seq_first[i + 1] - f->seq_first[i]);
    return f->docs + f->seq_first[i];
}

const shard_doc *shard_all_docs(const shard_file *f) { return f->docs; }

void shard_read_topk(const shard_file *f, uint64_t i, uint8_t *n, int32_t *ids, float *lps) {
    uint64_t N = f->info.seq_len, K = f->info.top_k;
    if (!f->topk) { memset(n, 0, N); return; }
    const uint8_t *b = f->topk + i * N * (1 + 8 * K);
    memcpy(n, b, N);
    for (uint64_t j = 0; j < N * K; j++) {
        ids[j] = (int32_t)rd32(b + N + 4 * j);
        lps[j] = rdf32(b + N + 4 * N * K + 4 * j);
    }
}

/* ---- writer ---- */

struct shard_writer {
    rt_atomic_file *af;
    char *path;
    shard_info info;
    XXH64_state_t *hash;
    uint8_t *mask;   /* every sequence's mask so far */
    size_t mask_cap;
    uint8_t *docs;   /* serialized document records so far */
    size_t docs_cap;
    uint8_t *row;    /* one sequence of encoded token ids */
    FILE *topk;      /* the top-k blocks so far (an anonymous temporary), NULL without */
    uint8_t *tblock; /* one sequence's top-k block */
};

int shard_writer_open(const char *path, uint32_t seq_len, uint32_t vocab_size, uint32_t pad_id, shard_writer **out) {
    *out = NULL;
    if (!host_is_le()) return rt_fail(RT_EUNSUPPORTED, "shards are little-endian; this host is not");
    if (seq_len < 1 || seq_len > SHARD_MAX_SEQ_LEN)
        return rt_fail(RT_EINVAL, "sequence length %u, expected 1..%u", seq_len, SHARD_MAX_SEQ_LEN);
    if (vocab_size < 1 || pad_id >= vocab_size)
        return rt_fail(RT_EINVAL, "pad id %u must be below the vocabulary size %u", pad_id, vocab_size);
    shard_writer *w = rt_calloc(1, sizeof *w);
    if (!w) return RT_ENOMEM;
    w->info = (shard_info){SHARD_VERSION, vocab_size <= 65536 ? 2 : 4, seq_len, vocab_size, pad_id, 0, 0, 0, 0};
    w->path = rt_strdup(path);
    w->hash = XXH64_createState();
    w->row = rt_malloc((size_t)seq_len * 4);
    int rc = (!w->path || !w->hash || !w->row) ? RT_ENOMEM : 0;
    if (!rc) XXH64_reset(w->hash, 0);
    if (!rc) rc = rt_atomic_open(path, &w->af);
    uint8_t zero[SHARD_HEADER_BYTES] = {0};
    if (!rc) rc = rt_atomic_write(w->af, zero, sizeof zero);
    if (rc) { shard_writer_abort(w); return rc; }
    *out = w;
    return 0;
}

uint64_t shard_writer_seqs(const shard_writer *w) { return w->info.n_seqs; }

int shard_writer_set_topk(shard_writer *w, uint32_t k, uint32_t teacher_vocab) {
    if (w->info.n_seqs || w->topk) return rt_fail(RT_EINVAL, "shard top-k must be set before the first sequence");
    if (k < 1 || k > SHARD_MAX_TOPK || teacher_vocab < 1)
        return rt_fail(RT_EINVAL, "top-k %u (expected 1..%d), teacher vocabulary %u", k, SHARD_MAX_TOPK, teacher_vocab);
    w->tblock = rt_calloc((size_t)w->info.seq_len, 1 + 8 * (size_t)k);
    if (!w->tblock) return RT_ENOMEM;
    w->topk = tmpfile();
    if (!w->topk) return rt_fail(RT_EIO, "%s: no temporary file for the top-k: %s", w->path, strerror(errno));
    w->info.top_k = k;
    w->info.teacher_vocab = teacher_vocab;
    return 0;
}

static int encode_topk(shard_writer *w, const uint8_t *mask, const shard_doc *docs, size_t nd, const uint8_t *top_n,
                       const int32_t *top_ids, const float *top_lps) {
    const shard_info *h = &w->info;
    size_t N = h->seq_len, K = h->top_k;
    memset(w->tblock, 0, N * (1 + 8 * K));
    if (!top_n) return 0;
    size_t d = 0;
    for (size_t t = 0; t < N; t++) {
        while (d < nd && docs[d].start + docs[d].len <= t) d++;
        bool covered = d < nd && docs[d].start <= t;
        if (top_n[t] > K)
            return rt_fail(RT_EINVAL, "position %zu: %u teacher alternatives, at most %zu", t, top_n[t], K);
        if (top_n[t] && !covered) return rt_fail(RT_EINVAL, "position %zu: teacher top-k on padding", t);
        w->tblock[t] = top_n[t];
        for (size_t a = 0; a < top_n[t]; a++) {
            int32_t id = top_ids[t * K + a];
            float lp = top_lps[t * K + a];
            if (id < 0 || (uint32_t)id >= h->teacher_vocab)
                return rt_fail(RT_EINVAL, "position %zu: teacher id %d outside its vocabulary (%u)", t, id, h->teacher_vocab);
            if (!(isfinite(lp) && lp <= 1e-3f))
                return rt_fail(RT_EINVAL, "position %zu: teacher logprob %g, expected finite and <= 0", t, (double)lp);
            uint32_t u;
            memcpy(&u, &lp, 4);
            wr32(w->tblock + N + 4 * (t * K + a), (uint32_t)id);
            wr32(w->tblock + N + 4 * N * K + 4 * (t * K + a), u);
        }
    }
    (void)mask;
    return 0;
}

static int check_seq(const shard_writer *w, const int32_t *tokens, const uint8_t *mask, const shard_doc *docs, size_t nd) {
    const shard_info *h = &w->info;
    uint32_t end = 0;
    for (size_t d = 0; d <= nd; d++) {
        uint32_t start = d < nd ? docs[d].start : h->seq_len;
        if (d < nd && (docs[d].len < 1 || start < end || start >= h->seq_len || docs[d].len > h->seq_len - start))
            return rt_fail(RT_EINVAL, "document %zu of sequence %llu: [%u, +%u) is empty, out of order or past %u", d,
                           (unsigned long long)h->n_seqs, start, docs[d].len, h->seq_len);
        if (d < nd && ((docs[d].flags & ~(uint32_t)(SHARD_DOC_CONT_PREV | SHARD_DOC_CONT_NEXT)) ||
                       !(docs[d].flags & SHARD_DOC_CONT_PREV) != !docs[d].offset))
            return rt_fail(RT_EINVAL, "document %zu: flags 0x%x do not fit offset %u", d, docs[d].flags, docs[d].offset);
        for (uint32_t k = end; k < start; k++)
            if (tokens[k] != (int32_t)h->pad_id || mask[k])
                return rt_fail(RT_EINVAL, "sequence %llu position %u lies in no document but is not padding",
                               (unsigned long long)h->n_seqs, k);
        if (d < nd) end = start + docs[d].len;
    }
    for (uint32_t k = 0; k < h->seq_len; k++) {
        if (tokens[k] < 0 || (uint32_t)tokens[k] >= h->vocab_size)
            return rt_fail(RT_EINVAL, "token id %d at position %u is outside the vocabulary (%u)", tokens[k], k,
                           h->vocab_size);
        if (mask[k] > 1) return rt_fail(RT_EINVAL, "mask value %u at position %u, expected 0 or 1", mask[k], k);
    }
    return 0;
}

int shard_writer_add(shard_writer *w, const int32_t *tokens, const uint8_t *mask, const shard_doc *docs, size_t n_docs) {
    return shard_writer_add_topk(w, tokens, mask, docs, n_docs, NULL, NULL, NULL);
}

int shard_writer_add_topk(shard_writer *w, const int32_t *tokens, const uint8_t *mask, const shard_doc *docs,
                          size_t n_docs, const uint8_t *top_n, const int32_t *top_ids, const float *top_lps) {
    shard_info *h = &w->info;
    int rc = check_seq(w, tokens, mask, docs, n_docs);
    if (rc) return rc;
    if (w->topk) {
        if ((rc = encode_topk(w, mask, docs, n_docs, top_n, top_ids, top_lps))) return rc;
        size_t tb = (size_t)h->seq_len * (1 + 8 * (size_t)h->top_k);
        if (fwrite(w->tblock, 1, tb, w->topk) != tb)
            return rt_fail(RT_EIO, "%s: writing the top-k: %s", w->path, strerror(errno));
    }
    size_t nb = (size_t)h->seq_len * h->dtype_bytes;
    for (uint32_t k = 0; k < h->seq_len; k++) {
        if (h->dtype_bytes == 2) { w->row[2 * k] = (uint8_t)tokens[k]; w->row[2 * k + 1] = (uint8_t)(tokens[k] >> 8); }
        else wr32(w->row + 4 * (size_t)k, (uint32_t)tokens[k]);
    }
    size_t mlen = (size_t)(h->n_seqs + 1) * h->seq_len, dlen = (size_t)(h->n_docs + n_docs) * SHARD_DOC_BYTES;
    if (rt_grow((void **)&w->mask, &w->mask_cap, mlen, 1) || rt_grow((void **)&w->docs, &w->docs_cap, dlen ? dlen : 1, 1))
        return RT_ENOMEM;
    if ((rc = rt_atomic_write(w->af, w->row, nb))) return rc;
    XXH64_update(w->hash, w->row, nb);
    memcpy(w->mask + (size_t)h->n_seqs * h->seq_len, mask, h->seq_len);
    for (size_t d = 0; d < n_docs; d++) {
        uint8_t *r = w->docs + (size_t)(h->n_docs + d) * SHARD_DOC_BYTES;
        wr64(r, docs[d].doc_id);
        wr32(r + 8, (uint32_t)h->n_seqs);
        wr32(r + 12, docs[d].start);
        wr32(r + 16, docs[d].len);
        wr32(r + 20, docs[d].offset);
        wr32(r + 24, docs[d].flags);
        wr32(r + 28, 0);
    }
    h->n_seqs++;
    h->n_docs += n_docs;
    return 0;
}

int shard_writer_finish(shard_writer *w) {
    shard_info *h = &w->info;
    layout l;
    int rc = compute_layout(h, &l);
    size_t mlen = (size_t)h->n_seqs * h->seq_len, pad = (size_t)(l.docs_off - l.mask_off - mlen);
    uint8_t zeros[8] = {0};
    if (!rc && !(rc = rt_atomic_write(w->af, w->mask, mlen)) && !(rc = rt_atomic_write(w->af, zeros, pad)))
        rc = rt_atomic_write(w->af, w->docs, (size_t)h->n_docs * SHARD_DOC_BYTES);
    if (!rc) {
        XXH64_update(w->hash, w->mask, mlen);
        XXH64_update(w->hash, zeros, pad);
        XXH64_update(w->hash, w->docs, (size_t)h->n_docs * SHARD_DOC_BYTES);
    }
    if (!rc && w->topk) {   /* append the top-k blocks from the temporary */
        if (fflush(w->topk) != 0 || fseek(w->topk, 0, SEEK_SET) != 0)
            rc = rt_fail(RT_EIO, "%s: reading back the top-k: %s", w->path, strerror(errno));
        size_t got;
        while (!rc && (got = fread(w->tblock, 1, (size_t)h->seq_len * (1 + 8 * (size_t)h->top_k), w->topk)) > 0) {
            if (!(rc = rt_atomic_write(w->af, w->tblock, got))) XXH64_update(w->hash, w->tblock, got);
        }
        if (!rc && ferror(w->topk)) rc = rt_fail(RT_EIO, "%s: reading back the top-k", w->path);
    }
    if (!rc) {
        uint8_t hd[SHARD_HEADER_BYTES] = {0};
        memcpy(hd, SHARD_MAGIC, 8);
        wr32(hd + 8, h->version);
        wr32(hd + 12, h->dtype_bytes);
        wr32(hd + 16, h->seq_len);
        wr32(hd + 20, h->vocab_size);
        wr64(hd + 24, h->n_seqs);
        wr64(hd + 32, h->n_docs);
        wr32(hd + 40, h->pad_id);
        wr32(hd + 44, h->top_k ? SHARD_FLAG_TOPK : 0);
        wr64(hd + 48, XXH64_digest(w->hash));
        wr32(hd + 56, h->top_k);
        wr32(hd + 60, h->teacher_vocab);
        FILE *fp = rt_atomic_stream(w->af);
        if (fflush(fp) != 0 || fseek(fp, 0, SEEK_SET) != 0)
            rc = rt_fail(RT_EIO, "%s: write failed: %s", w->path, strerror(errno));
        else
            rc = rt_atomic_write(w->af, hd, sizeof hd);
    }
    if (rc) { shard_writer_abort(w); return rc; }
    rc = rt_atomic_commit(w->af);
    w->af = NULL;
    shard_writer_abort(w);
    return rc;
}

void shard_writer_abort(shard_writer *w) {
    if (!w) return;
    rt_atomic_abort(w->af);
    XXH64_freeState(w->hash);
    free(w->path);
    free(w->mask);
    free(w->docs);
    free(w->row);
    if (w->topk) fclose(w->topk);
    free(w->tblock);
    free(w);
}
