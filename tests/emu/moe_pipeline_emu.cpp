/* tests/emu/moe_pipeline_emu.cpp — the whole FP8 MoE expert pipeline of the GPU teacher, kernel
 * after kernel on the CPU through the emulator in tests/emu/cuda_emu.h, as
 * tests/gpu/test_ds_moe_gpu.c runs it: route (ds_moe.cu) → permute → e4m3 quantization of x
 * (fp8_gemm.cu) → gather of the codes and of their scales → grouped FP8 gate|up GEMM → SwiGLU +
 * quantization → grouped FP8 down GEMM → combine, with the shared expert as one more group in a
 * fixed extra slot. So the kernels' contracts are checked as they compose (offsets from the
 * permutation into the GEMM, scale layouts through the gather, gate|up halves into the SwiGLU),
 * against the CPU engine: moe_experts_fwd + moe_mlp_fwd (kernels/cpu/moe.c, tested against
 * transformers) on the dequantized weights in f32, on the emulated routing.
 * Tolerance (tests/gpu's): the pipeline quantizes x and h to e4m3 (each element within 2^-4
 * relative, the errors uncorrelated) and rounds gu and y to bf16; an emulation of exactly these
 * roundings (torch float8, five seeds) gives a relative L2 error of 4.4 % over all outputs and
 * ≤ 5.6 % per token: bounds 8 % and 12 % (a wrong expert, weight, row or scale gives ~100 %).
 * Built and run by tests/ref/test_cuda_emu.py. */
#define RT_EMU 1
#define RT_HAVE_CUDA 1
#include "tests/emu/cuda_emu.h"

#include "kernels/cuda/ds_moe.cu"
#include "kernels/cuda/fp8_gemm.cu"

#include <stdio.h>
#include <stdlib.h>

#include "kernels/convert.h"

#define EMU_SEED 0x3c6ef372fe94f82bull
#include "tests/emu/emu_check.h"

// e4m3 weights [rows, cols] with 128×128 block scales, and their f32 dequantization
static void make_w(uint8_t *q, float *s, float *f, int64_t rows, int64_t cols, float sc) {
    int64_t sr = (rows + 127) / 128, scn = cols / 128;
    for (int64_t i = 0; i < rows * cols; i++) q[i] = fp8_from_f32(rnd_normal() * 100.0f);
    for (int64_t i = 0; i < sr * scn; i++) s[i] = sc * (0.5f + rnd_unit());
    fp8_block_dequant(q, s, rows, cols, 128, 128, f, NULL);
}

int main() {
    moe_router_cfg c = {8, 4, 2, 3, true, 2.5f};
    const int64_t n = 24, D = 256, I = 256, E = 8, K = 3, S = K + 1, G = E + 1;   // group E: the shared expert
    const int64_t nbD = D / 128, nbI = I / 128, rows = n * S;
    std::vector<uint8_t> w13((size_t)(G * 2 * I * D)), w2((size_t)(G * D * I));
    std::vector<float> s13((size_t)(G * (2 * I / 128) * nbD)), s2((size_t)(G * (D / 128) * nbI));
    std::vector<float> f13((size_t)(G * 2 * I * D)), f2((size_t)(G * D * I));
    std::vector<moe_expert> ex((size_t)G);
    for (int64_t g = 0; g < G; g++) {   // w13 [2I, D]: gate rows then up rows; w2 [D, I]
        make_w(&w13[g * 2 * I * D], &s13[g * (2 * I / 128) * nbD], &f13[g * 2 * I * D], 2 * I, D, 2e-4f);
        make_w(&w2[g * D * I], &s2[g * (D / 128) * nbI], &f2[g * D * I], D, I, 2e-4f);
        ex[g] = moe_expert{&f13[g * 2 * I * D], &f13[g * 2 * I * D + I * D], &f2[g * D * I]};
    }
    std::vector<uint16_t> xb((size_t)(n * D));
    std::vector<float> x((size_t)(n * D)), l((size_t)(n * E));
    for (int64_t i = 0; i < n * D; i++) xb[i] = f32_to_bf16(rnd_normal()), x[i] = bf16_to_f32(xb[i]);
    for (auto &v : l) v = rnd_normal();
    std::vector<int32_t> idx((size_t)rows), off((size_t)G + 1, -7), ros((size_t)rows, -7), sor((size_t)rows, -7);
    std::vector<float> w((size_t)rows);
    for (int64_t t = 0; t < n; t++) idx[t * S + K] = (int32_t)E, w[t * S + K] = 1.0f;   // the shared expert's slot
    std::vector<uint8_t> q((size_t)(n * D), 0xff), qp((size_t)(rows * D), 0xff), h((size_t)(rows * I), 0xff);
    std::vector<float> qs((size_t)(n * nbD), NAN), qsp((size_t)(rows * nbD), NAN), hs((size_t)(rows * nbI), NAN);
    std::vector<uint16_t> gu((size_t)(rows * 2 * I), 0xffff), y((size_t)(rows * D), 0xffff), out((size_t)(n * D), 0xffff);
    const size_t gsmem = GB_STAGES * GB_STAGE;
    emu::launch(dim3((unsigned)n), dim3(RT_THREADS), 0, [&] { k_route(c, l.data(), NULL, S, idx.data(), w.data()); });
    emu::launch(dim3(1), dim3(PM_THREADS), 0,
                [&] { k_permute(idx.data(), rows, (int)G, off.data(), ros.data(), sor.data()); });
    emu::launch(dim3(grid_for((size_t)(n * nbD) * 32, 256)), dim3(256), 0,
                [&] { k_quant<false>(xb.data(), n, D, q.data(), qs.data(), 0); });
    emu::launch(dim3((unsigned)rows), dim3(128), 0, [&] { k_gather(q.data(), D, sor.data(), S, qp.data()); });
    emu::launch(dim3((unsigned)rows), dim3(128), 0,
                [&] { k_gather((const uint8_t *)qs.data(), nbD * 4, sor.data(), S, (uint8_t *)qsp.data()); });
    emu::launch(dim3((unsigned)((2 * I + GB_N - 1) / GB_N), (unsigned)gb_grouped_tiles(G, rows)), dim3(256), gsmem, [&] {
        k_gemm_grouped(qp.data(), qsp.data(), w13.data(), s13.data(), off.data(), (int)G, 0, (int)(2 * I), (int)D,
                       gu.data(), NULL, 0);
    });
    emu::launch(dim3(grid_for((size_t)(rows * nbI) * 32, 256)), dim3(256), 0,
                [&] { k_quant<true>(gu.data(), rows, I, h.data(), hs.data(), 0); });
    emu::launch(dim3((unsigned)((D + GB_N - 1) / GB_N), (unsigned)gb_grouped_tiles(G, rows)), dim3(256), gsmem, [&] {
        k_gemm_grouped(h.data(), hs.data(), w2.data(), s2.data(), off.data(), (int)G, 0, (int)D, (int)I, y.data(), NULL, 0);
    });
    emu::launch(dim3((unsigned)n), dim3(256), 0,
                [&] { k_combine(y.data(), ros.data(), w.data(), S, D, NULL, out.data()); });
    // the CPU engine on the emulated routing
    std::vector<int32_t> ci((size_t)(n * K));
    std::vector<float> cw((size_t)(n * K)), ref((size_t)(n * D), 0.0f);
    for (int64_t t = 0; t < n; t++)
        for (int64_t k = 0; k < K; k++) ci[t * K + k] = idx[t * S + k], cw[t * K + k] = w[t * S + k];
    int failures = 0;
    if (moe_mlp_fwd(&ex[E], D, I, x.data(), n, ref.data(), NULL, NULL) ||
        moe_experts_fwd(ex.data(), E, D, I, x.data(), n, ci.data(), cw.data(), K, ref.data(), NULL)) {
        printf("FAIL     the CPU engine failed\n");
        return 1;
    }
    double e2 = 0, r2 = 0, worst = 0;
    for (int64_t t = 0; t < n; t++) {
        double te = 0, tr = 0;
        for (int64_t j = 0; j < D; j++) {
            double d = bf16_to_f32(out[t * D + j]) - ref[t * D + j];
            te += d * d, tr += (double)ref[t * D + j] * ref[t * D + j];
        }
        double rel = sqrt(te / tr);
        if (!(rel <= 0.12)) failures++;
        worst = rel > worst || rel != rel ? rel : worst;
        e2 += te, r2 += tr;
    }
    double all = sqrt(e2 / r2);
    bool ok = !failures && all <= 0.08;
    printf("%-8s moe pipeline %lld tokens, %lld+1 experts, D=%lld I=%lld: rel L2 %.4f (bound 0.08), worst token %.4f "
           "(bound 0.12)\n",
           ok ? "ok" : "FAIL", (long long)n, (long long)E, (long long)D, (long long)I, all, worst);
    // the pieces the pipeline must have written
    long unwritten = 0;
    for (int64_t i = 0; i < rows; i++) unwritten += ros[i] < 0 || qsp[i * nbD] != qsp[i * nbD];
    printf("%-8s every slot routed, permuted and its scales gathered (%ld missing)\n", unwritten ? "FAIL" : "ok", unwritten);
    printf("%-8s offsets[G] = %d of %lld rows\n", off[G] == rows ? "ok" : "FAIL", off[G], (long long)rows);
    failures += !ok + (unwritten != 0) + (off[G] != rows);
    printf("%s\n", failures ? "moe pipeline emulation: FAILED" : "moe pipeline emulation: all ok");
    return failures ? 1 : 0;
}
