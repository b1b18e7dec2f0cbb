/* cli/cmd_dedup.c — `retort dedup`: JSONL {"id", "text"} on stdin → {"id", "cluster"}. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/json.h"
#include "core/log.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "filters/minhash.h"

typedef struct {
    json_t **ids;   /* [n] owned references */
    mh_doc *docs;   /* [n] texts owned here */
    size_t n, cap_ids, cap_docs;
} corpus;

static void corpus_free(corpus *c) {
    for (size_t i = 0; i < c->n; i++) {
        json_decref(c->ids[i]);
        free((char *)c->docs[i].text);
    }
    free(c->ids);
    free(c->docs);
}

static int read_corpus(FILE *in, corpus *c) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int rc = 0;
    while ((len = getline(&line, &cap, in)) >= 0) {
        lineno++;
        size_t k = 0;
        while (k < (size_t)len && strchr(" \t\r\n", line[k])) k++;
        if (k == (size_t)len) continue;
        char what[64];
        snprintf(what, sizeof what, "stdin line %ld", lineno);
        json_t *j;
        if ((rc = rt_json_loadb(line, (size_t)len, what, &j))) break;
        json_t *id = json_is_object(j) ? json_object_get(j, "id") : NULL;
        json_t *text = json_is_object(j) ? json_object_get(j, "text") : NULL;
        if (!json_is_object(j)) rc = rt_fail(RT_EFORMAT, "%s: expected an object {\"id\": …, \"text\": …}", what);
        else if (!id || !(json_is_string(id) || json_is_integer(id)))
            rc = rt_fail(RT_EFORMAT, "%s: \"id\" must be a string or an integer", what);
        else if (!json_is_string(text)) rc = rt_fail(RT_EFORMAT, "%s: \"text\" must be a string", what);
        if (rc) { json_decref(j); break; }
        if (rt_grow((void **)&c->ids, &c->cap_ids, c->n + 1, sizeof *c->ids) ||
            rt_grow((void **)&c->docs, &c->cap_docs, c->n + 1, sizeof *c->docs)) { json_decref(j); rc = RT_ENOMEM; break; }
        size_t tl = json_string_length(text);
        char *t = rt_malloc(tl + 1);
        if (!t) { json_decref(j); rc = RT_ENOMEM; break; }
        memcpy(t, json_string_value(text), tl + 1);
        c->ids[c->n] = json_incref(id);
        c->docs[c->n] = (mh_doc){t, tl};
        c->n++;
        json_decref(j);
    }
    free(line);
    return rc;
}

int cmd_dedup(int argc, char **argv) {
    cli_getopt g;
    cli_getopt_init("dedup", 0, &g);
    mh_config cfg;
    mh_config_default(&cfg);
    int ch, threads = 0;
    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1) {
        char *end;
        if (ch == 't') {
            cfg.threshold = strtod(optarg, &end);
            if (*end || !*optarg || !(cfg.threshold >= 0 && cfg.threshold <= 1))
                return cli_usage_error("dedup", "--threshold wants a number in 0..1, got '%s'", optarg);
        } else if (ch == 'x') cfg.exact_only = true;
        else if (ch == 'j') {
            long v = strtol(optarg, &end, 10);
            if (*end || v < 0 || v > 1024) return cli_usage_error("dedup", "--threads wants 0..1024, got '%s'", optarg);
            threads = (int)v;
        } else if (ch == 'h') { cli_print_usage("dedup", stdout); return EXIT_OK; }
        else return cli_usage_error("dedup", "unknown or incomplete option '%s'", argv[optind - 1]);
    }
    if (optind < argc) return cli_usage_error("dedup", "unexpected argument '%s'", argv[optind]);

    double w0 = now_s(), c0 = (double)clock() / CLOCKS_PER_SEC;
    corpus c = {0};
    if (read_corpus(stdin, &c)) { corpus_free(&c); return cli_fail("dedup"); }
    size_t *cluster = rt_malloc(sizeof *cluster * (c.n ? c.n : 1));
    tp_pool *pool = NULL;
    int rc = cluster ? tp_create(threads, &pool) : RT_ENOMEM;
    double w1 = now_s(), c1 = (double)clock() / CLOCKS_PER_SEC;
    if (!rc) rc = mh_dedup_run(&cfg, c.docs, c.n, pool, cluster);
    double w2 = now_s(), c2 = (double)clock() / CLOCKS_PER_SEC;
    tp_free(pool);
    if (rc) { free(cluster); corpus_free(&c); return cli_fail("dedup"); }
    int status = EXIT_OK;
    for (size_t i = 0; i < c.n; i++) {
        json_t *o = json_pack("{s:O,s:O}", "id", c.ids[i], "cluster", c.ids[cluster[i]]);
        char *txt = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII) : NULL;
        json_decref(o);
        if (!txt) { fprintf(stderr, "retort: dedup: out of memory writing results\n"); status = EXIT_RUNTIME; break; }
        fputs(txt, stdout);
        fputc('\n', stdout);
        free(txt);
    }
    free(cluster);
    corpus_free(&c);
    double w3 = now_s(), c3 = (double)clock() / CLOCKS_PER_SEC;
    RT_DEBUG("dedup: phase read       wall %7.3f s  cpu %7.3f s", w1 - w0, c1 - c0);
    RT_DEBUG("dedup: phase cluster    wall %7.3f s  cpu %7.3f s", w2 - w1, c2 - c1);
    RT_DEBUG("dedup: phase write+free wall %7.3f s  cpu %7.3f s", w3 - w2, c3 - c2);
    if (fflush(stdout) || ferror(stdout)) { fprintf(stderr, "retort: dedup: writing stdout failed\n"); return EXIT_RUNTIME; }
    return status;
}
