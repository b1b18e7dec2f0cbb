/* core's small shared pieces: the clock (core/clock.h), the mixers (core/hash.h), TRY and
 * RT_ASSERT (core/status.h) and the end-of-turn token of each built-in chat template.
 * Expected values: splitmix64 from the published test vector of Vigna's splitmix64.c (seed
 * 1234567) and seed 0; fmix64 and rt_hash3 from a Python transcription of the formulas (the
 * MurmurHash3 finalizer; seed/stream/step mixing as kernels/sample.h documents it); end-of-turn
 * tokens from the eos_token of the shipped tokenizer_config.json files in shared/assets. */
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "core/chat_template.h"
#include "core/clock.h"
#include "core/hash.h"
#include "core/json.h"
#include "core/log.h"
#include "core/phase.h"
#include "core/threadpool.h"
#include "testutil.h"

Test(clock, now_s_never_goes_back_and_counts_seconds) {
    double prev = now_s();
    for (int i = 0; i < 100000; i++) {
        double t = now_s();
        cr_assert_geq(t, prev);
        prev = t;
    }
    /* seconds of CLOCK_MONOTONIC: a reading taken between two calls lies between them */
    double a = now_s();
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double b = now_s(), mid = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    cr_assert(a <= mid && mid <= b, "%.9f <= %.9f <= %.9f", a, mid, b);
}

Test(hash, splitmix64_matches_the_reference_vectors) {
    uint64_t s = 1234567;
    cr_assert_eq(rt_splitmix64(&s), 6457827717110365317ULL);
    cr_assert_eq(rt_splitmix64(&s), 3203168211198807973ULL);
    cr_assert_eq(rt_splitmix64(&s), 9817491932198370423ULL);
    s = 0;
    cr_assert_eq(rt_splitmix64(&s), 0xe220a8397b1dcdafULL);
    cr_assert_eq(rt_splitmix64(&s), 0x6e789e6aa1b965f4ULL);
    cr_assert_eq(s, 2 * RT_GOLDEN_GAMMA, "the state advances by the gamma per draw");
    cr_assert_eq(rt_mix64(RT_GOLDEN_GAMMA), 0xe220a8397b1dcdafULL, "mix64 is the generator's output function");
}

Test(hash, fmix64_and_hash3_known_values) {
    cr_assert_eq(rt_fmix64(1), 0xb456bcfc34c2cb2cULL);
    cr_assert_eq(rt_fmix64(0xdeadbeef), 0xd24bd59f862a1dacULL);
    cr_assert_eq(rt_fmix64(0), 0, "fmix64 fixes 0");
    cr_assert_eq(rt_hash3(42, 3, 7), 0xbc5e72fb220afc88ULL);
    cr_assert_eq(rt_hash3(0, 0, 0), 0x8c9e0229110ef17bULL);
}

static int calls;
static int fails_with(int rc) { calls++; return rc; }
static int two_steps(int first, int second) {
    TRY(fails_with(first));
    TRY(fails_with(second));
    return 7;
}

Test(status, try_returns_the_first_failing_code) {
    calls = 0;
    cr_assert_eq(two_steps(0, 0), 7);
    cr_assert_eq(calls, 2);
    calls = 0;
    cr_assert_eq(two_steps(RT_EIO, 0), RT_EIO);
    cr_assert_eq(calls, 1, "the call after a failure is not made");
    cr_assert_eq(two_steps(0, RT_EFORMAT), RT_EFORMAT);
}

Test(status, rt_assert_passes_a_true_invariant) {
    int n = 3;
    RT_ASSERT(n == 3, "n is %d", n);
    cr_assert_eq(n, 3);
}

#ifndef NDEBUG
Test(status, rt_assert_aborts_on_a_broken_invariant, .signal = SIGABRT) {
    int n = 3;
    RT_ASSERT(n == 4, "n is %d", n);
}
#endif

/* eos_token of assets/tokenizers/NAME/tokenizer_config.json (string or AddedToken form) */
static char *shipped_eos(const char *name) {
    const char *assets = getenv("RETORT_ASSETS");
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizers/%s/tokenizer_config.json", assets ? assets : "../shared/assets", name);
    if (access(path, R_OK)) cr_skip_test("skipped: %s absent (set RETORT_ASSETS)", path);
    json_error_t e;
    json_t *cfg = json_load_file(path, JSON_DECODE_INT_AS_REAL, &e);
    cr_assert(cfg, "%s: %s", path, e.text);
    json_t *v = json_object_get(cfg, "eos_token");
    if (json_is_object(v)) v = json_object_get(v, "content");
    cr_assert(json_is_string(v), "%s has an eos_token", path);
    char *s = strdup(json_string_value(v));
    json_decref(cfg);
    return s;
}

Test(chat_template, end_of_turn_token_of_each_builtin_is_the_models_eos) {
    static const struct { ct_kind k; const char *model; } cases[] = {
        {CT_DEEPSEEK_R1, "deepseek_v3"}, {CT_QWEN, "qwen3"}, {CT_LLAMA3, "llama3_1"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *want = shipped_eos(cases[i].model);
        const char *got = ct_template_eot(ct_builtin(cases[i].k));
        cr_assert(got, "%s has an end-of-turn token", ct_kind_name(cases[i].k));
        cr_assert_str_eq(got, want, "%s", ct_kind_name(cases[i].k));
        free(want);
    }
    cr_assert_null(ct_template_eot(NULL));
}

static void spin(void *ctx, size_t begin, size_t end, int thread) {
    (void)thread;
    volatile uint64_t *acc = ctx, x = 0;
    for (size_t i = begin; i < end; i++)
        for (int k = 0; k < 20000; k++) x += i * (uint64_t)k;
    __atomic_fetch_add(acc, x, __ATOMIC_RELAXED);
}

/* The busiest thread's CPU is one share of the process's: never above it, and with two
 * threads sharing the work at least some of it (values from the kernel's own accounting). */
Test(phase, busiest_thread_cpu_is_part_of_the_process_cpu) {
    ph_clock pc;
    rt_log_set_level(RT_LOG_INFO);
    ph_start(&pc, "test");
    ph_lap(&pc, "off");
    cr_assert_eq(pc.last_cpu, -1, "nothing is measured below debug level");
    rt_log_set_level(RT_LOG_DEBUG);
    tp_pool *p;
    cr_assert_eq(tp_create(2, &p), 0);
    uint64_t acc = 0;
    ph_start(&pc, "test");
    tp_parallel_for(p, 4000, spin, &acc);
    ph_lap(&pc, "spin");
    tp_free(p);
    rt_log_set_level(RT_LOG_INFO);
    cr_assert_gt(pc.last_cpu, 0);
    cr_assert_gt(pc.last_busiest, 0, "schedstat not readable?");
    cr_assert_leq(pc.last_busiest, pc.last_cpu + 1e-3, "busiest %g s > process %g s", pc.last_busiest, pc.last_cpu);
    cr_assert_geq(pc.last_wall, 0);
}
