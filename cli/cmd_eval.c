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

static void show_results(ds_db *db, const char *name, const char *bench_name, bool as_json, int *rc) {
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

/* `retort eval --model URL`: the model stored as "URL#NAME", the run named NAME by default. */
static int eval_remote(const char *dbp, const char *bench, const char *name, const char *served, const char *key_env,
                       oai_opts *ro, int k, double temp, double top_p, double max_tokens, double seed, double limit,
                       bool as_json) {
    if (key_env) {
        if (!(ro->api_key = getenv(key_env))) {
            fprintf(stderr, "retort: eval: environment variable %s (--api-key-env) is not set\n", key_env);
            return EXIT_RUNTIME;
        }
    } else ro->api_key = getenv("OPENAI_API_KEY");
    mm_blas_single_thread();   /* no BLAS here: OpenBLAS's idle workers would only spin */
    char *listed = NULL;
    if (!served && oai_list_models(ro, &listed)) return cli_fail("eval: asking the endpoint for its model");
    const char *m = served ? served : listed;
    size_t n = strlen(ro->url) + strlen(m) + 2;
    char *model_name = rt_malloc(n);
    if (!model_name) {
        free(listed);
        return cli_fail("eval");
    }
    snprintf(model_name, n, "%s#%s", ro->url, m);
    if (!name) name = m;
    int rc = 0;
    ds_db *db = NULL;
    ev_questions qs = {0};
    if (db_open(dbp, DB_OPEN_CREATE, &db)) rc = cli_fail("eval");
    if (!rc && ev_run_model_check(db, name, model_name)) rc = cli_fail("eval");
    if (!rc && ev_questions_load(db, bench, &qs)) rc = cli_fail("eval");
    if (!rc && limit > 0) ev_questions_truncate(&qs, (size_t)limit);
    if (!rc) {
        progress pr = {now_s(), 0};
        ev_gen_opts go = {.run = name, .model = model_name, .k = k, .max_tokens = (int64_t)max_tokens,
                          .sampling = {.temperature = (float)temp, .top_p = (float)top_p}, .seed = (uint64_t)seed,
                          .progress = on_progress, .progress_ctx = &pr};
        ev_remote rm = {.opts = ro, .model = m};
        ev_gen_report rep;
        fprintf(stderr, "eval: %s, %zu questions, k = %d, run %s, model %s\n", qs.name, qs.n, k, name, model_name);
        if (ev_generate_remote(db, &rm, &qs, &go, &rep)) rc = cli_fail("eval");
        else fprintf(stderr, "eval: %zu samples generated, %zu already stored\n", rep.generated, rep.existing);
    }
    show_results(db, name, qs.name, as_json, &rc);
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
    static const struct option longs[] = {
        {"db", required_argument, 0, 'd'},          {"model", required_argument, 0, 'm'},
        {"bench", required_argument, 0, 'b'},       {"k", required_argument, 0, 'k'},
        {"temperature", required_argument, 0, 'e'}, {"top-p", required_argument, 0, 'p'},
        {"max-tokens", required_argument, 0, 'x'},  {"name", required_argument, 0, 'n'},
        {"tokenizer", required_argument, 0, 't'},   {"template", required_argument, 0, 'T'},
        {"seed", required_argument, 0, 's'},        {"threads", required_argument, 0, 'J'},
        {"max-batch", required_argument, 0, 'B'},   {"cache-tokens", required_argument, 0, 'c'},
        {"limit", required_argument, 0, 'L'},       {"json", no_argument, 0, 'j'},
        {"model-name", required_argument, 0, 'M'},  {"api-key-env", required_argument, 0, 'K'},
        {"concurrency", required_argument, 0, 'C'}, {"timeout", required_argument, 0, 'o'},
        {"retries", required_argument, 0, 'r'},     {"no-stream", no_argument, 0, 'N'},
        {"device", required_argument, 0, 'D'},      {"gpu-memory-fraction", required_argument, 0, 'G'},
        {"no-cuda-graphs", no_argument, 0, CLI_OPT_NO_CUDA_GRAPHS}, {0, 0, 0, 0}};
    const char *dbp = NULL, *model = NULL, *bench = NULL, *name = NULL, *tok_path = NULL, *served = NULL,
               *key_env = NULL;
    double conc = 8, timeout = 600, retries = 8;
    bool stream = true, remote_opt = false;
    const char *tmpl_spec = NULL;
    ct_template *tmpl = NULL;
    bool as_json = false;
    double k = 4, temp = 0.6, top_p = 0.95, max_tokens = 32768, seed = 0, threads = 0, max_batch = 16, cache = 0, limit = 0,
           gpu_frac = 0;
    te_device dev = TE_DEVICE_CPU;
    bool no_graphs = false;   /* --no-cuda-graphs */
    int c, u = 0;
    optind = 1;
    opterr = 0;
    while (!u && (c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'd': dbp = optarg; break;
        case 'm': model = optarg; break;
        case 'b': bench = optarg; break;
        case 'n': name = optarg; break;
        case 't': tok_path = optarg; break;
        case 'T':
            if (!cli_template_spec_ok(optarg))
                return cli_usage_error("eval", "unknown chat template '%s' (deepseek-r1, qwen, llama3, auto or a file)", optarg);
            tmpl_spec = optarg;
            break;
        case 'k': u = num("--k", optarg, 1, 4096, true, &k); break;
        case 'e': u = num("--temperature", optarg, 0, 100, false, &temp); break;
        case 'p': u = num("--top-p", optarg, 1e-9, 1, false, &top_p); break;
        case 'x': u = num("--max-tokens", optarg, 1, 1 << 24, true, &max_tokens); break;
        case 's': u = num("--seed", optarg, 0, 9007199254740992.0, true, &seed); break;
        case 'J': u = num("--threads", optarg, 1, 1024, true, &threads); break;
        case 'B': u = num("--max-batch", optarg, 1, 65536, true, &max_batch); break;
        case 'c': u = num("--cache-tokens", optarg, 1, 1e12, true, &cache); break;
        case 'L': u = num("--limit", optarg, 1, 1e12, true, &limit); break;
        case 'j': as_json = true; break;
        case 'M': served = optarg; remote_opt = true; break;
        case 'K': key_env = optarg; remote_opt = true; break;
        case 'C': u = num("--concurrency", optarg, 1, 4096, true, &conc); remote_opt = true; break;
        case 'o': u = num("--timeout", optarg, 0.001, 86400, false, &timeout); remote_opt = true; break;
        case 'r': u = num("--retries", optarg, 0, 1000, true, &retries); remote_opt = true; break;
        case 'N': stream = false; remote_opt = true; break;
        case 'D': u = cli_parse_device("eval", optarg, &dev); break;
        case 'G': u = cli_parse_gpu_fraction("eval", optarg, &gpu_frac); break;
        case CLI_OPT_NO_CUDA_GRAPHS: no_graphs = true; break;
        default: return cli_usage_error("eval", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (u) return u;
    if (optind < argc) return cli_usage_error("eval", "unexpected argument '%s'", argv[optind]);
    if (!dbp) return cli_usage_error("eval", "--db DB is required");
    if (!model) return cli_usage_error("eval", "--model local:DIR or an endpoint URL is required");
    if (!bench) return cli_usage_error("eval", "--bench gsm8k|math500|aime24|FILE.jsonl is required");
    if (!strncmp(model, "http://", 7) || !strncmp(model, "https://", 8)) {
        if (rk->rank > 0) return EXIT_OK;   /* an endpoint model: rank 0 alone does the work */
        oai_opts ro = {.url = model, .concurrency = (int)conc, .timeout_s = timeout, .max_retries = (int)retries,
                       .stream = stream, .jitter_seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32)};
        return eval_remote(dbp, bench, name, served, key_env, &ro, (int)k, temp, top_p, max_tokens, seed, limit,
                           as_json);
    }
    if (remote_opt)
        return cli_usage_error("eval", "--model-name, --api-key-env, --concurrency, --timeout, --retries and "
                                       "--no-stream are for endpoint models");
    if (strncmp(model, "local:", 6) || !model[6]) {
        fprintf(stderr, "retort: eval: model '%s': want local:DIR or an http(s):// endpoint URL\n", model);
        return EXIT_RUNTIME;
    }
    const char *dir = model + 6;
    int rc = 0;
    char *model_name = NULL;
    mc_config cfg;
    if (!rt_is_dir(dir)) {   /* messages recorded, so that a rank > 0 alone can say it (cli_ranks_agree) */
        rt_fail(RT_ENOTFOUND, "model directory %s not found", dir);
        rc = cli_fail("eval");
    } else {
        char *abs_dir = realpath(dir, NULL);
        model_name = abs_dir ? rt_malloc(strlen(abs_dir) + 7) : NULL;
        if (!model_name) rc = cli_fail("eval");
        else sprintf(model_name, "local:%s", abs_dir);
        free(abs_dir);
    }
    if (!rc && mc_load(dir, &cfg)) rc = cli_fail("eval: loading the model");
    /* every rank: the model directory and its config — then the ranks agree, and a model that
     * does not split (a dense model on the CPU) is rank 0's alone */
    rc = cli_ranks_agree(rk, rc);
    bool alone = !rc && rk->size > 1 && dev == TE_DEVICE_CPU && cfg.arch != MC_ARCH_DEEPSEEK_V3;
    if (rc || (alone && rk->rank > 0)) {
        free(model_name);
        return rc;
    }
    cli_ranks one = {.rank = 0, .size = 1, .saved_err = -1, .name = "eval"};
    cli_ranks *lr = alone ? &one : rk;   /* the ranks the model runs over */
    char run_name[512];
    if (!name) {
        size_t n = strlen(dir);
        while (n > 1 && dir[n - 1] == '/') n--;
        size_t s = n;
        while (s > 0 && dir[s - 1] != '/') s--;
        snprintf(run_name, sizeof run_name, "%.*s", (int)(n - s), dir + s);
        name = run_name;
    }

    /* every rank: tokenizer, template; rank 0: the database and the questions — then the ranks
     * agree */
    tok_tokenizer *tok = NULL;
    char *def_tok = rt_path_join(dir, "tokenizer.json");
    if (!tok_path) tok_path = def_tok;
    if (!tok_path || !rt_is_file(tok_path)) {
        rt_fail(RT_ENOTFOUND, "no tokenizer: %s not found (give --tokenizer FILE)", tok_path ? tok_path : "tokenizer.json");
        rc = cli_fail("eval");
    } else if (tok_load(tok_path, &tok)) rc = cli_fail("eval: loading the tokenizer");
    ds_db *db = NULL;
    ev_questions qs = {0};
    tp_pool *pool = NULL;
    te_model *m = NULL;
    te_engine *e = NULL;
    if (!rc && mk_check_tokenizer(&cfg, dir, tok, tok_path)) rc = cli_fail("eval");
    /* no --template: the question as raw text (the benchmarks' protocol); auto: the model's own */
    if (!rc && tmpl_spec) rc = cli_template("eval", tmpl_spec, tok_path, tok, true, &tmpl);
    if (!rc && lr->rank == 0) {
        if (db_open(dbp, DB_OPEN_CREATE, &db)) rc = cli_fail("eval");
        if (!rc && ev_run_model_check(db, name, model_name)) rc = cli_fail("eval");
        if (!rc && ev_questions_load(db, bench, &qs)) rc = cli_fail("eval");
        if (!rc && limit > 0) ev_questions_truncate(&qs, (size_t)limit);
    }
    rc = cli_ranks_agree(lr, rc);
    if (!rc) {   /* every rank: the model (its part of it) and the engine */
        int nthreads = cli_ranks_threads(lr, threads);
        if (nthreads < 0 || tp_create(nthreads, &pool)) rc = cli_fail("eval");
        if (!rc) rc = cli_load_teacher(lr, dir, pool, dev, gpu_frac, no_graphs, &m);
        if (!rc && cache == 0) {
            /* room for one question's k samples at full length, at least the engine's default */
            int64_t ctx = cfg.max_position_embeddings, len = (int64_t)max_tokens + 4096;
            if (ctx > 0 && len > ctx) len = ctx;
            cache = (double)len * k > 65536 ? (double)len * k : 65536;
        }
        te_opts eo = {.max_batch = (int)max_batch, .cache_tokens = (int64_t)cache, .tok = tok};
        if (!rc && te_engine_create(m, &eo, &e)) rc = cli_fail("eval");
        rc = cli_ranks_agree(lr, rc);
    }
    cli_ranks_speak(rk);
    if (!rc && lr->rank > 0) rc = follow(lr, e);
    else if (!rc) {
        progress pr = {now_s(), 0};
        ev_gen_opts go = {.run = name, .model = model_name, .k = (int)k, .max_tokens = (int64_t)max_tokens,
                          .sampling = {.temperature = (float)temp, .top_p = (float)top_p}, .seed = (uint64_t)seed,
                          .tok = tok, .tmpl = tmpl, .progress = on_progress, .progress_ctx = &pr, .comm = lr->c};
        ev_gen_report rep;
        char wb[96];
        fprintf(stderr, "eval: %s, %zu questions, k = %d, run %s; model %s\n", qs.name, qs.n, (int)k, name,
                cli_weights(wb, sizeof wb, lr, dev, m));
        int grc = ev_generate(db, e, &qs, &go, &rep);
        if (grc && rep.comm_failed) {   /* the followers may wait in a collective: end the job */
            rc = cli_fail("eval");
            fflush(stdout);
            comm_abort(lr->c, rc);
        } else if (grc) rc = cli_fail("eval");
        else fprintf(stderr, "eval: %zu samples generated, %zu already stored\n", rep.generated, rep.existing);
    }
    if (lr->rank == 0) show_results(db, name, qs.name, as_json, &rc);
    te_engine_free(e);
    te_model_free(m);
    tp_free(pool);
    ev_questions_free(&qs);
    db_close(db);
    ct_template_free(tmpl);
    tok_free(tok);
    free(def_tok);
    free(model_name);
    if (!rc && (fflush(stdout) || ferror(stdout))) {
        fprintf(stderr, "retort: eval: writing output failed\n");
        return EXIT_RUNTIME;
    }
    return rc;
}
