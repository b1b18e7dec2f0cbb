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
 * Top-k logprobs (k_top_logprobs) against smp_top_logprobs: ids exact (same order: larger logit
 * first, ties by lower id — rows with planted ties and −inf holes check it), logprobs within
 * 1e-6·max(1, |lp|) (double sums in another order). With arguments `topk IN OUT k` it runs the
 * kernel on the rows of IN (int64 n, int64 V, then n·V f32) and writes ids (int32) then
 * logprobs (f32) to OUT, for tests/ref/test_cuda_emu.py's comparison with torch.
 * Built and run by tests/ref/test_cuda_emu.py. */
#define RT_EMU 1
#define RT_HAVE_CUDA 1
#include "tests/emu/cuda_emu.h"

#include "kernels/cuda/ds_sample.cu"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void run_topk(int64_t V, int64_t n, int k, float spread) {
    std::vector<float> l((size_t)(n * V)), lp((size_t)(n * k), NAN), wl((size_t)k);
    std::vector<int32_t> ids((size_t)(n * k), -7), wi((size_t)k);
    for (auto &v : l) v = rnd_normal() * spread;
    for (int64_t i = 0; i < n; i++) {   // ties (equal logits at scattered ids) and −inf holes
        float *r = &l[i * V];
        for (int t = 0; t < 6 && V > 8; t++) r[rnd() % V] = r[(i * 7) % V];
        if (i % 2 && V > 3) r[rnd() % V] = -INFINITY, r[rnd() % V] = r[(i * 7) % V] + 1.0f;
    }
    emu::launch(dim3((unsigned)n), dim3(SP_THREADS), 0, [&] { k_top_logprobs(l.data(), V, k, ids.data(), lp.data()); });
    int bad_id = 0, bad_lp = 0;
    for (int64_t i = 0; i < n; i++) {
        smp_top_logprobs(&l[i * V], V, k, wi.data(), wl.data());
        for (int j = 0; j < k; j++) {
            if (ids[i * k + j] != wi[j] && !bad_id++)
                printf("         row %lld rank %d: emu id %d cpu %d\n", (long long)i, j, ids[i * k + j], wi[j]);
            if (lp[i * k + j] != wl[j] && !(fabsf(lp[i * k + j] - wl[j]) <= 1e-6f * fmaxf(1.0f, fabsf(wl[j]))) && !bad_lp++)
                printf("         row %lld rank %d: emu logprob %.9g cpu %.9g\n", (long long)i, j, lp[i * k + j], wl[j]);
        }
    }
    bool ok = !bad_id && !bad_lp;
    printf("%-8s top-%-2d logprobs V=%-6lld %2lld rows, logits x%-4g %d ids, %d logprobs differ\n", ok ? "ok" : "FAIL", k,
           (long long)V, (long long)n, spread, bad_id, bad_lp);
    if (!ok) failures++;
}

/* topk IN OUT k: the kernel on a file's rows (see the header) */
static int topk_file(const char *in, const char *out, int k) {
    FILE *f = fopen(in, "rb");
    int64_t nv[2];
    if (!f || fread(nv, 8, 2, f) != 2) return 2;
    std::vector<float> l((size_t)(nv[0] * nv[1])), lp((size_t)(nv[0] * k));
    std::vector<int32_t> ids((size_t)(nv[0] * k));
    if (fread(l.data(), 4, l.size(), f) != l.size()) return 2;
    fclose(f);
    emu::launch(dim3((unsigned)nv[0]), dim3(SP_THREADS), 0, [&] { k_top_logprobs(l.data(), nv[1], k, ids.data(), lp.data()); });
    FILE *o = fopen(out, "wb");
    if (!o) return 2;
    fwrite(ids.data(), 4, ids.size(), o);
    fwrite(lp.data(), 4, lp.size(), o);
    fclose(o);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && !strcmp(argv[1], "topk")) return topk_file(argv[2], argv[3], atoi(argv[4]));
    run_topk(7, 4, 7, 1.0f);       // k = V, fewer tokens than threads
    run_topk(5000, 6, 20, 3.0f);   // the largest k
    run_topk(3000, 5, 5, 0.001f);  // nearly flat: many near-ties
    run(7, 8, 1.0f);        // fewer tokens than threads; top_k ≥ V
    run(3000, 8, 3.0f);     // peaked: filtered rows take the compacted path
    run(9000, 8, 0.05f);    // flat: nuclei of more than 8192 tokens, the global path
    printf("%s\n", failures ? "sample emulation: FAILED" : "sample emulation: all ok");
    return failures ? 1 : 0;
}
