/* cli/cmd_eval.c — `retort eval`: a benchmark through a local model or an OpenAI-compatible
 * endpoint, k samples per question, answers verified and stored in eval_results (eval/run.h),
 * then the run's summary (eval/results.h). Progress on stderr, the table on stdout.
 *
 * Under mpirun every rank runs this with the same arguments, as `retort generate` does
 * (cli/ranks.h, teacher/parallel_engine.h): a model that splits over the ranks (DeepSeek-V3
 * on the CPU, dense models on --device cuda) is loaded in parts, every rank builds the same
 * engine, rank 0 alone opens the database, reads the questions, writes the results and the
 * summary and drives the engine (ev_gen_opts.comm) while the others follow (pe_follow).
 * Setup failures are agreed (one line, every rank exits); a failure mid-run ends the job with
 * comm_abort. A model that does not split (a dense model on the CPU) and an endpoint model
 * are rank 0's alone: ranks > 0 exit 0 at once. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/ranks.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/fsutil.h"
#include "core/model_check.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "core/tokenizer.h"
#include "eval/compare.h"
#include "eval/results.h"
#include "eval/run.h"
#include "kernels/matmul.h"
#include "teacher/engine.h"
#include "teacher/oai_client.h"
#include "teacher/parallel_engine.h"

static int num(const char *opt, const char *s, double lo, double hi, bool whole, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !isfinite(v) || v < lo || v > hi || (whole && v != floor(v)))
        return cli_usage_error("eval", "%s wants a %s in [%g, %g], not '%s'", opt, whole ? "whole number" : "number",
                               lo, hi, s);
    *out = v;
    return 0;
}

typedef struct {
    double t0, last;
} progress;

static void on_progress(void *ctx, size_t done, size_t todo, int64_t tokens) {
    progress *p = ctx;
    double t = now_s();
    if (t - p->last < 2.0 && done < todo) return;
    p->last = t;
    fprintf(stderr, "eval: %zu/%zu samples, %lld tokens, %.1f tokens/s\n", done, todo, (long long)tokens,
            (double)tokens / (t - p->t0 > 1e-9 ? t - p->t0 : 1e-9));
}

static void print_summary(const ev_run *r, const char *bench) {
    const ev_bench *b = ev_run_bench(r, bench);
    if (!b) return;
    printf("run %s, model %s\n", r->run, b->model);
    printf("%-12s %9s %4s %8s %18s %8s %11s %9s\n", "benchmark", "questions", "k", "pass@1", "95% CI", "cons@k",
           "mean tokens", "truncated");
    char ci[64];
    snprintf(ci, sizeof ci, "[%.4f, %.4f]", b->pass1_lo, b->pass1_hi);
    printf("%-12s %9zu %4d %8.4f %18s %8.4f %11.1f %8.1f%%\n", b->name, b->n_questions, b->k_max, b->pass1, ci, b->cons,
           b->mean_tokens, 100 * b->truncation);
}

static void show_results(db_conn *db, const char *name, const char *bench_name, bool as_json, int *rc) {
    ev_run *r = NULL;
    if (!*rc && ev_run_load(db, name, &r)) *rc = cli_fail("eval");
    if (!*rc && as_json) {
        json_t *j = NULL;
        char *txt = NULL;
        if (ev_compare_json((const ev_run *const *)&r, 1, &j) ||
            !(txt = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER)))
            *rc = cli_fail("eval");
        else printf("%s\n", txt);
        free(txt);
        json_decref(j);
    } else if (!*rc) print_summary(r, bench_name);
    ev_run_free(r);
}

typedef struct {
    const char *dbp, *model, *bench, *name, *tok_path, *served, *key_env, *tmpl_spec;
    double conc, timeout, retries, k, temp, top_p, max_tokens, threads, max_batch, cache, limit, gpu_frac;
    uint64_t seed;
    bool stream, remote_opt, as_json, no_graphs;   /* no_graphs: --no-cuda-graphs */
    te_device dev;
} eval_args;

/* Returns 0 or an exit status (message printed). */
static int parse_eval_args(int argc, char **argv, eval_args *a) {
    *a = (eval_args){.conc = 8, .timeout = 600, .retries = 8, .k = 4, .temp = 0.6, .top_p = 0.95, .max_tokens = 32768,
                     .max_batch = 16, .stream = true, .dev = TE_DEVICE_CPU};
    cli_getopt g;
    cli_getopt_init("eval", 0, &g);
    int c, u = 0;
    optind = 1;
    opterr = 0;
    while (!u && (c = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1) {
        switch (c) {
        case 'd': a->dbp = optarg; break;
        case 'm': a->model = optarg; break;
        case 'b': a->bench = optarg; break;
        case 'n': a->name = optarg; break;
        case 't': a->tok_path = optarg; break;
        case 'T':
            if (!cli_template_spec_ok(optarg))
                return cli_usage_error("eval", "unknown chat template '%s' (deepseek-r1, qwen, llama3, auto or a file)", optarg);
            a->tmpl_spec = optarg;
            break;
        case 'k': u = num("--k", optarg, 1, 4096, true, &a->k); break;
        case 'e': u = num("--temperature", optarg, 0, 100, false, &a->temp); break;
        case 'p': u = num("--top-p", optarg, 1e-9, 1, false, &a->top_p); break;
        case 'x': u = num("--max-tokens", optarg, 1, 1 << 24, true, &a->max_tokens); break;
        case 's': u = cli_parse_seed("eval", optarg, &a->seed); break;
        case 'J': u = num("--threads", optarg, 1, 1024, true, &a->threads); break;
        case 'B': u = num("--max-batch", optarg, 1, 65536, true, &a->max_batch); break;
        case 'c': u = num("--cache-tokens", optarg, 1, 1e12, true, &a->cache); break;
        case 'L': u = num("--limit", optarg, 1, 1e12, true, &a->limit); break;
        case 'j': a->as_json = true; break;
        case 'M': a->served = optarg; a->remote_opt = true; break;
        case 'K': a->key_env = optarg; a->remote_opt = true; break;
        case 'C': u = num("--concurrency", optarg, 1, 4096, true, &a->conc); a->remote_opt = true; break;
        case 'o': u = num("--timeout", optarg, 0.001, 86400, false, &a->timeout); a->remote_opt = true; break;
        case 'r': u = num("--retries", optarg, 0, 1000, true, &a->retries); a->remote_opt = true; break;
        case 'N': a->stream = false; a->remote_opt = true; break;
        case 'D': u = cli_parse_device("eval", optarg, &a->dev); break;
        case 'G': u = cli_parse_gpu_fraction("eval", optarg, &a->gpu_frac); break;
        case CLI_OPT_NO_CUDA_GRAPHS: a->no_graphs = true; break;
        default: return cli_usage_error("eval", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (u) return u;
    if (optind < argc) return cli_usage_error("eval", "unexpected argument '%s'", argv[optind]);
    if (!a->dbp) return cli_usage_error("eval", "--db DB is required");
    if (!a->model) return cli_usage_error("eval", "--model local:DIR or an endpoint URL is required");
    if (!a->bench) return cli_usage_error("eval", "--bench gsm8k|math500|aime24|FILE.jsonl is required");
    return 0;
}

/* `retort eval --model URL`: the model stored as "URL#NAME", the run named NAME by default. */
static int eval_remote(const eval_args *a) {
    oai_opts ro = {.url = a->model, .concurrency = (int)a->conc, .timeout_s = a->timeout, .max_retries = (int)a->retries,
                   .stream = a->stream, .jitter_seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32)};
    if (a->key_env) {
        if (!(ro.api_key = getenv(a->key_env))) {
            fprintf(stderr, "retort: eval: environment variable %s (--api-key-env) is not set\n", a->key_env);
            return EXIT_RUNTIME;
        }
    } else ro.api_key = getenv("OPENAI_API_KEY");
    mm_blas_single_thread();   /* no BLAS here: OpenBLAS's idle workers would only spin */
    char *listed = NULL;
    if (!a->served && oai_list_models(&ro, &listed)) return cli_fail("eval: asking the endpoint for its model");
    const char *m = a->served ? a->served : listed;
    size_t n = strlen(ro.url) + strlen(m) + 2;
    char *model_name = rt_malloc(n);
    if (!model_name) {
        free(listed);
        return cli_fail("eval");
    }
    snprintf(model_name, n, "%s#%s", ro.url, m);
    const char *name = a->name ? a->name : m;
    int rc = 0;
    db_conn *db = NULL;
    ev_questions qs = {0};
    if (db_open(a->dbp, DB_OPEN_CREATE, &db)) rc = cli_fail("eval");
    if (!rc && ev_run_model_check(db, name, model_name)) rc = cli_fail("eval");
    if (!rc && ev_questions_load(db, a->bench, &qs)) rc = cli_fail("eval");
    if (!rc && a->limit > 0) ev_questions_truncate(&qs, (size_t)a->limit);
    if (!rc) {
        progress pr = {now_s(), 0};
        ev_gen_opts go = {.run = name, .model = model_name, .k = (int)a->k, .max_tokens = (int64_t)a->max_tokens,
                          .sampling = {.temperature = (float)a->temp, .top_p = (float)a->top_p}, .seed = a->seed,
                          .progress = on_progress, .progress_ctx = &pr};
        ev_remote rm = {.opts = &ro, .model = m};
        ev_gen_report rep;
        fprintf(stderr, "eval: %s, %zu questions, k = %d, run %s, model %s\n", qs.name, qs.n, (int)a->k, name, model_name);
        if (ev_generate_remote(db, &rm, &qs, &go, &rep)) rc = cli_fail("eval");
        else fprintf(stderr, "eval: %zu samples generated, %zu already stored\n", rep.generated, rep.existing);
    }
    show_results(db, name, qs.name, a->as_json, &rc);
    ev_questions_free(&qs);
    db_close(db);
    free(model_name);
    free(listed);
    if (!rc && (fflush(stdout) || ferror(stdout))) {
        fprintf(stderr, "retort: eval: writing output failed\n");
        return EXIT_RUNTIME;
    }
    return rc;
}

/* A follower's run: pe_follow until rank 0 ends; a failure ends the job. */
static int follow(cli_ranks *r, te_engine *e) {
    if (!pe_follow(r->c, e)) return EXIT_OK;
    fprintf(stderr, "retort: eval: rank %d of %d: %s\n", r->rank, r->size, rt_errmsg());
    comm_abort(r->c, EXIT_RUNTIME);
    return EXIT_RUNTIME;
}

/* A local model's run: what eval_setup builds, freed by eval_local_free. */
typedef struct {
    const char *dir, *name, *tok_path;
    char *model_name, *def_tok;
    char run_name[512];
    mc_config cfg;
    tok_tokenizer *tok;
    ct_template *tmpl;
    db_conn *db;
    ev_questions qs;
    tp_pool *pool;
    te_model *m;
    te_engine *e;
} eval_local;

static void eval_local_free(eval_local *l) {
    te_engine_free(l->e);
    te_model_free(l->m);
    tp_free(l->pool);
    ev_questions_free(&l->qs);
    db_close(l->db);
    ct_template_free(l->tmpl);
    tok_free(l->tok);
    free(l->def_tok);
    free(l->model_name);
}

/* Every rank: the model directory ("local:ABSOLUTE-DIR") and its config. */
static int eval_model_dir(const eval_args *a, eval_local *l) {
    int rc = 0;
    if (!rt_is_dir(l->dir)) {   /* messages recorded, so that a rank > 0 alone can say it (cli_ranks_agree) */
        rt_fail(RT_ENOTFOUND, "model directory %s not found", l->dir);
        rc = cli_fail("eval");
    } else {
        char *abs_dir = realpath(l->dir, NULL);
        l->model_name = abs_dir ? rt_malloc(strlen(abs_dir) + 7) : NULL;
        if (!l->model_name) rc = cli_fail("eval");
        else sprintf(l->model_name, "local:%s", abs_dir);
        free(abs_dir);
    }
    if (!rc && mc_load(l->dir, &l->cfg)) rc = cli_fail("eval: loading the model");
    l->name = a->name;
    if (!l->name) {
        size_t n = strlen(l->dir);
        while (n > 1 && l->dir[n - 1] == '/') n--;
        size_t s = n;
        while (s > 0 && l->dir[s - 1] != '/') s--;
        snprintf(l->run_name, sizeof l->run_name, "%.*s", (int)(n - s), l->dir + s);
        l->name = l->run_name;
    }
    return rc;
}

/* Every rank: tokenizer, template; rank 0: the database and the questions — then the ranks
 * agree; then every rank the model (its part of it) and the engine. */
static int eval_setup(cli_ranks *lr, const eval_args *a, eval_local *l) {
    int rc = 0;
    l->def_tok = rt_path_join(l->dir, "tokenizer.json");
    l->tok_path = a->tok_path ? a->tok_path : l->def_tok;
    const char *tp = l->tok_path;
    if (!tp || !rt_is_file(tp)) {
        rt_fail(RT_ENOTFOUND, "no tokenizer: %s not found (give --tokenizer FILE)", tp ? tp : "tokenizer.json");
        rc = cli_fail("eval");
    } else if (tok_load(tp, &l->tok)) rc = cli_fail("eval: loading the tokenizer");
    if (!rc && mk_check_tokenizer(&l->cfg, l->dir, l->tok, tp)) rc = cli_fail("eval");
    /* no --template: the question as raw text (the benchmarks' protocol); auto: the model's own */
    if (!rc && a->tmpl_spec) rc = cli_template("eval", a->tmpl_spec, tp, l->tok, true, &l->tmpl);
    if (!rc && lr->rank == 0) {
        if (db_open(a->dbp, DB_OPEN_CREATE, &l->db)) rc = cli_fail("eval");
        if (!rc && ev_run_model_check(l->db, l->name, l->model_name)) rc = cli_fail("eval");
        if (!rc && ev_questions_load(l->db, a->bench, &l->qs)) rc = cli_fail("eval");
        if (!rc && a->limit > 0) ev_questions_truncate(&l->qs, (size_t)a->limit);
    }
    rc = cli_ranks_agree(lr, rc);
    if (rc) return rc;
    int nthreads = cli_ranks_threads(lr, a->threads);
    if (nthreads < 0 || tp_create(nthreads, &l->pool)) rc = cli_fail("eval");
    if (!rc) rc = cli_load_teacher(lr, l->dir, l->pool, a->dev, a->gpu_frac, a->no_graphs, &l->m);
    double cache = a->cache;
    if (!rc && cache == 0) {
        /* room for one question's k samples at full length, at least the engine's default */
        int64_t ctx = l->cfg.max_position_embeddings, len = (int64_t)a->max_tokens + 4096;
        if (ctx > 0 && len > ctx) len = ctx;
        cache = (double)len * a->k > 65536 ? (double)len * a->k : 65536;
    }
    te_opts eo = {.max_batch = (int)a->max_batch, .cache_tokens = (int64_t)cache, .tok = l->tok};
    if (!rc && te_engine_create(l->m, &eo, &l->e)) rc = cli_fail("eval");
    return cli_ranks_agree(lr, rc);
}

/* Rank 0 of the model's ranks: the samples, through the engine. */
static int eval_generate(cli_ranks *lr, const eval_args *a, eval_local *l) {
    progress pr = {now_s(), 0};
    ev_gen_opts go = {.run = l->name, .model = l->model_name, .k = (int)a->k, .max_tokens = (int64_t)a->max_tokens,
                      .sampling = {.temperature = (float)a->temp, .top_p = (float)a->top_p}, .seed = a->seed,
                      .tok = l->tok, .tmpl = l->tmpl, .progress = on_progress, .progress_ctx = &pr, .comm = lr->c};
    ev_gen_report rep;
    char wb[96];
    fprintf(stderr, "eval: %s, %zu questions, k = %d, run %s; model %s\n", l->qs.name, l->qs.n, (int)a->k, l->name,
            cli_weights(wb, sizeof wb, lr, a->dev, l->m));
    int rc = 0, grc = ev_generate(l->db, l->e, &l->qs, &go, &rep);
    if (grc && rep.comm_failed) {   /* the followers may wait in a collective: end the job */
        rc = cli_fail("eval");
        fflush(stdout);
        comm_abort(lr->c, rc);
    } else if (grc) rc = cli_fail("eval");
    else fprintf(stderr, "eval: %zu samples generated, %zu already stored\n", rep.generated, rep.existing);
    return rc;
}

static int eval_ranks(cli_ranks *rk, int argc, char **argv);

int cmd_eval(int argc, char **argv) {
    cli_ranks rk;
    int rc = cli_ranks_open("eval", &rk);
    if (rc) return rc;
    rc = eval_ranks(&rk, argc, argv);
    cli_ranks_close(&rk);
    return rc;
}

static int eval_ranks(cli_ranks *rk, int argc, char **argv) {
    if (cli_wants_help("eval", argc, argv)) return EXIT_OK;
    eval_args a;
    int rc = parse_eval_args(argc, argv, &a);
    if (rc) return rc;
    if (!strncmp(a.model, "http://", 7) || !strncmp(a.model, "https://", 8)) {
        if (rk->rank > 0) return EXIT_OK;   /* an endpoint model: rank 0 alone does the work */
        return eval_remote(&a);
    }
    if (a.remote_opt)
        return cli_usage_error("eval", "--model-name, --api-key-env, --concurrency, --timeout, --retries and "
                                       "--no-stream are for endpoint models");
    if (strncmp(a.model, "local:", 6) || !a.model[6]) {
        fprintf(stderr, "retort: eval: model '%s': want local:DIR or an http(s):// endpoint URL\n", a.model);
        return EXIT_RUNTIME;
    }
    eval_local *l = rt_calloc(1, sizeof *l);
    if (!l) return cli_fail("eval");
    l->dir = a.model + 6;
    rc = eval_model_dir(&a, l);
    /* every rank: the model directory and its config — then the ranks agree, and a model that
     * does not split (a dense model on the CPU) is rank 0's alone */
    rc = cli_ranks_agree(rk, rc);
    bool alone = !rc && rk->size > 1 && a.dev == TE_DEVICE_CPU && l->cfg.arch != MC_ARCH_DEEPSEEK_V3;
    if (rc || (alone && rk->rank > 0)) {
        eval_local_free(l);
        free(l);
        return rc;
    }
    cli_ranks one = {.rank = 0, .size = 1, .saved_err = -1, .name = "eval"};
    cli_ranks *lr = alone ? &one : rk;   /* the ranks the model runs over */
    rc = eval_setup(lr, &a, l);
    cli_ranks_speak(rk);
    if (!rc && lr->rank > 0) rc = follow(lr, l->e);
    else if (!rc) rc = eval_generate(lr, &a, l);
    if (lr->rank == 0) show_results(l->db, l->name, l->qs.name, a.as_json, &rc);
    eval_local_free(l);
    free(l);
    if (!rc && (fflush(stdout) || ferror(stdout))) {
        fprintf(stderr, "retort: eval: writing output failed\n");
        return EXIT_RUNTIME;
    }
    return rc;
}
