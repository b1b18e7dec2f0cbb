/* teacher/kvcache.c — block pool with reference counts and copy on write (see kvcache.h). */
#include "teacher/kvcache.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"

struct kv_pool {
    int64_t n_blocks, block_size;
    size_t block_floats;
    float *data;            /* [n_blocks, block_floats] */
    int32_t *refs;          /* [n_blocks]; 0: free */
    int32_t *free_list;     /* stack of free block ids */
    int64_t n_free;
};

int kv_pool_create(int64_t n_blocks, int64_t block_size, size_t block_floats, kv_pool **out) {
    *out = NULL;
    if (n_blocks <= 0 || n_blocks > INT32_MAX || block_size <= 0)
        return rt_fail(RT_EINVAL, "KV cache of %lld blocks of %lld positions", (long long)n_blocks,
                       (long long)block_size);
    kv_pool *p = rt_calloc(1, sizeof *p);
    size_t bytes;
    if (!p) return RT_ENOMEM;
    p->n_blocks = n_blocks;
    p->block_size = block_size;
    p->block_floats = block_floats;
    p->refs = rt_calloc((size_t)n_blocks, sizeof *p->refs);
    p->free_list = rt_malloc((size_t)n_blocks * sizeof *p->free_list);
    if (block_floats && rt_mul_ok((size_t)n_blocks * block_floats, sizeof(float), &bytes))
        p->data = rt_aligned_alloc(64, bytes);
    if (!p->refs || !p->free_list || (block_floats && !p->data)) {
        kv_pool_free(p);
        return rt_errorf(RT_ENOMEM, "KV cache of %lld blocks", (long long)n_blocks);
    }
    for (int64_t i = 0; i < n_blocks; i++) p->free_list[i] = (int32_t)(n_blocks - 1 - i);   /* block 0 first */
    p->n_free = n_blocks;
    *out = p;
    return 0;
}

void kv_pool_free(kv_pool *p) {
    if (!p) return;
    free(p->data);
    free(p->refs);
    free(p->free_list);
    free(p);
}

float *kv_pool_data(kv_pool *p) { return p->data; }
int64_t kv_pool_block_size(const kv_pool *p) { return p->block_size; }
size_t kv_pool_block_floats(const kv_pool *p) { return p->block_floats; }
int64_t kv_pool_blocks(const kv_pool *p) { return p->n_blocks; }
int64_t kv_pool_free_blocks(const kv_pool *p) { return p->n_free; }
int kv_pool_refcount(const kv_pool *p, int32_t block) { return p->refs[block]; }
int64_t kv_blocks_for(const kv_pool *p, int64_t len) { return (len + p->block_size - 1) / p->block_size; }

static int take_block(kv_pool *p, int32_t *out) {
    if (p->n_free == 0) return rt_fail(RT_ERANGE, "KV cache full (%lld blocks in use)", (long long)p->n_blocks);
    *out = p->free_list[--p->n_free];
    p->refs[*out] = 1;
    return 0;
}

static void drop_block(kv_pool *p, int32_t b) {
    if (--p->refs[b] == 0) p->free_list[p->n_free++] = b;
}

static int table_room(kv_seq *s, int64_t n) {
    size_t cap = (size_t)s->cap_blocks;
    if (rt_grow((void **)&s->blocks, &cap, (size_t)n, sizeof *s->blocks)) return RT_ENOMEM;
    s->cap_blocks = (int64_t)cap;
    return 0;
}

int kv_seq_reserve(kv_pool *p, kv_seq *s, int64_t new_len) {
    int64_t need = kv_blocks_for(p, new_len);
    if (need > s->n_blocks) {
        int rc = table_room(s, need);
        if (rc) return rc;
    }
    /* copy on write: shared blocks that positions [len, new_len) fall in */
    for (int64_t b = s->len / p->block_size; b < s->n_blocks && b * p->block_size < new_len; b++) {
        int32_t old = s->blocks[b], nb = -1;
        if (p->refs[old] == 1) continue;
        int rc = take_block(p, &nb);
        if (rc) return rc;
        if (p->data)
            memcpy(p->data + (size_t)nb * p->block_floats, p->data + (size_t)old * p->block_floats,
                   p->block_floats * sizeof(float));
        drop_block(p, old);
        s->blocks[b] = nb;
    }
    while (s->n_blocks < need) {
        int rc = take_block(p, &s->blocks[s->n_blocks]);
        if (rc) return rc;
        s->n_blocks++;
    }
    return 0;
}

int kv_seq_fork(kv_pool *p, const kv_seq *src, kv_seq *dst) {
    *dst = (kv_seq){0};
    if (src->n_blocks && table_room(dst, src->n_blocks)) return RT_ENOMEM;
    for (int64_t b = 0; b < src->n_blocks; b++) {
        dst->blocks[b] = src->blocks[b];
        p->refs[src->blocks[b]]++;
    }
    dst->n_blocks = src->n_blocks;
    dst->len = src->len;
    return 0;
}

void kv_seq_release(kv_pool *p, kv_seq *s) {
    for (int64_t b = 0; b < s->n_blocks; b++) drop_block(p, s->blocks[b]);
    free(s->blocks);
    *s = (kv_seq){0};
}

int kv_check_device_batch(const kv_pool *p, int64_t bs, int64_t n_blocks, const char *init, kv_seq *const *seqs,
                          const int32_t *n_new, int64_t n_seqs, const int32_t *tokens, int64_t V, int64_t max_pos,
                          int64_t *T) {
    if (n_seqs <= 0) return rt_fail(RT_EINVAL, "forward of %lld sequences", (long long)n_seqs);
    if (!bs || kv_pool_block_size(p) != bs || kv_pool_block_floats(p) != 0 || kv_pool_blocks(p) > n_blocks)
        return rt_fail(RT_EINVAL, "the KV cache's blocks were not made for this model's GPU cache (%s)", init);
    *T = 0;
    for (int64_t s = 0; s < n_seqs; s++) {
        if (n_new[s] <= 0) return rt_fail(RT_EINVAL, "sequence %lld: %d new tokens", (long long)s, n_new[s]);
        int64_t end = seqs[s]->len + n_new[s];
        if (end > max_pos)
            return rt_fail(RT_ERANGE, "sequence of %lld positions exceeds max_position_embeddings %lld",
                           (long long)end, (long long)max_pos);
        *T += n_new[s];
    }
    for (int64_t t = 0; t < *T; t++)
        if (tokens[t] < 0 || tokens[t] >= V)
            return rt_fail(RT_EINVAL, "token %d outside the vocabulary of %lld", tokens[t], (long long)V);
    return 0;
}
