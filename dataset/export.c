#include "dataset/export.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/status.h"
#include "dataset/db_int.h"

static bool is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

void exp_split_think(const char *text, size_t len, const char **think, size_t *think_len, const char **answer,
                     size_t *answer_len) {
    const char *end = memmem(text, len, "</think>", 8);
    *think = text;
    *think_len = 0;
    if (!end) {
        *answer = text;
        *answer_len = len;
        return;
    }
    const char *a = text, *b = end;
    while (a < b && is_space(*a)) a++;
    if ((size_t)(b - a) >= 7 && !memcmp(a, "<think>", 7)) a += 7;
    while (a < b && is_space(*a)) a++;
    while (b > a && is_space(b[-1])) b--;
    *think = a;
    *think_len = (size_t)(b - a);
    const char *c = end + 8, *stop = text + len;
    while (c < stop && is_space(*c)) c++;
    *answer = c;
    *answer_len = (size_t)(stop - c);
}

json_t *exp_conversation(const char *prompt_messages_json, const char *text, size_t len) {
    json_t *msgs = json_loads(prompt_messages_json, 0, NULL);
    if (!json_is_array(msgs)) { json_decref(msgs); return NULL; }
    const char *th, *an;
    size_t tl, al;
    exp_split_think(text, len, &th, &tl, &an, &al);
    json_t *turn = json_pack("{s:s,s:s%}", "role", "assistant", "content", an, al);
    if (turn && tl) json_object_set_new(turn, "reasoning_content", json_stringn(th, tl));
    if (!turn || json_array_append_new(msgs, turn)) { json_decref(msgs); return NULL; }
    json_t *conv = json_pack("{s:o}", "messages", msgs);
    return conv;
}

#define SELECT_SAMPLES                                                                                     \
    "SELECT s.id, s.text, s.dict_id, p.messages FROM samples s JOIN prompts p ON p.id = s.prompt_id "       \
    "WHERE (?1 IS NULL OR s.id IN (SELECT sample_id FROM snapshot_samples WHERE snapshot_id = ?1)) "      \
    "AND (?2 IS NULL OR p.source = ?2) ORDER BY s.id"

#define SELECT_PROMPTS                                                                                     \
    "SELECT p.id, p.messages, p.prompt_key, p.metadata FROM prompts p "                                  \
    "WHERE (?1 IS NULL OR p.id IN (SELECT s.prompt_id FROM snapshot_samples m JOIN samples s "           \
    "ON s.id = m.sample_id WHERE m.snapshot_id = ?1)) AND (?2 IS NULL OR p.source = ?2) ORDER BY p.id"

static int prepare_selection(db_conn *db, const char *sql, const exp_filter *flt, sqlite3_stmt **st) {
    int64_t snap = 0;
    if (flt && flt->snapshot) {
        int rc = db_snapshot_find(db, flt->snapshot, &snap);
        if (rc) return rc;
    }
    sqlite3 *h = db_sqlite(db);
    SQL_TRY(h, sqlite3_prepare_v2(h, sql, -1, st, NULL));
    if (snap) sqlite3_bind_int64(*st, 1, snap);
    if (flt && flt->source) sqlite3_bind_text(*st, 2, flt->source, -1, SQLITE_STATIC);
    return 0;
}

/* ---- the teacher's sampling defaults ------------------------------------------------------ */

json_t *exp_sampling(const char *params_json) {
    json_t *p = params_json ? json_loads(params_json, 0, NULL) : NULL;
    const json_t *t = json_object_get(p, "temperature");
    json_t *o = json_is_number(t) ? json_object() : NULL;
    if (o) {
        double temp = json_number_value(t);
        const json_t *tp = json_object_get(p, "top_p"), *tk = json_object_get(p, "top_k"), *mp = json_object_get(p, "min_p");
        const json_t *mx = json_object_get(p, "max_tokens");
        json_object_set_new(o, "do_sample", json_boolean(temp > 0));
        if (temp > 0) {
            json_object_set_new(o, "temperature", json_real(temp));
            if (json_is_number(tp)) json_object_set_new(o, "top_p", json_real(json_number_value(tp)));
            if (json_is_integer(tk) && json_integer_value(tk) > 0) json_object_set_new(o, "top_k", json_integer(json_integer_value(tk)));
            if (json_is_number(mp) && json_number_value(mp) > 0) json_object_set_new(o, "min_p", json_real(json_number_value(mp)));
        }
        if (json_is_integer(mx) && json_integer_value(mx) > 0) json_object_set_new(o, "max_new_tokens", json_integer(json_integer_value(mx)));
    }
    json_decref(p);
    return o;
}

void exp_sampling_add(exp_sampling_acc *a, const json_t *sampling) {
    if (a->unknown) return;
    if (!json_is_object(sampling)) {
        a->unknown = true;
        return;
    }
    if (!a->seen) {
        a->seen = true;
        a->common = json_deep_copy(sampling);
        if (!a->common) a->unknown = true;
        return;
    }
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(a->common, tmp, k, v) {
        if (!json_equal(v, json_object_get(sampling, k))) json_object_del(a->common, k);
    }
}

json_t *exp_sampling_take(exp_sampling_acc *a) {
    json_t *r = a->unknown || !a->common || !json_object_size(a->common) ? NULL : json_incref(a->common);
    json_decref(a->common);
    *a = (exp_sampling_acc){0};
    return r;
}

#define SELECT_PARAMS                                                                                      \
    "SELECT s.params, count(*) FROM samples s JOIN prompts p ON p.id = s.prompt_id "                        \
    "WHERE (?1 IS NULL OR s.id IN (SELECT sample_id FROM snapshot_samples WHERE snapshot_id = ?1)) "      \
    "AND (?2 IS NULL OR p.source = ?2) GROUP BY s.params"

int db_sampling_defaults(db_conn *db, const exp_filter *flt, json_t **out) {
    *out = NULL;
    sqlite3_stmt *st;
    int rc = prepare_selection(db, SELECT_PARAMS, flt, &st);
    if (rc) return rc;
    exp_sampling_acc acc = {0};
    int row, s;
    while ((s = db_step_row(st, &row)) == SQLITE_OK && row) {
        json_t *one = exp_sampling((const char *)sqlite3_column_text(st, 0));
        exp_sampling_add(&acc, one);
        json_decref(one);
    }
    sqlite3 *h = db_sqlite(db);
    sqlite3_finalize(st);
    json_t *r = exp_sampling_take(&acc);
    if (s != SQLITE_OK) {
        json_decref(r);
        SQL_TRY(h, s);
    }
    *out = r;
    return 0;
}

/* The sample's teacher top-k (sample_topk: k and n_tokens, then per token k × (u32 id, f32
 * logprob), little-endian) as conv["teacher_topk"]; nothing when the sample has none. */
static int attach_topk(db_conn *db, sqlite3_stmt *q, int64_t id, json_t *conv) {
    sqlite3_reset(q);
    sqlite3_bind_int64(q, 1, id);
    int row, s = db_step_row(q, &row), rc = 0;
    if (s != SQLITE_OK) return rt_fail(RT_EIO, "sample %lld: reading its top-k: %s", (long long)id, sqlite3_errmsg(db_sqlite(db)));
    if (!row) return 0;
    int64_t k = sqlite3_column_int64(q, 0), n = sqlite3_column_int64(q, 1);
    char *raw;
    size_t len;
    rc = db_blob_text(db, sqlite3_column_blob(q, 2), (size_t)sqlite3_column_bytes(q, 2), sqlite3_column_int64(q, 3), &raw, &len);
    if (rc) return rt_errorf(rc, "sample %lld: its top-k", (long long)id);
    if (k < 1 || n < 0 || (uint64_t)len != (uint64_t)(k * n * 8)) {
        free(raw);
        return rt_fail(RT_EFORMAT, "sample %lld: top-k blob of %zu bytes, expected %lld tokens × %lld × 8", (long long)id,
                       len, (long long)n, (long long)k);
    }
    json_t *ids = json_array(), *lps = json_array();
    for (int64_t t = 0; t < n && ids && lps; t++) {
        json_t *a = json_array(), *b = json_array();
        for (int64_t j = 0; j < k && a && b; j++) {
            uint32_t u, v;
            memcpy(&u, raw + 8 * (t * k + j), 4);
            memcpy(&v, raw + 8 * (t * k + j) + 4, 4);
            float f;
            int32_t tid;
            memcpy(&f, &v, 4);
            memcpy(&tid, &u, 4);
            if (tid < 0 || !isfinite(f)) tid = -1, f = 0;   /* an alternative without an id (endpoint): -1 */
            json_array_append_new(a, json_integer((json_int_t)tid));
            json_array_append_new(b, json_real((double)f));
        }
        json_array_append_new(ids, a);
        json_array_append_new(lps, b);
    }
    free(raw);
    json_t *o = ids && lps ? json_pack("{s:o,s:o}", "ids", ids, "logprobs", lps) : NULL;
    if (!o) return rt_fail(RT_ENOMEM, "sample %lld: its top-k", (long long)id);
    json_object_set_new(conv, "teacher_topk", o);
    return 0;
}

int db_each_conversation(db_conn *db, const exp_filter *flt, exp_conv_fn fn, void *ctx) {
    sqlite3_stmt *st, *q = NULL;
    int rc = prepare_selection(db, SELECT_SAMPLES, flt, &st);
    if (rc) return rc;
    if (flt->with_topk &&
        sqlite3_prepare_v2(db_sqlite(db), "SELECT k, n_tokens, data, coalesce(dict_id, 0) FROM sample_topk WHERE sample_id = ?1",
                           -1, &q, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
    sqlite3_finalize(q);
        return rt_fail(RT_EIO, "reading top-k: %s", sqlite3_errmsg(db_sqlite(db)));
    }
    int row, s;
    while (!rc && (s = db_step_row(st, &row)) == SQLITE_OK && row) {
        int64_t id = sqlite3_column_int64(st, 0);
        char *text;
        size_t len;
        rc = db_blob_text(db, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1),
                          sqlite3_column_int64(st, 2), &text, &len);
        if (rc) { rc = rt_errorf(rc, "sample %lld", (long long)id); break; }
        json_t *conv = exp_conversation((const char *)sqlite3_column_text(st, 3), text, len);
        free(text);
        if (!conv) { rc = rt_fail(RT_EFORMAT, "sample %lld: its prompt's messages are not a JSON array", (long long)id); break; }
        if (q) rc = attach_topk(db, q, id, conv);
        if (!rc) rc = fn(ctx, id, conv);
        json_decref(conv);
    }
    sqlite3 *h = db_sqlite(db);
    sqlite3_finalize(st);
    sqlite3_finalize(q);
    if (rc) return rc;
    SQL_TRY(h, s);
    return 0;
}

typedef struct {
    rt_atomic_file *af;
    FILE *out;
    size_t n;
} writer;

static int write_line(writer *w, json_t *j);

/* ---- chat-jsonl: the conversation as the teacher saw it, for SFT trainers ---------------- */
#define SELECT_CHAT                                                                                         \
    "SELECT s.id, s.text, s.dict_id, p.messages, s.prompt_id, s.teacher, s.params, p.source "               \
    "FROM samples s JOIN prompts p ON p.id = s.prompt_id "                                                 \
    "WHERE (?1 IS NULL OR s.id IN (SELECT sample_id FROM snapshot_samples WHERE snapshot_id = ?1)) "      \
    "AND (?2 IS NULL OR p.source = ?2) ORDER BY s.id"

static bool source_is_math(const char *source) { /* as the generation driver decides it */
    static const char *const keys[] = {"gsm8k", "math", "aime"};
    for (size_t i = 0; source && i < sizeof keys / sizeof keys[0]; i++)
        if (strcasestr(source, keys[i])) return true;
    return false;
}

/* The prompt messages as generation sent them: params' system prompt first (unless the
 * prompt has one), params' instruction appended to the last user turn where it applied. */
static int sent_messages(json_t *msgs, const char *params_json, const char *source) {
    json_t *params = params_json ? json_loads(params_json, 0, NULL) : NULL;
    if (!json_is_object(params)) { json_decref(params); return 0; } /* imported samples: no params */
    const char *system = json_string_value(json_object_get(params, "system"));
    const char *instr = json_string_value(json_object_get(params, "instruction"));
    const char *to = json_string_value(json_object_get(params, "instruction_to"));
    bool has_system = false;
    size_t i, last_user = (size_t)-1;
    json_t *x;
    json_array_foreach(msgs, i, x) {
        const char *role = json_string_value(json_object_get(x, "role"));
        if (role && !strcmp(role, "system")) has_system = true;
        if (role && !strcmp(role, "user")) last_user = i;
    }
    int rc = 0;
    if (instr && *instr && last_user != (size_t)-1 && ((to && !strcmp(to, "all")) || source_is_math(source))) {
        json_t *u = json_array_get(msgs, last_user);
        const char *c = json_string_value(json_object_get(u, "content"));
        char *t = c ? rt_malloc(strlen(c) + strlen(instr) + 2) : NULL;
        if (c && !t) rc = RT_ENOMEM;
        else if (t) {
            sprintf(t, "%s\n%s", c, instr);
            json_object_set_new(u, "content", json_string(t));
            free(t);
        }
    }
    if (!rc && system && *system && !has_system &&
        json_array_insert_new(msgs, 0, json_pack("{s:s,s:s}", "role", "system", "content", system)))
        rc = RT_ENOMEM;
    json_decref(params);
    return rc ? rt_fail(rc, "out of memory") : 0;
}

/* [{"filter", "pass", "score"}] of one sample, in filter name order. */
static int sample_filters(sqlite3_stmt *vs, int64_t id, json_t **out) {
    sqlite3_reset(vs);
    sqlite3_bind_int64(vs, 1, id);
    json_t *arr = json_array();
    int row, s;
    while (arr && (s = db_step_row(vs, &row)) == SQLITE_OK && row) {
        json_t *v = json_pack("{s:s,s:b}", "filter", (const char *)sqlite3_column_text(vs, 0), "pass",
                              sqlite3_column_int(vs, 1) != 0);
        if (v) json_object_set_new(v, "score", sqlite3_column_type(vs, 2) == SQLITE_NULL ? json_null()
                                                                                       : json_real(sqlite3_column_double(vs, 2)));
        if (!v || json_array_append_new(arr, v)) { json_decref(arr); arr = NULL; }
    }
    if (!arr) return rt_fail(RT_ENOMEM, "out of memory");
    *out = arr;
    return 0;
}

static int export_chat(db_conn *db, const exp_filter *flt, const exp_chat_opts *co, writer *w) {
    sqlite3_stmt *st, *vs = NULL;
    int rc = prepare_selection(db, SELECT_CHAT, flt, &st);
    if (rc) return rc;
    sqlite3 *h = db_sqlite(db);
    if (sqlite3_prepare_v2(h, "SELECT filter, pass, score FROM verdicts WHERE sample_id = ? ORDER BY filter", -1, &vs,
                           NULL) != SQLITE_OK) {
        rc = rt_fail(RT_EIO, "reading verdicts: %s", sqlite3_errmsg(h));
        sqlite3_finalize(st);
        return rc;
    }
    int row, s = SQLITE_OK;
    while (!rc && (s = db_step_row(st, &row)) == SQLITE_OK && row) {
        int64_t id = sqlite3_column_int64(st, 0);
        char *text;
        size_t len;
        rc = db_blob_text(db, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1),
                          sqlite3_column_int64(st, 2), &text, &len);
        if (rc) { rc = rt_errorf(rc, "sample %lld", (long long)id); break; }
        json_t *msgs = json_loads((const char *)sqlite3_column_text(st, 3), 0, NULL);
        if (!json_is_array(msgs)) {
            json_decref(msgs);
            free(text);
            rc = rt_fail(RT_EFORMAT, "sample %lld: its prompt's messages are not a JSON array", (long long)id);
            break;
        }
        rc = sent_messages(msgs, (const char *)sqlite3_column_text(st, 6), (const char *)sqlite3_column_text(st, 7));
        const char *th, *an;
        size_t tl, al;
        exp_split_think(text, len, &th, &tl, &an, &al);
        json_t *turn = NULL;
        if (!rc && co && co->reasoning_field) {
            turn = json_pack("{s:s,s:s%}", "role", "assistant", "content", an, al);
            if (turn && tl) json_object_set_new(turn, "reasoning_content", json_stringn(th, tl));
        } else if (!rc) { /* the reasoning inline, as the R1 family writes and trains on it */
            {
                size_t n = tl ? 8 + tl + 11 + al : al;
                char *c = rt_malloc(n + 1);
                if (c) {
                    size_t k = 0;
                    if (tl) { memcpy(c, "<think>\n", 8); k = 8; memcpy(c + k, th, tl); k += tl; memcpy(c + k, "\n</think>\n\n", 11); k += 11; }
                    memcpy(c + k, an, al);
                    k += al;
                    turn = json_pack("{s:s,s:s%}", "role", "assistant", "content", c, k);
                    free(c);
                }
            }
        }
        free(text);
        json_t *filters = NULL, *line = NULL;
        if (!rc && (!turn || json_array_append_new(msgs, turn))) rc = rt_fail(RT_ENOMEM, "out of memory");
        turn = NULL;
        if (!rc) rc = sample_filters(vs, id, &filters);
        if (!rc) {
            line = json_pack("{s:O,s:{s:I,s:I,s:s,s:o}}", "messages", msgs, "metadata", "sample_id", (json_int_t)id,
                             "prompt_id", (json_int_t)sqlite3_column_int64(st, 4), "teacher",
                             (const char *)sqlite3_column_text(st, 5), "filters", filters);
            if (!line) rc = rt_fail(RT_ENOMEM, "out of memory");
            json_t *sampling = line ? exp_sampling((const char *)sqlite3_column_text(st, 6)) : NULL;
            if (sampling) json_object_set_new(json_object_get(line, "metadata"), "sampling", sampling);
        }
        if (!rc) rc = write_line(w, line);
        json_decref(turn);
        json_decref(line);
        json_decref(msgs);
    }
    sqlite3_finalize(vs);
    sqlite3_finalize(st);
    if (rc) return rc;
    SQL_TRY(h, s);
    return 0;
}

static int write_line(writer *w, json_t *j) {
    char *txt = json_dumps(j, JSON_COMPACT);
    if (!txt) return rt_fail(RT_ENOMEM, "serializing a line");
    size_t l = strlen(txt);
    txt[l] = '\n';
    int rc = 0;
    if (w->af) rc = rt_atomic_write(w->af, txt, l + 1);
    else if (fwrite(txt, 1, l + 1, w->out) != l + 1) rc = rt_fail(RT_EIO, "writing to stdout failed");
    free(txt);
    if (!rc) w->n++;
    return rc;
}


/* The imported record of one prompt: {prompt_key: text, ...metadata} or {"messages": ..., ...metadata}. */
static int prompt_line(writer *w, sqlite3_stmt *st) {
    int64_t id = sqlite3_column_int64(st, 0);
    json_t *msgs = json_loads((const char *)sqlite3_column_text(st, 1), 0, NULL);
    json_t *meta = json_loads((const char *)sqlite3_column_text(st, 3), 0, NULL);
    const char *key = (const char *)sqlite3_column_text(st, 2);
    int rc = 0;
    json_t *rec = json_object();
    if (!json_is_array(msgs) || !json_is_object(meta) || !rec) {
        rc = rt_fail(RT_EFORMAT, "prompt %lld: stored messages or metadata are not valid JSON", (long long)id);
    } else if (key) {
        json_t *m0 = json_array_get(msgs, json_array_size(msgs) - 1);
        json_object_set(rec, key, json_object_get(m0, "content"));
    } else {
        json_object_set(rec, "messages", msgs);
    }
    if (!rc) {
        json_object_update(rec, meta);
        rc = write_line(w, rec);
    }
    json_decref(rec);
    json_decref(msgs);
    json_decref(meta);
    return rc;
}

static int export_prompts(db_conn *db, const exp_filter *flt, writer *w) {
    sqlite3_stmt *st;
    int rc = prepare_selection(db, SELECT_PROMPTS, flt, &st);
    if (rc) return rc;
    int row, s;
    while (!rc && (s = db_step_row(st, &row)) == SQLITE_OK && row) rc = prompt_line(w, st);
    sqlite3 *h = db_sqlite(db);
    sqlite3_finalize(st);
    if (rc) return rc;
    SQL_TRY(h, s);
    return 0;
}

int db_export_jsonl(db_conn *db, exp_format f, const exp_filter *flt, const exp_chat_opts *co, const char *out_path,
                    size_t *n_written) {
    writer w = {0};
    *n_written = 0;
    int rc = 0;
    if (strcmp(out_path, "-")) rc = rt_atomic_open(out_path, &w.af);
    else w.out = stdout;
    if (rc) return rc;
    rc = f == EXP_CHAT_JSONL ? export_chat(db, flt, co, &w) : export_prompts(db, flt, &w);
    if (w.af) {
        if (rc) rt_atomic_abort(w.af);
        else rc = rt_atomic_commit(w.af);
    } else if (!rc && fflush(stdout) != 0) {
        rc = rt_fail(RT_EIO, "writing to stdout failed");
    }
    if (!rc) *n_written = w.n;
    return rc;
}
