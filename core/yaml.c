/* core/yaml.c — the YAML subset reader (contract in yaml.h). */
#include "core/yaml.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/json.h"
#include "core/status.h"

typedef struct {
    int indent;   /* columns of leading spaces */
    char *text;   /* content without indentation and comment, right-trimmed; NUL-terminated */
    int lineno;   /* 1-based */
} y_line;

typedef struct {
    y_line *lines;
    size_t n, pos;
    const char *what;
} y_doc;

static int y_err(const y_doc *d, int lineno, const char *why) {
    return rt_fail(RT_EFORMAT, "%s:%d: %s", d->what, lineno, why);
}

/* Cuts a comment: '#' at the start or after a space/tab, outside quotes. */
static void strip_comment(char *s) {
    char q = 0;
    for (char *p = s; *p; p++) {
        if (q) {
            if (*p == '\\' && q == '"' && p[1]) p++;
            else if (*p == q) q = 0;
        } else if (*p == '"' || *p == '\'') {
            if (p == s || p[-1] == ' ' || p[-1] == '[' || p[-1] == ',' || p[-1] == ':') q = *p;
        } else if (*p == '#' && (p == s || p[-1] == ' ' || p[-1] == '\t')) {
            *p = 0;
            return;
        }
    }
}

static void rtrim(char *s) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) s[--n] = 0;
}

/* Parses a double- or single-quoted string at s (s[0] is the quote); *end after it. */
static int parse_quoted(const y_doc *d, int lineno, const char *s, const char **end, json_t **out) {
    char q = s[0];
    size_t cap = strlen(s) + 1;
    char *buf = rt_malloc(cap);
    if (!buf) return RT_ENOMEM;
    size_t n = 0;
    const char *p = s + 1;
    for (;; p++) {
        if (!*p) { free(buf); return y_err(d, lineno, "unterminated quoted string"); }
        if (*p == q) {
            if (q == '\'' && p[1] == '\'') { buf[n++] = '\''; p++; continue; }
            break;
        }
        if (q == '"' && *p == '\\') {
            p++;
            switch (*p) {
            case '"': buf[n++] = '"'; break;
            case '\\': buf[n++] = '\\'; break;
            case '/': buf[n++] = '/'; break;
            case 'n': buf[n++] = '\n'; break;
            case 't': buf[n++] = '\t'; break;
            default: free(buf); return y_err(d, lineno, "unsupported escape in double-quoted string");
            }
            continue;
        }
        buf[n++] = *p;
    }
    buf[n] = 0;
    *end = p + 1;
    *out = json_stringn(buf, n);
    free(buf);
    return *out ? 0 : y_err(d, lineno, "string is not valid UTF-8");
}

/* A plain scalar (already trimmed): null, booleans, numbers, else a string. */
static json_t *plain_scalar(const char *s) {
    if (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL")) return json_null();
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) return json_true();
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) return json_false();
    char *end;
    errno = 0;
    long long i = strtoll(s, &end, 10);
    if (!*end && end != s && !errno) return json_integer(i);
    double f = strtod(s, &end);
    if (!*end && end != s && isfinite(f) && (isdigit((unsigned char)s[0]) || s[0] == '-' || s[0] == '+' || s[0] == '.'))
        return json_real(f);
    return json_string(s);
}

/* A scalar or flow value filling all of s (trimmed). */
static int parse_inline(const y_doc *d, int lineno, const char *s, json_t **out) {
    if (s[0] == '"' || s[0] == '\'') {
        const char *end;
        int rc = parse_quoted(d, lineno, s, &end, out);
        if (rc) return rc;
        while (*end == ' ') end++;
        if (*end) { json_decref(*out); return y_err(d, lineno, "text after a quoted string"); }
        return 0;
    }
    if (s[0] == '{') {
        const char *p = s + 1;
        while (*p == ' ') p++;
        if (strcmp(p, "}")) return y_err(d, lineno, "flow maps are not supported (only {}): use a block map");
        *out = json_object();
        return *out ? 0 : RT_ENOMEM;
    }
    if (s[0] == '[') {
        json_t *arr = json_array();
        if (!arr) return RT_ENOMEM;
        const char *p = s + 1;
        for (;;) {
            while (*p == ' ') p++;
            if (*p == ']') { p++; break; }
            if (!*p) { json_decref(arr); return y_err(d, lineno, "unterminated flow list"); }
            json_t *item;
            if (*p == '"' || *p == '\'') {
                int rc = parse_quoted(d, lineno, p, &p, &item);
                if (rc) { json_decref(arr); return rc; }
            } else if (*p == '[' || *p == '{') {
                json_decref(arr);
                return y_err(d, lineno, "nested flow collections are not supported");
            } else {
                const char *b = p;
                while (*p && *p != ',' && *p != ']') p++;
                size_t n = (size_t)(p - b);
                while (n && b[n - 1] == ' ') n--;
                char tmp[256];
                if (n >= sizeof tmp) { json_decref(arr); return y_err(d, lineno, "flow list item too long"); }
                memcpy(tmp, b, n);
                tmp[n] = 0;
                item = plain_scalar(tmp);
            }
            if (!item || json_array_append_new(arr, item)) { json_decref(arr); return RT_ENOMEM; }
            while (*p == ' ') p++;
            if (!*p) { json_decref(arr); return y_err(d, lineno, "unterminated flow list"); }
            if (*p == ',') { p++; continue; }
            if (*p == ']') { p++; break; }
            json_decref(arr);
            return y_err(d, lineno, "expected ',' or ']' in flow list");
        }
        while (*p == ' ') p++;
        if (*p) { json_decref(arr); return y_err(d, lineno, "text after a flow list"); }
        *out = arr;
        return 0;
    }
    if (s[0] == '&' || s[0] == '*' || s[0] == '!' || s[0] == '|' || s[0] == '>')
        return y_err(d, lineno, "anchors, aliases, tags and block strings are not supported");
    *out = plain_scalar(s);
    return *out ? 0 : RT_ENOMEM;
}

/* Finds the ": " (or final ':') that ends a key, outside quotes; NULL when none. */
static char *key_colon(char *s) {
    if (s[0] == '"' || s[0] == '\'') {
        char q = s[0];
        char *p = s + 1;
        while (*p && *p != q) p += (*p == '\\' && q == '"' && p[1]) ? 2 : 1;
        if (!*p) return NULL;
        p++;
        while (*p == ' ') p++;
        return *p == ':' && (p[1] == ' ' || !p[1]) ? p : NULL;
    }
    for (char *p = s; *p; p++)
        if (*p == ':' && (p[1] == ' ' || !p[1])) return p;
    return NULL;
}

static int parse_block(y_doc *d, int indent, json_t **out);

/* The value of a "key:" with nothing after the colon: a deeper block, or null. */
static int parse_child(y_doc *d, int parent_indent, int lineno, json_t **out) {
    (void)lineno;
    if (d->pos < d->n && d->lines[d->pos].indent > parent_indent) return parse_block(d, d->lines[d->pos].indent, out);
    /* a list may sit at the key's own indentation ("key:\n- a") */
    if (d->pos < d->n && d->lines[d->pos].indent == parent_indent && d->lines[d->pos].text[0] == '-' &&
        (d->lines[d->pos].text[1] == ' ' || !d->lines[d->pos].text[1]))
        return parse_block(d, parent_indent, out);
    *out = json_null();
    return 0;
}

static int parse_map(y_doc *d, int indent, json_t **out) {
    json_t *map = json_object();
    if (!map) return RT_ENOMEM;
    while (d->pos < d->n && d->lines[d->pos].indent == indent) {
        y_line *l = &d->lines[d->pos];
        if (l->text[0] == '-' && (l->text[1] == ' ' || !l->text[1])) break;
        char *colon = key_colon(l->text);
        if (!colon) { json_decref(map); return y_err(d, l->lineno, "expected 'key: value'"); }
        char keybuf[256];
        size_t kn = (size_t)(colon - l->text);
        while (kn && l->text[kn - 1] == ' ') kn--;
        if (!kn || kn >= sizeof keybuf) { json_decref(map); return y_err(d, l->lineno, "empty or too long key"); }
        memcpy(keybuf, l->text, kn);
        keybuf[kn] = 0;
        json_t *key = NULL;
        int rc = 0;
        if (keybuf[0] == '"' || keybuf[0] == '\'') rc = parse_inline(d, l->lineno, keybuf, &key);
        if (rc) { json_decref(map); return rc; }
        const char *k = key ? json_string_value(key) : keybuf;
        if (!k) { json_decref(key); json_decref(map); return y_err(d, l->lineno, "key must be a string"); }
        char kcopy[256];
        snprintf(kcopy, sizeof kcopy, "%s", k);
        json_decref(key);
        if (json_object_get(map, kcopy)) {
            json_decref(map);
            char why[320];
            snprintf(why, sizeof why, "duplicate key '%s'", kcopy);
            return y_err(d, l->lineno, why);
        }
        const char *v = colon + 1;
        while (*v == ' ') v++;
        int lineno = l->lineno;
        d->pos++;
        json_t *val;
        rc = *v ? parse_inline(d, lineno, v, &val) : parse_child(d, indent, lineno, &val);
        if (rc) { json_decref(map); return rc; }
        if (json_object_set_new(map, kcopy, val)) { json_decref(map); return RT_ENOMEM; }
    }
    *out = map;
    return 0;
}

static int parse_list(y_doc *d, int indent, json_t **out) {
    json_t *arr = json_array();
    if (!arr) return RT_ENOMEM;
    while (d->pos < d->n && d->lines[d->pos].indent == indent) {
        y_line *l = &d->lines[d->pos];
        if (!(l->text[0] == '-' && (l->text[1] == ' ' || !l->text[1]))) {
            json_decref(arr);
            return y_err(d, l->lineno, "expected a list item '- …' at this indentation");
        }
        char *rest = l->text + 1;
        int off = 1;
        while (*rest == ' ') { rest++; off++; }
        json_t *item;
        int rc;
        if (!*rest) {
            d->pos++;
            rc = parse_child(d, indent, l->lineno, &item);
        } else if (key_colon(rest) && rest[0] != '[' && rest[0] != '{') {
            /* "- key: v": the item is a map whose keys sit at the column after "- " */
            l->indent += off;
            l->text = rest;
            rc = parse_map(d, l->indent, &item);
        } else {
            d->pos++;
            rc = parse_inline(d, l->lineno, rest, &item);
        }
        if (rc) { json_decref(arr); return rc; }
        if (json_array_append_new(arr, item)) { json_decref(arr); return RT_ENOMEM; }
    }
    *out = arr;
    return 0;
}

static int parse_block(y_doc *d, int indent, json_t **out) {
    y_line *l = &d->lines[d->pos];
    if (l->text[0] == '-' && (l->text[1] == ' ' || !l->text[1])) return parse_list(d, indent, out);
    return parse_map(d, indent, out);
}

int rt_yaml_parse(const char *text, size_t len, const char *what, json_t **out) {
    *out = NULL;
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t')) i++;
    if (i < len && text[i] == '{') return rt_json_loadb(text, len, what, out);
    char *buf = rt_malloc(len + 1);
    if (!buf) return RT_ENOMEM;
    memcpy(buf, text, len);
    buf[len] = 0;
    y_doc d = {.what = what};
    if (memchr(text, 0, len)) { free(buf); return y_err(&d, 0, "NUL byte in the file"); }
    size_t cap = 0;
    int rc = 0, lineno = 0;
    for (char *p = buf; p && !rc;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        lineno++;
        int ind = 0;
        while (p[ind] == ' ') ind++;
        if (!rc && p[ind] == '\t') rc = y_err(&d, lineno, "tab in indentation (use spaces)");
        if (!rc) {
            strip_comment(p + ind);
            rtrim(p + ind);
            if (!strcmp(p + ind, "---") && !d.n) p[ind] = 0;          /* a leading document marker */
            else if (!strcmp(p + ind, "---") || !strcmp(p + ind, "...")) rc = y_err(&d, lineno, "several documents are not supported");
            if (!rc && p[ind]) {
                if (rt_grow((void **)&d.lines, &cap, d.n + 1, sizeof *d.lines)) rc = RT_ENOMEM;
                else d.lines[d.n++] = (y_line){ind, p + ind, lineno};
            }
        }
        p = nl ? nl + 1 : NULL;
    }
    json_t *root = NULL;
    if (!rc) {
        if (!d.n) root = json_object();
        else if (d.lines[0].indent != 0) rc = y_err(&d, d.lines[0].lineno, "the document must start at column 0");
        else if (d.n == 1 && !key_colon(d.lines[0].text) && d.lines[0].text[0] != '-')
            rc = y_err(&d, d.lines[0].lineno, "expected a map or a list");
        else rc = parse_block(&d, 0, &root);
        if (!rc && d.pos < d.n) rc = y_err(&d, d.lines[d.pos].lineno, "unexpected indentation");
        if (!rc && !root) rc = RT_ENOMEM;
    }
    free(d.lines);
    free(buf);
    if (rc) { json_decref(root); return rc; }
    *out = root;
    return 0;
}

int rt_yaml_load_file(const char *path, json_t **out) {
    char *buf;
    size_t len;
    int rc = rt_read_file(path, &buf, &len);
    if (rc) return rc;
    rc = rt_yaml_parse(buf, len, path, out);
    free(buf);
    return rc;
}
