// bench/lab_ds_kernels.cu — kernel lab for the DeepSeek teacher kernels: each kernel on R1's
// shapes, its achieved GB/s or TFLOP/s, as a share of the peers measured in the same run (the
// device's copy bandwidth, cuBLASLt's block-scaled FP8 GEMM on a large dense shape).
//
// Rows: FP8 GEMMs (own kernel vs cuBLASLt, dense decode and prefill shapes; grouped MoE with
// 256+1 experts at 1, 32, 256 and 4096 tokens), activation quantization, MLA decode over 4k
// contexts (batch 1, 32, 256), sampling on a 129 280-token vocabulary, router + permutation.
// Run: make gpu-bench (or the binary; --quick for fewer repeats).
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include <algorithm>

#include "core/status.h"
#include "kernels/fp8.h"
extern "C" {
#include "kernels/mla.h"
#include "kernels/moe.h"
#include "kernels/sample.h"
}

#define DIE(...) do { fprintf(stderr, "lab_ds_kernels: " __VA_ARGS__); fprintf(stderr, "\n"); exit(1); } while (0)
#define CK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) DIE("%s: %s", #call, cudaGetErrorString(e_)); } while (0)

__device__ __forceinline__ uint32_t hash32(uint64_t i, uint32_t seed) {
    uint64_t z = i * 0x9e3779b97f4a7c15ull + seed;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)(z ^ (z >> 31));
}
__global__ void k_bytes(uint8_t *p, size_t n, uint32_t seed, uint8_t mask) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = (uint8_t)(hash32(i, seed) & mask);
}
__global__ void k_f32(float *p, size_t n, float lo, float hi, uint32_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = lo + (hi - lo) * (float)(hash32(i, seed) >> 8) * (1.0f / 16777216.0f);
}
__global__ void k_expert_ids(int32_t *idx, int64_t n, int slots, int experts, uint32_t seed) {
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n; t += (int64_t)gridDim.x * blockDim.x)
        for (int k = 0; k < slots; k++) idx[t * slots + k] = k == slots - 1 ? experts : (int32_t)(hash32(t * 16 + k, seed) % experts);
}

static uint32_t g_seed = 7;
static void *dmem(size_t n) { void *p; CK(cudaMalloc(&p, n + 16)); return p; }
static uint8_t *fp8s(size_t n) { uint8_t *p = (uint8_t *)dmem(n); k_bytes<<<2048, 256>>>(p, n, g_seed++, 0xbf); return p; }
static uint16_t *bf16s(size_t n) {   // bf16 in (−2, 2): random low byte, exponent ≤ 127
    uint16_t *p = (uint16_t *)dmem(2 * n);
    k_bytes<<<2048, 256>>>((uint8_t *)p, 2 * n, g_seed++, 0xbf);
    return p;
}
static float *f32s(size_t n, float lo, float hi) { float *p = (float *)dmem(4 * n); k_f32<<<2048, 256>>>(p, n, lo, hi, g_seed++); return p; }

static cudaStream_t st;
static int reps = 7;

// median ms of fn() over reps timings of `iters` calls
template <typename F> static double ms_of(F fn, int iters = 10) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    if (fn()) DIE("%s", rt_errmsg());
    std::vector<double> t;
    for (int r = 0; r < reps; r++) {
        CK(cudaEventRecord(a, st));
        for (int i = 0; i < iters; i++) if (fn()) DIE("%s", rt_errmsg());
        CK(cudaEventRecord(b, st));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms / iters);
    }
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

static double bw_peak, fp8_peak;
static void row(const char *what, double ms, double bytes, double flops) {
    double gbs = bytes / (ms * 1e-3) / 1e9, tf = flops / (ms * 1e-3) / 1e12;
    printf("| %s | %.1f | %.0f | %.0f%% | %.1f | %.0f%% |\n", what, ms * 1e3, gbs, 100 * gbs / bw_peak, tf, 100 * tf / fp8_peak);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--quick")) reps = 3;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    fp8_lt *lt;
    if (fp8_gemm_lt_create(&lt)) DIE("%s", rt_errmsg());
    printf("== lab_ds_kernels on %s (%d SMs)\n", prop.name, prop.multiProcessorCount);

    {   // peers
        size_t n = (size_t)2 << 30;
        void *a = dmem(n), *c = dmem(n);
        double ms = ms_of([&] { return (int)cudaMemcpyAsync(c, a, n, cudaMemcpyDeviceToDevice, st); }, 3);
        bw_peak = 2.0 * n / (ms * 1e-3) / 1e9;
        CK(cudaFree(a)); CK(cudaFree(c));
        int64_t M = 8192, N = 7168, K = 7168;
        uint8_t *x = fp8s(M * K), *w = fp8s(N * K);
        float *xs = f32s(M * K / 128, 0.01f, 0.02f), *ws = f32s(N / 128 * K / 128, 0.01f, 0.02f);
        uint16_t *o = (uint16_t *)dmem(2 * M * N);
        int rc = fp8_gemm_lt(lt, x, xs, w, ws, M, N, K, o, st);
        if (!rc) fp8_peak = 2.0 * M * N * K / (ms_of([&] { return fp8_gemm_lt(lt, x, xs, w, ws, M, N, K, o, st); }, 3) * 1e-3) / 1e12;
        else { fprintf(stderr, "(cuBLASLt block-scaled FP8: %s; the peer is the own kernel)\n", rt_errmsg()); }
        int32_t off[2] = {0, (int32_t)M}, *doff = (int32_t *)dmem(8);
        CK(cudaMemcpy(doff, off, 8, cudaMemcpyHostToDevice));
        double own = 2.0 * M * N * K / (ms_of([&] { return fp8_gemm_grouped_cuda(x, xs, w, ws, doff, 1, M, N, K, o, st); }, 3) * 1e-3) / 1e12;
        if (rc) fp8_peak = own;
        printf("peers: copy %.0f GB/s (read + write); FP8 GEMM 8192x7168x7168: cuBLASLt %.0f TFLOP/s, own kernel %.0f TFLOP/s (%.2fx)\n\n",
               bw_peak, rc ? 0.0 : fp8_peak, own, own / fp8_peak);
        CK(cudaFree(x)); CK(cudaFree(w)); CK(cudaFree(xs)); CK(cudaFree(ws)); CK(cudaFree(o)); CK(cudaFree(doff));
    }
    printf("| kernel, shape | µs | GB/s | of copy peak | TFLOP/s | of FP8 peer |\n|---|---|---|---|---|---|\n");

    // dense FP8 GEMMs: o_proj (N 7168, K 16384) at decode sizes, q_b (N 24576, K 1536) at prefill
    struct { int64_t M, N, K; const char *name; } dense[] = {
        {1, 7168, 16384, "o_proj"}, {32, 7168, 16384, "o_proj"}, {256, 7168, 16384, "o_proj"}, {4096, 24576, 1536, "q_b"}};
    for (auto &d : dense) {
        uint8_t *x = fp8s(d.M * d.K), *w = fp8s(d.N * d.K);
        float *xs = f32s(d.M * d.K / 128, 0.01f, 0.02f), *ws = f32s(d.N / 128 * d.K / 128, 0.01f, 0.02f);
        uint16_t *o = (uint16_t *)dmem(2 * d.M * d.N);
        int32_t off[2] = {0, (int32_t)d.M}, *doff = (int32_t *)dmem(8);
        CK(cudaMemcpy(doff, off, 8, cudaMemcpyHostToDevice));
        double bytes = (double)d.N * d.K + (double)d.M * d.K + 2.0 * d.M * d.N, fl = 2.0 * d.M * d.N * d.K;
        char name[96];
        snprintf(name, sizeof name, "FP8 GEMM own, %s %lldx%lldx%lld", d.name, (long long)d.M, (long long)d.N, (long long)d.K);
        int sp = fp8_gemm_splitk_plan(d.M, d.N, d.K);
        size_t wsb = fp8_gemm_splitk_workspace_bytes(d.M, d.N, sp);
        void *wk = dmem(wsb);
        snprintf(name, sizeof name, "FP8 GEMM own, %s %lldx%lldx%lld, split-K %d", d.name, (long long)d.M, (long long)d.N,
                 (long long)d.K, sp);
        row(name, ms_of([&] { return fp8_gemm_dense_cuda(x, xs, w, ws, d.M, d.N, d.K, sp, wk, wsb, o, st); }), bytes, fl);
        CK(cudaFree(wk));
        if (d.M % 4 == 0 && !fp8_gemm_lt(lt, x, xs, w, ws, d.M, d.N, d.K, o, st)) {
            snprintf(name, sizeof name, "FP8 GEMM cuBLASLt, %s %lldx%lldx%lld", d.name, (long long)d.M, (long long)d.N, (long long)d.K);
            row(name, ms_of([&] { return fp8_gemm_lt(lt, x, xs, w, ws, d.M, d.N, d.K, o, st); }), bytes, fl);
        }
        CK(cudaFree(x)); CK(cudaFree(w)); CK(cudaFree(xs)); CK(cudaFree(ws)); CK(cudaFree(o)); CK(cudaFree(doff));
    }

    // grouped MoE gate|up: 257 groups of [4096, 7168], tokens routed uniformly (8 + the shared slot)
    {
        const int64_t G = 257, N = 4096, K = 7168, S = 9;
        uint8_t *w = fp8s((size_t)G * N * K);
        float *ws = f32s((size_t)G * (N / 128) * (K / 128), 0.01f, 0.02f);
        for (int64_t T : {(int64_t)1, (int64_t)32, (int64_t)256, (int64_t)4096}) {
            int64_t rows = T * S;
            uint8_t *x = fp8s(rows * K);
            float *xs = f32s(rows * K / 128, 0.01f, 0.02f);
            uint16_t *o = (uint16_t *)dmem(2 * rows * N);
            int32_t *idx = (int32_t *)dmem(4 * rows), *off = (int32_t *)dmem(4 * (G + 1)), *ros = (int32_t *)dmem(4 * rows),
                    *sor = (int32_t *)dmem(4 * rows);
            k_expert_ids<<<64, 256, 0, st>>>(idx, T, (int)S, (int)G - 1, g_seed++);
            if (moe_permute_cuda(idx, rows, G, off, ros, sor, st)) DIE("%s", rt_errmsg());
            std::vector<int32_t> h(G + 1);
            CK(cudaMemcpy(h.data(), off, 4 * (G + 1), cudaMemcpyDeviceToHost));
            int used = 0;
            for (int64_t g = 0; g < G; g++) used += h[g + 1] > h[g];
            double bytes = (double)used * N * K + (double)rows * K + 2.0 * rows * N, fl = 2.0 * rows * N * K;
            char name[96];
            snprintf(name, sizeof name, "FP8 grouped gate|up, %lld tokens (%d experts hit)", (long long)T, used);
            row(name, ms_of([&] { return fp8_gemm_grouped_cuda(x, xs, w, ws, off, G, rows, N, K, o, st); }), bytes, fl);
            snprintf(name, sizeof name, "moe permute, %lld tokens x 9 slots", (long long)T);
            row(name, ms_of([&] { return moe_permute_cuda(idx, rows, G, off, ros, sor, st); }), 12.0 * rows, 0);
            CK(cudaFree(x)); CK(cudaFree(xs)); CK(cudaFree(o)); CK(cudaFree(idx)); CK(cudaFree(off)); CK(cudaFree(ros)); CK(cudaFree(sor));
        }
        CK(cudaFree(w)); CK(cudaFree(ws));
    }

    {   // activation quantization, 4096 x 7168
        int64_t M = 4096, K = 7168;
        uint16_t *x = bf16s(M * K);
        uint8_t *q = (uint8_t *)dmem(M * K);
        float *s = (float *)dmem(4 * M * K / 128);
        row("act quant 4096x7168", ms_of([&] { return fp8_act_quant_cuda(x, M, K, q, s, 0, st); }), 3.0 * M * K, 0);
        CK(cudaFree(x)); CK(cudaFree(q)); CK(cudaFree(s));
    }

    {   // router, 256 experts, R1 config
        int64_t n = 4096;
        float *l = f32s(n * 256, -3, 3), *bias = f32s(256, -0.01f, 0.01f), *w = (float *)dmem(4 * n * 9);
        int32_t *idx = (int32_t *)dmem(4 * n * 9);
        moe_router_cfg c = {256, 8, 4, 8, true, 2.5f};
        for (int64_t t : {(int64_t)32, (int64_t)4096}) {
            char name[64];
            snprintf(name, sizeof name, "router, %lld tokens", (long long)t);
            row(name, ms_of([&] { return moe_route_cuda(&c, l, bias, t, 9, idx, w, st); }), 1024.0 * t, 0);
        }
        CK(cudaFree(l)); CK(cudaFree(bias)); CK(cudaFree(w)); CK(cudaFree(idx));
    }

    {   // MLA decode over 4k contexts, 128 heads
        const int64_t H = 128, ctx = 4096, page = 64, DL = 576;
        mla_dims d = {H, 128, 64, 128, 512, 0.0721f};
        for (int64_t B : {(int64_t)1, (int64_t)32, (int64_t)256}) {
            uint16_t *q = bf16s(B * H * DL), *cache = bf16s(B * ctx * DL), *o = (uint16_t *)dmem(2 * B * H * 512);
            std::vector<int32_t> bt(B * ctx / page), cl(B, (int32_t)ctx);
            for (size_t i = 0; i < bt.size(); i++) bt[i] = (int32_t)i;
            int32_t *dbt = (int32_t *)dmem(4 * bt.size()), *dctx = (int32_t *)dmem(4 * B);
            CK(cudaMemcpy(dbt, bt.data(), 4 * bt.size(), cudaMemcpyHostToDevice));
            CK(cudaMemcpy(dctx, cl.data(), 4 * B, cudaMemcpyHostToDevice));
            size_t wsb = mla_decode_workspace_bytes(B, H, ctx);
            void *ws = dmem(wsb);
            double bytes = 2.0 * B * ctx * DL + 2.0 * B * H * (DL + 512), fl = 2.0 * B * H * ctx * (DL + 512);
            char name[64];
            snprintf(name, sizeof name, "MLA decode b=%lld ctx 4096 (bf16 cache)", (long long)B);
            row(name, ms_of([&] { return mla_decode_cuda(&d, q, B, cache, NULL, page, dbt, ctx / page, NULL, dctx, ctx, ws, wsb, o, st); }),
                bytes, fl);
            CK(cudaFree(q)); CK(cudaFree(cache)); CK(cudaFree(o)); CK(cudaFree(dbt)); CK(cudaFree(dctx)); CK(cudaFree(ws));
        }
    }

    {   // sampling, R1's vocabulary, temperature 0.6, top_p 0.95
        const int64_t V = 129280;
        for (int64_t n : {(int64_t)1, (int64_t)256}) {
            float *l = f32s(n * V, -8, 8);
            std::vector<smp_params> p(n, smp_params{0.6f, 0, 0.95f, 0.0f});
            std::vector<uint64_t> r(3 * n);
            for (int64_t i = 0; i < n; i++) { r[3 * i] = 42; r[3 * i + 1] = i; r[3 * i + 2] = 7; }
            smp_params *dp = (smp_params *)dmem(sizeof(smp_params) * n);
            uint64_t *dr = (uint64_t *)dmem(8 * 3 * n);
            int32_t *tok = (int32_t *)dmem(4 * n);
            CK(cudaMemcpy(dp, p.data(), sizeof(smp_params) * n, cudaMemcpyHostToDevice));
            CK(cudaMemcpy(dr, r.data(), 8 * 3 * n, cudaMemcpyHostToDevice));
            size_t wsb = smp_cuda_workspace_bytes(n, V);
            void *ws = dmem(wsb);
            char name[64];
            snprintf(name, sizeof name, "sampling %lld rows x 129280 (T 0.6, top_p 0.95)", (long long)n);
            row(name, ms_of([&] { return smp_sample_cuda(l, n, V, dp, dr, ws, wsb, tok, NULL, st); }, 3), 4.0 * n * V, 0);
            CK(cudaFree(l)); CK(cudaFree(dp)); CK(cudaFree(dr)); CK(cudaFree(tok)); CK(cudaFree(ws));
        }
    }
    fp8_gemm_lt_free(lt);
    return 0;
}
