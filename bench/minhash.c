/* bench/minhash — MinHash signature throughput on one thread.
 *
 * usage: minhash TEXTS.jsonl REPS
 * Reads {"text": …} lines, computes a 14×8 signature of every text (normalization,
 * word 5-grams, xxhash64, 112 permutations) REPS times, prints "docs MB MB_per_s docs_per_s"
 * (medians). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "filters/minhash.h"
#include "core/clock.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: minhash TEXTS.jsonl REPS\n"); return 2; }
    FILE *f = fopen(argv[1], "r");
    if (!f) { perror(argv[1]); return 1; }
    int reps = atoi(argv[2]);
    if (reps < 1 || reps > 99) reps = 5;
    char **texts = NULL, *line = NULL;
    size_t *lens = NULL, n = 0, cap = 0, lcap = 0, bytes = 0;
    while (getline(&line, &lcap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        const char *t = j ? json_string_value(json_object_get(j, "text")) : NULL;
        if (t) {
            if (n == cap) {
                cap = cap ? 2 * cap : 1024;
                texts = realloc(texts, cap * sizeof *texts);
                lens = realloc(lens, cap * sizeof *lens);
            }
            texts[n] = strdup(t);
            lens[n] = strlen(t);
            bytes += lens[n++];
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    mh_config c;
    mh_config_default(&c);
    mh_hasher *h;
    if (mh_hasher_new(&c, &h)) return 1;
    uint64_t sig[MH_MAX_HASHES], sink = 0;
    double t[100];
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        for (size_t i = 0; i < n; i++) {
            if (mh_signature(h, texts[i], lens[i], sig, NULL)) return 1;
            sink ^= sig[0];
        }
        t[r] = now_s() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_d);
    double med = t[reps / 2];
    printf("%zu %.3f %.3f %.1f\n", n, (double)bytes / 1e6, (double)bytes / 1e6 / med, (double)n / med);
    if (sink == 42) fprintf(stderr, " ");
    for (size_t i = 0; i < n; i++) free(texts[i]);
    free(texts);
    free(lens);
    mh_hasher_free(h);
    return 0;
}
