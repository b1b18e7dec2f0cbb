/* bench/kd.c — logit distillation's cost on the CPU trainer: a KD step against an SFT step.
 *
 *   kd CONFIG.json BATCH SEQ STEPS THREADS [LOSS [TEMPERATURE]]
 *
 * Random-init model from CONFIG and a random batch (one document per sequence, every next
 * token a target), each target with a teacher top-20 (distinct random ids, descending
 * logprobs). STEPS forward+backward passes of each kind, interleaved (SFT, KD, SFT, …) after
 * one warm-up of each, so drift on a shared machine hits both; prints the median seconds of
 * each and their ratio KD / SFT (the peer is the SFT step of the same run). The optimizer
 * update is the same for both and left out. LOSS: forward (default), reverse, jsd:B, uld. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/student_bench.h"
#include "core/clock.h"
#include "kernels/loss.h"

static int fail(const char *what) {
    fprintf(stderr, "bench/kd: %s: %s\n", what, rt_errmsg());
    return 1;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 6 || argc > 8) {
        fprintf(stderr, "usage: kd CONFIG.json BATCH SEQ STEPS THREADS [LOSS [TEMPERATURE]]\n");
        return 2;
    }
    int64_t B = atoll(argv[2]), N = atoll(argv[3]), T = B * N;
    int steps = atoi(argv[4]), threads = atoi(argv[5]);
    kd_spec kd = {.kind = KD_FORWARD, .alpha = 0.5, .temperature = argc > 7 ? atof(argv[7]) : 1.0, .k = KD_MAX_K};
    if (argc > 6 && kd_parse_kind(argv[6], &kd.kind, &kd.beta)) return fail("loss");
    sb_setup S;
    const char *what;
    if (sb_open(argv[1], B, N, threads, &S, &what)) return fail(what);
    sm_model *m = S.m;
    uint8_t *tn = malloc((size_t)T);
    int32_t *tid = malloc((size_t)T * KD_MAX_K * 4);
    float *tlp = malloc((size_t)T * KD_MAX_K * 4);
    for (int64_t t = 0; t < T; t++) {   /* a teacher top-20 at every position: distinct ids, a stride through the vocabulary */
        tn[t] = KD_MAX_K;
        for (int k = 0; k < KD_MAX_K; k++) {
            tid[t * KD_MAX_K + k] = (int32_t)(((uint64_t)S.tok[t] + 7919u * (uint64_t)k) % (uint64_t)m->V);
            tlp[t * KD_MAX_K + k] = -0.3f - 0.4f * (float)k;
        }
    }
    kd.top_n = tn;
    kd.top_ids = tid;
    kd.top_lps = tlp;
    double *ts = malloc(sizeof(double) * (size_t)steps), *tk = malloc(sizeof(double) * (size_t)steps), loss = 0;
    for (int s = -1; s < steps; s++)
        for (int kind = 0; kind < 2; kind++) {
            sm_acts_set_kd(S.a, kind ? &kd : NULL);
            memset(m->grads, 0, (size_t)m->n_params * 4);
            double t0 = now_s();
            if (sm_forward_backward(m, S.a, &S.b, 1.0f / (float)S.targets, &loss, S.pool)) return fail("step");
            double dt = now_s() - t0;
            if (s >= 0) (kind ? tk : ts)[s] = dt;
        }
    qsort(ts, (size_t)steps, sizeof *ts, cmp_d);
    qsort(tk, (size_t)steps, sizeof *tk, cmp_d);
    double ms = ts[steps / 2], mk = tk[steps / 2];
    printf("params %lld\n", (long long)m->n_params);
    printf("sft_step_s %.4f\n", ms);
    printf("kd_step_s %.4f\n", mk);
    printf("ratio %.3f\n", mk / ms);
    sb_close(&S);
    free(tn), free(tid), free(tlp), free(ts), free(tk);
    return 0;
}
