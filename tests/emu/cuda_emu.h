/* tests/emu/cuda_emu.h — a small CPU emulator for the CUDA student kernels' warp-level code, so
 * their tiling and fragment bookkeeping can be checked on a machine without a GPU.
 *
 * A kernel source is compiled by g++ with -DRT_EMU and this header first. Every thread of a
 * block is a ucontext coroutine; the blocks of a grid run one after another. __syncthreads and
 * every warp-collective operation (shuffles, ldmatrix, mma.sync m16n8k16, emulated from the PTX
 * ISA's fragment layouts) are barriers: a thread deposits its operand, yields until all threads
 * of its warp (or block) have arrived, then reads what it needs. __shared__ variables become
 * function statics (one block runs at a time); dynamic shared memory is one buffer per launch;
 * cp.async copies synchronously (zero-fill when the source size is 0).
 * What it checks: indexing, masking, tiling, fragment ↔ element mapping, synchronization
 * order. What it cannot: timing, races the hardware would expose, the exact rounding inside the
 * tensor cores (emulated as f32 multiply-adds in k order). */
#ifndef RT_TESTS_CUDA_EMU_H
#define RT_TESTS_CUDA_EMU_H

#define __launch_bounds__(...)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>

#include <functional>
#include <vector>

namespace emu {

struct Warp {
    const void *ptr[32];
    uint32_t a[32][4], b[32][2];
    float f[32];
    double d[32];
};

struct State {
    int nthr = 0, cur = 0;
    std::vector<ucontext_t> ctx;
    std::vector<std::vector<char>> stacks;
    std::vector<char> done;
    ucontext_t sched;
    unsigned gen[33] = {0};
    int arrived[33] = {0};
    std::vector<char> dyn;
    uint3 block_idx{0, 0, 0}, grid_dim{1, 1, 1}, block_dim{1, 1, 1};
    Warp warps[32];
    std::function<void()> body;
};
inline State S;

inline void yield() { swapcontext(&S.ctx[S.cur], &S.sched); }
inline void barrier(int group, int size) {
    unsigned g = S.gen[group];
    if (++S.arrived[group] == size) {
        S.arrived[group] = 0;
        S.gen[group]++;
        return;
    }
    while (S.gen[group] == g) yield();
}
inline void warp_barrier() { barrier(1 + S.cur / 32, 32); }
inline int lane() { return S.cur & 31; }
inline Warp &warp() { return S.warps[S.cur / 32]; }

inline void entry(void) {
    S.body();
    S.done[S.cur] = 1;
}

/* Runs body() as every thread of every block of grid × block. */
inline void launch(dim3 grid, dim3 block, size_t dyn_bytes, std::function<void()> body) {
    int n = (int)(block.x * block.y * block.z);
    S.nthr = n;
    S.body = body;
    S.grid_dim = uint3{grid.x, grid.y, grid.z};
    S.block_dim = uint3{block.x, block.y, block.z};
    S.dyn.assign(dyn_bytes + 16, 0);
    S.ctx.resize(n);
    S.stacks.resize(n);
    for (int t = 0; t < n; t++) S.stacks[t].resize(96 * 1024);
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                S.block_idx = uint3{bx, by, bz};
                memset(S.gen, 0, sizeof S.gen);
                memset(S.arrived, 0, sizeof S.arrived);
                memset(S.dyn.data(), 0xcd, S.dyn.size());   // garbage, as on the device
                S.done.assign(n, 0);
                for (int t = 0; t < n; t++) {
                    getcontext(&S.ctx[t]);
                    S.ctx[t].uc_stack.ss_sp = S.stacks[t].data();
                    S.ctx[t].uc_stack.ss_size = S.stacks[t].size();
                    S.ctx[t].uc_link = &S.sched;
                    makecontext(&S.ctx[t], (void (*)(void))entry, 0);
                }
                for (int left = n; left > 0;) {
                    left = 0;
                    for (int t = 0; t < n; t++) {
                        if (S.done[t]) continue;
                        S.cur = t;
                        swapcontext(&S.sched, &S.ctx[t]);
                        if (!S.done[t]) left++;
                    }
                }
            }
}

inline void *dyn_smem() { return (void *)(((uintptr_t)S.dyn.data() + 15) & ~(uintptr_t)15); }

// ---- the PTX operations -------------------------------------------------------------------
inline void cp_async16(void *s, const void *g, bool valid) {
    if (valid) memcpy(s, g, 16);
    else memset(s, 0, 16);
}
inline void ldsm_x4(uint32_t (&r)[4], const uint16_t *p, bool trans) {
    Warp &W = warp();
    int t = lane();
    W.ptr[t] = p;
    warp_barrier();
    for (int i = 0; i < 4; i++) {
        uint16_t lo, hi;
        if (!trans) {   // thread t: row t/4, columns 2(t%4), 2(t%4)+1 of matrix i
            const uint16_t *row = (const uint16_t *)W.ptr[8 * i + t / 4];
            lo = row[2 * (t % 4)], hi = row[2 * (t % 4) + 1];
        } else {        // transposed: rows 2(t%4), 2(t%4)+1, column t/4
            lo = ((const uint16_t *)W.ptr[8 * i + 2 * (t % 4)])[t / 4];
            hi = ((const uint16_t *)W.ptr[8 * i + 2 * (t % 4) + 1])[t / 4];
        }
        r[i] = (uint32_t)lo | ((uint32_t)hi << 16);
    }
    warp_barrier();
}
inline float bf(uint32_t w, int half) {
    uint32_t u = half ? (w & 0xffff0000u) : (w << 16);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
// D = A·B + C, m16n8k16, A row-major (a0: rows g, k 2t..; a1: rows g+8; a2: k+8; a3: both),
// B "col" (b0: k 2t.., n g; b1: k 2t+8..), C/D (c0,c1: row g, n 2t, 2t+1; c2,c3: row g+8).
inline void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    Warp &W = warp();
    int t = lane();
    memcpy(W.a[t], a, sizeof a);
    W.b[t][0] = b0, W.b[t][1] = b1;
    warp_barrier();
    auto A = [&](int r, int k) { return bf(W.a[(r % 8) * 4 + (k % 8) / 2][(r >= 8) + 2 * (k >= 8)], k & 1); };
    auto B = [&](int k, int n) { return bf(W.b[n * 4 + (k % 8) / 2][k >= 8], k & 1); };
    int g = t / 4, tg = t % 4;
    float out[4];
    for (int i = 0; i < 4; i++) {
        int r = g + (i >= 2 ? 8 : 0), n = 2 * tg + (i & 1);
        float s = d[i];
        for (int k = 0; k < 16; k++) s += A(r, k) * B(k, n);
        out[i] = s;
    }
    warp_barrier();
    memcpy(d, out, sizeof out);
}

}  // namespace emu

// ---- CUDA built-ins ---------------------------------------------------------------------
#define threadIdx (uint3{(unsigned)emu::S.cur, 0u, 0u})
#define blockIdx (emu::S.block_idx)
#define gridDim (emu::S.grid_dim)
#define blockDim (emu::S.block_dim)
inline void __syncthreads() { emu::barrier(0, emu::S.nthr); }
inline float __shfl_xor_sync(unsigned, float v, int m) {
    emu::Warp &W = emu::warp();
    int t = emu::lane();
    W.f[t] = v;
    emu::warp_barrier();
    float r = W.f[t ^ m];
    emu::warp_barrier();
    return r;
}
inline double __shfl_xor_sync(unsigned, double v, int m) {
    emu::Warp &W = emu::warp();
    int t = emu::lane();
    W.d[t] = v;
    emu::warp_barrier();
    double r = W.d[t ^ m];
    emu::warp_barrier();
    return r;
}
inline int min(int a, int b) { return a < b ? a : b; }
// IEEE single operations (x86-64 without -mfma does no contraction, as the _rn intrinsics promise)
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float rsqrtf(float a) { return 1.0f / sqrtf(a); }
inline float __uint_as_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
#undef __shared__
#define __shared__ static

#endif
