/* core/alloc.h — allocation helpers that record an error message on failure.
 *
 * Each returns NULL (and records RT_ENOMEM with the size asked for) when the allocation
 * fails or the size computation overflows. Memory is released with free() — except
 * rt_big_alloc's, which is released with rt_big_free().
 *
 * Large buffers that a loader fills once, right away (weights widened to f32):
 * rt_big_alloc(n) maps n bytes (0 is fine) straight from the kernel, not the heap: 64-byte
 * aligned, zero, given back to the system by rt_big_free(p) (NULL is fine). Its pages are
 * not faulted in yet. rt_prefault(p, n) faults in for writing, in one system call
 * (MADV_POPULATE_WRITE, Linux 5.14+), every page under [p, p + n) of writable memory the
 * caller owns, contents unchanged: the kernel takes and zeroes the pages in one pass instead
 * of one trap per 4 KiB page at the first write. Filling a buffer chunk by chunk, each chunk
 * prefaulted right before it is written, keeps the zeroed lines in cache
 * (kernels/convert.h: cvt_to_f32_fill). rt_prefault is advice: it does nothing where the
 * kernel lacks it or memory is short (the first writes then fault as usual).
 */
#ifndef RT_ALLOC_H
#define RT_ALLOC_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

void *rt_malloc(size_t n);
void *rt_calloc(size_t count, size_t size);
void *rt_realloc(void *p, size_t n);
void *rt_aligned_alloc(size_t alignment, size_t n); /* alignment: power of two ≥ sizeof(void*) */
char *rt_strdup(const char *s);

void *rt_big_alloc(size_t n);
void rt_big_free(void *p);
void rt_prefault(void *p, size_t n);

/* *out = a * b; false on overflow. */
static inline bool rt_mul_ok(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

/* Grows *buf (element size elsz) so that it holds at least need elements; doubles. */
int rt_grow(void **buf, size_t *cap, size_t need, size_t elsz);

#endif
