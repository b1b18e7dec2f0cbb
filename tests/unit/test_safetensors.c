/* core/safetensors: validation of malformed headers (hand-built files), atomic writes,
 * sharded indexes. Round trips with the PyPI safetensors library are in
 * tests/ref/test_safetensors_roundtrip.py. */
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "testutil.h"

/* Builds a safetensors image: 8-byte length, the header text, then `data` bytes of 0xab. */
static size_t image(unsigned char *buf, size_t cap, const char *header, size_t data) {
    size_t h = strlen(header);
    cr_assert(8 + h + data <= cap);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    memset(buf + 8 + h, 0xab, data);
    return 8 + h + data;
}

static void expect_bad(const char *header, size_t data, const char *needle) {
    static unsigned char buf[1 << 16];
    size_t n = image(buf, sizeof buf, header, data);
    st_file *f = NULL;
    rt_errclear();
    int rc = st_open_buffer(buf, n, "x.safetensors", &f);
    cr_assert_eq(rc, RT_EFORMAT, "header %s: expected RT_EFORMAT, got %d (%s)", header, rc, rt_errmsg());
    cr_assert_null(f);
    cr_assert(strstr(rt_errmsg(), needle), "message \"%s\" should mention \"%s\"", rt_errmsg(), needle);
}

Test(safetensors, reads_a_valid_image) {
    unsigned char buf[256];
    size_t n = image(buf, sizeof buf,
                     "{\"__metadata__\":{\"format\":\"pt\"},\"b\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[8,24]},"
                     "\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
                     "\"z\":{\"dtype\":\"I64\",\"shape\":[0,3],\"data_offsets\":[24,24]}}",
                     24);
    st_file *f;
    cr_assert(!st_open_buffer(buf, n, "x", &f), "%s", rt_errmsg());
    cr_assert_eq(st_count(f), 3);
    cr_assert_str_eq(st_get(f, 0)->name, "a");               /* sorted by name */
    const st_tensor *b = st_find(f, "b");
    cr_assert(b && b->dtype == RT_DT_F32 && b->ndim == 2 && b->shape[1] == 2 && b->nbytes == 16);
    cr_assert_eq((const unsigned char *)b->data, buf + n - 16);
    cr_assert_eq(st_find(f, "z")->nelem, 0);
    cr_assert_null(st_find(f, "c"));
    cr_assert_str_eq(json_string_value(json_object_get(st_metadata(f, 0), "format")), "pt");
    st_close(f);
}

Test(safetensors, rejects_empty_and_short_files) {
    unsigned char buf[8] = {0};
    st_file *f;
    cr_assert_eq(st_open_buffer(buf, 0, "x", &f), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "empty"));
    cr_assert_eq(st_open_buffer(buf, 5, "x", &f), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "too short"));
}

Test(safetensors, rejects_header_length_beyond_file_or_limit) {
    unsigned char buf[64];
    size_t n = image(buf, sizeof buf, "{}", 0);
    buf[0] = 200; /* header claims 200 bytes */
    st_file *f;
    cr_assert_eq(st_open_buffer(buf, n, "x", &f), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "runs past the end"), "%s", rt_errmsg());
    memset(buf, 0, 8);
    buf[4] = 1; /* 2^32 bytes: over the 100 MB limit */
    cr_assert_eq(st_open_buffer(buf, n, "x", &f), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "limit"), "%s", rt_errmsg());
}

Test(safetensors, rejects_header_that_is_not_json) {
    expect_bad("{not json", 0, "invalid JSON");
    expect_bad("[1, 2]", 0, "not a JSON object");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "invalid JSON");
}

Test(safetensors, rejects_bad_entries) {
    expect_bad("{\"a\":{\"dtype\":\"F31\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype");
    expect_bad("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing dtype");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "missing shape");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "non-negative");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "begin <= end");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "[begin, end]");
    expect_bad("{\"__metadata__\":{\"k\":1}}", 0, "not a string");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,8],\"data_offsets\":[0,4]}}", 4, "overflows");
}

Test(safetensors, rejects_shape_size_mismatch) {
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "need 12 bytes");
}

Test(safetensors, rejects_offsets_out_of_range) {
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "beyond the data section");
}

Test(safetensors, rejects_overlapping_tensors) {
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[20,24]},"
               "\"c\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[12,12]},"
               "\"d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}",
               24, "overlap");
}

Test(safetensors, write_then_read_every_dtype) {
    char *dir = tmp_dir(), *path = rt_path_join(dir, "t.safetensors");
    static const rt_dtype all[] = {RT_DT_F64, RT_DT_F32, RT_DT_F16, RT_DT_BF16, RT_DT_F8_E4M3, RT_DT_F8_E5M2,
                                   RT_DT_I64, RT_DT_I32, RT_DT_I16, RT_DT_I8, RT_DT_U64, RT_DT_U32,
                                   RT_DT_U16, RT_DT_U8, RT_DT_BOOL};
    enum { N = sizeof all / sizeof *all };
    st_wtensor ts[N];
    unsigned char data[N][3 * 5 * 8];
    char names[N][16];
    for (int i = 0; i < N; i++) {
        for (size_t k = 0; k < sizeof data[i]; k++) data[i][k] = (unsigned char)(k * 37 + i);
        if (all[i] == RT_DT_BOOL) for (size_t k = 0; k < sizeof data[i]; k++) data[i][k] &= 1;
        snprintf(names[i], sizeof names[i], "t.%s", rt_dtype_name(all[i]));
        ts[i] = (st_wtensor){names[i], all[i], 2, {3, 5}, data[i]};
    }
    json_t *meta = json_pack("{s:s}", "format", "pt");
    cr_assert(!st_write(path, ts, N, meta), "%s", rt_errmsg());
    json_decref(meta);
    st_file *f;
    cr_assert(!st_open(path, &f), "%s", rt_errmsg());
    cr_assert_eq(st_count(f), N);
    for (int i = 0; i < N; i++) {
        const st_tensor *t = st_find(f, names[i]);
        cr_assert(t && t->dtype == all[i] && t->shape[0] == 3 && t->shape[1] == 5);
        cr_assert(!memcmp(t->data, data[i], 15 * rt_dtype_size(all[i])), "%s differs", names[i]);
    }
    cr_assert_str_eq(json_string_value(json_object_get(st_metadata(f, 0), "format")), "pt");
    st_close(f);
    unlink(path);
    rmdir(dir);
    free(path);
    free(dir);
}

/* kB of mapped file pages resident in this process (/proc/self/status RssFile); −1 unknown. */
static long rss_file_kb(void) {
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (fp && fgets(line, sizeof line, fp))
        if (!strncmp(line, "RssFile:", 8)) kb = strtol(line + 8, NULL, 10);
    if (fp) fclose(fp);
    return kb;
}

Test(safetensors, dropped_pages_leave_the_resident_set_and_read_back_the_same) {
    enum { N = 1 << 21 };   /* 8 MB of f32 */
    char *dir = tmp_dir(), *path = rt_path_join(dir, "big.safetensors");
    uint32_t *v = malloc(N * sizeof *v);
    cr_assert(v);
    for (uint32_t i = 0; i < N; i++) v[i] = i * 2654435761u;
    st_wtensor w = {"w", RT_DT_F32, 1, {N}, v};
    cr_assert(!st_write(path, &w, 1, NULL), "%s", rt_errmsg());
    st_file *f;
    cr_assert(!st_open(path, &f), "%s", rt_errmsg());
    const st_tensor *t = st_find(f, "w");
    long before = rss_file_kb();
    cr_assert(!memcmp(t->data, v, t->nbytes));   /* every page touched */
    long touched = rss_file_kb();
    st_drop(f, t, 1, 4097);                      /* an unaligned piece: at most its whole page */
    cr_assert(!memcmp(t->data, v, t->nbytes));
    st_drop(f, t, 0, t->nbytes);
    long dropped = rss_file_kb();
    if (before >= 0) {   /* the 8 MB came in, and went out again (half of it at least: slack for other pages) */
        cr_assert_geq(touched - before, 4096, "RssFile %ld -> %ld kB", before, touched);
        cr_assert_leq(dropped, touched - 4096, "RssFile %ld kB after the drop, %ld before", dropped, touched);
    }
    cr_assert(!memcmp(t->data, v, t->nbytes), "data read back from the file after the drop");
    st_drop(f, t, t->nbytes, 10);                /* past the end: nothing */
    st_close(f);
    unlink(path);
    rmdir(dir);
    free(path);
    free(dir);
    free(v);
}

Test(safetensors, write_rejects_bad_arguments_and_leaves_nothing) {
    char *dir = tmp_dir(), *path = rt_path_join(dir, "t.safetensors");
    float x[2] = {1, 2};
    st_wtensor two[2] = {{"a", RT_DT_F32, 1, {2}, x}, {"a", RT_DT_F32, 1, {2}, x}};
    cr_assert_eq(st_write(path, two, 2, NULL), RT_EINVAL);
    cr_assert(strstr(rt_errmsg(), "given twice"));
    st_wtensor bad = {"b", RT_DT_INVALID, 1, {2}, x};
    cr_assert_eq(st_write(path, &bad, 1, NULL), RT_EINVAL);
    cr_assert(!rt_is_file(path));
    cr_assert_eq(rmdir(dir), 0, "temporary files left behind in %s", dir);   /* empty: nothing left */
    free(path);
    free(dir);
}

Test(safetensors, write_into_missing_directory_is_an_io_error) {
    float x = 1;
    st_wtensor t = {"a", RT_DT_F32, 1, {1}, &x};
    cr_assert_eq(st_write("/nonexistent-dir/x.safetensors", &t, 1, NULL), RT_EIO);
    cr_assert(strstr(rt_errmsg(), "/nonexistent-dir/x.safetensors"));
}

Test(safetensors, write_to_full_disk_is_an_io_error_and_keeps_the_old_file) {
    /* A file-size limit makes writes fail the way a full disk does (EFBIG instead of ENOSPC);
     * Criterion runs each test in its own process, so the limit stays here. */
    char *dir = tmp_dir(), *path = rt_path_join(dir, "t.safetensors");
    float x[256] = {1};
    st_wtensor t = {"a", RT_DT_F32, 1, {1}, x};
    cr_assert(!st_write(path, &t, 1, NULL));
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {200, 200};
    cr_assert(!setrlimit(RLIMIT_FSIZE, &rl));
    x[0] = 2;
    t.shape[0] = 256;
    cr_assert_eq(st_write(path, &t, 1, NULL), RT_EIO);
    cr_assert(strstr(rt_errmsg(), "t.safetensors"), "%s", rt_errmsg());
    st_file *f;
    cr_assert(!st_open(path, &f), "%s", rt_errmsg());
    cr_assert_eq(st_find(f, "a")->nelem, 1);
    float got;
    memcpy(&got, st_find(f, "a")->data, 4);
    cr_assert_eq(got, 1.0f, "the old file must survive a failed write");
    st_close(f);
    unlink(path);
    cr_assert_eq(rmdir(dir), 0, "temporary file left behind");
    free(path);
    free(dir);
}

static void write_json(const char *path, const char *text) {
    FILE *fp = fopen(path, "w");
    cr_assert(fp);
    fputs(text, fp);
    fclose(fp);
}

Test(safetensors, sharded_index_is_followed_and_checked) {
    char *dir = tmp_dir();
    char p1[512], p2[512], idx[512];
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    float x[4] = {1, 2, 3, 4};
    st_wtensor a = {"a", RT_DT_F32, 1, {4}, x}, b = {"b", RT_DT_F32, 1, {2}, x};
    cr_assert(!st_write(p1, &a, 1, NULL));
    cr_assert(!st_write(p2, &b, 1, NULL));
    write_json(idx, "{\"metadata\":{},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                    "\"b\":\"model-00002-of-00002.safetensors\"}}");
    st_file *f;
    cr_assert(!st_open(dir, &f), "%s", rt_errmsg());
    cr_assert_eq(st_nshards(f), 2);
    cr_assert_eq(st_find(f, "b")->shard, 1);
    st_close(f);

    write_json(idx, "{\"weight_map\":{\"a\":\"model-00002-of-00002.safetensors\",\"b\":\"model-00002-of-00002.safetensors\"}}");
    cr_assert_eq(st_open(dir, &f), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "tensor a"), "%s", rt_errmsg());

    write_json(idx, "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\",\"b\":\"model-00002-of-00002.safetensors\",\"c\":\"model-00002-of-00002.safetensors\"}}");
    cr_assert_eq(st_open(dir, &f), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "tensor c"), "%s", rt_errmsg());

    write_json(idx, "{\"weight_map\":{\"a\":\"../etc/passwd\"}}");
    cr_assert_eq(st_open(dir, &f), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "not a file in the model directory"), "%s", rt_errmsg());

    write_json(idx, "{\"weight_map\":{\"a\":\"missing.safetensors\"}}");
    cr_assert_neq(st_open(dir, &f), 0);
    cr_assert(strstr(rt_errmsg(), "missing.safetensors"), "%s", rt_errmsg());
    unlink(idx);

    /* no index: every *.safetensors together; a name in two files is an error */
    cr_assert(!st_open(dir, &f), "%s", rt_errmsg());
    cr_assert_eq(st_count(f), 2);
    st_close(f);
    cr_assert(!st_write(p2, &a, 1, NULL));
    cr_assert_eq(st_open(dir, &f), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "appears in both"), "%s", rt_errmsg());
    unlink(p1);
    unlink(p2);
    rmdir(dir);
    free(dir);
}

Test(safetensors, directory_without_safetensors_is_not_found) {
    char *dir = tmp_dir();
    st_file *f;
    cr_assert_eq(st_open(dir, &f), RT_ENOTFOUND);
    cr_assert(strstr(rt_errmsg(), "no .safetensors"));
    rmdir(dir);
    free(dir);
}

Test(safetensors, model_safetensors_is_the_model_when_present) {
    char *dir = tmp_dir();
    char pm[512], po[512];
    snprintf(pm, sizeof pm, "%s/model.safetensors", dir);
    snprintf(po, sizeof po, "%s/optimizer.safetensors", dir);
    float x[2] = {1, 2};
    st_wtensor a = {"w", RT_DT_F32, 1, {2}, x}, b = {"exp_avg.w", RT_DT_F32, 1, {2}, x};
    cr_assert(!st_write(pm, &a, 1, NULL));
    cr_assert(!st_write(po, &b, 1, NULL));
    st_file *f;
    cr_assert(!st_open(dir, &f), "%s", rt_errmsg());
    cr_assert_eq(st_count(f), 1);
    cr_assert_not_null(st_find(f, "w"));
    st_close(f);
    unlink(pm);
    cr_assert(!st_open(dir, &f), "%s", rt_errmsg());     /* without it: the other files */
    cr_assert_not_null(st_find(f, "exp_avg.w"));
    st_close(f);
    unlink(po);
    rmdir(dir);
    free(dir);
}
