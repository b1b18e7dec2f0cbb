// kernels/cuda/loss.cu — the LM head fused with cross-entropy, in chunks of rows (contract in
// kernels/loss.h, CPU twin ce_fused in kernels/cpu/loss.c).
//
// Per chunk of at most `chunk` rows (with the 151,936-token Qwen vocabulary and 32k tokens,
// chunk = 2048 keeps the logits at 1.2 GB instead of 19.9 GB):
//   1. gather the chunk's hidden rows (only when a row list is given; else h is used in place)
//   2. logits[c,V] (f32) = h_c·wᵀ                          cuBLASLt, bf16 in, f32 out
//   3. one 1024-thread block per row: online max/sum-of-exp over the row in one read
//      (each thread keeps its own running max and sum, merged in a fixed tree), the row loss
//      lse − z[target] in double, then a second read writes dz = scale·(softmax − onehot) in bf16
//   4. dh_c = dz·w (bf16), scattered to dh; dw (f32) += dzᵀ·h_c (beta = 1)
//   5. the chunk's row losses summed in row order into *loss_sum (one block, fixed order)
// All on one stream, chunks in order: deterministic. The logits never exist beyond one chunk.
// kd_fused_cuda: the same with k_softmax_kd in step 3 (logit distillation over the teacher's
// top-k + a tail bucket; ULD finds the student's n largest logits by n block argmax passes).
#include <stdlib.h>

#include "kernels/cuda/common.cuh"
#include "kernels/loss.h"
#include "kernels/matmul.h"

using namespace rtk;

struct ce_cuda_ws {
    int64_t chunk, V, D;
    mm_cuda_ctx *mm;
    uint16_t *hc, *dhc;   // [chunk, D] bf16
    float *logits;        // [chunk, V]
    uint16_t *dz;         // [chunk, V] bf16
    double *row_loss;     // [chunk]
    double *row_ce, *row_kd;   // [chunk] each: kd_fused_cuda's parts
};

#ifndef RT_EMU
extern "C" void ce_cuda_ws_free(ce_cuda_ws *ws) {
    if (!ws) return;
    cudaFree(ws->hc);
    cudaFree(ws->dhc);
    cudaFree(ws->logits);
    cudaFree(ws->dz);
    cudaFree(ws->row_loss);
    cudaFree(ws->row_ce);
    cudaFree(ws->row_kd);
    mm_cuda_ctx_free(ws->mm);
    free(ws);
}

extern "C" int ce_cuda_ws_create(ce_cuda_ws **out, int64_t chunk, int64_t V, int64_t D) {
    *out = NULL;
    if (chunk <= 0 || V <= 0 || D <= 0 || D % 8 || V % 8)
        return rt_fail(RT_EINVAL, "ce_cuda_ws_create: chunk %lld, V %lld, D %lld (V and D multiples of 8)",
                       (long long)chunk, (long long)V, (long long)D);
    ce_cuda_ws *ws = (ce_cuda_ws *)calloc(1, sizeof *ws);
    if (!ws) return rt_fail(RT_ENOMEM, "cross-entropy workspace");
    ws->chunk = chunk, ws->V = V, ws->D = D;
    int rc = mm_cuda_ctx_create(&ws->mm, 0);
    if (rc) {
        free(ws);
        return rt_errorf(rc, "cross-entropy workspace");
    }
    if (cudaMalloc((void **)&ws->hc, (size_t)(chunk * D) * 2) != cudaSuccess ||
        cudaMalloc((void **)&ws->dhc, (size_t)(chunk * D) * 2) != cudaSuccess ||
        cudaMalloc((void **)&ws->logits, (size_t)(chunk * V) * 4) != cudaSuccess ||
        cudaMalloc((void **)&ws->dz, (size_t)(chunk * V) * 2) != cudaSuccess ||
        cudaMalloc((void **)&ws->row_loss, (size_t)chunk * 8) != cudaSuccess ||
        cudaMalloc((void **)&ws->row_ce, (size_t)chunk * 8) != cudaSuccess ||
        cudaMalloc((void **)&ws->row_kd, (size_t)chunk * 8) != cudaSuccess) {
        cudaGetLastError();
        ce_cuda_ws_free(ws);
        return rt_fail(RT_ENOMEM, "cross-entropy workspace for %lld rows of %lld logits (%.2f GB of device memory)",
                       (long long)chunk, (long long)V, (double)chunk * (double)(V * 6 + D * 4) / 1e9);
    }
    *out = ws;
    return 0;
}
#endif

// dst[i] = src[rows[r0 + i]] (rows of D bf16), 16-byte vectors.
__global__ static void k_gather(uint16_t *dst, const uint16_t *src, const int32_t *rows, int64_t n, int64_t D) {
    int64_t dv = D / 8, tot = n * dv;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < tot; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / dv, c = i % dv;
        ((uint4 *)dst)[r * dv + c] = ((const uint4 *)src)[(int64_t)rows[r] * dv + c];
    }
}
__global__ static void k_scatter(uint16_t *dst, const uint16_t *src, const int32_t *rows, int64_t n, int64_t D) {
    int64_t dv = D / 8, tot = n * dv;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < tot; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / dv, c = i % dv;
        ((uint4 *)dst)[(int64_t)rows[r] * dv + c] = ((const uint4 *)src)[r * dv + c];
    }
}

#define SM_T 1024

// One block per row r of the chunk (global row index grow = rows ? rows[r0 + r] : r0 + r).
__global__ static void __launch_bounds__(SM_T) k_softmax_ce(double *row_loss, uint16_t *dz, const float *logits,
                                                            const int32_t *target, const int32_t *rows, int64_t r0,
                                                            int64_t V, float scale, int grad) {
    __shared__ float shm[32], shs[32];
    int64_t r = blockIdx.x;
    int64_t grow = rows ? rows[r0 + r] : r0 + r;
    int32_t y = target[grow];
    const float *z = logits + r * V;
    uint16_t *d = dz + r * V;
    if (y < 0) {   // no target: no loss, zero gradient row
        if (grad)
            for (int64_t j = threadIdx.x; j < V; j += SM_T) d[j] = 0;
        if (threadIdx.x == 0) row_loss[r] = 0.0;
        return;
    }
    // online max / sum of exp per thread
    float m = -INFINITY, s = 0.f;
    const float4 *z4 = (const float4 *)z;
    int64_t v4 = V / 4;   // V % 8 == 0
    for (int64_t j = threadIdx.x; j < v4; j += SM_T) {
        float4 q = z4[j];
        float mx = fmaxf(fmaxf(q.x, q.y), fmaxf(q.z, q.w));
        if (mx > m) {
            s *= expf(m - mx);
            m = mx;
        }
        s += expf(q.x - m) + expf(q.y - m) + expf(q.z - m) + expf(q.w - m);
    }
    // merge (m, s) pairs in a fixed tree: first the block max, then the rescaled sums
    float gm = block_max(m, shm);
    float gs = block_sum(m == -INFINITY ? 0.f : s * expf(m - gm), shs);
    if (threadIdx.x == 0) row_loss[r] = (double)gm + log((double)gs) - (double)z[y];
    if (!grad) return;
    float k = scale / gs;
    uint2 *d4 = (uint2 *)d;
    for (int64_t j = threadIdx.x; j < v4; j += SM_T) {
        float4 q = z4[j];
        float p0 = expf(q.x - gm) * k, p1 = expf(q.y - gm) * k, p2 = expf(q.z - gm) * k, p3 = expf(q.w - gm) * k;
        int64_t b = j * 4;
        if (y >= b && y < b + 4) {
            int o = (int)(y - b);
            if (o == 0) p0 -= scale;
            if (o == 1) p1 -= scale;
            if (o == 2) p2 -= scale;
            if (o == 3) p3 -= scale;
        }
        d4[j] = make_uint2(pack_bf2(p0, p1), pack_bf2(p2, p3));
    }
}

// *out (= or +=) Σ row_loss[0..n) in a fixed order.
__global__ static void k_loss_total(double *out, const double *row_loss, int64_t n, int first) {
    __shared__ double sh[32];
    double s = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += row_loss[i];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    s = warp_sum_d(s);
    if (lane == 0) sh[warp] = s;
    __syncthreads();
    if (warp == 0) {
        s = lane < (int)(blockDim.x >> 5) ? sh[lane] : 0.0;
        s = warp_sum_d(s);
        if (lane == 0) *out = first ? s : *out + s;
    }
}


// ---- logit distillation (kd_fused's twin; the formulas in kernels/loss.h and docs/student.md) ----

struct kd_dev {   // kd_spec with device pointers, by value
    int kind, k;
    double alpha, temp, beta;
    const int32_t *top_ids;
    const float *top_lps;
    const uint8_t *top_n;
};

// "a before b": larger value, then lower index; i < 0 is nothing.
__device__ __forceinline__ bool kd_before(float av, int ai, float bv, int bi) {
    return ai >= 0 && (bi < 0 || av > bv || (av == bv && ai < bi));
}

// The block's first (value, index) in that order; every thread gets it. shv/shi: 32 entries.
__device__ __forceinline__ void kd_block_argmax(float &v, int &i, float *shv, int *shi) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (kd_before(ov, oi, v, i)) v = ov, i = oi;
    }
    __syncthreads();
    if (lane == 0) shv[warp] = v, shi[warp] = i;
    __syncthreads();
    v = lane < nw ? shv[lane] : -INFINITY;
    i = lane < nw ? shi[lane] : -1;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (kd_before(ov, oi, v, i)) v = ov, i = oi;
    }
}

// One block per row r of the chunk, as k_softmax_ce; the row's bucket arithmetic (≤ 21
// buckets) runs in thread 0 in double, the passes over V in every thread.
__global__ static void __launch_bounds__(SM_T) k_softmax_kd(double *row_loss, double *row_ce, double *row_kd,
                                                            uint16_t *dz, const float *logits, const int32_t *target,
                                                            const int32_t *rows, int64_t r0, int64_t V, float scale,
                                                            int grad, kd_dev kd) {
    __shared__ float shm[32], shs[32], sht[32];
    __shared__ int shi[32];
    __shared__ int sid[KD_MAX_K];
    __shared__ float sval[KD_MAX_K];
    __shared__ float topg[KD_MAX_K];
    __shared__ double coef[3];   // kce, ktail, cce
    int64_t r = blockIdx.x;
    int64_t grow = rows ? rows[r0 + r] : r0 + r;
    int32_t y = target[grow];
    const float *z = logits + r * V;
    uint16_t *d = dz + r * V;
    if (y < 0) {
        if (grad)
            for (int64_t j = threadIdx.x; j < V; j += SM_T) d[j] = 0;
        if (threadIdx.x == 0) row_loss[r] = row_ce[r] = row_kd[r] = 0.0;
        return;
    }
    float invT = (float)(1.0 / kd.temp);
    bool t1 = kd.temp == 1.0;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < V; j += SM_T) m = fmaxf(m, z[j]);
    float gm = block_max(m, shm);
    float s1 = 0.f, sT = 0.f;
    for (int64_t j = threadIdx.x; j < V; j += SM_T) {
        float e = z[j] - gm;
        s1 += expf(e);
        if (!t1) sT += expf(e * invT);
    }
    float S1 = block_sum(s1, shs), ST = t1 ? S1 : block_sum(sT, sht);
    int n = kd.top_n[grow];
    if (n > 0 && kd.kind == KD_ULD) {   // the student's n largest logits, in order
        float pv = INFINITY;
        int pi = -1;
        for (int b = 0; b < n; b++) {
            float bv = -INFINITY;
            int bi = -1;
            for (int64_t j = threadIdx.x; j < V; j += SM_T) {
                float v = z[j];
                bool after = v < pv || (v == pv && (int)j > pi);   // strictly after the last one taken
                if (after && kd_before(v, (int)j, bv, bi)) bv = v, bi = (int)j;
            }
            kd_block_argmax(bv, bi, shm, shi);
            if (threadIdx.x == 0) sid[b] = bi;
            pv = bv, pi = bi;
        }
    } else if (threadIdx.x < n) {
        sid[threadIdx.x] = kd.top_ids[grow * kd.k + threadIdx.x];
    }
    __syncthreads();
    if (threadIdx.x < n) sval[threadIdx.x] = z[sid[threadIdx.x]];
    __syncthreads();
    if (threadIdx.x == 0) {
        double A = kd.alpha, T = kd.temp, ce = (double)gm + log((double)S1) - (double)z[y];
        row_ce[r] = ce;
        if (n == 0) {
            row_kd[r] = 0;
            row_loss[r] = ce;
            coef[0] = (double)scale / (double)S1, coef[1] = 0, coef[2] = scale;
        } else {
            double P[KD_MAX_K + 1], lq[KD_MAX_K + 1], q[KD_MAX_K + 1], sumP = 0;
            const float *lp = kd.top_lps + grow * kd.k;
            for (int b = 0; b < n; b++) sumP += (P[b] = exp((double)lp[b]));
            P[n] = 1.0 - sumP > 0 ? 1.0 - sumP : 0;
            if (kd.kind == KD_ULD)
                for (int b = 1; b < n; b++)
                    for (int a = b; a > 0 && P[a] > P[a - 1]; a--) { double t = P[a]; P[a] = P[a - 1]; P[a - 1] = t; }
            double lmax = -INFINITY, lsum = 0;
            for (int b = 0; b <= n; b++) {
                lq[b] = log(P[b] > KD_TEACHER_FLOOR ? P[b] : KD_TEACHER_FLOOR) / T;
                lmax = lq[b] > lmax ? lq[b] : lmax;
            }
            for (int b = 0; b <= n; b++) lsum += exp(lq[b] - lmax);
            for (int b = 0; b <= n; b++) { lq[b] -= lmax + log(lsum); q[b] = exp(lq[b]); }
            double s[KD_MAX_K + 1], ls[KD_MAX_K + 1], sumS = 0, logST = log((double)ST);
            for (int b = 0; b < n; b++) sumS += (s[b] = exp(ls[b] = (double)(sval[b] - gm) / T - logST));
            s[n] = 1.0 - sumS > 0 ? 1.0 - sumS : 0;
            ls[n] = log(s[n] > 1e-300 ? s[n] : 1e-300);
            double D = 0, g[KD_MAX_K + 1], sg[KD_MAX_K + 1], gbar = 0;
            for (int b = 0; b <= n; b++) {
                if (kd.kind == KD_FORWARD) {
                    D += q[b] * (lq[b] - ls[b]);
                    g[b] = -q[b] / (s[b] > 1e-300 ? s[b] : 1e-300);
                    sg[b] = -q[b];
                } else if (kd.kind == KD_REVERSE) {
                    if (s[b] > 0) D += s[b] * (ls[b] - lq[b]);
                    g[b] = ls[b] - lq[b] + 1;
                    sg[b] = s[b] * g[b];
                } else if (kd.kind == KD_JSD) {
                    double be = kd.beta, mm = be * q[b] + (1 - be) * s[b], lm = log(mm);
                    D += be * q[b] * (lq[b] - lm);
                    if (s[b] > 0) D += (1 - be) * s[b] * (ls[b] - lm);
                    g[b] = s[b] > 0 ? (1 - be) * (ls[b] - lm) : 0;
                    sg[b] = s[b] * g[b];
                } else {
                    D += fabs(s[b] - q[b]);
                    g[b] = (double)(s[b] > q[b]) - (double)(s[b] < q[b]);
                    sg[b] = s[b] * g[b];
                }
                gbar += sg[b];
            }
            row_kd[r] = D;
            row_loss[r] = (1 - A) * ce + A * T * T * D;
            double cce = (double)scale * (1 - A), ckd = (double)scale * A * T;
            for (int b = 0; b < n; b++)
                topg[b] = (float)(cce * exp((double)(sval[b] - gm)) / (double)S1 + ckd * (sg[b] - s[b] * gbar));
            coef[0] = cce / (double)S1, coef[1] = ckd * (g[n] - gbar) / (double)ST, coef[2] = cce;
        }
    }
    __syncthreads();
    if (!grad) return;
    float kce = (float)coef[0], ktail = (float)coef[1];
    for (int64_t j = threadIdx.x; j < V; j += SM_T) {
        float e = z[j] - gm;
        float v = expf(e) * kce + (t1 ? expf(e) : expf(e * invT)) * ktail;
        if (j == y) {   // the target's entry, whole: its bucket's value (when one) minus the one-hot
            for (int b = 0; b < n; b++)
                if (sid[b] == y) v = topg[b];
            v -= (float)coef[2];
        }
        d[j] = f2bf(v);
    }
    __syncthreads();
    if (threadIdx.x < n && sid[threadIdx.x] != y) d[sid[threadIdx.x]] = f2bf(topg[threadIdx.x]);
}

#ifndef RT_EMU
// The chunked head loss ce_fused_cuda and kd_fused_cuda share: per chunk of ws->chunk rows, the
// rows gathered (when `rows`), their logits by GEMM, the softmax kernel — cross-entropy, or
// distillation when kv — with the row losses summed into sums[0] (kv: also the CE and KD parts
// into sums[1], sums[2]), and with dh the input gradient (scattered back when `rows`), with dw the
// weight gradient accumulated. `what` names the loss in error messages.
static int head_loss_chunks(double *sums, uint16_t *dh, float *dw, const uint16_t *h, const uint16_t *w,
                            const int32_t *target, const int32_t *rows, int64_t n_rows, int64_t M, float scale,
                            const kd_dev *kv, ce_cuda_ws *ws, cudaStream_t st, const char *what) {
    int64_t D = ws->D, V = ws->V;
    if (!rows) n_rows = M;
    if (dh && rows) RT_CUDA_TRY(cudaMemsetAsync(dh, 0, (size_t)(M * D) * 2, st));
    if (n_rows <= 0) {
        RT_CUDA_TRY(cudaMemsetAsync(sums, 0, (kv ? 3 : 1) * sizeof(double), st));
        return 0;
    }
    int grad = dh != NULL;
    for (int64_t r0 = 0; r0 < n_rows; r0 += ws->chunk) {
        int64_t n = n_rows - r0 < ws->chunk ? n_rows - r0 : ws->chunk;
        const uint16_t *hc = h + r0 * D;
        if (rows) {
            k_gather<<<grid_1d((size_t)(n * D / 8), 256), 256, 0, st>>>(ws->hc, h, rows + r0, n, D);
            RT_CUDA_LAUNCHED();
            hc = ws->hc;
        }
        int rc = mm_gemm_cuda(ws->mm, ws->logits, true, V, hc, D, false, w, D, true, n, V, D, 1.f, 0.f, st);
        if (rc) return rt_errorf(rc, "%s logits", what);
        if (kv)
            k_softmax_kd<<<(unsigned)n, SM_T, 0, st>>>(ws->row_loss, ws->row_ce, ws->row_kd, ws->dz, ws->logits, target,
                                                       rows, r0, V, scale, grad, *kv);
        else
            k_softmax_ce<<<(unsigned)n, SM_T, 0, st>>>(ws->row_loss, ws->dz, ws->logits, target, rows, r0, V, scale, grad);
        RT_CUDA_LAUNCHED();
        k_loss_total<<<1, 256, 0, st>>>(sums, ws->row_loss, n, r0 == 0);
        if (kv) {
            k_loss_total<<<1, 256, 0, st>>>(sums + 1, ws->row_ce, n, r0 == 0);
            k_loss_total<<<1, 256, 0, st>>>(sums + 2, ws->row_kd, n, r0 == 0);
        }
        RT_CUDA_LAUNCHED();
        if (!grad) continue;
        uint16_t *dhc = rows ? ws->dhc : dh + r0 * D;
        rc = mm_gemm_cuda(ws->mm, dhc, false, D, ws->dz, V, false, w, D, false, n, D, V, 1.f, 0.f, st);
        if (rc) return rt_errorf(rc, "%s input gradient", what);
        if (dw) {
            rc = mm_gemm_cuda(ws->mm, dw, true, D, ws->dz, V, true, hc, D, false, V, D, n, 1.f, 1.f, st);
            if (rc) return rt_errorf(rc, "%s weight gradient", what);
        }
        if (rows) {
            k_scatter<<<grid_1d((size_t)(n * D / 8), 256), 256, 0, st>>>(dh, ws->dhc, rows + r0, n, D);
            RT_CUDA_LAUNCHED();
        }
    }
    return 0;
}

extern "C" int ce_fused_cuda(double *loss_sum, uint16_t *dh, float *dw, const uint16_t *h, const uint16_t *w,
                             const int32_t *target, const int32_t *rows, int64_t n_rows, int64_t M, float scale,
                             ce_cuda_ws *ws, void *stream) {
    return head_loss_chunks(loss_sum, dh, dw, h, w, target, rows, n_rows, M, scale, NULL, ws, (cudaStream_t)stream,
                            "cross-entropy");
}

extern "C" int kd_fused_cuda(double *sums, uint16_t *dh, float *dw, const uint16_t *h, const uint16_t *w,
                             const int32_t *target, const int32_t *rows, int64_t n_rows, int64_t M, float scale,
                             const kd_spec *kd, ce_cuda_ws *ws, void *stream) {
    if (kd->k < 1 || kd->k > KD_MAX_K || !(kd->temperature > 0))
        return rt_fail(RT_EINVAL, "kd_fused_cuda: top-k %d, temperature %g", kd->k, kd->temperature);
    kd_dev kv = {(int)kd->kind, kd->k, kd->alpha, kd->temperature, kd->beta, kd->top_ids, kd->top_lps, kd->top_n};
    return head_loss_chunks(sums, dh, dw, h, w, target, rows, n_rows, M, scale, &kv, ws, (cudaStream_t)stream,
                            "distillation");
}
#endif
