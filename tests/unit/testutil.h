/* tests/unit/testutil.h — helpers shared by the C unit tests (header-only).
 *
 * ref_open(): opens REF_DIR/<name>, written by a tests/ref/gen_*.py script from an
 * independent reference; skips the test with the reason when it is absent.
 * tmp_dir(): a fresh directory under /tmp for the calling test (caller frees the string).
 */
#ifndef RT_TESTUTIL_H
#define RT_TESTUTIL_H

#include <criterion/criterion.h>
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

#endif
