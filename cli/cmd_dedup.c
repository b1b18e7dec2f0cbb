/* cli/cmd_dedup.c — `retort dedup`: JSONL {"id", "text"} on stdin → {"id", "cluster"}. */
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/alloc.h"
#include "core/json.h"
#include "core/phase.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "filters/minhash.h"

/* Input is read in chunks of whole lines; the lines of a chunk are parsed by the pool's
 * threads (jansson parses independent documents concurrently), so reading scales with
 * --threads. Each document keeps its id already written as compact JSON (the output needs
 * nothing else of it) and its text as jansson's string. */
typedef struct {
    char **idtxt;   /* [n] compact JSON of the id, owned here */
    json_t **texts; /* [n] owned references to the "text" strings */
    mh_doc *docs;   /* [n] pointing into texts */
    size_t n, cap_id, cap_text, cap_doc;
} corpus;

static void free_worker(void *ctx, size_t begin, size_t end, int thread) {
    (void)thread;
    corpus *c = ctx;
    for (size_t i = begin; i < end; i++) {
        free(c->idtxt[i]);
        json_decref(c->texts[i]);
    }
}

/* Frees the documents on the pool's threads (NULL: this one). */
static void corpus_free(corpus *c, tp_pool *pool) {
    tp_parallel_for(pool, c->n, free_worker, c);
    free(c->idtxt);
    free(c->texts);
    free(c->docs);
}

/* Parses one line: 1 for a blank line, 0 with *idtxt and *text_out set, or an error code. */
static int parse_line(const char *line, size_t len, long lineno, char **idtxt, json_t **text_out) {
    size_t k = 0;
    while (k < len && strchr(" \t\r\n", line[k])) k++;
    if (k == len) return 1;
    char what[64];
    snprintf(what, sizeof what, "stdin line %ld", lineno);
    json_t *j;
    int rc = rt_json_loadb(line, len, what, &j);
    if (rc) return rc;
    json_t *id = json_is_object(j) ? json_object_get(j, "id") : NULL;
    json_t *text = json_is_object(j) ? json_object_get(j, "text") : NULL;
    if (!json_is_object(j)) rc = rt_fail(RT_EFORMAT, "%s: expected an object {\"id\": …, \"text\": …}", what);
    else if (!id || !(json_is_string(id) || json_is_integer(id)))
        rc = rt_fail(RT_EFORMAT, "%s: \"id\" must be a string or an integer", what);
    else if (!json_is_string(text)) rc = rt_fail(RT_EFORMAT, "%s: \"text\" must be a string", what);
    else if (!(*idtxt = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT | JSON_ENSURE_ASCII))) rc = RT_ENOMEM;
    else *text_out = json_incref(text);
    json_decref(j);
    return rc;
}

typedef struct {
    const char *buf;
    const size_t *start, *len; /* [lines] */
    long lineno0;              /* line number of the chunk's first line */
    char **idtxt;              /* [lines] NULL for a blank line */
    json_t **texts;            /* [lines] */
    long bad;                  /* smallest failing line number, LONG_MAX if none */
} parse_job;

static void parse_worker(void *ctx, size_t begin, size_t end, int thread) {
    (void)thread;
    parse_job *p = ctx;
    for (size_t i = begin; i < end; i++) {
        long lineno = p->lineno0 + (long)i;
        int rc = parse_line(p->buf + p->start[i], p->len[i], lineno, &p->idtxt[i], &p->texts[i]);
        if (rc < 0) {
            long cur = __atomic_load_n(&p->bad, __ATOMIC_RELAXED);
            while (lineno < cur && !__atomic_compare_exchange_n(&p->bad, &cur, lineno, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
            return; /* later lines of this range do not matter: the first error is reported */
        }
    }
}

#define READ_CHUNK (16u << 20)

/* Parses the lines buf[0..len) (each ending in '\n' but maybe the last) in parallel. */
static int parse_chunk(const char *buf, size_t len, long *lineno, tp_pool *pool, corpus *c) {
    size_t lines = 0;
    for (const char *q = buf; q < buf + len; lines++) {
        const char *e = memchr(q, '\n', (size_t)(buf + len - q));
        q = e ? e + 1 : buf + len;
    }
    size_t *start = rt_malloc(sizeof *start * (lines ? lines : 1)), *ln = rt_malloc(sizeof *ln * (lines ? lines : 1));
    char **idtxt = rt_calloc(lines ? lines : 1, sizeof *idtxt); /* NULL: blank, or not parsed after an error */
    json_t **texts = rt_calloc(lines ? lines : 1, sizeof *texts);
    int rc = 0;
    if (!start || !ln || !idtxt || !texts || rt_grow((void **)&c->idtxt, &c->cap_id, c->n + lines, sizeof *c->idtxt) ||
        rt_grow((void **)&c->texts, &c->cap_text, c->n + lines, sizeof *c->texts) ||
        rt_grow((void **)&c->docs, &c->cap_doc, c->n + lines, sizeof *c->docs))
        rc = RT_ENOMEM;
    if (!rc) {
        size_t i = 0;
        for (const char *q = buf; q < buf + len; i++) {
            const char *e = memchr(q, '\n', (size_t)(buf + len - q));
            start[i] = (size_t)(q - buf);
            ln[i] = (size_t)((e ? e : buf + len) - q);
            q = e ? e + 1 : buf + len;
        }
        parse_job p = {buf, start, ln, *lineno, idtxt, texts, LONG_MAX};
        tp_parallel_for(pool, lines, parse_worker, &p);
        if (p.bad != LONG_MAX) { /* say it again on this thread, where the message is read */
            char *it = NULL;
            json_t *t = NULL;
            size_t b = (size_t)(p.bad - *lineno);
            rc = parse_line(buf + start[b], ln[b], p.bad, &it, &t);
            free(it);
            json_decref(t);
            if (rc >= 0) rc = rt_fail(RT_EINTERNAL, "stdin line %ld: failed on a worker thread only", p.bad);
        }
        for (size_t k = 0; k < lines; k++) {
            if (!idtxt[k]) continue;
            if (rc) { free(idtxt[k]); json_decref(texts[k]); continue; }
            c->idtxt[c->n] = idtxt[k];
            c->texts[c->n] = texts[k];
            c->docs[c->n] = (mh_doc){json_string_value(texts[k]), json_string_length(texts[k])};
            c->n++;
        }
    }
    *lineno += (long)lines;
    free(start);
    free(ln);
    free(idtxt);
    free(texts);
    return rc;
}

static int read_corpus(FILE *in, tp_pool *pool, corpus *c) {
    size_t cap = READ_CHUNK, have = 0;
    char *buf = rt_malloc(cap);
    long lineno = 1;
    int rc = buf ? 0 : RT_ENOMEM;
    while (!rc) {
        size_t got = fread(buf + have, 1, cap - have, in);
        have += got;
        bool eof = got == 0;
        if (eof && ferror(in)) { rc = rt_fail(RT_EIO, "reading stdin failed"); break; }
        if (eof && !have) break;
        /* parse every whole line; a partial last line waits for more input (or EOF) */
        size_t upto = have;
        if (!eof) {
            char *nl = NULL;
            for (size_t k = have; k-- > 0;)
                if (buf[k] == '\n') { nl = buf + k; break; }
            if (!nl) { /* one line longer than the buffer: grow it */
                if (have < cap) continue;
                char *b2 = realloc(buf, 2 * cap);
                if (!b2) { rc = RT_ENOMEM; break; }
                buf = b2;
                cap *= 2;
                continue;
            }
            upto = (size_t)(nl - buf) + 1;
        }
        rc = parse_chunk(buf, upto, &lineno, pool, c);
        memmove(buf, buf + upto, have - upto);
        have -= upto;
        if (eof) break;
    }
    free(buf);
    return rc;
}

/* Output lines of documents base..base+n, cut into parts formatted by the threads. */
typedef struct {
    const corpus *c;
    const size_t *cluster; /* [c->n] */
    size_t base, n, parts;
    char **out;    /* [parts] */
    size_t *olen;  /* [parts] */
} write_job;

static void write_worker(void *ctx, size_t begin, size_t end, int thread) {
    (void)thread;
    write_job *w = ctx;
    for (size_t part = begin; part < end; part++) {
        size_t lo = w->base + w->n * part / w->parts, hi = w->base + w->n * (part + 1) / w->parts, len = 0;
        for (size_t i = lo; i < hi; i++) len += strlen(w->c->idtxt[i]) + strlen(w->c->idtxt[w->cluster[i]]) + 20;
        char *o = malloc(len + 1);
        w->out[part] = o;
        if (!o) continue;
        size_t k = 0;
        for (size_t i = lo; i < hi; i++)
            k += (size_t)sprintf(o + k, "{\"id\":%s,\"cluster\":%s}\n", w->c->idtxt[i], w->c->idtxt[w->cluster[i]]);
        w->olen[part] = k;
    }
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

    ph_clock pc;
    ph_start(&pc, "dedup");
    corpus c = {0};
    tp_pool *pool = NULL;
    if (tp_create(threads, &pool) || read_corpus(stdin, pool, &c)) { corpus_free(&c, pool); tp_free(pool); return cli_fail("dedup"); }
    size_t *cluster = rt_malloc(sizeof *cluster * (c.n ? c.n : 1));
    int rc = cluster ? 0 : RT_ENOMEM;
    ph_lap(&pc, "read");
    if (!rc) rc = mh_dedup_run(&cfg, c.docs, c.n, pool, cluster); /* logs its own phases */
    ph_start(&pc, "dedup");
    if (rc) { free(cluster); corpus_free(&c, pool); tp_free(pool); return cli_fail("dedup"); }
    int status = EXIT_OK;
    /* output in blocks of 64k documents, each block formatted by the threads in parts */
    enum { BLOCK = 1 << 16 };
    size_t parts = (size_t)tp_size(pool) * 2;
    char **out = rt_calloc(parts, sizeof *out);
    size_t *olen = rt_calloc(parts, sizeof *olen);
    if (!out || !olen) status = EXIT_RUNTIME;
    for (size_t b = 0; status == EXIT_OK && b < c.n; b += BLOCK) {
        size_t m = c.n - b < BLOCK ? c.n - b : BLOCK;
        write_job w = {&c, cluster, b, m, parts, out, olen};
        tp_parallel_for(pool, parts, write_worker, &w);
        for (size_t p = 0; p < parts; p++) {
            if (!out[p]) status = EXIT_RUNTIME;
            else if (status == EXIT_OK) fwrite(out[p], 1, olen[p], stdout);
            free(out[p]);
            out[p] = NULL;
        }
        if (status != EXIT_OK) fprintf(stderr, "retort: dedup: out of memory writing results\n");
    }
    free(out);
    free(olen);
    ph_lap(&pc, "write");
    free(cluster);
    corpus_free(&c, pool);
    tp_free(pool);
    ph_lap(&pc, "free");
    if (fflush(stdout) || ferror(stdout)) { fprintf(stderr, "retort: dedup: writing stdout failed\n"); return EXIT_RUNTIME; }
    return status;
}
