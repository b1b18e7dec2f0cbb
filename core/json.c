#include "core/json.h"

#include "core/status.h"

static int load_error(const json_error_t *e, const char *what) {
    return rt_fail(RT_EFORMAT, "%s: invalid JSON at line %d column %d: %s", what, e->line, e->column, e->text);
}

int rt_json_load_file(const char *path, json_t **out) {
    json_error_t e;
    *out = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
    if (*out) return 0;
    if (e.line < 0 || e.position == 0) {
        /* jansson reports open failures the same way; tell them apart for the user */
        FILE *f = fopen(path, "rb");
        if (!f) return rt_fail(RT_EIO, "%s: cannot open: %s", path, e.text);
        fclose(f);
    }
    return load_error(&e, path);
}

int rt_json_loadb(const char *buf, size_t len, const char *what, json_t **out) {
    json_error_t e;
    *out = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &e);
    return *out ? 0 : load_error(&e, what);
}

static const json_t *member(const json_t *obj, const char *key) {
    const json_t *v = json_object_get(obj, key);
    return (v && !json_is_null(v)) ? v : NULL;
}

int rt_json_get_int(const json_t *obj, const char *key, int64_t def, int64_t *out) {
    const json_t *v = member(obj, key);
    *out = def;
    if (!v) return 0;
    if (json_is_integer(v)) { *out = json_integer_value(v); return 0; }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d == (double)(int64_t)d) { *out = (int64_t)d; return 0; }
    }
    return rt_fail(RT_EFORMAT, "\"%s\" must be an integer", key);
}

int rt_json_get_num(const json_t *obj, const char *key, double def, double *out) {
    const json_t *v = member(obj, key);
    *out = def;
    if (!v) return 0;
    if (!json_is_number(v)) return rt_fail(RT_EFORMAT, "\"%s\" must be a number", key);
    *out = json_number_value(v);
    return 0;
}

int rt_json_get_bool(const json_t *obj, const char *key, bool def, bool *out) {
    const json_t *v = member(obj, key);
    *out = def;
    if (!v) return 0;
    if (!json_is_boolean(v)) return rt_fail(RT_EFORMAT, "\"%s\" must be true or false", key);
    *out = json_is_true(v);
    return 0;
}

int rt_json_get_str(const json_t *obj, const char *key, const char *def, const char **out) {
    const json_t *v = member(obj, key);
    *out = def;
    if (!v) return 0;
    if (!json_is_string(v)) return rt_fail(RT_EFORMAT, "\"%s\" must be a string", key);
    *out = json_string_value(v);
    return 0;
}
