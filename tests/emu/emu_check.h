/* tests/emu/emu_check.h — what the emulator drivers (tests/emu/*_emu.cpp) share: the line each
 * comparison prints ("ok" or "FAIL", what, detail — tests/ref/test_cuda_emu.py reads them) with
 * the counts main() reports, an element-wise comparison against the CPU twin, and, when the
 * driver defines EMU_SEED before including this, a seeded xorshift generator (rnd, rnd_unit,
 * rnd_normal) so that each driver draws its own reproducible data. */
#ifndef RT_TESTS_EMU_CHECK_H
#define RT_TESTS_EMU_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include <vector>

static int failures = 0, checks = 0;

static inline void report(bool ok, const char *what, const char *detail) {
    printf("%-8s %-56s %s\n", ok ? "ok" : "FAIL", what, detail);
    checks++;
    if (!ok) failures++;
}

/* |got − want| ≤ atol + rtol·|want| for every element; prints the worst ratio to the bound */
static inline void close_elem(const char *what, const std::vector<float> &got, const std::vector<float> &want,
                              float atol, float rtol) {
    size_t bad = 0, worst = 0;
    double wr = 0;
    for (size_t i = 0; i < got.size(); i++) {
        double d = fabs((double)got[i] - want[i]), b = atol + rtol * fabs((double)want[i]);
        if (!(d <= b)) bad++;
        if (!(d / b <= wr)) wr = d / b, worst = i;
    }
    printf("%-8s %-52s worst err/bound %.3f%s\n", bad ? "FAIL" : "ok", what, wr, bad ? " <-" : "");
    if (bad) printf("         %zu bad; [%zu] got %g want %g\n", bad, worst, got[worst], want[worst]), failures++;
    checks++;
}

#ifdef EMU_SEED
static uint64_t rng = EMU_SEED;
static inline uint32_t rnd() {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}
static inline float rnd_unit() { return (float)(rnd() & 0xffffff) / 16777216.0f; }
static inline float rnd_normal() {
    float u = rnd_unit() + 1e-7f, v = rnd_unit();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}
#endif

#endif
