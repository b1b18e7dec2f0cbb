/* cli/cmd_train.c — `retort train`: SFT of a dense student on packed shards. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/clock.h"
#include "core/comm.h"
#include "core/fsutil.h"
#include "core/json.h"
#include "core/model_check.h"
#include "core/status.h"
#include "core/tb_events.h"
#include "kernels/matmul.h"
#include "core/model_config.h"
#include "student/gpu_plan.h"
#include "student/gpu_train.h"
#include "student/hfdir.h"
#include "student/outdir.h"
#include "student/train.h"

typedef struct {
    const char *init, *model, *data, *out, *resume, *log, *tokenizer;
    const char *tensorboard, *val_data;   /* --tensorboard DIR, --val-data SHARDS */
    int64_t val_every;                    /* --val-every N (0: the last step only) */
    double val_frac;                      /* --val-frac F: the last ⌈F·S⌉ sequences held out */
    uint64_t val_first, val_count;        /* the held-out sequences (set when the data is opened) */
    hd_source hf;                   /* the model directories' tokenizer and generation files (o.hf) */
    int64_t seq, save_every, threads, zero;
    double epochs;
    rt_dtype dtype;
    tr_options o;
    bool cuda;   /* --device cuda: student/gpu_train.h */
    bool overwrite;                 /* --overwrite: delete the step-* entries of --out first */
    const char *start;              /* the checkpoint the run continues (--resume DIR, or the one
                                     * --resume auto chose), NULL: a fresh start */
    bool chosen;                    /* start was found in --out by --resume auto */
    char *start_owned, *id_data, *id_model;   /* owned: start; the run's identity */
} train_args;

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

static int parse_args(int argc, char **argv, train_args *a) {
    cli_getopt g;
    cli_getopt_init("train", CO_MODE1, &g);
    tr_options_default(&a->o);
    a->o.steps = 0;
    a->dtype = RT_DT_BF16;
    a->zero = -1;
    int ch, bad = 0;
    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1) {
        const char *v = optarg;
        switch (ch) {
        case CO_TRAIN_INIT: a->init = v; break;
        case CO_TRAIN_MODEL: a->model = v; break;
        case CO_TRAIN_DATA: a->data = v; break;
        case CO_TRAIN_OUT: a->out = v; break;
        case CO_TRAIN_RESUME: a->resume = v; break;
        case CO_TRAIN_LOG: a->log = v; break;
        case CO_TRAIN_TOKENIZER: a->tokenizer = v; break;
        case CO_TRAIN_TB: a->tensorboard = v; break;
        case CO_TRAIN_VAL_DATA: a->val_data = v; break;
        case CO_TRAIN_VAL_EVERY: bad = parse_i64(v, 1, &a->val_every); break;
        case CO_TRAIN_VAL_FRAC: bad = parse_f64(v, &a->val_frac) || !(a->val_frac > 0 && a->val_frac < 1); break;
        case CO_TRAIN_SHARD: {
            double b;
            bad = parse_f64(v, &b) || b < 1 || b > 9e18;
            a->o.max_shard_bytes = bad ? 0 : (int64_t)b;
            break;
        }
        case CO_TRAIN_SEQ: bad = parse_i64(v, 1, &a->seq); break;
        case CO_TRAIN_BATCH: bad = parse_i64(v, 1, &a->o.batch); break;
        case CO_TRAIN_ACCUM: bad = parse_i64(v, 1, &a->o.grad_accum); break;
        case CO_TRAIN_STEPS: bad = parse_i64(v, 1, &a->o.steps); break;
        case CO_TRAIN_EPOCHS: bad = parse_f64(v, &a->epochs) || a->epochs <= 0; break;
        case CO_TRAIN_LR: bad = parse_f64(v, &a->o.lr); break;
        case CO_TRAIN_MINLR: bad = parse_f64(v, &a->o.min_lr_ratio); break;
        case CO_TRAIN_WARMUP: bad = parse_i64(v, 0, &a->o.warmup); break;
        case CO_TRAIN_WD: bad = parse_f64(v, &a->o.weight_decay); break;
        case CO_TRAIN_CLIP: bad = parse_f64(v, &a->o.clip); break;
        case CO_TRAIN_B1: bad = parse_f64(v, &a->o.beta1); break;
        case CO_TRAIN_B2: bad = parse_f64(v, &a->o.beta2); break;
        case CO_TRAIN_EPS: bad = parse_f64(v, &a->o.eps); break;
        case CO_TRAIN_SEED:
            if (cli_parse_seed("train", v, &a->o.seed)) return EXIT_USAGE;
            break;
        case CO_TRAIN_SAVE: bad = parse_i64(v, 1, &a->save_every); break;
        case CO_TRAIN_THREADS: bad = parse_i64(v, 1, &a->threads); break;
        case CO_TRAIN_CHUNK: bad = parse_i64(v, 1, &a->o.ce_chunk); break;
        case CO_TRAIN_CKPT: a->o.checkpoint_layers = true; break;
        case CO_TRAIN_OVERWRITE: a->overwrite = true; break;
        case CO_TRAIN_ZERO:
            bad = parse_i64(v, 0, &a->zero) || a->zero > 3;
            break;
        case CO_TRAIN_OFFLOAD: a->o.offload_optimizer = true; break;
        case CO_TRAIN_KD_ALPHA: bad = parse_f64(v, &a->o.kd_alpha) || a->o.kd_alpha < 0 || a->o.kd_alpha > 1; break;
        case CO_TRAIN_KD_TEMP: bad = parse_f64(v, &a->o.kd_temperature) || !(a->o.kd_temperature > 0); break;
        case CO_TRAIN_KD_LOSS: {
            kd_kind k;
            if (kd_parse_kind(v, &k, &a->o.kd_beta)) return cli_usage_error("train", "--kd-loss: %s", rt_errmsg());
            a->o.kd_loss = (int)k;
            break;
        }
        case CO_TRAIN_OFFLOAD_ACTS: a->o.offload_activations = a->o.checkpoint_layers = true; break;
        case CO_TRAIN_SCHED:
            if (!strcmp(v, "cosine")) a->o.schedule = TR_SCHED_COSINE;
            else if (!strcmp(v, "linear")) a->o.schedule = TR_SCHED_LINEAR;
            else if (!strcmp(v, "constant")) a->o.schedule = TR_SCHED_CONSTANT;
            else bad = 1;
            break;
        case CO_TRAIN_DEVICE:
            if (!strcmp(v, "cpu")) a->cuda = false;
            else if (!strcmp(v, "cuda")) a->cuda = true;
            else bad = 1;
            break;
        case CO_TRAIN_DTYPE:
            if (!strcmp(v, "bf16")) a->dtype = RT_DT_BF16;
            else if (!strcmp(v, "f32")) a->dtype = RT_DT_F32;
            else bad = 1;
            break;
        case 'h': cli_print_usage("train", stdout); return -1;
        default: return cli_usage_error("train", "unknown option or missing value '%s'", argv[optind - 1]);
        }
        if (bad) {
            const char *name = "?";
            for (const struct option *o = g.opts; o->name; o++)
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
    if (a->o.offload_optimizer && !a->cuda) return cli_usage_error("train", "--offload-optimizer needs --device cuda");
    if (a->o.offload_activations && !a->cuda) return cli_usage_error("train", "--offload-activations needs --device cuda");
    if (a->val_data && a->val_frac > 0) return cli_usage_error("train", "--val-data and --val-frac exclude each other");
    if (a->val_frac > 0 && !a->val_data) a->val_data = a->data;   /* the held-out part of --data */
    if (a->val_every && !a->val_data) return cli_usage_error("train", "--val-every needs --val-data or --val-frac");
    if (a->tokenizer && access(a->tokenizer, R_OK)) return cli_usage_error("train", "--tokenizer %s: cannot read it", a->tokenizer);
    return 0;
}

/* ---- retort train --plan: the GPU trainer's per-rank memory, without training ----------- */

/* bytes of each component, in gp_mem order, with the names --json prints */
static const struct { const char *key, *text; size_t off; } PLAN_ROWS[] = {
    {"parameters", "bf16 weights (ZeRO-3: the rank's shard)", offsetof(gp_mem, weights)},
    {"master_weights", "f32 master weights", offsetof(gp_mem, master)},
    {"moments", "AdamW moments (f32 m, v)", offsetof(gp_mem, moments)},
    {"gradients", "f32 gradient (ZeRO-2/3: the rank's shard)", offsetof(gp_mem, grads)},
    {"gradient_buckets", "gradient buckets (one layer, the embedding)", offsetof(gp_mem, buckets)},
    {"gathered_layers", "gathered bf16 layers (two, and the embedding)", offsetof(gp_mem, gathered)},
    {"activations", "activations", offsetof(gp_mem, acts)},
    {"loss_chunk", "LM head + cross-entropy chunk", offsetof(gp_mem, ce)},
    {"workspace", "kernel scratch, batch, losses", offsetof(gp_mem, workspace)},
    {"kd_topk", "teacher top-k of a micro-batch (--kd-top-k)", offsetof(gp_mem, kd)},
};

static int plan_main(int argc, char **argv) {
    cli_getopt g;
    cli_getopt_init("train", CO_MODE2, &g);
    const char *init = NULL;
    int64_t ranks = 1, seq = 0, batch = 1, accum = 1, zero = -1, chunk = 0, kd_k = 0;
    double gib = 80;
    bool offload = false, json = false, ckpt = false, xhost = false;
    int ch, bad = 0;
    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1) {
        const char *v = optarg;
        switch (ch) {
        case CO_TRAIN_PLAN: break;
        case CO_TRAIN_INIT: case CO_TRAIN_MODEL: init = v; break;
        case CO_TRAIN_RANKS: bad = parse_i64(v, 1, &ranks); break;
        case CO_TRAIN_SEQ: bad = parse_i64(v, 1, &seq); break;
        case CO_TRAIN_BATCH: bad = parse_i64(v, 1, &batch); break;
        case CO_TRAIN_ACCUM: bad = parse_i64(v, 1, &accum); break;
        case CO_TRAIN_ZERO: bad = parse_i64(v, 0, &zero) || zero > 3; break;
        case CO_TRAIN_CHUNK: bad = parse_i64(v, 1, &chunk); break;
        case CO_TRAIN_KD_TOPK: bad = parse_i64(v, 1, &kd_k) || kd_k > 20; break;
        case CO_TRAIN_GPUMEM: bad = parse_f64(v, &gib) || !(gib > 0); break;
        case CO_TRAIN_OFFLOAD: offload = true; break;
        case CO_TRAIN_JSON: json = true; break;
        case CO_TRAIN_CKPT: ckpt = true; break;
        case CO_TRAIN_OFFLOAD_ACTS: ckpt = xhost = true; break;
        case CO_TRAIN_DEVICE: bad = strcmp(v, "cuda") != 0; break;   /* the plan is the GPU trainer's */
        case 'h': cli_print_usage("train", stdout); return EXIT_OK;
        default:
            return cli_usage_error("train", "--plan takes --init CONFIG --ranks N --seq T --batch B --zero 0-3 "
                                            "[--grad-accum A] [--checkpoint-layers] [--ce-chunk N] [--offload-optimizer] [--offload-activations] "
                                            "[--kd-top-k K] [--gpu-memory GIB] [--json]; not '%s'", argv[optind - 1]);
        }
        if (bad) return cli_usage_error("train", "bad value '%s' for --plan's %s", v, argv[optind - 2]);
    }
    if (optind < argc) return cli_usage_error("train", "unexpected argument '%s'", argv[optind]);
    if (!init) return cli_usage_error("train", "--plan needs --init CONFIG.json (or --model DIR)");
    if (!seq) return cli_usage_error("train", "--plan needs --seq T");
    mc_config cfg;
    if (mc_load(init, &cfg)) return cli_fail("train --plan");
    gp_plan p;
    int ck = xhost ? GP_CKPT_HOST : ckpt ? GP_CKPT_LAYERS : GP_CKPT_NONE;
    if (gp_plan_init_config(&p, &cfg, seq * batch, ck, chunk, accum, NULL)) return cli_fail("train --plan");
    int level = ranks > 1 ? (int)(zero >= 0 ? zero : 1) : 0;
    zr_layout z;
    zr_layout_init(&z, p.n, 0, (int)ranks, level);
    gp_mem mem;
    gp_rank_memory(&p, &z, offload, gp_ce_ws_estimate(p.ce_chunk, p.V, p.D), &mem);
    if (kd_k) gp_mem_add_kd(&mem, gp_kd_bytes(p.T, kd_k, accum));
    size_t cap = (size_t)(gib * 1073741824.0);
    bool fits = mem.total <= cap;
    if (json) {
        json_t *o = json_object(), *rows = json_object();
        for (size_t i = 0; i < sizeof PLAN_ROWS / sizeof *PLAN_ROWS; i++) {
            size_t b = *(size_t *)((char *)&mem + PLAN_ROWS[i].off);
            if (b || PLAN_ROWS[i].off != offsetof(gp_mem, kd))   /* the KD buffer only when asked for */
                json_object_set_new(rows, PLAN_ROWS[i].key, json_integer((json_int_t)b));
        }
        json_object_set_new(o, "per_rank_bytes", rows);
        json_object_set_new(o, "total_bytes", json_integer((json_int_t)mem.total));
        json_object_set_new(o, "gpu_memory_bytes", json_integer((json_int_t)cap));
        json_object_set_new(o, "fits", json_boolean(fits));
        char *txt = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(o);
        if (txt) printf("%s\n", txt);
        free(txt);
    } else {
        const double G = 1073741824.0;
        printf("%s: %lld parameters (GPU layout %lld), %lld rank(s), ZeRO-%d%s, %lld tokens per micro-batch (%lld × %lld)%s\n",
               init, (long long)mc_param_count(&cfg, false), (long long)p.n, (long long)ranks, level,
               offload ? ", optimizer state offloaded to the host" : "", (long long)(seq * batch), (long long)batch,
               (long long)seq, xhost ? ", layers checkpointed, their inputs in host memory" : ckpt ? ", layers checkpointed" : "");
        for (size_t i = 0; i < sizeof PLAN_ROWS / sizeof *PLAN_ROWS; i++) {
            size_t b = *(size_t *)((char *)&mem + PLAN_ROWS[i].off);
            if (b) printf("  %-46s %9.2f GiB\n", PLAN_ROWS[i].text, (double)b / G);
        }
        printf("  %-46s %9.2f GiB of %.2f GiB: %s\n", "total per rank", (double)mem.total / G, gib,
               fits ? "fits" : "does not fit");
        if (mem.host) printf("  %-46s %9.2f GiB\n", "pinned host memory per rank", (double)mem.host / G);
        printf("  (not counted: the CUDA context and cuBLAS/NCCL workspaces, about 0.5-1 GiB)\n");
    }
    gp_plan_free(&p);
    return fflush(stdout) ? EXIT_RUNTIME : EXIT_OK;
}

/* Lazy (student/model.h): the trainer reads the weights it keeps, a ZeRO-3 rank its shard only. */
static int load_model(const train_args *a, sm_model **m) {
    if (a->start) return sm_open(a->start, m);
    if (a->model) return sm_open(a->model, m);
    json_t *cfg;
    int rc = rt_json_load_file(a->init, &cfg);
    if (rc) return rc;
    rc = sm_open_random(cfg, a->o.seed, m);
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

/* peak_gib ≥ 0 (the GPU path): also "peak_mem_gib"; val_targets > 0: also "val_loss", "val_targets". */
static int log_step(FILE *f, const tr_stats *s, double tps, double peak_gib, double val_loss, int64_t val_targets) {
    json_t *j = json_pack("{s:I,s:f,s:f,s:f,s:I,s:f}", "step", (json_int_t)s->step, "loss", s->loss, "lr", s->lr,
                          "grad_norm", s->grad_norm, "tokens", (json_int_t)s->tokens, "tokens_per_s", tps);
    if (j && s->kd_loss != 0) {   /* a distilling run: its two parts */
        json_object_set_new(j, "ce_loss", json_real(s->ce_loss));
        json_object_set_new(j, "kd_loss", json_real(s->kd_loss));
    }
    if (j && peak_gib >= 0) json_object_set_new(j, "peak_mem_gib", json_real(peak_gib));
    if (j && val_targets > 0) {
        json_object_set_new(j, "val_loss", json_real(val_loss));
        json_object_set_new(j, "val_targets", json_integer((json_int_t)val_targets));
    }
    char *txt = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!txt) return -1;
    int rc = fprintf(f, "%s\n", txt) < 0 || fflush(f) ? -1 : 0;
    free(txt);
    return rc;
}

static double wall_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The step's scalars into the TensorBoard file: train/loss, train/lr, train/grad_norm,
 * train/tokens_per_s, and val/loss when one was computed. */
static int tb_step(tb_writer *w, const tr_stats *s, double tps, double val_loss, int64_t val_targets) {
    double now = wall_s();
    int rc = tb_scalar(w, "train/loss", s->step, now, (float)s->loss);
    if (!rc) rc = tb_scalar(w, "train/lr", s->step, now, (float)s->lr);
    if (!rc) rc = tb_scalar(w, "train/grad_norm", s->step, now, (float)s->grad_norm);
    if (!rc) rc = tb_scalar(w, "train/tokens_per_s", s->step, now, (float)tps);
    if (!rc && val_targets > 0) rc = tb_scalar(w, "val/loss", s->step, now, (float)val_loss);
    return rc;
}

/* Where the run starts (student/outdir.h), decided before the model is loaded; the run's
 * identity goes into a->o, and so into trainer_state.json's "run". */
static int choose_start(train_args *a) {
    a->id_data = od_identity("", a->data);
    a->id_model = a->init ? od_identity("init:", a->init) : a->model ? od_identity("model:", a->model) : NULL;
    if (!a->id_data || ((a->init || a->model) && !a->id_model)) return RT_ENOMEM;
    a->o.run_data = a->id_data;
    a->o.run_model = a->id_model;
    od_request r = {a->out, a->log, a->resume, a->overwrite, a->init || a->model, &a->o};
    int rc = od_choose(&r, &a->start_owned, &a->chosen);
    a->start = a->start_owned;
    if (!rc && a->start && !a->id_model && (a->id_model = od_state_model(a->start)))
        a->o.run_model = a->id_model;   /* --resume DIR alone: the model its run started from */
    return rc;
}

/* Collective; rank 0 writes, and reports a failure (the other ranks hear of it and stop). */
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
    if (a->val_frac > 0) {   /* the last ⌈F·S⌉ sequences are the validation split, never trained on */
        uint64_t S = sd_num_seqs(*d), k = (uint64_t)ceil(a->val_frac * (double)S);
        if (k >= S) rc = rt_fail(RT_EINVAL, "--val-frac %g of %llu sequences leaves none to train on", a->val_frac,
                                 (unsigned long long)S);
        else rc = sd_restrict(*d, 0, S - k);
        if (rc) {
            sd_close(*d);
            return rc;
        }
        a->val_first = S - k, a->val_count = k;
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
    /* the model directories' tokenizer files: --tokenizer, the start model's, or the shards' */
    hd_source_free(&a->hf);
    if ((rc = hd_source_from(a->start ? a->start : a->model, a->data, a->tokenizer, &a->hf))) {
        sm_free(*m);
        sd_close(*d);
        return rc;
    }
    a->o.hf = &a->hf;
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
    int rc = od_prepare(a->out, a->overwrite, a->log, done);
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
static int trainer_eval(trainer *t, sd_data *val, double *loss, int64_t *targets) {
    return t->gpu ? gt_eval(t->gpu, val, loss, targets) : tr_eval(t->cpu, val, loss, targets);
}
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
    sd_data *val = NULL;      /* rank 0 (ZeRO-3 with several ranks: every rank, the pass is collective): the validation shards */
    tb_writer *tb = NULL;     /* rank 0: the TensorBoard event file */
    bool val_all = P > 1 && a->zero == 3;
    if ((rank == 0 || val_all) && a->val_data &&
        (sd_open(a->val_data, &val) || (a->val_count && sd_restrict(val, a->val_first, a->val_count))))
        rc = cli_fail("train");
    if (rank == 0 && rc == EXIT_OK && a->tensorboard && tb_open(a->tensorboard, &tb)) rc = cli_fail("train");
    if (rc != EXIT_OK && P > 1) comm_abort(comm, rc);
    int64_t start = trainer_done(&t), done = start;
    if (rank == 0 && a->chosen)
        fprintf(stderr, "train: resuming from %s (step %lld of %lld; the same data, model and options)\n", a->start,
                (long long)start, (long long)a->o.steps);
    double t0 = now_s();
    while (rc == EXIT_OK && done < a->o.steps) {
        double ts = now_s();
        tr_stats s;
        int src = trainer_step(&t, &s);
        if (src == RT_ERANGE) {   /* diverged: the step's loss and norm are global, every rank stops here */
            if (tty) fputc('\n', stderr), tty = 0;   /* after the progress line */
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
            if (tty) fputc('\n', stderr), tty = 0;
            rc = rank == 0 ? cli_fail("train") : EXIT_RUNTIME;
            break;
        }
        done = s.step;
        double now = now_s(), tps = (double)s.tokens / (now - ts);
        double eta = (now - t0) / (double)(done - start) * (double)(a->o.steps - done);
        if (rank == 0) progress(&s, a->o.steps, tps, eta, tty);
        double vloss = NAN;
        int64_t vtargets = 0;
        if (val && (done == a->o.steps || (a->val_every && done % a->val_every == 0))) {
            if (trainer_eval(&t, val, &vloss, &vtargets)) {
                if (tty) fputc('\n', stderr), tty = 0;
                rc = cli_fail("train");
                if (P > 1) comm_abort(comm, rc);
                break;
            }
            if (rank == 0)
                fprintf(stderr, "%sstep %lld: validation loss %.4f over %lld targets\n", tty ? "\n" : "", (long long)done,
                        vloss, (long long)vtargets);
        }
        if (tb && tb_step(tb, &s, tps, vloss, vtargets)) {
            if (tty) fputc('\n', stderr), tty = 0;
            rc = cli_fail("train");
            if (P > 1) comm_abort(comm, rc);
            break;
        }
        if (lf && log_step(lf, &s, tps, t.gpu ? gt_peak_mem_gib(t.gpu) : -1, vloss, vtargets)) {
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
    sd_close(val);
    tb_close(tb);
    trainer_free(&t);
    return rc;
}

/* Under mpirun every rank runs this; rank 0 alone prints progress, writes the log and the
 * checkpoints, and reports errors that every rank meets alike (usage, data, model). */
int cmd_train(int argc, char **argv) {
    for (int i = 1; i < argc; i++)   /* --plan: arithmetic only, no data, model, device or ranks */
        if (!strcmp(argv[i], "--plan")) return plan_main(argc, argv);
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
    hd_source_free(&a.hf);
    free(a.id_data);
    free(a.id_model);
    tp_free(pool);
    comm_close(comm);
    return rc;
}
