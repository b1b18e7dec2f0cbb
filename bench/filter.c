/* bench/filter — per-sample filter throughput on one core: verify + the five text filters
 * + 10-gram decontamination, as `retort filter` runs them on each sample.
 *
 * usage: filter SAMPLES.jsonl BENCH_DIR REPS
 *   SAMPLES.jsonl: {"prompt", "text", "gold"} per line; BENCH_DIR holds the benchmark JSONL
 *   files the decontamination index is built from (gsm8k_test, math500_test, aime24_test).
 * Prints "samples MB MB_per_s samples_per_s" (median of REPS). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/fsutil.h"
#include "filters/decontam.h"
#include "filters/flt.h"
#include "filters/verify.h"

typedef struct {
    char *prompt, *text, *gold;
} sample;

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: filter SAMPLES.jsonl BENCH_DIR REPS\n"); return 2; }
    int reps = atoi(argv[3]);
    FILE *f = fopen(argv[1], "r");
    if (!f) { perror(argv[1]); return 1; }
    sample *s = NULL;
    size_t n = 0, cap = 0, bytes = 0;
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, f) > 0) {
        json_t *o = json_loads(line, 0, NULL);
        if (!o) continue;
        if (n == cap) { cap = cap ? cap * 2 : 1024; s = realloc(s, cap * sizeof *s); }
        s[n].prompt = strdup(json_string_value(json_object_get(o, "prompt")));
        s[n].text = strdup(json_string_value(json_object_get(o, "text")));
        s[n].gold = strdup(json_string_value(json_object_get(o, "gold")));
        bytes += strlen(s[n].text);
        n++;
        json_decref(o);
    }
    free(line);
    fclose(f);
    dc_index *ix;
    if (dc_index_new(10, &ix)) return 1;
    const char *names[] = {"gsm8k_test", "math500_test", "aime24_test"};
    for (int i = 0; i < 3; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s.jsonl", argv[2], names[i]);
        if (dc_index_add_jsonl(ix, p, names[i], NULL, 0, NULL)) { fprintf(stderr, "index %s failed\n", p); return 1; }
    }
    flt_config fc;
    flt_config_default(&fc);
    vf_opts vo;
    vf_opts_default(&vo);
    double *t = calloc((size_t)reps, sizeof *t);
    size_t sink = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        for (size_t i = 0; i < n; i++) {
            flt_split sp;
            flt_split_text(&fc, s[i].text, &sp);
            const char *ans = sp.found ? s[i].text + sp.answer_b : s[i].text;
            vf_result vr;
            if (!vf_verify(&vo, s[i].gold, ans, &vr)) { sink += vr.correct; vf_result_free(&vr); }
            flt_sample fs = {s[i].prompt, s[i].text, "stop", false, -1, -1};
            flt_verdict out[FLT_COUNT];
            size_t nv;
            if (!flt_run(&fc, &fs, out, &nv)) sink += out[0].pass;
            dc_hit h;
            if (!dc_index_find(ix, s[i].prompt, strlen(s[i].prompt), &h)) sink += h.found;
            if (!dc_index_find(ix, s[i].text, strlen(s[i].text), &h)) sink += h.found;
        }
        t[r] = now_s() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_d);
    double med = t[reps / 2];
    fprintf(stderr, "(checksum %zu)\n", sink);
    printf("%zu %.3f %.3f %.1f\n", n, (double)bytes / 1e6, (double)bytes / 1e6 / med, (double)n / med);
    for (size_t i = 0; i < n; i++) { free(s[i].prompt); free(s[i].text); free(s[i].gold); }
    free(s);
    free(t);
    dc_index_free(ix);
    return 0;
}
