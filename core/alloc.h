/* core/alloc.h — allocation helpers that record an error message on failure.
 *
 * Each returns NULL (and records RT_ENOMEM with the size asked for) when the allocation
 * fails or the size computation overflows. Memory is released with free() — except
 * rt_aligned_alloc's, which is also released with free().
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

/* *out = a * b; false on overflow. */
static inline bool rt_mul_ok(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

/* Grows *buf (element size elsz) so that it holds at least need elements; doubles. */
int rt_grow(void **buf, size_t *cap, size_t need, size_t elsz);

#endif
