// kernels/cuda/matmul.cu — bf16 GEMMs through cuBLASLt (contract in kernels/matmul.h).
//
// Row-major to column-major: a row-major D[M,N] is the column-major Dᵀ[N,M], so every
// product is issued as Dᵀ = op(B)ᵀ·op(A)ᵀ with the operands swapped; the linear forward
// (y = x·wᵀ) becomes cuBLAS "TN", its fastest layout. A/B are bf16, the compute type is
// CUBLAS_COMPUTE_32F (f32 accumulation, f32 alpha/beta); D is bf16 or f32. The bias of
// the forward rides in the epilogue (CUBLASLT_EPILOGUE_BIAS: one bf16 per output feature),
// the accumulation of dx and dw in beta = 1, so neither costs a pass over the output.
// Algorithms come from cublasLtMatmulAlgoGetHeuristic, told the real pointer alignment, and
// are cached per context (a small table keyed on shape, strides, types and alignment).
#include <cublasLt.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/common.cuh"
#include "kernels/matmul.h"


// The column-major problem cuBLASLt is given for a row-major D[M,N] = op(A)·op(B): D' (N×M) =
// op1(first) · op2(second), the first operand being B's memory and the second A's. Stored
// shapes are column-major (rows, cols, ld). Pure host arithmetic, checked on the CPU by
// tests/emu/gemm_emu.cpp against a plain column-major BLAS reference.
struct lt_plan {
    int op1_t, op2_t;              // transpose flags of the first (B side) and second (A side) operand
    uint64_t r1, c1, r2, c2;       // stored shapes
    int64_t ld1, ld2;              // = ldb, lda
    uint64_t m, n, k;              // D' is m × n (= N × M), inner k
};
static inline lt_plan lt_plan_for(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb) {
    lt_plan p;
    p.op1_t = tb, p.op2_t = ta;
    p.r1 = (uint64_t)(tb ? K : N), p.c1 = (uint64_t)(tb ? N : K);
    p.r2 = (uint64_t)(ta ? M : K), p.c2 = (uint64_t)(ta ? K : M);
    p.ld1 = ldb, p.ld2 = lda;
    p.m = (uint64_t)N, p.n = (uint64_t)M, p.k = (uint64_t)K;
    return p;
}

#ifndef RT_EMU
#define MM_CACHE 32

typedef struct {
    int64_t m, n, k, lda, ldb, ldd;
    int flags;   // bit0 trans_a, bit1 trans_b, bit2 d_f32, bit3 bias, bit4 beta!=0
    int align;   // min alignment of the pointers (bytes)
    cublasLtMatmulAlgo_t algo;
    bool valid;
} mm_algo_entry;

struct mm_cuda_ctx {
    cublasLtHandle_t lt;
    void *ws;
    size_t ws_bytes;
    mm_algo_entry cache[MM_CACHE];
    int next;
};

extern "C" int mm_cuda_ctx_create(mm_cuda_ctx **out, size_t workspace_bytes) {
    *out = NULL;
    mm_cuda_ctx *c = (mm_cuda_ctx *)calloc(1, sizeof *c);
    if (!c) return rt_fail(RT_ENOMEM, "cuBLASLt context");
    c->ws_bytes = workspace_bytes ? workspace_bytes : (size_t)32 << 20;
    cublasStatus_t s = cublasLtCreate(&c->lt);
    if (s != CUBLAS_STATUS_SUCCESS) {
        free(c);
        return rt_fail(RT_EINTERNAL, "cublasLtCreate: status %d", (int)s);
    }
    cudaError_t e = cudaMalloc(&c->ws, c->ws_bytes);
    if (e != cudaSuccess) {
        cublasLtDestroy(c->lt);
        free(c);
        return rt_fail(RT_ENOMEM, "cuBLASLt workspace of %zu bytes: %s", workspace_bytes, cudaGetErrorString(e));
    }
    *out = c;
    return 0;
}

extern "C" void mm_cuda_ctx_free(mm_cuda_ctx *c) {
    if (!c) return;
    cudaFree(c->ws);
    cublasLtDestroy(c->lt);
    free(c);
}

static int ptr_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int al = 256;
    while (al > 2 && (a % (uintptr_t)al)) al >>= 1;
    return al;
}

// Descriptors are cheap to create (host only); they are made per call and destroyed on return.
struct lt_descs {
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t a = NULL, b = NULL, d = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    ~lt_descs() {
        if (pref) cublasLtMatmulPreferenceDestroy(pref);
        if (d) cublasLtMatrixLayoutDestroy(d);
        if (b) cublasLtMatrixLayoutDestroy(b);
        if (a) cublasLtMatrixLayoutDestroy(a);
        if (op) cublasLtMatmulDescDestroy(op);
    }
};

// D[M,N] = alpha·op(A)·op(B) + beta·D (row-major), optional bias[N] (bf16) in the epilogue.
static int gemm(mm_cuda_ctx *c, void *d, bool d_f32, int64_t ldd, const uint16_t *a, int64_t lda, bool ta,
                const uint16_t *b, int64_t ldb, bool tb, int64_t M, int64_t N, int64_t K, float alpha, float beta,
                const uint16_t *bias, cudaStream_t stream) {
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) return rt_fail(RT_EINVAL, "GEMM with K = %lld", (long long)K);
    lt_plan pl = lt_plan_for(ta, tb, M, N, K, lda, ldb);
    cublasOperation_t opa = pl.op1_t ? CUBLAS_OP_T : CUBLAS_OP_N, opb = pl.op2_t ? CUBLAS_OP_T : CUBLAS_OP_N;
    cudaDataType_t dt = d_f32 ? CUDA_R_32F : CUDA_R_16BF;
    lt_descs ds;
    RT_CUBLAS_TRY(cublasLtMatmulDescCreate(&ds.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    RT_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    RT_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    if (bias) {
        cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bt = CUDA_R_16BF;
        RT_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
        RT_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
        RT_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    }
    RT_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&ds.a, CUDA_R_16BF, pl.r1, pl.c1, pl.ld1));
    RT_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&ds.b, CUDA_R_16BF, pl.r2, pl.c2, pl.ld2));
    RT_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&ds.d, dt, pl.m, pl.n, ldd));

    int al = ptr_align(a), bl = ptr_align(b), dl = ptr_align(d);
    int bial = bias ? ptr_align(bias) : 256;
    int align = al < bl ? al : bl;
    align = align < dl ? align : dl;
    align = align < bial ? align : bial;
    int flags = (ta ? 1 : 0) | (tb ? 2 : 0) | (d_f32 ? 4 : 0) | (bias ? 8 : 0) | (beta != 0.f ? 16 : 0);
    mm_algo_entry *hit = NULL;
    for (int i = 0; i < MM_CACHE; i++) {
        mm_algo_entry *e = &c->cache[i];
        if (e->valid && e->m == M && e->n == N && e->k == K && e->lda == lda && e->ldb == ldb && e->ldd == ldd &&
            e->flags == flags && e->align == align) {
            hit = e;
            break;
        }
    }
    if (!hit) {
        RT_CUBLAS_TRY(cublasLtMatmulPreferenceCreate(&ds.pref));
        RT_CUBLAS_TRY(cublasLtMatmulPreferenceSetAttribute(ds.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c->ws_bytes,
                                                    sizeof c->ws_bytes));
        uint32_t ua = (uint32_t)bl, ub = (uint32_t)al, ud = (uint32_t)dl;   // first operand is B's memory
        RT_CUBLAS_TRY(cublasLtMatmulPreferenceSetAttribute(ds.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &ua, sizeof ua));
        RT_CUBLAS_TRY(cublasLtMatmulPreferenceSetAttribute(ds.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ub, sizeof ub));
        RT_CUBLAS_TRY(cublasLtMatmulPreferenceSetAttribute(ds.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ud, sizeof ud));
        RT_CUBLAS_TRY(cublasLtMatmulPreferenceSetAttribute(ds.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ud, sizeof ud));
        cublasLtMatmulHeuristicResult_t res;
        int n_res = 0;
        RT_CUBLAS_TRY(cublasLtMatmulAlgoGetHeuristic(c->lt, ds.op, ds.a, ds.b, ds.d, ds.d, ds.pref, 1, &res, &n_res));
        if (n_res < 1)
            return rt_fail(RT_EUNSUPPORTED, "cuBLASLt has no algorithm for %lldx%lldx%lld (align %d)", (long long)M,
                           (long long)N, (long long)K, align);
        hit = &c->cache[c->next];
        c->next = (c->next + 1) % MM_CACHE;
        *hit = (mm_algo_entry){M, N, K, lda, ldb, ldd, flags, align, res.algo, true};
    }
    RT_CUBLAS_TRY(cublasLtMatmul(c->lt, ds.op, &alpha, b, ds.a, a, ds.b, &beta, d, ds.d, d, ds.d, &hit->algo, c->ws,
                          c->ws_bytes, stream));
    return 0;
}

extern "C" int mm_gemm_cuda(mm_cuda_ctx *c, void *d, bool d_f32, int64_t ldd, const uint16_t *a, int64_t lda,
                            bool trans_a, const uint16_t *b, int64_t ldb, bool trans_b, int64_t M, int64_t N, int64_t K,
                            float alpha, float beta, void *stream) {
    return gemm(c, d, d_f32, ldd, a, lda, trans_a, b, ldb, trans_b, M, N, K, alpha, beta, NULL, (cudaStream_t)stream);
}

extern "C" int mm_linear_fwd_cuda(mm_cuda_ctx *c, uint16_t *y, const uint16_t *x, const uint16_t *w, const uint16_t *b,
                                  int64_t M, int64_t N, int64_t K, void *stream) {
    return gemm(c, y, false, N, x, K, false, w, K, true, M, N, K, 1.f, 0.f, b, (cudaStream_t)stream);
}

extern "C" int mm_linear_bwd_x_cuda(mm_cuda_ctx *c, uint16_t *dx, bool accumulate_dx, const uint16_t *dy,
                                    const uint16_t *w, int64_t M, int64_t N, int64_t K, void *stream) {
    if (!dx) return 0;
    return gemm(c, dx, false, K, dy, N, false, w, K, false, M, K, N, 1.f, accumulate_dx ? 1.f : 0.f, NULL,
                (cudaStream_t)stream);
}

#endif

// db[n] += Σ_m dy[m,n]: 32 columns per block (one per lane), 8 warps each summing every 8th
// row in order, then the 8 partial sums added in warp order — a fixed order, deterministic.
__global__ static void k_colsum(float *db, const uint16_t *dy, int64_t M, int64_t N) {
    __shared__ float part[8][33];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int64_t n = (int64_t)blockIdx.x * 32 + lane;
    float s = 0.f;
    if (n < N)
        for (int64_t m = warp; m < M; m += 8) s += rtk::bf2f(dy[m * N + n]);
    part[warp][lane] = s;
    __syncthreads();
    if (warp == 0 && n < N) {
        float t = 0.f;
#pragma unroll
        for (int w = 0; w < 8; w++) t += part[w][lane];
        db[n] += t;
    }
}

#ifndef RT_EMU
extern "C" int mm_linear_bwd_w_cuda(mm_cuda_ctx *c, float *dw, float *db, const uint16_t *dy, const uint16_t *x,
                                    int64_t M, int64_t N, int64_t K, void *stream) {
    if (M <= 0) return 0;
    int rc = gemm(c, dw, true, K, dy, N, true, x, K, false, N, K, M, 1.f, 1.f, NULL, (cudaStream_t)stream);
    if (rc) return rc;
    if (db) {
        k_colsum<<<(unsigned)((N + 31) / 32), 256, 0, (cudaStream_t)stream>>>(db, dy, M, N);
        RT_CUDA_LAUNCHED();
    }
    return 0;
}
#endif
