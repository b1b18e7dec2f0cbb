/* cli/cmd_train.c — `retort train`: SFT of a dense student on packed shards. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/comm.h"
#include "core/fsutil.h"
#include "core/json.h"
#include "core/model_check.h"
#include "core/status.h"
#include "kernels/matmul.h"
#include "student/gpu_train.h"
#include "student/train.h"

typedef struct {
    const char *init, *model, *data, *out, *resume, *log;
    int64_t seq, save_every, threads, zero;
    double epochs;
    rt_dtype dtype;
    tr_options o;
    bool cuda;   /* --device cuda: student/gpu_train.h */
    bool overwrite;                 /* --overwrite: delete the step-* entries of --out first */
    const char *start;              /* the checkpoint the run continues (--resume DIR, or the one
                                     * --resume auto chose), NULL: a fresh start */
    char *start_owned, *id_data, *id_model;   /* owned: start when chosen; the run's identity */
} train_args;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int parse_i64(const char *s, int64_t lo, int64_t *out) {
    char *e;
    errno = 0;
    long long v = strtoll(s, &e, 10);
    if (errno || e == s || *e || v < lo) return -1;
    *out = v;
    return 0;
}

static int parse_f64(const char *s, double *out) {
    char *e;
    errno = 0;
    double v = strtod(s, &e);
    if (errno || e == s || *e || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

enum { O_INIT = 256, O_MODEL, O_DATA, O_SEQ, O_BATCH, O_ACCUM, O_STEPS, O_EPOCHS, O_LR, O_MINLR, O_WARMUP, O_WD, O_CLIP,
       O_SEED, O_OUT, O_SAVE, O_RESUME, O_LOG, O_SCHED, O_DTYPE, O_THREADS, O_CKPT, O_CHUNK, O_B1, O_B2, O_EPS, O_ZERO,
       O_DEVICE, O_OVERWRITE };

static int parse_args(int argc, char **argv, train_args *a) {
    static const struct option opts[] = {
        {"init", required_argument, 0, O_INIT}, {"model", required_argument, 0, O_MODEL},
        {"data", required_argument, 0, O_DATA}, {"seq", required_argument, 0, O_SEQ},
        {"batch", required_argument, 0, O_BATCH}, {"grad-accum", required_argument, 0, O_ACCUM},
        {"steps", required_argument, 0, O_STEPS}, {"epochs", required_argument, 0, O_EPOCHS},
        {"lr", required_argument, 0, O_LR}, {"min-lr-ratio", required_argument, 0, O_MINLR},
        {"warmup", required_argument, 0, O_WARMUP}, {"weight-decay", required_argument, 0, O_WD},
        {"clip", required_argument, 0, O_CLIP}, {"seed", required_argument, 0, O_SEED},
        {"out", required_argument, 0, O_OUT}, {"save-every", required_argument, 0, O_SAVE},
        {"resume", required_argument, 0, O_RESUME}, {"log", required_argument, 0, O_LOG},
        {"schedule", required_argument, 0, O_SCHED}, {"dtype", required_argument, 0, O_DTYPE},
        {"threads", required_argument, 0, O_THREADS}, {"checkpoint-layers", no_argument, 0, O_CKPT},
        {"ce-chunk", required_argument, 0, O_CHUNK}, {"beta1", required_argument, 0, O_B1},
        {"beta2", required_argument, 0, O_B2}, {"adam-eps", required_argument, 0, O_EPS},
        {"zero", required_argument, 0, O_ZERO}, {"device", required_argument, 0, O_DEVICE},
        {"overwrite", no_argument, 0, O_OVERWRITE},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    tr_options_default(&a->o);
    a->o.steps = 0;
    a->dtype = RT_DT_BF16;
    a->zero = -1;
    int ch, bad = 0;
    int64_t iv;
    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        const char *v = optarg;
        switch (ch) {
        case O_INIT: a->init = v; break;
        case O_MODEL: a->model = v; break;
        case O_DATA: a->data = v; break;
        case O_OUT: a->out = v; break;
        case O_RESUME: a->resume = v; break;
        case O_LOG: a->log = v; break;
        case O_SEQ: bad = parse_i64(v, 1, &a->seq); break;
        case O_BATCH: bad = parse_i64(v, 1, &a->o.batch); break;
        case O_ACCUM: bad = parse_i64(v, 1, &a->o.grad_accum); break;
        case O_STEPS: bad = parse_i64(v, 1, &a->o.steps); break;
        case O_EPOCHS: bad = parse_f64(v, &a->epochs) || a->epochs <= 0; break;
        case O_LR: bad = parse_f64(v, &a->o.lr); break;
        case O_MINLR: bad = parse_f64(v, &a->o.min_lr_ratio); break;
        case O_WARMUP: bad = parse_i64(v, 0, &a->o.warmup); break;
        case O_WD: bad = parse_f64(v, &a->o.weight_decay); break;
        case O_CLIP: bad = parse_f64(v, &a->o.clip); break;
        case O_B1: bad = parse_f64(v, &a->o.beta1); break;
        case O_B2: bad = parse_f64(v, &a->o.beta2); break;
        case O_EPS: bad = parse_f64(v, &a->o.eps); break;
        case O_SEED: bad = parse_i64(v, 0, &iv); a->o.seed = (uint64_t)iv; break;
        case O_SAVE: bad = parse_i64(v, 1, &a->save_every); break;
        case O_THREADS: bad = parse_i64(v, 1, &a->threads); break;
        case O_CHUNK: bad = parse_i64(v, 1, &a->o.ce_chunk); break;
        case O_CKPT: a->o.checkpoint_layers = true; break;
        case O_OVERWRITE: a->overwrite = true; break;
        case O_ZERO:
            bad = parse_i64(v, 0, &a->zero);
            if (!bad && a->zero == 3)
                return cli_usage_error("train", "--zero 3 (sharded parameters) is not implemented yet: use 0, 1 or 2");
            bad = bad || a->zero > 2;
            break;
        case O_SCHED:
            if (!strcmp(v, "cosine")) a->o.schedule = TR_SCHED_COSINE;
            else if (!strcmp(v, "linear")) a->o.schedule = TR_SCHED_LINEAR;
            else if (!strcmp(v, "constant")) a->o.schedule = TR_SCHED_CONSTANT;
            else bad = 1;
            break;
        case O_DEVICE:
            if (!strcmp(v, "cpu")) a->cuda = false;
            else if (!strcmp(v, "cuda")) a->cuda = true;
            else bad = 1;
            break;
        case O_DTYPE:
            if (!strcmp(v, "bf16")) a->dtype = RT_DT_BF16;
            else if (!strcmp(v, "f32")) a->dtype = RT_DT_F32;
            else bad = 1;
            break;
        case 'h': fputs(cli_find("train")->usage, stdout); return -1;
        default: return cli_usage_error("train", "unknown option or missing value '%s'", argv[optind - 1]);
        }
        if (bad) {
            const char *name = "?";
            for (const struct option *o = opts; o->name; o++)
                if (o->val == ch) name = o->name;
            return cli_usage_error("train", "bad value '%s' for --%s", v, name);
        }
    }
    if (optind < argc) return cli_usage_error("train", "unexpected argument '%s'", argv[optind]);
    if (!!a->init + !!a->model + !!a->resume == 0) return cli_usage_error("train", "one of --init, --model or --resume is required");
    if (a->init && a->model) return cli_usage_error("train", "--init and --model exclude each other");
    if (!a->data) return cli_usage_error("train", "--data is required");
    if (!a->out) return cli_usage_error("train", "--out is required");
    if (!a->o.steps == !(a->epochs > 0)) return cli_usage_error("train", "give exactly one of --steps and --epochs");
    if (a->overwrite && a->resume)
        return cli_usage_error("train", "--overwrite starts the run over: it excludes --resume");
    if (!(a->o.lr > 0)) return cli_usage_error("train", "--lr must be > 0");
    return 0;
}

static int load_model(const train_args *a, sm_model **m) {
    if (a->start) return sm_load(a->start, m);
    if (a->model) return sm_load(a->model, m);
    json_t *cfg;
    int rc = rt_json_load_file(a->init, &cfg);
    if (rc) return rc;
    rc = sm_create_random(cfg, a->o.seed, m);
    json_decref(cfg);
    return rc;
}

static void progress(const tr_stats *s, int64_t total, double tps, double eta, int tty) {
    int e = (int)eta;
    fprintf(stderr, "%sstep %lld/%lld  loss %.4f  lr %.3g  gnorm %.3g  %.0f tok/s  ETA %d:%02d:%02d%s", tty ? "\r" : "",
            (long long)s->step, (long long)total, s->loss, s->lr, s->grad_norm, tps, e / 3600, e / 60 % 60, e % 60,
            tty ? "   " : "\n");
    fflush(stderr);
}

/* peak_gib ≥ 0 (the GPU path): also "peak_mem_gib". */
static int log_step(FILE *f, const tr_stats *s, double tps, double peak_gib) {
    json_t *j = json_pack("{s:I,s:f,s:f,s:f,s:I,s:f}", "step", (json_int_t)s->step, "loss", s->loss, "lr", s->lr,
                          "grad_norm", s->grad_norm, "tokens", (json_int_t)s->tokens, "tokens_per_s", tps);
    if (j && peak_gib >= 0) json_object_set_new(j, "peak_mem_gib", json_real(peak_gib));
    char *txt = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!txt) return -1;
    int rc = fprintf(f, "%s\n", txt) < 0 || fflush(f) ? -1 : 0;
    free(txt);
    return rc;
}


/* ---- the output directory: what it holds, and where the run starts ------------------------ */

/* step-N → kind 0, step-N.partial → 1, step-N.old → 2 (what tr_save leaves when killed);
 * false for any other name. */
static bool step_entry(const char *name, int *kind) {
    if (strncmp(name, "step-", 5) || name[5] < '0' || name[5] > '9') return false;
    const char *e = name + 5;
    while (*e >= '0' && *e <= '9') e++;
    if (!*e) *kind = 0;
    else if (!strcmp(e, ".partial")) *kind = 1;
    else if (!strcmp(e, ".old")) *kind = 2;
    else return false;
    return true;
}

typedef struct {
    long long newest;        /* N of the newest complete checkpoint (step-N/trainer_state.json); −1: none */
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
        if (kind) continue;   /* .partial: removed at start; .old: tr_save's, removed by its next save */
        char *sub = rt_path_join(out, e->d_name), *ts = sub ? rt_path_join(sub, "trainer_state.json") : NULL;
        long long n = strtoll(e->d_name + 5, NULL, 10);
        if (ts && rt_is_file(ts)) {
            if (n > s->newest) s->newest = n;
        } else if (!s->other[0]) {
            snprintf(s->other, sizeof s->other, "%s", e->d_name);
        }
        free(sub);
        free(ts);
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

/* prefix + the absolute form of path (path itself when it cannot be resolved); owned. */
static char *identity(const char *prefix, const char *path) {
    char *r = realpath(path, NULL);
    const char *p = r ? r : path;
    size_t n = strlen(prefix) + strlen(p) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%s", prefix, p);
    free(r);
    return s;
}

static int load_state(const char *ck, json_t **j) {
    char *path = rt_path_join(ck, "trainer_state.json");
    int rc = path ? rt_json_load_file(path, j) : RT_ENOMEM;
    free(path);
    return rc;
}

/* What differs between the run that wrote checkpoint ck and this one (data, model, seed,
 * options that shape the schedule and the updates), into diff; "" when nothing. */
static void run_diff(const json_t *j, const train_args *a, char *diff, size_t n) {
    *diff = 0;
    const json_t *o = json_object_get(j, "options"), *run = json_object_get(j, "run");
    const char *d = json_string_value(json_object_get(run, "data")), *m = json_string_value(json_object_get(run, "model"));
    const char *seed = json_string_value(json_object_get(json_object_get(j, "data"), "seed"));
    char here[32];
    snprintf(here, sizeof here, "%llu", (unsigned long long)a->o.seed);
    if (!json_is_object(run)) {
        snprintf(diff, n, "its trainer_state.json does not record its data and model");
        return;
    }
    if (!d || strcmp(d, a->id_data)) {
        snprintf(diff, n, "data %s there, %s here", d ? d : "?", a->id_data);
        return;
    }
    if (a->id_model && (!m || strcmp(m, a->id_model))) {
        snprintf(diff, n, "model %s there, %s here", m ? m : "?", a->id_model);
        return;
    }
    if (!seed || strcmp(seed, here)) {
        snprintf(diff, n, "seed %s there, %s here", seed ? seed : "?", here);
        return;
    }
    const struct { const char *k; double v; } num[] = {
        {"batch", (double)a->o.batch}, {"grad_accum", (double)a->o.grad_accum}, {"steps", (double)a->o.steps},
        {"lr", a->o.lr}, {"min_lr_ratio", a->o.min_lr_ratio}, {"warmup", (double)a->o.warmup},
        {"weight_decay", a->o.weight_decay}, {"clip", a->o.clip}, {"beta1", a->o.beta1}, {"beta2", a->o.beta2},
        {"eps", a->o.eps}};
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
    if (!sc || strcmp(sc, sched[a->o.schedule])) snprintf(diff, n, "schedule %s there, %s here", sc ? sc : "?", sched[a->o.schedule]);
}

/* Where the run starts, set before the model is loaded (the same on every rank; nothing is
 * written here): --resume DIR: DIR. --overwrite: fresh (rank 0 empties --out in
 * open_outputs). --resume auto, the default: the newest complete step-N of --out when its
 * trainer_state.json was written by this same run; fresh when --out is empty or absent (the
 * log file and stale step-*.partial aside); else a refusal that says what to do. Also
 * records the run's identity in a->o. */
static int choose_start(train_args *a) {
    a->id_data = identity("", a->data);
    a->id_model = a->init ? identity("init:", a->init) : a->model ? identity("model:", a->model) : NULL;
    if (!a->id_data || ((a->init || a->model) && !a->id_model)) return RT_ENOMEM;
    int rc = 0;
    if (a->resume && strcmp(a->resume, "auto")) {
        a->start = a->resume;
        json_t *j;
        if (!a->id_model && !load_state(a->resume, &j)) {   /* the run it continues started from that model */
            const char *m = json_string_value(json_object_get(json_object_get(j, "run"), "model"));
            if (m && !(a->id_model = strdup(m))) rc = RT_ENOMEM;
            json_decref(j);
        }
    } else if (!a->overwrite) {
        out_scan sc;
        scan_out(a->out, a->log, &sc);
        if (sc.newest >= 0) {
            char name[40];
            snprintf(name, sizeof name, "step-%lld", sc.newest);
            if (!(a->start_owned = rt_path_join(a->out, name))) return RT_ENOMEM;
            json_t *j;
            if ((rc = load_state(a->start_owned, &j))) return rt_errorf(rc, "--resume auto");
            char diff[1200];
            run_diff(j, a, diff, sizeof diff);
            json_decref(j);
            if (*diff)
                return rt_fail(RT_EINVAL,
                               "%s holds another run's checkpoint %s (%s): give --overwrite to delete the checkpoints "
                               "in %s, --resume %s to continue that run anyway, or another --out",
                               a->out, name, diff, a->out, a->start_owned);
            a->start = a->start_owned;
        } else if (sc.other[0]) {
            return rt_fail(RT_EINVAL,
                           "%s holds %s, which is not a checkpoint of retort train (no trainer_state.json): give "
                           "--overwrite to delete the step-* entries of %s, or another --out",
                           a->out, sc.other, a->out);
        } else if (!a->init && !a->model) {
            return rt_fail(RT_ENOTFOUND, "--resume auto: %s holds no checkpoint, and neither --init nor --model "
                                         "says what to start from", a->out);
        } else if (sc.foreign[0]) {
            return rt_fail(RT_EINVAL,
                           "%s is not empty (it holds %s) and holds no checkpoint of this run: give a new or empty "
                           "--out, or --overwrite to start there anyway (it deletes only step-* checkpoints)",
                           a->out, sc.foreign);
        }
    }
    a->o.run_data = a->id_data;
    a->o.run_model = a->id_model;
    return rc;
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

/* The data and the model, and the options they settle (--epochs → steps, the ZeRO level):
 * what both trainers need first. On success the caller owns *d and *m (the trainer takes them
 * over). 0, or a status with the message recorded. */
static int open_data_and_model(train_args *a, rt_comm *comm, sd_data **d, sm_model **m) {
    int rc = sd_open(a->data, d), P = comm_size(comm);
    if (rc) return rc;
    if (a->seq && a->seq != (int64_t)sd_seq_len(*d)) {
        rc = rt_fail(RT_EINVAL, "--seq %lld, but the shards in %s hold sequences of %u tokens", (long long)a->seq, a->data,
                     sd_seq_len(*d));
        sd_close(*d);
        return rc;
    }
    if (a->epochs > 0) {
        double per = (double)(a->o.batch * a->o.grad_accum * P);
        a->o.steps = (int64_t)ceil(a->epochs * (double)sd_num_seqs(*d) / per);
        if (a->o.steps < 1) a->o.steps = 1;
    }
    a->o.zero = a->zero >= 0 ? (int)a->zero : P > 1 ? 1 : 0;
    if ((rc = choose_start(a)) || (rc = load_model(a, m))) {
        sd_close(*d);
        return rc;
    }
    /* the shards' vocabulary is the tokenizer they were packed with (core/model_check.h) */
    const char *from = a->start ? a->start : a->model ? a->model : a->init;
    char what[4200];
    snprintf(what, sizeof what, "the tokenizer of the shards in %s", a->data);
    if ((rc = mk_check_vocab((*m)->V, from, sd_vocab_size(*d), what))) {
        sm_free(*m);
        sd_close(*d);
    }
    return rc;
}

/* Rank 0 creates the output directory, removes stale step-*.partial (every step-* entry with
 * --overwrite), cuts the log back to step `done` and opens it. */
static int open_outputs(const train_args *a, rt_comm *comm, int64_t done, FILE **log) {
    *log = NULL;
    if (comm_rank(comm) != 0) return 0;
    if (mkdir(a->out, 0755) && errno != EEXIST) return rt_fail(RT_EIO, "cannot create %s: %s", a->out, strerror(errno));
    int rc = clean_out(a->out, a->overwrite);
    if (!rc && a->log) rc = truncate_log(a->log, done);
    if (rc) return rc;
    if (a->log && !(*log = fopen(a->log, "a"))) return rt_fail(RT_EIO, "cannot open log %s: %s", a->log, strerror(errno));
    return 0;
}

/* The CPU trainer (student/train.h) or the GPU one (student/gpu_train.h, --device cuda):
 * exactly one is set; the step loop below drives either through these four calls. */
typedef struct {
    tr_trainer *cpu;
    gt_trainer *gpu;
} trainer;

static int trainer_step(trainer *t, tr_stats *s) { return t->gpu ? gt_step(t->gpu, s) : tr_step(t->cpu, s); }
static int64_t trainer_done(const trainer *t) { return t->gpu ? gt_steps_done(t->gpu) : tr_steps_done(t->cpu); }
static int trainer_save(trainer *t, const char *dir, rt_dtype dt) {
    return t->gpu ? gt_save(t->gpu, dir, dt) : tr_save(t->cpu, dir, dt);
}
static void trainer_free(trainer *t) {
    tr_free(t->cpu);
    gt_free(t->gpu);
}

/* Everything before the first step; identical on every rank. 0, or a status with the message
 * recorded (nothing printed). */
static int setup(train_args *a, tp_pool *pool, rt_comm *comm, trainer *t, FILE **log) {
    *t = (trainer){0};
    *log = NULL;
    sd_data *d;
    sm_model *m;
    int rc = open_data_and_model(a, comm, &d, &m);
    const char *from = a->start ? a->start : a->model;   /* weights from disk: finite? (rank 0 reads them) */
    if (!rc && from && comm_rank(comm) == 0 && (rc = mk_check_weights(from, pool))) {
        sm_free(m);
        sd_close(d);
    }
    if (rc) return rc;
    if (a->cuda) {
        if (!(rc = gt_create(m, d, &a->o, comm, &t->gpu)) && a->start) rc = gt_resume(t->gpu, a->start);
    } else {
        if (!(rc = tr_create_dp(m, d, &a->o, pool, comm, &t->cpu)) && a->start) rc = tr_resume(t->cpu, a->start);
    }
    if (!rc) rc = open_outputs(a, comm, trainer_done(t), log);
    if (rc) {
        trainer_free(t);
        *t = (trainer){0};
    }
    return rc;
}

static int run(train_args *a, tp_pool *pool, rt_comm *comm) {
    int rank = comm_rank(comm), P = comm_size(comm);
    trainer t;
    FILE *lf = NULL;
    int rc = setup(a, pool, comm, &t, &lf);
    if (P > 1) {   /* agree, so that no rank waits in a collective for one that gave up; the
                    * lowest failing rank reports (the others fail the same way, or wait) */
        int32_t first = rc ? rank : P;
        if (comm_allreduce(comm, &first, &first, 1, RT_DT_I32, COMM_MIN)) first = rank;
        if (first < P) {
            trainer_free(&t);
            if (lf) fclose(lf);
            return first == rank ? cli_fail("train") : EXIT_RUNTIME;
        }
    } else if (rc) {
        return cli_fail("train");
    }
    int tty = rank == 0 && isatty(2);
    rc = EXIT_OK;
    int64_t start = trainer_done(&t), done = start;
    if (rank == 0 && a->start_owned && a->start == a->start_owned)
        fprintf(stderr, "train: resuming from %s (step %lld of %lld; the same data, model and options)\n", a->start,
                (long long)start, (long long)a->o.steps);
    double t0 = now_s();
    while (rc == EXIT_OK && done < a->o.steps) {
        double ts = now_s();
        tr_stats s;
        int src = trainer_step(&t, &s);
        if (src == RT_ERANGE) {   /* diverged: the step's loss and norm are global, every rank stops here */
            rc = rank == 0 ? cli_fail("train") : EXIT_RUNTIME;
            break;
        }
        if (src) {   /* this rank alone may have failed: the others wait in a collective */
            rc = cli_fail("train");
            if (P > 1) comm_abort(comm, rc);
            break;
        }
        if (!isfinite(s.loss) || !isfinite(s.grad_norm)) {   /* a trainer that does not stop by itself (GPU) */
            rt_fail(RT_ERANGE, "step %lld: loss %g, gradient norm %g: the training diverged (not finite); nothing saved "
                    "at this step", (long long)s.step, s.loss, s.grad_norm);
            rc = rank == 0 ? cli_fail("train") : EXIT_RUNTIME;
            break;
        }
        done = s.step;
        double now = now_s(), tps = (double)s.tokens / (now - ts);
        double eta = (now - t0) / (double)(done - start) * (double)(a->o.steps - done);
        if (rank == 0) progress(&s, a->o.steps, tps, eta, tty);
        if (lf && log_step(lf, &s, tps, t.gpu ? gt_peak_mem_gib(t.gpu) : -1)) {
            fprintf(stderr, "\nretort: train: writing log %s failed\n", a->log);
            rc = EXIT_RUNTIME;
            if (P > 1) comm_abort(comm, rc);
        }
        if (rc == EXIT_OK && ((a->save_every && done % a->save_every == 0) || done == a->o.steps)) {
            char dir[4200];
            snprintf(dir, sizeof dir, "%s/step-%lld", a->out, (long long)done);
            if (trainer_save(&t, dir, a->dtype)) rc = rank == 0 ? cli_fail("train") : EXIT_RUNTIME;
        }
    }
    if (tty) fputc('\n', stderr);
    if (lf) fclose(lf);
    trainer_free(&t);
    return rc;
}

/* Under mpirun every rank runs this; rank 0 alone prints progress, writes the log and the
 * checkpoints, and reports errors that every rank meets alike (usage, data, model). */
int cmd_train(int argc, char **argv) {
    rt_comm *comm;
    if (comm_open(COMM_AUTO, &comm)) return cli_fail("train");
    int rank = comm_rank(comm), saved = -1;
    if (rank > 0) {   /* the same usage error on every rank: rank 0's line is enough */
        fflush(stderr);
        saved = dup(2);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) { dup2(null, 2); close(null); }
    }
    train_args a = {0};
    int rc = parse_args(argc, argv, &a);
    if (saved >= 0) { fflush(stderr); dup2(saved, 2); close(saved); }
    if (rc) {
        comm_close(comm);
        return rc < 0 ? EXIT_OK : rc;
    }
    if (a.cuda && gt_check_device()) {   /* a CPU-only build, or no device: one line */
        rc = rank == 0 ? cli_fail("train") : EXIT_RUNTIME;
        comm_close(comm);
        return rc;
    }
    if (!a.threads && comm_size(comm) > 1) {   /* the node's CPUs shared by its ranks */
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        a.threads = cpus / comm_local_size(comm);
        if (a.threads < 1) a.threads = 1;
    }
    mm_blas_single_thread();
    tp_pool *pool = NULL;
    if (tp_create((int)a.threads, &pool)) { comm_close(comm); return cli_fail("train"); }
    rc = run(&a, pool, comm);
    free(a.start_owned);
    free(a.id_data);
    free(a.id_model);
    tp_free(pool);
    comm_close(comm);
    return rc;
}
