/* core/status, core/threadpool, core/json, core/fsutil. */
#include <pthread.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/json.h"
#include "core/threadpool.h"
#include "testutil.h"

Test(status, context_is_prefixed_and_code_kept) {
    rt_errclear();
    int rc = rt_fail(RT_EFORMAT, "tensor %s: bad shape", "w");
    rc = rt_errorf(rc, "loading %s", "model/");
    cr_assert_eq(rc, RT_EFORMAT);
    cr_assert_str_eq(rt_errmsg(), "loading model/: tensor w: bad shape");
    rt_errclear();
    cr_assert_eq(rt_errorf(RT_EIO, "only context"), RT_EIO);
    cr_assert_str_eq(rt_errmsg(), "only context");
    cr_assert_str_eq(rt_strerror(RT_ENOMEM), "out of memory");
}

Test(status, long_messages_are_truncated_not_overflowed) {
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    rt_fail(RT_EIO, "%s", big);
    rt_errorf(RT_EIO, "%s", big);
    cr_assert_eq(strlen(rt_errmsg()), RT_ERRMSG_MAX - 1);
}

static void *other_thread(void *arg) {
    rt_fail(RT_EIO, "from the other thread");
    return NULL;
}

Test(status, messages_are_per_thread) {
    rt_fail(RT_EFORMAT, "mine");
    pthread_t t;
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, NULL);
    cr_assert_str_eq(rt_errmsg(), "mine");
}

typedef struct { int *hits; } hit_ctx;
static void count_hits(void *vctx, size_t b, size_t e, int thread) {
    hit_ctx *c = vctx;
    for (size_t i = b; i < e; i++) __atomic_add_fetch(&c->hits[i], 1, __ATOMIC_RELAXED);
}

Test(threadpool, every_index_runs_exactly_once) {
    for (int nt = 1; nt <= 5; nt++) {
        tp_pool *p;
        cr_assert(!tp_create(nt, &p));
        cr_assert_eq(tp_size(p), nt);
        static const size_t sizes[] = {0, 1, 2, 3, 7, 64, 1001};
        for (int rep = 0; rep < 20; rep++) {
            for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
                int *hits = calloc(sizes[k] + 1, sizeof *hits);
                hit_ctx c = {hits};
                tp_parallel_for(p, sizes[k], count_hits, &c);
                for (size_t i = 0; i < sizes[k]; i++) cr_assert_eq(hits[i], 1, "n=%zu threads=%d index %zu", sizes[k], nt, i);
                free(hits);
            }
        }
        tp_free(p);
    }
    int hits[10] = {0};
    hit_ctx c = {hits};
    tp_parallel_for(NULL, 10, count_hits, &c);
    for (int i = 0; i < 10; i++) cr_assert_eq(hits[i], 1);
    tp_free(NULL);
}

Test(json, getters_check_types_and_defaults) {
    json_t *j;
    const char *t = "{\"i\":3,\"r\":2.5,\"b\":true,\"s\":\"x\",\"n\":null,\"fi\":4.0}";
    cr_assert(!rt_json_loadb(t, strlen(t), "t", &j));
    int64_t i;
    double d;
    bool b;
    const char *s;
    cr_assert(!rt_json_get_int(j, "i", 0, &i) && i == 3);
    cr_assert(!rt_json_get_int(j, "fi", 0, &i) && i == 4);
    cr_assert(!rt_json_get_int(j, "missing", 7, &i) && i == 7);
    cr_assert(!rt_json_get_int(j, "n", 8, &i) && i == 8);
    cr_assert_eq(rt_json_get_int(j, "r", 0, &i), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "\"r\""));
    cr_assert(!rt_json_get_num(j, "i", 0, &d) && d == 3.0);
    cr_assert(!rt_json_get_bool(j, "b", false, &b) && b);
    cr_assert_eq(rt_json_get_bool(j, "s", false, &b), RT_EFORMAT);
    cr_assert(!rt_json_get_str(j, "s", NULL, &s) && !strcmp(s, "x"));
    cr_assert_eq(rt_json_get_str(j, "i", NULL, &s), RT_EFORMAT);
    json_decref(j);
    cr_assert_eq(rt_json_loadb("{\"a\":1,\"a\":2}", 13, "dup", &j), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "dup"));
}

Test(fsutil, read_missing_file_names_it) {
    char *b;
    size_t n;
    cr_assert_eq(rt_read_file("/nonexistent/file.txt", &b, &n), RT_EIO);
    cr_assert(strstr(rt_errmsg(), "/nonexistent/file.txt"));
}

Test(fsutil, atomic_abort_leaves_the_old_file) {
    char *dir = tmp_dir(), *p = rt_path_join(dir, "f");
    rt_atomic_file *af;
    cr_assert(!rt_atomic_open(p, &af));
    cr_assert(!rt_atomic_write(af, "old", 3));
    cr_assert(!rt_atomic_commit(af));
    cr_assert(!rt_atomic_open(p, &af));
    cr_assert(!rt_atomic_write(af, "new!", 4));
    rt_atomic_abort(af);
    char *b;
    size_t n;
    cr_assert(!rt_read_file(p, &b, &n));
    cr_assert(n == 3 && !memcmp(b, "old", 3));
    free(b);
    unlink(p);
    cr_assert_eq(rmdir(dir), 0, "temporary file left behind");
    free(p);
    free(dir);
    char *j = rt_path_join("a//", "b");
    cr_assert_str_eq(j, "a/b");
    free(j);
}
