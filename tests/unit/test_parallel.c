/* teacher/parallel: the layout against hand-worked splits, and the expert-parallel MoE step
 * on one rank (the "single" comm backend) against the serial kernels it must reproduce bit
 * for bit (shared MLP + moe_experts_fwd, themselves tested against transformers in
 * test_moe.c). Multi-rank runs are tests/ref/test_ds_parallel.py (mpirun). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/comm.h"
#include "kernels/moe.h"
#include "teacher/parallel.h"
#include "testutil.h"

static mc_config shape(int64_t heads, int64_t inter, int64_t vocab, int64_t experts) {
    mc_config c;
    memset(&c, 0, sizeof c);
    c.num_attention_heads = heads;
    c.intermediate_size = inter;
    c.vocab_size = vocab;
    c.n_routed_experts = experts;
    return c;
}

Test(parallel, layout_splits_evenly_first_ranks_take_the_extra) {
    mc_config c = shape(4, 512, 1000, 8);
    /* 3 ranks: heads 2,1,1; 512 columns 171,171,170; 1000 rows 334,333,333; experts round-robin
     * {0,3,6} {1,4,7} {2,5} */
    int64_t heads[] = {2, 1, 1}, h0[] = {0, 2, 3}, inter[] = {171, 171, 170}, i0[] = {0, 171, 342};
    int64_t voc[] = {334, 333, 333}, v0[] = {0, 334, 667}, ex[] = {3, 3, 2};
    for (int r = 0; r < 3; r++) {
        ds_layout lo;
        cr_assert_eq(ds_layout_make(&c, r, 3, &lo), 0, "%s", rt_errmsg());
        cr_assert_eq(lo.n_heads, heads[r]);
        cr_assert_eq(lo.head0, h0[r]);
        cr_assert_eq(lo.n_inter, inter[r]);
        cr_assert_eq(lo.inter0, i0[r]);
        cr_assert_eq(lo.n_vocab, voc[r]);
        cr_assert_eq(lo.vocab0, v0[r]);
        cr_assert_eq(lo.vocab_block, 334);
        cr_assert_eq(ds_layout_local_experts(&lo), ex[r]);
    }
    ds_layout lo;
    cr_assert_eq(ds_layout_make(&c, 1, 3, &lo), 0);
    cr_assert_eq(ds_layout_expert_rank(&lo, 7), 1);
    cr_assert_eq(ds_layout_expert_rank(&lo, 5), 2);
}

Test(parallel, layout_refuses_more_ranks_than_heads) {
    mc_config c = shape(4, 512, 1000, 8);
    ds_layout lo;
    cr_assert_eq(ds_layout_make(&c, 0, 5, &lo), RT_EINVAL);
    cr_assert(strstr(rt_errmsg(), "5 ranks but the model has 4 attention heads"), "%s", rt_errmsg());
    cr_assert_eq(ds_layout_make(&c, 3, 3, &lo), RT_EINVAL);
    cr_assert_eq(ds_layout_make(&c, 0, 4, &lo), 0);
}

static float *randn(size_t n, unsigned *seed, float scale) {
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) {
        double u1 = (rand_r(seed) + 1.0) / (RAND_MAX + 2.0), u2 = (rand_r(seed) + 1.0) / (RAND_MAX + 2.0);
        p[i] = scale * (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
    }
    return p;
}

/* The f32 expert e as the DeepSeek model holds it (teacher/deepseek_int.h). */
static ds_mlp as_ds(const moe_expert *e, int64_t dim, int64_t inter) {
    ds_mlp d;
    memset(&d, 0, sizeof d);
    if (!e->w1) return d;
    d.w1 = (ds_mat){.f32 = e->w1, .rows = inter, .cols = dim};
    d.w3 = (ds_mat){.f32 = e->w3, .rows = inter, .cols = dim};
    d.w2 = (ds_mat){.f32 = e->w2, .rows = dim, .cols = inter};
    return d;
}

/* n tokens through 8 experts (top-2 of 4 groups, 2 kept) + a shared MLP. */
static void moe_case(int64_t n, bool with_shared) {
    enum { E = 8, DIM = 48, INTER = 32, SH = 40 };
    unsigned seed = 77 + (unsigned)n;
    moe_router_cfg rc = {.n_experts = E, .n_group = 4, .topk_group = 2, .top_k = 2, .norm_topk_prob = true,
                         .routed_scaling_factor = 2.5f};
    float *x = randn((size_t)(n * DIM), &seed, 1.0f), *logits = randn((size_t)(n * E), &seed, 2.0f);
    moe_expert ex[E], sh;
    float *wts[3 * E + 3];
    for (int e = 0; e < E; e++) {
        ex[e].w1 = wts[3 * e] = randn(INTER * DIM, &seed, 0.15f);
        ex[e].w3 = wts[3 * e + 1] = randn(INTER * DIM, &seed, 0.15f);
        ex[e].w2 = wts[3 * e + 2] = randn(DIM * INTER, &seed, 0.15f);
    }
    sh.w1 = wts[3 * E] = randn(SH * DIM, &seed, 0.15f);
    sh.w3 = wts[3 * E + 1] = randn(SH * DIM, &seed, 0.15f);
    sh.w2 = wts[3 * E + 2] = randn(DIM * SH, &seed, 0.15f);
    int32_t *idx = malloc((size_t)(n * 2) * sizeof *idx);
    float *w = malloc((size_t)(n * 2) * sizeof *w);
    cr_assert_eq(moe_route(&rc, logits, NULL, n, idx, w), 0, "%s", rt_errmsg());
    float *want = malloc((size_t)(n * DIM) * sizeof *want), *got = malloc((size_t)(n * DIM) * sizeof *got);
    if (with_shared) cr_assert_eq(moe_mlp_fwd(&sh, DIM, SH, x, n, want, NULL, NULL), 0);
    else memset(want, 0, (size_t)(n * DIM) * sizeof *want);
    cr_assert_eq(moe_experts_fwd(ex, E, DIM, INTER, x, n, idx, w, 2, want, NULL), 0);
    for (int64_t i = 0; i < n * DIM; i++) got[i] = NAN;   /* poison */
    rt_comm *c;
    cr_assert_eq(comm_open(COMM_SINGLE, &c), 0);
    mc_config cfg = shape(4, 64, 100, E);
    ds_layout lo;
    cr_assert_eq(ds_layout_make(&cfg, 0, 1, &lo), 0);
    ds_mlp dex[E], dsh = as_ds(&sh, DIM, SH);
    for (int e = 0; e < E; e++) dex[e] = as_ds(&ex[e], DIM, INTER);
    cr_assert_eq(ds_par_moe_fwd(c, &lo, dex, DIM, INTER, with_shared ? &dsh : NULL, with_shared ? SH : 0, x, n, idx, w, 2,
                                got, NULL),
                 0, "%s", rt_errmsg());
    cr_assert(memcmp(got, want, (size_t)(n * DIM) * sizeof *got) == 0, "n=%lld: not bit-identical to the serial combine",
              (long long)n);
    comm_close(c);
    for (int i = 0; i < 3 * E + 3; i++) free(wts[i]);
    free(x), free(logits), free(idx), free(w), free(want), free(got);
}

Test(parallel, moe_on_one_rank_is_the_serial_combine_bit_for_bit) {
    moe_case(1, true);
    moe_case(5, true);
    moe_case(37, true);
    moe_case(37, false);
}

Test(parallel, moe_refuses_an_expert_id_out_of_range) {
    rt_comm *c;
    cr_assert_eq(comm_open(COMM_SINGLE, &c), 0);
    mc_config cfg = shape(4, 64, 100, 8);
    ds_layout lo;
    cr_assert_eq(ds_layout_make(&cfg, 0, 1, &lo), 0);
    ds_mlp ex[8];
    memset(ex, 0, sizeof ex);
    float x[4] = {0}, w[2] = {1, 1}, out[4];
    int32_t idx[2] = {1, 8};
    cr_assert_eq(ds_par_moe_fwd(c, &lo, ex, 4, 4, NULL, 0, x, 1, idx, w, 2, out, NULL), RT_EINVAL);
    comm_close(c);
}

Test(parallel, logits_and_embedding_on_one_rank_are_plain_lookups) {
    rt_comm *c;
    cr_assert_eq(comm_open(COMM_SINGLE, &c), 0);
    mc_config cfg = shape(2, 8, 5, 2);
    ds_layout lo;
    cr_assert_eq(ds_layout_make(&cfg, 0, 1, &lo), 0);
    const float head[5 * 2] = {1, 0, 0, 1, 1, 1, 2, -1, -3, 0.5f};   /* [V=5, D=2] */
    const float h[2 * 2] = {1, 2, -1, 4};
    float logits[2 * 5];
    cr_assert_eq(ds_par_logits(c, &lo, head, 2, 5, h, 2, logits, NULL), 0);
    const float want[2 * 5] = {1, 2, 3, 0, -2, -1, 4, 3, -6, 5};   /* hand-worked h·headᵀ */
    for (int i = 0; i < 10; i++) cr_assert_float_eq(logits[i], want[i], 1e-6, "logit %d", i);
    const int32_t tok[3] = {4, 0, 2};
    float x[3 * 2];
    cr_assert_eq(ds_par_embed(c, &lo, head, 2, tok, 3, x), 0);
    const float wx[6] = {-3, 0.5f, 1, 0, 1, 1};
    for (int i = 0; i < 6; i++) cr_assert_eq(x[i], wx[i], "x[%d]", i);
    comm_close(c);
}
