/* student/vocab.c — new special tokens and the embedding rows for them (see vocab.h). */
#include "student/vocab.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/json.h"
#include "core/status.h"
#include "core/tokenizer.h"
#include "student/hfdir.h"
#include "student/model.h"

#define BOS_R1 "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define EOS_R1 "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"

int vb_template_tokens(const char *name, const vb_token **out, size_t *n) {
    static const vb_token r1[] = {{BOS_R1, true}, {EOS_R1, true}, {"<\xef\xbd\x9cUser\xef\xbd\x9c>", true},
                                  {"<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>", true}, {"<think>", false}, {"</think>", false}};
    static const vb_token qwen[] = {{"<|im_start|>", true}, {"<|im_end|>", true}};
    static const vb_token llama[] = {{"<|begin_of_text|>", true}, {"<|start_header_id|>", true},
                                     {"<|end_header_id|>", true}, {"<|eot_id|>", true}};
    if (!strcmp(name, "deepseek-r1")) *out = r1, *n = sizeof r1 / sizeof *r1;
    else if (!strcmp(name, "qwen")) *out = qwen, *n = sizeof qwen / sizeof *qwen;
    else if (!strcmp(name, "llama3")) *out = llama, *n = sizeof llama / sizeof *llama;
    else return rt_fail(RT_EINVAL, "unknown template '%s' (deepseek-r1, qwen, llama3)", name);
    return 0;
}

void vb_tokens_free(vb_token *t, size_t n) {
    for (size_t i = 0; t && i < n; i++) free((char *)t[i].text);
    free(t);
}

int vb_tokenizer_tokens(const char *path, vb_token **out, size_t *n) {
    *out = NULL;
    *n = 0;
    json_t *j;
    int rc = rt_json_load_file(path, &j);
    if (rc) return rc;
    const json_t *added = json_object_get(j, "added_tokens"), *x;
    vb_token *v = rt_calloc(json_array_size(added) + 1, sizeof *v);
    size_t i, k = 0;
    if (!v) rc = RT_ENOMEM;
    json_array_foreach(added, i, x) {
        const char *s = json_string_value(json_object_get(x, "content"));
        if (rc || !s || !json_is_true(json_object_get(x, "special"))) continue;
        if (!(v[k].text = rt_strdup(s))) rc = RT_ENOMEM;
        v[k++].special = true;
    }
    json_decref(j);
    if (rc) {
        vb_tokens_free(v, k);
        return rc;
    }
    *out = v;
    *n = k;
    return 0;
}

/* Largest token id of a tokenizer.json: its model's vocab and its added tokens. */
static int64_t max_id(const json_t *tj) {
    int64_t mx = -1;
    const char *key;
    const json_t *v;
    size_t i;
    json_object_foreach((json_t *)json_object_get(json_object_get(tj, "model"), "vocab"), key, v)
        if (json_integer_value(v) > mx) mx = json_integer_value(v);
    json_array_foreach(json_object_get(tj, "added_tokens"), i, v)
        if (json_integer_value(json_object_get(v, "id")) > mx) mx = json_integer_value(json_object_get(v, "id"));
    return mx;
}

static int write_json(const char *dir, const char *name, const json_t *j) {
    char *path = rt_path_join(dir, name), *txt = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    int rc = (!path || !txt) ? rt_fail(RT_ENOMEM, "serializing %s", name) : 0;
    rt_atomic_file *af = NULL;
    if (!rc && !(rc = rt_atomic_open(path, &af))) {
        rc = rt_atomic_write(af, txt, strlen(txt));
        if (!rc) rc = rt_atomic_write(af, "\n", 1);
        if (rc) rt_atomic_abort(af);
        else rc = rt_atomic_commit(af);
    }
    free(txt);
    free(path);
    return rc;
}

/* out: created, or an empty directory (overwrite: its files removed first). */
static int make_out(const char *out, bool overwrite) {
    if (!mkdir(out, 0755)) return 0;
    if (errno != EEXIST) return rt_fail(RT_EIO, "cannot create %s: %s", out, strerror(errno));
    DIR *d = opendir(out);
    if (!d) return rt_fail(RT_EINVAL, "%s exists and is not a directory", out);
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = rt_path_join(out, e->d_name);
        if (!p) rc = RT_ENOMEM;
        else if (!overwrite) rc = rt_fail(RT_EINVAL, "%s is not empty: give a new directory (or --overwrite)", out);
        else if (!rt_is_file(p)) rc = rt_fail(RT_EINVAL, "%s holds %s, which is not a file: not overwritten", out, e->d_name);
        else if (unlink(p)) rc = rt_fail(RT_EIO, "cannot remove %s: %s", p, strerror(errno));
        free(p);
    }
    closedir(d);
    return rc;
}

/* m2 (vocabulary V2 ≥ m's V) gets m's weights; rows [V, V2) of the embedding and the head are
 * the mean of their V old rows. */
static void copy_grown(const sm_model *m, sm_model *m2) {
    for (size_t i = 0; i < m2->n_tensors; i++) {
        const sm_tensor *t2 = &m2->tensors[i], *t = sm_find(m, t2->name);
        float *dst = m2->params + t2->offset;
        const float *src = m->params + t->offset;
        if (t->numel == t2->numel) {
            memcpy(dst, src, (size_t)t->numel * sizeof(float));
            continue;
        }
        int64_t V = t->shape[0], V2 = t2->shape[0], D = t->shape[1];   /* embed_tokens or lm_head: [V, D] */
        memcpy(dst, src, (size_t)(V * D) * sizeof(float));
        for (int64_t c = 0; c < D; c++) {
            double s = 0;
            for (int64_t r = 0; r < V; r++) s += src[r * D + c];
            for (int64_t r = V; r < V2; r++) dst[r * D + c] = (float)(s / (double)V);
        }
    }
}

int vb_resize(const char *dir, const vb_token *tokens, size_t n, const char *out, bool overwrite, vb_report *rep) {
    *rep = (vb_report){.first_id = -1};
    char *tpath = rt_path_join(dir, "tokenizer.json"), *cpath = rt_path_join(dir, "tokenizer_config.json");
    char *gpath = rt_path_join(dir, "generation_config.json"), *otok = rt_path_join(out, "tokenizer.json");
    char *ocfg = rt_path_join(out, "tokenizer_config.json");
    json_t *tj = NULL, *tc = NULL, *cfg2 = NULL;
    tok_tokenizer *tok = NULL;
    sm_model *m = NULL, *m2 = NULL;
    int rc = (!tpath || !cpath || !gpath || !otok || !ocfg) ? RT_ENOMEM : 0;
    if (!rc && !rt_is_file(tpath)) rc = rt_fail(RT_ENOTFOUND, "%s has no tokenizer.json to add tokens to", dir);
    if (!rc) rc = tok_load(tpath, &tok);
    if (!rc) rc = rt_json_load_file(tpath, &tj);
    if (!rc && rt_is_file(cpath)) rc = rt_json_load_file(cpath, &tc);
    if (!rc && !(rc = sm_load(dir, &m))) {   /* no gradients here: half the memory */
        free(m->grads);
        m->grads = NULL;
    }
    if (!rc) rc = make_out(out, overwrite);
    int64_t next = tj ? max_id(tj) + 1 : 0;
    json_t *added = tj ? json_object_get(tj, "added_tokens") : NULL;
    if (!rc && !json_is_array(added)) {
        added = json_array();
        if (json_object_set_new(tj, "added_tokens", added)) rc = RT_ENOMEM;
    }
    json_t *dec = tc ? json_object_get(tc, "added_tokens_decoder") : NULL;
    if (!rc && tc && !json_is_object(dec)) {
        dec = json_object();
        if (json_object_set_new(tc, "added_tokens_decoder", dec)) rc = RT_ENOMEM;
    }
    for (size_t i = 0; !rc && i < n; i++) {
        if (tok_token_to_id(tok, tokens[i].text) >= 0) continue;
        bool dup = false;   /* the same token twice in the list */
        for (size_t k = 0; k < i; k++) dup = dup || !strcmp(tokens[k].text, tokens[i].text);
        if (dup) continue;
        json_t *e = json_pack("{s:I,s:s,s:b,s:b,s:b,s:b,s:b}", "id", (json_int_t)next, "content", tokens[i].text,
                              "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", tokens[i].special);
        if (!e || json_array_append_new(added, e)) rc = RT_ENOMEM;
        if (!rc && dec) {
            char id[32];
            snprintf(id, sizeof id, "%lld", (long long)next);
            json_t *d = json_pack("{s:s,s:b,s:b,s:b,s:b,s:b}", "content", tokens[i].text, "lstrip", 0, "normalized", 0,
                                  "rstrip", 0, "single_word", 0, "special", tokens[i].special);
            if (!d || json_object_set_new(dec, id, d)) rc = RT_ENOMEM;
        }
        if (rep->first_id < 0) rep->first_id = next;
        next++;
        rep->added++;
    }
    if (!rc) {
        rep->old_vocab = rep->new_vocab = m->V;
        if (next > m->V) {   /* a bigger model: the old weights, mean rows after them */
            rep->new_vocab = next;
            cfg2 = json_deep_copy(m->config_json);
            rc = !cfg2 || json_object_set_new(cfg2, "vocab_size", json_integer(next)) ? RT_ENOMEM : 0;
            if (!rc) rc = sm_create_random(cfg2, 0, &m2);
            if (!rc) {
                free(m2->grads);
                m2->grads = NULL;
                copy_grown(m, m2);
            }
        }
    }
    const sm_model *w = m2 ? m2 : m;
    const char *td = w ? json_string_value(json_object_get(w->config_json, "torch_dtype")) : NULL;
    if (!td && w) td = json_string_value(json_object_get(w->config_json, "dtype"));
    rt_dtype dt = td && !strcmp(td, "bfloat16") ? RT_DT_BF16 : RT_DT_F32;
    if (!rc) rc = sm_save(w, out, dt);
    if (!rc) rc = write_json(out, "tokenizer.json", tj);
    if (!rc && tc) rc = write_json(out, "tokenizer_config.json", tc);
    if (!rc) {
        hd_source s = {.tokenizer = otok, .tokenizer_config = tc ? ocfg : NULL,
                       .generation_config = rt_is_file(gpath) ? gpath : NULL};
        rc = hd_write(out, &s, w->config_json);
    }
    tok_free(tok);
    json_decref(tj);
    json_decref(tc);
    json_decref(cfg2);
    sm_free(m);
    sm_free(m2);
    free(tpath);
    free(cpath);
    free(gpath);
    free(otok);
    free(ocfg);
    return rc ? rt_errorf(rc, "adding tokens to %s", dir) : 0;
}
