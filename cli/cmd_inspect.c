/* cli/cmd_inspect.c — `retort inspect DIR [--json] [--check-values]`. */
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/alloc.h"
#include "core/checkpoint.h"
#include "core/fsutil.h"
#include "core/model_check.h"
#include "core/model_config.h"
#include "core/safetensors.h"
#include "core/status.h"

/* Tensors grouped by name with layer and expert indices replaced by '*', dtype and shape. */
typedef struct {
    char pattern[128];
    const st_tensor *first;
    size_t count;
} shape_group;

static void name_pattern(const char *name, char *out, size_t n) {
    size_t o = 0;
    for (const char *s = name; *s && o + 2 < n;) {
        if ((s > name && s[-1] == '.') && *s >= '0' && *s <= '9') {
            out[o++] = '*';
            while (*s >= '0' && *s <= '9') s++;
        } else {
            out[o++] = *s++;
        }
    }
    out[o] = 0;
}

static bool same_group(const shape_group *g, const char *pat, const st_tensor *t) {
    if (strcmp(g->pattern, pat) || g->first->dtype != t->dtype || g->first->ndim != t->ndim) return false;
    for (int d = 0; d < t->ndim; d++)
        if (g->first->shape[d] != t->shape[d]) return false;
    return true;
}

static int group_shapes(const st_file *f, shape_group **out, size_t *n) {
    shape_group *g = NULL;
    size_t ng = 0, cap = 0;
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_get(f, i);
        char pat[128];
        name_pattern(t->name, pat, sizeof pat);
        size_t k = 0;
        while (k < ng && !same_group(&g[k], pat, t)) k++;
        if (k == ng) {
            if (rt_grow((void **)&g, &cap, ng + 1, sizeof *g)) { free(g); return RT_ENOMEM; }
            memset(&g[ng], 0, sizeof g[ng]);
            snprintf(g[ng].pattern, sizeof g[ng].pattern, "%s", pat);
            g[ng++].first = t;
        }
        g[k].count++;
    }
    *out = g;
    *n = ng;
    return 0;
}

static json_t *shape_json(const st_tensor *t) {
    json_t *a = json_array();
    for (int d = 0; d < t->ndim; d++) json_array_append_new(a, json_integer(t->shape[d]));
    return a;
}

static json_t *config_json(const mc_config *c) {
    json_t *j = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:b,s:{s:s,s:f}}", "vocab_size", (json_int_t)c->vocab_size,
                          "hidden_size", (json_int_t)c->hidden_size, "intermediate_size",
                          (json_int_t)c->intermediate_size, "num_hidden_layers", (json_int_t)c->num_hidden_layers,
                          "num_attention_heads", (json_int_t)c->num_attention_heads, "num_key_value_heads",
                          (json_int_t)c->num_key_value_heads, "max_position_embeddings",
                          (json_int_t)c->max_position_embeddings, "rms_norm_eps", c->rms_norm_eps,
                          "tie_word_embeddings", c->tie_word_embeddings, "rope", "type", mc_rope_name(c->rope.type),
                          "theta", c->rope.theta);
    if (c->rope.type != MC_ROPE_DEFAULT) json_object_set_new(json_object_get(j, "rope"), "factor", json_real(c->rope.factor));
    if (c->arch != MC_ARCH_DEEPSEEK_V3) {
        json_object_set_new(j, "head_dim", json_integer(c->head_dim));
        json_object_set_new(j, "attention_bias", json_boolean(c->attention_bias));
    } else {
        json_object_update_new(j, json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:I}",
            "q_lora_rank", (json_int_t)c->q_lora_rank, "kv_lora_rank", (json_int_t)c->kv_lora_rank,
            "qk_nope_head_dim", (json_int_t)c->qk_nope_head_dim, "qk_rope_head_dim", (json_int_t)c->qk_rope_head_dim,
            "v_head_dim", (json_int_t)c->v_head_dim, "n_routed_experts", (json_int_t)c->n_routed_experts,
            "n_shared_experts", (json_int_t)c->n_shared_experts, "num_experts_per_tok", (json_int_t)c->num_experts_per_tok,
            "moe_intermediate_size", (json_int_t)c->moe_intermediate_size, "first_k_dense_replace",
            (json_int_t)c->first_k_dense_replace, "n_group", (json_int_t)c->n_group, "topk_group",
            (json_int_t)c->topk_group, "routed_scaling_factor", c->routed_scaling_factor, "num_nextn_predict_layers",
            (json_int_t)c->num_nextn_predict_layers));
    }
    return j;
}

static json_t *values_json(const mk_values *v) {
    json_t *bad = json_array();
    for (size_t i = 0; i < v->n_bad; i++)
        json_array_append_new(bad, json_pack("{s:s,s:s,s:I,s:I,s:I}", "name", v->bad[i].name, "dtype",
                                             rt_dtype_name(v->bad[i].dtype), "elements", (json_int_t)v->bad[i].elements,
                                             "nan", (json_int_t)v->bad[i].nan, "inf", (json_int_t)v->bad[i].inf));
    return json_pack("{s:I,s:I,s:I,s:I,s:o}", "tensors", (json_int_t)v->tensors, "values", (json_int_t)v->values, "nan",
                     (json_int_t)v->nan, "inf", (json_int_t)v->inf, "non_finite", bad);
}

/* v: the --check-values scan, or NULL. */
static int print_json(const char *dir, const mc_config *c, const ck_summary *s, const shape_group *g, size_t ng,
                      const mk_values *v) {
    json_t *dt = json_object();
    for (int t = 1; t < RT_DT_COUNT; t++)
        if (s->dtype_count[t]) json_object_set_new(dt, rt_dtype_name((rt_dtype)t), json_integer((json_int_t)s->dtype_count[t]));
    json_t *shapes = json_array();
    for (size_t i = 0; i < ng; i++)
        json_array_append_new(shapes, json_pack("{s:s,s:s,s:o,s:I}", "pattern", g[i].pattern, "dtype",
                                                rt_dtype_name(g[i].first->dtype), "shape", shape_json(g[i].first),
                                                "count", (json_int_t)g[i].count));
    json_t *q = c->quant.fp8 ? json_pack("{s:s,s:s,s:[ii],s:I}", "method", "fp8", "fmt", "e4m3", "weight_block_size",
                                         c->quant.block_rows, c->quant.block_cols, "fp8_weights",
                                         (json_int_t)s->fp8_weights)
                             : json_null();
    json_t *j = json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:i,s:o,s:o,s:I,s:b,s:o,s:o}", "path", dir, "architecture",
                          c->architecture, "model_type", c->model_type, "parameters", (json_int_t)s->parameters,
                          "expected_parameters", (json_int_t)s->expected_parameters, "tensors", (json_int_t)s->tensors,
                          "files", s->files, "dtypes", dt, "quantization", q, "mtp_layers",
                          (json_int_t)(s->mtp_present ? c->num_nextn_predict_layers : 0), "tied_embeddings",
                          c->tie_word_embeddings, "config", config_json(c), "shapes", shapes);
    if (j && v) json_object_set_new(j, "values", values_json(v));
    if (!j) return cli_fail("inspect: building JSON");
    char *txt = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!txt) return cli_fail("inspect: building JSON");
    puts(txt);
    free(txt);
    return EXIT_OK;
}

static void human_count(int64_t n, char *buf, size_t len) {
    if (n >= 1000000000LL) snprintf(buf, len, "%.2fB", (double)n / 1e9);
    else if (n >= 1000000LL) snprintf(buf, len, "%.2fM", (double)n / 1e6);
    else snprintf(buf, len, "%.2fK", (double)n / 1e3);
}

static int print_text(const char *dir, const mc_config *c, const ck_summary *s, const shape_group *g, size_t ng,
                      const mk_values *v) {
    char a[32], b[32];
    printf("checkpoint    %s (%d file%s)\n", dir, s->files, s->files == 1 ? "" : "s");
    printf("architecture  %s\n", c->architecture);
    printf("model_type    %s\n", c->model_type);
    human_count(s->parameters, b, sizeof b);
    printf("parameters    %s (%s)\n", cli_thousands(s->parameters, a, sizeof a), b);
    printf("tensors       %zu  [", s->tensors);
    int first = 1;
    for (int t = 1; t < RT_DT_COUNT; t++)
        if (s->dtype_count[t]) { printf("%s%s %zu", first ? "" : ", ", rt_dtype_name((rt_dtype)t), s->dtype_count[t]); first = 0; }
    printf("]\n");
    if (c->quant.fp8)
        printf("quantization  fp8 e4m3, %dx%d block scales (%zu weights)\n", c->quant.block_rows, c->quant.block_cols, s->fp8_weights);
    printf("shape         vocab %lld, hidden %lld, layers %lld, heads %lld", (long long)c->vocab_size,
           (long long)c->hidden_size, (long long)c->num_hidden_layers, (long long)c->num_attention_heads);
    if (c->arch == MC_ARCH_DEEPSEEK_V3) {
        printf(", q_lora %lld, kv_lora %lld, qk %lld+%lld, v %lld\n", (long long)c->q_lora_rank, (long long)c->kv_lora_rank,
               (long long)c->qk_nope_head_dim, (long long)c->qk_rope_head_dim, (long long)c->v_head_dim);
        printf("moe           %lld routed experts (top %lld, %lld groups, top %lld groups) + %lld shared, from layer %lld; "
               "mtp layers %s\n", (long long)c->n_routed_experts, (long long)c->num_experts_per_tok, (long long)c->n_group,
               (long long)c->topk_group, (long long)c->n_shared_experts, (long long)c->first_k_dense_replace,
               s->mtp_present ? "stored" : "not stored");
    } else {
        printf(", kv heads %lld, head_dim %lld, ffn %lld%s\n", (long long)c->num_key_value_heads, (long long)c->head_dim,
               (long long)c->intermediate_size, c->tie_word_embeddings ? ", tied embeddings" : "");
    }
    printf("rope          %s, theta %g", mc_rope_name(c->rope.type), c->rope.theta);
    if (c->rope.type != MC_ROPE_DEFAULT) printf(", factor %g", c->rope.factor);
    printf("\n\n");
    for (size_t i = 0; i < ng; i++) {
        char sh[64];
        int o = snprintf(sh, sizeof sh, "[");
        for (int d = 0; d < g[i].first->ndim; d++) o += snprintf(sh + o, sizeof sh - (size_t)o, d ? ", %lld" : "%lld", (long long)g[i].first->shape[d]);
        snprintf(sh + o, sizeof sh - (size_t)o, "]");
        printf("  %-60s %-8s %-16s", g[i].pattern, rt_dtype_name(g[i].first->dtype), sh);
        if (g[i].count > 1) printf(" x%zu", g[i].count);
        printf("\n");
    }
    if (v) {
        char a1[32], a2[32];
        printf("\nvalues        %s in %zu tensors: %s\n", cli_thousands((int64_t)v->values, a1, sizeof a1), v->tensors,
               v->n_bad ? "NOT all finite" : "all finite");
        for (size_t i = 0; i < v->n_bad; i++)
            printf("  non-finite  %-60s %-8s %s NaN, %s Inf of %llu\n", v->bad[i].name, rt_dtype_name(v->bad[i].dtype),
                   cli_thousands((int64_t)v->bad[i].nan, a1, sizeof a1), cli_thousands((int64_t)v->bad[i].inf, a2, sizeof a2),
                   (unsigned long long)v->bad[i].elements);
    }
    return EXIT_OK;
}

int cmd_inspect(int argc, char **argv) {
    cli_getopt go;
    cli_getopt_init("inspect", 0, &go);
    int json = 0, values = 0, ch;
    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, go.shorts, go.opts, NULL)) != -1) {
        if (ch == 'j') json = 1;
        else if (ch == 'v') values = 1;
        else if (ch == 'h') { cli_print_usage("inspect", stdout); return EXIT_OK; }
        else return cli_usage_error("inspect", "unknown option '%s'", argv[optind - 1]);
    }
    if (optind != argc - 1) return cli_usage_error("inspect", optind >= argc ? "missing DIR" : "expected one DIR");
    const char *dir = argv[optind];
    if (!rt_is_dir(dir)) {
        fprintf(stderr, "retort: inspect %s: not a directory (expected a model directory with config.json)\n", dir);
        return EXIT_RUNTIME;
    }
    char what[1100];
    snprintf(what, sizeof what, "inspect %s", dir);
    mc_config cfg;
    if (mc_load(dir, &cfg)) return cli_fail(what);
    st_file *f;
    if (st_open(dir, &f)) return cli_fail(what);
    ck_summary sum;
    if (ck_validate(&cfg, f, &sum)) { st_close(f); return cli_fail(what); }
    shape_group *g;
    size_t ng;
    if (group_shapes(f, &g, &ng)) { st_close(f); return cli_fail(what); }
    mk_values v = {0};
    if (values) {   /* every tensor, on one thread per CPU */
        tp_pool *pool = NULL;
        int src = tp_create(0, &pool);
        if (!src) src = mk_scan_values(f, true, pool, &v);
        tp_free(pool);
        if (src) { free(g); st_close(f); return cli_fail(what); }
    }
    int rc = json ? print_json(dir, &cfg, &sum, g, ng, values ? &v : NULL)
                  : print_text(dir, &cfg, &sum, g, ng, values ? &v : NULL);
    if (rc == EXIT_OK && v.n_bad) {
        fflush(stdout);
        fprintf(stderr, "retort: inspect %s: %zu tensor%s hold%s non-finite values (%llu NaN, %llu Inf in all), the first "
                "%s\n", dir, v.n_bad, v.n_bad == 1 ? "" : "s", v.n_bad == 1 ? "s" : "", (unsigned long long)v.nan,
                (unsigned long long)v.inf, v.bad[0].name);
        rc = EXIT_RUNTIME;
    }
    mk_values_free(&v);
    free(g);
    st_close(f);
    return rc;
}
