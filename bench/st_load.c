/* bench/st_load.c — load every tensor of a safetensors checkpoint into f32 (BF16/F16/FP8 →
 * f32 through kernels/convert), the way the trainer and engine load weights.
 *   st_load DIR_OR_FILE REPEATS     prints "seconds GB" per repeat, one line each */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/clock.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "kernels/convert.h"

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: st_load PATH REPEATS\n"); return 2; }
    int reps = atoi(argv[2]);
    for (int r = 0; r < reps; r++) {
        double t0 = now_s(), bytes = 0, sum = 0;
        st_file *f;
        if (st_open(argv[1], &f)) { fprintf(stderr, "st_load: %s\n", rt_errmsg()); return 1; }
        for (size_t i = 0; i < st_count(f); i++) {
            const st_tensor *t = st_get(f, i);
            float *x = malloc(t->nelem * sizeof *x + 1);
            if (!x || cvt_to_f32(t->dtype, t->data, x, t->nelem)) { fprintf(stderr, "st_load: %s\n", rt_errmsg()); return 1; }
            if (t->nelem) sum += x[0];
            bytes += (double)t->nbytes;
            free(x);
        }
        st_close(f);
        printf("%.6f %.6f %g\n", now_s() - t0, bytes / 1e9, sum);
    }
    return 0;
}
