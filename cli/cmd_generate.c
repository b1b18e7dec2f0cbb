/* cli/cmd_generate.c — `retort generate`, two modes:
 *   --jsonl PROMPTS: prompts (JSONL) through the in-process engine (teacher/engine.h), one
 *     JSONL line per sample on stdout, progress on stderr. Every input line is read and
 *     checked (and tokenized) before the model runs, so bad input stops the command with one
 *     line naming the input line and no output at all.
 *   --db DB --teacher local:DIR|URL: the database's pending prompts through the generation
 *     driver (teacher/driver.h), locally or against an OpenAI-compatible endpoint; SIGINT /
 *     SIGTERM stop it cleanly (exit 130).
 *
 * Under mpirun (teacher/parallel_engine.h) every rank runs this with the same arguments: a
 * DeepSeek-V3 model is split over the ranks (te_model_load_comm), every rank builds the same
 * engine (tokenizer included), rank 0 alone reads the prompts / the database, writes the
 * output / the samples and prints progress, and drives the engine through pe_step while the
 * others follow (pe_follow). Ranks > 0 print nothing during setup: the ranks agree on setup
 * failures (cli/ranks.h), so one line is printed — rank 0's, or the lowest failing rank's when
 * rank 0 is fine — and every rank exits. A failure mid-run ends the job with comm_abort, as
 * the others may wait in a collective. With an endpoint teacher (--db --teacher URL) there is
 * nothing to split: ranks > 0 exit 0 at once and rank 0 does the work.
 *
 * --jsonl with --speculative mtp: each prompt alone through teacher/speculative.h (sd_greedy on
 * the CPU engine, sd_greedy_cuda on the GPU engine), the model loaded with its MTP layer; greedy
 * only (--temperature 0, --n 1, no --logprobs, no --stop), one rank, a deepseek_v3 model with
 * MTP weights — anything else is one line before the model loads. It stops at the config's eos
 * ids (not with --ignore-eos); the progress line adds the drafts accepted.
 */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/ranks.h"
#include "core/alloc.h"
#include "core/chat_template.h"
#include "core/clock.h"
#include "core/comm.h"
#include "core/fsutil.h"
#include "core/model_check.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "core/tokenizer.h"
#include "dataset/db.h"
#include "kernels/matmul.h"
#include "teacher/driver.h"
#include "teacher/engine.h"
#include "teacher/oai_client.h"
#include "teacher/deepseek.h"
#include "teacher/ds_cuda.h"
#include "teacher/parallel_engine.h"
#include "teacher/speculative.h"

#define MAX_STOP 16

typedef struct {
    int32_t *ids;
    size_t n;
} prompt;

typedef struct {
    prompt *p;
    size_t n, cap;
} prompts;

static void prompts_free(prompts *ps) {
    for (size_t i = 0; i < ps->n; i++) free(ps->p[i].ids);
    free(ps->p);
}

static int line_error(size_t line, const char *fmt, const char *detail) {
    fprintf(stderr, "retort: generate: line %zu: ", line);
    fprintf(stderr, fmt, detail);
    fputc('\n', stderr);
    return EXIT_RUNTIME;
}

/* One input line → token ids. Returns 0 or an exit status (message printed). */
static int parse_prompt(const char *s, size_t len, size_t line, const tok_tokenizer *tok, const ct_template *tmpl,
                        int64_t V, prompt *out) {
    json_error_t je;
    json_t *j = json_loadb(s, len, JSON_REJECT_DUPLICATES, &je);
    if (!j) return line_error(line, "invalid JSON: %s", je.text);
    int rc = 0;
    const json_t *ids = json_object_get(j, "prompt_ids"), *text = json_object_get(j, "prompt"),
                 *msgs = json_object_get(j, "messages");
    *out = (prompt){0};
    if (!json_is_object(j)) rc = line_error(line, "%s", "expected a JSON object");
    else if (!!ids + !!text + !!msgs != 1)
        rc = line_error(line, "%s", "expected exactly one of \"prompt\", \"messages\", \"prompt_ids\"");
    else if (ids) {
        size_t n = json_is_array(ids) ? json_array_size(ids) : 0;
        if (!n) rc = line_error(line, "%s", "\"prompt_ids\" must be a non-empty array of token ids");
        else if (!(out->ids = rt_malloc(n * sizeof(int32_t)))) rc = cli_fail("generate");
        for (size_t i = 0; i < n && !rc; i++) {
            const json_t *x = json_array_get(ids, i);
            json_int_t v = json_is_integer(x) ? json_integer_value(x) : -1;
            if (v < 0 || v >= V) {
                char what[64];
                snprintf(what, sizeof what, "%zu", i);
                rc = line_error(line, "prompt_ids[%s] is not a token id of this model", what);
            } else out->ids[i] = (int32_t)v;
        }
        out->n = n;
    } else if (!tok) {
        rc = line_error(line, "%s", text ? "\"prompt\" text needs a tokenizer (--tokenizer, or DIR/tokenizer.json)"
                                         : "\"messages\" need a tokenizer (--tokenizer, or DIR/tokenizer.json)");
    } else if (text) {
        if (!json_is_string(text)) rc = line_error(line, "%s", "\"prompt\" must be a string");
        else if (tok_encode(tok, json_string_value(text), json_string_length(text), true, &out->ids, &out->n))
            rc = line_error(line, "tokenizing the prompt: %s", rt_errmsg());
    } else {
        size_t n = json_is_array(msgs) ? json_array_size(msgs) : 0;
        ct_message *m = n ? rt_calloc(n, sizeof *m) : NULL;
        if (!tmpl) rc = line_error(line, "%s", "\"messages\" need a chat template (--template)");
        else if (!n) rc = line_error(line, "%s", "\"messages\" must be a non-empty array");
        else if (!m) rc = cli_fail("generate");
        for (size_t i = 0; i < n && !rc; i++) {
            const json_t *x = json_array_get(msgs, i), *role = json_object_get(x, "role"),
                         *content = json_object_get(x, "content"), *rea = json_object_get(x, "reasoning_content");
            if (!json_is_string(role) || !json_is_string(content) || (rea && !json_is_null(rea) && !json_is_string(rea)))
                rc = line_error(line, "%s", "each message needs string \"role\" and \"content\"");
            else m[i] = (ct_message){json_string_value(role), json_string_value(content),
                                     json_is_string(rea) ? json_string_value(rea) : NULL};
        }
        uint8_t *mask = NULL;
        if (!rc && ct_template_render(tok, tmpl, m, n, true, &out->ids, &mask, &out->n))
            rc = line_error(line, "rendering the messages: %s", rt_errmsg());
        free(mask);
        free(m);
    }
    if (!rc && out->n == 0) rc = line_error(line, "%s", "the prompt has no tokens");
    if (!rc)
        for (size_t i = 0; i < out->n && !rc; i++)
            if (out->ids[i] >= V) rc = line_error(line, "%s", "the tokenizer gives ids beyond the model's vocabulary");
    if (rc) {
        free(out->ids);
        out->ids = NULL;
    }
    json_decref(j);
    return rc;
}

static int read_prompts(const char *path, const tok_tokenizer *tok, const ct_template *tmpl, int64_t V, prompts *ps) {
    FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
    if (!f) {
        fprintf(stderr, "retort: generate: cannot open %s\n", path);
        return EXIT_RUNTIME;
    }
    char *buf = NULL;
    size_t cap = 0, line = 0;
    ssize_t len;
    int rc = 0;
    while (!rc && (len = getline(&buf, &cap, f)) >= 0) {
        line++;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) len--;
        size_t k = 0;
        while (k < (size_t)len && (buf[k] == ' ' || buf[k] == '\t')) k++;
        if (k == (size_t)len) continue;   /* blank line */
        if (rt_grow((void **)&ps->p, &ps->cap, ps->n + 1, sizeof *ps->p)) rc = cli_fail("generate");
        else if (!(rc = parse_prompt(buf, (size_t)len, line, tok, tmpl, V, &ps->p[ps->n]))) ps->n++;
    }
    if (!rc && ferror(f)) {
        fprintf(stderr, "retort: generate: reading %s failed\n", path);
        rc = EXIT_RUNTIME;
    }
    free(buf);
    if (f != stdin) fclose(f);
    if (!rc && ps->n == 0) {
        fprintf(stderr, "retort: generate: %s holds no prompts\n", path);
        rc = EXIT_RUNTIME;
    }
    return rc;
}

static void put_json(FILE *out, const json_t *j) {
    char *d = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    fputs(d ? d : "null", out);
    free(d);
}

static void write_result(FILE *out, const te_result *r, const tok_tokenizer *tok, const char *const *stop, int lp_k,
                         bool want_lp) {
    fprintf(out, "{\"index\": %llu, \"sample\": %d, \"ids\": [", (unsigned long long)r->tag, r->sample);
    for (int64_t i = 0; i < r->n_ids; i++) fprintf(out, i ? ", %d" : "%d", r->ids[i]);
    fputs("], \"text\": ", out);
    char *text = NULL;
    size_t len = 0;
    if (tok && !tok_decode(tok, r->ids, (size_t)r->n_ids, true, &text, &len)) {
        if (r->stop_string >= 0) {   /* the text ends before the stop string */
            char *at = strstr(text, stop[r->stop_string]);
            if (at) len = (size_t)(at - text);
        }
        json_t *j = json_stringn(text, len);
        put_json(out, j);
        json_decref(j);
    } else {
        fputs("null", out);
    }
    free(text);
    fprintf(out, ", \"finish_reason\": \"%s\"", r->finish == TE_FINISH_STOP ? "stop" : "length");
    if (want_lp) {
        fputs(", \"logprobs\": [", out);
        for (int64_t i = 0; i < r->n_ids; i++) {
            fprintf(out, "%s{\"id\": %d, \"logprob\": %.9g", i ? ", " : "", r->ids[i], (double)r->logprobs[i]);
            if (lp_k > 0) {
                fputs(", \"top\": [", out);
                for (int k = 0; k < lp_k; k++)
                    fprintf(out, "%s[%d, %.9g]", k ? ", " : "", r->top_ids[i * lp_k + k], (double)r->top_logprobs[i * lp_k + k]);
                fputc(']', out);
            }
            fputc('}', out);
        }
        fputc(']', out);
    }
    fputs("}\n", out);
}

static int parse_num(const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !isfinite(v) || v < lo || v > hi)
        return cli_usage_error("generate", "%s wants a number in [%g, %g], not '%s'", opt, lo, hi, s);
    *out = v;
    return 0;
}

/* ---- ranks (mpirun) ---- */

/* A follower's run: pe_follow until rank 0 ends; a failure ends the job. */
static int follow(cli_ranks *r, te_engine *e) {
    if (!pe_follow(r->c, e)) return EXIT_OK;
    fprintf(stderr, "retort: generate: rank %d of %d: %s\n", r->rank, r->size, rt_errmsg());
    comm_abort(r->c, EXIT_RUNTIME);
    return EXIT_RUNTIME;
}

/* Rank 0: a failure of the lockstep (its message printed) ends every rank. */
static int lockstep_failed(cli_ranks *r, const char *what) {
    int rc = cli_fail(what);
    fflush(stdout);
    comm_abort(r->c, rc);
    return rc;
}

static int generate_jsonl(cli_ranks *rk, int argc, char **argv);
static int generate_db(cli_ranks *rk, int argc, char **argv);

int cmd_generate(int argc, char **argv) {
    cli_ranks rk;
    int orc = cli_ranks_open("generate", &rk);
    if (orc) return orc;
    int rc = generate_jsonl(&rk, argc, argv);
    cli_ranks_close(&rk);
    return rc;
}

/* ---- --jsonl mode ---- */

typedef struct {
    const char *model, *tok_path, *jsonl, *stop[MAX_STOP], *tmpl_spec;
    int n_stop;
    bool ignore_eos, no_graphs;   /* --ignore-eos, --no-cuda-graphs */
    bool spec;                    /* --speculative mtp */
    double n, max_tokens, temp, top_p, top_k, min_p, max_batch, lp, threads, cache, gpu_frac;
    uint64_t seed;
    te_device dev;
} jsonl_args;

/* Returns 0 or an exit status (message printed). */
static int parse_jsonl_args(int argc, char **argv, jsonl_args *a) {
    *a = (jsonl_args){.n = 1, .max_tokens = 256, .temp = 1, .top_p = 1, .max_batch = 16, .lp = -1, .cache = 65536,
                      .dev = TE_DEVICE_CPU};
    cli_getopt g;
    cli_getopt_init("generate", CO_MODE1, &g);
    int c, u = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1 && !u) {
        switch (c) {
        case 'm': a->model = optarg; break;
        case 't': a->tok_path = optarg; break;
        case 'j': a->jsonl = optarg; break;
        case 'T':
            if (!cli_template_spec_ok(optarg))
                return cli_usage_error("generate", "unknown chat template '%s' (deepseek-r1, qwen, llama3, auto or a file)", optarg);
            a->tmpl_spec = optarg;
            break;
        case 'n': u = parse_num("--n", optarg, 1, 4096, &a->n); break;
        case 'x': u = parse_num("--max-tokens", optarg, 1, 1 << 24, &a->max_tokens); break;
        case 'e': u = parse_num("--temperature", optarg, 0, 100, &a->temp); break;
        case 'p': u = parse_num("--top-p", optarg, 1e-9, 1, &a->top_p); break;
        case 'k': u = parse_num("--top-k", optarg, 0, 1 << 30, &a->top_k); break;
        case 'i': u = parse_num("--min-p", optarg, 0, 1, &a->min_p); break;
        case 's': u = cli_parse_seed("generate", optarg, &a->seed); break;
        case 'b': u = parse_num("--max-batch", optarg, 1, 65536, &a->max_batch); break;
        case 'l': u = parse_num("--logprobs", optarg, 0, TE_MAX_TOP_LOGPROBS, &a->lp); break;
        case 'J': u = parse_num("--threads", optarg, 1, 1024, &a->threads); break;
        case 'c': u = parse_num("--cache-tokens", optarg, 1, 1e12, &a->cache); break;
        case 'S':
            if (a->n_stop == MAX_STOP) return cli_usage_error("generate", "at most %d --stop strings", MAX_STOP);
            if (!*optarg) return cli_usage_error("generate", "--stop wants a non-empty string");
            a->stop[a->n_stop++] = optarg;
            break;
        case 'I': a->ignore_eos = true; break;
        case 'D': u = cli_parse_device("generate", optarg, &a->dev); break;
        case 'G': u = cli_parse_gpu_fraction("generate", optarg, &a->gpu_frac); break;
        case CLI_OPT_NO_CUDA_GRAPHS: a->no_graphs = true; break;
        case CLI_OPT_SPECULATIVE:
            if (strcmp(optarg, "mtp")) return cli_usage_error("generate", "--speculative wants mtp, not '%s'", optarg);
            a->spec = true;
            break;
        default: return cli_usage_error("generate", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (u) return u;
    if (a->spec && (a->temp != 0 || a->n != 1 || a->lp >= 0 || a->n_stop > 0))
        return cli_usage_error("generate", "--speculative mtp decodes greedily, one sample a prompt: it takes "
                               "--temperature 0 and --n 1, without --logprobs or --stop");
    const char *ints[] = {"--n", "--max-tokens", "--top-k", "--max-batch", "--logprobs", "--threads", "--cache-tokens"};
    double vals[] = {a->n, a->max_tokens, a->top_k, a->max_batch, a->lp, a->threads, a->cache};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        if (vals[i] != floor(vals[i])) return cli_usage_error("generate", "%s wants a whole number", ints[i]);
    if (optind < argc) return cli_usage_error("generate", "unexpected argument '%s'", argv[optind]);
    if (!a->model) return cli_usage_error("generate", "--model DIR is required");
    if (!a->jsonl) return cli_usage_error("generate", "--jsonl PROMPTS is required");
    return 0;
}

/* What --jsonl mode builds before it runs; freed by jsonl_free. */
typedef struct {
    tok_tokenizer *tok;
    ct_template *tmpl;
    prompts ps;
    tp_pool *pool;
    te_model *m;
    te_engine *e;
} jsonl_run;

static void jsonl_free(jsonl_run *r) {
    te_engine_free(r->e);
    te_model_free(r->m);
    tp_free(r->pool);
    ct_template_free(r->tmpl);
    tok_free(r->tok);
    prompts_free(&r->ps);
}

/* Every rank: config, tokenizer; rank 0: the prompts — then the ranks agree; then every rank
 * the model (its part of it) and the engine. Returns an exit status (message printed). */
static int jsonl_setup(cli_ranks *rk, const jsonl_args *a, jsonl_run *r) {
    mc_config cfg;
    const char *tok_path = a->tok_path;
    int rc = 0;
    if (mc_load(a->model, &cfg)) rc = cli_fail("generate: loading the model");
    char *def_tok = rt_path_join(a->model, "tokenizer.json");
    if (!tok_path && def_tok && rt_is_file(def_tok)) tok_path = def_tok;
    if (!rc && tok_path && tok_load(tok_path, &r->tok)) rc = cli_fail("generate: loading the tokenizer");
    if (!rc && r->tok && mk_check_tokenizer(&cfg, a->model, r->tok, tok_path)) rc = cli_fail("generate");
    if (!rc && a->n_stop > 0 && !r->tok)
        rc = cli_usage_error("generate", "--stop needs a tokenizer (--tokenizer, or DIR/tokenizer.json)");
    if (!rc) rc = cli_template("generate", a->tmpl_spec, tok_path, r->tok, false, &r->tmpl);
    if (!rc && rk->rank == 0) rc = read_prompts(a->jsonl, r->tok, r->tmpl, cfg.vocab_size, &r->ps);
    free(def_tok);
    rc = cli_ranks_agree(rk, rc);
    if (rc) return rc;
    int nthreads = cli_ranks_threads(rk, a->threads);
    if (nthreads < 0 || tp_create(nthreads, &r->pool)) rc = cli_fail("generate");
    if (a->spec) return rc;   /* its model: spec_run */
    if (!rc) rc = cli_load_teacher(rk, a->model, r->pool, a->dev, a->gpu_frac, a->no_graphs, &r->m);
    te_opts eo = {.max_batch = (int)a->max_batch, .cache_tokens = (int64_t)a->cache, .tok = r->tok};
    if (!rc && te_engine_create(r->m, &eo, &r->e)) rc = cli_fail("generate");
    return cli_ranks_agree(rk, rc);
}

/* --speculative mtp: the model with its MTP layer on a->dev, then each prompt through sd_greedy
 * (cpu) or sd_greedy_cuda; one line per sample as write_result writes it, a progress line with
 * the drafts accepted every 2 s and at the end. Returns an exit status (message printed). */
static int spec_run(const jsonl_args *a, jsonl_run *r) {
    mc_config c;
    if (mc_load(a->model, &c)) return cli_fail("generate");
    if (c.arch != MC_ARCH_DEEPSEEK_V3 || c.num_nextn_predict_layers < 1) {
        fprintf(stderr, "retort: generate: --speculative mtp needs a deepseek_v3 model with an MTP layer "
                        "(num_nextn_predict_layers >= 1); %s is %s with %lld\n", a->model, c.model_type,
                (long long)c.num_nextn_predict_layers);
        return EXIT_RUNTIME;
    }
    ds_model *cm = NULL;
    dsc_model *gm = NULL;
    if (a->dev == TE_DEVICE_CUDA) {
        dsc_load_opts o = {.memory_fraction = a->gpu_frac, .load_mtp = true};
        if (dsc_load(a->model, &o, &gm)) return cli_fail("generate");
    } else {
        ds_load_opts o = {.pool = r->pool, .load_mtp = true};
        if (ds_load(a->model, &o, &cm)) return cli_fail("generate");
        if (!ds_has_mtp(cm)) {
            ds_free(cm);
            fprintf(stderr, "retort: generate: --speculative mtp: %s has no MTP weights (model.layers.%lld.*)\n",
                    a->model, (long long)c.num_hidden_layers);
            return EXIT_RUNTIME;
        }
    }
    int rc = mk_check_weights(a->model, r->pool) ? cli_fail("generate") : 0;
    int32_t stop[8];
    int n_stop = 0;
    for (int i = 0; !a->ignore_eos && i < c.n_eos && i < 8; i++) stop[n_stop++] = (int32_t)c.eos_token_ids[i];
    int32_t *out = rt_malloc((size_t)a->max_tokens * sizeof(int32_t));
    if (!rc && !out) rc = cli_fail("generate");
    double t0 = now_s(), last = t0;
    int64_t tokens = 0, drafted = 0, accepted = 0;
    for (size_t i = 0; !rc && i < r->ps.n; i++) {
        int64_t np = (int64_t)r->ps.p[i].n, room = c.max_position_embeddings - np - 2;
        int64_t max_new = (int64_t)a->max_tokens < room ? (int64_t)a->max_tokens : room, n = 0;
        sd_stats st;
        if (max_new < 1) {
            fprintf(stderr, "retort: generate: prompt %zu: %lld tokens leave no room in the context of %lld\n", i + 1,
                    (long long)np, (long long)c.max_position_embeddings);
            rc = EXIT_RUNTIME;
            break;
        }
        int e = gm ? sd_greedy_cuda(gm, r->ps.p[i].ids, np, max_new, stop, n_stop, NULL, NULL, out, &n, &st)
                   : sd_greedy(cm, r->ps.p[i].ids, np, max_new, stop, n_stop, NULL, NULL, out, &n, &st);
        if (e) {
            fprintf(stderr, "retort: generate: prompt %zu: %s\n", i + 1, rt_errmsg());
            rc = EXIT_RUNTIME;
            break;
        }
        bool stopped = false;
        for (int k = 0; n > 0 && k < n_stop; k++) stopped = stopped || out[n - 1] == stop[k];
        te_result res = {.tag = i, .ids = out, .n_ids = n, .finish = stopped ? TE_FINISH_STOP : TE_FINISH_LENGTH,
                         .stop_string = -1, .n_prompt = np};
        write_result(stdout, &res, r->tok, NULL, 0, false);
        tokens += n, drafted += st.drafted, accepted += st.accepted;
        double t = now_s();
        if (t - last >= 2.0 || i + 1 == r->ps.n) {
            fprintf(stderr, "generate: %zu/%zu samples, %lld tokens, %.1f tokens/s, MTP drafts accepted %lld/%lld "
                            "(%.1f%%), greedy on %s\n", i + 1, r->ps.n, (long long)tokens,
                    (double)tokens / (t - t0 > 1e-9 ? t - t0 : 1e-9), (long long)accepted, (long long)drafted,
                    drafted ? 100.0 * (double)accepted / (double)drafted : 0.0, te_device_name(a->dev));
            last = t;
        }
    }
    free(out);
    ds_free(cm);
    dsc_free(gm);
    return rc;
}

/* Rank 0: steps the engine until every request is done, writing each sample as it finishes
 * and a progress line every 2 s. src: the lockstep's per-request refusals (NULL alone). */
static int jsonl_loop(cli_ranks *rk, const jsonl_args *a, jsonl_run *r, te_request *rq, int *src) {
    bool par = rk->size > 1;
    int rc = 0;
    /* alone: every prompt is submitted now; in lockstep, with the first step */
    for (size_t i = 0; !par && i < r->ps.n && !rc; i++)
        if (te_submit(r->e, &rq[i])) {
            fprintf(stderr, "retort: generate: prompt %zu: %s\n", i + 1, rt_errmsg());
            rc = EXIT_RUNTIME;
        }
    pe_input first = {.submit = rq, .n_submit = r->ps.n};
    const pe_input *in = par ? &first : NULL;
    double t0 = now_s(), last = t0;
    bool said = false;   /* the first progress line also says where the model runs */
    int lp_k = a->lp > 0 ? (int)a->lp : 0;
    size_t total = r->ps.n * (size_t)a->n, done = 0;
    while (!rc && (in || te_busy(r->e))) {
        te_result *res;
        size_t k;
        bool end;
        if (par ? pe_step(rk->c, r->e, in, in ? src : NULL, &res, &k, &end) : te_step(r->e, &res, &k)) {
            rc = par ? lockstep_failed(rk, "generate") : cli_fail("generate");
            break;
        }
        for (size_t i = 0; in && i < r->ps.n && !rc; i++)
            if (src[i]) {   /* refused on every rank; its message again (rank 0's engine ends anyway) */
                te_submit(r->e, &rq[i]);
                fprintf(stderr, "retort: generate: prompt %zu: %s\n", i + 1, rt_errmsg());
                rc = EXIT_RUNTIME;
            }
        in = NULL;
        for (size_t i = 0; i < k && !rc; i++) write_result(stdout, &res[i], r->tok, a->stop, lp_k, a->lp >= 0);
        done += rc ? 0 : k;
        te_results_free(res, k);
        double t = now_s();
        if (!rc && (t - last >= 2.0 || !te_busy(r->e))) {
            te_stats st;
            te_stats_get(r->e, &st);
            char wb[128] = "", w[96];
            if (!said) snprintf(wb, sizeof wb, "; model %s", cli_weights(w, sizeof w, rk, a->dev, r->m));
            said = true;
            fprintf(stderr, "generate: %zu/%zu samples, %lld tokens, %.1f tokens/s, %d running, %d queued%s\n", done,
                    total, (long long)st.generated_tokens, (double)st.generated_tokens / (t - t0 > 1e-9 ? t - t0 : 1e-9),
                    st.running, st.queued, wb);
            last = t;
        }
    }
    return rc;
}

static int generate_jsonl(cli_ranks *rk, int argc, char **argv) {
    if (cli_wants_help("generate", argc, argv)) return EXIT_OK;
    bool db_mode = false, jsonl_mode = false;
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++) {
        if (!strcmp(argv[i], "--db") || !strncmp(argv[i], "--db=", 5)) db_mode = true;
        if (!strcmp(argv[i], "--jsonl") || !strncmp(argv[i], "--jsonl=", 8)) jsonl_mode = true;
    }
    if (db_mode && jsonl_mode) return cli_usage_error("generate", "--db and --jsonl are mutually exclusive");
    if (db_mode) return generate_db(rk, argc, argv);
    jsonl_args a;
    int rc = parse_jsonl_args(argc, argv, &a);
    if (rc) return rc;
    jsonl_run r = {0};
    if (a.spec && rk->size > 1) return cli_usage_error("generate", "--speculative mtp runs on one rank (not under mpirun)");
    rc = jsonl_setup(rk, &a, &r);
    if (a.spec) {
        if (!rc) rc = spec_run(&a, &r);
        jsonl_free(&r);
        if (!rc && (fflush(stdout) || ferror(stdout))) {
            fprintf(stderr, "retort: generate: writing output failed\n");
            return EXIT_RUNTIME;
        }
        return rc;
    }
    cli_ranks_speak(rk);
    bool par = rk->size > 1;
    if (!rc && par && rk->rank > 0) rc = follow(rk, r.e);
    smp_params sp = {.temperature = (float)a.temp, .top_k = (int)a.top_k, .top_p = (float)a.top_p, .min_p = (float)a.min_p};
    te_request *rq = rc || rk->rank > 0 ? NULL : rt_calloc(r.ps.n, sizeof *rq);
    int *src = par && rq ? rt_calloc(r.ps.n, sizeof *src) : NULL;
    if (!rc && rk->rank == 0 && (!rq || (par && !src))) rc = par ? lockstep_failed(rk, "generate") : cli_fail("generate");
    for (size_t i = 0; rq && i < r.ps.n; i++)
        rq[i] = (te_request){.prompt = r.ps.p[i].ids, .n_prompt = (int64_t)r.ps.p[i].n, .n_samples = (int)a.n,
                             .max_tokens = (int64_t)a.max_tokens, .sampling = sp, .seed = a.seed + i,
                             .ignore_config_eos = a.ignore_eos, .stop = a.stop, .n_stop = a.n_stop, .logprobs = a.lp >= 0,
                             .top_logprobs = a.lp > 0 ? (int)a.lp : 0, .tag = i};
    if (!rc && rq) rc = jsonl_loop(rk, &a, &r, rq, src);
    if (par && rq && pe_end(rk->c, r.e)) rc = lockstep_failed(rk, "generate");   /* the followers stop */
    free(src);
    free(rq);
    jsonl_free(&r);
    if (!rc && rk->rank == 0 && (fflush(stdout) || ferror(stdout))) {
        fprintf(stderr, "retort: generate: writing output failed\n");
        return EXIT_RUNTIME;
    }
    return rc;
}

/* ---- --db mode ---- */


static volatile sig_atomic_t g_stop;   /* set by SIGINT / SIGTERM (cli only) */

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static void fmt_eta(double s, char *buf, size_t n) {
    if (s < 0) snprintf(buf, n, "?");
    else {
        long t = (long)(s + 0.5);
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    }
}

/* ctx: the "; model on DEV, ..." note for the first line (a local teacher), or NULL */
static void db_progress(void *ctx, const gd_progress *p) {
    char eta[32], *note = ctx;
    fmt_eta(p->eta_s, eta, sizeof eta);
    fprintf(stderr,
            "generate: prompts %zu/%zu, samples %zu/%zu (%zu already stored), %.1f tokens/s, %.2f samples/s, "
            "ETA %s, errors %zu retried, %zu failed%s\n",
            p->prompts_done, p->prompts_total, p->samples_done, p->samples_total, p->existing, p->tokens_per_s,
            p->samples_per_s, eta, p->retries, p->failed, note ? note : "");
    if (note) *note = 0;
}

static const char *base_name(const char *dir, char *buf, size_t n) {
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    size_t b = len;
    while (b > 0 && dir[b - 1] != '/') b--;
    snprintf(buf, n, "%.*s", (int)(len - b), dir + b);
    return buf;
}

typedef struct {
    const char *db_path, *teacher, *model, *key_env, *source, *system, *instruction, *tok_path, *tmpl_spec;
    bool think_prefix, stream, quiet, no_graphs;   /* no_graphs: --no-cuda-graphs */
    double n, max_tokens, temp, top_p, conc, lp, threads, cache, timeout, retries, top_k, min_p, gpu_frac;
    uint64_t seed;
    te_device dev;
} db_args;

/* Returns 0 or an exit status (message printed). */
static int parse_db_args(int argc, char **argv, db_args *a) {
    *a = (db_args){.instruction = "auto", .think_prefix = true, .stream = true, .n = 1, .max_tokens = 32768, .temp = 0.6,
                   .top_p = 0.95, .conc = 8, .lp = -1, .cache = 65536, .timeout = 600, .retries = 8, .dev = TE_DEVICE_CPU};
    cli_getopt g;
    cli_getopt_init("generate", CO_MODE2, &g);
    int c, u = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1 && !u) {
        switch (c) {
        case 'd': a->db_path = optarg; break;
        case 'R': a->teacher = optarg; break;
        case 'm': a->model = optarg; break;
        case 'K': a->key_env = optarg; break;
        case 'O': a->source = optarg; break;
        case 'y': a->system = optarg; break;
        case 'u': a->instruction = optarg; break;
        case 't': a->tok_path = optarg; break;
        case 'P': a->think_prefix = false; break;
        case 'N': a->stream = false; break;
        case 'q': a->quiet = true; break;
        case 'T':
            if (!cli_template_spec_ok(optarg))
                return cli_usage_error("generate", "unknown chat template '%s' (deepseek-r1, qwen, llama3, auto or a file)", optarg);
            a->tmpl_spec = optarg;
            break;
        case 'n': u = parse_num("--n", optarg, 1, 65536, &a->n); break;
        case 'x': u = parse_num("--max-tokens", optarg, 1, 1 << 24, &a->max_tokens); break;
        case 'e': u = parse_num("--temperature", optarg, 0, 100, &a->temp); break;
        case 'p': u = parse_num("--top-p", optarg, 1e-9, 1, &a->top_p); break;
        case 's': u = cli_parse_seed("generate", optarg, &a->seed); break;
        case 'C': u = parse_num("--concurrency", optarg, 1, 4096, &a->conc); break;
        case 'l': u = parse_num("--logprobs", optarg, 0, TE_MAX_TOP_LOGPROBS, &a->lp); break;
        case 'J': u = parse_num("--threads", optarg, 1, 1024, &a->threads); break;
        case 'c': u = parse_num("--cache-tokens", optarg, 1, 1e12, &a->cache); break;
        case 'o': u = parse_num("--timeout", optarg, 0.001, 86400, &a->timeout); break;
        case 'r': u = parse_num("--retries", optarg, 0, 1000, &a->retries); break;
        case 'k': u = parse_num("--top-k", optarg, 0, 1 << 30, &a->top_k); break;
        case 'i': u = parse_num("--min-p", optarg, 0, 1, &a->min_p); break;
        case 'D': u = cli_parse_device("generate", optarg, &a->dev); break;
        case 'G': u = cli_parse_gpu_fraction("generate", optarg, &a->gpu_frac); break;
        case CLI_OPT_NO_CUDA_GRAPHS: a->no_graphs = true; break;
        default: return cli_usage_error("generate", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (u) return u;
    const char *ints[] = {"--n", "--max-tokens", "--concurrency", "--logprobs", "--threads", "--cache-tokens",
                          "--retries", "--top-k"};
    double vals[] = {a->n, a->max_tokens, a->conc, a->lp, a->threads, a->cache, a->retries, a->top_k};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        if (vals[i] != floor(vals[i])) return cli_usage_error("generate", "%s wants a whole number", ints[i]);
    if (optind < argc) return cli_usage_error("generate", "unexpected argument '%s'", argv[optind]);
    const char *t = a->teacher;
    if (!t) return cli_usage_error("generate", "--db needs --teacher local:MODEL_DIR or an endpoint URL");
    bool local = !strncmp(t, "local:", 6);
    if (!local && strncmp(t, "http://", 7) && strncmp(t, "https://", 8))
        return cli_usage_error("generate", "--teacher wants local:MODEL_DIR or an http(s):// URL, not '%s'", t);
    if (local && !t[6]) return cli_usage_error("generate", "--teacher local: needs a model directory");
    if (local && a->key_env) return cli_usage_error("generate", "--api-key-env is for endpoint teachers");
    return 0;
}

/* What --db mode builds before it runs; freed by db_run_free. */
typedef struct {
    tok_tokenizer *tok;
    ct_template *tmpl;
    tp_pool *pool;
    te_model *m;
    te_engine *e;
    char *server_model;
    oai_opts ro;
    char name_buf[4096], weights_note[128];
} db_run;

static void db_run_free(db_run *r) {
    te_engine_free(r->e);
    te_model_free(r->m);
    tp_free(r->pool);
    ct_template_free(r->tmpl);
    tok_free(r->tok);
    free(r->server_model);
}

/* A local teacher, every rank: tokenizer, model (its part), engine; then the ranks agree.
 * Returns an exit status (message printed). */
static int db_setup_local(cli_ranks *rk, const db_args *a, db_run *r, gd_opts *o) {
    const char *dir = a->teacher + 6, *tok_path = a->tok_path;
    mc_config cfg;
    int rc = 0;
    if (mc_load(dir, &cfg)) rc = cli_fail("generate: loading the model");
    char *def_tok = rt_path_join(dir, "tokenizer.json");
    if (!tok_path && def_tok && rt_is_file(def_tok)) tok_path = def_tok;
    if (!rc && !tok_path)
        rc = cli_usage_error("generate", "a local teacher needs a tokenizer (--tokenizer, or DIR/tokenizer.json)");
    else if (!rc && tok_load(tok_path, &r->tok)) rc = cli_fail("generate: loading the tokenizer");
    if (!rc && mk_check_tokenizer(&cfg, dir, r->tok, tok_path)) rc = cli_fail("generate");
    if (!rc) rc = cli_template("generate", a->tmpl_spec, tok_path, r->tok, true, &r->tmpl);
    free(def_tok);   /* tok_path may point at it */
    o->engine = NULL;
    o->tok = r->tok;
    o->tmpl = r->tmpl;
    o->teacher = a->model ? a->model : base_name(dir, r->name_buf, sizeof r->name_buf);
    rc = cli_ranks_agree(rk, rc);
    if (!rc) {
        int nthreads = cli_ranks_threads(rk, a->threads);
        if (nthreads < 0 || tp_create(nthreads, &r->pool)) rc = cli_fail("generate");
        if (!rc) rc = cli_load_teacher(rk, dir, r->pool, a->dev, a->gpu_frac, a->no_graphs, &r->m);
        te_opts eo = {.max_batch = (int)a->conc, .cache_tokens = (int64_t)a->cache, .tok = r->tok};
        if (!rc && te_engine_create(r->m, &eo, &r->e)) rc = cli_fail("generate");
        rc = cli_ranks_agree(rk, rc);
    }
    o->engine = r->e;
    o->comm = rk->c;
    if (rc) return rc;
    char wb[96];
    snprintf(r->weights_note, sizeof r->weights_note, "; model %s", cli_weights(wb, sizeof wb, rk, a->dev, r->m));
    o->progress_ctx = r->weights_note;
    return 0;
}

/* An endpoint teacher (rank 0 alone): the key, the client options, the model's name. */
static int db_setup_remote(const db_args *a, db_run *r, gd_opts *o) {
    const char *key = NULL;
    if (a->key_env) {
        if (!(key = getenv(a->key_env))) {
            fprintf(stderr, "retort: generate: environment variable %s (--api-key-env) is not set\n", a->key_env);
            return EXIT_RUNTIME;
        }
    } else key = getenv("OPENAI_API_KEY");
    r->ro = (oai_opts){.url = a->teacher, .api_key = key, .concurrency = (int)a->conc, .timeout_s = a->timeout,
                       .max_retries = (int)a->retries, .stream = a->stream,
                       .jitter_seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32)};
    if (a->tok_path && tok_load(a->tok_path, &r->tok)) return cli_fail("generate: loading the tokenizer");
    mm_blas_single_thread();   /* no BLAS here: OpenBLAS's idle workers would only spin */
    o->tok = r->tok;
    o->remote = &r->ro;
    if (!a->model && oai_list_models(&r->ro, &r->server_model)) return cli_fail("generate: asking the endpoint for its model");
    o->model = a->model ? a->model : r->server_model;
    o->teacher = o->model;
    return 0;
}

/* Rank 0 fills the database (rank > 0 follows the engine), with SIGINT / SIGTERM caught. */
static int db_fill(cli_ranks *rk, const db_args *a, db_run *r, gd_opts *o) {
    /* SIGINT / SIGTERM: rank 0 stops between steps (and ends the followers); the followers
     * catch them too (mpirun signals every rank) and wait for rank 0's last step */
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    db_conn *db = NULL;
    gd_report rep = {0};
    int rc = 0;
    if (rk->rank > 0) {
        rc = follow(rk, r->e);
    } else {
        if (db_open(a->db_path, 0, &db)) {
            rc = cli_fail("generate: opening the database");
            if (rk->size > 1 && r->e && pe_end(rk->c, r->e)) rc = lockstep_failed(rk, "generate");
        }
    }
    if (!rc && rk->rank == 0) {
        int grc = gd_run(db, o, &rep);
        if (rep.comm_failed) rc = lockstep_failed(rk, "generate");
        else if (grc) rc = cli_fail("generate");
        else if (rep.interrupted) {
            fprintf(stderr, "retort: generate: interrupted; %zu sample(s) stored, rerun to continue\n",
                    rep.p.samples_done);
            rc = 130;
        } else if (!a->quiet)
            fprintf(stderr, "generate: done: %zu sample(s) generated, %zu already stored, teacher %s\n",
                    rep.p.samples_done, rep.p.existing, o->teacher);
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    db_close(db);
    return rc;
}

static int generate_db(cli_ranks *rk, int argc, char **argv) {
    db_args a;
    int rc = parse_db_args(argc, argv, &a);
    if (rc) return rc;
    bool local = !strncmp(a.teacher, "local:", 6);
    gd_opts o = {.source = a.source, .n = (int)a.n, .max_tokens = (int64_t)a.max_tokens, .temperature = a.temp,
                 .top_p = a.top_p, .top_k = (int)a.top_k, .min_p = a.min_p, .seed = a.seed, .logprobs = (int)a.lp,
                 .think_prefix = a.think_prefix, .max_queue = 2 * (int)a.conc};
    if (a.system && *a.system) o.system = a.system;
    if (!strcmp(a.instruction, "auto")) o.instruction = GD_R1_INSTRUCTION;
    else if (strcmp(a.instruction, "none") && *a.instruction) {
        o.instruction = a.instruction;
        o.instruction_all = true;
    }
    if (!a.quiet) o.progress = db_progress;
    o.progress_every_s = 2.0;
    o.stop = &g_stop;
    if (!local && rk->rank > 0) return EXIT_OK;   /* an endpoint teacher: rank 0 alone does the work */
    db_run *r = rt_calloc(1, sizeof *r);
    if (!r) return cli_fail("generate");
    rc = local ? db_setup_local(rk, &a, r, &o) : db_setup_remote(&a, r, &o);
    if (!rc) rc = db_fill(rk, &a, r, &o);
    db_run_free(r);
    free(r);
    return rc;
}
