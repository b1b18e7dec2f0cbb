/* student/zero: the shard layout (a worked specification: equal parts of ⌈n/P⌉ rounded up to
 * 16 elements, rank r owning [r·S, (r+1)·S) ∩ [0, n), the parts tiling [0, n) exactly), and
 * the one-rank collectives being plain local work. ZeRO-3's side of student/model: the units
 * tile the flat layout, and a pass whose hooks copy each unit out and add its gradient back
 * sees the units in the documented order and gives the plain pass's numbers. Multi-rank numbers are tested under
 * mpirun by tests/ref/test_train_dp.py. */
#include <criterion/criterion.h>
#include <math.h>

#include "student/zero.h"

Test(zero, layout_of_a_worked_case) {
    zr_layout z;
    zr_layout_init(&z, 1000, 2, 3, 2);   /* ⌈1000/3⌉ = 334 → 336 */
    cr_assert_eq(z.shard, 336);
    cr_assert_eq(z.padded, 1008);
    cr_assert_eq(z.lo, 672);
    cr_assert_eq(z.hi, 1000);
    cr_assert_eq(zr_state_len(&z), 336);
    zr_layout_init(&z, 1000, 2, 3, 0);   /* replicated: everything, state for all of it */
    cr_assert(z.lo == 0 && z.hi == 1000 && zr_state_len(&z) == 1000);
    zr_layout_init(&z, 16, 3, 4, 1);     /* more ranks than 16-element parts: empty tail ranks */
    cr_assert(z.shard == 16 && z.padded == 64 && z.lo == 16 && z.hi == 16);
}

Test(zero, parts_tile_the_buffer_exactly) {
    static const int64_t ns[] = {1, 15, 16, 17, 1000, 123457};
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++)
        for (int P = 1; P <= 9; P++) {
            int64_t next = 0;
            for (int r = 0; r < P; r++) {
                zr_layout z;
                zr_layout_init(&z, ns[k], r, P, 1 + r % 2);
                cr_assert(z.shard % 16 == 0 && z.padded == z.shard * P && z.padded >= ns[k]);
                cr_assert(z.padded - ns[k] < 16 * P + P, "n %lld P %d: padding %lld", (long long)ns[k], P,
                          (long long)(z.padded - ns[k]));
                cr_assert_eq(z.lo, next, "n %lld P %d rank %d starts at %lld, not %lld", (long long)ns[k], P, r,
                             (long long)z.lo, (long long)next);
                cr_assert(z.hi >= z.lo && z.hi - z.lo <= z.shard);
                next = z.hi;
            }
            cr_assert_eq(next, ns[k]);
        }
}

Test(zero, one_rank_is_local_work) {
    float g[32];
    double want = 0;
    for (int i = 0; i < 32; i++) {
        g[i] = (float)(i % 7) - 3.0f;
        want += (double)g[i] * g[i];
    }
    zr_layout z;
    zr_layout_init(&z, 32, 0, 1, 2);
    cr_assert_eq(zr_reduce_grads(&z, NULL, g), 0);
    cr_assert_eq(g[5], 2.0f);
    double s = -1;
    cr_assert_eq(zr_grad_sumsq(&z, NULL, g, NULL, &s), 0);
    cr_assert_eq(s, want);
    float full[32];
    cr_assert_eq(zr_gather_state(&z, NULL, g, full, 0), 0);
    cr_assert(!memcmp(full, g, sizeof g));
}

/* ---- level 3 ----------------------------------------------------------------------------- */

#include <jansson.h>

#include "core/status.h"
#include "student/model.h"

static sm_model *micro_model(bool tied) {
    json_t *c = json_pack("{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:b}", "architectures", "Qwen2ForCausalLM",
                          "model_type", "qwen2", "vocab_size", 40, "hidden_size", 16, "intermediate_size", 24,
                          "num_hidden_layers", 3, "num_attention_heads", 2, "num_key_value_heads", 1,
                          "max_position_embeddings", 64, "rms_norm_eps", 1e-6, "rope_theta", 10000.0,
                          "tie_word_embeddings", tied);
    sm_model *m = NULL;
    cr_assert_eq(sm_create_random(c, 3, &m), 0, "%s", rt_errmsg());
    json_decref(c);
    return m;
}

Test(zero, units_tile_the_flat_layout_in_order) {
    for (int tied = 0; tied < 2; tied++) {
        sm_model *m = micro_model(tied);
        cr_assert_eq(sm_units(m), m->L + 3);
        int64_t next = 0, lo, hi;
        for (int64_t u = 0; u < m->L + 2; u++) {   /* embedding, layers, final norm: back to back */
            sm_unit_range(m, u, &lo, &hi);
            cr_assert(lo == next && hi > lo, "tied %d unit %lld: [%lld, %lld), expected to start at %lld", tied,
                      (long long)u, (long long)lo, (long long)hi, (long long)next);
            next = hi;
        }
        sm_unit_range(m, m->L + 2, &lo, &hi);
        if (tied) cr_assert(lo == 0 && hi == 40 * 16, "tied head [%lld, %lld)", (long long)lo, (long long)hi);
        else cr_assert(lo == next && hi == m->n_params, "head [%lld, %lld)", (long long)lo, (long long)hi);
        if (!tied) next = hi;
        cr_assert_eq(next, m->n_params);
        /* a layer's unit holds exactly its tensors: layer 1's first is input_layernorm, layer 2's starts after its last */
        sm_unit_range(m, 2, &lo, &hi);
        const sm_tensor *a = sm_find(m, "model.layers.1.input_layernorm.weight"), *b = sm_find(m, "model.layers.1.mlp.down_proj.weight");
        cr_assert(a && b && lo == a->offset && hi == (b->offset + b->numel + 15) / 16 * 16);
        sm_free(m);
    }
}

typedef struct {
    sm_model *m;
    float *whole_p, *whole_g, *unit_p, *unit_g;
    char seq[256];
    size_t len;
} hook_rec;

static int rec_begin(void *ctx, int64_t u, bool bwd) {
    hook_rec *r = ctx;
    int64_t lo, hi;
    sm_unit_range(r->m, u, &lo, &hi);
    r->len += (size_t)snprintf(r->seq + r->len, sizeof r->seq - r->len, "%s%lld ", bwd ? "b" : "f", (long long)u);
    for (int64_t i = lo; i < hi; i++) r->unit_p[i - lo] = bwd && u == 0 ? NAN : r->whole_p[i];   /* embedding bwd reads none */
    for (int64_t i = lo; i < hi; i++) r->unit_g[i - lo] = 0.0f;
    r->m->params = r->unit_p;
    r->m->grads = bwd ? r->unit_g : NULL;
    r->m->base = lo;
    return 0;
}

static int rec_end(void *ctx, int64_t u, bool bwd) {
    hook_rec *r = ctx;
    int64_t lo, hi;
    sm_unit_range(r->m, u, &lo, &hi);
    for (int64_t i = lo; bwd && i < hi; i++) r->whole_g[i] += r->unit_g[i - lo];
    r->m->params = r->m->grads = NULL;
    r->m->base = 0;
    return 0;
}

/* The hooked pass with every unit copied out and its gradient added back (what ZeRO-3 does
 * at one rank) gives the plain pass's loss, and gradients equal to within the order of the
 * two additions into the tied embedding; hooks come in the documented order. */
Test(zero, hooked_pass_sees_units_in_order_and_matches_the_plain_pass) {
    for (int tied = 0; tied < 2; tied++) {
        sm_model *m = micro_model(tied);
        int64_t T = 12, n = m->n_params;
        int32_t tok[12], ds[12], pos[12], tgt[12];
        for (int64_t t = 0; t < T; t++) {
            tok[t] = (int32_t)((7 * t + 3) % 40);
            ds[t] = t < 5 ? 0 : 5;
            pos[t] = (int32_t)(t - ds[t]);
            tgt[t] = t == 4 || t == 11 ? -1 : (int32_t)((7 * (t + 1) + 3) % 40);
        }
        sm_batch b = {T, tok, ds, pos, tgt};
        sm_acts *a;
        cr_assert_eq(sm_acts_create(m, T, tied, 0, &a), 0);   /* checkpointing on one of the two */
        double l0 = 0, l1 = 0;
        cr_assert_eq(sm_forward_backward(m, a, &b, 0.1f, &l0, NULL), 0);
        float *g0 = malloc((size_t)n * 4), *whole = malloc((size_t)n * 4), *wg = calloc((size_t)n, 4);
        memcpy(g0, m->grads, (size_t)n * 4);
        memcpy(whole, m->params, (size_t)n * 4);
        float *keep_p = m->params, *keep_g = m->grads;
        hook_rec r = {m, whole, wg, malloc((size_t)n * 4), malloc((size_t)n * 4), {0}, 0};
        sm_hooks h = {rec_begin, rec_end, &r};
        cr_assert_eq(sm_forward_backward_hooked(m, a, &b, 0.1f, &l1, &h, NULL), 0);
        cr_assert_str_eq(r.seq, "f0 f1 f2 f3 f4 b5 b4 b3 b2 b1 b0 ");
        cr_assert_eq(l0, l1);
        for (int64_t i = 0; i < n; i++) {
            bool emb = tied && i < 40 * 16;   /* head + embedding terms added in another order */
            float tol = emb ? 1e-6f * (fabsf(g0[i]) + 1e-3f) : 0.0f;
            cr_assert(fabsf(wg[i] - g0[i]) <= tol, "tied %d element %lld: %g vs %g", tied, (long long)i, wg[i], g0[i]);
        }
        m->params = keep_p;
        m->grads = keep_g;
        free(g0); free(whole); free(wg); free(r.unit_p); free(r.unit_g);
        sm_acts_free(a);
        sm_free(m);
    }
}

Test(zero, one_rank_range_collectives_are_copies) {
    zr_layout z;
    zr_layout_init(&z, 40, 0, 1, 3);
    float own[48], out[10], acc[48], stage[4];
    for (int i = 0; i < 48; i++) { own[i] = (float)i; acc[i] = 1.0f; }
    cr_assert_eq(zr_range_gather(&z, NULL, own, 7, 17, out, -1), 0);
    for (int i = 0; i < 10; i++) cr_assert_eq(out[i], (float)(7 + i));
    cr_assert_eq(zr_range_reduce_scatter_add(&z, NULL, out, 7, 17, acc, stage, 4), 0);
    for (int i = 0; i < 48; i++) cr_assert_eq(acc[i], i >= 7 && i < 17 ? 1.0f + (float)i : 1.0f);
}
