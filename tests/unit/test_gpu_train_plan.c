/* student/gpu_plan: the GPU trainer's device layout, checked on the CPU.
 * - parameters: a hand-worked layout of a tiny Qwen2 (fused q|k|v, their biases, gate|up back
 *   to back; groups at multiples of 16 elements), every tensor placed once, no overlaps, and
 *   the CPU ↔ GPU permutation a bijection on the tensors' elements;
 * - activations: 256-byte alignment, no two buffers overlapping, and what checkpointing
 *   keeps (one recomputed set instead of one per layer, the layer inputs always);
 * - memory: the plan's terms against bench/train_gpu_mem.py's arithmetic for the same
 *   config (numbers produced by running its estimate(), quoted below);
 * - the plan from a config alone (retort train --plan) equals the plan from the model, and
 *   an untied Llama's per-rank memory at ZeRO-2/3 and offloaded, worked by hand. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "student/gpu_plan.h"
#include "student/model.h"

/* hidden 128, 2 query heads and 1 kv head of 64, FFN 256, 2 layers, vocabulary 256, tied */
static const char *TINY = "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"vocab_size\": 256,"
                          " \"hidden_size\": 128, \"intermediate_size\": 256, \"num_hidden_layers\": 2,"
                          " \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"head_dim\": 64,"
                          " \"max_position_embeddings\": 512, \"rms_norm_eps\": 1e-6, \"rope_theta\": 10000.0,"
                          " \"tie_word_embeddings\": true}";

/* bench/train_gpu_mem.py's estimate(cfg, T=2048, chunk=512) for this config gives N = 13377024
 * and the rows: weights 26754048, master 53508096, moments 107016192, gradients 53508096,
 * layer inputs 8388608, one layer recomputed 31014912, backward transients 18874368,
 * head 20971520, workspace 8388608; total 328424448 bytes. */
static const char *MID = "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"vocab_size\": 4096,"
                         " \"hidden_size\": 512, \"intermediate_size\": 1408, \"num_hidden_layers\": 4,"
                         " \"num_attention_heads\": 8, \"num_key_value_heads\": 2, \"head_dim\": 64,"
                         " \"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-6, \"rope_theta\": 1000000.0,"
                         " \"tie_word_embeddings\": true}";

static sm_model *make(const char *cfg_text) {
    json_error_t e;
    json_t *cfg = json_loads(cfg_text, 0, &e);
    cr_assert(cfg, "%s", e.text);
    sm_model *m = NULL;
    cr_assert_eq(sm_create_random(cfg, 7, &m), 0, "%s", rt_errmsg());
    json_decref(cfg);
    return m;
}

static const gp_ws_sizes WS = {1000, 3000, 500};

static int64_t gpu_off(const gp_plan *p, const sm_model *m, const char *name) {
    const sm_tensor *x = sm_find(m, name);
    cr_assert(x, "%s", name);
    return p->off[x - m->tensors];
}

Test(gpu_plan, tiny_qwen2_parameter_layout_worked_by_hand) {
    sm_model *m = make(TINY);
    gp_plan p;
    cr_assert_eq(gp_plan_init(&p, m, 64, true, 0, 1, &WS), 0, "%s", rt_errmsg());
    /* embed 256·128 = 32768; per layer: norm 128, q|k|v 256·128 = 32768, biases 256 (q 128,
     * k 64, v 64), o 16384, norm 128, gate|up 512·128 = 65536, down 32768 = 147968; final norm */
    cr_assert_eq(p.embed, 0);
    cr_assert_eq(p.lm_head, p.embed);
    cr_assert_eq(p.layers[0].attn_norm, 32768);
    cr_assert_eq(p.layers[0].wqkv, 32768 + 128);
    cr_assert_eq(gpu_off(&p, m, "model.layers.0.self_attn.q_proj.weight"), 32896);
    cr_assert_eq(gpu_off(&p, m, "model.layers.0.self_attn.k_proj.weight"), 32896 + 128 * 128);
    cr_assert_eq(gpu_off(&p, m, "model.layers.0.self_attn.v_proj.weight"), 32896 + 192 * 128);
    cr_assert_eq(p.layers[0].bqkv, 32896 + 32768);
    cr_assert_eq(gpu_off(&p, m, "model.layers.0.self_attn.k_proj.bias"), p.layers[0].bqkv + 128);
    cr_assert_eq(gpu_off(&p, m, "model.layers.0.self_attn.v_proj.bias"), p.layers[0].bqkv + 192);
    cr_assert_eq(p.layers[0].wo, p.layers[0].bqkv + 256);
    cr_assert_eq(p.layers[0].bo, -1);
    cr_assert_eq(p.layers[0].mlp_norm, p.layers[0].wo + 16384);
    cr_assert_eq(p.layers[0].wgu, p.layers[0].mlp_norm + 128);
    cr_assert_eq(gpu_off(&p, m, "model.layers.0.mlp.up_proj.weight"), p.layers[0].wgu + 256 * 128);
    cr_assert_eq(p.layers[0].bgu, -1);
    cr_assert_eq(p.layers[0].wd, p.layers[0].wgu + 65536);
    cr_assert_eq(p.layers[1].attn_norm, 32768 + 147968);
    cr_assert_eq(p.norm_f, 32768 + 2 * 147968);
    cr_assert_eq(p.n, 32768 + 2 * 147968 + 128);
    cr_assert_eq(p.W, 256);
    gp_plan_free(&p);
    sm_free(m);
}

Test(gpu_plan, every_tensor_placed_once_and_the_permutation_round_trips) {
    sm_model *m = make(TINY);
    gp_plan p;
    cr_assert_eq(gp_plan_init(&p, m, 64, false, 0, 1, &WS), 0, "%s", rt_errmsg());
    cr_assert_leq(p.n, m->n_params, "the GPU layout (%lld) is never longer than the CPU one (%lld)", (long long)p.n,
                  (long long)m->n_params);
    /* coverage: mark each GPU element with its owner; no element owned twice */
    int *owner = calloc((size_t)p.n, sizeof(int));
    for (size_t i = 0; i < m->n_tensors; i++) {
        cr_assert_geq(p.off[i], 0);
        cr_assert_leq(p.off[i] + m->tensors[i].numel, p.n);
        for (int64_t e = 0; e < m->tensors[i].numel; e++) {
            cr_assert_eq(owner[p.off[i] + e], 0, "%s overlaps another tensor", m->tensors[i].name);
            owner[p.off[i] + e] = (int)i + 1;
        }
    }
    free(owner);
    /* round trip, and a value landing where the fused layout says */
    float *gpu = calloc((size_t)p.n, sizeof(float)), *back = calloc((size_t)m->n_params, sizeof(float));
    gp_to_gpu(&p, m, m->params, gpu);
    gp_from_gpu(&p, m, gpu, back);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const sm_tensor *x = &m->tensors[i];
        cr_assert(!memcmp(back + x->offset, m->params + x->offset, (size_t)x->numel * 4), "%s", x->name);
    }
    /* a range of it (the ZeRO-3 upload: one rank's part), cut anywhere */
    int64_t cuts[][2] = {{0, 100}, {32760, 20}, {1000, 200000}, {p.n - 37, 37}, {p.n - 50, 80}};
    for (size_t c = 0; c < sizeof cuts / sizeof *cuts; c++) {
        int64_t lo = cuts[c][0], len = cuts[c][1], in = lo + len <= p.n ? len : p.n - lo;
        float *part = calloc((size_t)len, sizeof(float));
        gp_to_gpu_range(&p, m, m->params, part, lo, len);
        cr_assert(!memcmp(part, gpu + lo, (size_t)in * 4), "range [%lld, +%lld)", (long long)lo, (long long)len);
        for (int64_t i = in; i < len; i++) cr_assert_eq(part[i], 0.0f, "past the layout: untouched");
        free(part);
    }
    const sm_tensor *k = sm_find(m, "model.layers.1.self_attn.k_proj.weight");
    cr_assert_eq(gpu[p.layers[1].wqkv + 128 * 128 + 5], m->params[k->offset + 5]);
    const sm_tensor *u = sm_find(m, "model.layers.1.mlp.up_proj.weight");
    cr_assert_eq(gpu[p.layers[1].wgu + 256 * 128 + 77], m->params[u->offset + 77]);
    free(gpu);
    free(back);
    gp_plan_free(&p);
    sm_free(m);
}

typedef struct {
    size_t off, len;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* every buffer of the arena with its size, checked for alignment and overlap */
static void check_arena(const gp_plan *p) {
    int64_t T = p->T, D = p->D, F = p->F, W = p->W, qd = p->Hq * p->hd;
    span s[512];
    int n = 0;
    for (int64_t l = 0; l <= p->L; l++) s[n++] = (span){p->x[l], (size_t)(2 * T * D)};
    for (int64_t k = 0; k < (p->ckpt ? 1 : p->L); k++) {
        const gp_layer_acts *a = &p->keep[k];
        s[n++] = (span){a->xn1, (size_t)(2 * T * D)}, s[n++] = (span){a->qkv, (size_t)(2 * T * W)};
        s[n++] = (span){a->att, (size_t)(2 * T * qd)}, s[n++] = (span){a->lse, (size_t)(4 * T * p->Hq)};
        s[n++] = (span){a->rstd1, (size_t)(4 * T)}, s[n++] = (span){a->mid, (size_t)(2 * T * D)};
        s[n++] = (span){a->xn2, (size_t)(2 * T * D)}, s[n++] = (span){a->rstd2, (size_t)(4 * T)};
        s[n++] = (span){a->gu, (size_t)(4 * T * F)}, s[n++] = (span){a->act, (size_t)(2 * T * F)};
    }
    size_t td = (size_t)(2 * T * D);
    s[n++] = (span){p->tmp, td}, s[n++] = (span){p->out, td}, s[n++] = (span){p->hf, td};
    s[n++] = (span){p->rstd_f, (size_t)(4 * T)}, s[n++] = (span){p->dres, td}, s[n++] = (span){p->dxn, td};
    s[n++] = (span){p->dqkv, (size_t)(2 * T * W)}, s[n++] = (span){p->datt, (size_t)(2 * T * qd)};
    s[n++] = (span){p->dgu, (size_t)(4 * T * F)}, s[n++] = (span){p->dact, (size_t)(2 * T * F)};
    s[n++] = (span){p->norm_ws, WS.norm_ws}, s[n++] = (span){p->attn_ws, WS.attn_ws};
    s[n++] = (span){p->sumsq_ws, WS.sumsq_ws}, s[n++] = (span){p->batch, (size_t)(4 * (7 * T + 1))};
    s[n++] = (span){p->inv_freq, (size_t)(2 * p->hd)}, s[n++] = (span){p->loss, (size_t)(8 * p->loss_slots)};
    s[n++] = (span){p->sumsq, 8};
    for (int i = 0; i < n; i++) cr_assert_eq(s[i].off % GP_ALIGN, 0, "buffer %d at %zu", i, s[i].off);
    qsort(s, (size_t)n, sizeof *s, cmp_span);
    for (int i = 1; i < n; i++) cr_assert_leq(s[i - 1].off + s[i - 1].len, s[i].off, "buffers overlap at %zu", s[i].off);
    cr_assert_leq(s[n - 1].off + s[n - 1].len, p->act_bytes);
}

Test(gpu_plan, activations_aligned_disjoint_and_checkpointing_keeps_one_set) {
    sm_model *m = make(TINY);
    gp_plan full, ck;
    int64_t T = 100;   /* not a multiple of anything: the alignment does the work */
    cr_assert_eq(gp_plan_init(&full, m, T, false, 0, 3, &WS), 0, "%s", rt_errmsg());
    cr_assert_eq(gp_plan_init(&ck, m, T, true, 0, 3, &WS), 0, "%s", rt_errmsg());
    check_arena(&full);
    check_arena(&ck);
    /* layer inputs: L + 1 of [T, D] bf16 either way (25600 bytes, already 256-aligned) */
    cr_assert_eq(full.x_bytes, 3 * 25600);
    cr_assert_eq(ck.x_bytes, full.x_bytes);
    /* without checkpointing each layer keeps its own set; with it the layers share set 0 */
    cr_assert_neq(gp_acts_of(&full, 0)->qkv, gp_acts_of(&full, 1)->qkv);
    cr_assert_eq(gp_acts_of(&ck, 0)->qkv, gp_acts_of(&ck, 1)->qkv);
    cr_assert_eq(full.act_bytes - ck.act_bytes, (size_t)(m->L - 1) * full.keep_bytes);
    cr_assert_eq(full.keep_bytes, ck.keep_bytes);
    cr_assert_eq(full.loss_slots, 3);
    gp_plan_free(&full);
    gp_plan_free(&ck);
    sm_free(m);
}

Test(gpu_plan, shapes_the_kernels_do_not_take_are_refused) {
    json_error_t e;
    json_t *cfg = json_loads(TINY, 0, &e);
    json_object_set_new(cfg, "head_dim", json_integer(32));
    json_object_set_new(cfg, "num_attention_heads", json_integer(4));
    sm_model *m = NULL;
    cr_assert_eq(sm_create_random(cfg, 1, &m), 0, "%s", rt_errmsg());
    gp_plan p;
    cr_assert_eq(gp_plan_init(&p, m, 64, true, 0, 1, &WS), RT_EUNSUPPORTED);
    cr_assert(strstr(rt_errmsg(), "head_dim"), "%s", rt_errmsg());
    sm_free(m);
    json_decref(cfg);
}

Test(gpu_plan, ce_chunk_rule) {
    cr_assert_eq(gp_ce_chunk(100, 64, 1000), 64);              /* capped at T */
    cr_assert_eq(gp_ce_chunk(0, 1 << 20, 151936), 1766);       /* ⌊1 GiB / (4 · 151936)⌋ */
    cr_assert_eq(gp_ce_chunk(0, 1000, 151936), 1000);          /* … at most T */
    cr_assert_eq(gp_ce_chunk(0, 1 << 20, 1 << 30), 1);         /* at least one row */
}

Test(gpu_plan, memory_matches_the_arithmetic_of_train_gpu_mem_py) {
    sm_model *m = make(MID);
    const int64_t N = 13377024, T = 2048;
    gp_plan p;
    cr_assert_eq(gp_plan_init(&p, m, T, true, 512, 1, &(gp_ws_sizes){0, 0, 0}), 0, "%s", rt_errmsg());
    cr_assert_eq(p.n, N, "every tensor of this config is a multiple of 16 elements: no gaps");
    zr_layout z;
    gp_mem mem;
    zr_layout_init(&z, p.n, 0, 1, 0);
    gp_rank_memory(&p, &z, false, gp_ce_ws_estimate(p.ce_chunk, p.V, p.D), &mem);
    cr_assert_eq(mem.weights, 26754048);
    cr_assert_eq(mem.master, 53508096);
    cr_assert_eq(mem.moments, 107016192);
    cr_assert_eq(mem.grads, 53508096);
    /* the script keeps L layer inputs; the plan also keeps x[L], the final norm's input */
    cr_assert_eq(p.x_bytes, 8388608 + 2 * T * p.D);
    /* its "one layer recomputed" counts the o-projection output, a transient in the plan */
    cr_assert_eq(p.keep_bytes + 2 * T * p.D, 31014912);
    double total = 328424448.0, rel = ((double)mem.total - total) / total;
    cr_assert(rel > -0.05 && rel < 0.05, "plan %zu bytes, script %.0f: %.1f%% apart", mem.total, total, 100 * rel);
    /* ZeRO-1 over 4 ranks: master and moments a quarter each (the script's 4N/P, 8N/P) */
    zr_layout_init(&z, p.n, 1, 4, 1);
    gp_rank_memory(&p, &z, false, 0, &mem);
    cr_assert_eq(mem.master, 53508096 / 4);
    cr_assert_eq(mem.moments, 107016192 / 4);
    cr_assert_eq(mem.grads, 53508096);
    gp_plan_free(&p);
    sm_free(m);
}

/* The plan from a config alone (retort train --plan: no model allocated) lays out the same
 * units, the same flat length and the same arena as the plan from the model itself, for a
 * tied Qwen2 with q/k/v biases and an untied Llama without biases — with and without
 * checkpointing, and with the layer inputs on the host. */
static void same_as_model_plan(const char *cfg_text, int ckpt) {
    json_error_t e;
    json_t *cfg = json_loads(cfg_text, 0, &e);
    cr_assert(cfg, "%s", e.text);
    sm_model *m = NULL;
    cr_assert_eq(sm_create_random(cfg, 7, &m), 0, "%s", rt_errmsg());
    mc_config c;
    cr_assert_eq(mc_parse(cfg, &c), 0, "%s", rt_errmsg());
    gp_plan a, b;
    gp_ws_sizes ws = gp_ws_estimate(96, m->D, m->Hq, m->n_params);
    cr_assert_eq(gp_plan_init(&a, m, 96, ckpt, 0, 2, &ws), 0, "%s", rt_errmsg());
    cr_assert_eq(gp_plan_init_config(&b, &c, 96, ckpt, 0, 2, NULL), 0, "%s", rt_errmsg());
    cr_assert_eq(a.n, b.n);
    cr_assert_eq(a.e_len, b.e_len);
    cr_assert_eq(a.layer_len, b.layer_len);
    cr_assert_eq(a.h_len, b.h_len);
    cr_assert_eq(a.tied, b.tied);
    cr_assert_eq(a.norm_f, b.norm_f);
    cr_assert_eq(a.lm_head, b.lm_head);
    cr_assert_eq(a.act_bytes, b.act_bytes);
    cr_assert_eq(a.x_bytes, b.x_bytes);
    /* the units tile the layout: E, L layers, H */
    cr_assert_eq(a.layers[0].attn_norm, a.e_len);
    cr_assert_eq(a.norm_f, a.n - a.h_len);
    gp_plan_free(&a);
    gp_plan_free(&b);
    sm_free(m);
    json_decref(cfg);
}

static const char *LLAMA = "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"vocab_size\": 200,"
                           " \"hidden_size\": 128, \"intermediate_size\": 344, \"num_hidden_layers\": 5,"
                           " \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"head_dim\": 64,"
                           " \"max_position_embeddings\": 512, \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0,"
                           " \"tie_word_embeddings\": false}";

Test(gpu_plan, the_plan_from_a_config_is_the_plan_from_the_model) {
    for (int ck = GP_CKPT_NONE; ck <= GP_CKPT_HOST; ck++) {
        same_as_model_plan(TINY, ck);
        same_as_model_plan(LLAMA, ck);
    }
}

/* Per-rank memory by hand for the untied 5-layer Llama over 3 ranks. Layout: E = V·D = 25600;
 * a layer = norm 128 + q|k|v 256·128 + o 128·128 + norm 128 + gate|up 688·128 + down 128·344
 * = 128 + 32768 + 16384 + 128 + 88064 + 44032 = 181504; H = norm 128 + head 25600 = 25728;
 * n = 25600 + 5·181504 + 25728 = 958848; S = ⌈n/3⌉ = 319616 (a multiple of 16). */
Test(gpu_plan, rank_memory_of_an_untied_llama_worked_by_hand) {
    json_error_t e;
    json_t *cfg = json_loads(LLAMA, 0, &e);
    mc_config c;
    cr_assert_eq(mc_parse(cfg, &c), 0, "%s", rt_errmsg());
    json_decref(cfg);
    gp_plan p;
    cr_assert_eq(gp_plan_init_config(&p, &c, 64, GP_CKPT_LAYERS, 0, 1, NULL), 0, "%s", rt_errmsg());
    cr_assert_eq(p.e_len, 25600);
    cr_assert_eq(p.layer_len, 181504);
    cr_assert_eq(p.h_len, 25728);
    cr_assert_eq(p.n, 958848);
    zr_layout z;
    gp_mem m;
    const size_t S = 319616, A = 25728, B = 181504;
    zr_layout_init(&z, p.n, 0, 3, 2);
    gp_rank_memory(&p, &z, false, 0, &m);
    cr_assert_eq(z.shard, (int64_t)S);
    cr_assert_eq(m.weights, 2 * 3 * S);
    cr_assert_eq(m.master, 4 * S);
    cr_assert_eq(m.moments, 8 * S);
    cr_assert_eq(m.grads, 4 * S);
    cr_assert_eq(m.buckets, 4 * (A + B));   /* the head's unit is larger than the embedding */
    cr_assert_eq(m.gathered, 0);
    zr_layout_init(&z, p.n, 0, 3, 3);
    gp_rank_memory(&p, &z, true, 0, &m);
    cr_assert_eq(m.weights, 2 * S);
    cr_assert_eq(m.master + m.moments + m.grads, 0);   /* all on the host */
    cr_assert_eq(m.gathered, 2 * (2 * B + A));
    cr_assert_eq(m.host, 16 * S + 2 * 39952 * 2);   /* master, moments, gradient shard; two bf16 chunks of ⌈S/8⌉ */
    /* logit distillation: 64 tokens × 20 entries of (int32 id, f32 logprob), 64 counts, 3
     * doubles for each of 2 micro-batches = 10240 + 64 + 48; added to the total once */
    size_t before = m.total;
    cr_assert_eq(gp_kd_bytes(64, 20, 2), 10352);
    gp_mem_add_kd(&m, gp_kd_bytes(64, 20, 2));
    gp_mem_add_kd(&m, gp_kd_bytes(64, 20, 2));
    cr_assert_eq(m.kd, 10352);
    cr_assert_eq(m.total, before + 10352);
    gp_plan_free(&p);
}
