/* eval/recipe.c — recipes: parse, validate, resolve, resumable state (contract in recipe.h). */
#include "eval/recipe.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL /* header-only: no library to link */
#include <xxhash.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/status.h"
#include "core/yaml.h"
#include "eval/cmdopts.h"

/* ---- the subcommands a stage may run, and their options (eval/cmdopts.h) ---- */

/* Keys of a stage that are not options of its subcommand. */
static const char *const TOP_KEYS[] = {"name", "description", "work_dir", "vars", "stages"};

static const co_command *find_kind(const char *k) {
    const co_command *c = co_find(k);
    return c && c->stage ? c : NULL;
}

static bool in_list(const char *const *list, size_t n, const char *s) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], s)) return true;
    return false;
}

/* ---- where a key is in the file: a light pass over the lines ---- */

typedef struct {
    int indent;
    bool dash;         /* a "- " list item marker */
    const char *s;     /* content after the indentation (and after "- ") */
    size_t len;
    int lineno;
} loc_line;

typedef struct {
    loc_line *v;
    size_t n;
} loc_doc;

static int loc_build(const char *text, loc_doc *d) {
    size_t cap = 16;
    d->n = 0;
    d->v = rt_malloc(cap * sizeof *d->v);
    if (!d->v) return RT_ENOMEM;
    int lineno = 0;
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        if (!e) e = p + strlen(p);
        lineno++;
        int ind = 0;
        const char *s = p;
        while (s < e && *s == ' ') s++, ind++;
        while (s < e && *s != '#') {
            if (d->n + 2 > cap) {
                loc_line *nv = realloc(d->v, 2 * cap * sizeof *nv);
                if (!nv) return RT_ENOMEM;
                d->v = nv;
                cap *= 2;
            }
            if (*s == '-' && (s + 1 == e || s[1] == ' ')) {
                d->v[d->n++] = (loc_line){ind, true, s, 1, lineno};
                s++, ind++;
                while (s < e && *s == ' ') s++, ind++;
                continue;
            }
            if (s < e && *s != '\r') d->v[d->n++] = (loc_line){ind, false, s, (size_t)(e - s), lineno};
            break;
        }
        p = *e ? e + 1 : e;
    }
    return 0;
}

/* Within lines [*lo, *hi): the key's line, or the idx-th list item (key NULL); narrows
 * [*lo, *hi) to its block. Returns the line number, 0 when not found. */
static int loc_step(const loc_doc *d, size_t *lo, size_t *hi, const char *key, size_t idx) {
    if (*lo >= *hi) return 0;
    int base = d->v[*lo].indent;
    size_t seen = 0;
    for (size_t i = *lo; i < *hi; i++) {
        const loc_line *l = &d->v[i];
        if (l->indent != base) continue;
        bool hit;
        if (key) {
            size_t k = strlen(key);
            const char *s = l->s;
            size_t len = l->len;
            if (len && (*s == '"' || *s == '\'')) s++, len--;
            hit = !l->dash && len > k && !strncmp(s, key, k) &&
                  (s[k] == ':' || ((s[k] == '"' || s[k] == '\'') && len > k + 1 && s[k + 1] == ':'));
        } else {
            hit = l->dash && seen++ == idx;
        }
        if (!hit) continue;
        size_t j = i + 1;
        /* a list may sit at its key's indentation ("stages:\n- stage: import") */
        bool flush = key && j < *hi && d->v[j].dash && d->v[j].indent == base;
        while (j < *hi && (d->v[j].indent > base || (flush && d->v[j].indent == base && d->v[j].dash))) j++;
        *lo = i + 1;
        *hi = j;
        return l->lineno;
    }
    return 0;
}

/* Line of stages[idx] (key NULL) or of a key in it; or of a top-level key / vars key
 * (idx SIZE_MAX: key is top level; section non-NULL: key inside that section). */
static int line_of(const loc_doc *d, const char *section, size_t idx, const char *key) {
    size_t lo = 0, hi = d->n;
    if (section) {
        if (!loc_step(d, &lo, &hi, section, 0)) return 0;
        if (idx != SIZE_MAX) {
            int l = loc_step(d, &lo, &hi, NULL, idx);
            if (!l || !key) return l;
        }
    }
    return key ? loc_step(d, &lo, &hi, key, 0) : 0;
}

/* ---- loading ---- */

typedef struct {
    const char *path;
    char *text;         /* the file; loc points into it */
    loc_doc loc;
    json_t *root;       /* the parsed recipe, after --set */
    json_t *vars;       /* root.vars or NULL */
    char *recipe_dir;   /* absolute */
    char *name;
    char *work_dir;     /* absolute, once resolved */
    bool resolving_wd;
    bool checking_vars; /* ${hash:STAGE} resolves to a placeholder while vars are checked */
    const rc_plan *plan; /* the stages built so far, for ${hash:STAGE} */
    uint64_t *chain;    /* [stages] chained hash of stages 0..i */
} ctx;

static int __attribute__((format(printf, 3, 4))) fail_at(const ctx *c, int line, const char *fmt, ...) {
    char msg[RT_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0) return rt_fail(RT_EFORMAT, "%s:%d: %s", c->path, line, msg);
    return rt_fail(RT_EFORMAT, "%s: %s", c->path, msg);
}

/* The shortest decimal that reads back as x. */
static void fmt_double(double x, char *buf, size_t n) {
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, x);
        if (strtod(buf, NULL) == x) return;
    }
}

static const char *type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "a map";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* A scalar as text (not yet substituted): strings as they are, numbers shortest. Owned. */
static char *scalar_text(const json_t *v) {
    char buf[64];
    switch (json_typeof(v)) {
    case JSON_STRING: return rt_strdup(json_string_value(v));
    case JSON_INTEGER: snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v)); return rt_strdup(buf);
    case JSON_REAL: fmt_double(json_real_value(v), buf, sizeof buf); return rt_strdup(buf);
    case JSON_TRUE: return rt_strdup("true");
    case JSON_FALSE: return rt_strdup("false");
    default: return NULL;
    }
}

typedef struct {
    char *s;
    size_t n, cap;
} sbuf;

static int sb_add(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) return RT_ENOMEM;
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
    return 0;
}

static int resolve_work_dir(ctx *c);

/* Substitutes ${...} in s. where/line name the place for errors. *out owned. */
static int subst(ctx *c, const char *s, int depth, const char *where, int line, char **out) {
    *out = NULL;
    if (depth > 16) return fail_at(c, line, "%s: variables nest more than 16 deep (a cycle?)", where);
    sbuf b = {0};
    int rc = sb_add(&b, "", 0);
    for (const char *p = s; !rc && *p;) {
        const char *d = strstr(p, "${");
        if (!d) { rc = sb_add(&b, p, strlen(p)); break; }
        rc = sb_add(&b, p, (size_t)(d - p));
        const char *e = strchr(d + 2, '}');
        if (!rc && !e) rc = fail_at(c, line, "%s: '${' without a closing '}' in '%s'", where, s);
        if (rc) break;
        char name[256];
        size_t n = (size_t)(e - d - 2);
        if (n == 0 || n >= sizeof name) { rc = fail_at(c, line, "%s: bad variable reference in '%s'", where, s); break; }
        memcpy(name, d + 2, n);
        name[n] = 0;
        char *val = NULL;
        if (!strncmp(name, "env:", 4)) {
            const char *ev = getenv(name + 4);
            if (!ev) rc = fail_at(c, line, "%s: environment variable %s is not set", where, name + 4);
            else rc = sb_add(&b, ev, strlen(ev));
        } else if (!strncmp(name, "hash:", 5)) {
            /* the chained hash of every stage up to an earlier one: a name that changes
             * whenever anything that stage depends on changes */
            char hex[17] = "00000000";
            int k = c->plan ? rc_find_stage(c->plan, name + 5) : -1;
            if (k >= 0) snprintf(hex, sizeof hex, "%08llx", (unsigned long long)(c->chain[k] & 0xffffffffu));
            else if (!c->checking_vars) {
                rc = fail_at(c, line, "%s: ${%s}: no earlier stage named '%s'", where, name, name + 5);
                break;
            }
            rc = sb_add(&b, hex, 8);
        } else if (!strncmp(name, "checkpoint:", 11)) {
            /* bound when the stage starts (rc_stage_argv): kept as written */
            int k = c->plan ? rc_find_stage(c->plan, name + 11) : -1;
            if (!c->checking_vars && (k < 0 || strcmp(c->plan->stages[k].kind, "train"))) {
                rc = fail_at(c, line, "%s: ${%s}: no earlier train stage named '%s'", where, name, name + 11);
                break;
            }
            rc = sb_add(&b, d, (size_t)(e - d + 1));
        } else if (!strcmp(name, "recipe_dir")) {
            rc = sb_add(&b, c->recipe_dir, strlen(c->recipe_dir));
        } else if (!strcmp(name, "name")) {
            rc = sb_add(&b, c->name, strlen(c->name));
        } else if (!strcmp(name, "work_dir")) {
            if (c->resolving_wd) rc = fail_at(c, line, "%s: work_dir refers to itself", where);
            else if (!(rc = resolve_work_dir(c))) rc = sb_add(&b, c->work_dir, strlen(c->work_dir));
        } else {
            json_t *v = c->vars ? json_object_get(c->vars, name) : NULL;
            if (!v) {
                rc = fail_at(c, line, "%s: undefined variable ${%s}", where, name);
            } else if (!(val = scalar_text(v))) {
                rc = json_is_null(v) || json_is_array(v) || json_is_object(v)
                         ? fail_at(c, line_of(&c->loc, "vars", SIZE_MAX, name), "vars: %s: expected a scalar, got %s",
                                   name, type_name(v))
                         : RT_ENOMEM;
            } else {
                char *r;
                char w[300];
                snprintf(w, sizeof w, "vars: %s", name);
                rc = subst(c, val, depth + 1, w, line_of(&c->loc, "vars", SIZE_MAX, name), &r);
                if (!rc) rc = sb_add(&b, r, strlen(r));
                free(r);
            }
        }
        free(val);
        p = e + 1;
    }
    if (rc) { free(b.s); return rc; }
    *out = b.s;
    return 0;
}

static int resolve_work_dir(ctx *c) {
    if (c->work_dir) return 0;
    json_t *w = json_object_get(c->root, "work_dir");
    int line = line_of(&c->loc, NULL, SIZE_MAX, "work_dir");
    if (!w) return fail_at(c, 0, "work_dir: missing (the folder that holds the run's database and outputs)");
    if (!json_is_string(w)) return fail_at(c, line, "work_dir: expected a string, got %s", type_name(w));
    c->resolving_wd = true;
    char *s;
    int rc = subst(c, json_string_value(w), 0, "work_dir", line, &s);
    c->resolving_wd = false;
    if (rc) return rc;
    if (!*s) { free(s); return fail_at(c, line, "work_dir: empty"); }
    if (s[0] == '/') { c->work_dir = s; return 0; }
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) { free(s); return rt_fail(RT_EIO, "getcwd: %s", strerror(errno)); }
    const char *rel = s;
    while (rel[0] == '.' && rel[1] == '/') rel += 2;
    c->work_dir = !strcmp(rel, ".") ? rt_strdup(cwd) : rt_path_join(cwd, rel);
    free(s);
    return c->work_dir ? 0 : RT_ENOMEM;
}

/* ---- --set ---- */

static int apply_set(ctx *c, const char *set) {
    const char *eq = strchr(set, '=');
    if (!eq || eq == set) return rt_fail(RT_EINVAL, "--set %s: expected KEY=VALUE", set);
    char key[256];
    size_t kn = (size_t)(eq - set);
    if (kn >= sizeof key) return rt_fail(RT_EINVAL, "--set %s: key too long", set);
    memcpy(key, set, kn);
    key[kn] = 0;
    /* the value read as YAML: "v: VALUE" */
    size_t vl = strlen(eq + 1);
    char *doc = rt_malloc(vl + 8);
    if (!doc) return RT_ENOMEM;
    snprintf(doc, vl + 8, "v: %s\n", eq + 1);
    json_t *parsed;
    char what[300];
    snprintf(what, sizeof what, "--set %s", key);
    int rc = rt_yaml_parse(doc, strlen(doc), what, &parsed);
    free(doc);
    if (rc) {
        char m[RT_ERRMSG_MAX];
        snprintf(m, sizeof m, "%s", rt_errmsg());
        return rt_fail(RT_EINVAL, "%s", m);
    }
    json_t *v = json_incref(json_object_get(parsed, "v"));
    json_decref(parsed);
    if (!v) v = json_null();
    if (json_is_null(v)) v = json_string(""); /* "--set x=" is the empty string */

    char *dot = strchr(key, '.');
    if (!dot) {
        if (!strcmp(key, "work_dir") || !strcmp(key, "name")) {
            rc = json_object_set_new(c->root, key, v) ? RT_ENOMEM : 0;
        } else if (c->vars && json_object_get(c->vars, key)) {
            rc = json_object_set_new(c->vars, key, v) ? RT_ENOMEM : 0;
        } else {
            json_decref(v);
            rc = rt_fail(RT_ENOTFOUND, "--set %s: %s: no such variable in vars: (nor work_dir, name; STAGE.KEY sets a stage's option)",
                         key, c->path);
        }
        return rc;
    }
    *dot = 0;
    const char *stage = key, *opt = dot + 1;
    if (!strcmp(stage, "vars")) {
        if (!c->vars || !json_object_get(c->vars, opt)) {
            json_decref(v);
            return rt_fail(RT_ENOTFOUND, "--set vars.%s: %s: no such variable in vars:", opt, c->path);
        }
        return json_object_set_new(c->vars, opt, v) ? RT_ENOMEM : 0;
    }
    json_t *stages = json_object_get(c->root, "stages");
    size_t i;
    json_t *st;
    json_array_foreach(stages, i, st) {
        if (!json_is_object(st)) continue;
        json_t *nm = json_object_get(st, "name"), *kd = json_object_get(st, "stage");
        const char *n = json_is_string(nm) ? json_string_value(nm) : json_is_string(kd) ? json_string_value(kd) : NULL;
        if (!n || strcmp(n, stage)) continue;
        /* an option the stage already has under its other spelling ('_' for '-') is replaced */
        const char *k;
        json_t *old;
        json_object_foreach(st, k, old) {
            size_t j = 0;
            for (; k[j] && opt[j]; j++)
                if (k[j] != opt[j] && !((k[j] == '-' || k[j] == '_') && (opt[j] == '-' || opt[j] == '_'))) break;
            if (!k[j] && !opt[j]) return json_object_set_new(st, k, v) ? RT_ENOMEM : 0;
        }
        return json_object_set_new(st, opt, v) ? RT_ENOMEM : 0;
    }
    json_decref(v);
    return rt_fail(RT_ENOTFOUND, "--set %s.%s: %s: no stage named '%s'", stage, opt, c->path, stage);
}

/* ---- stages ---- */

typedef struct {
    char **v;
    size_t n, cap;
} strv;

static int sv_push(strv *a, char *s) { /* takes s */
    if (!s) return RT_ENOMEM;
    if (a->n + 2 > a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 16;
        char **nv = realloc(a->v, cap * sizeof *nv);
        if (!nv) { free(s); return RT_ENOMEM; }
        a->v = nv;
        a->cap = cap;
    }
    a->v[a->n++] = s;
    a->v[a->n] = NULL;
    return 0;
}

static void sv_free(strv *a) {
    for (size_t i = 0; i < a->n; i++) free(a->v[i]);
    free(a->v);
    *a = (strv){0};
}

static bool parse_int_text(const char *s, long long *out) {
    char *e;
    errno = 0;
    long long v = strtoll(s, &e, 10);
    if (errno || e == s || *e) return false;
    *out = v;
    return true;
}

static bool parse_num_text(const char *s) {
    char *e;
    errno = 0;
    double v = strtod(s, &e);
    return !(e == s || *e || !isfinite(v));
}

/* Splits a launcher string into words: spaces separate, '...' and "..." quote. */
static int split_words(const char *s, strv *out) {
    sbuf w = {0};
    int rc = 0;
    bool have = false;
    for (const char *p = s;; p++) {
        if (!*p || *p == ' ' || *p == '\t') {
            if (have) {
                rc = sv_push(out, w.s ? w.s : rt_strdup(""));
                w = (sbuf){0};
                have = false;
                if (rc) break;
            }
            if (!*p) break;
            continue;
        }
        have = true;
        if (*p == '\'' || *p == '"') {
            char q = *p;
            const char *e = strchr(p + 1, q);
            if (!e) { rc = RT_EFORMAT; break; }
            if ((rc = sb_add(&w, p + 1, (size_t)(e - p - 1)))) break;
            p = e;
        } else if ((rc = sb_add(&w, p, 1))) {
            break;
        }
    }
    free(w.s);
    return rc;
}

static bool is_url(const char *s) { return !strncmp(s, "http://", 7) || !strncmp(s, "https://", 8); }

static int add_input(rc_stage *st, const ctx *c, const char *key, const char *val, unsigned flags, int line) {
    if (is_url(val) || strstr(val, "${checkpoint:")) return 0;
    if (!strcmp(key, "resume") && !strcmp(val, "auto")) return 0;   /* train --resume auto: not a path */
    const char *p = !strncmp(val, "local:", 6) ? val + 6 : val;
    if (flags & CO_IN_JSONL) {
        size_t n = strlen(p);
        if (!(n > 6 && !strcmp(p + n - 6, ".jsonl")) && !(n > 5 && !strcmp(p + n - 5, ".json"))) return 0;
    }
    /* what the recipe's own stages write lives in work_dir */
    size_t wl = strlen(c->work_dir);
    if (!strncmp(p, c->work_dir, wl) && (p[wl] == '/' || !p[wl])) return 0;
    rc_input *ni = realloc(st->inputs, (st->n_inputs + 1) * sizeof *ni);
    if (!ni) return RT_ENOMEM;
    st->inputs = ni;
    rc_input *in = &ni[st->n_inputs];
    *in = (rc_input){rt_strdup(key), rt_strdup(p), line};
    if (!in->key || !in->path) { free(in->key); free(in->path); return RT_ENOMEM; }
    st->n_inputs++;
    return 0;
}

/* One option value, checked and rendered into argv (or pos). */
static int add_option(ctx *c, rc_stage *st, const co_opt *o, const char *key, const json_t *v, int line,
                      const char *where, strv *argv, strv *pos) {
    char w[400];
    snprintf(w, sizeof w, "%s: %s", where, key);
    if (o->arg == CO_LIST || o->arg == CO_POS) {
        size_t n = json_is_array(v) ? json_array_size(v) : 1;
        if (json_is_object(v) || json_is_null(v))
            return fail_at(c, line, "%s: expected a list (or one value), got %s", w, type_name(v));
        for (size_t i = 0; i < n; i++) {
            const json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
            char *raw = scalar_text(e), *s;
            if (!raw) {
                if (json_is_array(e) || json_is_object(e) || json_is_null(e))
                    return fail_at(c, line, "%s: list items must be scalars, got %s", w, type_name(e));
                return RT_ENOMEM;
            }
            int rc = subst(c, raw, 0, w, line, &s);
            free(raw);
            if (rc) return rc;
            if ((o->roles & (CO_IN | CO_IN_JSONL)) && (rc = add_input(st, c, o->recipe, s, o->roles, line))) { free(s); return rc; }
            if (o->arg == CO_POS) {
                if ((rc = sv_push(pos, s))) return rc;
            } else {
                char flag[80];
                snprintf(flag, sizeof flag, "--%s", o->name);
                if ((rc = sv_push(argv, rt_strdup(flag))) || (rc = sv_push(argv, s))) return rc;
            }
        }
        return 0;
    }
    if (!(json_is_string(v) || json_is_number(v) || json_is_boolean(v)))
        return fail_at(c, line, "%s: expected %s, got %s", w,
                       o->arg == CO_INT || o->arg == CO_U64 ? "an integer" : o->arg == CO_NUM ? "a number" : o->arg == CO_FLAG ? "true or false" : "a string",
                       type_name(v));
    /* YAML types that cannot be right whatever the variables say */
    if ((o->arg == CO_INT || o->arg == CO_U64 || o->arg == CO_NUM) && json_is_boolean(v))
        return fail_at(c, line, "%s: expected %s, got a boolean", w, o->arg == CO_NUM ? "a number" : "an integer");
    if (o->arg == CO_FLAG && json_is_number(v)) return fail_at(c, line, "%s: expected true or false, got %s", w, type_name(v));
    if (o->arg == CO_STR && json_is_boolean(v)) return fail_at(c, line, "%s: expected a string, got a boolean", w);
    char *raw = scalar_text(v), *s;
    if (!raw) return RT_ENOMEM;
    int rc = subst(c, raw, 0, w, line, &s);
    free(raw);
    if (rc) return rc;
    long long iv;
    const char *bad = NULL;
    uint64_t uv;
    if (o->arg == CO_INT && !parse_int_text(s, &iv)) bad = "an integer";
    if (o->arg == CO_U64 && !co_parse_u64(s, &uv)) bad = "an integer from 0 to 18446744073709551615";
    if (o->arg == CO_NUM && !parse_num_text(s)) bad = "a number";
    if (o->arg == CO_FLAG && strcmp(s, "true") && strcmp(s, "false")) bad = "true or false";
    if (bad) {
        rc = fail_at(c, line, "%s: expected %s, got '%s'", w, bad, s);
        free(s);
        return rc;
    }
    if ((o->roles & (CO_IN | CO_IN_JSONL)) && (rc = add_input(st, c, o->recipe, s, o->roles, line))) { free(s); return rc; }
    if ((o->roles & CO_OUT) && !st->train_out && !(st->train_out = rt_strdup(s))) { free(s); return RT_ENOMEM; }
    size_t wl = strlen(c->work_dir);
    if ((o->roles & CO_LOG) && !st->train_log && !strncmp(s, c->work_dir, wl) && s[wl] == '/' &&
        !(st->train_log = rt_strdup(s))) {
        free(s);
        return RT_ENOMEM;
    }
    char flag[80];
    snprintf(flag, sizeof flag, "--%s", o->name);
    if (o->arg == CO_FLAG) {
        bool on = !strcmp(s, "true");
        free(s);
        return on ? sv_push(argv, rt_strdup(flag)) : 0;
    }
    if ((rc = sv_push(argv, rt_strdup(flag)))) { free(s); return rc; }
    return sv_push(argv, s);
}

static bool good_stage_name(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_') return false;
    return true;
}

static uint64_t hash_argv(char **argv, size_t argc) {
    XXH64_state_t *h = XXH64_createState();
    if (!h) return 0;
    XXH64_reset(h, 0);
    for (size_t i = 0; i < argc; i++) XXH64_update(h, argv[i], strlen(argv[i]) + 1);
    uint64_t r = XXH64_digest(h);
    XXH64_freeState(h);
    return r;
}

static int build_stage(ctx *c, size_t idx, const json_t *item, rc_stage *st, bool *enabled) {
    *enabled = true;
    int sline = line_of(&c->loc, "stages", idx, NULL);
    st->line = sline;
    char where[300];
    snprintf(where, sizeof where, "stages[%zu]", idx);
    if (!json_is_object(item)) return fail_at(c, sline, "%s: expected a map (stage: KIND, options...), got %s", where, type_name(item));
    const json_t *kv = json_object_get(item, "stage");
    if (!kv) return fail_at(c, sline, "%s: missing 'stage:' (one of import, generate, filter, select, export, pack, train, eval, compare, report)", where);
    int kl = line_of(&c->loc, "stages", idx, "stage");
    if (!json_is_string(kv)) return fail_at(c, kl, "%s: stage: expected a string, got %s", where, type_name(kv));
    const co_command *kind = find_kind(json_string_value(kv));
    if (!kind)
        return fail_at(c, kl ? kl : sline, "%s: unknown stage '%s' (one of import, generate, filter, select, export, pack, train, eval, compare, report)",
                       where, json_string_value(kv));
    const json_t *nv = json_object_get(item, "name");
    if (nv && !json_is_string(nv))
        return fail_at(c, line_of(&c->loc, "stages", idx, "name"), "%s: name: expected a string, got %s", where, type_name(nv));
    const char *name = nv ? json_string_value(nv) : kind->name;
    if (!good_stage_name(name))
        return fail_at(c, line_of(&c->loc, "stages", idx, "name"), "%s: name '%s': letters, digits, '-' and '_' only", where, name);
    st->name = rt_strdup(name);
    st->kind = rt_strdup(kind->name);
    if (!st->name || !st->kind) return RT_ENOMEM;
    snprintf(where, sizeof where, "stage %s", name);

    strv argv = {0}, pos = {0}, launch = {0};
    int rc = sv_push(&argv, rt_strdup(kind->name));
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)item, key, v) {
        if (rc) break;
        int line = line_of(&c->loc, "stages", idx, key);
        if (!line) line = sline;
        if (!strcmp(key, "stage") || !strcmp(key, "name") || !strcmp(key, "description")) continue;
        if (!strcmp(key, "enabled")) {
            char *raw = json_is_boolean(v) || json_is_string(v) ? scalar_text(v) : NULL, *s = NULL;
            if (!raw) { rc = fail_at(c, line, "%s: enabled: expected true or false, got %s", where, type_name(v)); break; }
            rc = subst(c, raw, 0, "enabled", line, &s);
            free(raw);
            if (!rc && strcmp(s, "true") && strcmp(s, "false"))
                rc = fail_at(c, line, "%s: enabled: expected true or false, got '%s'", where, s);
            if (!rc) *enabled = !strcmp(s, "true");
            free(s);
            continue;
        }
        if (!strcmp(key, "launcher")) {
            if (json_is_null(v)) continue;
            if (!json_is_string(v) && !json_is_array(v)) {
                rc = fail_at(c, line, "%s: launcher: expected a string (\"mpirun -np 8\") or a list of words, got %s", where, type_name(v));
                break;
            }
            size_t n = json_is_array(v) ? json_array_size(v) : 1;
            for (size_t i = 0; i < n && !rc; i++) {
                const json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
                char *raw = scalar_text(e), *s = NULL;
                if (!raw) { rc = fail_at(c, line, "%s: launcher: words must be scalars", where); break; }
                rc = subst(c, raw, 0, "launcher", line, &s);
                free(raw);
                if (rc) break;
                if (json_is_array(v)) rc = sv_push(&launch, s);
                else {
                    rc = split_words(s, &launch);
                    free(s);
                    if (rc == RT_EFORMAT) rc = fail_at(c, line, "%s: launcher: unbalanced quote", where);
                }
            }
            continue;
        }
        if (!strcmp(key, "extra_args")) continue; /* after the options */
        const co_opt *o = co_recipe_key(kind, key);
        if (!o) {
            char known[700];
            size_t k = 0;
            known[0] = 0;
            for (const co_opt *d = kind->opts; (d->name || d->recipe) && k + 40 < sizeof known; d++)
                if (d->recipe) k += (size_t)snprintf(known + k, sizeof known - k, "%s%s", k ? ", " : "", d->recipe);
            rc = fail_at(c, line, "%s: unknown key '%s' (%s takes: %s; and name, launcher, enabled, extra_args)", where,
                         key, kind->name, known);
            break;
        }
        rc = add_option(c, st, o, key, v, line, where, &argv, &pos);
    }
    for (size_t i = 0; !rc && i < pos.n; i++) {
        rc = sv_push(&argv, pos.v[i]);
        pos.v[i] = NULL;
    }
    const json_t *ex = json_object_get(item, "extra_args");
    if (!rc && ex && !json_is_null(ex)) {
        int line = line_of(&c->loc, "stages", idx, "extra_args");
        if (!json_is_array(ex)) rc = fail_at(c, line, "%s: extra_args: expected a list of words, got %s", where, type_name(ex));
        size_t i;
        json_t *e;
        json_array_foreach(ex, i, e) {
            if (rc) break;
            char *raw = scalar_text(e), *s;
            if (!raw) { rc = fail_at(c, line, "%s: extra_args: words must be scalars", where); break; }
            rc = subst(c, raw, 0, "extra_args", line, &s);
            free(raw);
            if (!rc) rc = sv_push(&argv, s);
        }
    }
    sv_free(&pos);
    if (rc) { sv_free(&argv); sv_free(&launch); return rc; }
    st->argv = argv.v;
    st->argc = argv.n;
    st->launcher = launch.v;
    st->n_launcher = launch.n;
    st->hash = hash_argv(st->argv, st->argc);
    return 0;
}

static void stage_free(rc_stage *st) {
    free(st->name);
    free(st->kind);
    rc_argv_free(st->launcher);
    rc_argv_free(st->argv);
    for (size_t i = 0; i < st->n_inputs; i++) {
        free(st->inputs[i].key);
        free(st->inputs[i].path);
    }
    free(st->inputs);
    free(st->train_out);
    free(st->train_log);
}

void rc_argv_free(char **argv) {
    if (!argv) return;
    for (char **p = argv; *p; p++) free(*p);
    free(argv);
}

void rc_plan_free(rc_plan *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_stages; i++) stage_free(&p->stages[i]);
    free(p->stages);
    free(p->path);
    free(p->name);
    free(p->work_dir);
    free(p->state_path);
    free(p);
}

static char *default_name(const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    char *s = rt_strdup(b);
    if (!s) return NULL;
    size_t n = strlen(s);
    if (n > 5 && !strcmp(s + n - 5, ".yaml")) s[n - 5] = 0;
    else if (n > 4 && !strcmp(s + n - 4, ".yml")) s[n - 4] = 0;
    return s;
}

static char *dir_of(const char *path) {
    char *abs = realpath(path, NULL);
    if (!abs) return NULL;
    char *sl = strrchr(abs, '/');
    if (sl && sl != abs) *sl = 0;
    else if (sl) sl[1] = 0;
    return abs;
}

static int load(ctx *c, const char *const *sets, size_t n_sets, rc_plan *p) {
    size_t len;
    int rc = rt_read_file(c->path, &c->text, &len);
    if (rc) return rt_errorf(rc, "reading recipe %s", c->path);
    rc = loc_build(c->text, &c->loc);
    if (!rc) rc = rt_yaml_parse(c->text, len, c->path, &c->root);
    if (rc) return rc;
    if (!json_is_object(c->root)) return fail_at(c, 0, "expected a map with work_dir:, vars: and stages:");
    const char *key;
    json_t *v;
    json_object_foreach(c->root, key, v) {
        if (!in_list(TOP_KEYS, sizeof TOP_KEYS / sizeof *TOP_KEYS, key))
            return fail_at(c, line_of(&c->loc, NULL, SIZE_MAX, key),
                           "unknown key '%s' at the top level (known: name, description, work_dir, vars, stages)", key);
    }
    c->vars = json_object_get(c->root, "vars");
    if (c->vars && json_is_null(c->vars)) c->vars = NULL;
    if (c->vars && !json_is_object(c->vars))
        return fail_at(c, line_of(&c->loc, NULL, SIZE_MAX, "vars"), "vars: expected a map of NAME: value, got %s", type_name(c->vars));
    if (c->vars) {
        json_object_foreach(c->vars, key, v) {
            if (!strcmp(key, "work_dir") || !strcmp(key, "recipe_dir") || !strcmp(key, "name") || !strncmp(key, "env:", 4))
                return fail_at(c, line_of(&c->loc, "vars", SIZE_MAX, key), "vars: %s: a built-in variable's name", key);
        }
    }
    for (size_t i = 0; i < n_sets; i++)
        if ((rc = apply_set(c, sets[i]))) return rc;
    json_t *nm = json_object_get(c->root, "name");
    if (nm && !json_is_string(nm))
        return fail_at(c, line_of(&c->loc, NULL, SIZE_MAX, "name"), "name: expected a string, got %s", type_name(nm));
    c->name = nm ? rt_strdup(json_string_value(nm)) : default_name(c->path);
    c->recipe_dir = dir_of(c->path);
    if (!c->name || !c->recipe_dir) return RT_ENOMEM;
    if ((rc = resolve_work_dir(c))) return rc;
    /* every variable must resolve, used or not: a typo surfaces now */
    c->checking_vars = true;
    if (c->vars) {
        json_object_foreach(c->vars, key, v) {
            char *raw = scalar_text(v), *s;
            int line = line_of(&c->loc, "vars", SIZE_MAX, key);
            if (!raw) return json_is_array(v) || json_is_object(v) || json_is_null(v)
                                 ? fail_at(c, line, "vars: %s: expected a scalar, got %s", key, type_name(v))
                                 : RT_ENOMEM;
            char w[300];
            snprintf(w, sizeof w, "vars: %s", key);
            rc = subst(c, raw, 0, w, line, &s);
            free(raw);
            free(s);
            if (rc) return rc;
        }
    }
    c->checking_vars = false;
    json_t *stages = json_object_get(c->root, "stages");
    int sl = line_of(&c->loc, NULL, SIZE_MAX, "stages");
    if (!stages) return fail_at(c, 0, "stages: missing (a list of stages)");
    if (!json_is_array(stages) || !json_array_size(stages))
        return fail_at(c, sl, "stages: expected a non-empty list, got %s", json_is_array(stages) ? "an empty list" : type_name(stages));
    p->stages = rt_calloc(json_array_size(stages), sizeof *p->stages);
    c->chain = rt_calloc(json_array_size(stages), sizeof *c->chain);
    if (!p->stages || !c->chain) return RT_ENOMEM;
    c->plan = p;
    size_t i;
    json_array_foreach(stages, i, v) {
        size_t k = p->n_stages;
        bool enabled;
        rc = build_stage(c, i, v, &p->stages[k], &enabled);
        p->n_stages = k + 1;
        if (rc) return rc;
        for (size_t j = 0; j < k; j++)
            if (!strcmp(p->stages[j].name, p->stages[k].name))
                return fail_at(c, p->stages[k].line, "stages[%zu]: a second stage named '%s' (give it name: SOMETHING-ELSE)", i,
                               p->stages[k].name);
        if (!enabled) { /* enabled: false drops the stage from the plan */
            stage_free(&p->stages[k]);
            p->stages[k] = (rc_stage){0};
            p->n_stages = k;
            continue;
        }
        uint64_t link[2] = {k ? c->chain[k - 1] : 0, p->stages[k].hash};
        c->chain[k] = XXH64(link, sizeof link, 0);
    }
    if (!p->n_stages) return fail_at(c, sl, "stages: every stage is disabled (enabled: false)");
    p->name = c->name;
    c->name = NULL;
    p->work_dir = c->work_dir;
    c->work_dir = NULL;
    p->state_path = rt_path_join(p->work_dir, "recipe-state.json");
    return p->state_path ? 0 : RT_ENOMEM;
}

int rc_load(const char *path, const char *const *sets, size_t n_sets, rc_plan **out) {
    *out = NULL;
    rc_plan *p = rt_calloc(1, sizeof *p);
    if (!p) return RT_ENOMEM;
    ctx c = {.path = path};
    p->path = rt_strdup(path);
    int rc = p->path ? load(&c, sets, n_sets, p) : RT_ENOMEM;
    free(c.loc.v);
    free(c.text);
    free(c.chain);
    json_decref(c.root);
    free(c.recipe_dir);
    free(c.name);
    free(c.work_dir);
    if (rc) { rc_plan_free(p); return rc; }
    *out = p;
    return 0;
}

int rc_find_stage(const rc_plan *p, const char *name) {
    for (size_t i = 0; i < p->n_stages; i++)
        if (!strcmp(p->stages[i].name, name)) return (int)i;
    return -1;
}

int rc_check_inputs(const rc_plan *p, size_t first, size_t last) {
    for (size_t i = first; i <= last && i < p->n_stages; i++) {
        const rc_stage *st = &p->stages[i];
        for (size_t j = 0; j < st->n_inputs; j++) {
            const rc_input *in = &st->inputs[j];
            if (access(in->path, F_OK)) {
                if (in->line > 0)
                    return rt_fail(RT_ENOTFOUND, "%s:%d: stage %s: %s: %s does not exist", p->path, in->line, st->name, in->key, in->path);
                return rt_fail(RT_ENOTFOUND, "%s: stage %s: %s: %s does not exist", p->path, st->name, in->key, in->path);
            }
        }
    }
    return 0;
}

static bool plain_word(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("_-./:=,+@%", *s)) return false;
    return true;
}

static int add_quoted(sbuf *b, const char *w) {
    if (b->n && sb_add(b, " ", 1)) return RT_ENOMEM;
    if (plain_word(w)) return sb_add(b, w, strlen(w));
    int rc = sb_add(b, "'", 1);
    for (const char *p = w; !rc && *p; p++) rc = *p == '\'' ? sb_add(b, "'\\''", 4) : sb_add(b, p, 1);
    return rc ? rc : sb_add(b, "'", 1);
}

char *rc_command_line(const rc_stage *s, const char *exe) {
    sbuf b = {0};
    int rc = sb_add(&b, "", 0);
    for (size_t i = 0; !rc && i < s->n_launcher; i++) rc = add_quoted(&b, s->launcher[i]);
    if (!rc) rc = add_quoted(&b, exe);
    for (size_t i = 0; !rc && i < s->argc; i++) rc = add_quoted(&b, s->argv[i]);
    if (rc) { free(b.s); return NULL; }
    return b.s;
}

/* ---- state ---- */

struct rc_state {
    json_t *root;   /* {"recipe": NAME, "stages": {NAME: {hash, status, seconds, time}}} */
    char *path;
};

int rc_state_load(const rc_plan *p, rc_state **out) {
    *out = NULL;
    rc_state *s = rt_calloc(1, sizeof *s);
    if (!s || !(s->path = rt_strdup(p->state_path))) { free(s); return RT_ENOMEM; }
    if (rt_is_file(p->state_path)) {
        json_error_t err;
        s->root = json_load_file(p->state_path, 0, &err);
        if (!s->root || !json_is_object(json_object_get(s->root, "stages"))) {
            int rc = rt_fail(RT_EFORMAT, "%s:%d: not a recipe state file (%s); remove it to start over", p->state_path, err.line,
                             s->root ? "no stages" : err.text);
            rc_state_free(s);
            return rc;
        }
    } else {
        s->root = json_pack("{s:s,s:{}}", "recipe", p->name, "stages");
        if (!s->root) { rc_state_free(s); return RT_ENOMEM; }
    }
    *out = s;
    return 0;
}

void rc_state_free(rc_state *s) {
    if (!s) return;
    json_decref(s->root);
    free(s->path);
    free(s);
}

static void hash_hex(uint64_t h, char buf[17]) { snprintf(buf, 17, "%016llx", (unsigned long long)h); }

rc_status rc_state_get(const rc_state *s, const rc_stage *st) {
    json_t *r = json_object_get(json_object_get(s->root, "stages"), st->name);
    if (!json_is_object(r)) return RC_NONE;
    char hex[17];
    hash_hex(st->hash, hex);
    const char *h = json_string_value(json_object_get(r, "hash"));
    if (!h || strcmp(h, hex)) return RC_CHANGED;
    const char *status = json_string_value(json_object_get(r, "status"));
    return status && !strcmp(status, "done") ? RC_DONE : RC_STARTED;
}

int rc_state_mark(rc_state *s, const rc_plan *p, size_t i, bool done, double seconds) {
    json_t *stages = json_object_get(s->root, "stages");
    for (size_t j = i; j < p->n_stages; j++) json_object_del(stages, p->stages[j].name);
    char hex[17], when[32];
    hash_hex(p->stages[i].hash, hex);
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_t *r = done ? json_pack("{s:s,s:s,s:f,s:s}", "hash", hex, "status", "done", "seconds", seconds, "time", when)
                     : json_pack("{s:s,s:s,s:s}", "hash", hex, "status", "started", "time", when);
    if (!r || json_object_set_new(stages, p->stages[i].name, r)) return RT_ENOMEM;
    char *txt = json_dumps(s->root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!txt) return RT_ENOMEM;
    int rc = rt_atomic_write_text(s->path, txt);
    free(txt);
    return rc;
}

void rc_schedule(const rc_plan *p, const rc_state *s, int from, int only, rc_action *act) {
    size_t first = 0;
    if (only >= 0) {
        for (size_t i = 0; i < p->n_stages; i++) act[i] = RC_SKIP;
        act[only] = rc_state_get(s, &p->stages[only]) == RC_STARTED ? RC_RESUME : RC_RUN;
        return;
    }
    if (from >= 0) first = (size_t)from;
    else
        while (first < p->n_stages && rc_state_get(s, &p->stages[first]) == RC_DONE) first++;
    for (size_t i = 0; i < p->n_stages; i++) {
        if (i < first) act[i] = RC_SKIP;
        else if (i == first && rc_state_get(s, &p->stages[i]) == RC_STARTED) act[i] = RC_RESUME;
        else act[i] = RC_RUN;
    }
}

/* The newest complete checkpoint in dir (step-N with step-N.state/trainer_state.json, or the
 * older step-N/trainer_state.json: student/train.h); owned, NULL when there is none. */
static char *newest_checkpoint(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return NULL;
    long long best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long n;
        if (strncmp(e->d_name, "step-", 5) || !parse_int_text(e->d_name + 5, &n) || n <= best) continue;
        char *sub = rt_path_join(dir, e->d_name), *ts = sub ? rt_path_join(sub, "trainer_state.json") : NULL;
        size_t len = sub ? strlen(sub) + 32 : 0;
        char *st = sub ? malloc(len) : NULL;
        if (st) snprintf(st, len, "%s.state/trainer_state.json", sub);
        if ((ts && rt_is_file(ts)) || (st && rt_is_file(st))) best = n;
        free(sub);
        free(ts);
        free(st);
    }
    closedir(d);
    if (best < 0) return NULL;
    char name[32];
    snprintf(name, sizeof name, "step-%lld", best);
    return rt_path_join(dir, name);
}

/* True when dir holds an entry named step-* (checkpoints of an earlier run of the stage). */
static bool has_step_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    struct dirent *e;
    bool any = false;
    while (!any && (e = readdir(d))) any = !strncmp(e->d_name, "step-", 5);
    closedir(d);
    return any;
}

/* a with every ${checkpoint:NAME} replaced; owned in *out. */
static int bind_arg(const rc_plan *p, size_t i, const char *a, bool strict, char **out) {
    *out = NULL;
    sbuf b = {0};
    int rc = sb_add(&b, "", 0);
    for (const char *q = a; !rc && *q;) {
        const char *d = strstr(q, "${checkpoint:"), *e = d ? strchr(d, '}') : NULL;
        if (!d || !e) { rc = sb_add(&b, q, strlen(q)); break; }
        rc = sb_add(&b, q, (size_t)(d - q));
        char name[256];
        size_t n = (size_t)(e - d - 13);
        snprintf(name, sizeof name, "%.*s", (int)(n < sizeof name ? n : sizeof name - 1), d + 13);
        int k = rc_find_stage(p, name);
        char *ck = k >= 0 && p->stages[k].train_out ? newest_checkpoint(p->stages[k].train_out) : NULL;
        if (!rc && ck) rc = sb_add(&b, ck, strlen(ck));
        else if (!rc && strict)
            rc = rt_fail(RT_ENOTFOUND, "stage %s: ${checkpoint:%s}: no checkpoint in %s yet", p->stages[i].name, name,
                         k >= 0 && p->stages[k].train_out ? p->stages[k].train_out : "(stage has no --out)");
        else if (!rc) rc = sb_add(&b, d, (size_t)(e - d + 1));
        free(ck);
        q = e + 1;
    }
    if (rc) { free(b.s); return rc; }
    *out = b.s;
    return 0;
}

int rc_stage_argv(const rc_plan *p, size_t i, bool resume, bool strict, char ***argv_out, char **resumed_from) {
    *argv_out = NULL;
    *resumed_from = NULL;
    const rc_stage *st = &p->stages[i];
    char *ck = resume && !strcmp(st->kind, "train") && st->train_out ? newest_checkpoint(st->train_out) : NULL;
    char **v = rt_calloc(st->argc + 3, sizeof *v);
    if (!v) { free(ck); return RT_ENOMEM; }
    size_t n = 0;
    int rc = 0;
    bool put = false;
    for (size_t j = 0; !rc && j < st->argc; j++) {
        const char *a = st->argv[j];
        if (ck && j + 1 < st->argc && (!strcmp(a, "--init") || !strcmp(a, "--model") || !strcmp(a, "--resume"))) {
            j++;
            if (put) continue;
            put = true;
            if (!(v[n++] = rt_strdup("--resume")) || !(v[n++] = rt_strdup(ck))) rc = RT_ENOMEM;
            continue;
        }
        rc = bind_arg(p, i, a, strict, &v[n++]);
    }
    if (!rc && ck && !put && (!(v[n++] = rt_strdup("--resume")) || !(v[n++] = rt_strdup(ck)))) rc = RT_ENOMEM;
    /* a stage run afresh (new, changed, or --from/--only) over checkpoints of its earlier run:
     * train refuses a --out holding another run's checkpoints unless told to replace them */
    bool over = false;
    for (size_t j = 1; j < st->argc; j++) over = over || !strcmp(st->argv[j], "--overwrite");
    if (!rc && !resume && !strcmp(st->kind, "train") && st->train_out && !over && has_step_entries(st->train_out) &&
        !(v[n++] = rt_strdup("--overwrite")))
        rc = RT_ENOMEM;
    if (rc) { rc_argv_free(v); free(ck); return rc; }
    *argv_out = v;
    *resumed_from = ck;
    return 0;
}
