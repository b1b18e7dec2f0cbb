/* teacher/kvcache.h — a paged KV cache: a fixed pool of equal blocks shared by sequences.
 *
 * kv_pool_create() allocates n_blocks blocks of block_floats floats each, in one array
 * (block b starts at kv_pool_data() + b·block_floats); each block holds block_size token
 * positions, laid out as the model that uses it decides (teacher/dense.h: per layer, K then
 * V rows). Blocks are reference counted: kv_seq_fork() gives a second sequence the same
 * blocks (the n samples of one prompt share the prompt's blocks), and kv_seq_reserve()
 * copies a shared block before its sequence writes into it (copy on write), so a write
 * never shows through another sequence. With block_floats 0 the pool holds no data
 * (kv_pool_data() is NULL): the blocks live elsewhere (teacher/dense_cuda.h: on the GPU), and
 * their owner copies a block when kv_seq_reserve replaces a shared one in a table.
 *
 * A kv_seq is a block table and a length (positions written). Its blocks belong to the
 * pool; kv_seq_release() drops them (NULL-safe fields: a zeroed kv_seq is empty).
 * kv_seq_reserve(p, s, new_len) makes positions [0, new_len) addressable and positions
 * [s->len, new_len) writable by s alone; it does not change s->len (the writer does).
 * Errors: RT_ENOMEM (create; a block table), RT_ERANGE (no free block: the cache is full).
 * Not thread-safe: one engine thread drives a pool.
 */
#ifndef RT_TEACHER_KVCACHE_H
#define RT_TEACHER_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct kv_pool kv_pool;   /* opaque; owned by the caller of kv_pool_create */

typedef struct {
    int32_t *blocks;       /* [n_blocks] block ids (owned; released by kv_seq_release) */
    int64_t n_blocks, cap_blocks;
    int64_t len;           /* positions written */
} kv_seq;

int kv_pool_create(int64_t n_blocks, int64_t block_size, size_t block_floats, kv_pool **out);
void kv_pool_free(kv_pool *p);

float *kv_pool_data(kv_pool *p);
int64_t kv_pool_block_size(const kv_pool *p);
size_t kv_pool_block_floats(const kv_pool *p);
int64_t kv_pool_blocks(const kv_pool *p);
int64_t kv_pool_free_blocks(const kv_pool *p);
int kv_pool_refcount(const kv_pool *p, int32_t block);

/* Blocks that `len` positions occupy. */
int64_t kv_blocks_for(const kv_pool *p, int64_t len);

int kv_seq_reserve(kv_pool *p, kv_seq *s, int64_t new_len);
/* dst (empty) shares every block of src, with src's length. */
int kv_seq_fork(kv_pool *p, const kv_seq *src, kv_seq *dst);
/* The GPU engines' check of a forward batch (teacher/dense_cuda.h, teacher/ds_cuda.h): the pool
 * was laid out for a device cache of n_blocks blocks of bs positions (block_floats 0; `init`
 * names the cache's init function in the message), every sequence appends n_new[s] > 0 tokens
 * without passing max_pos, every token is below V; *T: the batch's tokens. RT_EINVAL, RT_ERANGE. */
int kv_check_device_batch(const kv_pool *p, int64_t bs, int64_t n_blocks, const char *init, kv_seq *const *seqs,
                          const int32_t *n_new, int64_t n_seqs, const int32_t *tokens, int64_t V, int64_t max_pos,
                          int64_t *T);
void kv_seq_release(kv_pool *p, kv_seq *s);

#endif
