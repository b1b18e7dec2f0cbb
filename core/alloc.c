#include "core/alloc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/status.h"

void *rt_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) rt_fail(RT_ENOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void *rt_calloc(size_t count, size_t size) {
    size_t n;
    if (!rt_mul_ok(count, size, &n)) {
        rt_fail(RT_ENOMEM, "allocation of %zu x %zu bytes overflows", count, size);
        return NULL;
    }
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) rt_fail(RT_ENOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void *rt_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) rt_fail(RT_ENOMEM, "out of memory allocating %zu bytes", n);
    return q;
}

void *rt_aligned_alloc(size_t alignment, size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, alignment, n ? n : alignment)) {
        rt_fail(RT_ENOMEM, "out of memory allocating %zu bytes (aligned %zu)", n, alignment);
        return NULL;
    }
    return p;
}

char *rt_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = rt_malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

int rt_grow(void **buf, size_t *cap, size_t need, size_t elsz) {
    if (need <= *cap) return 0;
    size_t ncap = *cap ? *cap : 16;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2) return rt_fail(RT_ENOMEM, "buffer of %zu elements too large", need);
        ncap *= 2;
    }
    size_t bytes;
    if (!rt_mul_ok(ncap, elsz, &bytes)) return rt_fail(RT_ENOMEM, "buffer of %zu elements too large", need);
    void *p = rt_realloc(*buf, bytes);
    if (!p) return RT_ENOMEM;
    *buf = p;
    *cap = ncap;
    return 0;
}

/* A mapping starts with one 64-byte header holding the mapped length; the caller's bytes
 * follow it (so they are 64-byte aligned, not page aligned). */
#define BIG_HDR 64

void *rt_big_alloc(size_t n) {
    size_t len;
    if (__builtin_add_overflow(n, (size_t)BIG_HDR, &len)) {
        rt_fail(RT_ENOMEM, "out of memory allocating %zu bytes", n);
        return NULL;
    }
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        rt_fail(RT_ENOMEM, "out of memory allocating %zu bytes: %s", n, strerror(errno));
        return NULL;
    }
    memcpy(m, &len, sizeof len);
    return (char *)m + BIG_HDR;
}

void rt_big_free(void *p) {
    if (!p) return;
    char *m = (char *)p - BIG_HDR;
    size_t len;
    memcpy(&len, m, sizeof len);
    munmap(m, len);
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23   /* Linux 5.14; older kernels answer EINVAL: advice ignored */
#endif

void rt_prefault(void *p, size_t n) {
    if (!p || !n) return;
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p / pg * pg, b = ((uintptr_t)p + n - 1) / pg * pg + pg;
    (void)madvise((void *)a, b - a, MADV_POPULATE_WRITE);   /* advice: a failure changes nothing */
}
