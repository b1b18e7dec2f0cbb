/* student/zero: the shard layout (a worked specification: equal parts of ⌈n/P⌉ rounded up to
 * 16 elements, rank r owning [r·S, (r+1)·S) ∩ [0, n), the parts tiling [0, n) exactly), and
 * the one-rank collectives being plain local work. Multi-rank numbers are tested under
 * mpirun by tests/ref/test_train_dp.py. */
#include <criterion/criterion.h>
#include <math.h>

#include "student/zero.h"

Test(zero, layout_of_a_worked_case) {
    zr_layout z;
    zr_layout_init(&z, 1000, 2, 3, 2);   /* ⌈1000/3⌉ = 334 → 336 */
    cr_assert_eq(z.shard, 336);
    cr_assert_eq(z.padded, 1008);
    cr_assert_eq(z.lo, 672);
    cr_assert_eq(z.hi, 1000);
    cr_assert_eq(zr_state_len(&z), 336);
    zr_layout_init(&z, 1000, 2, 3, 0);   /* replicated: everything, state for all of it */
    cr_assert(z.lo == 0 && z.hi == 1000 && zr_state_len(&z) == 1000);
    zr_layout_init(&z, 16, 3, 4, 1);     /* more ranks than 16-element parts: empty tail ranks */
    cr_assert(z.shard == 16 && z.padded == 64 && z.lo == 16 && z.hi == 16);
}

Test(zero, parts_tile_the_buffer_exactly) {
    static const int64_t ns[] = {1, 15, 16, 17, 1000, 123457};
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++)
        for (int P = 1; P <= 9; P++) {
            int64_t next = 0;
            for (int r = 0; r < P; r++) {
                zr_layout z;
                zr_layout_init(&z, ns[k], r, P, 1 + r % 2);
                cr_assert(z.shard % 16 == 0 && z.padded == z.shard * P && z.padded >= ns[k]);
                cr_assert(z.padded - ns[k] < 16 * P + P, "n %lld P %d: padding %lld", (long long)ns[k], P,
                          (long long)(z.padded - ns[k]));
                cr_assert_eq(z.lo, next, "n %lld P %d rank %d starts at %lld, not %lld", (long long)ns[k], P, r,
                             (long long)z.lo, (long long)next);
                cr_assert(z.hi >= z.lo && z.hi - z.lo <= z.shard);
                next = z.hi;
            }
            cr_assert_eq(next, ns[k]);
        }
}

Test(zero, one_rank_is_local_work) {
    float g[32];
    double want = 0;
    for (int i = 0; i < 32; i++) {
        g[i] = (float)(i % 7) - 3.0f;
        want += (double)g[i] * g[i];
    }
    zr_layout z;
    zr_layout_init(&z, 32, 0, 1, 2);
    cr_assert_eq(zr_reduce_grads(&z, NULL, g), 0);
    cr_assert_eq(g[5], 2.0f);
    double s = -1;
    cr_assert_eq(zr_grad_sumsq(&z, NULL, g, NULL, &s), 0);
    cr_assert_eq(s, want);
    float full[32];
    cr_assert_eq(zr_gather_state(&z, NULL, g, full, 0), 0);
    cr_assert(!memcmp(full, g, sizeof g));
}
