/* core/alloc: the large-buffer allocator (rt_big_alloc / rt_big_free) and rt_prefault.
 * Expected values are the contract's own, checked through the kernel's view of the memory:
 * mincore(2) says which pages are resident, a fresh anonymous mapping reads as zero, and an
 * unmapped page is ENOMEM to mincore. */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/alloc.h"
#include "testutil.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static size_t page(void) { return (size_t)sysconf(_SC_PAGESIZE); }

/* How many of the pages under [p, p + n) are resident; -1 when one of them is not mapped. */
static long resident_pages(const void *p, size_t n) {
    uintptr_t a = (uintptr_t)p / page() * page(), b = ((uintptr_t)p + n + page() - 1) / page() * page();
    size_t np = (b - a) / page();
    unsigned char *v = malloc(np);
    cr_assert(v);
    long r = 0;
    if (mincore((void *)a, b - a, v) != 0) r = -1;
    else for (size_t i = 0; i < np; i++) r += v[i] & 1;
    free(v);
    return r;
}

static void skip_without_populate(void) {
    void *m = mmap(NULL, page(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert(m != MAP_FAILED);
    int ok = madvise(m, page(), MADV_POPULATE_WRITE) == 0;
    munmap(m, page());
    if (!ok) cr_skip_test("skipped: this kernel has no MADV_POPULATE_WRITE (Linux 5.14+)");
}

Test(alloc, big_buffers_are_zero_aligned_and_writable_at_sizes_off_the_page) {
    size_t sizes[] = {0, 1, 63, 4095, 4096, 4097, 65536 + 3, ((size_t)3 << 20) + 5};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        size_t n = sizes[k];
        unsigned char *p = rt_big_alloc(n);
        cr_assert(p, "%zu bytes: %s", n, rt_errmsg());
        cr_assert_eq((uintptr_t)p % 64, 0, "%zu bytes at %p: not 64-byte aligned", n, (void *)p);
        for (size_t i = 0; i < n; i++) cr_assert_eq(p[i], 0, "%zu bytes: byte %zu is %d", n, i, p[i]);
        for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 7 + 1);
        for (size_t i = 0; i < n; i++) cr_assert_eq(p[i], (unsigned char)(i * 7 + 1));
        rt_big_free(p);
    }
    rt_big_free(NULL);
}

Test(alloc, big_free_gives_the_pages_back) {
    size_t n = 10 * page() + 17;
    char *p = rt_big_alloc(n);
    cr_assert(p);
    memset(p, 1, n);
    cr_assert_geq(resident_pages(p, n), 10);
    rt_big_free(p);
    cr_assert_eq(resident_pages(p, n), -1, "the pages are still mapped after rt_big_free");
    cr_assert_eq(errno, ENOMEM);
}

Test(alloc, impossible_big_sizes_are_out_of_memory) {
    size_t sizes[] = {SIZE_MAX, SIZE_MAX - 63, SIZE_MAX / 4};   /* the header overflows; no such address space */
    for (size_t k = 0; k < 3; k++) {
        rt_errclear();
        cr_assert_null(rt_big_alloc(sizes[k]), "%zu bytes were allocated", sizes[k]);
        cr_assert(strstr(rt_errmsg(), "out of memory"), "message: %s", rt_errmsg());
    }
}

Test(alloc, prefault_makes_every_page_resident_and_keeps_the_contents) {
    skip_without_populate();
    size_t n = ((size_t)5 << 20) + 123;
    unsigned char *p = rt_big_alloc(n);
    cr_assert(p);
    p[100] = 42, p[n / 2] = 43, p[n - 1] = 44;
    rt_prefault(p + 1, n - 2);   /* an unaligned range: its first and last pages count whole */
    long pages = (long)(((uintptr_t)p + n + page() - 1) / page() - (uintptr_t)p / page());
    cr_assert_eq(resident_pages(p, n), pages);
    for (size_t i = 0; i < n; i++) {
        unsigned char want = i == 100 ? 42 : i == n / 2 ? 43 : i == n - 1 ? 44 : 0;
        cr_assert_eq(p[i], want, "byte %zu: %d, want %d", i, p[i], want);
    }
    rt_big_free(p);
}

Test(alloc, prefault_of_heap_memory_keeps_the_contents) {
    char *h = malloc(1000);
    cr_assert(h);
    for (int i = 0; i < 1000; i++) h[i] = (char)i;
    rt_prefault(h + 3, 900);
    rt_prefault(h, 0);
    rt_prefault(NULL, 10);
    for (int i = 0; i < 1000; i++) cr_assert_eq(h[i], (char)i);
    free(h);
}
