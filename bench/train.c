/* bench/train.c — training-step throughput of the CPU student (forward, backward, AdamW).
 *
 *   train CONFIG.json BATCH SEQ STEPS THREADS
 *
 * Random-init model from CONFIG, random tokens, one document per sequence and every next
 * token a target (as the PyTorch peer in bench/train_torch.py does). One warm-up step, then
 * STEPS timed steps; prints "tokens_per_s X", "tokens_per_cpu_s X" (per second of process CPU
 * time, user + system: far less inflated than wall time by other work on a shared machine) and
 * the time per kernel kind (forward and backward, summed over the timed steps) and for the
 * optimizer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench/student_bench.h"
#include "core/clock.h"
#include "kernels/optim.h"

static double cpu_s(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_stime.tv_sec + 1e-6 * (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

static int fail(const char *what) {
    fprintf(stderr, "bench/train: %s: %s\n", what, rt_errmsg());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: train CONFIG.json BATCH SEQ STEPS THREADS\n"); return 2; }
    int64_t B = atoll(argv[2]), N = atoll(argv[3]), T = B * N;
    int steps = atoi(argv[4]), threads = atoi(argv[5]);
    sb_setup S;
    const char *what;
    if (sb_open(argv[1], B, N, threads, &S, &what)) return fail(what);
    sm_model *m = S.m;
    sm_acts *a = S.a;
    float *m1 = calloc((size_t)m->n_params, 4), *m2 = calloc((size_t)m->n_params, 4);
    int64_t targets = S.targets;
    double t_opt = 0, t_all = 0, c_all = 0, loss = 0;
    for (int s = 0; s <= steps; s++) {
        if (s == 1) { sm_acts_profile_reset(a); t_opt = 0; }
        double t0 = now_s(), c0 = cpu_s();
        memset(m->grads, 0, (size_t)m->n_params * 4);
        if (sm_forward_backward(m, a, &S.b, 1.0f / (float)targets, &loss, S.pool)) return fail("step");
        double t1 = now_s();
        for (size_t i = 0; i < m->n_tensors; i++) {
            const sm_tensor *x = &m->tensors[i];
            adamw_hparams h = {.lr = 1e-4, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = x->decay ? 0.1 : 0, .step = s + 1};
            adamw_step(m->params + x->offset, m->grads + x->offset, m1 + x->offset, m2 + x->offset, (size_t)x->numel, &h, S.pool);
        }
        double t2 = now_s();
        if (s >= 1) { t_opt += t2 - t1; t_all += t2 - t0; c_all += cpu_s() - c0; }
    }
    printf("params %lld\n", (long long)m->n_params);
    printf("loss %.4f\n", loss / (double)targets);
    printf("tokens_per_s %.1f\n", (double)(T * steps) / t_all);
    printf("tokens_per_cpu_s %.1f\n", (double)(T * steps) / c_all);
    double f[SM_PROF_COUNT], bw[SM_PROF_COUNT];
    sm_acts_profile(a, f, bw);
    for (int c = 0; c < SM_PROF_COUNT; c++)
        printf("time %-16s fwd %7.3f s  bwd %7.3f s  (%4.1f%%)\n", sm_prof_name(c), f[c] / steps, bw[c] / steps,
               100.0 * (f[c] + bw[c]) / t_all);
    printf("time %-16s         %7.3f s        (%4.1f%%)\n", "adamw", t_opt / steps, 100.0 * t_opt / t_all);
    printf("time %-16s         %7.3f s\n", "step total", t_all / steps);
    sb_close(&S);
    free(m1), free(m2);
    return 0;
}
