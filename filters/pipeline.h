/* filters/pipeline.h — the filter stage over the run database: `retort filter` and
 * `retort select`.
 *
 * fp_run() scores every sample that lacks a verdict for one of the enabled filters and
 * writes one verdict row (pass, score, reason) per sample per filter:
 *
 *   verify       the answer part of the sample (after the thinking block, else the whole
 *                text) against the prompt's gold answer (filters/verify.h). A sample whose
 *                prompt has no gold gets no verify verdict (counted in fp_report.no_gold).
 *   format, language, readability, repetition, length
 *                filters/flt.h on the sample, with the prompt's user turns as the prompt and
 *                the prompt's metadata "task": "code" (or "code_task": true) as a code task
 *   decontam     the prompt's user turns, then the sample, against an n-gram index of
 *                benchmark questions and answers (filters/decontam.h); fails naming the
 *                benchmark, the document and the shared n-gram
 *   dedup        exact and MinHash near-duplicate clusters (filters/minhash.h) over the
 *                samples without a dedup verdict together with the representatives kept
 *                by earlier runs; per cluster one representative is kept (an earlier
 *                representative if the cluster has one, else a member that failed no other
 *                filter if there is one, then by policy: first = lowest sample id,
 *                shortest, longest text); every new sample gets a clusters row
 *                (method "minhash" or "exact", cluster = the representative's sample id)
 *                and a verdict, failing ones naming the representative; reasons and scores
 *                name the whole cluster (members from earlier runs included: when new
 *                samples join a cluster, the earlier members' verdicts are updated to its
 *                new size)
 *
 * Resumable: per-sample filters are computed on the thread pool in batches of
 * c->batch samples and each batch is written in one transaction, so a killed run loses at
 * most the open batch and a rerun scores only what has no verdict — nothing is scored
 * twice. Dedup runs after them and writes all its rows in one transaction, so a run killed
 * there leaves no dedup rows and the rerun clusters those samples again (never a cluster
 * written in part). Each run is recorded in the filter_runs table with its resolved
 * configuration and the number of distinct samples it gave a verdict (scored).
 *
 * fp_select() builds a named snapshot: per prompt up to per_prompt samples that passed
 * every filter that was run (a filter counts as run when any sample has a verdict for it;
 * verify is not required of samples whose prompt has no gold) and are not a non-
 * representative member of a dedup cluster, chosen by policy; optionally balanced across
 * sources. The snapshot's filter_config holds the selection options, the filters required
 * and the configurations of the filter runs.
 *
 * Ownership: fp_config strings point into its json (the resolved configuration), released
 * by fp_config_free(). Errors: RT_EFORMAT (bad configuration: message names the key),
 * RT_EINVAL (existing snapshot name, nothing to select from), RT_ENOTFOUND (unknown
 * preset), the database's (dataset/db.h), RT_EIO, RT_ENOMEM.
 */
#ifndef RT_FILTERS_PIPELINE_H
#define RT_FILTERS_PIPELINE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/threadpool.h"
#include "dataset/db.h"
#include "filters/flt.h"
#include "filters/minhash.h"
#include "filters/verify.h"

/* In the order they are applied (and counted in the funnel of db_stats). */
typedef enum {
    FP_VERIFY, FP_FORMAT, FP_LANGUAGE, FP_READABILITY, FP_REPETITION, FP_LENGTH, FP_DECONTAM, FP_DEDUP, FP_COUNT
} fp_filter;

const char *fp_filter_name(fp_filter f);
int fp_filter_parse(const char *name, fp_filter *out); /* RT_EINVAL for an unknown name */

typedef enum { FP_KEEP_FIRST, FP_KEEP_SHORTEST, FP_KEEP_LONGEST } fp_keep;

#define FP_MAX_LIST 16

typedef struct {
    unsigned enabled;          /* bit (1u << fp_filter) */
    vf_opts verify;
    flt_config text;           /* .enabled is derived from enabled */
    mh_config dedup;
    fp_keep dedup_keep;
    int decontam_n;                               /* words (default 10) */
    const char *assets;                           /* NULL: $RETORT_ASSETS, else ../shared/assets */
    const char *benchmarks[FP_MAX_LIST];          /* names under ASSETS/benchmarks/NAME.jsonl */
    size_t n_benchmarks;
    const char *decontam_files[FP_MAX_LIST];      /* extra JSONL files */
    size_t n_decontam_files;
    const char *decontam_fields[FP_MAX_LIST];     /* 0 fields: decontam.h's defaults */
    size_t n_decontam_fields;
    size_t batch;                                 /* samples per transaction (default 512) */
    json_t *json;                                 /* the resolved configuration (owned) */
} fp_config;

/* Defaults: every filter, each with its module's defaults; decontam over gsm8k_test,
 * math500_test and aime24_test. */
int fp_config_default(fp_config *c);
/* A configuration document (from YAML or JSON): {"filters": [names], "verify": {…},
 * "format": {…}, …} — see docs/filters.md. Unknown keys are errors. what names the
 * source in messages. */
int fp_config_from_json(const json_t *doc, const char *what, fp_config *c);
/* A built-in preset ("r1"); RT_ENOTFOUND for another name. */
int fp_config_preset(const char *name, fp_config *c);
/* The YAML text of a built-in preset (NULL when unknown). */
const char *fp_preset_yaml(const char *name);
/* Command-line overrides applied after loading: assets directory, extra JSONL files, the
 * record fields indexed (RT_EINVAL past FP_MAX_LIST). */
int fp_config_set_assets(fp_config *c, const char *assets);
int fp_config_add_decontam_file(fp_config *c, const char *path);
int fp_config_add_decontam_field(fp_config *c, const char *field); /* the first replaces the defaults */
void fp_config_free(fp_config *c);
/* The resolved configuration as a new JSON object (every option, defaults included); the
 * form recorded in filter_runs and printed by `retort filter --print-config`. NULL on
 * ENOMEM. */
json_t *fp_config_to_json(const fp_config *c);

typedef struct {
    const char *stage;     /* "scoring", "dedup" */
    size_t done, total;    /* samples */
    size_t bytes;          /* text bytes scored so far */
} fp_progress;
/* Called on the calling thread: once with done = 0 when a stage starts, after every batch,
 * and with done = total when it ends. */
typedef void (*fp_progress_fn)(void *ud, const fp_progress *p);

typedef struct {
    size_t pending;                 /* samples with a per-sample filter to run */
    size_t scored;                  /* of those, scored by this run */
    size_t bytes;                   /* their text bytes */
    size_t written[FP_COUNT];       /* verdicts written, per filter */
    size_t failed[FP_COUNT];        /* of those, failing */
    size_t no_gold;                 /* samples whose prompt has no gold (no verify verdict) */
    bool decontam_skipped;          /* no benchmark could be loaded: no decontam verdicts */
    size_t bench_docs, bench_ngrams;
    char decontam_note[768];        /* what was indexed and what was missing */
    size_t dedup_new, dedup_clusters, dedup_removed;
    int64_t run_id;                 /* row in filter_runs */
} fp_report;

int fp_run(db_conn *db, const fp_config *c, tp_pool *pool, fp_progress_fn fn, void *ud, fp_report *rep);

typedef enum { FP_POLICY_SHORTEST, FP_POLICY_LONGEST, FP_POLICY_RANDOM, FP_POLICY_ALL } fp_policy;
int fp_policy_parse(const char *name, fp_policy *out); /* RT_EINVAL */

typedef struct {
    const char *snapshot;
    int64_t per_prompt;    /* ≥ 1; ignored by FP_POLICY_ALL */
    fp_policy policy;
    uint64_t seed;         /* random policy and balancing */
    bool balance_sources;  /* every source keeps at most as many samples as the smallest */
} fp_select_opts;

typedef struct {
    size_t eligible;       /* samples that passed every filter run */
    size_t prompts;        /* prompts with at least one eligible sample */
    size_t selected;       /* samples in the snapshot */
    size_t balanced_out;   /* dropped by source balancing */
    int64_t snapshot_id;
} fp_select_report;

int fp_select(db_conn *db, const fp_select_opts *o, fp_select_report *rep);

#endif
