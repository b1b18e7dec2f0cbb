/* student/rng.c — xoshiro256** (Blackman & Vigna), splitmix64 seeding, Box–Muller. */
#include "student/rng.h"

#include <math.h>

#include "core/hash.h"

void sr_seed(sr_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = rt_splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t sr_next(sr_rng *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double sr_uniform(sr_rng *r) { return (double)(sr_next(r) >> 11) * 0x1.0p-53; }

double sr_normal(sr_rng *r) {
    double u1 = 1.0 - sr_uniform(r), u2 = sr_uniform(r);   /* u1 in (0, 1] */
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint64_t sr_below(sr_rng *r, uint64_t n) {
    uint64_t lim = UINT64_MAX - UINT64_MAX % n, x;
    do x = sr_next(r);
    while (x >= lim);
    return x % n;
}
