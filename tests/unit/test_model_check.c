/* core/model_check: the tokenizer/vocabulary rule and the non-finite scan, on hand-worked
 * cases: bit patterns written out from the IEEE 754 / OCP FP8 definitions (an all-ones
 * exponent is Inf with a zero mantissa and NaN otherwise; e4m3fn has NaN at S.1111.111 and
 * no infinity, so 0x7e = 448 is finite), counted by hand. */
#include <math.h>
#include <unistd.h>

#include "core/model_check.h"
#include "testutil.h"

Test(model_check, vocab_rule_refuses_ids_at_or_beyond_the_vocabulary) {
    cr_assert_eq(mk_check_vocab(100, "m", 100, "tokenizer t"), 0);   /* ids 0..99 */
    cr_assert_eq(mk_check_vocab(151936, "m", 151665, "tokenizer t"), 0);   /* a padded vocabulary (Qwen2.5) */
    cr_assert_eq(mk_check_vocab(100, "m", 101, "tokenizer t"), RT_EINVAL);
    cr_assert(strstr(rt_errmsg(), "tokenizer t has ids up to 100, but model m has a vocabulary of 100"), "%s", rt_errmsg());
    cr_assert_eq(mk_check_vocab(0, "m", 1, "tokenizer t"), RT_EINVAL);
}

Test(model_check, scan_counts_nan_and_inf_per_dtype) {
    float f32[6] = {1.0f, NAN, INFINITY, -INFINITY, -NAN, 3.0e38f};               /* 2 NaN, 2 Inf */
    uint16_t bf16[5] = {0x3f80, 0x7fc0, 0x7f80, 0xff80, 0x7f7f};                   /* 1 NaN, 2 Inf; 0x7f7f finite */
    uint16_t f16[5] = {0x3c00, 0x7c00, 0x7e00, 0xfc01, 0x7bff};                    /* 2 NaN, 1 Inf; 0x7bff = 65504 */
    uint8_t e4m3[6] = {0x7e, 0xfe, 0x7f, 0xff, 0x00, 0x38};                        /* 2 NaN; ±448 finite */
    int32_t i32[2] = {0x7f800000, 0x7fc00000};                                     /* integers: not scanned */
    float proj[3] = {NAN, NAN, NAN};
    double f64[3] = {0.0, INFINITY, NAN};
    st_wtensor ts[] = {
        {"a.f32", RT_DT_F32, 1, {6}, f32},          {"b.bf16", RT_DT_BF16, 1, {5}, bf16},
        {"c.f16", RT_DT_F16, 1, {5}, f16},          {"d.e4m3", RT_DT_F8_E4M3, 1, {6}, e4m3},
        {"e.i32", RT_DT_I32, 1, {2}, i32},          {"f.q_proj.weight", RT_DT_F32, 1, {3}, proj},
        {"g.f64", RT_DT_F64, 1, {3}, f64},
    };
    char *dir = tmp_dir(), path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(st_write(path, ts, sizeof ts / sizeof *ts, NULL), 0, "%s", rt_errmsg());
    st_file *f;
    cr_assert_eq(st_open(path, &f), 0, "%s", rt_errmsg());
    mk_values v;
    cr_assert_eq(mk_scan_values(f, true, NULL, &v), 0);
    cr_assert_eq(v.tensors, 6);
    cr_assert_eq(v.skipped, 1);
    cr_assert_eq(v.n_bad, 6);
    struct { const char *name; uint64_t nan, inf; } want[] = {
        {"a.f32", 2, 2}, {"b.bf16", 1, 2}, {"c.f16", 2, 1}, {"d.e4m3", 2, 0}, {"f.q_proj.weight", 3, 0}, {"g.f64", 1, 1}};
    for (size_t i = 0; i < 6; i++) {
        cr_assert_str_eq(v.bad[i].name, want[i].name);
        cr_assert_eq(v.bad[i].nan, want[i].nan, "%s: %llu NaN", want[i].name, (unsigned long long)v.bad[i].nan);
        cr_assert_eq(v.bad[i].inf, want[i].inf, "%s: %llu Inf", want[i].name, (unsigned long long)v.bad[i].inf);
    }
    cr_assert_eq(v.nan, 11);
    cr_assert_eq(v.inf, 6);
    mk_values_free(&v);
    /* the cheap scan leaves the projection out */
    cr_assert_eq(mk_scan_values(f, false, NULL, &v), 0);
    cr_assert_eq(v.n_bad, 5);
    cr_assert_eq(v.skipped, 2);
    mk_values_free(&v);
    st_close(f);
    /* the load check: one message naming the first tensor and how many more */
    cr_assert_eq(mk_check_weights(dir, NULL), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "tensor a.f32 holds 2 NaN and 2 Inf of 6 values (and 5 more tensors)"), "%s", rt_errmsg());
    unlink(path);
    rmdir(dir);
    free(dir);
}

Test(model_check, scan_on_a_pool_counts_every_element_once) {
    size_t n = 300001;   /* above the inline limit: split over the pool */
    float *x = calloc(n, sizeof *x);
    cr_assert(x);
    x[0] = NAN, x[n / 2] = INFINITY, x[n - 1] = NAN;
    st_wtensor t = {"big", RT_DT_F32, 1, {(int64_t)n}, x};
    char *dir = tmp_dir(), path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(st_write(path, &t, 1, NULL), 0);
    st_file *f;
    cr_assert_eq(st_open(path, &f), 0);
    tp_pool *pool;
    cr_assert_eq(tp_create(3, &pool), 0);
    mk_values v;
    cr_assert_eq(mk_scan_values(f, true, pool, &v), 0);
    cr_assert_eq(v.values, n);
    cr_assert_eq(v.nan, 2);
    cr_assert_eq(v.inf, 1);
    mk_values_free(&v);
    tp_free(pool);
    st_close(f);
    unlink(path);
    rmdir(dir);
    free(dir);
    free(x);
}
