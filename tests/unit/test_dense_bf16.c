/* teacher/dense with a BF16 checkpoint (tests/ref/gen_teacher.py: teacher/llama-bf16, and
 * teacher/qwen2-bf16 with biases and the lm_head tied to the embedding): the matrices held in
 * bf16 (RETORT_CPU_WEIGHTS=bf16, or auto on an AVX2 CPU) give
 *   - logits within 1e-4 of transformers' forward of the same file loaded as float32 (the
 *     f32 tolerance of test_dense_teacher.c: bf16 → f32 is exact, so the weights are the same);
 *   - the very bits of the f32 copies (RETORT_CPU_WEIGHTS=f32) under RETORT_GEMM=avx2: prefills
 *     of 1, 9 and 40 tokens and a batched decode of three sequences, with 1 and 2 threads (both
 *     splits of the linear layers, both the streaming decode kernel and the widened panels);
 *     under the automatic kernel choice, where prefills of more than 8 rows per thread run
 *     OpenBLAS on blocks of w (kernels/matmul.h: other roundings), within 1e-5 (logits of std ~1:
 *     f32 summation order);
 *   - about half the resident bytes (norms and biases stay f32). */
#include <math.h>
#include <stdint.h>

#include "core/threadpool.h"
#include "kernels/matmul.h"
#include "teacher/dense.h"
#include "teacher/kvcache.h"
#include "testutil.h"

static char *ckpt(const char *tag) {
    const char *dir = getenv("REF_DIR");
    if (!dir) cr_skip_test("skipped: REF_DIR not set (run the suite through `make test`)");
    char *p = malloc(4096);
    snprintf(p, 4096, "%s/teacher/%s", dir, tag);
    return p;
}

static dn_model *load(const char *tag, const char *weights, tp_pool *tp) {
    char *path = ckpt(tag);
    if (weights) setenv("RETORT_CPU_WEIGHTS", weights, 1);
    else unsetenv("RETORT_CPU_WEIGHTS");
    dn_model *m = NULL;
    int rc = dn_load(path, tp, &m);
    unsetenv("RETORT_CPU_WEIGHTS");
    if (rc == RT_ENOTFOUND || rc == RT_EIO) cr_skip_test("skipped: %s missing (%s)", path, rt_errmsg());
    cr_assert_eq(rc, 0, "%s", rt_errmsg());
    free(path);
    return m;
}

static void matches_transformers(const char *tag) {
    tp_pool *tp;
    cr_assert_eq(tp_create(2, &tp), 0);
    dn_model *m = load(tag, "bf16", tp);
    int64_t V = dn_config(m)->vocab_size;
    kv_pool *cache;
    cr_assert_eq(kv_pool_create(64, 16, dn_block_floats(m, 16), &cache), 0, "%s", rt_errmsg());
    st_file *f = ref_open("teacher_ref.safetensors");
    int seen = 0;
    for (int p = 0;; p++, seen++) {
        const float *want;
        const st_tensor *ids = ref_prompt(f, tag, p, &want);
        if (!ids) break;
        int32_t n = (int32_t)ids->shape[0];
        float *got = malloc((size_t)(n * V) * sizeof(float));
        kv_seq s = {0}, *sp = &s;
        cr_assert_eq(dn_forward(m, cache, &sp, &n, 1, ids->data, got, true), 0, "%s", rt_errmsg());
        float d = 0;
        for (size_t i = 0; i < (size_t)(n * V); i++) {
            float e = fabsf(got[i] - want[i]);
            if (!(e <= d)) d = e;
        }
        cr_assert(d < 1e-4f, "%s prompt %d (%d tokens): max |dlogit| = %g", tag, p, n, d);
        cr_log_info("%s prompt %d (%d tokens): max |dlogit| = %.2g", tag, p, n, d);
        kv_seq_release(cache, &s);
        free(got);
    }
    cr_assert(seen > 0, "no %s prompts in teacher_ref.safetensors", tag);
    st_close(f);
    kv_pool_free(cache);
    dn_free(m);
    tp_free(tp);
}

Test(dense_bf16, llama_bf16_logits_match_transformers) { matches_transformers("llama-bf16"); }
Test(dense_bf16, qwen2_tied_bf16_logits_match_transformers) { matches_transformers("qwen2-bf16"); }

/* every prompt's prefill (all logits), then the three longest sequences decoded together for
 * three steps; the logits laid end to end into out (returns how many floats) */
static size_t run(dn_model *m, st_file *f, const char *tag, float *out) {
    int64_t V = dn_config(m)->vocab_size;
    kv_pool *cache;
    cr_assert_eq(kv_pool_create(64, 8, dn_block_floats(m, 8), &cache), 0, "%s", rt_errmsg());
    kv_seq s[3] = {{0}}, *sp[3];
    size_t at = 0;
    for (int p = 0; p < 3; p++) {
        const st_tensor *ids = ref_prompt(f, tag, p, NULL);
        cr_assert(ids, "%s prompt %d missing", tag, p);
        int32_t n = (int32_t)ids->shape[0];
        sp[p] = &s[p];
        cr_assert_eq(dn_forward(m, cache, &sp[p], &n, 1, ids->data, out + at, true), 0, "%s", rt_errmsg());
        at += (size_t)(n * V);
    }
    int32_t one[3] = {1, 1, 1}, tok[3] = {3, 1, 4};
    for (int step = 0; step < 3; step++) {
        cr_assert_eq(dn_forward(m, cache, sp, one, 3, tok, out + at, false), 0, "%s", rt_errmsg());
        at += (size_t)(3 * V);
        for (int i = 0; i < 3; i++) tok[i] = (tok[i] * 7 + step + 1) % (int32_t)V;
    }
    for (int p = 0; p < 3; p++) kv_seq_release(cache, &s[p]);
    kv_pool_free(cache);
    return at;
}

static void same_bits(const char *tag, int threads, const char *kernel) {
    if (kernel && !mm_bf16_streams()) cr_skip_test("skipped: this CPU has no AVX2+FMA");
    if (kernel) setenv("RETORT_GEMM", kernel, 1);
    tp_pool *tp;
    cr_assert_eq(tp_create(threads, &tp), 0);
    dn_model *mf = load(tag, "f32", tp), *mh = load(tag, "bf16", tp);
    st_file *f = ref_open("teacher_ref.safetensors");
    size_t cap = (size_t)dn_config(mf)->vocab_size * (1 + 9 + 40 + 9);
    float *a = malloc(cap * sizeof(float)), *b = malloc(cap * sizeof(float));
    size_t na = run(mf, f, tag, a), nb = run(mh, f, tag, b);
    cr_assert_eq(na, nb);
    cr_assert(na <= cap);
    size_t diff = 0, first = 0;
    float worst = 0;
    for (size_t i = 0; i < na; i++) {
        if (memcmp(a + i, b + i, sizeof *a) && !diff++) first = i;
        float e = fabsf(a[i] - b[i]);
        if (!(e <= worst)) worst = e;
    }
    cr_log_info("%s, %d threads, RETORT_GEMM=%s: %zu of %zu logits differ, max %.2g", tag, threads,
                kernel ? kernel : "auto", diff, na, worst);
    if (kernel)
        cr_expect_eq(diff, 0, "%s, %d threads: %zu of %zu logits differ from the f32 copies' (first at %zu: %a vs %a)",
                     tag, threads, diff, na, first, b[first], a[first]);
    else
        cr_expect(worst < 1e-5f, "%s, %d threads: logits differ from the f32 copies' by %g", tag, threads, worst);
    size_t rf = dn_resident_bytes(mf), rh = dn_resident_bytes(mh);
    cr_log_info("%s: resident %zu bytes with f32 copies, %zu with bf16 matrices (%.3f)", tag, rf, rh,
                (double)rh / (double)rf);
    cr_expect(rh * 2 >= rf && rh * 10 <= rf * 6, "%s: %zu bytes held in bf16, %zu in f32", tag, rh, rf);
    free(a), free(b);
    st_close(f);
    dn_free(mf), dn_free(mh);
    tp_free(tp);
    unsetenv("RETORT_GEMM");
}

Test(dense_bf16, llama_same_bits_as_f32_copies_1_thread) { same_bits("llama-bf16", 1, "avx2"); }
Test(dense_bf16, llama_same_bits_as_f32_copies_2_threads) { same_bits("llama-bf16", 2, "avx2"); }
Test(dense_bf16, qwen2_tied_same_bits_as_f32_copies_1_thread) { same_bits("qwen2-bf16", 1, "avx2"); }
Test(dense_bf16, qwen2_tied_same_bits_as_f32_copies_2_threads) { same_bits("qwen2-bf16", 2, "avx2"); }
Test(dense_bf16, llama_auto_kernels_close_to_f32_copies) { same_bits("llama-bf16", 2, NULL); }
Test(dense_bf16, qwen2_tied_auto_kernels_close_to_f32_copies) { same_bits("qwen2-bf16", 1, NULL); }

Test(dense_bf16, unknown_weights_setting_is_one_error) {
    char *path = ckpt("llama-bf16");
    setenv("RETORT_CPU_WEIGHTS", "f16", 1);
    dn_model *m = NULL;
    int rc = dn_load(path, NULL, &m);
    unsetenv("RETORT_CPU_WEIGHTS");
    cr_expect_eq(rc, RT_EINVAL);
    cr_expect(strstr(rt_errmsg(), "RETORT_CPU_WEIGHTS=f16"), "message: %s", rt_errmsg());
    cr_expect_null(m);
    free(path);
}
