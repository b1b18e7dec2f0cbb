/* core/safetensors_shard.c — a model's weights as transformers shards them (see safetensors.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "core/safetensors.h"
#include "core/status.h"

typedef struct {   /* st_write_stream's callback for one shard: indices of the shard → of ts */
    int (*get)(void *ctx, size_t i, const void **data);
    void *ctx;
    size_t base;
} shard_src;

static int shard_get(void *ctx, size_t i, const void **data) {
    shard_src *s = ctx;
    return s->get(s->ctx, s->base + i, data);
}

static int64_t tensor_bytes(const st_wtensor *t) {
    int64_t n = (int64_t)rt_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

static int write_index(const char *dir, int64_t total, json_t *wmap) {
    json_t *idx = json_pack("{s:{s:I},s:O}", "metadata", "total_size", (json_int_t)total, "weight_map", wmap);
    char *txt = idx ? json_dumps(idx, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    char *path = rt_path_join(dir, "model.safetensors.index.json");
    int rc = (!txt || !path) ? rt_fail(RT_ENOMEM, "serializing the shard index") : 0;
    if (!rc) rc = rt_atomic_write_text(path, txt);
    json_decref(idx);
    free(txt);
    free(path);
    return rc;
}

int st_write_sharded(const char *dir, const st_wtensor *ts, size_t n, int64_t max_shard_bytes, const json_t *metadata,
                     int (*get)(void *ctx, size_t i, const void **data), void *ctx) {
    if (max_shard_bytes <= 0 || n == 0) return rt_fail(RT_EINVAL, "sharding %zu tensors at %lld bytes a shard", n, (long long)max_shard_bytes);
    size_t *first = calloc(n + 1, sizeof *first);   /* shard k: tensors [first[k], first[k+1]) */
    if (!first) return RT_ENOMEM;
    size_t nshards = 0;
    int64_t total = 0, cur = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t b = tensor_bytes(&ts[i]);   /* transformers' rule: a new shard when this one would pass the limit */
        if (i == 0 || (cur > 0 && cur + b > max_shard_bytes)) {
            first[nshards++] = i;
            cur = 0;
        }
        cur += b;
        total += b;
    }
    first[nshards] = n;
    json_t *wmap = nshards > 1 ? json_object() : NULL;
    int rc = nshards > 1 && !wmap ? RT_ENOMEM : 0;
    for (size_t k = 0; !rc && k < nshards; k++) {
        char name[64];
        if (nshards == 1) snprintf(name, sizeof name, "model.safetensors");
        else snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", k + 1, nshards);
        char *path = rt_path_join(dir, name);
        shard_src s = {get, ctx, first[k]};
        rc = path ? st_write_stream(path, ts + first[k], first[k + 1] - first[k], metadata, shard_get, &s) : RT_ENOMEM;
        free(path);
        for (size_t i = first[k]; !rc && wmap && i < first[k + 1]; i++)
            if (json_object_set_new(wmap, ts[i].name, json_string(name))) rc = RT_ENOMEM;
    }
    if (!rc && wmap) rc = write_index(dir, total, wmap);   /* model.safetensors.index.json, as transformers writes it */
    json_decref(wmap);
    free(first);
    return rc;
}
