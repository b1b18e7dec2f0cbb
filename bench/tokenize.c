/* bench/tokenize.c — retort's side of bench/tokenize.sh.
 *
 * usage: tokenize TOKENIZER.json TEXTS.jsonl THREADS REPS
 * Prints one line: "load_ms MB_per_s_1_thread MB_per_s_THREADS bytes" — each a median of
 * REPS runs. Single-thread encoding calls tok_encode text by text; the threaded run is one
 * tok_encode_batch on a pool of THREADS.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "core/tokenizer.h"

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[n / 2];
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s TOKENIZER.json TEXTS.jsonl THREADS REPS\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[3]), reps = atoi(argv[4]);
    if (reps < 1 || reps > 100) reps = 5;
    FILE *f = fopen(argv[2], "r");
    if (!f) return perror(argv[2]), 1;
    size_t n = 0, cap = 0, bytes = 0;
    char **texts = NULL;
    size_t *lens = NULL;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) >= 0) {
        json_t *j = json_loadb(line, (size_t)len, JSON_ALLOW_NUL, NULL);
        json_t *s = j ? json_object_get(j, "text") : NULL;
        if (!json_is_string(s)) return fprintf(stderr, "bad line %zu\n", n + 1), 1;
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            texts = realloc(texts, cap * sizeof *texts);
            lens = realloc(lens, cap * sizeof *lens);
        }
        lens[n] = json_string_length(s);
        texts[n] = malloc(lens[n] + 1);
        memcpy(texts[n], json_string_value(s), lens[n] + 1);
        bytes += lens[n++];
        json_decref(j);
    }
    free(line);
    fclose(f);

    double load[100], one[100], many[100];
    tok_tokenizer *t = NULL;
    for (int r = 0; r < reps; r++) {
        tok_free(t);
        double t0 = now_s();
        if (tok_load(argv[1], &t)) return fprintf(stderr, "%s\n", rt_errmsg()), 1;
        load[r] = (now_s() - t0) * 1e3;
    }
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        for (size_t i = 0; i < n; i++) {
            int32_t *ids;
            size_t k;
            if (tok_encode(t, texts[i], lens[i], false, &ids, &k)) return fprintf(stderr, "%s\n", rt_errmsg()), 1;
            free(ids);
        }
        one[r] = bytes / 1e6 / (now_s() - t0);
    }
    tp_pool *pool;
    if (tp_create(threads, &pool)) return 1;
    int32_t **ids = malloc(n * sizeof *ids);
    size_t *k = malloc(n * sizeof *k);
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        if (tok_encode_batch(t, (const char *const *)texts, lens, n, false, pool, ids, k))
            return fprintf(stderr, "%s\n", rt_errmsg()), 1;
        many[r] = bytes / 1e6 / (now_s() - t0);
        for (size_t i = 0; i < n; i++) free(ids[i]);
    }
    printf("%.1f %.2f %.2f %zu\n", median(load, reps), median(one, reps), median(many, reps), bytes);
    tp_free(pool);
    tok_free(t);
    for (size_t i = 0; i < n; i++) free(texts[i]);
    free(texts);
    free(lens);
    free(ids);
    free(k);
    return 0;
}
