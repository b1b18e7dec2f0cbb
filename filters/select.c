/* filters/select.c — fp_select(): per-prompt selection into a named snapshot (contract in
 * pipeline.h). */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/alloc.h"
#include "core/status.h"
#include "dataset/verdicts.h"
#include "filters/pipeline.h"

static const char *const policy_names[] = {"shortest", "longest", "random", "all"};

int fp_policy_parse(const char *name, fp_policy *out) {
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, policy_names[i])) { *out = (fp_policy)i; return 0; }
    return rt_fail(RT_EINVAL, "unknown policy '%s' (shortest, longest, random, all)", name);
}

typedef struct {
    int64_t id, prompt;
    int64_t bytes;
    uint64_t key;      /* seeded random order */
    int source;        /* index into the source names */
    bool keep;
} cand;

static uint64_t rand_key(uint64_t seed, int64_t id) {
    uint64_t v[2] = {seed, (uint64_t)id};
    return XXH64(v, sizeof v, 0x5e1ec7);
}

/* The policy is folded into each candidate's key, so one comparison serves them all. */
static int by_prompt_then_order(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    if (a->prompt != b->prompt) return a->prompt < b->prompt ? -1 : 1;
    if (a->key != b->key) return a->key < b->key ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static int by_source_then_random(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    if (a->source != b->source) return a->source - b->source;
    return a->key < b->key ? -1 : a->key > b->key ? 1 : (a->id < b->id ? -1 : a->id > b->id);
}

static int by_id(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    return a->id < b->id ? -1 : a->id > b->id;
}

static int snapshot_config(db_conn *db, const fp_select_opts *o, char **out) {
    json_t *filters = json_array(), *runs = json_array();
    json_t *j = json_pack("{s:{s:I,s:s,s:I,s:b},s:o,s:o}", "selection", "per_prompt", (json_int_t)o->per_prompt, "policy",
                          policy_names[o->policy], "seed", (json_int_t)o->seed, "balance_sources", o->balance_sources,
                          "filters_required", filters, "filter_runs", runs);
    if (!j) return rt_fail(RT_ENOMEM, "snapshot configuration");
    int rc = db_filter_history(db, filters, runs);
    if (rc) { json_decref(j); return rc; }
    *out = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return *out ? 0 : rt_fail(RT_ENOMEM, "snapshot configuration");
}

/* The candidates as the database lists them, each with its policy key. */
typedef struct {
    const fp_select_opts *o;
    cand *cs;
    size_t n, cap;
    char **sources;
    size_t n_src, cap_src;
} cand_list;

static int add_cand(void *ud, const db_eligible_row *r) {
    cand_list *l = ud;
    const fp_select_opts *o = l->o;
    if (rt_grow((void **)&l->cs, &l->cap, l->n + 1, sizeof *l->cs)) return RT_ENOMEM;
    cand *c = &l->cs[l->n++];
    c->id = r->id;
    c->prompt = r->prompt_id;
    c->bytes = r->text_bytes;
    const char *src = r->source;
    int k = 0;
    while ((size_t)k < l->n_src && strcmp(l->sources[k], src ? src : "")) k++;
    if ((size_t)k == l->n_src) {
        if (rt_grow((void **)&l->sources, &l->cap_src, l->n_src + 1, sizeof *l->sources) ||
            !(l->sources[l->n_src] = rt_strdup(src ? src : "")))
            return RT_ENOMEM;
        l->n_src++;
    }
    c->source = k;
    c->keep = false;
    /* the order within a prompt: smaller key first */
    switch (o->policy) {
    case FP_POLICY_SHORTEST: c->key = (uint64_t)c->bytes; break;
    case FP_POLICY_LONGEST: c->key = UINT64_MAX - (uint64_t)c->bytes; break;
    case FP_POLICY_RANDOM: c->key = rand_key(o->seed, c->id); break;
    case FP_POLICY_ALL: c->key = 0; break;
    }
    return 0;
}

int fp_select(db_conn *db, const fp_select_opts *o, fp_select_report *rep) {
    memset(rep, 0, sizeof *rep);
    if (o->per_prompt < 1 && o->policy != FP_POLICY_ALL) return rt_fail(RT_EINVAL, "per-prompt must be ≥ 1");
    int64_t sid;
    int rc = db_snapshot_find(db, o->snapshot, &sid);
    if (!rc) return rt_fail(RT_EINVAL, "snapshot '%s' already exists (snapshots are frozen: choose another name)", o->snapshot);
    if (rc != RT_ENOTFOUND) return rc;
    rt_errclear();
    rc = 0;
    bool any;
    if ((rc = db_verdicts_any(db, &any))) return rc;
    if (!any) return rt_fail(RT_EINVAL, "no verdicts in the database: run `retort filter` first");

    cand_list l = {.o = o};
    rc = db_eligible_samples(db, add_cand, &l);
    cand *cs = l.cs;
    size_t n = l.n;
    char **sources = l.sources;
    size_t n_src = l.n_src;
    if (!rc) {
        rep->eligible = n;
        if (n) qsort(cs, n, sizeof *cs, by_prompt_then_order);
        int64_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (i == 0 || cs[i].prompt != cs[i - 1].prompt) { k = 0; rep->prompts++; }
            cs[i].keep = o->policy == FP_POLICY_ALL || k < o->per_prompt;
            k++;
        }
        if (o->balance_sources && n_src > 1) {
            size_t *cnt = rt_calloc(n_src, sizeof *cnt);
            if (!cnt) rc = RT_ENOMEM;
            for (size_t i = 0; !rc && i < n; i++) cnt[cs[i].source] += cs[i].keep;
            size_t lim = SIZE_MAX;
            for (size_t k2 = 0; !rc && k2 < n_src; k2++)
                if (cnt[k2] && cnt[k2] < lim) lim = cnt[k2];
            if (!rc) {
                for (size_t i = 0; i < n; i++) cs[i].key = rand_key(o->seed ^ 0xba1a9ceULL, cs[i].id);
                qsort(cs, n, sizeof *cs, by_source_then_random);
                memset(cnt, 0, n_src * sizeof *cnt);
                for (size_t i = 0; i < n; i++) {
                    if (!cs[i].keep) continue;
                    if (cnt[cs[i].source] >= lim) { cs[i].keep = false; rep->balanced_out++; }
                    else cnt[cs[i].source]++;
                }
            }
            free(cnt);
        }
    }
    int64_t *ids = NULL;
    if (!rc) {
        if (n) qsort(cs, n, sizeof *cs, by_id);
        ids = rt_malloc((n ? n : 1) * sizeof *ids);
        if (!ids) rc = RT_ENOMEM;
        for (size_t i = 0; !rc && i < n; i++)
            if (cs[i].keep) ids[rep->selected++] = cs[i].id;
    }
    char *cfg = NULL;
    if (!rc) rc = snapshot_config(db, o, &cfg);
    if (!rc) rc = db_snapshot_create(db, o->snapshot, cfg, ids, rep->selected, &rep->snapshot_id);
    free(cfg);
    free(ids);
    free(cs);
    for (size_t i = 0; i < n_src; i++) free(sources[i]);
    free(sources);
    return rc;
}
