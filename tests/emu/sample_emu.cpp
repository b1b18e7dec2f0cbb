/* tests/emu/sample_emu.cpp — batched sampling (kernels/cuda/ds_sample.cu, one 1024-thread block
 * per row: bisection searches over the probabilities' bit patterns, the binade histogram, the
 * compaction into shared memory) run on the CPU through the emulator in tests/emu/cuda_emu.h,
 * against smp_sample / smp_logprob (kernels/cpu/sample.c, tested in tests/unit/test_sample.c),
 * with tests/gpu/test_ds_sample_gpu.c's eight parameter sets per row (greedy, R1's T 0.6 /
 * top-p 0.95, top-k, combinations with min-p, top-k 1) and per-row RNG streams. Vocabularies:
 * 7 (fewer tokens than threads, top-k ≥ V), 3000 with peaked logits (the compacted path) and
 * 9000 with flat ones (nuclei above the 8192 compacted candidates: the global path).
 * Tolerance (tests/gpu's): tokens exact — both sides compute the same double probabilities,
 * keep the same set and walk the same cumulative mass; a mismatch needs an exact tie or a draw
 * within ~1e-16 of a boundary. Logprobs within 1e-6·max(1, |lp|) (double sums in another
 * order, one f32 rounding).
 * Built and run by tests/ref/test_cuda_emu.py. */
#define RT_EMU 1
#define RT_HAVE_CUDA 1
#include "tests/emu/cuda_emu.h"

#include "kernels/cuda/ds_sample.cu"

#include <stdio.h>
#include <stdlib.h>

#define EMU_SEED 0xbb67ae8584caa73bull
#include "tests/emu/emu_check.h"


static void run(int64_t V, int64_t n, float spread) {
    const smp_params ps[] = {
        {0.0f, 0, 1.0f, 0.0f},     // greedy
        {0.6f, 0, 0.95f, 0.0f},    // R1's recommended
        {1.0f, 50, 1.0f, 0.0f},
        {0.7f, 40, 0.9f, 0.05f},
        {1.3f, 0, 1.0f, 0.1f},
        {1.0f, 0, 1.0f, 0.0f},
        {0.3f, 1, 1.0f, 0.0f},
        {2.0f, 0, 0.5f, 0.0f},
    };
    const int np = (int)(sizeof ps / sizeof *ps);
    std::vector<float> l((size_t)(n * V)), lp((size_t)n, NAN);
    std::vector<smp_params> p((size_t)n);
    std::vector<uint64_t> r((size_t)n * 3);
    std::vector<int32_t> tok((size_t)n, -7);
    std::vector<double> ws((size_t)(n * V), NAN);
    std::vector<unsigned char> cpu_ws(smp_workspace_bytes(V));
    for (auto &v : l) v = rnd_normal() * spread;
    for (int64_t i = 0; i < n; i++) {
        p[i] = ps[i % np];
        r[3 * i] = ((uint64_t)rnd() << 32) | rnd(), r[3 * i + 1] = (uint64_t)i, r[3 * i + 2] = rnd() % 5000;
    }
    emu::launch(dim3((unsigned)n), dim3(SP_THREADS), SP_CAP * (8 + 4), [&] {
        k_sample(l.data(), V, p.data(), r.data(), ws.data(), tok.data(), lp.data());
    });
    int bad_tok = 0, bad_lp = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t want = -1;
        double u = smp_uniform(r[3 * i], r[3 * i + 1], r[3 * i + 2]);
        smp_sample(&l[i * V], V, &p[i], u, cpu_ws.data(), &want);
        float wl = smp_logprob(&l[i * V], V, want);
        if (tok[i] != want) {
            if (!bad_tok++)
                printf("         row %lld (T %g, top_k %d, top_p %g, min_p %g, u %.17g): emu %d cpu %d\n", (long long)i,
                       p[i].temperature, p[i].top_k, p[i].top_p, p[i].min_p, u, tok[i], want);
        }
        if (!(fabsf(lp[i] - wl) <= 1e-6f * fmaxf(1.0f, fabsf(wl)))) {
            if (!bad_lp++) printf("         row %lld logprob emu %.9g cpu %.9g\n", (long long)i, lp[i], wl);
        }
    }
    bool ok = !bad_tok && !bad_lp;
    printf("%-8s sample V=%-6lld %2lld rows, logits x%-4g %d tokens, %d logprobs differ\n", ok ? "ok" : "FAIL",
           (long long)V, (long long)n, spread, bad_tok, bad_lp);
    if (!ok) failures++;
}

int main() {
    run(7, 8, 1.0f);        // fewer tokens than threads; top_k ≥ V
    run(3000, 8, 3.0f);     // peaked: filtered rows take the compacted path
    run(9000, 8, 0.05f);    // flat: nuclei of more than 8192 tokens, the global path
    printf("%s\n", failures ? "sample emulation: FAILED" : "sample emulation: all ok");
    return failures ? 1 : 0;
}
