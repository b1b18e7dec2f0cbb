/* kernels/cpu/gemm_nt_int.h — the streaming decode kernel y = alpha·x·wᵀ (+ bias) (+ beta·y) for
 * few rows of x, written once for every weight type: gemm.c includes it with f32 weights,
 * gemm_bf16.c with bf16 ones (widened in registers, exact), so both sum every output in the
 * same order and their results are the same bits for the same values.
 *
 * Before including, define (x86-64 with GCC/clang only; AVX2 target attributes inside):
 *   NT_W          the weight element type (float, uint16_t)
 *   NT_LOAD8(p)   8 weights at p as an __m256 of f32
 *   NT_TAIL8(p, rem, mask)  the first rem (1..7) weights at p, zeros after, never reading past
 *                 them (mask: the first rem lanes set, for maskload)
 *   NT_PREFIX     the prefix of the three functions defined: PREFIX_tile, PREFIX_tile_any,
 *                 PREFIX_small_nt
 * and include kernels/cpu/vec_int.h. Defines (static): NT_PREFIX##_small_nt(M, N, K, alpha, x,
 * ldx, w, ldw, bias, beta, y, ldy), for M ≤ any; bias (or NULL) is added to every row after
 * alpha·x·wᵀ, then beta·y when beta != 0 (beta = 0 does not read y). No allocation, no errors.
 *
 * A tile of MT rows of x against NT rows of w keeps MT·NT sums of 8 lanes in registers over the
 * whole of k, then reduces each across its lanes (vec_hsum8). Per step of 8 k it loads NT
 * vectors of w and MT of x for MT·NT FMAs: 4×3 fills the 16 ymm registers (12 sums, 3 of w, 1 of
 * x) with 12 independent FMA chains, enough to cover the FMA latency on two pipes. w streams
 * from memory once: the row passes over one tile of w reuse it from L1. k's tail (K mod 8) is
 * one step with zeroed lanes, so every element sums in the same order whatever its tile. */

#define NT_CAT_(a, b) a##_##b
#define NT_CAT(a, b) NT_CAT_(a, b)
#define NT_FN(name) NT_CAT(NT_PREFIX, name)
#define NT_TARGET __attribute__((target("avx2,fma")))
#define NT_INLINE_FN NT_TARGET static inline __attribute__((always_inline))

NT_INLINE_FN void NT_FN(tile)(const int mt, const int nt, int64_t K, float alpha, const float *x, int64_t ldx,
                               const NT_W *w, int64_t ldw, const float *bias, float beta, float *y, int64_t ldy,
                               __m256i tail, int rem, const NT_W *pf) {
    __m256 acc[4][8];
#pragma GCC unroll 4
    for (int r = 0; r < mt; r++)
#pragma GCC unroll 8
        for (int c = 0; c < nt; c++) acc[r][c] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 wv[8];
#pragma GCC unroll 8
        for (int c = 0; c < nt; c++) wv[c] = NT_LOAD8(w + c * ldw + k);
        if (pf && k % (int64_t)(64 / sizeof(NT_W)) == 0)   /* once per 64-byte line of w */
#pragma GCC unroll 8
            for (int c = 0; c < nt; c++) _mm_prefetch((const char *)(pf + c * ldw + k), _MM_HINT_T1);
#pragma GCC unroll 4
        for (int r = 0; r < mt; r++) {
            __m256 xv = _mm256_loadu_ps(x + r * ldx + k);
#pragma GCC unroll 8
            for (int c = 0; c < nt; c++) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
        }
    }
    if (rem) {   /* masked lanes load as 0 and are never touched in memory */
        __m256 wv[8];
#pragma GCC unroll 8
        for (int c = 0; c < nt; c++) wv[c] = NT_TAIL8(w + c * ldw + k, rem, tail);
#pragma GCC unroll 4
        for (int r = 0; r < mt; r++) {
            __m256 xv = _mm256_maskload_ps(x + r * ldx + k, tail);
#pragma GCC unroll 8
            for (int c = 0; c < nt; c++) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < mt; r++)
#pragma GCC unroll 8
        for (int c = 0; c < nt; c++) {
            float *o = y + r * ldy + c, v = alpha * vec_hsum8(acc[r][c]);
            if (bias) v += bias[c];
            *o = beta != 0.0f ? v + beta * *o : v;
        }
}

/* the tile shapes compiled: (mt ≤ 4) × 3, 3 × 4, 2 × 6, 1 × 8, and mt × 1 for the last columns */
NT_TARGET static void NT_FN(tile_any)(int mt, int nt, int64_t K, float alpha, const float *x, int64_t ldx,
                                      const NT_W *w, int64_t ldw, const float *bias, float beta, float *y,
                                      int64_t ldy, __m256i tail, int rem, const NT_W *pf) {
#define NT_CASE(a, b)                                                                        \
    if (mt == a && nt == b) {                                                                \
        NT_FN(tile)(a, b, K, alpha, x, ldx, w, ldw, bias, beta, y, ldy, tail, rem, pf);      \
        return;                                                                              \
    }
    NT_CASE(4, 3) NT_CASE(3, 3) NT_CASE(2, 3) NT_CASE(1, 3) NT_CASE(3, 4) NT_CASE(2, 6) NT_CASE(1, 8)
    NT_CASE(4, 1) NT_CASE(3, 1) NT_CASE(2, 1) NT_CASE(1, 1)
#undef NT_CASE
    assert(!"nt tile shape");
}

NT_TARGET static void NT_FN(small_nt)(int64_t M, int64_t N, int64_t K, float alpha, const float *x, int64_t ldx,
                                      const NT_W *w, int64_t ldw, const float *bias, float beta, float *y,
                                      int64_t ldy) {
    /* columns of w per tile: as many as the registers allow for the rows of x in a pass */
    int nt = M == 1 ? 8 : M == 2 ? 6 : M == 3 ? 4 : 3;
    int rem = (int)(K % 8);
    __m256i tail = vec_tail_mask(rem);
    for (int64_t j = 0; j < N; j += nt) {
        int n = N - j < nt ? (int)(N - j) : nt;
        for (int64_t i = 0; i < M; i += 4) {
            int m = M - i < 4 ? (int)(M - i) : 4;
            const float *xi = x + i * ldx, *bj = bias ? bias + j : NULL;
            float *yi = y + i * ldy + j;
            if (n == nt) {
                /* every pass over a tile of w fetches the next one into L2, so that memory
                 * streams while the FMAs run (the hardware prefetcher alone leaves them waiting;
                 * into L1 it evicts the rows of x: 1.15x slower at 8 rows, and the 1-row product
                 * streams 1.2x faster through L2; prefetching in the first pass only, 1.3x slower
                 * at 8 rows: measured with thread CPU time, w larger than the caches) */
                const NT_W *pf = j + 2 * nt <= N ? w + (j + nt) * ldw : NULL;
                NT_FN(tile_any)(m, nt, K, alpha, xi, ldx, w + j * ldw, ldw, bj, beta, yi, ldy, tail, rem, pf);
            } else {
                for (int q = 0; q < n; q++)
                    NT_FN(tile_any)(m, 1, K, alpha, xi, ldx, w + (j + q) * ldw, ldw, bj ? bj + q : NULL, beta,
                                    yi + q, ldy, tail, rem, NULL);
            }
        }
    }
}

#undef NT_INLINE_FN
#undef NT_TARGET
#undef NT_FN
#undef NT_CAT
#undef NT_CAT_
