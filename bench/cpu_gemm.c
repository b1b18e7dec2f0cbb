/* bench/cpu_gemm.c — mm_sgemm's kernels side by side, 1 thread, same process, interleaved:
 * OpenBLAS as installed, retort's AVX2+FMA kernel and oneDNN's sgemm (where libdnnl loads), on
 * the shapes of the 56M Qwen2 of bench/train.sh (hidden 512, FFN 2816, 512 tokens: forward NT,
 * input-gradient NN, weight-gradient TN) and of decode (x·wᵀ at batch 1 and 8). Prints GFLOP/s
 * (median of REPS rounds, the kernels alternating within each round), avx2/blas and dnnl/blas.
 * Usage: cpu_gemm [reps]   (prints "skipped" on a CPU without AVX2+FMA) */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/clock.h"
#include "kernels/cpu/gemm_dnnl.h"
#include "kernels/matmul.h"

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 7;
    if (reps < 1 || reps > 99) reps = 7;
    mm_blas_single_thread();
    char line[256];
    printf("bench/cpu_gemm   1 thread; auto choice here: %s\n", mm_gemm_describe(line, sizeof line));
    bool dnnl = mm_dnnl_available();
    printf("  %s\n", mm_dnnl_describe(line, sizeof line));
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
        printf("  skipped: this CPU has no AVX2+FMA (only OpenBLAS can run)\n");
        return 0;
    }
#else
    printf("  skipped: not x86-64\n");
    return 0;
#endif
    struct { const char *name; bool ta, tb; int64_t M, N, K; } sh[] = {
        {"train fwd  x·wᵀ   512x2816x512", false, true, 512, 2816, 512},
        {"train fwd  x·wᵀ   512x512x2816", false, true, 512, 512, 2816},
        {"train dx   dy·w   512x512x2816", false, false, 512, 512, 2816},
        {"train dw   dyᵀ·x  2816x512x512", true, false, 2816, 512, 512},
        {"decode b1  x·wᵀ   1x2816x512", false, true, 1, 2816, 512},
        {"decode b8  x·wᵀ   8x2816x512", false, true, 8, 2816, 512},
        {"decode b1  lm head 1x32000x512", false, true, 1, 32000, 512},
        {"decode b8  lm head 8x32000x512", false, true, 8, 32000, 512},
    };
    printf("  %-32s %10s %10s %10s %10s %10s\n", "shape (MxNxK)", "blas GF/s", "avx2 GF/s", "dnnl GF/s", "avx2/blas",
           "dnnl/blas");
    static const mm_gemm_kernel kern[3] = {MM_GEMM_BLAS, MM_GEMM_AVX2, MM_GEMM_DNNL};
    int nk = dnnl ? 3 : 2;
    for (size_t s = 0; s < sizeof sh / sizeof *sh; s++) {
        int64_t M = sh[s].M, N = sh[s].N, K = sh[s].K;
        float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * N * K), *C = malloc(sizeof(float) * M * N);
        for (int64_t i = 0; i < M * K; i++) A[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
        for (int64_t i = 0; i < N * K; i++) B[i] = (float)((i * 104729) % 1000) / 1000.0f - 0.5f;
        int64_t lda = sh[s].ta ? M : K, ldb = sh[s].tb ? K : N;
        double flop = 2.0 * M * N * K, t[3][100];
        int inner = (int)(2e8 / flop) + 1;
        for (int r = -1; r < reps; r++)
            for (int k = 0; k < nk; k++) {
                double t0 = now_s();
                for (int i = 0; i < inner; i++)
                    mm_sgemm_with(kern[k], sh[s].ta, sh[s].tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, N);
                if (r >= 0) t[k][r] = (now_s() - t0) / inner;   /* round -1 warms up */
            }
        double g[3] = {0, 0, 0};
        for (int k = 0; k < nk; k++) {
            qsort(t[k], reps, sizeof(double), cmp);
            g[k] = flop / t[k][reps / 2] * 1e-9;
        }
        if (dnnl)
            printf("  %-32s %10.1f %10.1f %10.1f %9.2fx %9.2fx\n", sh[s].name, g[0], g[1], g[2], g[1] / g[0], g[2] / g[0]);
        else
            printf("  %-32s %10.1f %10.1f %10s %9.2fx %10s\n", sh[s].name, g[0], g[1], "-", g[1] / g[0], "-");
        free(A), free(B), free(C);
    }
    return 0;
}
