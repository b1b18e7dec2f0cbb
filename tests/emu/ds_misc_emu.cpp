/* tests/emu/ds_misc_emu.cpp — the teacher's MoE plumbing (kernels/cuda/ds_moe.cu: router,
 * permutation, row gather, combine), its RMSNorm (kernels/cuda/ds_norm.cu) and its YaRN rope
 * (kernels/cuda/ds_rope.cu) run on the CPU through the emulator in tests/emu/cuda_emu.h,
 * against their CPU twins: moe_route (kernels/cpu/moe.c), rmsnorm_fwd (kernels/cpu/norm.c),
 * yarn_tables + yarn_rope_apply (kernels/cpu/yarn.c), each tested against transformers in
 * tests/unit; the permutation, gather and combine against the stable counting sort and double
 * sums written out below (the CPU engine does these inline). Tolerances:
 *   router: exact — the same f32 operations in the same order, and here the same expf (glibc on
 *     both sides; on a GPU CUDA's expf may differ by an ulp, hence tests/gpu's near-tie slack).
 *   permutation, gather: exact.
 *   combine: f32 fmaf in slot order and one bf16 rounding: |emu − ref| ≤ 2^-8·|ref| + 2^-20·Σ|terms|.
 *   rmsnorm: residual sum exact (one bf16 rounding of an exact f32 sum); y: f32 sum of squares
 *     in another order than the twin's double and one bf16 rounding: ≤ 2^-8·|ref| + 1e-6·max|ref|.
 *   rope: the same f32 angle and (here) the same cosf/sinf, two products, one bf16 rounding:
 *     ≤ 2^-8·|ref| + 2^-12·cs·max(|a|, |b|) of the pair (tests/gpu's bound: CUDA's cosf/sinf are
 *     within 2 ulp of glibc's); the other values of the row bit-identical.
 * Built and run by tests/ref/test_cuda_emu.py. */
#define RT_EMU 1
#define RT_HAVE_CUDA 1
#include "tests/emu/cuda_emu.h"

// rope.h includes core/model_config.h, a C header without C++ guards: give it C linkage before
// ds_rope.cu includes it again (mc_rope_name is defined below, with C linkage)
extern "C" {
#include "kernels/norm.h"
#include "kernels/rope.h"
}
#include "kernels/cuda/ds_moe.cu"
#include "kernels/cuda/ds_norm.cu"
#include "kernels/cuda/ds_rope.cu"

#include <stdio.h>
#include <stdlib.h>

#include "kernels/convert.h"

// yarn.c names the rope type in an error message only; its table lives in core/model_config.c,
// which needs jansson and is not linked here.
extern "C" const char *mc_rope_name(mc_rope_type t) { return t == MC_ROPE_DEFAULT ? "default" : "yarn"; }

#define EMU_SEED 0x6a09e667f3bcc909ull
#include "tests/emu/emu_check.h"


// ---- MoE ------------------------------------------------------------------------------------
static void route_case(moe_router_cfg c, bool with_bias, int64_t n) {
    const int64_t E = c.n_experts, K = c.top_k, S = K + 1;   // one slot past top_k must stay untouched
    std::vector<float> l((size_t)(n * E)), bias((size_t)E), w((size_t)(n * K)), gw((size_t)(n * S), -7.0f);
    std::vector<int32_t> idx((size_t)(n * K)), gi((size_t)(n * S), -7);
    for (auto &v : l) v = rnd_normal() * 2.0f;
    for (auto &v : bias) v = rnd_normal() * 0.05f;
    for (int64_t t = 0; t < n; t += 5) l[t * E + 3] = l[t * E + 7];   // exact ties: the lower index wins
    moe_route(&c, l.data(), with_bias ? bias.data() : NULL, n, idx.data(), w.data());
    emu::launch(dim3((unsigned)n), dim3(RT_THREADS), 0,
                [&] { k_route(c, l.data(), with_bias ? bias.data() : NULL, S, gi.data(), gw.data()); });
    long bad = 0;
    for (int64_t t = 0; t < n; t++) {
        bad += gi[t * S + K] != -7 || gw[t * S + K] != -7.0f;
        for (int64_t k = 0; k < K; k++) bad += gi[t * S + k] != idx[t * K + k] || gw[t * S + k] != w[t * K + k];
    }
    char what[120], det[64];
    snprintf(what, sizeof what, "route E=%lld groups %lld/%lld top %lld%s%s, %lld tokens", (long long)E,
             (long long)c.topk_group, (long long)c.n_group, (long long)K, with_bias ? " bias" : "",
             c.norm_topk_prob ? " norm" : "", (long long)n);
    snprintf(det, sizeof det, "exact (ids and weights); %ld differ", bad);
    report(!bad, what, det);
}

static void permute_gather_combine() {
    const int64_t n = 300, S = 9, E = 257, ns = n * S, dim = 96;
    std::vector<int32_t> idx((size_t)ns);
    for (int64_t i = 0; i < ns; i++) idx[i] = (i % S == S - 1) ? 256 : (int32_t)(rnd() % 200);   // 200..255 empty
    idx[5] = -1, idx[700] = (int32_t)E + 3, idx[ns - 1] = -2;                                     // skipped slots
    // reference: a stable counting sort
    std::vector<int32_t> off((size_t)E + 1, 0), ros((size_t)ns, -1), sor((size_t)ns, -1);
    for (int64_t i = 0; i < ns; i++)
        if (idx[i] >= 0 && idx[i] < E) off[idx[i] + 1]++;
    for (int64_t e = 0; e < E; e++) off[e + 1] += off[e];
    std::vector<int32_t> cur(off.begin(), off.end() - 1);
    for (int64_t i = 0; i < ns; i++)
        if (idx[i] >= 0 && idx[i] < E) ros[i] = cur[idx[i]]++, sor[ros[i]] = (int32_t)i;
    const int64_t rows = off[E];
    std::vector<int32_t> goff((size_t)E + 1, -7), gros((size_t)ns, -7), gsor((size_t)ns, -7);
    emu::launch(dim3(1), dim3(PM_THREADS), 0,
                [&] { k_permute(idx.data(), ns, (int)E, goff.data(), gros.data(), gsor.data()); });
    bool ok = goff == off && gros == ros && !memcmp(gsor.data(), sor.data(), (size_t)rows * 4);
    for (int64_t r = rows; r < ns; r++) ok = ok && gsor[r] == -7;
    char what[120];
    snprintf(what, sizeof what, "permute %lld slots, %lld experts (3 skipped slots)", (long long)ns, (long long)E);
    report(ok, what, "exact (offsets, row_of_slot, slot_of_row)");
    for (int64_t rb : {13, 64}) {   // the byte loop, and the 16-byte vector path
        std::vector<uint8_t> src((size_t)(n * rb)), got((size_t)(rows * rb), 0xee);
        for (auto &b : src) b = (uint8_t)rnd();
        emu::launch(dim3((unsigned)rows), dim3(128), 0, [&] { k_gather(src.data(), rb, sor.data(), S, got.data()); });
        ok = true;
        for (int64_t r = 0; r < rows; r++) ok = ok && !memcmp(&got[r * rb], &src[(sor[r] / S) * rb], (size_t)rb);
        snprintf(what, sizeof what, "gather %lld rows of %lld bytes", (long long)rows, (long long)rb);
        report(ok, what, "exact");
    }
    std::vector<uint16_t> y((size_t)(rows * dim)), base((size_t)(n * dim));
    std::vector<float> w((size_t)ns);
    for (auto &v : y) v = f32_to_bf16(rnd_normal());
    for (auto &v : base) v = f32_to_bf16(rnd_normal());
    for (auto &v : w) v = rnd_unit();
    for (int mode = 0; mode < 3; mode++) {   // no base, a base, the base updated in place
        std::vector<uint16_t> out = mode == 2 ? base : std::vector<uint16_t>((size_t)(n * dim), 0xffff);
        emu::launch(dim3((unsigned)n), dim3(256), 0, [&] {
            k_combine(y.data(), ros.data(), w.data(), S, dim, mode == 0 ? NULL : mode == 1 ? base.data() : out.data(),
                      out.data());
        });
        double worst = 0;
        long bad = 0;
        for (int64_t t = 0; t < n; t++)
            for (int64_t j = 0; j < dim; j++) {
                double r = mode ? bf16_to_f32(base[t * dim + j]) : 0.0, mag = fabs(r);
                for (int64_t k = 0; k < S; k++) {
                    if (ros[t * S + k] < 0) continue;
                    double v = (double)w[t * S + k] * bf16_to_f32(y[(int64_t)ros[t * S + k] * dim + j]);
                    r += v, mag += fabs(v);
                }
                double d = fabs(bf16_to_f32(out[t * dim + j]) - r), b = 0x1p-8 * fabs(r) + 0x1p-20 * mag;
                bad += !(d <= b);
                worst = fmax(worst, d / b);
            }
        char det[64];
        snprintf(det, sizeof det, "worst err/bound %.3f%s", worst, bad ? " <-" : "");
        snprintf(what, sizeof what, "combine %lld tokens x %lld slots, dim %lld, %s", (long long)n, (long long)S,
                 (long long)dim, mode == 0 ? "no base" : mode == 1 ? "base" : "base in place");
        report(!bad, what, det);
    }
}

// ---- RMSNorm and rope ---------------------------------------------------------------------------
static void rmsnorm_case(bool with_res) {
    const int64_t M = 6, D = 1000, ldx = 1024, ldy = 1010;
    std::vector<uint16_t> x((size_t)(M * ldx)), res((size_t)(M * ldx)), y((size_t)(M * ldy), 0xffff);
    std::vector<float> xs((size_t)(M * D)), w((size_t)D), ref((size_t)(M * D));
    for (int64_t i = 0; i < M * ldx; i++) x[i] = f32_to_bf16(rnd_normal() * (1 + i / ldx)), res[i] = f32_to_bf16(rnd_normal());
    for (auto &v : w) v = 0.5f + rnd_unit();
    for (int64_t m = 0; m < M; m++)
        for (int64_t j = 0; j < D; j++) {
            float v = bf16_to_f32(x[m * ldx + j]);
            xs[m * D + j] = with_res ? bf16_to_f32(f32_to_bf16(v + bf16_to_f32(res[m * ldx + j]))) : v;
        }
    rmsnorm_fwd(ref.data(), NULL, xs.data(), w.data(), M, D, 1e-6f, NULL);
    std::vector<uint16_t> x0 = x;
    emu::launch(dim3((unsigned)M), dim3(NM_THREADS), 0, [&] {
        k_rmsnorm(x.data(), ldx, with_res ? res.data() : NULL, w.data(), D, 1e-6f, y.data(), ldy);
    });
    long bad = 0;
    double worst = 0;
    for (int64_t m = 0; m < M; m++) {
        float mx = 0;
        for (int64_t j = 0; j < D; j++) mx = fmaxf(mx, fabsf(ref[m * D + j]));
        for (int64_t j = 0; j < ldx; j++)   // x: the sum where there is one, else untouched
            bad += j < D ? bf16_to_f32(x[m * ldx + j]) != xs[m * D + j] : x[m * ldx + j] != x0[m * ldx + j];
        for (int64_t j = 0; j < D; j++) {
            double d = fabs(bf16_to_f32(y[m * ldy + j]) - ref[m * D + j]), b = 0x1p-8 * fabs(ref[m * D + j]) + 1e-6 * mx;
            bad += !(d <= b);
            worst = fmax(worst, d / b);
        }
        for (int64_t j = D; j < ldy; j++) bad += y[m * ldy + j] != 0xffff;
    }
    char what[96], det[64];
    snprintf(what, sizeof what, "rmsnorm M=%lld D=%lld ldx=%lld ldy=%lld%s", (long long)M, (long long)D, (long long)ldx,
             (long long)ldy, with_res ? " + residual" : "");
    snprintf(det, sizeof det, "worst err/bound %.3f (residual exact)", worst);
    report(!bad, what, det);
}

// capped: one block (8 warps) for the 35 vectors, so the kernel's grid-stride loop runs
static void rope_case(int64_t dim, int64_t stride, int64_t off, bool capped = false) {
    const int64_t T = 7, H = 5, half = dim / 2;
    const float cs = 1.3f;
    std::vector<float> inv((size_t)half);
    for (int64_t i = 0; i < half; i++) inv[i] = powf(10000.0f, -(float)(2 * i) / (float)dim) / (i >= half / 2 ? 40.0f : 1.0f);
    std::vector<int32_t> pos((size_t)T);
    for (int64_t t = 0; t < T; t++) pos[t] = t < 3 ? (int32_t)t : (int32_t)(rnd() % 163840);
    std::vector<uint16_t> xb((size_t)(T * H * stride));
    for (auto &v : xb) v = f32_to_bf16(rnd_normal());
    std::vector<float> xf(xb.size()), ct((size_t)(T * half)), st((size_t)(T * half));
    for (size_t i = 0; i < xb.size(); i++) xf[i] = bf16_to_f32(xb[i]);
    yarn_tables(ct.data(), st.data(), pos.data(), T, inv.data(), half, cs);
    yarn_rope_apply(xf.data() + off, T, H * stride, H, stride, dim, ct.data(), st.data(), true, NULL);
    std::vector<uint16_t> got = xb;
    emu::launch(dim3(capped ? 1 : grid_for((size_t)(T * H) * 32, 256)), dim3(256), 0, [&] {
        k_rope(got.data() + off, T, H * stride, H, stride, (int)half, pos.data(), inv.data(), cs);
    });
    long bad = 0;
    double worst = 0;
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t v0 = (t * H + h) * stride;
            for (int64_t j = 0; j < stride; j++)
                if (j < off || j >= off + dim) bad += got[v0 + j] != xb[v0 + j];
            for (int64_t i = 0; i < half; i++) {
                float a = bf16_to_f32(xb[v0 + off + 2 * i]), b = bf16_to_f32(xb[v0 + off + 2 * i + 1]);
                float pm = fmaxf(fabsf(a), fabsf(b));
                for (int64_t j : {i, i + half}) {
                    float want = xf[v0 + off + j];
                    double d = fabs(bf16_to_f32(got[v0 + off + j]) - want), bd = 0x1p-8 * fabs(want) + 0x1p-12 * pm * cs;
                    bad += !(d <= bd);
                    worst = fmax(worst, d / bd);
                }
            }
        }
    char what[96], det[64];
    snprintf(what, sizeof what, "yarn rope T=%lld H=%lld dim=%lld at %lld of %lld%s", (long long)T, (long long)H,
             (long long)dim, (long long)off, (long long)stride, capped ? ", 1 block" : "");
    snprintf(det, sizeof det, "worst err/bound %.3f (rest of the row exact)", worst);
    report(!bad, what, det);
}

// The capacity-padded expert-parallel dispatch (k_slab_pack) against moe_slab_pack: R1's 256
// experts of top 8 over 8 ranks (one thread per rank), 32 owned tokens (cap 256 = 32 x 8: what
// one rank would get if every token's 8 experts sat on it; token 0's all do), two slots routed
// nowhere; and 3 ranks over 10 experts (unequal expert counts, a warp not full). Exact.
static void slab_pack_case(int64_t n, int64_t K, int64_t E, int64_t P, bool one_rank_token) {
    int64_t per = (E + P - 1) / P, cap = n * (K < per ? K : per), S = P * cap;
    std::vector<int32_t> idx((size_t)(n * K));
    for (int64_t t = 0; t < n; t++)   // K distinct experts a token
        for (int64_t k = 0; k < K; k++) {
            int32_t e;
            bool again;
            do {
                e = one_rank_token && t == 0 ? (int32_t)((k * P + 3 % P) % E) : (int32_t)(rnd() % (uint32_t)E);
                again = false;
                for (int64_t j = 0; j < k; j++) again = again || idx[t * K + j] == e;
            } while (again && !(one_rank_token && t == 0));
            idx[t * K + k] = e;
        }
    idx[3] = -1, idx[(size_t)(n * K - 1)] = (int32_t)E;   // routed nowhere
    std::vector<int32_t> ws((size_t)S), wl((size_t)S), wc((size_t)(n * K)), gs((size_t)S, -7), gl((size_t)S, -7),
        gc((size_t)(n * K), -7);
    int rc = moe_slab_pack(idx.data(), n, K, E, P, cap, (int32_t)per, 40, ws.data(), wl.data(), wc.data());
    emu::launch(dim3(1), dim3((unsigned)((P + 31) / 32 * 32)), 0, [&] {
        k_slab_pack(idx.data(), n * K, E, (int)P, cap, (int32_t)per, 40, gs.data(), gl.data(), gc.data());
    });
    char what[120];
    snprintf(what, sizeof what, "slab pack %lld tokens x %lld slots, %lld experts over %lld ranks", (long long)n,
             (long long)K, (long long)E, (long long)P);
    report(rc == 0 && gs == ws && gl == wl && gc == wc, what, "exact (slot, local expert, comb)");
}

int main() {
    moe_router_cfg r1 = {256, 8, 4, 8, true, 2.5f}, other = {64, 4, 2, 6, false, 1.0f};
    route_case(r1, true, 24);
    route_case(other, false, 16);
    permute_gather_combine();
    slab_pack_case(32, 8, 256, 8, true);
    slab_pack_case(7, 3, 10, 3, false);
    rmsnorm_case(true);
    rmsnorm_case(false);
    rope_case(64, 192, 128);   // R1's q rows: the rope part of each head
    rope_case(510, 520, 6, true);   // 255 pairs: every lane's 8 pairs, the last round partial
    printf("%s\n", failures ? "ds misc emulation: FAILED" : "ds misc emulation: all ok");
    return failures ? 1 : 0;
}
