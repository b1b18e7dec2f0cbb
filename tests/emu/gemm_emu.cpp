/* tests/emu/gemm_emu.cpp — the row-major → column-major mapping behind every cuBLASLt call of
 * kernels/cuda/matmul.cu (lt_plan_for), checked on the CPU: for every transpose combination and
 * padded strides, the column-major problem it describes (operand order, transposes, stored
 * shapes, leading dimensions), evaluated with plain BLAS semantics, must equal the row-major
 * product computed directly (same f32 operations in the same order: exact). Also the bias
 * gradient's column-sum kernel on the emulator against a sum in the kernel's documented order.
 * Built and run by tests/ref/test_cuda_emu.py. */
#define RT_EMU 1
#define RT_HAVE_CUDA 1
#include "tests/emu/cuda_emu.h"

#include "kernels/cuda/matmul.cu"

#include <stdio.h>
#include <stdlib.h>

static int failures = 0;
static uint64_t rng = 77;
static float r() {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) % 2001) / 1000.0f - 1.0f;
}

int main() {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int64_t M = 7, N = 5, K = 3, pad = 2;
            int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
            int64_t lda = ac + pad, ldb = bc + pad, ldd = N + pad;
            std::vector<float> A(ar * lda), B(br * ldb), want(M * ldd, 0), got(M * ldd, 0);
            for (auto &x : A) x = r();
            for (auto &x : B) x = r();
            for (int64_t i = 0; i < M; i++)   // row-major, directly
                for (int64_t j = 0; j < N; j++) {
                    float s = 0;
                    for (int64_t p = 0; p < K; p++) s += (ta ? A[p * lda + i] : A[i * lda + p]) * (tb ? B[j * ldb + p] : B[p * ldb + j]);
                    want[i * ldd + j] = s;
                }
            lt_plan pl = lt_plan_for(ta, tb, M, N, K, lda, ldb);
            // stored shapes must fit the problem: op1 is m×k, op2 is k×n
            bool shapes = (pl.op1_t ? (pl.r1 == pl.k && pl.c1 == pl.m) : (pl.r1 == pl.m && pl.c1 == pl.k)) &&
                          (pl.op2_t ? (pl.r2 == pl.n && pl.c2 == pl.k) : (pl.r2 == pl.k && pl.c2 == pl.n)) &&
                          (int64_t)pl.r1 <= pl.ld1 && (int64_t)pl.r2 <= pl.ld2;
            const float *X1 = B.data(), *X2 = A.data();   // first operand: B's memory; second: A's
            auto op1 = [&](uint64_t i, uint64_t p) { return pl.op1_t ? X1[i * pl.ld1 + p] : X1[p * pl.ld1 + i]; };
            auto op2 = [&](uint64_t p, uint64_t j) { return pl.op2_t ? X2[p * pl.ld2 + j] : X2[j * pl.ld2 + p]; };
            for (uint64_t i = 0; i < pl.m; i++)   // column-major D'(i, j) at D[i + j·ldd]
                for (uint64_t j = 0; j < pl.n; j++) {
                    float s = 0;
                    for (uint64_t p = 0; p < pl.k; p++) s += op1(i, p) * op2(p, j);
                    got[i + j * ldd] = s;
                }
            bool ok = shapes && !memcmp(got.data(), want.data(), got.size() * 4);
            printf("%-8s cuBLASLt plan ta=%d tb=%d (shapes %s)\n", ok ? "ok" : "FAIL", ta, tb, shapes ? "fit" : "WRONG");
            failures += !ok;
        }
    {   // k_colsum: db[n] += Σ_m dy[m, n], 8 warps each summing every 8th row, then in warp order
        int64_t M = 37, N = 70;
        std::vector<uint16_t> dy(M * N);
        std::vector<float> f(M * N), db(N, 0.5f), want(N);
        for (int64_t i = 0; i < M * N; i++) {
            float x = r();
            uint32_t u;
            memcpy(&u, &x, 4);
            dy[i] = (uint16_t)(u >> 16);
            u = (uint32_t)dy[i] << 16;
            memcpy(&f[i], &u, 4);
        }
        for (int64_t n = 0; n < N; n++) {
            float part[8];
            for (int w = 0; w < 8; w++) {
                part[w] = 0;
                for (int64_t m = w; m < M; m += 8) part[w] += f[m * N + n];
            }
            float t = 0;
            for (int w = 0; w < 8; w++) t += part[w];
            want[n] = 0.5f + t;
        }
        emu::launch(dim3((unsigned)((N + 31) / 32)), dim3(256), 0, [&] { k_colsum(db.data(), dy.data(), M, N); });
        bool ok = !memcmp(db.data(), want.data(), N * 4);
        printf("%-8s bias gradient column sums (bit-identical to the documented order)\n", ok ? "ok" : "FAIL");
        failures += !ok;
    }
    printf("%s\n", failures ? "gemm emulation: FAILED" : "gemm emulation: all ok");
    return failures ? 1 : 0;
}
