/* student/data.c — shard directory reader with seeded per-epoch order. */
#include "student/data.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/shard.h"
#include "core/status.h"
#include "student/model.h"
#include "student/rng.h"

struct sd_data {
    shard_file **files;
    uint64_t *first;        /* [n_files + 1]: global index of each file's first sequence */
    int n_files;
    uint32_t seq_len, vocab;
    uint64_t n_seqs;
    uint64_t base;          /* sd_restrict: the view is sequences [base, base + n_seqs) of the files */
    uint64_t *perm;         /* order of the epoch perm_epoch (valid when has_perm) */
    uint64_t perm_seed, perm_epoch;
    int has_perm;
    uint8_t *mask;          /* [seq_len] scratch */
    uint32_t top_k, teacher_vocab;   /* 0 unless every shard has the same top-k */
    uint8_t *tn;            /* [seq_len] scratch, with top-k */
    int32_t *tid;           /* [seq_len·top_k] */
    float *tlp;             /* [seq_len·top_k] */
};

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int list_shards(const char *dir, char ***names, size_t *n) {
    DIR *dp = opendir(dir);
    if (!dp) return rt_fail(RT_EIO, "%s: cannot open the directory", dir);
    char **v = NULL;
    size_t cnt = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(dp))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".bin") || e->d_name[0] == '.') continue;
        if (rt_grow((void **)&v, &cap, cnt + 1, sizeof *v) || !(v[cnt] = rt_path_join(dir, e->d_name))) rc = RT_ENOMEM;
        else cnt++;
    }
    closedir(dp);
    if (!rc && cnt == 0) rc = rt_fail(RT_ENOTFOUND, "%s: no shard files (*.bin)", dir);
    if (rc) {
        for (size_t i = 0; i < cnt; i++) free(v[i]);
        free(v);
        return rc;
    }
    qsort(v, cnt, sizeof *v, cmp_str);
    *names = v;
    *n = cnt;
    return 0;
}

int sd_open(const char *path, sd_data **out) {
    *out = NULL;
    char **names = NULL;
    size_t n = 0;
    int rc = 0;
    if (rt_is_dir(path)) rc = list_shards(path, &names, &n);
    else if ((names = rt_malloc(sizeof *names)) && (names[0] = rt_strdup(path))) n = 1;
    else rc = RT_ENOMEM;
    if (rc) return rc;
    sd_data *d = rt_calloc(1, sizeof *d);
    if (d) d->files = rt_calloc(n, sizeof *d->files);
    if (d) d->first = rt_calloc(n + 1, sizeof *d->first);
    if (!d || !d->files || !d->first) rc = RT_ENOMEM;
    for (size_t i = 0; i < n && !rc; i++) {
        if ((rc = shard_open(names[i], &d->files[i]))) break;
        d->n_files++;
        const shard_info *in = shard_get_info(d->files[i]);
        if (i == 0) {
            d->seq_len = in->seq_len;
            d->vocab = in->vocab_size;
            d->top_k = in->top_k;
            d->teacher_vocab = in->teacher_vocab;
        } else if (in->top_k != d->top_k || in->teacher_vocab != d->teacher_vocab) {
            d->top_k = d->teacher_vocab = 0;
        }
        if (i > 0 && (in->seq_len != d->seq_len || in->vocab_size != d->vocab)) if (in->seq_len != d->seq_len || in->vocab_size != d->vocab) {
            rc = rt_fail(RT_EFORMAT, "%s: sequence length %u and vocabulary %u, but %s has %u and %u", names[i],
                         in->seq_len, in->vocab_size, names[0], d->seq_len, d->vocab);
        }
        d->first[i + 1] = d->first[i] + in->n_seqs;
    }
    if (!rc) {
        d->n_seqs = d->first[n];
        if (d->n_seqs == 0) rc = rt_fail(RT_EFORMAT, "%s: the shards hold no sequences", path);
    }
    if (!rc && !(d->mask = rt_malloc(d->seq_len))) rc = RT_ENOMEM;
    if (!rc && d->top_k &&
        (!(d->tn = rt_malloc(d->seq_len)) || !(d->tid = rt_malloc((size_t)d->seq_len * d->top_k * sizeof(int32_t))) ||
         !(d->tlp = rt_malloc((size_t)d->seq_len * d->top_k * sizeof(float)))))
        rc = RT_ENOMEM;
    if (!rc && !(d->perm = rt_malloc(d->n_seqs * sizeof *d->perm))) rc = RT_ENOMEM;
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    if (rc) { sd_close(d); return rt_errorf(rc, "training data %s", path); }
    *out = d;
    return 0;
}

void sd_close(sd_data *d) {
    if (!d) return;
    for (int i = 0; i < d->n_files; i++) shard_close(d->files[i]);
    free(d->files);
    free(d->first);
    free(d->perm);
    free(d->mask);
    free(d->tn);
    free(d->tid);
    free(d->tlp);
    free(d);
}

int sd_restrict(sd_data *d, uint64_t first, uint64_t count) {
    if (count == 0 || first + count > d->base + d->n_seqs || first < d->base)
        return rt_fail(RT_EINVAL, "sequences [%llu, %llu) of data holding %llu", (unsigned long long)first,
                       (unsigned long long)(first + count), (unsigned long long)(d->base + d->n_seqs));
    d->base = first;
    d->n_seqs = count;
    d->has_perm = 0;
    return 0;
}

uint64_t sd_num_seqs(const sd_data *d) { return d->n_seqs; }
uint32_t sd_seq_len(const sd_data *d) { return d->seq_len; }
uint32_t sd_vocab_size(const sd_data *d) { return d->vocab; }
int sd_num_files(const sd_data *d) { return d->n_files; }
uint32_t sd_top_k(const sd_data *d) { return d->top_k; }
uint32_t sd_teacher_vocab(const sd_data *d) { return d->teacher_vocab; }

/* Fisher–Yates over 0..n−1 with an RNG seeded by (seed, epoch). */
static void make_perm(sd_data *d, uint64_t seed, uint64_t epoch) {
    if (d->has_perm && d->perm_seed == seed && d->perm_epoch == epoch) return;
    sr_rng r;
    sr_seed(&r, seed ^ (0xD1B54A32D192ED03ull * (epoch + 1)));
    for (uint64_t i = 0; i < d->n_seqs; i++) d->perm[i] = i;
    for (uint64_t i = d->n_seqs; i > 1; i--) {
        uint64_t j = sr_below(&r, i), t = d->perm[i - 1];
        d->perm[i - 1] = d->perm[j];
        d->perm[j] = t;
    }
    d->perm_seed = seed;
    d->perm_epoch = epoch;
    d->has_perm = 1;
}

void sd_skip(const sd_data *d, sd_position *p, uint64_t k) {
    uint64_t n = d->n_seqs;   /* ≥ 1: sd_open and sd_restrict refuse an empty view */
    while (k > 0) {
        if (p->cursor >= n) {
            p->epoch++;
            p->cursor = 0;
        }
        uint64_t take = k < n - p->cursor ? k : n - p->cursor;
        p->cursor += take;
        k -= take;
    }
}

int sd_read(sd_data *d, sd_position *p, int64_t n_seq, int32_t *tokens, int32_t *doc_start, int32_t *pos,
            int32_t *target, int64_t *n_targets) {
    return sd_read_kd(d, p, n_seq, tokens, doc_start, pos, target, n_targets, NULL, NULL, NULL);
}

int sd_read_kd(sd_data *d, sd_position *p, int64_t n_seq, int32_t *tokens, int32_t *doc_start, int32_t *pos,
               int32_t *target, int64_t *n_targets, uint8_t *top_n, int32_t *top_ids, float *top_lps) {
    int64_t N = d->seq_len, total = 0, K = d->top_k;
    for (int64_t s = 0; s < n_seq; s++) {
        if (p->cursor >= d->n_seqs) {
            p->epoch++;
            p->cursor = 0;
        }
        make_perm(d, p->seed, p->epoch);
        uint64_t g = d->base + d->perm[p->cursor++];
        int f = 0;
        while (g >= d->first[f + 1]) f++;
        uint64_t local = g - d->first[f];
        shard_read_seq(d->files[f], local, tokens + s * N, d->mask);
        size_t nd;
        const shard_doc *docs = shard_seq_docs(d->files[f], local, &nd);
        total += sm_batch_targets(tokens + s * N, d->mask, 1, N, &docs, &nd, doc_start + s * N, pos + s * N,
                                  target + s * N);
        for (int64_t t = 0; t < N; t++) doc_start[s * N + t] += (int32_t)(s * N);
        if (!top_n) continue;
        memset(top_n + s * N, 0, (size_t)N);
        if (!K) continue;
        shard_read_topk(d->files[f], local, d->tn, d->tid, d->tlp);
        for (int64_t t = 0; t + 1 < N; t++) {   /* row t predicts token t + 1 */
            if (target[s * N + t] < 0 || !d->tn[t + 1]) continue;
            top_n[s * N + t] = d->tn[t + 1];
            memcpy(top_ids + (s * N + t) * K, d->tid + (t + 1) * K, (size_t)K * sizeof(int32_t));
            memcpy(top_lps + (s * N + t) * K, d->tlp + (t + 1) * K, (size_t)K * sizeof(float));
        }
    }
    *n_targets = total;
    return 0;
}
