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
#include "core/safetensors.h"
#include "core/status.h"
#include "core/tokenizer.h"
#include "kernels/convert.h"
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
    if (!rc) rc = rt_atomic_write_text(path, txt);
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

/* ---- the weights, streamed: the source's tensors as they are, the grown ones rebuilt ---- */

#define DROP_BYTES ((size_t)64 << 20)   /* mapped source pages are given back every 64 MB read */

/* One element of a float dtype as f64, and back (the mean row: F64 kept whole; F32, F16 and
 * BF16 through f32, as the old loaded path rounded it). */
static double elem_f64(rt_dtype dt, const unsigned char *p) {
    if (dt == RT_DT_F64) {
        double d;
        memcpy(&d, p, sizeof d);
        return d;
    }
    float f;
    cvt_to_f32(dt, p, &f, 1);
    return f;
}

static void put_elem(rt_dtype dt, double v, unsigned char *p) {
    float f = (float)v;
    uint16_t h;
    switch (dt) {
    case RT_DT_F64: memcpy(p, &v, sizeof v); break;
    case RT_DT_F32: memcpy(p, &f, sizeof f); break;
    case RT_DT_F16: h = f32_to_f16(f); memcpy(p, &h, sizeof h); break;
    default: h = f32_to_bf16(f); memcpy(p, &h, sizeof h); break;   /* BF16 */
    }
}

typedef struct {
    const st_file *f;
    const st_tensor **src;   /* [n] the source tensor of each output tensor */
    const bool *grown;       /* [n] embed_tokens / an untied lm_head given rows [V, V2) */
    int64_t V, V2;
    unsigned char *buf;      /* [V2 × D × element size] of the largest grown tensor */
    double *acc;             /* [D] */
    const st_tensor *prev;   /* source tensor whose pages are given back next */
} grow_src;

static void drop_prev(grow_src *g) {
    if (g->prev) st_drop(g->f, g->prev, 0, g->prev->nbytes);
    g->prev = NULL;
}

/* buf ← the source's V rows (bytes as stored), then V2 − V copies of their mean row. */
static int fill_grown(grow_src *g, const st_tensor *s) {
    int64_t D = s->shape[1];
    size_t es = rt_dtype_size(s->dtype), row = (size_t)D * es, done = 0;
    const unsigned char *p = s->data;
    for (int64_t c = 0; c < D; c++) g->acc[c] = 0;
    for (int64_t r = 0; r < g->V; r++) {
        for (int64_t c = 0; c < D; c++) g->acc[c] += elem_f64(s->dtype, p + (size_t)r * row + (size_t)c * es);
        if ((size_t)(r + 1) * row - done >= DROP_BYTES) {
            st_drop(g->f, s, done, (size_t)(r + 1) * row - done);
            done = (size_t)(r + 1) * row;
        }
    }
    st_drop(g->f, s, 0, s->nbytes);
    unsigned char *mean = g->buf + (size_t)g->V * row;
    for (int64_t c = 0; c < D; c++) put_elem(s->dtype, g->acc[c] / (double)g->V, mean + (size_t)c * es);
    for (int64_t r = g->V + 1; r < g->V2; r++) memcpy(g->buf + (size_t)r * row, mean, row);
    for (size_t o = 0; o < s->nbytes; o += DROP_BYTES) {
        size_t k = s->nbytes - o < DROP_BYTES ? s->nbytes - o : DROP_BYTES;
        memcpy(g->buf + o, p + o, k);
        st_drop(g->f, s, o, k);
    }
    return 0;
}

static int grow_get(void *ctx, size_t k, const void **data) {
    grow_src *g = ctx;
    drop_prev(g);   /* the tensor before this one is written by now */
    if (!g->grown[k]) {
        *data = g->src[k]->data;
        g->prev = g->src[k];
        return 0;
    }
    int rc = fill_grown(g, g->src[k]);
    *data = g->buf;
    return rc;
}

/* out's weights: m's tensors (in m's order) from f, each in its stored dtype and bit for bit,
 * but embed_tokens and an untied lm_head with V2 rows when V2 > m->V; sharded as
 * sm_save_sharded shards (st_write_sharded), at most max_shard_bytes a shard. */
static int write_weights(const sm_model *m, const st_file *f, int64_t V2, int64_t max_shard_bytes, const char *out) {
    if (max_shard_bytes <= 0) max_shard_bytes = SM_SHARD_BYTES;
    size_t n = m->n_tensors;
    st_wtensor *ts = rt_calloc(n, sizeof *ts);
    const st_tensor **src = rt_calloc(n, sizeof *src);
    bool *grown = rt_calloc(n, sizeof *grown);
    grow_src g = {f, src, grown, m->V, V2, NULL, NULL, NULL};
    int rc = (!ts || !src || !grown) ? RT_ENOMEM : 0;
    size_t big = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        const sm_tensor *t = &m->tensors[i];
        const st_tensor *s = src[i] = st_find(f, t->name);   /* there: sm_open checked the files */
        ts[i] = (st_wtensor){t->name, s->dtype, s->ndim, {0}, NULL};
        memcpy(ts[i].shape, s->shape, sizeof ts[i].shape);
        grown[i] = V2 > m->V && (t->offset == m->embed || t->offset == m->lm_head);
        if (grown[i]) {
            ts[i].shape[0] = V2;
            size_t b = (size_t)V2 * (size_t)s->shape[1] * rt_dtype_size(s->dtype);
            if (b > big) big = b;
        }
    }
    if (!rc && big && (!(g.buf = rt_malloc(big)) || !(g.acc = rt_malloc((size_t)m->D * sizeof *g.acc))))
        rc = rt_fail(RT_ENOMEM, "no memory for the grown embedding (%zu bytes)", big);
    json_t *meta = rc ? NULL : json_pack("{s:s}", "format", "pt");
    if (!rc && !meta) rc = RT_ENOMEM;
    if (!rc) rc = st_write_sharded(out, ts, n, max_shard_bytes, meta, grow_get, &g);
    drop_prev(&g);
    json_decref(meta);
    free(g.buf);
    free(g.acc);
    free(ts);
    free(src);
    free(grown);
    return rc;
}

int vb_resize(const char *dir, const vb_token *tokens, size_t n, const char *out, bool overwrite, int64_t max_shard_bytes,
              vb_report *rep) {
    *rep = (vb_report){.first_id = -1};
    char *tpath = rt_path_join(dir, "tokenizer.json"), *cpath = rt_path_join(dir, "tokenizer_config.json");
    char *gpath = rt_path_join(dir, "generation_config.json"), *otok = rt_path_join(out, "tokenizer.json");
    char *ocfg = rt_path_join(out, "tokenizer_config.json");
    json_t *tj = NULL, *tc = NULL, *cfg2 = NULL;
    tok_tokenizer *tok = NULL;
    sm_model *m = NULL;   /* lazy: the architecture and tensor list, checked against the files; no weights */
    st_file *f = NULL;
    int rc = (!tpath || !cpath || !gpath || !otok || !ocfg) ? RT_ENOMEM : 0;
    if (!rc && !rt_is_file(tpath)) rc = rt_fail(RT_ENOTFOUND, "%s has no tokenizer.json to add tokens to", dir);
    if (!rc) rc = tok_load(tpath, &tok);
    if (!rc) rc = rt_json_load_file(tpath, &tj);
    if (!rc && rt_is_file(cpath)) rc = rt_json_load_file(cpath, &tc);
    if (!rc) rc = sm_open(dir, &m);
    if (!rc && (rc = st_open(dir, &f))) rc = rt_errorf(rc, "loading %s", dir);
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
    if (!rc) {   /* a bigger vocabulary: the old rows, mean rows after them; every other tensor as it was */
        rep->old_vocab = rep->new_vocab = m->V;
        if (next > m->V) rep->new_vocab = next;
        cfg2 = json_deep_copy(m->config_json);
        rc = !cfg2 || json_object_set_new(cfg2, "vocab_size", json_integer(rep->new_vocab)) ? RT_ENOMEM : 0;
    }
    if (!rc) rc = write_weights(m, f, rep->new_vocab, max_shard_bytes, out);
    if (!rc) rc = write_json(out, "config.json", cfg2);
    if (!rc) rc = write_json(out, "tokenizer.json", tj);
    if (!rc && tc) rc = write_json(out, "tokenizer_config.json", tc);
    if (!rc) {
        hd_source s = {.tokenizer = otok, .tokenizer_config = tc ? ocfg : NULL,
                       .generation_config = rt_is_file(gpath) ? gpath : NULL};
        rc = hd_write(out, &s, cfg2);
    }
    tok_free(tok);
    json_decref(tj);
    json_decref(tc);
    json_decref(cfg2);
    sm_free(m);
    st_close(f);
    free(tpath);
    free(cpath);
    free(gpath);
    free(otok);
    free(ocfg);
    return rc ? rt_errorf(rc, "adding tokens to %s", dir) : 0;
}
