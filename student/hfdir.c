/* student/hfdir.c — tokenizer and generation files of a model directory (see hfdir.h). */
#include "student/hfdir.h"

#include <libgen.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/json.h"
#include "core/status.h"
#include "core/tokenizer.h"

const char *hd_end_of_turn(const char *name) {
    if (!name) return NULL;
    if (!strcmp(name, "deepseek-r1")) return "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>";
    if (!strcmp(name, "qwen")) return "<|im_end|>";
    if (!strcmp(name, "llama3")) return "<|eot_id|>";
    return NULL;
}

/* The Jinja text of a built-in template (core/chat_template.h), for a tokenizer_config.json
 * that has none: what transformers' apply_chat_template renders with it equals
 * ct_render_text for conversations whose last turn is not an assistant's with reasoning (the
 * built-ins keep that one's thinking for training; these, like the models' own templates,
 * drop it). NULL when unknown. */
static const char *builtin_jinja(const char *name) {
    if (!name) return NULL;
    if (!strcmp(name, "qwen"))
        return "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
               "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a "
               "helpful assistant.<|im_end|>\\n' }}{%- endif %}{%- for message in messages %}{%- if not (message['role'] == "
               "'system' and loop.first) %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
               "'<|im_end|>\\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' "
               "}}{%- endif %}";
    if (!strcmp(name, "llama3"))
        return "{{- '<|begin_of_text|>' }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
               "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}{%- if "
               "add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";
    if (!strcmp(name, "deepseek-r1"))
        return "{{- '<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>' }}{%- set ns = namespace(system='', "
               "first=true) %}{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.first %}{%- set "
               "ns.system = message['content'] %}{%- set ns.first = false %}{%- else %}{%- set ns.system = ns.system + "
               "'\\n\\n' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{- ns.system }}{%- for message in "
               "messages %}{%- if message['role'] == 'user' %}{{- '<\xef\xbd\x9cUser\xef\xbd\x9c>' + message['content'] }}{%- elif "
               "message['role'] == 'assistant' %}{%- set content = message['content'] %}{%- if '</think>' in content %}{%- "
               "set content = content.split('</think>')[-1] %}{%- endif %}{{- '<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>' + content + "
               "'<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- "
               "'<\xef\xbd\x9c" "Assistant\xef\xbd\x9c><think>\\n' }}{%- endif %}";
    return NULL;
}

void hd_source_free(hd_source *s) {
    if (!s) return;
    free(s->tokenizer);
    free(s->tokenizer_config);
    free(s->template_name);
    free(s->generation_config);
    json_decref(s->sampling);
    *s = (hd_source){0};
}

/* path joined to name when that file exists; NULL otherwise (or on ENOMEM: *oom set). */
static char *file_in(const char *dir, const char *name, int *oom) {
    char *p = rt_path_join(dir, name);
    if (!p) *oom = 1;
    if (p && !rt_is_file(p)) {
        free(p);
        p = NULL;
    }
    return p;
}

/* The directory part of path (owned). */
static char *dir_of(const char *path) {
    char *c = rt_strdup(path), *d = c ? rt_strdup(dirname(c)) : NULL;
    free(c);
    return d;
}

int hd_source_from(const char *model_dir, const char *data, const char *tokenizer, hd_source *s) {
    *s = (hd_source){0};
    int oom = 0;
    char *tok_dir = NULL;
    if (model_dir && rt_is_dir(model_dir)) {
        s->generation_config = file_in(model_dir, "generation_config.json", &oom);
        if (!tokenizer && (s->tokenizer = file_in(model_dir, "tokenizer.json", &oom))) tok_dir = rt_strdup(model_dir);
    }
    if (data) {   /* what `retort pack` recorded: the tokenizer and template the shards were made with */
        char *ddir = rt_is_dir(data) ? rt_strdup(data) : dir_of(data), *idx = ddir ? file_in(ddir, "index.json", &oom) : NULL;
        json_t *j = NULL;
        if (idx && !rt_json_load_file(idx, &j)) {
            const char *t = json_string_value(json_object_get(j, "template"));
            const char *k = json_string_value(json_object_get(j, "tokenizer"));
            if (t && !(s->template_name = rt_strdup(t))) oom = 1;
            json_t *g = json_object_get(j, "generation_config");
            if (json_is_object(g) && json_object_size(g)) s->sampling = json_incref(g);
            if (!s->tokenizer && !tokenizer && k && rt_is_file(k)) {
                s->tokenizer = rt_strdup(k);
                tok_dir = dir_of(k);
            }
        }
        rt_errclear();   /* an index that does not parse: the shard reader says so, not this */
        json_decref(j);
        free(idx);
        free(ddir);
    }
    if (tokenizer) {
        s->tokenizer = rt_strdup(tokenizer);
        tok_dir = dir_of(tokenizer);
    }
    if (tok_dir) s->tokenizer_config = file_in(tok_dir, "tokenizer_config.json", &oom);
    if (oom || (tokenizer && !s->tokenizer)) {
        free(tok_dir);
        hd_source_free(s);
        return RT_ENOMEM;
    }
    free(tok_dir);
    return 0;
}

static int write_json(const char *dir, const char *name, const json_t *j) {
    char *path = rt_path_join(dir, name), *txt = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    int rc = (!path || !txt) ? rt_fail(RT_ENOMEM, "serializing %s", name) : 0;
    if (!rc) rc = rt_atomic_write_text(path, txt);
    free(txt);
    free(path);
    return rc;
}

static int copy_file(const char *src, const char *dir, const char *name) {
    char *buf = NULL, *path = rt_path_join(dir, name);
    size_t len = 0;
    int rc = path ? rt_read_file(src, &buf, &len) : RT_ENOMEM;
    rt_atomic_file *af = NULL;
    if (!rc && !(rc = rt_atomic_open(path, &af))) {
        rc = rt_atomic_write(af, buf, len);
        if (rc) rt_atomic_abort(af);
        else rc = rt_atomic_commit(af);
    }
    free(buf);
    free(path);
    return rc;
}

/* A special token's text: tokenizer_config.json holds a string or {"content": …}. */
static const char *token_text(const json_t *v) {
    if (json_is_string(v)) return json_string_value(v);
    return json_string_value(json_object_get(v, "content"));
}

static void add_id(json_t *ids, json_int_t id) {
    if (id < 0) return;
    size_t i;
    json_t *x;
    json_array_foreach(ids, i, x) if (json_integer_value(x) == id) return;
    json_array_append_new(ids, json_integer(id));
}

int hd_write(const char *dir, const hd_source *s, const json_t *cfg) {
    tok_tokenizer *tok = NULL;
    json_t *tc = NULL, *gen = NULL, *map = NULL, *eos_ids = json_array();
    int rc = eos_ids ? 0 : RT_ENOMEM;
    const char *src_tok = s ? s->tokenizer : NULL;
    if (!rc && src_tok) rc = tok_load(src_tok, &tok);
    if (!rc && src_tok && s->tokenizer_config) rc = rt_json_load_file(s->tokenizer_config, &tc);
    if (!rc && src_tok && !tc) {
        tc = json_pack("{s:s,s:b,s:b}", "tokenizer_class", "PreTrainedTokenizerFast", "add_bos_token", 0,
                       "clean_up_tokenization_spaces", 0);
        if (!tc) rc = RT_ENOMEM;
    }
    if (!rc && tc && !json_is_object(tc)) rc = rt_fail(RT_EFORMAT, "%s: not a JSON object", s->tokenizer_config);
    const char *eot = s ? hd_end_of_turn(s->template_name) : NULL;
    if (eot && tok && tok_token_to_id(tok, eot) < 0) eot = NULL;   /* a tokenizer without the template's marker */
    const char *jt = s ? builtin_jinja(s->template_name) : NULL;
    if (!rc && tc && !json_is_string(json_object_get(tc, "chat_template")) && jt)
        json_object_set_new(tc, "chat_template", json_string(jt));   /* the template the data was rendered with */
    if (!rc && tc) {   /* special tokens the config leaves out */
        if (!token_text(json_object_get(tc, "eos_token")) && eot) json_object_set_new(tc, "eos_token", json_string(eot));
        if (!token_text(json_object_get(tc, "pad_token")) && token_text(json_object_get(tc, "eos_token")))
            json_object_set(tc, "pad_token", json_object_get(tc, "eos_token"));
        if (!json_object_get(tc, "model_max_length")) {
            json_int_t mp = json_integer_value(json_object_get(cfg, "max_position_embeddings"));
            if (mp > 0) json_object_set_new(tc, "model_max_length", json_integer(mp));
        }
        map = json_object();
        static const char *keys[] = {"bos_token", "eos_token", "pad_token", "unk_token"};
        for (size_t i = 0; map && i < sizeof keys / sizeof *keys; i++) {
            const char *t = token_text(json_object_get(tc, keys[i]));
            if (t) json_object_set_new(map, keys[i], json_string(t));
        }
        if (!map) rc = RT_ENOMEM;
    }
    /* generation_config.json: the source's defaults, then the ids */
    if (!rc && s && s->generation_config) rc = rt_json_load_file(s->generation_config, &gen);
    if (!rc && gen && !json_is_object(gen)) rc = rt_fail(RT_EFORMAT, "%s: not a JSON object", s->generation_config);
    if (!rc && !gen && !(gen = json_object())) rc = RT_ENOMEM;
    if (!rc && s && s->sampling) {   /* the teacher's sampling replaces the start model's */
        static const char *keys[] = {"do_sample", "temperature", "top_p", "top_k", "min_p"};
        for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) json_object_del(gen, keys[i]);
        if (json_object_update(gen, s->sampling)) rc = RT_ENOMEM;
    }
    if (!rc) {
        const json_t *ce = json_object_get(cfg, "eos_token_id"), *x;
        size_t i;
        if (json_is_integer(ce)) add_id(eos_ids, json_integer_value(ce));
        else json_array_foreach(ce, i, x) add_id(eos_ids, json_integer_value(x));
        if (tok && tc) add_id(eos_ids, tok_token_to_id(tok, token_text(json_object_get(tc, "eos_token")) ?
                                                                token_text(json_object_get(tc, "eos_token")) : ""));
        if (tok && eot) add_id(eos_ids, tok_token_to_id(tok, eot));
        json_int_t bos = json_is_integer(json_object_get(cfg, "bos_token_id")) ?
                         json_integer_value(json_object_get(cfg, "bos_token_id")) : -1;
        const char *bt = tc ? token_text(json_object_get(tc, "bos_token")) : NULL;
        if (bt && tok && tok_token_to_id(tok, bt) >= 0) bos = tok_token_to_id(tok, bt);
        if (bos >= 0) json_object_set_new(gen, "bos_token_id", json_integer(bos));
        size_t n = json_array_size(eos_ids);
        if (n == 1) json_object_set(gen, "eos_token_id", json_array_get(eos_ids, 0));
        else if (n > 1) json_object_set(gen, "eos_token_id", eos_ids);
        if (json_is_number(json_object_get(gen, "temperature")) && !json_object_get(gen, "do_sample"))
            json_object_set_new(gen, "do_sample", json_true());
    }
    if (!rc) rc = write_json(dir, "generation_config.json", gen);
    if (!rc && tok) rc = copy_file(src_tok, dir, "tokenizer.json");
    if (!rc && tc) rc = write_json(dir, "tokenizer_config.json", tc);
    if (!rc && map) rc = write_json(dir, "special_tokens_map.json", map);
    tok_free(tok);
    json_decref(tc);
    json_decref(gen);
    json_decref(map);
    json_decref(eos_ids);
    return rc ? rt_errorf(rc, "writing the tokenizer and generation files of %s", dir) : 0;
}
