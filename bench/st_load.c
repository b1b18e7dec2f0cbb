/* bench/st_load.c — load every tensor of a safetensors checkpoint into f32 (BF16/F16/FP8 →
 * f32) the way the trainer and engine load weights: st_open (mmap), one rt_big_alloc'd f32
 * buffer per tensor (core/alloc.h), filled by cvt_to_f32_fill (kernels/convert.h: 1 MiB
 * chunks, each prefaulted in one system call right before it is written, split over THREADS
 * threads), every buffer kept until the whole checkpoint is loaded; freeing is outside the
 * timing, the thread pool's start inside it.
 *   st_load DIR_OR_FILE REPEATS [THREADS]      (THREADS: default 1)
 * prints "wall_s cpu_s GB checksum" per repeat, one line each (cpu: user + sys of the process). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "kernels/convert.h"

static double cpu_s(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_stime.tv_sec + 1e-6 * (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) { fprintf(stderr, "usage: st_load PATH REPEATS [THREADS]\n"); return 2; }
    int reps = atoi(argv[2]), threads = argc == 4 ? atoi(argv[3]) : 1;
    if (threads < 1) { fprintf(stderr, "st_load: THREADS must be at least 1, got %s\n", argv[3]); return 2; }
    for (int r = 0; r < reps; r++) {
        double t0 = now_s(), c0 = cpu_s(), bytes = 0, sum = 0;
        tp_pool *pool = NULL;
        st_file *f;
        if ((threads > 1 && tp_create(threads, &pool)) || st_open(argv[1], &f)) {
            fprintf(stderr, "st_load: %s\n", rt_errmsg());
            return 1;
        }
        size_t n = st_count(f);
        float **x = rt_calloc(n ? n : 1, sizeof *x);
        if (!x) { fprintf(stderr, "st_load: %s\n", rt_errmsg()); return 1; }
        for (size_t i = 0; i < n; i++) {
            const st_tensor *t = st_get(f, i);
            x[i] = rt_big_alloc(t->nelem * sizeof **x);
            if (!x[i] || cvt_to_f32_fill(t->dtype, t->data, x[i], t->nelem, pool)) {
                fprintf(stderr, "st_load: %s\n", rt_errmsg());
                return 1;
            }
            if (t->nelem) sum += x[i][0];
            bytes += (double)t->nbytes;
        }
        st_close(f);
        double wall = now_s() - t0, cpu = cpu_s() - c0;
        tp_free(pool);
        for (size_t i = 0; i < n; i++) rt_big_free(x[i]);
        free(x);
        printf("%.6f %.6f %.6f %g\n", wall, cpu, bytes / 1e9, sum);
    }
    return 0;
}
