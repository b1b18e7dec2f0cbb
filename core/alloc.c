#include "core/alloc.h"

#include <stdlib.h>
#include <string.h>

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
