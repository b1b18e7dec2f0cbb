/* student/rng.h — a small seeded random generator for initialization and data order.
 *
 * xoshiro256** seeded through splitmix64; normals by Box–Muller in double. The state is a
 * plain value (copy it to save it), so runs are reproducible from a seed. No errors.
 */
#ifndef RT_STUDENT_RNG_H
#define RT_STUDENT_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} sr_rng;

void sr_seed(sr_rng *r, uint64_t seed);
uint64_t sr_next(sr_rng *r);
double sr_uniform(sr_rng *r);               /* [0, 1) with 53 random bits */
double sr_normal(sr_rng *r);                /* standard normal */
uint64_t sr_below(sr_rng *r, uint64_t n);   /* uniform in [0, n), n > 0, unbiased */

#endif
