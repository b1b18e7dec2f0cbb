/* kernels/cpu/gemm_bf16.c — y = x·wᵀ (+ b) with w held in bf16 and widened to f32 in registers
 * (contract in kernels/matmul.h, section "bf16 weights on the CPU").
 *
 * bf16 → f32 is exact (the 16 bits shifted left by 16), so a kernel that does the f32 kernel's
 * FMAs in the f32 kernel's order on the widened w gives its bits. Two paths, chosen like
 * mm_sgemm chooses for the same shape:
 *   - decode (M ≤ MM_SMALL_M) on an AVX2 CPU unless RETORT_GEMM=blas: gemm.c's streaming
 *     kernel with w loaded as 8 bf16 (vpmovzxwd + vpslld): every output is one 8-lane FMA chain
 *     over k in steps of 8 (the K mod 8 tail as one step with zeroed lanes) reduced by the same
 *     horizontal sum, whatever its register tile, so the tile shapes here need not follow
 *     gemm.c's, only that chain. It reads half the bytes of the f32 kernel;
 *   - otherwise: a block of w's rows is widened into a stack panel and mm_sgemm runs on it,
 *     K whole. Under retort's kernels an output of mm_sgemm depends on K's blocking only, not
 *     on which columns share a call, so the blocks give the bits of one product; OpenBLAS's
 *     sums do depend on the columns of the call (tests/unit/test_kernels_gemm_bf16.c measures
 *     both), so there the result is within f32 summation-order error. The panel holds ≥ 16
 *     rows (a multiple of 16) for K ≤ 8192. K > PANEL floats (no dense model has one) is
 *     summed in chunks of PANEL columns.
 * The horizontal sum is vec_int.h's vec_hsum8, the one gemm.c's kernel uses, and the decode
 * rule is gemm.c's own (mm_gemm_decode_streams). */
#include "kernels/matmul.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/convert.h"
#include "kernels/cpu/vec_int.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RT_BF16_X86 1
#include <immintrin.h>
#endif

/* floats of the widened block of w: 512 KiB of stack (with mm_sgemm's ~360 KiB, under 1 MiB);
 * at 256 KiB the prefill of bench/generate.sh's Llama shape (256 tokens, 1 thread) took 1.10x the
 * f32 copies' CPU time, at 512 KiB 1.02-1.06x, at 1 MiB 1.03x */
enum { PANEL = 128 * 1024 };

#ifdef RT_BF16_X86
#define AVX2 __attribute__((target("avx2,fma")))
#define BF_INLINE AVX2 static inline __attribute__((always_inline))

BF_INLINE __m256 load8(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

/* the first rem (1..7) of 8 bf16 at p, zeros after (the lanes gemm.c's masked load zeroes) */
BF_INLINE __m256 tail8(const uint16_t *p, int rem) {
    uint16_t t[8] = {0};
    memcpy(t, p, (size_t)rem * sizeof *t);
    return load8(t);
}

/* gemm.c's streaming kernel, on bf16 w */
#define NT_W uint16_t
#define NT_LOAD8(p) load8(p)
#define NT_TAIL8(p, rem, mask) tail8((p), (rem))
#define NT_PREFIX bf16
#include "kernels/cpu/gemm_nt_int.h"
#endif

/* y[:, j0:j0+n] = x · w[j0:j0+n, k0:k0+kc]ᵀ (+ y when accumulate, else + b when b) through an
 * f32 panel, the way the f32 linear layers call mm_sgemm (bias first, then beta = 1) */
static void panel_gemm(int64_t M, int64_t n, int64_t kc, const float *x, int64_t ldx, const uint16_t *w, int64_t ldw,
                       const float *b, bool accumulate, float *y, int64_t ldy, float *panel) {
    for (int64_t j = 0; j < n; j++) cvt_bf16_to_f32(w + j * ldw, panel + j * kc, (size_t)kc);
    if (!accumulate && b)
        for (int64_t i = 0; i < M; i++) memcpy(y + i * ldy, b, (size_t)n * sizeof(float));
    mm_sgemm(false, true, M, n, kc, 1.0f, x, ldx, panel, kc, accumulate || b ? 1.0f : 0.0f, y, ldy);
}

void mm_sgemm_bf16(int64_t M, int64_t N, int64_t K, const float *x, int64_t ldx, const uint16_t *w, int64_t ldw,
                   const float *b, float *y, int64_t ldy) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) y[i * ldy + j] = b ? b[j] : 0.0f;
        return;
    }
#ifdef RT_BF16_X86
    if (M <= MM_SMALL_M && mm_gemm_decode_streams()) {
        bf16_small_nt(M, N, K, 1.0f, x, ldx, w, ldw, b, 0.0f, y, ldy);
        return;
    }
#endif
    float panel[PANEL] __attribute__((aligned(64)));
    if (K <= PANEL) {
        int64_t nb = PANEL / K;
        if (nb > N) nb = N;
        if (nb >= 16) nb -= nb % 16;
        for (int64_t j = 0; j < N; j += nb) {
            int64_t n = N - j < nb ? N - j : nb;
            panel_gemm(M, n, K, x, ldx, w + j * ldw, ldw, b ? b + j : NULL, false, y + j, ldy, panel);
        }
        return;
    }
    for (int64_t j = 0; j < N; j++)   /* one row of w at a time, in chunks of PANEL columns */
        for (int64_t k = 0; k < K; k += PANEL) {
            int64_t kc = K - k < PANEL ? K - k : PANEL;
            panel_gemm(M, 1, kc, x + k, ldx, w + j * ldw + k, ldw, b ? b + j : NULL, k > 0, y + j, ldy, panel);
        }
}

bool mm_bf16_streams(void) { return vec_avx2(); }

/* ---- pool splits (as kernels/cpu/matmul.c's mm_linear_fwd and mm_linear_fwd_cols) ---- */

typedef struct {
    float *y;
    const float *x, *b;
    const uint16_t *w;
    int64_t M, N, K;
} bf_ctx;

static void fwd_rows(void *p, size_t begin, size_t end, int thread) {
    const bf_ctx *c = p;
    (void)thread;
    mm_sgemm_bf16((int64_t)(end - begin), c->N, c->K, c->x + (int64_t)begin * c->K, c->K, c->w, c->K, c->b,
                  c->y + (int64_t)begin * c->N, c->N);
}

void mm_linear_fwd_bf16(float *y, const float *x, const uint16_t *w, const float *b, int64_t M, int64_t N, int64_t K,
                        tp_pool *pool) {
    if (M <= 0 || N <= 0) return;
    bf_ctx c = {.y = y, .x = x, .b = b, .w = w, .M = M, .N = N, .K = K};
    tp_parallel_for(pool, (size_t)M, fwd_rows, &c);
}

static void fwd_cols(void *p, size_t begin, size_t end, int thread) {
    const bf_ctx *c = p;
    (void)thread;
    int64_t j0 = (int64_t)begin * MM_COL_BLOCK, j1 = (int64_t)end * MM_COL_BLOCK;
    if (j1 > c->N) j1 = c->N;
    mm_sgemm_bf16(c->M, j1 - j0, c->K, c->x, c->K, c->w + j0 * c->K, c->K, c->b ? c->b + j0 : NULL, c->y + j0, c->N);
}

void mm_linear_fwd_cols_bf16(float *y, const float *x, const uint16_t *w, const float *b, int64_t M, int64_t N,
                             int64_t K, tp_pool *pool) {
    if (M <= 0 || N <= 0) return;
    bf_ctx c = {.y = y, .x = x, .b = b, .w = w, .M = M, .N = N, .K = K};
    tp_parallel_for(pool, (size_t)((N + MM_COL_BLOCK - 1) / MM_COL_BLOCK), fwd_cols, &c);
}
