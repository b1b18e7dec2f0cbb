// kernels/cuda/attention.cu — causal flash attention with GQA over packed documents, forward
// and backward, on bf16 tensor cores (contract in kernels/attention.h, CPU twin
// kernels/cpu/attention.c).
//
// Tensor-core tiles: mma.sync.m16n8k16 (bf16 in, f32 accumulate), operands loaded from
// shared memory with ldmatrix (.trans where the operand is needed column-major). Shared
// tiles have a row stride of hd + 8 elements: the 16-byte pad shifts consecutive rows by 4
// banks, so the 8 row addresses of one ldmatrix hit all 32 banks (no conflicts) without an
// XOR swizzle. Global → shared copies are 16-byte cp.async, double-buffered: the next tile
// is in flight while the current one is multiplied. Rows outside [0, T) are zero-filled.
//
// Masking: query t sees keys s with doc_start[t] ≤ s ≤ t. doc_start is nondecreasing
// (documents are contiguous), so a block of queries [q0, q1) needs keys from doc_start[q0]
// to q1 − 1 and nothing else; a key block wholly below q0 and at or above doc_start[q1 − 1]
// needs no per-element mask. Scores are handled in the log2 domain (x = s·scale·log2 e,
// exp2f), lse is stored in natural-log units as the CPU twin does.
//
// Forward (BM = 64 or 128 queries × BN = 64 keys per step, 4 or 8 warps, each warp 16 query rows):
// the warp keeps its Q fragments, the 16×64 score tile S (32 f32 per thread) and the 16×hd
// output accumulator in registers; the online softmax rescales O when the row maximum
// grows, and P goes from the S accumulator straight into A-operand fragments (the
// accumulator layout of m16n8 equals the A layout of m16n8k16 two tiles at a time), so
// neither S nor P ever touches shared or global memory. Grid (query blocks, Hq), the last
// query blocks (the most keys) first.
//
// Backward, deterministic (no atomics), in three kernels:
//   delta: Δ[h,t] = Σ_d dO·O (one warp per (t, h)), into the caller's workspace;
//   dq:    per (query block of 64, q head), over its key blocks: S and P = exp2(x − lse) again,
//          dP = dO·Vᵀ, dS = P ⊙ (dP − Δ), dQ += dS·K; dQ·scale stored once;
//   dk/dv: per (key block of 64, kv head), over the group's q heads in order and the query
//          tiles [s0, end of the last key's document): Sᵀ = K·Qᵀ, Pᵀ, dV += Pᵀ·dO,
//          dPᵀ = V·dOᵀ, dSᵀ = Pᵀ ⊙ (dPᵀ − Δ), dK += dSᵀ·Q. Query tiles are 64 wide for
//          hd = 64 and 32 for hd = 128 (dK and dV accumulators of 16×128 f32 each per warp
//          leave no registers for wider tiles).
// The sum over a GQA group's heads happens inside one block in a fixed order, so dK and dV
// are reproducible bit for bit.
#include <limits.h>

#include "kernels/attention.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/mma_tile.cuh"

using namespace rtk;

// Row strides (elements) of the token-major tensors: q, k/v (inputs), dq, dk/dv (outputs).
// o, dout and lse are always dense. The defaults are Hq·hd and Hkv·hd; a fused QKV GEMM output
// [T, (Hq + 2·Hkv)·hd] is read in place with q = k = v stride (Hq + 2·Hkv)·hd.
struct attn_ld {
    int64_t q, kv, dq, dkv;
};

#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f
#define NTHR 128

// Copy rows [row0, row0 + R) of a [T, ·] tensor (row stride `stride` elements, head offset
// already in g) into a shared tile of R × HD (row stride HD + 8); rows outside [0, T) → 0.
template <int R, int HD, int NT = NTHR>
__device__ __forceinline__ void load_tile(uint16_t *s, const uint16_t *g, size_t stride, int row0, int T) {
    constexpr int CPR = HD / 8, LD = HD + 8;
    for (int i = threadIdx.x; i < R * CPR; i += NT) {
        int r = i / CPR, c = (i % CPR) * 8, gr = row0 + r;
        bool ok = gr >= 0 && gr < T;
        cp_async16(s + r * LD + c, ok ? g + (size_t)gr * stride + c : g, ok);
    }
}

// ---- forward ----------------------------------------------------------------------------
template <int HD, int NW>
__global__ void __launch_bounds__(NW * 32) k_attn_fwd(uint16_t *o, float *lse, const uint16_t *q, const uint16_t *k,
                                                   const uint16_t *v, const int32_t *doc_start, int T, int Hq, int Hkv,
                                                   float c2, attn_ld ld) {
    constexpr int BM = 16 * NW, BN = 64, LD = HD + 8, KC = HD / 16, DT = HD / 8, NT = 32 * NW;
    RT_DYN_SMEM(smem);
    uint16_t *sQ = smem, *sK = sQ + BM * LD, *sV = sK + 2 * BN * LD;
    const int qb = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, hk = h / (Hq / Hkv);
    const int q0 = qb * BM, q_last = min(q0 + BM, T) - 1;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
    const size_t os = (size_t)Hq * HD, qs = (size_t)ld.q, ks = (size_t)ld.kv;
    const uint16_t *qg = q + (size_t)h * HD, *kg = k + (size_t)hk * HD, *vg = v + (size_t)hk * HD;
    const int kmin = doc_start[q0], dsmax = doc_start[q_last];
    const int nkb = (q_last - kmin) / BN + 1;

    const int rA = q0 + warp * 16 + g, rB = rA + 8;
    const int dsA = rA < T ? doc_start[rA] : INT_MAX, dsB = rB < T ? doc_start[rB] : INT_MAX;

    load_tile<BM, HD, NT>(sQ, qg, qs, q0, T);
    load_tile<BN, HD, NT>(sK, kg, ks, kmin, T);
    load_tile<BN, HD, NT>(sV, vg, ks, kmin, T);
    cp_async_commit();

    uint32_t qf[KC][4];
    float oacc[DT][4];
#pragma unroll
    for (int i = 0; i < DT; i++) oacc[i][0] = oacc[i][1] = oacc[i][2] = oacc[i][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

    for (int j = 0; j < nkb; j++) {
        const int kb = kmin + j * BN, buf = j & 1;
        if (j + 1 < nkb) {
            load_tile<BN, HD, NT>(sK + (buf ^ 1) * BN * LD, kg, ks, kb + BN, T);
            load_tile<BN, HD, NT>(sV + (buf ^ 1) * BN * LD, vg, ks, kb + BN, T);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        if (j == 0) {
#pragma unroll
            for (int kc = 0; kc < KC; kc++) ldsm_x4(qf[kc], a_addr(sQ, LD, warp * 16, kc * 16, lane));
        }
        const uint16_t *cK = sK + buf * BN * LD, *cV = sV + buf * BN * LD;

        float s[8][4];
        tile_scores<KC>(s, qf, cK, LD, lane);
        const bool full = kb + BN - 1 <= q0 && kb >= dsmax;
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float x = s[nt][e] * c2;
                if (!full) {
                    int key = kb + nt * 8 + t4 * 2 + (e & 1);
                    int row = e < 2 ? rA : rB, ds = e < 2 ? dsA : dsB;
                    if (key < ds || key > row) x = -INFINITY;
                }
                s[nt][e] = x;
            }
        tile_softmax_pv<DT>(s, m, l, oacc, cV, LD, lane);
        __syncthreads();
    }
    cp_async_wait<0>();

#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        int row = r ? rB : rA;
        if (row >= T) continue;
        float inv = 1.f / l[r];
        uint16_t *og = o + (size_t)row * os + (size_t)h * HD + t4 * 2;
#pragma unroll
        for (int dt = 0; dt < DT; dt++)
            *(uint32_t *)(og + dt * 8) = pack_bf2(oacc[dt][2 * r] * inv, oacc[dt][2 * r + 1] * inv);
        if (t4 == 0) lse[(size_t)h * T + row] = (m[r] + log2f(l[r])) * LN2;
    }
}

// ---- backward: Δ = rowsum(dO ⊙ O) -------------------------------------------------------
__global__ static void k_attn_delta(float *delta, const uint16_t *dout, const uint16_t *o, int T, int Hq, int hd) {
    int wid = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;
    if (wid >= T * Hq) return;
    int t = wid / Hq, h = wid % Hq;
    const uint16_t *a = dout + ((size_t)t * Hq + h) * hd, *b = o + ((size_t)t * Hq + h) * hd;
    float s = 0.f;
    for (int d = lane * 2; d < hd; d += 64) {
        uint32_t x = *(const uint32_t *)(a + d), y = *(const uint32_t *)(b + d);
        s += __uint_as_float(x << 16) * __uint_as_float(y << 16) +
             __uint_as_float(x & 0xffff0000u) * __uint_as_float(y & 0xffff0000u);
    }
    s = warp_sum(s);
    if (lane == 0) delta[(size_t)h * T + t] = s;
}

// ---- backward: dQ -----------------------------------------------------------------------
template <int HD>
__global__ void __launch_bounds__(NTHR) k_attn_dq(uint16_t *dq, const uint16_t *dout, const float *lse,
                                                  const float *delta, const uint16_t *q, const uint16_t *k,
                                                  const uint16_t *v, const int32_t *doc_start, int T, int Hq, int Hkv,
                                                  float c2, float scale, attn_ld ld) {
    constexpr int BM = 64, BN = 64, LD = HD + 8, KC = HD / 16, DT = HD / 8;
    RT_DYN_SMEM(smem);
    uint16_t *sQ = smem, *sO = sQ + BM * LD, *sK = sO + BM * LD, *sV = sK + 2 * BN * LD;
    const int qb = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, hk = h / (Hq / Hkv);
    const int q0 = qb * BM, q_last = min(q0 + BM, T) - 1;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
    const size_t os = (size_t)Hq * HD, qs = (size_t)ld.q, ks = (size_t)ld.kv;
    const uint16_t *kg = k + (size_t)hk * HD, *vg = v + (size_t)hk * HD;
    const int kmin = doc_start[q0];
    const int nkb = (q_last - kmin) / BN + 1;
    const int rows[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
    int dsr[2];
    float l2[2], dl[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        bool in = rows[r] < T;
        dsr[r] = in ? doc_start[rows[r]] : INT_MAX;
        l2[r] = in ? lse[(size_t)h * T + rows[r]] * LOG2E : 0.f;
        dl[r] = in ? delta[(size_t)h * T + rows[r]] : 0.f;
    }

    load_tile<BM, HD>(sQ, q + (size_t)h * HD, qs, q0, T);
    load_tile<BM, HD>(sO, dout + (size_t)h * HD, os, q0, T);
    load_tile<BN, HD>(sK, kg, ks, kmin, T);
    load_tile<BN, HD>(sV, vg, ks, kmin, T);
    cp_async_commit();

    float acc[DT][4];
#pragma unroll
    for (int i = 0; i < DT; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;

    for (int j = 0; j < nkb; j++) {
        const int kb = kmin + j * BN, buf = j & 1;
        if (j + 1 < nkb) {
            load_tile<BN, HD>(sK + (buf ^ 1) * BN * LD, kg, ks, kb + BN, T);
            load_tile<BN, HD>(sV + (buf ^ 1) * BN * LD, vg, ks, kb + BN, T);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const uint16_t *cK = sK + buf * BN * LD, *cV = sV + buf * BN * LD;
        float s[8][4], dp[8][4];
#pragma unroll
        for (int i = 0; i < 8; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[i][e] = dp[i][e] = 0.f;
#pragma unroll
        for (int kc = 0; kc < KC; kc++) {
            uint32_t aq[4], ao[4];
            ldsm_x4(aq, a_addr(sQ, LD, warp * 16, kc * 16, lane));
            ldsm_x4(ao, a_addr(sO, LD, warp * 16, kc * 16, lane));
#pragma unroll
            for (int np = 0; np < 4; np++) {
                uint32_t b[4];
                ldsm_x4(b, bn_addr(cK, LD, np * 16, kc * 16, lane));
                mma16816(s[2 * np], aq, b[0], b[1]);
                mma16816(s[2 * np + 1], aq, b[2], b[3]);
                ldsm_x4(b, bn_addr(cV, LD, np * 16, kc * 16, lane));
                mma16816(dp[2 * np], ao, b[0], b[1]);
                mma16816(dp[2 * np + 1], ao, b[2], b[3]);
            }
        }
        // dS = P ⊙ (dP − Δ), P = exp2(x − lse·log2 e), masked → 0
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int r = e >> 1, key = kb + nt * 8 + t4 * 2 + (e & 1);
                float p = (key < dsr[r] || key > rows[r]) ? 0.f : exp2f(s[nt][e] * c2 - l2[r]);
                s[nt][e] = p * (dp[nt][e] - dl[r]);
            }
        // dQ += dS·K  (K stored [key][d]: the B operand [k = key][n = d] via ldmatrix.trans)
#pragma unroll
        for (int kc = 0; kc < 4; kc++) {
            uint32_t a[4] = {pack_bf2(s[2 * kc][0], s[2 * kc][1]), pack_bf2(s[2 * kc][2], s[2 * kc][3]),
                             pack_bf2(s[2 * kc + 1][0], s[2 * kc + 1][1]), pack_bf2(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
            for (int dpi = 0; dpi < HD / 16; dpi++) {
                uint32_t b[4];
                ldsm_x4_t(b, bt_addr(cK, LD, kc * 16, dpi * 16, lane));
                mma16816(acc[2 * dpi], a, b[0], b[1]);
                mma16816(acc[2 * dpi + 1], a, b[2], b[3]);
            }
        }
        __syncthreads();
    }
    cp_async_wait<0>();
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (rows[r] >= T) continue;
        uint16_t *dg = dq + (size_t)rows[r] * (size_t)ld.dq + (size_t)h * HD + t4 * 2;
#pragma unroll
        for (int dt = 0; dt < DT; dt++)
            *(uint32_t *)(dg + dt * 8) = pack_bf2(acc[dt][2 * r] * scale, acc[dt][2 * r + 1] * scale);
    }
}

// ---- backward: dK, dV -------------------------------------------------------------------
template <int HD, int BQ>
__global__ void __launch_bounds__(NTHR) k_attn_dkv(uint16_t *dk, uint16_t *dv, const uint16_t *dout, const float *lse,
                                                   const float *delta, const uint16_t *q, const uint16_t *k,
                                                   const uint16_t *v, const int32_t *doc_start, int T, int Hq, int Hkv,
                                                   float c2, float scale, attn_ld ld) {
    constexpr int BN = 64, LD = HD + 8, KC = HD / 16, DT = HD / 8, NQT = BQ / 8;
    RT_DYN_SMEM(smem);
    uint16_t *sK = smem, *sV = sK + BN * LD, *sQ = sV + BN * LD, *sO = sQ + 2 * BQ * LD;
    __shared__ float sL[2][BQ], sD[2][BQ];
    __shared__ int sS[2][BQ];
    __shared__ int s_end;
    const int kbk = blockIdx.x, hk = blockIdx.y, G = Hq / Hkv;
    const int k0 = kbk * BN, k_last = min(k0 + BN, T) - 1;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
    const size_t os = (size_t)Hq * HD, qs = (size_t)ld.q, ks = (size_t)ld.kv;
    if (threadIdx.x == 0) {   // the first query whose document starts after the last key
        int lo = k_last, hi = T;
        while (lo < hi) {
            int mid = (lo + hi) >> 1;
            if (doc_start[mid] > k_last) hi = mid;
            else lo = mid + 1;
        }
        s_end = lo;
    }
    load_tile<BN, HD>(sK, k + (size_t)hk * HD, ks, k0, T);
    load_tile<BN, HD>(sV, v + (size_t)hk * HD, ks, k0, T);
    __syncthreads();
    const int q_end = s_end, nqt = (q_end - k0 + BQ - 1) / BQ, n_it = nqt * G;
    const int keys[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};

    auto issue = [&](int it) {
        int hh = hk * G + it / nqt, qt0 = k0 + (it % nqt) * BQ, b = it & 1;
        load_tile<BQ, HD>(sQ + b * BQ * LD, q + (size_t)hh * HD, qs, qt0, T);
        load_tile<BQ, HD>(sO + b * BQ * LD, dout + (size_t)hh * HD, os, qt0, T);
        for (int i = threadIdx.x; i < BQ; i += NTHR) {
            int t = qt0 + i;
            bool in = t < q_end;
            sL[b][i] = in ? lse[(size_t)hh * T + t] * LOG2E : 0.f;
            sD[b][i] = in ? delta[(size_t)hh * T + t] : 0.f;
            sS[b][i] = in ? doc_start[t] : INT_MAX;
        }
    };
    issue(0);
    cp_async_commit();

    float adk[DT][4], adv[DT][4];
#pragma unroll
    for (int i = 0; i < DT; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) adk[i][e] = adv[i][e] = 0.f;

    for (int it = 0; it < n_it; it++) {
        const int b = it & 1, qt0 = k0 + (it % nqt) * BQ;
        if (it + 1 < n_it) issue(it + 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const uint16_t *cQ = sQ + b * BQ * LD, *cO = sO + b * BQ * LD;
        float s[NQT][4], dp[NQT][4];
#pragma unroll
        for (int i = 0; i < NQT; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[i][e] = dp[i][e] = 0.f;
        // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ (16 keys × BQ queries per warp)
#pragma unroll
        for (int kc = 0; kc < KC; kc++) {
            uint32_t ak[4], av[4];
            ldsm_x4(ak, a_addr(sK, LD, warp * 16, kc * 16, lane));
            ldsm_x4(av, a_addr(sV, LD, warp * 16, kc * 16, lane));
#pragma unroll
            for (int np = 0; np < NQT / 2; np++) {
                uint32_t bb[4];
                ldsm_x4(bb, bn_addr(cQ, LD, np * 16, kc * 16, lane));
                mma16816(s[2 * np], ak, bb[0], bb[1]);
                mma16816(s[2 * np + 1], ak, bb[2], bb[3]);
                ldsm_x4(bb, bn_addr(cO, LD, np * 16, kc * 16, lane));
                mma16816(dp[2 * np], av, bb[0], bb[1]);
                mma16816(dp[2 * np + 1], av, bb[2], bb[3]);
            }
        }
        // Pᵀ (kept in s) and dSᵀ (in dp)
#pragma unroll
        for (int nt = 0; nt < NQT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int ci = nt * 8 + t4 * 2 + (e & 1), qt = qt0 + ci, key = keys[e >> 1];
                float p = (key < sS[b][ci] || key > qt) ? 0.f : exp2f(s[nt][e] * c2 - sL[b][ci]);
                s[nt][e] = p;
                dp[nt][e] = p * (dp[nt][e] - sD[b][ci]);
            }
        // dV += Pᵀ·dO and dK += dSᵀ·Q (dO, Q stored [query][d]: B via ldmatrix.trans)
#pragma unroll
        for (int kc = 0; kc < NQT / 2; kc++) {
            uint32_t ap[4] = {pack_bf2(s[2 * kc][0], s[2 * kc][1]), pack_bf2(s[2 * kc][2], s[2 * kc][3]),
                              pack_bf2(s[2 * kc + 1][0], s[2 * kc + 1][1]), pack_bf2(s[2 * kc + 1][2], s[2 * kc + 1][3])};
            uint32_t ad[4] = {pack_bf2(dp[2 * kc][0], dp[2 * kc][1]), pack_bf2(dp[2 * kc][2], dp[2 * kc][3]),
                              pack_bf2(dp[2 * kc + 1][0], dp[2 * kc + 1][1]),
                              pack_bf2(dp[2 * kc + 1][2], dp[2 * kc + 1][3])};
#pragma unroll
            for (int dpi = 0; dpi < HD / 16; dpi++) {
                uint32_t bb[4];
                ldsm_x4_t(bb, bt_addr(cO, LD, kc * 16, dpi * 16, lane));
                mma16816(adv[2 * dpi], ap, bb[0], bb[1]);
                mma16816(adv[2 * dpi + 1], ap, bb[2], bb[3]);
                ldsm_x4_t(bb, bt_addr(cQ, LD, kc * 16, dpi * 16, lane));
                mma16816(adk[2 * dpi], ad, bb[0], bb[1]);
                mma16816(adk[2 * dpi + 1], ad, bb[2], bb[3]);
            }
        }
        __syncthreads();
    }
    cp_async_wait<0>();
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (keys[r] >= T) continue;
        size_t off = (size_t)keys[r] * (size_t)ld.dkv + (size_t)hk * HD + t4 * 2;
#pragma unroll
        for (int dt = 0; dt < DT; dt++) {
            *(uint32_t *)(dk + off + dt * 8) = pack_bf2(adk[dt][2 * r] * scale, adk[dt][2 * r + 1] * scale);
            *(uint32_t *)(dv + off + dt * 8) = pack_bf2(adv[dt][2 * r], adv[dt][2 * r + 1]);
        }
    }
}

#ifndef RT_EMU
// ---- host side --------------------------------------------------------------------------
static int check_shape(const char *who, int64_t T, int64_t Hq, int64_t Hkv, int64_t hd) {
    if ((hd != 64 && hd != 128) || Hkv <= 0 || Hq % Hkv || T > INT_MAX / 2 || T * Hq > INT_MAX)
        return rt_fail(RT_EINVAL, "%s: T %lld, Hq %lld, Hkv %lld, head_dim %lld (head_dim 64 or 128, Hq %% Hkv == 0)",
                       who, (long long)T, (long long)Hq, (long long)Hkv, (long long)hd);
    return 0;
}

template <int HD, int NW>
static int fwd(uint16_t *o, float *lse, const uint16_t *q, const uint16_t *k, const uint16_t *v, const int32_t *ds,
               int T, int Hq, int Hkv, float scale, attn_ld ld, cudaStream_t st) {
    constexpr int BM = 16 * NW;
    size_t sm = (size_t)(BM + 4 * 64) * (HD + 8) * 2;
    if (set_smem(k_attn_fwd<HD, NW>, sm, st)) return RT_EINTERNAL;
    dim3 grid((unsigned)((T + BM - 1) / BM), (unsigned)Hq);
    k_attn_fwd<HD, NW><<<grid, NW * 32, sm, st>>>(o, lse, q, k, v, ds, T, Hq, Hkv, scale * LOG2E, ld);
    RT_CUDA_LAUNCHED();
    return 0;
}

// The layout, with defaults filled in and checked.
static int resolve(const attn_cuda_layout *lay, int64_t Hq, int64_t Hkv, int64_t hd, attn_ld *ld, int *block_q) {
    ld->q = lay && lay->ld_q ? lay->ld_q : Hq * hd;
    ld->kv = lay && lay->ld_kv ? lay->ld_kv : Hkv * hd;
    ld->dq = lay && lay->ld_dq ? lay->ld_dq : Hq * hd;
    ld->dkv = lay && lay->ld_dkv ? lay->ld_dkv : Hkv * hd;
    *block_q = lay && lay->block_q ? lay->block_q : ATTN_CUDA_BLOCK_Q;
    if (ld->q < Hq * hd || ld->kv < Hkv * hd || ld->dq < Hq * hd || ld->dkv < Hkv * hd || ld->q % 8 || ld->kv % 8 ||
        ld->dq % 2 || ld->dkv % 2)
        return rt_fail(RT_EINVAL, "attention layout: row strides q %lld, kv %lld, dq %lld, dkv %lld (at least the "
                       "dense width, q and kv multiples of 8)", (long long)ld->q, (long long)ld->kv, (long long)ld->dq,
                       (long long)ld->dkv);
    if (*block_q != 64 && *block_q != 128)
        return rt_fail(RT_EINVAL, "attention layout: block_q %d (64 or 128)", *block_q);
    return 0;
}

extern "C" int attn_fwd_cuda_ex(uint16_t *o, float *lse, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                                const int32_t *doc_start, int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, float scale,
                                const attn_cuda_layout *lay, void *stream) {
    if (check_shape("attn_fwd_cuda", T, Hq, Hkv, hd)) return RT_EINVAL;
    attn_ld ld;
    int block_q;
    if (resolve(lay, Hq, Hkv, hd, &ld, &block_q)) return RT_EINVAL;
    if (T <= 0) return 0;
    cudaStream_t st = (cudaStream_t)stream;
    int t = (int)T, hq = (int)Hq, hkv = (int)Hkv;
    if (block_q == 64)
        return hd == 64 ? fwd<64, 4>(o, lse, q, k, v, doc_start, t, hq, hkv, scale, ld, st)
                        : fwd<128, 4>(o, lse, q, k, v, doc_start, t, hq, hkv, scale, ld, st);
    return hd == 64 ? fwd<64, 8>(o, lse, q, k, v, doc_start, t, hq, hkv, scale, ld, st)
                    : fwd<128, 8>(o, lse, q, k, v, doc_start, t, hq, hkv, scale, ld, st);
}

extern "C" int attn_fwd_cuda(uint16_t *o, float *lse, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                             const int32_t *doc_start, int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, float scale,
                             void *stream) {
    return attn_fwd_cuda_ex(o, lse, q, k, v, doc_start, T, Hq, Hkv, hd, scale, NULL, stream);
}

extern "C" size_t attn_bwd_cuda_ws_bytes(int64_t T, int64_t Hq) { return (size_t)(T * Hq) * sizeof(float); }

template <int HD>
static int bwd(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout, const float *lse, const float *delta,
               const uint16_t *q, const uint16_t *k, const uint16_t *v, const int32_t *ds, int T, int Hq, int Hkv,
               float scale, attn_ld ld, cudaStream_t st) {
    constexpr int BQ = HD == 64 ? 64 : 32;
    size_t sm_dq = (size_t)(2 * 64 + 4 * 64) * (HD + 8) * 2;
    size_t sm_kv = (size_t)(2 * 64 + 4 * BQ) * (HD + 8) * 2;
    if (set_smem(k_attn_dq<HD>, sm_dq, st) || set_smem(k_attn_dkv<HD, BQ>, sm_kv, st)) return RT_EINTERNAL;
    dim3 gq((unsigned)((T + 63) / 64), (unsigned)Hq), gk((unsigned)((T + 63) / 64), (unsigned)Hkv);
    k_attn_dq<HD><<<gq, NTHR, sm_dq, st>>>(dq, dout, lse, delta, q, k, v, ds, T, Hq, Hkv, scale * LOG2E, scale, ld);
    RT_CUDA_LAUNCHED();
    k_attn_dkv<HD, BQ><<<gk, NTHR, sm_kv, st>>>(dk, dv, dout, lse, delta, q, k, v, ds, T, Hq, Hkv, scale * LOG2E,
                                                scale, ld);
    RT_CUDA_LAUNCHED();
    return 0;
}

extern "C" int attn_bwd_cuda_ex(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout, const uint16_t *o,
                                const float *lse, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                                const int32_t *doc_start, int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, float scale,
                                const attn_cuda_layout *lay, void *ws, void *stream) {
    if (check_shape("attn_bwd_cuda", T, Hq, Hkv, hd)) return RT_EINVAL;
    attn_ld ld;
    int block_q;
    if (resolve(lay, Hq, Hkv, hd, &ld, &block_q)) return RT_EINVAL;
    if (T <= 0) return 0;
    cudaStream_t st = (cudaStream_t)stream;
    float *delta = (float *)ws;
    size_t warps = (size_t)(T * Hq);
    k_attn_delta<<<(unsigned)((warps * 32 + 255) / 256), 256, 0, st>>>(delta, dout, o, (int)T, (int)Hq, (int)hd);
    RT_CUDA_LAUNCHED();
    int t = (int)T, hq = (int)Hq, hkv = (int)Hkv;
    return hd == 64 ? bwd<64>(dq, dk, dv, dout, lse, delta, q, k, v, doc_start, t, hq, hkv, scale, ld, st)
                    : bwd<128>(dq, dk, dv, dout, lse, delta, q, k, v, doc_start, t, hq, hkv, scale, ld, st);
}

extern "C" int attn_bwd_cuda(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout, const uint16_t *o,
                             const float *lse, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                             const int32_t *doc_start, int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, float scale,
                             void *ws, void *stream) {
    return attn_bwd_cuda_ex(dq, dk, dv, dout, o, lse, q, k, v, doc_start, T, Hq, Hkv, hd, scale, NULL, ws, stream);
}
#endif
