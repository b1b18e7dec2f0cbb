/* cli/cmd_serve.c — `retort serve`: the model behind an OpenAI-compatible HTTP API
 * (teacher/server.h) until SIGTERM or SIGINT, which drain the requests in flight and exit 0.
 *
 * The chat template is --template, or the tokenizer's own chat_template (tokenizer_config.json
 * beside tokenizer.json), or the built-in its special tokens fit (<｜Assistant｜>: deepseek-r1,
 * <|im_start|>: qwen, <|start_header_id|>: llama3) — cli_template(), as every command; without
 * one, chat requests get 400 and completions work. Once listening it prints
 * "retort serve: listening on http://HOST:PORT" on stderr (with --port 0, the port chosen).
 * --max-connections, --max-connections-per-ip and --header-timeout go to the server (see
 * teacher/server.h); the soft open-file limit is raised to fit --max-connections (an explicit
 * value beyond the hard limit is an error; the default shrinks to fit). An empty --api-key or
 * RETORT_API_KEY is a usage error: it must never mean "no authentication".
 *
 * Under mpirun (a DeepSeek-V3 model split over the ranks, teacher/parallel_engine.h) every
 * rank loads its part and makes the same engine; rank 0 serves HTTP and its engine thread
 * steps through pe_step, the others follow (pe_follow). Setup failures are agreed
 * (cli/ranks.h: one line, every rank exits); SIGTERM/SIGINT reach rank 0 (the followers
 * block them too, and keep following): it drains, then ends the followers, and all exit 0. A
 * lockstep failure mid-run ends the job (comm_abort).
 */
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli/cli.h"
#include "cli/ranks.h"
#include "core/alloc.h"
#include "core/chat_template.h"
#include "core/fsutil.h"
#include "core/model_check.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "core/tokenizer.h"
#include "teacher/engine.h"
#include "teacher/parallel_engine.h"
#include "teacher/server.h"

static int parse_num(const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !isfinite(v) || v < lo || v > hi || v != floor(v))
        return cli_usage_error("serve", "%s wants a whole number in [%g, %g], not '%s'", opt, lo, hi, s);
    *out = v;
    return 0;
}

static const char *base_name(const char *dir, char *buf, size_t cap) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t a = n;
    while (a > 0 && dir[a - 1] != '/') a--;
    snprintf(buf, cap, "%.*s", (int)(n - a), dir + a);
    return buf;
}

/* Every connection is a descriptor: raises the soft open-file limit for `want` connections (0:
 * the default 4096, lowered to what the hard limit allows) and says how many fit. */
static int limit_connections(double want, int *out) {
    enum { SPARE = 128 };   /* model shards, the listening socket, epoll, MPI, … */
    int n = want > 0 ? (int)want : 4096;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) {
        *out = n;
        return 0;
    }
    rlim_t need = (rlim_t)n + SPARE;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        rlim_t cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
        struct rlimit nl = {cur, rl.rlim_max};
        if (!setrlimit(RLIMIT_NOFILE, &nl)) rl.rlim_cur = cur;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        if (want > 0) {
            fprintf(stderr, "retort: serve: --max-connections %d needs %llu open files; the limit is %llu (ulimit -n)\n", n,
                    (unsigned long long)need, (unsigned long long)rl.rlim_cur);
            return -1;
        }
        n = rl.rlim_cur > 2 * SPARE ? (int)(rl.rlim_cur - SPARE) : SPARE;
    }
    *out = n;
    return 0;
}

/* Rank 0's engine thread lost the lockstep: a follower may wait in a collective. */
static void comm_failure(void *user, const char *msg) {
    fprintf(stderr, "retort: serve: %s\n", msg);
    comm_abort(user, EXIT_RUNTIME);
}

static int serve(cli_ranks *rk, int argc, char **argv);

int cmd_serve(int argc, char **argv) {
    cli_ranks rk;
    int rc = cli_ranks_open("serve", &rk);
    if (rc) return rc;
    rc = serve(&rk, argc, argv);
    cli_ranks_close(&rk);
    return rc;
}

static int serve(cli_ranks *rk, int argc, char **argv) {
    if (cli_wants_help("serve", argc, argv)) return EXIT_OK;
    cli_getopt g;
    cli_getopt_init("serve", 0, &g);
    const char *model = NULL, *host = "127.0.0.1", *key = getenv("RETORT_API_KEY"), *tok_path = NULL, *name = NULL;
    double port = 8000, max_batch = 16, cache = 65536, threads = 0, max_body = 4 << 20, max_conns = 0, per_ip = 512;
    double header_timeout = 10, gpu_frac = 0;
    te_device dev = TE_DEVICE_CPU;
    bool no_graphs = false;   /* --no-cuda-graphs */
    const char *tmpl_spec = NULL;
    ct_template *tmpl = NULL;
    int c, u = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1 && !u) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'H': host = optarg; break;
        case 'k':
            if (!*optarg) return cli_usage_error("serve", "--api-key is empty (an unset variable?); leave it out to serve without a key");
            key = optarg;
            break;
        case 't': tok_path = optarg; break;
        case 'N': name = optarg; break;
        case 'p': u = parse_num("--port", optarg, 0, 65535, &port); break;
        case 'b': u = parse_num("--max-batch", optarg, 1, 65536, &max_batch); break;
        case 'c': u = parse_num("--cache-tokens", optarg, 1, 1e12, &cache); break;
        case 'J': u = parse_num("--threads", optarg, 1, 1024, &threads); break;
        case 'B': u = parse_num("--max-body", optarg, 64, 1e12, &max_body); break;
        case 'C': u = parse_num("--max-connections", optarg, 1, 1 << 20, &max_conns); break;
        case 'I': u = parse_num("--max-connections-per-ip", optarg, 1, 1 << 20, &per_ip); break;
        case 'h': {
            char *end;
            header_timeout = strtod(optarg, &end);
            if (!*optarg || *end || !isfinite(header_timeout) || header_timeout < 0.1 || header_timeout > 3600)
                return cli_usage_error("serve", "--header-timeout wants seconds in [0.1, 3600], not '%s'", optarg);
            break;
        }
        case 'T':
            if (!cli_template_spec_ok(optarg))
                return cli_usage_error("serve", "unknown chat template '%s' (deepseek-r1, qwen, llama3, auto or a file)", optarg);
            tmpl_spec = optarg;
            break;
        case 'D': u = cli_parse_device("serve", optarg, &dev); break;
        case 'G': u = cli_parse_gpu_fraction("serve", optarg, &gpu_frac); break;
        case CLI_OPT_NO_CUDA_GRAPHS: no_graphs = true; break;
        default: return cli_usage_error("serve", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (u) return u;
    if (optind < argc) return cli_usage_error("serve", "unexpected argument '%s'", argv[optind]);
    if (!model) return cli_usage_error("serve", "--model DIR is required");
    if (!*host) return cli_usage_error("serve", "--host wants an address");
    if (key && !*key)
        return cli_usage_error("serve", "RETORT_API_KEY is set but empty; unset it to serve without a key");
    int conns = 0;   /* --max-connections, as far as the open-file limit allows */
    if (limit_connections(max_conns, &conns)) return EXIT_RUNTIME;

    tok_tokenizer *tok = NULL;
    char *def_tok = rt_path_join(model, "tokenizer.json");
    if (!tok_path && def_tok && rt_is_file(def_tok)) tok_path = def_tok;
    int rc = 0;
    if (!tok_path) {
        fprintf(stderr, "retort: serve: %s has no tokenizer.json (give --tokenizer FILE)\n", model);
        rc = EXIT_RUNTIME;
    } else if (tok_load(tok_path, &tok)) rc = cli_fail("serve: loading the tokenizer");
    mc_config mcfg;   /* the tokenizer must fit the model's vocabulary (core/model_check.h) */
    if (!rc && mc_load(model, &mcfg)) rc = cli_fail("serve: loading the model");
    if (!rc && mk_check_tokenizer(&mcfg, model, tok, tok_path)) rc = cli_fail("serve");
    if (!rc) rc = cli_template("serve", tmpl_spec, tok_path, tok, false, &tmpl);
    free(def_tok);   /* tok_path may point at it */
    tok_path = NULL;
    rc = cli_ranks_agree(rk, rc);
    /* SIGTERM and SIGINT are taken by sigwait below: block them before any thread starts */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    tp_pool *pool = NULL;
    te_model *m = NULL;
    te_engine *follower = NULL;
    srv *s = NULL;
    char nb[256];
    srv_opts o = {.host = host, .port = (int)port, .api_key = key, .model_name = name ? name : base_name(model, nb, sizeof nb),
                  .max_body = (size_t)max_body, .max_connections = conns, .max_connections_per_ip = (int)per_ip,
                  .header_timeout = header_timeout, .have_template = tmpl != NULL, .tmpl = tmpl,
                  .engine = {.max_batch = (int)max_batch, .cache_tokens = (int64_t)cache},
                  .comm = rk->c, .on_comm_failure = comm_failure, .comm_user = rk->c};
    if (!rc) {   /* every rank: the model (its part); the followers their engine */
        int nthreads = cli_ranks_threads(rk, threads);
        if (nthreads < 0 || tp_create(nthreads, &pool)) rc = cli_fail("serve");
        if (!rc) rc = cli_load_teacher(rk, model, pool, dev, gpu_frac, no_graphs, &m);
        te_opts eo = o.engine;
        eo.tok = tok;
        if (!rc && rk->rank > 0 && te_engine_create(m, &eo, &follower)) rc = cli_fail("serve");
        rc = cli_ranks_agree(rk, rc);
    }
    cli_ranks_speak(rk);
    if (!rc && rk->rank > 0) {   /* until rank 0's engine thread ends */
        if (pe_follow(rk->c, follower)) {
            fprintf(stderr, "retort: serve: rank %d of %d: %s\n", rk->rank, rk->size, rt_errmsg());
            comm_abort(rk->c, EXIT_RUNTIME);
            rc = EXIT_RUNTIME;
        }
    } else if (!rc && srv_start(m, tok, &o, &s)) {
        rc = cli_fail("serve");
        if (rk->size > 1 && pe_end(rk->c, NULL)) comm_abort(rk->c, rc);   /* the followers stop */
    } else if (!rc) {
        bool v6 = strchr(host, ':') != NULL;
        char par[48] = "";
        if (rk->size > 1) snprintf(par, sizeof par, ", split over %d ranks", rk->size);
        double wb = (double)te_model_resident_bytes(m);
        fprintf(stderr, "retort serve: model %s, chat template %s%s%s; on %s, %.*f %s of weights in memory\n",
                o.model_name, tmpl ? ct_template_name(tmpl) : "none", o.api_key && *o.api_key ? ", API key required" : "",
                par, te_device_name(dev), wb < 1e9 ? 1 : 2, wb < 1e9 ? wb / 1e6 : wb / 1e9, wb < 1e9 ? "MB" : "GB");
        fprintf(stderr, "retort serve: listening on http://%s%s%s:%d\n", v6 ? "[" : "", host, v6 ? "]" : "", srv_port(s));
        int sig = 0;
        sigwait(&sigs, &sig);
        fprintf(stderr, "retort serve: %s: finishing the requests in flight\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
        srv_stop(s);
        fprintf(stderr, "retort serve: stopped\n");
    }
    te_engine_free(follower);
    te_model_free(m);
    tp_free(pool);
    ct_template_free(tmpl);
    tok_free(tok);
    return rc;
}
