/* student/outdir.c — where a training run starts, and the cleaning before it does. */
#include "student/outdir.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/json.h"
#include "core/status.h"

/* step-N → kind 0, step-N.partial and step-N.state.partial → 1, step-N.old and
 * step-N.state.old → 2 (what tr_save leaves when killed), step-N.state → 3 (the trainer
 * state beside model directory step-N); false for any other name. */
static bool step_entry(const char *name, int *kind) {
    if (strncmp(name, "step-", 5) || name[5] < '0' || name[5] > '9') return false;
    const char *e = name + 5;
    while (*e >= '0' && *e <= '9') e++;
    if (!*e) *kind = 0;
    else if (!strcmp(e, ".partial") || !strcmp(e, ".state.partial")) *kind = 1;
    else if (!strcmp(e, ".old") || !strcmp(e, ".state.old")) *kind = 2;
    else if (!strcmp(e, ".state")) *kind = 3;
    else return false;
    return true;
}

typedef struct {
    long long newest;        /* N of the newest complete checkpoint (step-N/config.json and
                              * step-N.state/trainer_state.json, or the older step-N/trainer_state.json); −1: none */
    char other[300];         /* the first step-N that is not one ("" when none) */
    char foreign[300];       /* the first entry that is neither a step-* nor the log ("" when none) */
} out_scan;

static void scan_out(const char *out, const char *log, out_scan *s) {
    *s = (out_scan){.newest = -1};
    DIR *d = opendir(out);
    if (!d) return;
    char *log_abs = log ? realpath(log, NULL) : NULL;
    struct dirent *e;
    int kind;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (!step_entry(e->d_name, &kind)) {
            char *sub = s->foreign[0] ? NULL : rt_path_join(out, e->d_name), *abs = sub ? realpath(sub, NULL) : NULL;
            if (sub && !(abs && log_abs && !strcmp(abs, log_abs))) snprintf(s->foreign, sizeof s->foreign, "%s", e->d_name);
            free(sub);
            free(abs);
            continue;
        }
        if (kind) continue;   /* .partial: removed at start; .old: tr_save's, removed by its next save; .state: read
                               * with its step-N */
        char *sub = rt_path_join(out, e->d_name), *sd = sub ? tr_state_dir(sub) : NULL;
        char *ts = sd ? rt_path_join(sd, "trainer_state.json") : NULL, *cf = sub ? rt_path_join(sub, "config.json") : NULL;
        long long n = strtoll(e->d_name + 5, NULL, 10);
        if (ts && rt_is_file(ts) && cf && rt_is_file(cf)) {
            if (n > s->newest) s->newest = n;
        } else if (!s->other[0]) {
            snprintf(s->other, sizeof s->other, "%s", e->d_name);
        }
        free(sub);
        free(sd);
        free(ts);
        free(cf);
    }
    free(log_abs);
    closedir(d);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* Removes the stale step-*.partial of --out (saves that were killed) and, with all, every
 * step-* entry (--overwrite). */
static int clean_out(const char *out, bool all) {
    DIR *d = opendir(out);
    if (!d) return 0;
    struct dirent *e;
    int rc = 0, kind;
    while (!rc && (e = readdir(d))) {
        if (!step_entry(e->d_name, &kind) || (!all && kind != 1)) continue;
        char *p = rt_path_join(out, e->d_name);
        if (!p) rc = RT_ENOMEM;
        else if (nftw(p, rm_one, 16, FTW_DEPTH | FTW_PHYS) && errno != ENOENT)
            rc = rt_fail(RT_EIO, "cannot remove %s: %s", p, strerror(errno));
        free(p);
    }
    closedir(d);
    return rc;
}

char *od_identity(const char *prefix, const char *path) {
    char *r = realpath(path, NULL);
    const char *p = r ? r : path;
    size_t n = strlen(prefix) + strlen(p) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%s", prefix, p);
    free(r);
    return s;
}

static int load_state(const char *ck, json_t **j) {
    char *sd = tr_state_dir(ck), *path = sd ? rt_path_join(sd, "trainer_state.json") : NULL;
    int rc = path ? rt_json_load_file(path, j) : RT_ENOMEM;
    free(sd);
    free(path);
    return rc;
}

/* What differs between the run that wrote checkpoint ck and this one (data, model, seed,
 * options that shape the schedule and the updates), into diff; "" when nothing. */
static void run_diff(const json_t *j, const tr_options *oo, char *diff, size_t n) {
    *diff = 0;
    const json_t *o = json_object_get(j, "options"), *run = json_object_get(j, "run");
    const char *d = json_string_value(json_object_get(run, "data")), *m = json_string_value(json_object_get(run, "model"));
    const char *seed = json_string_value(json_object_get(json_object_get(j, "data"), "seed"));
    char here[32];
    snprintf(here, sizeof here, "%llu", (unsigned long long)oo->seed);
    if (!json_is_object(run)) {
        snprintf(diff, n, "its trainer_state.json does not record its data and model");
        return;
    }
    if (oo->run_data && (!d || strcmp(d, oo->run_data))) {
        snprintf(diff, n, "data %s there, %s here", d ? d : "?", oo->run_data);
        return;
    }
    if (oo->run_model && (!m || strcmp(m, oo->run_model))) {
        snprintf(diff, n, "model %s there, %s here", m ? m : "?", oo->run_model);
        return;
    }
    if (!seed || strcmp(seed, here)) {
        snprintf(diff, n, "seed %s there, %s here", seed ? seed : "?", here);
        return;
    }
    const struct { const char *k; double v; } num[] = {
        {"batch", (double)oo->batch}, {"grad_accum", (double)oo->grad_accum}, {"steps", (double)oo->steps},
        {"lr", oo->lr}, {"min_lr_ratio", oo->min_lr_ratio}, {"warmup", (double)oo->warmup},
        {"weight_decay", oo->weight_decay}, {"clip", oo->clip}, {"beta1", oo->beta1}, {"beta2", oo->beta2},
        {"eps", oo->eps}};
    for (size_t i = 0; i < sizeof num / sizeof *num; i++) {
        const json_t *x = json_object_get(o, num[i].k);
        if (!json_is_number(x)) {
            snprintf(diff, n, "its options lack %s", num[i].k);
            return;
        }
        if (json_number_value(x) != num[i].v) {
            snprintf(diff, n, "%s %.10g there, %.10g here", num[i].k, json_number_value(x), num[i].v);
            return;
        }
    }
    static const char *sched[] = {"cosine", "linear", "constant"};
    const char *sc = json_string_value(json_object_get(o, "schedule"));
    if (!sc || strcmp(sc, sched[oo->schedule])) snprintf(diff, n, "schedule %s there, %s here", sc ? sc : "?", sched[oo->schedule]);
}

int od_choose(const od_request *r, char **start, bool *chosen) {
    *start = NULL;
    *chosen = false;
    if (r->resume && strcmp(r->resume, "auto")) return (*start = rt_strdup(r->resume)) ? 0 : RT_ENOMEM;
    if (r->overwrite) return 0;
    out_scan sc;
    scan_out(r->out, r->log, &sc);
    if (sc.newest >= 0) {
        char name[40];
        snprintf(name, sizeof name, "step-%lld", sc.newest);
        char *ck = rt_path_join(r->out, name);
        if (!ck) return RT_ENOMEM;
        json_t *j;
        int rc = load_state(ck, &j);
        if (rc) {
            free(ck);
            return rt_errorf(rc, "--resume auto");
        }
        char diff[1200];
        run_diff(j, r->o, diff, sizeof diff);
        json_decref(j);
        if (*diff) {
            rc = rt_fail(RT_EINVAL,
                         "%s holds another run's checkpoint %s (%s): give --overwrite to delete the checkpoints in %s, "
                         "--resume %s to continue that run anyway, or another --out",
                         r->out, name, diff, r->out, ck);
            free(ck);
            return rc;
        }
        *start = ck;
        *chosen = true;
        return 0;
    }
    if (sc.other[0])
        return rt_fail(RT_EINVAL,
                       "%s holds %s, which is not a checkpoint of retort train (no config.json, or no trainer_state.json in %s.state): give "
                       "--overwrite to delete the step-* entries of %s, or another --out",
                       r->out, sc.other, sc.other, r->out);
    if (!r->fresh_ok)
        return rt_fail(RT_ENOTFOUND, "--resume auto: %s holds no checkpoint, and neither --init nor --model says what "
                                     "to start from", r->out);
    if (sc.foreign[0])
        return rt_fail(RT_EINVAL,
                       "%s is not empty (it holds %s) and holds no checkpoint of this run: give a new or empty --out, "
                       "or --overwrite to start there anyway (it deletes only step-* checkpoints)",
                       r->out, sc.foreign);
    return 0;
}

char *od_state_model(const char *ck) {
    json_t *j;
    if (load_state(ck, &j)) {
        rt_errclear();
        return NULL;
    }
    const char *m = json_string_value(json_object_get(json_object_get(j, "run"), "model"));
    char *s = m ? rt_strdup(m) : NULL;
    json_decref(j);
    return s;
}

/* Keeps the lines of an existing log up to step `last` (what the checkpoint the run starts
 * from has done; 0 for a fresh start), so that the steps after it appear once. A line cut
 * short by a kill, or one that is not a step object, goes too. */
static int truncate_log(const char *path, int64_t last) {
    if (!rt_is_file(path)) return 0;
    char *buf = NULL;
    size_t len = 0;
    int rc = rt_read_file(path, &buf, &len);
    rt_atomic_file *af = NULL;
    if (!rc) rc = rt_atomic_open(path, &af);
    for (char *p = buf, *nl; !rc && p < buf + len && (nl = memchr(p, '\n', (size_t)(buf + len - p))); p = nl + 1) {
        json_t *j = json_loadb(p, (size_t)(nl - p), 0, NULL), *st = json_object_get(j, "step");
        if (json_is_integer(st) && json_integer_value(st) <= last) rc = rt_atomic_write(af, p, (size_t)(nl + 1 - p));
        json_decref(j);
    }
    if (af && rc) rt_atomic_abort(af);
    else if (af) rc = rt_atomic_commit(af);
    free(buf);
    return rc ? rt_errorf(rc, "rewriting log %s", path) : 0;
}

int od_prepare(const char *out, bool overwrite, const char *log, int64_t done) {
    if (mkdir(out, 0755) && errno != EEXIST) return rt_fail(RT_EIO, "cannot create %s: %s", out, strerror(errno));
    int rc = clean_out(out, overwrite);
    if (!rc && log) rc = truncate_log(log, done);
    return rc;
}
