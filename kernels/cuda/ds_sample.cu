// kernels/cuda/ds_sample.cu — smp_sample on the GPU for a batch of rows, each with its own
// parameters and counter-based RNG (seed, stream, step), and the rows' top-k logprobs. Contract
// in kernels/sample.h (CUDA section); the CPU twins are smp_sample and smp_top_logprobs
// (kernels/cpu/sample.c).
//
// One block per row. The CPU sorts; here every filter is a threshold on the probability,
// found bit by bit over the (ordered) bit patterns of the non-negative doubles (the same
// exp((double)l/T − max) as the CPU, kept in the workspace) with one block-wide count or
// mass reduction per bit (62 per search). A first pass also builds a histogram over the
// doubles' binades; from it a lower bound L on the final threshold follows (top-k, top-p,
// min_p), and when at most 8192 probabilities are ≥ L they are compacted into shared memory
// (in a fixed order) and the searches run there instead of over V in global memory: the k-th largest probability (top_k), the smallest
// probability of the nucleus (top_p), min_p·max, and finally the probability at which the
// cumulative mass, in decreasing order, passes u·total — that token is the draw. Without
// ties between probabilities this keeps and draws exactly what the sorted walk does.
#include "kernels/cuda/ds_common.cuh"
extern "C" {
#include "kernels/sample.h"
}
#include "core/hash.h"

using namespace ds;

#define SP_THREADS 1024
#define SP_WARPS (SP_THREADS / 32)
#define SP_CAP 8192                 /* candidates compacted into shared memory (12 B each) */

__device__ __forceinline__ double uniform(uint64_t seed, uint64_t stream, uint64_t step) {
    return (double)(rt_hash3(seed, stream, step) >> 11) * 0x1.0p-53;
}

__device__ double block_sum_d(double v, double *red) {
    v = warp_sum_d(v);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    double t = 0;
    for (int w = 0; w < SP_WARPS; w++) t += red[w];   // same order in every thread
    return t;
}

__device__ double block_max_d(double v, double *red) {
#pragma unroll
    for (int o = 16; o; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    double t = -INFINITY;
    for (int w = 0; w < SP_WARPS; w++) t = fmax(t, red[w]);
    return t;
}

// (value, index) argmax, lowest index on ties; sign = −1 turns it into an argmin of value
// with the highest index on ties (the CPU's last kept candidate).
__device__ int block_argbest(float v, int i, double *red) {
    int *ri = (int *)(red + SP_WARPS);
    float *rv = (float *)(ri + SP_WARPS);
#pragma unroll
    for (int o = 16; o; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (oi >= 0 && (i < 0 || ov > v || (ov == v && oi < i))) { v = ov; i = oi; }
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) { rv[threadIdx.x >> 5] = v; ri[threadIdx.x >> 5] = i; }
    __syncthreads();
    float bv = -INFINITY;
    int bi = -1;
    for (int w = 0; w < SP_WARPS; w++)
        if (ri[w] >= 0 && (bi < 0 || rv[w] > bv || (rv[w] == bv && ri[w] < bi))) { bv = rv[w]; bi = ri[w]; }
    return bi;
}

// Largest key τ (bit pattern of a non-negative double) with pred(τ) true, pred monotone
// (true at 0). 62 bits cover [0, 1].
typedef unsigned long long u64;
template <typename F>
__device__ u64 search(F pred) {
    u64 tau = 0;
    for (int b = 61; b >= 0; b--) {
        u64 t = tau | (1ull << b);
        if (pred(t)) tau = t;
    }
    return tau;
}
#define KEY(v) ((u64)__double_as_longlong(v))

__global__ static void __launch_bounds__(SP_THREADS)
k_sample(const float *__restrict__ logits, int64_t V, const smp_params *__restrict__ params,
         const uint64_t *__restrict__ rng, double *__restrict__ ws, int32_t *__restrict__ tokens,
         float *__restrict__ logprob) {
    __shared__ double red[SP_WARPS * 2 + 8];
    DS_DYN_SMEM(unsigned char, dyn);   // SP_CAP doubles, then SP_CAP ids
    const int64_t row = blockIdx.x;
    const float *l = logits + row * V;
    double *p = ws + row * V;
    const smp_params prm = params[row];
    const int tid = threadIdx.x;
    int token;
    if (prm.temperature == 0.0f || prm.top_k == 1) {
        float bv = -INFINITY;
        int bi = -1;
        for (int64_t j = tid; j < V; j += SP_THREADS)
            if (bi < 0 || l[j] > bv) { bv = l[j]; bi = (int)j; }
        token = block_argbest(bv, bi, red);
    } else {
        double inv_t = 1.0 / (double)prm.temperature, mx = -INFINITY;
        for (int64_t j = tid; j < V; j += SP_THREADS) mx = fmax(mx, (double)l[j] * inv_t);
        mx = block_max_d(mx, red);
        // p, and a histogram over the exponent field of the doubles (count, mass per binade)
        __shared__ int hc[1024];
        __shared__ double hm[1024];
        __shared__ int wsum[SP_WARPS];
        __shared__ u64 s_lo;
        __shared__ int s_cnt;
        for (int e = tid; e < 1024; e += SP_THREADS) { hc[e] = 0; hm[e] = 0.0; }
        __syncthreads();
        double mine_tot = 0;
        for (int64_t j = tid; j < V; j += SP_THREADS) {
            double v = exp((double)l[j] * inv_t - mx);
            p[j] = v;
            mine_tot += v;
            int e = (int)(KEY(v) >> 52);   // v ∈ [0, 1]: e ≤ 1023
            atomicAdd(&hc[e], 1);
            atomicAdd(&hm[e], v);
        }
        const double total = block_sum_d(mine_tot, red);   // fixed order: the exact twin of the sums below
        // A lower bound L on the final threshold: the binade holding the k-th largest (top-k),
        // the one where the mass from the top reaches top_p·(all mass) (top-p: the top-k
        // total is smaller, so the nucleus starts no lower), min_p's; one binade of margin
        // for the (unordered) histogram sums. Everything kept is ≥ L.
        if (tid == 0) {
            int eb = 0;
            if (prm.top_k > 0 && prm.top_k < V) {
                long long cum = 0;
                for (int e = 1023; e >= 0; e--)
                    if ((cum += hc[e]) >= prm.top_k) { eb = max(eb, e); break; }
            }
            if (prm.top_p < 1.0f) {
                double all = 0, cum = 0;
                for (int e = 1023; e >= 0; e--) all += hm[e];
                for (int e = 1023; e >= 0; e--)
                    if ((cum += hm[e]) >= (double)prm.top_p * all) { eb = max(eb, e); break; }
            }
            if (prm.min_p > 0.0f) eb = max(eb, (int)(KEY((double)prm.min_p) >> 52));
            eb = eb > 0 ? eb - 1 : 0;
            int c = 0;
            for (int e = eb; e < 1024; e++) c += hc[e];
            s_lo = (u64)eb << 52;
            s_cnt = c;
        }
        __syncthreads();
        const u64 L = s_lo;
        const bool compact = L > 0 && s_cnt <= SP_CAP;
        double *cp = (double *)dyn;
        int32_t *ci = (int32_t *)(cp + SP_CAP);
        if (compact) {   // the candidates ≥ L into shared memory, in a fixed order
            int mine = 0;
            for (int64_t j = tid; j < V; j += SP_THREADS) mine += KEY(p[j]) >= L;
            const int lane = tid & 31, warp = tid >> 5;
            int incl = mine;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                int v = __shfl_up_sync(0xffffffffu, incl, o);
                if (lane >= o) incl += v;
            }
            if (lane == 31) wsum[warp] = incl;
            __syncthreads();
            int pos = incl - mine;
            for (int w = 0; w < warp; w++) pos += wsum[w];
            for (int64_t j = tid; j < V; j += SP_THREADS) {
                double v = p[j];
                if (KEY(v) >= L) { cp[pos] = v; ci[pos] = (int32_t)j; pos++; }
            }
            __syncthreads();
        }
        const int64_t NC = compact ? s_cnt : V;
        auto val = [&](int64_t i) { return compact ? cp[i] : p[i]; };
        auto idof = [&](int64_t i) { return compact ? (int)ci[i] : (int)i; };
        // below L the compacted counts and masses are partial; the searches never need them
        // there (each predicate is already true at L), except the top-p total without top-k
        auto count_ge = [&](u64 t) {
            double c = 0;
            for (int64_t i = tid; i < NC; i += SP_THREADS) c += KEY(val(i)) >= t;
            return block_sum_d(c, red);
        };
        auto mass_ge = [&](u64 t) {
            double m = 0;
            for (int64_t i = tid; i < NC; i += SP_THREADS) {
                double v = val(i);
                if (KEY(v) >= t) m += v;
            }
            return block_sum_d(m, red);
        };
        u64 tau = 0;
        if (prm.top_k > 0 && prm.top_k < V) tau = search([&](u64 t) { return count_ge(t) >= (double)prm.top_k; });
        if (prm.top_p < 1.0f) {
            double target = (double)prm.top_p * (tau == 0 ? total : mass_ge(tau));
            u64 t0 = tau;
            u64 tp = search([&](u64 t) { return mass_ge(t > t0 ? t : t0) >= target; });
            tau = tp > tau ? tp : tau;
        }
        if (prm.min_p > 0.0f) {   // the largest probability is exp(0) = 1: thr = min_p·1
            u64 tm = KEY((double)prm.min_p);
            tau = tm > tau ? tm : tau;
        }
        double u = uniform(rng[3 * row], rng[3 * row + 1], rng[3 * row + 2]);
        double target = u * mass_ge(tau);
        const u64 tk = tau;
        u64 ts = search([&](u64 t) { return mass_ge(t > tk ? t : tk) > target; });
        ts = ts > tk ? ts : tk;
        // the token whose probability is ts (lowest id); none when rounding put the target at
        // the very top: then the last kept candidate, as the CPU does
        int bi = -1;
        for (int64_t i = tid; i < NC; i += SP_THREADS)
            if (KEY(val(i)) == ts && (bi < 0 || idof(i) < bi)) bi = idof(i);
        token = block_argbest(bi >= 0 ? 0.0f : -INFINITY, bi, red);
        if (token < 0) {
            float bv = -INFINITY;
            int bj = -1;
            for (int64_t i = tid; i < NC; i += SP_THREADS) {
                double pv = val(i);
                float v = (float)pv;
                int j = idof(i);
                if (KEY(pv) >= tk && (bj < 0 || -v > bv || (-v == bv && j > bj))) { bv = -v; bj = j; }
            }
            token = block_argbest(bv, bj < 0 ? -1 : (int)(V - 1 - bj), red);
            token = token < 0 ? 0 : (int)(V - 1 - token);
        }
    }
    if (tid == 0) tokens[row] = token;
    if (logprob) {   // log_softmax at temperature 1, in double
        double mx = -INFINITY, s = 0;
        for (int64_t j = tid; j < V; j += SP_THREADS) mx = fmax(mx, (double)l[j]);
        mx = block_max_d(mx, red);
        for (int64_t j = tid; j < V; j += SP_THREADS) s += exp((double)l[j] - mx);
        s = block_sum_d(s, red);
        if (tid == 0) logprob[row] = (float)((double)l[token] - (mx + log(s)));
    }
}


// Top-k logprobs of each row (smp_top_logprobs' twin): one block per row; every thread keeps the
// k best of its strided share of the row in registers (a fixed SMP_TOP_MAX-slot list, slots
// ≥ k unused, insertion by compare-and-swap down the list: no dynamic indexing), then k rounds
// of a block-wide argbest over the threads' heads, the winner popping its head. Order: larger
// logit first, ties by lower id (a thread's ids rise along its share, and block_argbest takes
// the lower id of equal values). log_softmax's normalizer in double, as smp_logprob.
__device__ __forceinline__ bool tk_better(float v, int i, float bv, int bi) {
    return bi < 0 || v > bv || (v == bv && i < bi);
}

__global__ static void __launch_bounds__(SP_THREADS)
k_top_logprobs(const float *__restrict__ logits, int64_t V, int k, int32_t *__restrict__ ids,
               float *__restrict__ logprobs) {
    __shared__ double red[SP_WARPS * 2 + 8];
    const int64_t row = blockIdx.x;
    const float *l = logits + row * V;
    const int tid = threadIdx.x;
    float av[SMP_TOP_MAX];
    int ai[SMP_TOP_MAX];
#pragma unroll
    for (int s = 0; s < SMP_TOP_MAX; s++) av[s] = -INFINITY, ai[s] = -1;
    float wv = -INFINITY;   // the list's last kept slot (k − 1)
    int wi = -1;
    double mx = -INFINITY;
    for (int64_t j = tid; j < V; j += SP_THREADS) {
        float v = l[j];
        mx = fmax(mx, (double)v);
        if (!tk_better(v, (int)j, wv, wi)) continue;
        int id = (int)j;
#pragma unroll
        for (int s = 0; s < SMP_TOP_MAX; s++)
            if (s < k && tk_better(v, id, av[s], ai[s])) {
                float tv = av[s];
                int ti = ai[s];
                av[s] = v, ai[s] = id;
                v = tv, id = ti;
            }
#pragma unroll
        for (int s = 0; s < SMP_TOP_MAX; s++)
            if (s == k - 1) wv = av[s], wi = ai[s];
    }
    mx = block_max_d(mx, red);
    double sum = 0;
    for (int64_t j = tid; j < V; j += SP_THREADS) sum += exp((double)l[j] - mx);
    const double lz = mx + log(block_sum_d(sum, red));
    for (int r = 0; r < k; r++) {
        int best = block_argbest(av[0], ai[0], red);
        if (tid == 0) {
            ids[row * k + r] = best;
            logprobs[row * k + r] = best >= 0 ? (float)((double)l[best] - lz) : -INFINITY;
        }
        if (best >= 0 && ai[0] == best) {   // ids are unique: one thread pops
#pragma unroll
            for (int s = 0; s + 1 < SMP_TOP_MAX; s++) av[s] = av[s + 1], ai[s] = ai[s + 1];
            av[SMP_TOP_MAX - 1] = -INFINITY, ai[SMP_TOP_MAX - 1] = -1;
        }
    }
}

#ifndef RT_EMU   // host side
extern "C" size_t smp_cuda_workspace_bytes(int64_t n, int64_t V) { return (size_t)(n > 0 ? n : 0) * (size_t)V * 8; }

extern "C" int smp_sample_cuda(const float *logits, int64_t n, int64_t V, const smp_params *params,
                               const uint64_t *rng, void *ws, size_t ws_bytes, int32_t *tokens, float *logprob,
                               void *stream) {
    if (V < 1 || V > 0x7fffffff || n < 0 || n > 0x7fffffff)
        return rt_fail(RT_EINVAL, "sampling on the GPU: %lld rows of %lld logits", (long long)n, (long long)V);
    if (ws_bytes < smp_cuda_workspace_bytes(n, V))
        return rt_fail(RT_EINVAL, "sampling on the GPU: workspace %zu bytes, %zu needed", ws_bytes,
                       smp_cuda_workspace_bytes(n, V));
    if (!n) return 0;
    const int smem = SP_CAP * (8 + 4);
    RT_CUDA_TRY(smem_attr(k_sample, smem, (cudaStream_t)stream));
    k_sample<<<(unsigned)n, SP_THREADS, smem, (cudaStream_t)stream>>>(logits, V, params, rng, (double *)ws, tokens,
                                                                     logprob);
    RT_CUDA_LAUNCHED();
    return 0;
}
extern "C" int smp_top_logprobs_cuda(const float *logits, int64_t n, int64_t V, int k, int32_t *ids, float *logprobs,
                                     void *stream) {
    if (V < 1 || V > 0x7fffffff || n < 0 || n > 0x7fffffff || k < 1 || k > SMP_TOP_MAX || k > V)
        return rt_fail(RT_EINVAL, "top-%d logprobs on the GPU: %lld rows of %lld logits (k in [1, %d], at most V)", k,
                       (long long)n, (long long)V, SMP_TOP_MAX);
    if (!n) return 0;
    k_top_logprobs<<<(unsigned)n, SP_THREADS, 0, (cudaStream_t)stream>>>(logits, V, k, ids, logprobs);
    RT_CUDA_LAUNCHED();
    return 0;
}
#endif
