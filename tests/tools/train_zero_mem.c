/* tests/tools/train_zero_mem.c — what a data-parallel CPU trainer holds, per rank.
 *
 *   train_zero_mem CONFIG.json SHARDS ZERO BATCH STEPS
 *
 * Under mpirun (or alone): every rank opens the model of CONFIG (seed 1) lazily, as retort
 * train does (sm_open_random: no weights yet), opens SHARDS, makes the trainer at ZeRO level
 * ZERO (student/train.h, tr_create_dp over comm), runs STEPS steps and prints one line per rank:
 *   {"rank": R, "ranks": P, "zero": Z, "loss": L, "model_params": B, "rss_start": B0, "rss_peak": B1,
 *    "buffers": {NAME: BYTES, ...}}
 * buffers: tr_memory's list; model_params: whether the model still holds a whole parameter or
 * gradient buffer between steps (true/false); rss_start, rss_peak: the process's peak resident
 * bytes (getrusage) before the trainer is made and after the steps. Exit 0, or 1 with the
 * message. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "core/comm.h"
#include "core/json.h"
#include "core/status.h"
#include "student/train.h"

static long long peak_rss(void) {
    struct rusage u;
    return getrusage(RUSAGE_SELF, &u) ? -1 : (long long)u.ru_maxrss * 1024;
}

static int fail(const char *what) {
    fprintf(stderr, "train_zero_mem: %s: %s\n", what, rt_errmsg());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: train_zero_mem CONFIG.json SHARDS ZERO BATCH STEPS\n");
        return 2;
    }
    rt_comm *c;
    if (comm_open(COMM_AUTO, &c)) return fail("comm_open");
    json_t *cfg;
    sm_model *m;
    sd_data *d;
    if (rt_json_load_file(argv[1], &cfg) || sm_open_random(cfg, 1, &m)) return fail(argv[1]);
    json_decref(cfg);
    if (sd_open(argv[2], &d)) return fail(argv[2]);
    tr_options o;
    tr_options_default(&o);
    o.zero = atoi(argv[3]);
    o.batch = atoll(argv[4]);
    o.steps = atoll(argv[5]);
    o.lr = 1e-3;
    long long rss0 = peak_rss();
    tr_trainer *t;
    if (tr_create_dp(m, d, &o, NULL, c, &t)) return fail("tr_create_dp");
    tr_stats st = {0};
    for (int64_t s = 0; s < o.steps; s++)
        if (tr_step(t, &st)) return fail("tr_step");
    tr_buffer b[TR_MAX_BUFFERS];
    int n = tr_memory(t, b);
    const sm_model *tm = tr_model(t);
    printf("{\"rank\": %d, \"ranks\": %d, \"zero\": %d, \"loss\": %.9g, \"model_params\": %s, \"rss_start\": %lld, "
           "\"rss_peak\": %lld, \"buffers\": {", comm_rank(c), comm_size(c), o.zero, st.loss,
           tm->params || tm->grads ? "true" : "false", rss0, peak_rss());
    for (int i = 0; i < n; i++) printf("%s\"%s\": %lld", i ? ", " : "", b[i].name, (long long)b[i].bytes);
    printf("}}\n");
    fflush(stdout);
    tr_free(t);
    comm_close(c);
    return 0;
}
