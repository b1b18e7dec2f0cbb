#include "core/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/json.h"
#include "core/status.h"

typedef struct {
    char *path;
    void *map;       /* NULL for st_open_buffer */
    size_t len;
    json_t *meta;    /* __metadata__, a new reference, or NULL */
} shard;

struct st_file {
    shard *shards;
    int nshards;
    st_tensor *t;
    size_t n, cap;
};

static int by_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

typedef struct { size_t begin, end; const char *name; } span;

static int by_begin(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int parse_u64(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* Parses and validates one header; appends its tensors to f with shard index si. */
static int parse_shard(st_file *f, int si, const uint8_t *base, size_t len, const char *what) {
    if (len == 0) return rt_fail(RT_EFORMAT, "%s: empty file", what);
    if (len < 8)
        return rt_fail(RT_EFORMAT, "%s: %zu bytes, too short for a safetensors header (8-byte length first)", what, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | base[i];
    if (hlen > ST_MAX_HEADER)
        return rt_fail(RT_EFORMAT, "%s: header length %llu exceeds the %llu-byte limit", what,
                       (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
    if (hlen > len - 8)
        return rt_fail(RT_EFORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)", what,
                       (unsigned long long)hlen, len);
    if (hlen < 2 || base[8] != '{')
        return rt_fail(RT_EFORMAT, "%s: header is not a JSON object", what);
    const uint8_t *data = base + 8 + hlen;
    size_t dlen = len - 8 - (size_t)hlen;

    json_t *h;
    char whatj[512];
    snprintf(whatj, sizeof whatj, "%s: header", what);
    if (rt_json_loadb((const char *)base + 8, (size_t)hlen, whatj, &h)) return RT_EFORMAT;
    int rc = 0;
    span *spans = NULL;
    size_t nspan = 0;
    if (!json_is_object(h)) { rc = rt_fail(RT_EFORMAT, "%s: header is not a JSON object", what); goto out; }
    spans = rt_calloc(json_object_size(h) + 1, sizeof *spans);
    if (!spans) { rc = RT_ENOMEM; goto out; }

    const char *key;
    json_t *v;
    json_object_foreach(h, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(v)) { rc = rt_fail(RT_EFORMAT, "%s: __metadata__ is not an object", what); goto out; }
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv) {
                if (!json_is_string(mv)) {
                    rc = rt_fail(RT_EFORMAT, "%s: __metadata__ value \"%s\" is not a string", what, mk);
                    goto out;
                }
            }
            f->shards[si].meta = json_incref(v);
            continue;
        }
        if (!key[0]) { rc = rt_fail(RT_EFORMAT, "%s: a tensor has an empty name", what); goto out; }
        if (!json_is_object(v)) { rc = rt_fail(RT_EFORMAT, "%s: tensor %s: entry is not an object", what, key); goto out; }
        const json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
                     *jo = json_object_get(v, "data_offsets");
        if (!json_is_string(jd)) { rc = rt_fail(RT_EFORMAT, "%s: tensor %s: missing dtype", what, key); goto out; }
        rt_dtype dt = rt_dtype_parse(json_string_value(jd));
        if (dt == RT_DT_INVALID) {
            rc = rt_fail(RT_EFORMAT, "%s: tensor %s: unknown dtype \"%s\"", what, key, json_string_value(jd));
            goto out;
        }
        if (!json_is_array(js)) { rc = rt_fail(RT_EFORMAT, "%s: tensor %s: missing shape", what, key); goto out; }
        if (json_array_size(js) > ST_MAX_DIMS) {
            rc = rt_fail(RT_EFORMAT, "%s: tensor %s: %zu dimensions (at most %d)", what, key, json_array_size(js), ST_MAX_DIMS);
            goto out;
        }
        if (!json_is_array(jo) || json_array_size(jo) != 2) {
            rc = rt_fail(RT_EFORMAT, "%s: tensor %s: data_offsets must be [begin, end]", what, key);
            goto out;
        }
        uint64_t b, e;
        if (parse_u64(json_array_get(jo, 0), &b) || parse_u64(json_array_get(jo, 1), &e) || b > e) {
            rc = rt_fail(RT_EFORMAT, "%s: tensor %s: data_offsets must be two integers 0 <= begin <= end", what, key);
            goto out;
        }
        st_tensor t = {0};
        t.dtype = dt;
        t.ndim = (int)json_array_size(js);
        t.shard = si;
        size_t nelem = 1;
        int overflow = 0;
        for (int d = 0; d < t.ndim; d++) {
            uint64_t s;
            if (parse_u64(json_array_get(js, (size_t)d), &s)) {
                rc = rt_fail(RT_EFORMAT, "%s: tensor %s: shape entries must be non-negative integers", what, key);
                goto out;
            }
            t.shape[d] = (int64_t)s;
            if (s > SIZE_MAX || !rt_mul_ok(nelem, (size_t)s, &nelem)) overflow = 1;
        }
        size_t nbytes = 0;
        if (overflow || !rt_mul_ok(nelem, rt_dtype_size(dt), &nbytes)) {
            rc = rt_fail(RT_EFORMAT, "%s: tensor %s: shape overflows", what, key);
            goto out;
        }
        if ((uint64_t)nbytes != e - b) {
            rc = rt_fail(RT_EFORMAT,
                         "%s: tensor %s: shape and dtype %s need %zu bytes, data_offsets [%llu, %llu] give %llu", what,
                         key, rt_dtype_name(dt), nbytes, (unsigned long long)b, (unsigned long long)e,
                         (unsigned long long)(e - b));
            goto out;
        }
        if (e > dlen) {
            rc = rt_fail(RT_EFORMAT, "%s: tensor %s: data_offsets [%llu, %llu] beyond the data section (%zu bytes)",
                         what, key, (unsigned long long)b, (unsigned long long)e, dlen);
            goto out;
        }
        t.nelem = nelem;
        t.nbytes = nbytes;
        t.data = data + b;
        t.name = rt_strdup(key);
        if (!t.name || rt_grow((void **)&f->t, &f->cap, f->n + 1, sizeof *f->t)) {
            free((void *)t.name);
            rc = RT_ENOMEM;
            goto out;
        }
        f->t[f->n++] = t;
        spans[nspan++] = (span){(size_t)b, (size_t)e, f->t[f->n - 1].name};
    }
    qsort(spans, nspan, sizeof *spans, by_begin);
    /* spans sorted by start: each non-empty one must start at or after the furthest end so far */
    size_t far = 0;
    const span *farspan = NULL;
    for (size_t i = 0; i < nspan; i++) {
        if (spans[i].begin == spans[i].end) continue;
        if (farspan && spans[i].begin < far) {
            rc = rt_fail(RT_EFORMAT, "%s: tensors %s and %s overlap (bytes %zu-%zu and %zu-%zu)", what,
                         farspan->name, spans[i].name, farspan->begin, farspan->end, spans[i].begin, spans[i].end);
            goto out;
        }
        if (spans[i].end > far) { far = spans[i].end; farspan = &spans[i]; }
    }
out:
    free(spans);
    json_decref(h);
    return rc;
}

static int add_shard(st_file *f, const char *path) {
    shard *s = rt_realloc(f->shards, ((size_t)f->nshards + 1) * sizeof *s);
    if (!s) return RT_ENOMEM;
    f->shards = s;
    s = &f->shards[f->nshards];
    memset(s, 0, sizeof *s);
    s->path = rt_strdup(path);
    if (!s->path) return RT_ENOMEM;
    f->nshards++;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return rt_fail(errno == ENOENT ? RT_ENOTFOUND : RT_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return rt_fail(RT_EIO, "%s: not a regular file", path);
    }
    s->len = (size_t)st.st_size;
    if (s->len > 0) {
        void *m = mmap(NULL, s->len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            return rt_fail(RT_EIO, "%s: mmap failed: %s", path, strerror(e));
        }
        s->map = m;
    }
    close(fd);
    return parse_shard(f, f->nshards - 1, s->map, s->len, path);
}

static int finish(st_file *f) {
    qsort(f->t, f->n, sizeof *f->t, by_name);
    for (size_t i = 1; i < f->n; i++) {
        if (!strcmp(f->t[i].name, f->t[i - 1].name))
            return rt_fail(RT_EFORMAT, "tensor %s appears in both %s and %s", f->t[i].name,
                           f->shards[f->t[i - 1].shard].path, f->shards[f->t[i].shard].path);
    }
    return 0;
}

static int open_index(st_file *f, const char *dir, const char *index_path) {
    json_t *idx;
    int rc = rt_json_load_file(index_path, &idx);
    if (rc) return rc;
    json_t *wm = json_object_get(idx, "weight_map");
    if (!json_is_object(wm)) {
        json_decref(idx);
        return rt_fail(RT_EFORMAT, "%s: no \"weight_map\" object", index_path);
    }
    /* shard file names in first-seen order */
    const char *key;
    json_t *v;
    json_t *files = json_array();
    json_t *seen = json_object();
    json_object_foreach(wm, key, v) {
        if (!json_is_string(v)) { rc = rt_fail(RT_EFORMAT, "%s: weight_map[\"%s\"] is not a string", index_path, key); goto out; }
        const char *fn = json_string_value(v);
        if (!fn[0] || strchr(fn, '/') || !strcmp(fn, "..")) {
            rc = rt_fail(RT_EFORMAT, "%s: tensor %s: shard \"%s\" is not a file in the model directory", index_path, key, fn);
            goto out;
        }
        if (!json_object_get(seen, fn)) {
            json_object_set_new(seen, fn, json_integer((json_int_t)json_array_size(files)));
            json_array_append_new(files, json_string(fn));
        }
    }
    if (json_array_size(files) == 0) { rc = rt_fail(RT_EFORMAT, "%s: weight_map is empty", index_path); goto out; }
    for (size_t i = 0; i < json_array_size(files); i++) {
        char *p = rt_path_join(dir, json_string_value(json_array_get(files, i)));
        if (!p) { rc = RT_ENOMEM; goto out; }
        rc = add_shard(f, p);
        free(p);
        if (rc) goto out;
    }
    if ((rc = finish(f))) goto out;
    json_object_foreach(wm, key, v) {
        const st_tensor *t = st_find(f, key);
        int want = (int)json_integer_value(json_object_get(seen, json_string_value(v)));
        if (!t || t->shard != want) {
            rc = rt_fail(RT_EFORMAT, "tensor %s: the index places it in %s, but it is not there", key,
                         json_string_value(v));
            goto out;
        }
    }
    for (size_t i = 0; i < f->n; i++) {
        if (!json_object_get(wm, f->t[i].name)) {
            rc = rt_fail(RT_EFORMAT, "tensor %s in %s is not listed in %s", f->t[i].name,
                         f->shards[f->t[i].shard].path, index_path);
            goto out;
        }
    }
out:
    json_decref(files);
    json_decref(seen);
    json_decref(idx);
    return rc;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int open_dir(st_file *f, const char *dir) {
    char *p = rt_path_join(dir, "model.safetensors.index.json");
    if (!p) return RT_ENOMEM;
    if (rt_is_file(p)) {
        int rc = open_index(f, dir, p);
        free(p);
        return rc;
    }
    free(p);
    /* like transformers: model.safetensors is the model when present (other files beside it,
     * e.g. optimizer state, are not part of it) */
    p = rt_path_join(dir, "model.safetensors");
    if (!p) return RT_ENOMEM;
    if (rt_is_file(p)) {
        int rc = add_shard(f, p);
        free(p);
        return rc ? rc : finish(f);
    }
    free(p);
    DIR *d = opendir(dir);
    if (!d) return rt_fail(RT_EIO, "%s: cannot open directory: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || !ends_with(de->d_name, ".safetensors")) continue;
        if (rt_grow((void **)&names, &cap, n + 1, sizeof *names) || !(names[n] = rt_strdup(de->d_name))) {
            rc = RT_ENOMEM;
            break;
        }
        n++;
    }
    closedir(d);
    if (!rc && n == 0) rc = rt_fail(RT_ENOTFOUND, "%s: no .safetensors files", dir);
    if (!rc) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; !rc && i < n; i++) {
        char *path = rt_path_join(dir, names[i]);
        rc = path ? add_shard(f, path) : RT_ENOMEM;
        free(path);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc ? rc : finish(f);
}

int st_open(const char *path, st_file **out) {
    *out = NULL;
    st_file *f = rt_calloc(1, sizeof *f);
    if (!f) return RT_ENOMEM;
    int rc = rt_is_dir(path) ? open_dir(f, path) : add_shard(f, path);
    if (!rc && !rt_is_dir(path)) rc = finish(f);
    if (rc) { st_close(f); return rc; }
    *out = f;
    return 0;
}

int st_open_buffer(const void *buf, size_t len, const char *what, st_file **out) {
    *out = NULL;
    st_file *f = rt_calloc(1, sizeof *f);
    if (!f) return RT_ENOMEM;
    f->shards = rt_calloc(1, sizeof *f->shards);
    int rc = RT_ENOMEM;
    if (f->shards && (f->shards[0].path = rt_strdup(what))) {
        f->nshards = 1;
        f->shards[0].len = len;
        rc = parse_shard(f, 0, buf, len, what);
        if (!rc) rc = finish(f);
    }
    if (rc) { st_close(f); return rc; }
    *out = f;
    return 0;
}

void st_close(st_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) free((void *)f->t[i].name);
    free(f->t);
    for (int i = 0; i < f->nshards; i++) {
        if (f->shards[i].map) munmap(f->shards[i].map, f->shards[i].len);
        json_decref(f->shards[i].meta);
        free(f->shards[i].path);
    }
    free(f->shards);
    free(f);
}

void st_drop(const st_file *f, const st_tensor *t, size_t off, size_t len) {
    const shard *s = &f->shards[t->shard];
    if (!s->map || off >= t->nbytes) return;
    if (len > t->nbytes - off) len = t->nbytes - off;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)t->data + off, b = a + len;
    a = (a + pg - 1) / pg * pg;
    b = b / pg * pg;
    if (a < b) madvise((void *)a, b - a, MADV_DONTNEED);   /* advice: a failure changes nothing */
}

size_t st_count(const st_file *f) { return f->n; }
const st_tensor *st_get(const st_file *f, size_t i) { return i < f->n ? &f->t[i] : NULL; }
int st_nshards(const st_file *f) { return f->nshards; }
const char *st_shard_path(const st_file *f, int i) { return (i >= 0 && i < f->nshards) ? f->shards[i].path : NULL; }
const json_t *st_metadata(const st_file *f, int i) { return (i >= 0 && i < f->nshards) ? f->shards[i].meta : NULL; }

const st_tensor *st_find(const st_file *f, const char *name) {
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->t[mid].name);
        if (!c) return &f->t[mid];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

int st_write(const char *path, const st_wtensor *ts, size_t n, const json_t *metadata) {
    return st_write_stream(path, ts, n, metadata, NULL, NULL);
}

int st_write_stream(const char *path, const st_wtensor *ts, size_t n, const json_t *metadata,
                    int (*get)(void *ctx, size_t i, const void **data), void *ctx) {
    json_t *h = json_object();
    if (!h) return rt_fail(RT_ENOMEM, "out of memory");
    int rc = 0;
    if (metadata) {
        const char *k;
        json_t *v;
        if (!json_is_object(metadata)) { rc = rt_fail(RT_EINVAL, "%s: metadata must be an object", path); goto out; }
        json_object_foreach((json_t *)metadata, k, v) {
            if (!json_is_string(v)) { rc = rt_fail(RT_EINVAL, "%s: metadata \"%s\" is not a string", path, k); goto out; }
        }
        json_object_set_new(h, "__metadata__", json_deep_copy(metadata));
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const st_wtensor *t = &ts[i];
        size_t es = rt_dtype_size(t->dtype), nel = 1;
        if (!t->name || !t->name[0] || !strcmp(t->name, "__metadata__"))
            { rc = rt_fail(RT_EINVAL, "%s: tensor %zu has an invalid name", path, i); goto out; }
        if (!es) { rc = rt_fail(RT_EINVAL, "%s: tensor %s: invalid dtype", path, t->name); goto out; }
        if (t->ndim < 0 || t->ndim > ST_MAX_DIMS) { rc = rt_fail(RT_EINVAL, "%s: tensor %s: bad rank %d", path, t->name, t->ndim); goto out; }
        if (json_object_get(h, t->name)) { rc = rt_fail(RT_EINVAL, "%s: tensor %s given twice", path, t->name); goto out; }
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0 || !rt_mul_ok(nel, (size_t)t->shape[d], &nel)) {
                json_decref(shape);
                rc = rt_fail(RT_EINVAL, "%s: tensor %s: bad shape", path, t->name);
                goto out;
            }
            json_array_append_new(shape, json_integer(t->shape[d]));
        }
        size_t nb = nel * es;
        json_t *e = json_object();
        json_object_set_new(e, "dtype", json_string(rt_dtype_name(t->dtype)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", json_pack("[II]", (json_int_t)off, (json_int_t)(off + nb)));
        json_object_set_new(h, t->name, e);
        off += nb;
    }
    char *hs = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!hs) { rc = rt_fail(RT_ENOMEM, "out of memory"); goto out; }
    size_t hl = strlen(hs), padded = (hl + 7) / 8 * 8;
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    rt_atomic_file *af;
    if ((rc = rt_atomic_open(path, &af))) { free(hs); goto out; }
    static const char spaces[8] = "        ";
    rc = rt_atomic_write(af, lenb, 8);
    if (!rc) rc = rt_atomic_write(af, hs, hl);
    if (!rc) rc = rt_atomic_write(af, spaces, padded - hl);
    free(hs);
    for (size_t i = 0; !rc && i < n; i++) {
        size_t nel = 1;
        for (int d = 0; d < ts[i].ndim; d++) nel *= (size_t)ts[i].shape[d];
        const void *data = ts[i].data;
        if (get) rc = get(ctx, i, &data);
        if (!rc) rc = rt_atomic_write(af, data, nel * rt_dtype_size(ts[i].dtype));
    }
    if (rc) rt_atomic_abort(af);
    else rc = rt_atomic_commit(af);
out:
    json_decref(h);
    return rc;
}
