/* kernels/optim against torch.optim.AdamW (tests/ref/gen_kernels_student.py): 20 steps with
 * the same gradients and learning rates. Tolerance: 1e-6 relative to the parameter scale —
 * both sides do the same f32 operations, but torch's vectorized sqrt/div may round a last
 * bit differently, and 20 steps can carry a few ulps. */
#include <math.h>

#include "kernels/convert.h"
#include "kernels/optim.h"
#include "testutil.h"

static void *copy_of(const st_tensor *t) {
    void *v = malloc(t->nbytes);
    cr_assert(v);
    memcpy(v, t->data, t->nbytes);
    return v;
}

static double max_diff(const float *a, const float *b, size_t n, double *scale) {
    double md = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mx = fmax(mx, fabs(b[i]));
    }
    *scale = mx;
    return md;
}

static void run_adamw(int threads) {
    st_file *f = ref_open("kernels_student.safetensors");
    const st_tensor *tp = ref_tensor(f, "adamw_p0");
    size_t P = tp->nelem;
    float *p = copy_of(tp), *g = copy_of(ref_tensor(f, "adamw_grads")), *want = copy_of(ref_tensor(f, "adamw_params"));
    double *lr = copy_of(ref_tensor(f, "adamw_lr")), *hp = copy_of(ref_tensor(f, "adamw_hp"));
    float *m = calloc(P, sizeof *m), *v = calloc(P, sizeof *v);
    tp_pool *pool = NULL;
    if (threads > 1) cr_assert_eq(tp_create(threads, &pool), 0);
    int steps = (int)ref_tensor(f, "adamw_lr")->nelem;
    for (int s = 0; s < steps; s++) {
        adamw_hparams h = {.lr = lr[s], .beta1 = hp[0], .beta2 = hp[1], .eps = hp[2], .weight_decay = hp[3], .step = s + 1};
        adamw_step(p, g + (size_t)s * P, m, v, P, &h, pool);
        double scale, d = max_diff(p, want + (size_t)s * P, P, &scale);
        cr_assert_lt(d, 1e-6 * scale, "step %d: max |p − torch| %g (scale %g)", s + 1, d, scale);
    }
    double scale, dm = max_diff(m, ref_tensor(f, "adamw_m")->data, P, &scale);
    cr_expect_lt(dm, 1e-6 * scale, "exp_avg differs by %g", dm);
    double dv = max_diff(v, ref_tensor(f, "adamw_v")->data, P, &scale);
    cr_expect_lt(dv, 1e-6 * scale, "exp_avg_sq differs by %g", dv);
    tp_free(pool);
    free(p); free(g); free(want); free(lr); free(hp); free(m); free(v);
    st_close(f);
}

Test(kernels_optim, adamw_20_steps_match_torch) { run_adamw(1); }
Test(kernels_optim, adamw_threaded_matches_torch) { run_adamw(3); }

Test(kernels_optim, sumsq_is_exact_on_a_hand_worked_vector_and_independent_of_threads) {
    size_t n = 200003;
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (i % 7 == 0) ? 2.0f : -1.0f;   /* squares 4 and 1, exact in double */
    size_t fours = (n + 6) / 7;
    double want = 4.0 * (double)fours + (double)(n - fours);
    tp_pool *pool;
    cr_assert_eq(tp_create(3, &pool), 0);
    cr_expect_eq(vec_sumsq(x, n, NULL), want);
    cr_expect_eq(vec_sumsq(x, n, pool), want);
    vec_scale(x, n, 0.5f, pool);
    cr_expect_eq(x[0], 1.0f);
    cr_expect_eq(x[1], -0.5f);
    tp_free(pool);
    free(x);
}
