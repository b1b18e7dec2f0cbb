/* core/model_config: presets against published parameter totals (model cards) and against
 * transformers (tests/ref/gen_presets.py: state_dict sizes, and the tensor names and shapes
 * save_pretrained writes for the tiny presets); parse errors; both rope spellings. */
#include <math.h>

#include "core/json.h"
#include "core/model_config.h"
#include "testutil.h"

static mc_config load_preset(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "configs/models/%s.json", name);
    mc_config c;
    cr_assert(!mc_load(path, &c), "%s: %s", path, rt_errmsg());
    return c;
}

/* Published totals as the model cards print them; cards truncate as often as they round,
 * so a preset passes within one unit of the last printed digit. */
Test(model_config, presets_match_published_parameter_totals) {
    static const struct { const char *name; double billions; double unit; } pub[] = {
        {"qwen2.5-0.5b", 0.49, 0.01}, {"qwen2.5-1.5b", 1.54, 0.01}, {"qwen2.5-7b", 7.62, 0.01},
        {"qwen2.5-14b", 14.7, 0.1},   {"qwen2.5-32b", 32.5, 0.5},   {"llama-3.1-8b", 8.03, 0.01},
        {"llama-3.3-70b", 70.55, 0.01}, {"deepseek-r1", 671, 1}, {"qwen3-0.6b", 0.6, 0.1}, {"qwen3-8b", 8.2, 0.1},
    };
    for (size_t i = 0; i < sizeof pub / sizeof *pub; i++) {
        mc_config c = load_preset(pub[i].name);
        double b = (double)mc_param_count(&c, false) / 1e9;
        cr_assert(fabs(b - pub[i].billions) <= pub[i].unit + 1e-9, "%s: %.4fB, published %.2fB", pub[i].name, b,
                  pub[i].billions);
    }
    /* R1 with its MTP layer: the 685B of the release */
    mc_config r1 = load_preset("deepseek-r1");
    cr_assert(fabs((double)mc_param_count(&r1, true) / 1e9 - 685) < 1, "R1 with MTP: %lld", (long long)mc_param_count(&r1, true));
}

Test(model_config, presets_match_transformers_exactly) {
    const char *dir = getenv("REF_DIR");
    if (!dir) cr_skip_test("skipped: REF_DIR not set");
    char path[4096];
    snprintf(path, sizeof path, "%s/presets.json", dir);
    json_t *ref;
    if (rt_json_load_file(path, &ref)) cr_skip_test("skipped: %s", rt_errmsg());
    const char *name;
    json_t *v;
    int n = 0;
    json_object_foreach(json_object_get(ref, "counts"), name, v) {
        mc_config c = load_preset(name);
        cr_assert_eq(mc_param_count(&c, false), json_integer_value(v), "%s: retort %lld, transformers %lld", name,
                     (long long)mc_param_count(&c, false), (long long)json_integer_value(v));
        n++;
    }
    cr_assert_geq(n, 11);
    json_object_foreach(json_object_get(ref, "tensors"), name, v) {
        mc_config c = load_preset(name);
        mc_tensor_spec *s;
        size_t ns, required = 0;
        cr_assert(!mc_expected_tensors(&c, &s, &ns));
        for (size_t i = 0; i < ns; i++) {
            json_t *shape = json_object_get(v, s[i].name);
            if (s[i].group != MC_GROUP_REQUIRED) {
                cr_assert(!shape || s[i].group == MC_GROUP_TIED_HEAD, "%s: optional %s saved by transformers", name, s[i].name);
                continue;
            }
            required++;
            cr_assert(shape, "%s: retort expects %s, transformers does not save it", name, s[i].name);
            cr_assert_eq((int)json_array_size(shape), s[i].ndim, "%s: %s rank", name, s[i].name);
            for (int d = 0; d < s[i].ndim; d++)
                cr_assert_eq(json_integer_value(json_array_get(shape, (size_t)d)), s[i].shape[d], "%s: %s dim %d", name,
                             s[i].name, d);
        }
        cr_assert_eq(required, json_object_size(v), "%s: transformers saves %zu tensors, retort expects %zu", name,
                     json_object_size(v), required);
        free(s);
    }
    json_decref(ref);
}

static int parse_str(const char *text, mc_config *c) {
    json_t *j;
    cr_assert(!rt_json_loadb(text, strlen(text), "test", &j), "%s", rt_errmsg());
    int rc = mc_parse(j, c);
    json_decref(j);
    return rc;
}

#define BASE "\"vocab_size\":100,\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,\"num_attention_heads\":4"

Test(model_config, unknown_model_type_is_a_clear_error) {
    mc_config c;
    cr_assert_eq(parse_str("{\"model_type\":\"gpt2\"," BASE "}", &c), RT_EUNSUPPORTED);
    cr_assert(strstr(rt_errmsg(), "unknown model_type \"gpt2\""), "%s", rt_errmsg());
    cr_assert_eq(parse_str("{" BASE "}", &c), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "model_type"));
}

Test(model_config, bad_fields_name_the_field) {
    mc_config c;
    cr_assert_eq(parse_str("{\"model_type\":\"llama\",\"vocab_size\":100,\"hidden_size\":64,\"intermediate_size\":128,"
                           "\"num_hidden_layers\":2}", &c), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "num_attention_heads"), "%s", rt_errmsg());
    cr_assert_eq(parse_str("{\"model_type\":\"llama\"," BASE ",\"num_key_value_heads\":3}", &c), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "multiple of num_key_value_heads"), "%s", rt_errmsg());
    cr_assert_eq(parse_str("{\"model_type\":\"llama\",\"vocab_size\":100,\"hidden_size\":\"64\"}", &c), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "hidden_size"), "%s", rt_errmsg());
    cr_assert_eq(parse_str("{\"model_type\":\"llama\"," BASE ",\"hidden_act\":\"gelu\"}", &c), RT_EUNSUPPORTED);
    cr_assert_eq(parse_str("{\"model_type\":\"llama\"," BASE ",\"rope_scaling\":{\"rope_type\":\"dynamic\",\"factor\":2}}", &c),
                 RT_EUNSUPPORTED);
    cr_assert(strstr(rt_errmsg(), "dynamic"));
}

Test(model_config, rope_in_both_spellings) {
    mc_config a, b;
    cr_assert(!parse_str("{\"model_type\":\"llama\"," BASE ",\"rope_theta\":500000,\"rope_scaling\":{\"rope_type\":\"llama3\","
                         "\"factor\":8,\"low_freq_factor\":1,\"high_freq_factor\":4,\"original_max_position_embeddings\":8192}}", &a));
    cr_assert(!parse_str("{\"model_type\":\"llama\"," BASE ",\"rope_parameters\":{\"rope_type\":\"llama3\",\"rope_theta\":500000,"
                         "\"factor\":8,\"low_freq_factor\":1,\"high_freq_factor\":4,\"original_max_position_embeddings\":8192}}", &b));
    cr_assert(a.rope.type == MC_ROPE_LLAMA3 && b.rope.type == MC_ROPE_LLAMA3);
    cr_assert(a.rope.theta == 500000 && b.rope.theta == 500000 && a.rope.factor == 8 && b.rope.factor == 8);
    cr_assert(a.rope.original_max_position_embeddings == 8192 && b.rope.high_freq_factor == 4);
}

Test(model_config, deepseek_r1_fields) {
    mc_config c = load_preset("deepseek-r1");
    cr_assert_eq(c.arch, MC_ARCH_DEEPSEEK_V3);
    cr_assert(c.quant.fp8 && c.quant.block_rows == 128 && c.quant.block_cols == 128);
    cr_assert(c.rope.type == MC_ROPE_YARN && c.rope.factor == 40 && c.rope.original_max_position_embeddings == 4096);
    cr_assert(c.rope.beta_fast == 32 && c.rope.beta_slow == 1 && c.rope.mscale_all_dim == 1.0);
    cr_assert(c.has_correction_bias && c.n_group == 8 && c.topk_group == 4 && c.routed_scaling_factor == 2.5);
    cr_assert(!mc_layer_is_moe(&c, 2) && mc_layer_is_moe(&c, 3) && mc_layer_is_moe(&c, 60));
    cr_assert_eq(c.kv_lora_rank + c.qk_rope_head_dim, 576); /* the latent cache width per token */
    int64_t s[2], w[2] = {2048, 7168};
    mc_scale_shape(&c, w, s);
    cr_assert(s[0] == 16 && s[1] == 56);
    int64_t odd[2] = {129, 1}; /* partial blocks round up */
    mc_scale_shape(&c, odd, s);
    cr_assert(s[0] == 2 && s[1] == 1);
}

/* issue #16: a negative size is invalid, not missing; an end token outside the vocabulary
 * (the model could never emit it) is refused. Hand-written configs; the expected wording is
 * the contract's. */
Test(model_config, negative_size_is_invalid_not_missing) {
    mc_config c;
    cr_assert_eq(parse_str("{\"model_type\":\"llama\",\"vocab_size\":100,\"hidden_size\":-64,\"intermediate_size\":128,"
                           "\"num_hidden_layers\":2,\"num_attention_heads\":4}", &c), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "\"hidden_size\" = -64 is invalid"), "%s", rt_errmsg());
    cr_assert(!strstr(rt_errmsg(), "missing"), "%s", rt_errmsg());
    cr_assert_eq(parse_str("{\"model_type\":\"llama\"," BASE ",\"num_key_value_heads\":-2}", &c), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "\"num_key_value_heads\" = -2 is invalid"), "%s", rt_errmsg());
    cr_assert_eq(parse_str("{\"model_type\":\"llama\",\"vocab_size\":100,\"intermediate_size\":128,"
                           "\"num_hidden_layers\":2,\"num_attention_heads\":4}", &c), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "\"hidden_size\" is missing"), "%s", rt_errmsg());
}

Test(model_config, eos_ids_must_lie_in_the_vocabulary) {
    mc_config c;
    cr_assert_eq(parse_str("{\"model_type\":\"llama\"," BASE ",\"eos_token_id\":-5}", &c), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "\"eos_token_id\" -5 is outside the vocabulary [0, 100)"), "%s", rt_errmsg());
    cr_assert_eq(parse_str("{\"model_type\":\"llama\"," BASE ",\"eos_token_id\":1000000000}", &c), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "1000000000 is outside the vocabulary"), "%s", rt_errmsg());
    cr_assert_eq(parse_str("{\"model_type\":\"llama\"," BASE ",\"eos_token_id\":[2, 100]}", &c), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "100 is outside"), "%s", rt_errmsg());
    cr_assert_eq(parse_str("{\"model_type\":\"llama\"," BASE ",\"eos_token_id\":1e9}", &c), RT_EFORMAT);
    cr_assert_eq(parse_str("{\"model_type\":\"llama\"," BASE ",\"eos_token_id\":[0, 99]}", &c), 0, "%s", rt_errmsg());
    cr_assert_eq(c.n_eos, 2);
    cr_assert_eq(parse_str("{\"model_type\":\"llama\"," BASE ",\"eos_token_id\":null}", &c), 0, "%s", rt_errmsg());
    cr_assert_eq(c.n_eos, 0);
}
