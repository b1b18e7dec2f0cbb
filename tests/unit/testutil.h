/* tests/unit/testutil.h — helpers shared by the C unit tests (header-only).
 *
 * ref_open(): opens REF_DIR/<name>, written by a tests/ref/gen_*.py script from an
 * independent reference; skips the test with the reason when it is absent.
 * tmp_dir(): a fresh directory under /tmp for the calling test (caller frees the string).
 * cpu_avx2_fma(): whether this CPU runs AVX2 + FMA (the kernels' AVX2 paths).
 * ref_prompt(f, tag, p, &logits): the reference prompt "<tag>.p<p>.ids" of a teacher reference
 * file (NULL past the last one) and, when logits != NULL, its "<tag>.p<p>.logits".
 */
#ifndef RT_TESTUTIL_H
#define RT_TESTUTIL_H

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"
#include "core/status.h"

static inline st_file *ref_open(const char *name) {
    const char *dir = getenv("REF_DIR");
    if (!dir) cr_skip_test("skipped: REF_DIR not set (run the suite through `make test`)");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    st_file *f = NULL;
    if (st_open(path, &f)) cr_skip_test("skipped: reference %s missing (%s)", name, rt_errmsg());
    return f;
}

static inline const st_tensor *ref_tensor(const st_file *f, const char *name) {
    const st_tensor *t = st_find(f, name);
    cr_assert(t, "reference tensor %s missing", name);
    return t;
}

static inline char *tmp_dir(void) {
    char *d = strdup("/tmp/retort-test.XXXXXX");
    cr_assert(d && mkdtemp(d), "mkdtemp failed");
    return d;
}

static inline bool cpu_avx2_fma(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

static inline const st_tensor *ref_prompt(st_file *f, const char *tag, int p, const float **logits) {
    char nm[64];
    snprintf(nm, sizeof nm, "%s.p%d.ids", tag, p);
    const st_tensor *t = st_find(f, nm);
    if (t && logits) {
        snprintf(nm, sizeof nm, "%s.p%d.logits", tag, p);
        *logits = ref_tensor(f, nm)->data;
    }
    return t;
}

#endif
