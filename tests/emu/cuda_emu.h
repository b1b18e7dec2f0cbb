/* tests/emu/cuda_emu.h — a small CPU emulator for the CUDA kernels' warp-level code (the student's
 * and the teacher's), so their tiling and fragment bookkeeping can be checked on a machine without
 * a GPU.
 *
 * A kernel source is compiled by g++ with -DRT_EMU and this header first. Every thread of a block
 * is a coroutine on its own stack (started by makecontext, switched by _setjmp/_longjmp, which
 * make no system calls); the blocks of a grid run one after another. __syncthreads and every warp-
 * collective operation (shuffles, ballots, ldmatrix, mma.sync m16n8k16 bf16 and m16n8k32 e4m3,
 * emulated from the PTX ISA's fragment layouts) are barriers: a thread deposits its operand,
 * yields until all live threads of its warp (or block) have arrived, then reads what it needs.
 * Threads that have returned no longer count (as on the hardware). The schedule is adversarial and
 * reproducible (seeded; RT_EMU_SEED picks another): one warp at a time runs ahead until it waits
 * at __syncthreads, its lanes in a new random order at every step (see launch()), so code that
 * relies on an implicit order between threads (a missing barrier) reads stale data. A round in
 * which no thread makes progress (all wait at barriers some thread never reaches) is a deadlock:
 * the run stops with "FAIL emu: deadlock". __shared__ variables become function statics (one block
 * runs at a time); dynamic shared memory is one buffer per launch, filled with garbage (0xcd)
 * before each block. Two forms of cp.async: cp_async16 copies at once (the student kernels);
 * cpa()/cpa_commit()/cpa_wait(n) (the teacher kernels) capture the source at issue and land it
 * either at once (half the groups, at random: a buffer overwritten while others still read it
 * shows) or only when cp.async.wait_group lets the group go (a missing or too-weak wait reads what
 * was there before). What it checks: indexing, masking, tiling, fragment ↔ element mapping,
 * synchronization order. What it cannot: timing, races the hardware would expose that this
 * schedule does not, the exact rounding inside the tensor cores (emulated as f32 multiply-adds in
 * k order; the e4m3 products are exact in f32). */
#ifndef RT_TESTS_CUDA_EMU_H
#define RT_TESTS_CUDA_EMU_H

#undef _FORTIFY_SOURCE   /* its longjmp check refuses the jumps between coroutine stacks */
#define __launch_bounds__(...)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <ucontext.h>

#include <functional>
#include <vector>

namespace emu {

struct Warp {
    const void *ptr[32];
    uint32_t a[32][4], b[32][2];
    uint64_t x[32];
};

// One cp.async copy waiting to land: 16 bytes captured at issue.
struct Copy {
    void *dst;
    unsigned char data[16];
};
struct Thread {
    std::vector<std::vector<Copy>> groups;   // committed groups, oldest first
    std::vector<Copy> open;                  // issued since the last commit
};

struct State {
    int nthr = 0, cur = 0, live = 0;
    std::vector<ucontext_t> ctx;             // only to start a thread on its stack
    struct JB { jmp_buf b; };
    std::vector<JB> jb;                      // switches: _setjmp/_longjmp (no signal-mask syscalls)
    std::vector<std::vector<char>> stacks;
    std::vector<char> done, started, at_sync;
    std::vector<unsigned> sync_gen;          // the __syncthreads generation a thread waits on
    std::vector<int> order;
    std::vector<Thread> thr;
    jmp_buf sched_jb;
    unsigned gen[33] = {0};
    int arrived[33] = {0}, wlive[32] = {0};
    uint64_t progress = 0, seed = 0x9E3779B97F4A7C15ull;
    bool shuffle = true;                     // a new thread order every round
    bool warps_ahead = true;                 // one warp runs until it waits at __syncthreads
    int run_warp = -1;
    bool cpa_eager = true;                   // half the cp.async groups land at their commit
    std::vector<char> dyn;
    uint3 block_idx{0, 0, 0}, grid_dim{1, 1, 1}, block_dim{1, 1, 1};
    Warp warps[32];
    std::function<void()> body;
};
inline State S;

inline void yield() {
    if (!_setjmp(S.jb[S.cur].b)) _longjmp(S.sched_jb, 1);
}
// group 0: the block; 1 + w: warp w. The barrier completes when every live thread has arrived.
inline int group_size(int group) { return group ? S.wlive[group - 1] : S.live; }
inline void release_if_full(int group) {
    if (S.arrived[group] > 0 && S.arrived[group] >= group_size(group)) {
        S.arrived[group] = 0;
        S.gen[group]++;
        S.progress++;
    }
}
inline void barrier(int group) {
    unsigned g = S.gen[group];
    S.arrived[group]++;
    S.progress++;
    release_if_full(group);
    if (!group) S.at_sync[S.cur] = 1, S.sync_gen[S.cur] = g;
    while (S.gen[group] == g) yield();
    if (!group) S.at_sync[S.cur] = 0;
}
inline void warp_barrier() { barrier(1 + S.cur / 32); }
inline int lane() { return S.cur & 31; }
inline Warp &warp() { return S.warps[S.cur / 32]; }

inline void entry(void) {
    S.body();
    S.done[S.cur] = 1;
    S.live--;
    S.wlive[S.cur / 32]--;
    S.progress++;
    release_if_full(0);   // an exited thread no longer holds back a barrier
    release_if_full(1 + S.cur / 32);
    _longjmp(S.sched_jb, 1);   // never returns into the ucontext machinery
}

inline uint64_t next_rand() {
    S.seed ^= S.seed << 13, S.seed ^= S.seed >> 7, S.seed ^= S.seed << 17;
    return S.seed;
}

inline bool blocked(int t) { return S.done[t] || (S.at_sync[t] && S.gen[0] == S.sync_gen[t]); }
inline bool warp_runnable(int w) {
    for (int t = 32 * w; t < 32 * w + 32 && t < S.nthr; t++)
        if (!blocked(t)) return true;
    return false;
}

/* Runs body() as every thread of every block of grid × block, in rounds: each round resumes
 * every live thread once (in a fresh random order), or with warps_ahead (the default) only the
 * threads of one warp, which keeps running until all its threads wait at __syncthreads (or
 * have returned); then another warp, picked at random. So a warp runs ahead of the others as
 * far as the barriers let it: a missing __syncthreads lets it read shared memory the others
 * have not written yet, or overwrite what they have not read. Returns normally; a deadlock
 * prints one FAIL line and exits 1 (the driver's result would be meaningless). */
inline void launch(dim3 grid, dim3 block, size_t dyn_bytes, std::function<void()> body) {
    static bool seeded = false;   // RT_EMU_SEED=N: another schedule (the default seed is fixed)
    if (!seeded) {
        const char *e = getenv("RT_EMU_SEED");
        if (e && *e) S.seed = strtoull(e, NULL, 0) * 0x9E3779B97F4A7C15ull | 1;
        seeded = true;
    }
    int n = (int)(block.x * block.y * block.z);
    S.nthr = n;
    S.body = body;
    S.grid_dim = uint3{grid.x, grid.y, grid.z};
    S.block_dim = uint3{block.x, block.y, block.z};
    S.dyn.assign(dyn_bytes + 16, 0);
    S.ctx.resize(n);
    S.jb.resize(n);
    S.stacks.resize(n);
    S.order.resize(n);
    for (int t = 0; t < n; t++) S.stacks[t].resize(96 * 1024);
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                S.block_idx = uint3{bx, by, bz};
                memset(S.gen, 0, sizeof S.gen);
                memset(S.arrived, 0, sizeof S.arrived);
                memset(S.dyn.data(), 0xcd, S.dyn.size());   // garbage, as on the device
                S.done.assign(n, 0);
                S.started.assign(n, 0);
                S.at_sync.assign(n, 0);
                S.sync_gen.assign(n, 0);
                S.run_warp = -1;
                S.thr.assign(n, Thread());
                S.live = n;
                for (int w = 0; w < 32; w++) S.wlive[w] = n - 32 * w < 0 ? 0 : (n - 32 * w > 32 ? 32 : n - 32 * w);
                for (int t = 0; t < n; t++) {
                    getcontext(&S.ctx[t]);
                    S.ctx[t].uc_stack.ss_sp = S.stacks[t].data();
                    S.ctx[t].uc_stack.ss_size = S.stacks[t].size();
                    S.ctx[t].uc_link = NULL;
                    makecontext(&S.ctx[t], (void (*)(void))entry, 0);
                    S.order[t] = t;
                }
                bool first = true;
                while (S.live > 0) {
                    int lo = 0, hi = n;
                    if (S.warps_ahead) {
                        if (S.run_warp < 0 || !warp_runnable(S.run_warp)) {
                            int cand[32], nc = 0;
                            for (int w = 0; 32 * w < n; w++)
                                if (warp_runnable(w)) cand[nc++] = w;
                            S.run_warp = nc ? cand[next_rand() % (uint64_t)nc] : 0;
                        }
                        lo = 32 * S.run_warp, hi = lo + 32 < n ? lo + 32 : n;
                    }
                    if (S.shuffle)
                        for (int i = hi - 1; i > lo; i--)
                            std::swap(S.order[i], S.order[lo + next_rand() % (uint64_t)(i - lo + 1)]);
                    uint64_t before = S.progress;
                    for (int i = lo; i < hi; i++) {
                        int t = S.order[i];
                        if (S.done[t]) continue;
                        S.cur = t;
                        if (!_setjmp(S.sched_jb)) {
                            if (!S.started[t]) {
                                S.started[t] = 1;
                                setcontext(&S.ctx[t]);
                            }
                            _longjmp(S.jb[t].b, 1);
                        }
                    }
                    if (!first && S.progress == before && S.live > 0) {
                        printf("FAIL     emu: deadlock in block (%u,%u,%u): %d live threads wait at barriers\n", bx, by,
                               bz, S.live);
                        fflush(stdout);
                        exit(1);
                    }
                    first = false;
                }
            }
}

inline void *dyn_smem() { return (void *)(((uintptr_t)S.dyn.data() + 15) & ~(uintptr_t)15); }

// ---- the PTX operations -------------------------------------------------------------------
inline void cp_async16(void *s, const void *g, bool valid) {
    if (valid) memcpy(s, g, 16);
    else memset(s, 0, 16);
}
// cp.async.cg 16 bytes with src-size `bytes` (16, or 0: zero-fill), landing at cpa_wait.
inline void cpa(void *s, const void *g, int bytes) {
    Copy c;
    c.dst = s;
    memset(c.data, 0, 16);
    if (bytes) memcpy(c.data, g, (size_t)bytes);
    S.thr[S.cur].open.push_back(c);
}
inline void cpa_commit() {
    Thread &T = S.thr[S.cur];
    if (S.cpa_eager && (next_rand() & 1)) {   // this group lands at once (it still counts as a group)
        for (const Copy &c : T.open) memcpy(c.dst, c.data, 16);
        T.open.clear();
    }
    T.groups.push_back(T.open);
    T.open.clear();
}
// cp.async.wait_group n: every committed group but the newest n has landed.
inline void cpa_wait(int n) {
    Thread &T = S.thr[S.cur];
    while ((int)T.groups.size() > n) {
        for (const Copy &c : T.groups.front()) memcpy(c.dst, c.data, 16);
        T.groups.erase(T.groups.begin());
    }
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
// e4m3fn → f32, written out from the format (1 sign, 4 exponent bits with bias 7, 3 mantissa
// bits; exponent 0: subnormal, units of 2^-9; 0x7f/0xff: NaN), independent of cuda_fp8.h.
inline float e4m3(uint8_t b) {
    int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    if (e == 15 && m == 7) return NAN;
    float v = e ? ldexpf((float)(8 + m), e - 10) : ldexpf((float)m, -9);
    return s ? -v : v;
}
// D = A·B + C, m16n8k32 e4m3 (PTX ISA "Matrix Fragments for mma.m16n8k32", 8-bit types):
// A: register i of lane t holds the four bytes a[row][k..k+3] with row = g + 8·(i & 1),
// k = 4·(t%4) + 16·(i >> 1) (byte j of the register is k + j); B: register j holds
// b[k..k+3][n] with n = g, k = 4·(t%4) + 16·j; C/D as m16n8k16 (g = t/4). Which k a byte
// slot stands for inside one mma cannot be observed (A and B share the mapping, the sum runs
// over all 32), only which A slots meet which B slots and where rows and columns land: that
// part is what a kernel can get wrong, and what this checks.
inline void mma16832_e4m3(float *d, const uint32_t *a, const uint32_t *b) {
    Warp &W = warp();
    int t = lane();
    memcpy(W.a[t], a, 16);
    W.b[t][0] = b[0], W.b[t][1] = b[1];
    warp_barrier();
    static float lut[256];
    static bool lut_ready = false;
    if (!lut_ready) {
        for (int i = 0; i < 256; i++) lut[i] = e4m3((uint8_t)i);
        lut_ready = true;
    }
    auto byte = [](uint32_t w, int j) { return (uint8_t)(w >> (8 * j)); };
    auto A = [&](int r, int k) { return lut[byte(W.a[(r % 8) * 4 + (k % 16) / 4][(r >= 8) + 2 * (k >= 16)], k % 4)]; };
    auto B = [&](int k, int n) { return lut[byte(W.b[n * 4 + (k % 16) / 4][k >= 16], k % 4)]; };
    int g = t / 4, tg = t % 4;
    float out[4];
    for (int i = 0; i < 4; i++) {
        int r = g + (i >= 2 ? 8 : 0), n = 2 * tg + (i & 1);
        float s = d[i];
        for (int k = 0; k < 32; k++) s += A(r, k) * B(k, n);
        out[i] = s;
    }
    warp_barrier();
    memcpy(d, out, sizeof out);
}

// Warp exchange of one value per lane (any type of ≤ 8 bytes): each lane deposits v, then
// reads lane src(lane)'s. Out-of-range sources keep the lane's own value (as __shfl_up_sync).
template <typename T, typename F> inline T exchange(T v, F src) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    Warp &W = warp();
    int t = lane();
    memcpy(&W.x[t], &v, sizeof v);
    warp_barrier();
    int s = src(t);
    T r = v;
    if (s >= 0 && s < 32) memcpy(&r, &W.x[s], sizeof r);
    warp_barrier();
    return r;
}

}  // namespace emu

// ---- CUDA built-ins ---------------------------------------------------------------------
#define threadIdx (uint3{(unsigned)emu::S.cur, 0u, 0u})
#define blockIdx (emu::S.block_idx)
#define gridDim (emu::S.grid_dim)
#define blockDim (emu::S.block_dim)
inline void __syncthreads() { emu::barrier(0); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_barrier(); }
template <typename T> inline T __shfl_xor_sync(unsigned, T v, int m) {
    return emu::exchange(v, [&](int t) { return t ^ m; });
}
template <typename T> inline T __shfl_up_sync(unsigned, T v, unsigned d) {
    return emu::exchange(v, [&](int t) { return t - (int)d; });
}
template <typename T> inline T __shfl_sync(unsigned, T v, int src) {
    return emu::exchange(v, [&](int) { return src & 31; });
}
inline unsigned __ballot_sync(unsigned, int pred) {
    emu::Warp &W = emu::warp();
    int t = emu::lane();
    W.x[t] = pred != 0;
    emu::warp_barrier();
    unsigned r = 0;
    for (int i = 0; i < 32; i++) r |= (unsigned)(W.x[i] & 1) << i;   // exited lanes: stale, masked by the kernel
    emu::warp_barrier();
    return r;
}
inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
// No thread is preempted between two barriers, so a plain read-modify-write is atomic here.
inline int atomicAdd(int *p, int v) { int o = *p; *p = o + v; return o; }
inline unsigned atomicAdd(unsigned *p, unsigned v) { unsigned o = *p; *p = o + v; return o; }
inline float atomicAdd(float *p, float v) { float o = *p; *p = o + v; return o; }
inline double atomicAdd(double *p, double v) { double o = *p; *p = o + v; return o; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
// IEEE single operations (x86-64 without -mfma does no contraction, as the _rn intrinsics promise)
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float rsqrtf(float a) { return 1.0f / sqrtf(a); }
inline float __expf(float a) { return expf(a); }   // the device's is ex2.approx-based: ≤ 2 ulp + 2^-21·|a| away
inline float __uint_as_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline long long __double_as_longlong(double d) {
    long long l;
    memcpy(&l, &d, 8);
    return l;
}
#undef __shared__
#define __shared__ static

#endif
