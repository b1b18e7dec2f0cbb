#include "core/model_config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/json.h"
#include "core/status.h"

const char *mc_arch_name(mc_arch a) {
    switch (a) {
    case MC_ARCH_LLAMA: return "llama";
    case MC_ARCH_QWEN2: return "qwen2";
    case MC_ARCH_QWEN3: return "qwen3";
    case MC_ARCH_DEEPSEEK_V3: return "deepseek_v3";
    }
    return "?";
}

const char *mc_rope_name(mc_rope_type t) {
    switch (t) {
    case MC_ROPE_DEFAULT: return "default";
    case MC_ROPE_LINEAR: return "linear";
    case MC_ROPE_LLAMA3: return "llama3";
    case MC_ROPE_YARN: return "yarn";
    }
    return "?";
}

/* def < 0: the key is required. A present value must lie in 1..max. */
static int get_pos(const json_t *j, const char *key, int64_t def, int64_t max, int64_t *out) {
    TRY(rt_json_get_int(j, key, def, out));
    if (!json_object_get(j, key) || json_is_null(json_object_get(j, key))) {
        if (def < 0) return rt_fail(RT_EFORMAT, "\"%s\" is missing", key);
        return 0;
    }
    if (*out < 0) return rt_fail(RT_EFORMAT, "\"%s\" = %lld is invalid: it must be positive", key, (long long)*out);
    if (*out == 0 || *out > max) return rt_fail(RT_EFORMAT, "\"%s\" = %lld is out of range (1..%lld)", key, (long long)*out, (long long)max);
    return 0;
}

static int parse_rope(const json_t *j, mc_config *c) {
    mc_rope *r = &c->rope;
    memset(r, 0, sizeof *r);
    /* transformers 5 writes rope_parameters (theta inside); older configs rope_theta + rope_scaling */
    const json_t *rp = json_object_get(j, "rope_parameters");
    const json_t *rs = json_object_get(j, "rope_scaling");
    const json_t *src = (rp && json_is_object(rp)) ? rp : (rs && json_is_object(rs)) ? rs : NULL;
    if (rp && !json_is_null(rp) && !json_is_object(rp)) return rt_fail(RT_EFORMAT, "\"rope_parameters\" must be an object");
    if (rs && !json_is_null(rs) && !json_is_object(rs)) return rt_fail(RT_EFORMAT, "\"rope_scaling\" must be an object or null");
    TRY(rt_json_get_num(j, "rope_theta", 10000.0, &r->theta));
    if (src) TRY(rt_json_get_num(src, "rope_theta", r->theta, &r->theta));
    if (!(r->theta > 0)) return rt_fail(RT_EFORMAT, "\"rope_theta\" must be positive");
    const char *type = "default";
    if (src) {
        TRY(rt_json_get_str(src, "type", "default", &type));
        TRY(rt_json_get_str(src, "rope_type", type, &type));
    }
    if (!strcmp(type, "default")) { r->type = MC_ROPE_DEFAULT; return 0; }
    TRY(rt_json_get_num(src, "factor", 1.0, &r->factor));
    if (!(r->factor >= 1.0)) return rt_fail(RT_EFORMAT, "rope factor %g must be >= 1", r->factor);
    if (!strcmp(type, "linear")) { r->type = MC_ROPE_LINEAR; return 0; }
    TRY(rt_json_get_int(src, "original_max_position_embeddings", 0, &r->original_max_position_embeddings));
    if (!strcmp(type, "llama3")) {
        r->type = MC_ROPE_LLAMA3;
        TRY(rt_json_get_num(src, "low_freq_factor", 1.0, &r->low_freq_factor));
        TRY(rt_json_get_num(src, "high_freq_factor", 4.0, &r->high_freq_factor));
        if (r->original_max_position_embeddings <= 0)
            return rt_fail(RT_EFORMAT, "llama3 rope scaling needs original_max_position_embeddings");
        if (!(r->high_freq_factor > r->low_freq_factor))
            return rt_fail(RT_EFORMAT, "llama3 rope scaling needs high_freq_factor > low_freq_factor");
        return 0;
    }
    if (!strcmp(type, "yarn")) {
        r->type = MC_ROPE_YARN;
        TRY(rt_json_get_num(src, "beta_fast", 32.0, &r->beta_fast));
        TRY(rt_json_get_num(src, "beta_slow", 1.0, &r->beta_slow));
        TRY(rt_json_get_num(src, "mscale", 1.0, &r->mscale));
        TRY(rt_json_get_num(src, "mscale_all_dim", 0.0, &r->mscale_all_dim));
        TRY(rt_json_get_num(src, "attention_factor", 0.0, &r->attention_factor));
        if (r->original_max_position_embeddings <= 0) r->original_max_position_embeddings = c->max_position_embeddings;
        return 0;
    }
    return rt_fail(RT_EUNSUPPORTED, "rope scaling type \"%s\" is not supported (default, linear, llama3, yarn)", type);
}

static int parse_quant(const json_t *j, mc_quant *q) {
    memset(q, 0, sizeof *q);
    const json_t *qc = json_object_get(j, "quantization_config");
    if (!qc || json_is_null(qc)) return 0;
    if (!json_is_object(qc)) return rt_fail(RT_EFORMAT, "\"quantization_config\" must be an object");
    const char *method, *fmt, *act;
    TRY(rt_json_get_str(qc, "quant_method", "", &method));
    if (strcmp(method, "fp8"))
        return rt_fail(RT_EUNSUPPORTED, "quantization method \"%s\" is not supported (fp8)", method);
    TRY(rt_json_get_str(qc, "fmt", "e4m3", &fmt));
    if (strcmp(fmt, "e4m3")) return rt_fail(RT_EUNSUPPORTED, "fp8 format \"%s\" is not supported (e4m3)", fmt);
    TRY(rt_json_get_str(qc, "activation_scheme", "dynamic", &act));
    q->fp8 = true;
    q->dynamic_activations = !strcmp(act, "dynamic");
    const json_t *bs = json_object_get(qc, "weight_block_size");
    if (!json_is_array(bs) || json_array_size(bs) != 2 || !json_is_integer(json_array_get(bs, 0)) ||
        !json_is_integer(json_array_get(bs, 1)) || json_integer_value(json_array_get(bs, 0)) <= 0 ||
        json_integer_value(json_array_get(bs, 1)) <= 0)
        return rt_fail(RT_EUNSUPPORTED, "fp8 quantization needs weight_block_size [rows, cols] (per-tensor scales are not supported)");
    q->block_rows = (int)json_integer_value(json_array_get(bs, 0));
    q->block_cols = (int)json_integer_value(json_array_get(bs, 1));
    return 0;
}

static int parse_tokens(const json_t *j, mc_config *c) {
    TRY(rt_json_get_int(j, "bos_token_id", -1, &c->bos_token_id));
    const json_t *e = json_object_get(j, "eos_token_id");
    c->n_eos = 0;
    if (json_is_integer(e)) c->eos_token_ids[c->n_eos++] = json_integer_value(e);
    else if (json_is_array(e)) {
        size_t i;
        json_t *v;
        json_array_foreach(e, i, v) {
            if (!json_is_integer(v)) return rt_fail(RT_EFORMAT, "\"eos_token_id\" must hold integers");
            if (c->n_eos < 8) c->eos_token_ids[c->n_eos++] = json_integer_value(v);
        }
    } else if (e && !json_is_null(e)) return rt_fail(RT_EFORMAT, "\"eos_token_id\" must be an integer or a list");
    /* an end token the model cannot produce would never stop a generation */
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_token_ids[i] < 0 || c->eos_token_ids[i] >= c->vocab_size)
            return rt_fail(RT_EFORMAT, "\"eos_token_id\" %lld is outside the vocabulary [0, %lld)",
                           (long long)c->eos_token_ids[i], (long long)c->vocab_size);
    return 0;
}

static int parse_deepseek(const json_t *j, mc_config *c) {
    const int64_t M = (int64_t)1 << 20;
    int64_t v;
    TRY(rt_json_get_int(j, "q_lora_rank", 0, &v));
    if (v < 0 || v > M) return rt_fail(RT_EFORMAT, "\"q_lora_rank\" = %lld is out of range", (long long)v);
    c->q_lora_rank = v;
    TRY(get_pos(j, "kv_lora_rank", -1, M, &c->kv_lora_rank));
    TRY(get_pos(j, "qk_nope_head_dim", -1, M, &c->qk_nope_head_dim));
    TRY(get_pos(j, "qk_rope_head_dim", -1, M, &c->qk_rope_head_dim));
    TRY(get_pos(j, "v_head_dim", -1, M, &c->v_head_dim));
    if (c->qk_rope_head_dim % 2) return rt_fail(RT_EFORMAT, "\"qk_rope_head_dim\" must be even");
    TRY(get_pos(j, "n_routed_experts", -1, M, &c->n_routed_experts));
    TRY(rt_json_get_int(j, "n_shared_experts", 0, &c->n_shared_experts));
    if (c->n_shared_experts < 0 || c->n_shared_experts > 1024) return rt_fail(RT_EFORMAT, "\"n_shared_experts\" is out of range");
    TRY(get_pos(j, "num_experts_per_tok", -1, c->n_routed_experts, &c->num_experts_per_tok));
    TRY(get_pos(j, "moe_intermediate_size", -1, M, &c->moe_intermediate_size));
    TRY(get_pos(j, "moe_layer_freq", 1, 1024, &c->moe_layer_freq));
    TRY(rt_json_get_int(j, "first_k_dense_replace", 0, &c->first_k_dense_replace));
    if (c->first_k_dense_replace < 0) return rt_fail(RT_EFORMAT, "\"first_k_dense_replace\" must be >= 0");
    TRY(get_pos(j, "n_group", 1, c->n_routed_experts, &c->n_group));
    TRY(get_pos(j, "topk_group", 1, c->n_group, &c->topk_group));
    if (c->n_routed_experts % c->n_group) return rt_fail(RT_EFORMAT, "\"n_routed_experts\" must be divisible by \"n_group\"");
    if (c->num_experts_per_tok > c->topk_group * (c->n_routed_experts / c->n_group))
        return rt_fail(RT_EFORMAT, "\"num_experts_per_tok\" exceeds the experts in topk_group groups");
    TRY(rt_json_get_num(j, "routed_scaling_factor", 1.0, &c->routed_scaling_factor));
    TRY(rt_json_get_bool(j, "norm_topk_prob", true, &c->norm_topk_prob));
    TRY(rt_json_get_bool(j, "rope_interleave", true, &c->rope_interleave));
    const char *s;
    TRY(rt_json_get_str(j, "scoring_func", "sigmoid", &s));
    if (strcmp(s, "sigmoid")) return rt_fail(RT_EUNSUPPORTED, "scoring_func \"%s\" is not supported (sigmoid)", s);
    TRY(rt_json_get_str(j, "topk_method", "noaux_tc", &s));
    if (strcmp(s, "noaux_tc") && strcmp(s, "greedy") && strcmp(s, "group_limited_greedy"))
        return rt_fail(RT_EUNSUPPORTED, "topk_method \"%s\" is not supported", s);
    c->has_correction_bias = !strcmp(s, "noaux_tc");
    TRY(rt_json_get_int(j, "num_nextn_predict_layers", 0, &c->num_nextn_predict_layers));
    if (c->num_nextn_predict_layers < 0 || c->num_nextn_predict_layers > 16)
        return rt_fail(RT_EFORMAT, "\"num_nextn_predict_layers\" is out of range");
    return 0;
}

int mc_parse(const json_t *j, mc_config *c) {
    memset(c, 0, sizeof *c);
    if (!json_is_object(j)) return rt_fail(RT_EFORMAT, "config is not a JSON object");
    const char *mt;
    TRY(rt_json_get_str(j, "model_type", NULL, &mt));
    if (!mt) return rt_fail(RT_EFORMAT, "\"model_type\" is missing");
    const char *cls;
    if (!strcmp(mt, "llama")) { c->arch = MC_ARCH_LLAMA; cls = "LlamaForCausalLM"; }
    else if (!strcmp(mt, "qwen2")) { c->arch = MC_ARCH_QWEN2; cls = "Qwen2ForCausalLM"; }
    else if (!strcmp(mt, "qwen3")) { c->arch = MC_ARCH_QWEN3; cls = "Qwen3ForCausalLM"; }
    else if (!strcmp(mt, "deepseek_v3")) { c->arch = MC_ARCH_DEEPSEEK_V3; cls = "DeepseekV3ForCausalLM"; }
    else return rt_fail(RT_EUNSUPPORTED, "unknown model_type \"%s\" (supported: llama, qwen2, qwen3, deepseek_v3)", mt);
    snprintf(c->model_type, sizeof c->model_type, "%s", mt);
    const json_t *archs = json_object_get(j, "architectures");
    if (json_is_array(archs) && json_is_string(json_array_get(archs, 0)))
        cls = json_string_value(json_array_get(archs, 0));
    snprintf(c->architecture, sizeof c->architecture, "%s", cls);

    const char *act;
    TRY(rt_json_get_str(j, "hidden_act", "silu", &act));
    if (strcmp(act, "silu") && strcmp(act, "swish"))
        return rt_fail(RT_EUNSUPPORTED, "hidden_act \"%s\" is not supported (silu)", act);

    const int64_t M = (int64_t)1 << 20;
    TRY(get_pos(j, "vocab_size", -1, (int64_t)1 << 24, &c->vocab_size));
    TRY(get_pos(j, "hidden_size", -1, M, &c->hidden_size));
    TRY(get_pos(j, "intermediate_size", -1, M, &c->intermediate_size));
    TRY(get_pos(j, "num_hidden_layers", -1, 4096, &c->num_hidden_layers));
    TRY(get_pos(j, "num_attention_heads", -1, 4096, &c->num_attention_heads));
    TRY(get_pos(j, "num_key_value_heads", c->num_attention_heads, 4096, &c->num_key_value_heads));
    if (c->num_attention_heads % c->num_key_value_heads)
        return rt_fail(RT_EFORMAT, "num_attention_heads (%lld) must be a multiple of num_key_value_heads (%lld)",
                       (long long)c->num_attention_heads, (long long)c->num_key_value_heads);
    int64_t hd_def = c->hidden_size / c->num_attention_heads;
    if (c->arch != MC_ARCH_DEEPSEEK_V3) {
        TRY(rt_json_get_int(j, "head_dim", hd_def, &c->head_dim));
        if (c->head_dim <= 0 || c->head_dim > 4096 || c->head_dim % 2)
            return rt_fail(RT_EFORMAT, "head_dim %lld is invalid (positive and even)", (long long)c->head_dim);
    }
    TRY(get_pos(j, "max_position_embeddings", 4096, (int64_t)1 << 30, &c->max_position_embeddings));
    TRY(rt_json_get_num(j, "rms_norm_eps", 1e-6, &c->rms_norm_eps));
    if (!(c->rms_norm_eps > 0 && c->rms_norm_eps < 1)) return rt_fail(RT_EFORMAT, "\"rms_norm_eps\" must be in (0, 1)");
    TRY(rt_json_get_bool(j, "tie_word_embeddings", false, &c->tie_word_embeddings));
    TRY(rt_json_get_bool(j, "attention_bias", c->arch == MC_ARCH_QWEN2, &c->attention_bias));
    if (c->arch == MC_ARCH_QWEN2) c->attention_bias = true; /* Qwen2 always has q/k/v biases */
    TRY(rt_json_get_bool(j, "mlp_bias", false, &c->mlp_bias));
    c->qk_norm = c->arch == MC_ARCH_QWEN3;
    if (c->arch == MC_ARCH_QWEN2 || c->arch == MC_ARCH_QWEN3) {
        bool sw;
        TRY(rt_json_get_bool(j, "use_sliding_window", false, &sw));
        if (sw) return rt_fail(RT_EUNSUPPORTED, "%s sliding-window attention (use_sliding_window) is not supported",
                               c->arch == MC_ARCH_QWEN3 ? "Qwen3" : "Qwen2");
    }
    TRY(parse_rope(j, c));
    TRY(parse_tokens(j, c));
    TRY(parse_quant(j, &c->quant));
    if (c->arch == MC_ARCH_DEEPSEEK_V3) TRY(parse_deepseek(j, c));
    if (c->rope.type == MC_ROPE_YARN && c->arch != MC_ARCH_DEEPSEEK_V3)
        return rt_fail(RT_EUNSUPPORTED, "yarn rope scaling is supported for deepseek_v3 only");
    return 0;
}

int mc_load(const char *path, mc_config *out) {
    char *p = rt_is_dir(path) ? rt_path_join(path, "config.json") : rt_strdup(path);
    if (!p) return RT_ENOMEM;
    json_t *j;
    int rc = rt_json_load_file(p, &j);
    if (!rc) {
        rc = mc_parse(j, out);
        if (rc) rt_errorf(rc, "%s", p);
        json_decref(j);
    }
    free(p);
    return rc;
}

bool mc_layer_is_moe(const mc_config *c, int64_t layer) {
    return c->arch == MC_ARCH_DEEPSEEK_V3 && c->n_routed_experts > 0 && layer >= c->first_k_dense_replace &&
           layer % c->moe_layer_freq == 0;
}

void mc_scale_shape(const mc_config *c, const int64_t shape[2], int64_t out[2]) {
    out[0] = (shape[0] + c->quant.block_rows - 1) / c->quant.block_rows;
    out[1] = (shape[1] + c->quant.block_cols - 1) / c->quant.block_cols;
}

typedef struct {
    mc_tensor_spec *v;
    size_t n, cap;
    int err;
} specs;

static void add(specs *s, int group, mc_tensor_kind kind, int64_t d0, int64_t d1, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void add(specs *s, int group, mc_tensor_kind kind, int64_t d0, int64_t d1, const char *fmt, ...) {
    if (s->err) return;
    if (rt_grow((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v)) { s->err = RT_ENOMEM; return; }
    mc_tensor_spec *t = &s->v[s->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->kind = kind;
    t->group = group;
    t->ndim = d1 > 0 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1 > 0 ? d1 : 0;
}

static void add_mlp(specs *s, int g, const char *prefix, int64_t hidden, int64_t inter, bool bias) {
    add(s, g, MC_T_LINEAR, inter, hidden, "%s.gate_proj.weight", prefix);
    add(s, g, MC_T_LINEAR, inter, hidden, "%s.up_proj.weight", prefix);
    add(s, g, MC_T_LINEAR, hidden, inter, "%s.down_proj.weight", prefix);
    if (bias) {
        add(s, g, MC_T_BIAS, inter, 0, "%s.gate_proj.bias", prefix);
        add(s, g, MC_T_BIAS, inter, 0, "%s.up_proj.bias", prefix);
        add(s, g, MC_T_BIAS, hidden, 0, "%s.down_proj.bias", prefix);
    }
}

static void add_dense_layer(specs *s, const mc_config *c, int64_t i) {
    int64_t h = c->hidden_size, hd = c->head_dim, nq = c->num_attention_heads * hd, nkv = c->num_key_value_heads * hd;
    char p[40];
    snprintf(p, sizeof p, "model.layers.%lld", (long long)i);
    add(s, 0, MC_T_NORM, h, 0, "%s.input_layernorm.weight", p);
    add(s, 0, MC_T_LINEAR, nq, h, "%s.self_attn.q_proj.weight", p);
    add(s, 0, MC_T_LINEAR, nkv, h, "%s.self_attn.k_proj.weight", p);
    add(s, 0, MC_T_LINEAR, nkv, h, "%s.self_attn.v_proj.weight", p);
    add(s, 0, MC_T_LINEAR, h, nq, "%s.self_attn.o_proj.weight", p);
    if (c->attention_bias) {
        add(s, 0, MC_T_BIAS, nq, 0, "%s.self_attn.q_proj.bias", p);
        add(s, 0, MC_T_BIAS, nkv, 0, "%s.self_attn.k_proj.bias", p);
        add(s, 0, MC_T_BIAS, nkv, 0, "%s.self_attn.v_proj.bias", p);
        if (c->arch != MC_ARCH_QWEN2) add(s, 0, MC_T_BIAS, h, 0, "%s.self_attn.o_proj.bias", p);
    }
    if (c->qk_norm) {
        add(s, 0, MC_T_NORM, hd, 0, "%s.self_attn.q_norm.weight", p);
        add(s, 0, MC_T_NORM, hd, 0, "%s.self_attn.k_norm.weight", p);
    }
    add(s, 0, MC_T_NORM, h, 0, "%s.post_attention_layernorm.weight", p);
    char m[96];
    snprintf(m, sizeof m, "%s.mlp", p);
    add_mlp(s, 0, m, h, c->intermediate_size, c->mlp_bias);
}

static void add_mla_layer(specs *s, const mc_config *c, int64_t i, int g) {
    int64_t h = c->hidden_size, nh = c->num_attention_heads;
    int64_t qk = c->qk_nope_head_dim + c->qk_rope_head_dim;
    bool b = c->attention_bias;
    char p[40], m[96];
    snprintf(p, sizeof p, "model.layers.%lld", (long long)i);
    add(s, g, MC_T_NORM, h, 0, "%s.input_layernorm.weight", p);
    if (c->q_lora_rank > 0) {
        add(s, g, MC_T_LINEAR, c->q_lora_rank, h, "%s.self_attn.q_a_proj.weight", p);
        if (b) add(s, g, MC_T_BIAS, c->q_lora_rank, 0, "%s.self_attn.q_a_proj.bias", p);
        add(s, g, MC_T_NORM, c->q_lora_rank, 0, "%s.self_attn.q_a_layernorm.weight", p);
        add(s, g, MC_T_LINEAR, nh * qk, c->q_lora_rank, "%s.self_attn.q_b_proj.weight", p);
    } else {
        add(s, g, MC_T_LINEAR, nh * qk, h, "%s.self_attn.q_proj.weight", p);
    }
    add(s, g, MC_T_LINEAR, c->kv_lora_rank + c->qk_rope_head_dim, h, "%s.self_attn.kv_a_proj_with_mqa.weight", p);
    if (b) add(s, g, MC_T_BIAS, c->kv_lora_rank + c->qk_rope_head_dim, 0, "%s.self_attn.kv_a_proj_with_mqa.bias", p);
    add(s, g, MC_T_NORM, c->kv_lora_rank, 0, "%s.self_attn.kv_a_layernorm.weight", p);
    add(s, g, MC_T_LINEAR, nh * (c->qk_nope_head_dim + c->v_head_dim), c->kv_lora_rank, "%s.self_attn.kv_b_proj.weight", p);
    add(s, g, MC_T_LINEAR, h, nh * c->v_head_dim, "%s.self_attn.o_proj.weight", p);
    if (b) add(s, g, MC_T_BIAS, h, 0, "%s.self_attn.o_proj.bias", p);
    add(s, g, MC_T_NORM, h, 0, "%s.post_attention_layernorm.weight", p);
    if (!mc_layer_is_moe(c, i)) {
        snprintf(m, sizeof m, "%s.mlp", p);
        add_mlp(s, g, m, h, c->intermediate_size, false);
        return;
    }
    add(s, g, MC_T_ROUTER, c->n_routed_experts, h, "%s.mlp.gate.weight", p);
    if (c->has_correction_bias) add(s, g, MC_T_ROUTER_BIAS, c->n_routed_experts, 0, "%s.mlp.gate.e_score_correction_bias", p);
    for (int64_t e = 0; e < c->n_routed_experts; e++) {
        snprintf(m, sizeof m, "%s.mlp.experts.%lld", p, (long long)e);
        add_mlp(s, g, m, h, c->moe_intermediate_size, false);
    }
    if (c->n_shared_experts > 0) {
        snprintf(m, sizeof m, "%s.mlp.shared_experts", p);
        add_mlp(s, g, m, h, c->moe_intermediate_size * c->n_shared_experts, false);
    }
}

int mc_expected_tensors(const mc_config *c, mc_tensor_spec **out, size_t *n) {
    specs s = {0};
    int64_t h = c->hidden_size, V = c->vocab_size;
    add(&s, 0, MC_T_EMBED, V, h, "model.embed_tokens.weight");
    for (int64_t i = 0; i < c->num_hidden_layers; i++) {
        if (c->arch == MC_ARCH_DEEPSEEK_V3) add_mla_layer(&s, c, i, 0);
        else add_dense_layer(&s, c, i);
    }
    add(&s, 0, MC_T_NORM, h, 0, "model.norm.weight");
    add(&s, c->tie_word_embeddings ? MC_GROUP_TIED_HEAD : 0, MC_T_EMBED, V, h, "lm_head.weight");
    if (c->arch == MC_ARCH_DEEPSEEK_V3) {
        /* multi-token-prediction layers follow the main stack: layers.L, L = num_hidden_layers + k */
        for (int64_t k = 0; k < c->num_nextn_predict_layers; k++) {
            int64_t L = c->num_hidden_layers + k;
            int g = MC_GROUP_MTP;
            add(&s, g, MC_T_EMBED, V, h, "model.layers.%lld.embed_tokens.weight", (long long)L);
            add(&s, g, MC_T_NORM, h, 0, "model.layers.%lld.enorm.weight", (long long)L);
            add(&s, g, MC_T_NORM, h, 0, "model.layers.%lld.hnorm.weight", (long long)L);
            add(&s, g, MC_T_LINEAR, h, 2 * h, "model.layers.%lld.eh_proj.weight", (long long)L);
            add_mla_layer(&s, c, L, g);
            add(&s, g, MC_T_NORM, h, 0, "model.layers.%lld.shared_head.norm.weight", (long long)L);
            add(&s, g, MC_T_EMBED, V, h, "model.layers.%lld.shared_head.head.weight", (long long)L);
        }
    }
    if (s.err) { free(s.v); return s.err; }
    *out = s.v;
    *n = s.n;
    return 0;
}

mc_dims mc_dense_dims(const mc_config *c) {
    return (mc_dims){.D = c->hidden_size, .F = c->intermediate_size, .L = c->num_hidden_layers, .V = c->vocab_size,
                     .Hq = c->num_attention_heads, .Hkv = c->num_key_value_heads, .hd = c->head_dim};
}

int64_t mc_param_count(const mc_config *c, bool with_optional) {
    mc_tensor_spec *v;
    size_t n;
    if (mc_expected_tensors(c, &v, &n)) return -1;
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i].group == MC_GROUP_TIED_HEAD) continue;
        if (v[i].group == MC_GROUP_MTP && !with_optional) continue;
        total += v[i].shape[0] * (v[i].ndim == 2 ? v[i].shape[1] : 1);
    }
    free(v);
    return total;
}
