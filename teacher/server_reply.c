/* teacher/server_reply.c — the response bodies of a job (see server_reply.h). */
#include "teacher/server_reply.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "teacher/oai.h"

/* A token as text (lossy) and as raw bytes. */
typedef struct {
    char *text;
    size_t len;
    uint8_t bytes[256];
    size_t n_bytes;
} tok_text;

/* GPT-2's byte-to-unicode map, inverted: a code point of a byte-level token → its byte. */
static int byte_of(uint32_t cp) {
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255)) return (int)cp;
    if (cp < 256 || cp >= 256 + 68) return -1;
    int k = (int)(cp - 256);
    for (int b = 0; b < 256; b++) {
        bool direct = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        if (!direct && k-- == 0) return b;
    }
    return -1;
}

static void token_text(const tok_tokenizer *tok, int32_t id, tok_text *t) {
    t->text = NULL;
    t->len = 0;
    t->n_bytes = 0;
    if (tok_decode(tok, &id, 1, false, &t->text, &t->len)) {
        t->text = NULL;
        t->len = 0;
        return;
    }
    if (!memmem(t->text, t->len, "\xEF\xBF\xBD", 3) || tok_is_special(tok, id)) {
        t->n_bytes = t->len < sizeof t->bytes ? t->len : sizeof t->bytes;
        memcpy(t->bytes, t->text, t->n_bytes);
        return;
    }
    const unsigned char *p = (const unsigned char *)tok_id_to_token(tok, id);
    while (p && *p && t->n_bytes < sizeof t->bytes) {   /* decode UTF-8 of the byte-level form */
        uint32_t cp = *p++;
        int more = cp >= 0xF0 ? 3 : cp >= 0xE0 ? 2 : cp >= 0xC0 ? 1 : 0;
        if (more) cp &= 0x3F >> more;
        while (more-- > 0 && *p) cp = (cp << 6) | (*p++ & 0x3F);
        int b = byte_of(cp);
        if (b < 0) break;
        t->bytes[t->n_bytes++] = (uint8_t)b;
    }
}

/* Logprobs of n tokens (ids[i], lp[i], alternatives top_ids/top_lp[i*k …]) as the kind's JSON
 * (NULL: none asked); *text_offset is the completions form's running character offset. */
static json_t *logprobs_json(const tok_tokenizer *tok, const sq_job *j, const int32_t *ids, const float *lp,
                             const int32_t *top_ids, const float *top_lp, size_t n, size_t *text_offset) {
    if (!j->rq.logprobs) return NULL;
    int k = j->rq.top_logprobs;
    oai_pos_lp *p = rt_calloc(n ? n : 1, sizeof *p);
    tok_text *tt = rt_calloc(n * (size_t)(k + 1) + 1, sizeof *tt);
    oai_token_lp *tl = rt_calloc(n * (size_t)(k + 1) + 1, sizeof *tl);
    json_t *out = NULL;
    if (p && tt && tl) {
        for (size_t i = 0; i < n; i++) {
            for (int x = 0; x <= k; x++) {
                size_t at = i * (size_t)(k + 1) + (size_t)x;
                int32_t id = x == 0 ? ids[i] : top_ids[i * (size_t)k + (size_t)x - 1];
                token_text(tok, id, &tt[at]);
                tl[at] = (oai_token_lp){tt[at].text ? tt[at].text : "", tt[at].len, tt[at].bytes, tt[at].n_bytes,
                                        x == 0 ? lp[i] : top_lp[i * (size_t)k + (size_t)x - 1]};
            }
            p[i] = (oai_pos_lp){tl[i * (size_t)(k + 1)], tl + i * (size_t)(k + 1) + 1, k};
        }
        out = j->rq.kind == OAI_CHAT ? oai_logprobs_chat(p, n) : oai_logprobs_completion(p, n, text_offset);
        for (size_t x = 0; x < n * (size_t)(k + 1); x++) free(tt[x].text);
    }
    free(p);
    free(tt);
    free(tl);
    return out;
}

static const char *finish_name(te_finish f) { return f == TE_FINISH_STOP ? "stop" : "length"; }

/* Decodes ids[0:n] (special tokens skipped) into *text (malloc'd). */
static int decode_ids(const tok_tokenizer *tok, const int32_t *ids, int64_t n, char **text, size_t *len) {
    *text = NULL;
    *len = 0;
    int rc = tok_decode(tok, ids, (size_t)n, true, text, len);
    if (rc == RT_ERANGE) {   /* ids the tokenizer lacks (a model's padded vocabulary): dropped, as HF does */
        int32_t *known = rt_malloc((size_t)(n ? n : 1) * sizeof *known);
        size_t k = 0;
        for (int64_t i = 0; known && i < n; i++)
            if (tok_id_to_token(tok, ids[i])) known[k++] = ids[i];
        rc = known ? tok_decode(tok, known, k, true, text, len) : RT_ENOMEM;
        free(known);
    }
    return rc;
}

/* ---- the whole answer ------------------------------------------------------------------ */

/* Choice i of a finished job into *out (NULL when out of memory); rc: decoding failed. */
static int full_choice(const tok_tokenizer *tok, sq_job *j, int i, json_t **out) {
    sq_choice *c = &j->ch[i];
    char *text;
    size_t len;
    *out = NULL;
    int rc = decode_ids(tok, c->ids, c->n, &text, &len);
    if (rc) return rc;
    size_t vis = oai_visible_len(text, len, j->rq.stop, j->rq.n_stop, true);
    json_t *lp = logprobs_json(tok, j, c->ids, c->lp, c->top_ids, c->top_lp, (size_t)c->n, &c->lp_offset);
    if (j->rq.kind == OAI_CHAT) {
        oai_split sp;
        oai_split_init(&sp, j->opened);
        oai_buf rea = {0}, con = {0};
        oai_buf_put(&rea, "", 0);
        oai_buf_put(&con, "", 0);
        oai_split_feed(&sp, text, vis, true, &rea, &con);
        *out = oai_choice_chat(i, con.s, con.len, sp.reasoning, rea.s, rea.len, lp, finish_name(c->finish));
        oai_buf_free(&rea);
        oai_buf_free(&con);
    } else {
        *out = oai_choice_text(i, text, vis, lp, finish_name(c->finish));
    }
    free(text);
    return 0;
}

json_t *sr_full_response(const tok_tokenizer *tok, const char *model, sq_job *j) {
    json_t *r = oai_envelope(j->rq.kind, false, j->id, j->created, model);
    json_t *choices = json_object_get(r, "choices");
    for (int i = 0; r && i < j->n_choices; i++) {
        json_t *ch;
        if (full_choice(tok, j, i, &ch)) {
            json_decref(r);
            return NULL;
        }
        json_array_append_new(choices, ch);
    }
    if (r) json_object_set_new(r, "usage", oai_usage(j->prompt_tokens, sq_completion_tokens(j)));
    return r;
}

/* ---- streaming ------------------------------------------------------------------------- */

static int put_chunk(sq_job *j, json_t *chunk) {
    char *sse = oai_sse_event(chunk);
    json_decref(chunk);
    if (!sse) return RT_ENOMEM;
    int rc = oai_buf_put(&j->out, sse, strlen(sse));
    free(sse);
    return rc;
}

static int put_choice(const char *model, sq_job *j, json_t *choice) {
    return put_chunk(j, oai_chunk(j->rq.kind, j->id, j->created, model, choice));
}

/* What the engine added to a choice since the connection last looked, copied under the lock. */
typedef struct {
    int64_t n;                      /* tokens now */
    bool done;
    te_finish finish;
    int32_t *ids;                   /* ids[dec_ids:n] */
    int32_t *lp_ids, *top_ids;      /* [sent:n] and their alternatives */
    float *lp, *top_lp;
} snap;

static int take_snap(const sq_job *j, const sq_choice *c, snap *sn) {   /* locked */
    int k = j->rq.top_logprobs;
    size_t nd = (size_t)(c->n - c->dec_ids), nn = (size_t)(c->n - c->sent);
    *sn = (snap){.n = c->n, .done = c->done, .finish = c->finish};
    sn->ids = rt_malloc((nd ? nd : 1) * sizeof *sn->ids);
    if (!sn->ids) return RT_ENOMEM;
    memcpy(sn->ids, c->ids + c->dec_ids, nd * sizeof *sn->ids);
    if (!j->rq.logprobs) return 0;
    sn->lp_ids = rt_malloc((nn ? nn : 1) * sizeof *sn->lp_ids);
    sn->lp = rt_malloc((nn ? nn : 1) * sizeof *sn->lp);
    sn->top_ids = rt_malloc((nn * (size_t)k + 1) * sizeof *sn->top_ids);
    sn->top_lp = rt_malloc((nn * (size_t)k + 1) * sizeof *sn->top_lp);
    if (!sn->lp_ids || !sn->lp || !sn->top_ids || !sn->top_lp) return RT_ENOMEM;
    memcpy(sn->lp_ids, c->ids + c->sent, nn * sizeof *sn->lp_ids);
    memcpy(sn->lp, c->lp + c->sent, nn * sizeof *sn->lp);
    if (k > 0) {
        memcpy(sn->top_ids, c->top_ids + c->sent * k, nn * (size_t)k * sizeof *sn->top_ids);
        memcpy(sn->top_lp, c->top_lp + c->sent * k, nn * (size_t)k * sizeof *sn->top_lp);
    }
    return 0;
}

static void snap_free(snap *sn) {
    free(sn->ids);
    free(sn->lp_ids);
    free(sn->top_ids);
    free(sn->lp);
    free(sn->top_lp);
}

static size_t max_stop_len(const sq_job *j) {
    size_t m = 0;
    for (int i = 0; i < j->rq.n_stop; i++)
        if (strlen(j->rq.stop[i]) > m) m = strlen(j->rq.stop[i]);
    return m;
}

/* Brings c->text up to the snapshot: only ids past the last whole-character checkpoint are
 * decoded (ByteLevel decoding is the concatenation of the tokens' bytes, and UTF-8 resumes at
 * any character boundary), and only the new tail is searched for stop strings (an earlier
 * one would have ended the sample), so a long stream costs linear time. Sets c->vis. */
static int update_text(const tok_tokenizer *tok, const sq_job *j, sq_choice *c, const snap *sn) {
    char *tail;
    size_t tlen;
    int rc = decode_ids(tok, sn->ids, sn->n - c->dec_ids, &tail, &tlen);
    if (rc) return rc;
    c->text.len = c->dec_len;
    rc = oai_buf_put(&c->text, tail, tlen);
    free(tail);
    if (rc) return rc;
    if (c->text.len < 3 || memcmp(c->text.s + c->text.len - 3, "\xEF\xBF\xBD", 3)) {
        c->dec_ids = sn->n;
        c->dec_len = c->text.len;
    }
    size_t m = max_stop_len(j), base = c->vis > m ? c->vis - m : 0;
    c->vis = base + oai_visible_len(c->text.s + base, c->text.len - base, j->rq.stop, j->rq.n_stop, sn->done);
    return 0;
}

/* The chunk choice for what choice i gained in the snapshot (NULL: nothing to send). */
static json_t *delta_choice(const tok_tokenizer *tok, sq_job *j, int i, const snap *sn) {
    sq_choice *c = &j->ch[i];
    json_t *lp = logprobs_json(tok, j, sn->lp_ids, sn->lp, sn->top_ids, sn->top_lp, (size_t)(sn->n - c->sent),
                               &c->lp_offset);
    json_t *ch = NULL;
    c->sent = sn->n;
    const char *fin = sn->done ? finish_name(sn->finish) : NULL;
    if (j->rq.kind == OAI_CHAT) {
        oai_buf rea = {0}, con = {0};
        oai_split_feed(&c->split, c->text.s ? c->text.s : "", c->vis, sn->done, &rea, &con);
        if (rea.len || con.len || lp || fin) ch = oai_delta_chat(i, rea.s, rea.len, con.s, con.len, lp, fin);
        else json_decref(lp);
        oai_buf_free(&rea);
        oai_buf_free(&con);
    } else {
        size_t from = c->shown < c->vis ? c->shown : c->vis;
        if (c->vis > from || lp || fin) ch = oai_choice_text(i, c->text.s ? c->text.s + from : "", c->vis - from, lp, fin);
        else json_decref(lp);
        c->shown = c->vis > c->shown ? c->vis : c->shown;
    }
    return ch;
}

int sr_stream_produce(const tok_tokenizer *tok, const char *model, sq_job *j) {
    int added = 0;
    if (!j->head_sent && j->rq.kind == OAI_CHAT) {
        for (int i = 0; i < j->n_choices; i++)
            if (put_choice(model, j, oai_delta_role(i))) return RT_ENOMEM;
        added = 1;
    }
    j->head_sent = true;
    bool all_final = true;
    for (int i = 0; i < j->n_choices; i++) {
        sq_choice *c = &j->ch[i];
        if (c->final_sent) continue;
        snap sn;
        sq_lock(j->q);
        bool fresh = c->n > c->sent || c->done;
        int rc = fresh ? take_snap(j, c, &sn) : 0;
        sq_unlock(j->q);
        if (!fresh) {
            all_final = false;
            continue;
        }
        if (!rc) rc = update_text(tok, j, c, &sn);
        if (rc) {
            snap_free(&sn);
            return rc;
        }
        json_t *ch = delta_choice(tok, j, i, &sn);
        if (sn.done) c->final_sent = true;
        else all_final = false;
        snap_free(&sn);
        if (ch) {
            if (put_choice(model, j, ch)) return RT_ENOMEM;
            added = 1;
        }
    }
    if (all_final && !j->stream_done) {
        if (j->rq.include_usage) {
            sq_lock(j->q);
            int64_t done_tokens = sq_completion_tokens(j);
            sq_unlock(j->q);
            if (put_chunk(j, oai_usage_chunk(j->rq.kind, j->id, j->created, model, j->prompt_tokens, done_tokens)))
                return RT_ENOMEM;
        }
        if (oai_buf_put(&j->out, OAI_SSE_DONE, strlen(OAI_SSE_DONE))) return RT_ENOMEM;
        j->stream_done = true;
        added = 1;
    }
    return added;
}
