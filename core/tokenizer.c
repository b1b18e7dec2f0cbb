/* core/tokenizer.c — loading tokenizer.json, the encode pipeline, decoding.
 *
 * Encoding follows HF tokenizers step by step:
 *   1. added tokens that are not "normalized" are split out of the raw text;
 *   2. each remaining segment is normalized, then added tokens that are "normalized" are
 *      split out of the normalized text;
 *   3. each remaining piece goes through the pre-tokenizers, and every resulting word
 *      through the BPE model;
 *   4. the post-processor adds its special tokens when asked to.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/json.h"
#include "core/status.h"
#include "core/tokenizer_int.h"
#include "core/utf8.h"

/* ---- the ByteLevel alphabet: 256 printable characters standing for the 256 bytes ---- */

/* Byte of a ByteLevel character, or -1. */
static int alphabet_byte(uint32_t cp) {
    if (cp < 256) return ((cp >= '!' && cp <= '~') || (cp >= 0xA1 && cp <= 0xAC) || cp >= 0xAE) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    static const uint8_t rest[68] = {
        0,   1,   2,   3,   4,   5,   6,   7,   8,   9,   10,  11,  12,  13,  14,  15,  16,
        17,  18,  19,  20,  21,  22,  23,  24,  25,  26,  27,  28,  29,  30,  31,  32,  127,
        128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144,
        145, 146, 147, 148, 149, 150, 151, 152, 153, 154, 155, 156, 157, 158, 159, 160, 173};
    return rest[cp - 256];
}

/* Decodes a ByteLevel string into out (room for n bytes); returns the length, or -1 when
 * some character is outside the alphabet. */
static long bytelevel_decode(const char *s, size_t n, char *out) {
    const unsigned char *u = (const unsigned char *)s;
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        size_t k = rt_utf8_seqlen(u + i, n - i);
        if (!k) return -1;
        int b = alphabet_byte(rt_utf8_decode(u + i, k));
        if (b < 0) return -1;
        out[w++] = (char)b;
        i += k;
    }
    return (long)w;
}

/* ---- token table ---- */

typedef struct {
    char *s; size_t n, cap;
} strbuf;

static int buf_add(strbuf *b, const char *s, size_t n, uint32_t *off) {
    if (b->n + n + 1 > UINT32_MAX) return rt_fail(RT_ERANGE, "token strings exceed 4 GiB");
    if (b->n + n + 1 > b->cap && rt_grow((void **)&b->s, &b->cap, b->n + n + 1, 1)) return RT_ENOMEM;
    memcpy(b->s + b->n, s, n);
    b->s[b->n + n] = 0;
    *off = (uint32_t)b->n;
    b->n += n + 1;
    return 0;
}

typedef struct {
    tok_tokenizer *t;
    strbuf str, raw;
    bool *encodable;    /* [n_ids] raw form is usable as an encode key */
} loader;

/* Records the string of id: original form, and raw form (ByteLevel-decoded when the
 * tokenizer is byte-level and every character is in the alphabet). */
static int set_token(loader *L, int32_t id, const char *s, size_t n, bool model) {
    tok_tokenizer *t = L->t;
    if (buf_add(&L->str, s, n, &t->str_off[id])) return RT_ENOMEM;
    char stackb[256];
    char *tmp = n <= sizeof stackb ? stackb : rt_malloc(n);
    if (!tmp) return RT_ENOMEM;
    long k = bytelevel_decode(s, n, tmp);
    bool use_bl = t->byte_level || t->decoder == DEC_BYTELEVEL;
    int rc;
    if (use_bl && k >= 0) {
        rc = buf_add(&L->raw, tmp, (size_t)k, &t->raw_off[id]);
        t->raw_len[id] = (uint32_t)k;
    } else {
        rc = buf_add(&L->raw, s, n, &t->raw_off[id]);
        t->raw_len[id] = (uint32_t)n;
    }
    L->encodable[id] = model && (!t->byte_level || k >= 0);
    if (tmp != stackb) free(tmp);
    return rc;
}

/* ---- components ---- */

static int parse_normalizer(tok_tokenizer *t, const json_t *j) {
    if (!j || json_is_null(j)) return 0;
    const char *type = json_string_value(json_object_get(j, "type"));
    if (!type) return rt_fail(RT_EFORMAT, "normalizer without a type");
    if (!strcmp(type, "Sequence")) {
        const json_t *a = json_object_get(j, "normalizers");
        if (!json_is_array(a)) return rt_fail(RT_EFORMAT, "Sequence normalizer without a normalizers array");
        for (size_t i = 0; i < json_array_size(a); i++) {
            int rc = parse_normalizer(t, json_array_get(a, i));
            if (rc) return rc;
        }
        return 0;
    }
    tok_norm_kind k;
    if (!strcmp(type, "NFC")) k = NORM_NFC;
    else if (!strcmp(type, "NFD")) k = NORM_NFD;
    else if (!strcmp(type, "NFKC")) k = NORM_NFKC;
    else if (!strcmp(type, "NFKD")) k = NORM_NFKD;
    else return rt_fail(RT_EUNSUPPORTED, "normalizer %s (supported: NFC, NFD, NFKC, NFKD, Sequence)", type);
    if (t->n_norm == (int)(sizeof t->norm / sizeof *t->norm))
        return rt_fail(RT_EUNSUPPORTED, "more than 4 normalizers");
    t->norm[t->n_norm++] = k;
    return 0;
}

static const char GPT2_PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int add_regex(tok_tokenizer *t, const char *pattern, bool literal, int *idx) {
    if (t->n_re == (int)(sizeof t->re / sizeof *t->re)) return rt_fail(RT_EUNSUPPORTED, "more than 8 regexes");
    int rc = tok_regex_compile(pattern, literal, &t->re[t->n_re]);
    if (rc) return rc;
    *idx = t->n_re++;
    return 0;
}

static int parse_behavior(const char *s, tok_behavior *b) {
    static const struct { const char *name; tok_behavior b; } names[] = {
        {"Removed", SPLIT_REMOVED}, {"Isolated", SPLIT_ISOLATED}, {"MergedWithPrevious", SPLIT_MERGED_PREV},
        {"MergedWithNext", SPLIT_MERGED_NEXT}, {"Contiguous", SPLIT_CONTIGUOUS}};
    for (size_t i = 0; s && i < sizeof names / sizeof *names; i++)
        if (!strcmp(s, names[i].name)) return *b = names[i].b, 0;
    return rt_fail(RT_EFORMAT, "Split behavior '%s'", s ? s : "(missing)");
}

static int parse_pre(tok_tokenizer *t, const json_t *j) {
    if (!j || json_is_null(j)) return 0;
    const char *type = json_string_value(json_object_get(j, "type"));
    if (!type) return rt_fail(RT_EFORMAT, "pre_tokenizer without a type");
    if (!strcmp(type, "Sequence")) {
        const json_t *a = json_object_get(j, "pretokenizers");
        if (!json_is_array(a)) return rt_fail(RT_EFORMAT, "Sequence pre_tokenizer without a pretokenizers array");
        for (size_t i = 0; i < json_array_size(a); i++) {
            int rc = parse_pre(t, json_array_get(a, i));
            if (rc) return rc;
        }
        return 0;
    }
    if (t->n_pre == (int)(sizeof t->pre / sizeof *t->pre)) return rt_fail(RT_EUNSUPPORTED, "more than 8 pre-tokenizers");
    tok_pre_step *p = &t->pre[t->n_pre];
    memset(p, 0, sizeof *p);
    p->regex = -1;
    int rc = 0;
    if (!strcmp(type, "Split")) {
        p->kind = PRE_SPLIT;
        const json_t *pat = json_object_get(j, "pattern");
        const char *re = json_string_value(json_object_get(pat, "Regex"));
        const char *lit = json_string_value(json_object_get(pat, "String"));
        if (!re && !lit) return rt_fail(RT_EFORMAT, "Split pre_tokenizer without a Regex or String pattern");
        if ((rc = parse_behavior(json_string_value(json_object_get(j, "behavior")), &p->behavior))) return rc;
        if ((rc = rt_json_get_bool(j, "invert", false, &p->invert))) return rc;
        if (lit && !*lit) return rt_fail(RT_EUNSUPPORTED, "Split with an empty String pattern");
        rc = add_regex(t, re ? re : lit, !re, &p->regex);
    } else if (!strcmp(type, "ByteLevel")) {
        bool use_regex;
        p->kind = PRE_BYTELEVEL;
        t->byte_level = true;
        if ((rc = rt_json_get_bool(j, "add_prefix_space", true, &p->add_prefix_space))) return rc;
        if ((rc = rt_json_get_bool(j, "use_regex", true, &use_regex))) return rc;
        if (use_regex) rc = add_regex(t, GPT2_PATTERN, false, &p->regex);
    } else if (!strcmp(type, "Digits")) {
        p->kind = PRE_DIGITS;
        rc = rt_json_get_bool(j, "individual_digits", false, &p->individual_digits);
    } else {
        return rt_fail(RT_EUNSUPPORTED, "pre_tokenizer %s (supported: Split, ByteLevel, Digits, Sequence)", type);
    }
    if (rc) return rc;
    t->n_pre++;
    return 0;
}

static int append_ids(int32_t **v, size_t *n, const json_t *ids) {
    for (size_t i = 0; i < json_array_size(ids); i++) {
        json_t *x = json_array_get(ids, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX)
            return rt_fail(RT_EFORMAT, "post_processor: bad special token id");
        int32_t *nv = realloc(*v, (*n + 1) * sizeof **v);
        if (!nv) return rt_fail(RT_ENOMEM, "post_processor ids");
        *v = nv;
        nv[(*n)++] = (int32_t)json_integer_value(x);
    }
    return 0;
}

/* TemplateProcessing "single": special tokens before and after the sequence $A. */
static int parse_template(tok_tokenizer *t, const json_t *j) {
    const json_t *single = json_object_get(j, "single"), *specials = json_object_get(j, "special_tokens");
    bool seen_seq = false;
    for (size_t i = 0; i < json_array_size(single); i++) {
        const json_t *piece = json_array_get(single, i), *sp = json_object_get(piece, "SpecialToken");
        if (json_object_get(piece, "Sequence")) {
            if (seen_seq) return rt_fail(RT_EUNSUPPORTED, "TemplateProcessing with two sequences in 'single'");
            seen_seq = true;
            continue;
        }
        const char *name = json_string_value(json_object_get(sp, "id"));
        const json_t *ids = json_object_get(json_object_get(specials, name ? name : ""), "ids");
        if (!name || !json_is_array(ids)) return rt_fail(RT_EFORMAT, "TemplateProcessing: unknown special token");
        int rc = seen_seq ? append_ids(&t->post_post, &t->n_post_post, ids) : append_ids(&t->post_pre, &t->n_post_pre, ids);
        if (rc) return rc;
    }
    return 0;
}

static int parse_post(tok_tokenizer *t, const json_t *j) {
    if (!j || json_is_null(j)) return 0;
    const char *type = json_string_value(json_object_get(j, "type"));
    if (!type) return rt_fail(RT_EFORMAT, "post_processor without a type");
    if (!strcmp(type, "ByteLevel")) return 0; /* changes offsets only */
    if (!strcmp(type, "TemplateProcessing")) return parse_template(t, j);
    if (!strcmp(type, "Sequence")) {
        const json_t *a = json_object_get(j, "processors");
        for (size_t i = 0; i < json_array_size(a); i++) {
            int rc = parse_post(t, json_array_get(a, i));
            if (rc) return rc;
        }
        return 0;
    }
    if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing")) {
        json_t *cls = json_array_get(json_object_get(j, "cls"), 1), *sep = json_array_get(json_object_get(j, "sep"), 1);
        json_t *a = json_pack("[O]", cls), *b = json_pack("[O]", sep);
        int rc = a && b ? append_ids(&t->post_pre, &t->n_post_pre, a) : RT_ENOMEM;
        if (!rc) rc = append_ids(&t->post_post, &t->n_post_post, b);
        json_decref(a);
        json_decref(b);
        return rc;
    }
    return rt_fail(RT_EUNSUPPORTED, "post_processor %s", type);
}

static void parse_decoder(tok_tokenizer *t, const json_t *j) {
    const char *type = j ? json_string_value(json_object_get(j, "type")) : NULL;
    if (!j || json_is_null(j)) t->decoder = DEC_NONE;
    else if (type && !strcmp(type, "ByteLevel")) t->decoder = DEC_BYTELEVEL;
    else {
        t->decoder = DEC_UNSUPPORTED;
        snprintf(t->decoder_name, sizeof t->decoder_name, "%s", type ? type : "?");
    }
}

/* ---- added-token trie ---- */

static int trie_node(tok_trie *tr, uint8_t byte) {
    if (tr->n == tr->cap) {
        size_t cap = tr->cap ? tr->cap * 2 : 256;
        uint32_t *f = realloc(tr->first, cap * sizeof *f);
        if (f) tr->first = f;
        uint32_t *x = realloc(tr->next, cap * sizeof *x);
        if (x) tr->next = x;
        uint8_t *b = realloc(tr->byte, cap);
        if (b) tr->byte = b;
        int32_t *a = realloc(tr->added, cap * sizeof *a);
        if (a) tr->added = a;
        if (!f || !x || !b || !a) return rt_fail(RT_ENOMEM, "added-token trie");
        tr->cap = cap;
    }
    tr->first[tr->n] = tr->next[tr->n] = 0;
    tr->byte[tr->n] = byte;
    tr->added[tr->n] = -1;
    return (int)tr->n++;
}

static int trie_insert(tok_trie *tr, const char *s, size_t n, int32_t added) {
    if (!n) return 0;
    if (!tr->n && trie_node(tr, 0) < 0) return RT_ENOMEM;
    uint32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        uint32_t ch = tr->first[node];
        while (ch && tr->byte[ch] != c) ch = tr->next[ch];
        if (!ch) {
            int k = trie_node(tr, c);
            if (k < 0) return RT_ENOMEM;
            ch = (uint32_t)k;
            tr->next[ch] = tr->first[node];
            tr->first[node] = ch;
        }
        node = ch;
    }
    if (tr->added[node] < 0) tr->added[node] = added; /* the same content twice: the first wins */
    tr->first_byte[(uint8_t)s[0]] = true;
    return 0;
}

static void trie_free(tok_trie *tr) {
    free(tr->first);
    free(tr->next);
    free(tr->byte);
    free(tr->added);
}

/* ---- loading ---- */

static int32_t lookup_form(loader *L, const char *s, size_t n) {
    tok_tokenizer *t = L->t;
    if (!t->byte_level) return tok_strmap_get(t, &t->vocab, s, n);
    char stackb[512];
    char *tmp = n <= sizeof stackb ? stackb : rt_malloc(n);
    if (!tmp) return -2;
    long k = bytelevel_decode(s, n, tmp);
    int32_t id = k < 0 ? -1 : tok_strmap_get(t, &t->vocab, tmp, (size_t)k);
    if (tmp != stackb) free(tmp);
    return id;
}

static int load_merges(loader *L, const tokj_merges_t *mg) {
    tok_tokenizer *t = L->t;
    if (tok_mergemap_init(&t->merges, mg->n)) return RT_ENOMEM;
    char *cat = NULL;
    size_t cat_cap = 0;
    int rc = 0;
    for (size_t r = 0; r < mg->n && !rc; r++) {
        const tokj_merge *m = &mg->e[r];
        const char *a = mg->text.s + m->a, *b = mg->text.s + m->b;
        if (m->na + m->nb > cat_cap && rt_grow((void **)&cat, &cat_cap, m->na + m->nb, 1)) {
            rc = RT_ENOMEM;
            break;
        }
        memcpy(cat, a, m->na);
        memcpy(cat + m->na, b, m->nb);
        int32_t ia = lookup_form(L, a, m->na), ib = lookup_form(L, b, m->nb), im = lookup_form(L, cat, m->na + m->nb);
        if (ia < 0 || ib < 0 || im < 0)
            rc = rt_fail(RT_EFORMAT, "merge %zu (%.*s %.*s): token not in the vocabulary", r, (int)m->na, a, (int)m->nb, b);
        else
            tok_mergemap_put(&t->merges, ia, ib, (uint32_t)r, im);
    }
    free(cat);
    return rc;
}

static int check_model(const json_t *model) {
    const char *type = json_string_value(json_object_get(model, "type"));
    if (type && strcmp(type, "BPE")) return rt_fail(RT_EUNSUPPORTED, "model %s (only BPE is supported)", type);
    if (!json_is_object(json_object_get(model, "vocab")) || !json_is_array(json_object_get(model, "merges")))
        return rt_fail(RT_EFORMAT, "model: BPE needs a vocab object and a merges array");
    double dropout;
    int rc = rt_json_get_num(model, "dropout", 0, &dropout);
    if (rc) return rc;
    if (dropout != 0) return rt_fail(RT_EUNSUPPORTED, "BPE dropout %g", dropout);
    const char *keys[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *v;
        if ((rc = rt_json_get_str(model, keys[i], "", &v))) return rc;
        if (*v) return rt_fail(RT_EUNSUPPORTED, "BPE %s '%s'", keys[i], v);
    }
    return 0;
}

/* Largest id among the vocabulary and the added tokens. */
static int max_id(const tokj_vocab_t *vocab, const json_t *added, int64_t *out) {
    int64_t mx = -1;
    for (size_t i = 0; i < vocab->n; i++)
        if (vocab->e[i].id > mx) mx = vocab->e[i].id;
    for (size_t i = 0; i < json_array_size(added); i++) {
        json_t *id = json_object_get(json_array_get(added, i), "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= INT32_MAX)
            return rt_fail(RT_EFORMAT, "added_tokens[%zu]: no valid id", i);
        if (json_integer_value(id) > mx) mx = json_integer_value(id);
    }
    *out = mx;
    return 0;
}

static int alloc_tables(tok_tokenizer *t, loader *L, size_t n) {
    t->n_ids = n;
    t->str_off = rt_malloc(n * sizeof *t->str_off);
    t->raw_off = rt_malloc(n * sizeof *t->raw_off);
    t->raw_len = rt_calloc(n, sizeof *t->raw_len);
    t->is_special = rt_calloc(n, 1);
    t->added_of_id = rt_malloc(n * sizeof *t->added_of_id);
    L->encodable = rt_calloc(n, sizeof *L->encodable);
    if (!t->str_off || !t->raw_off || !t->raw_len || !t->is_special || !t->added_of_id || !L->encodable)
        return RT_ENOMEM;
    memset(t->str_off, 0xFF, n * sizeof *t->str_off);
    memset(t->added_of_id, 0xFF, n * sizeof *t->added_of_id);
    return 0;
}

static int load_vocab(loader *L, const tokj_vocab_t *vocab) {
    tok_tokenizer *t = L->t;
    if (tok_strmap_init(&t->vocab, vocab->n)) return RT_ENOMEM;
    for (size_t i = 0; i < vocab->n; i++) {
        const tokj_entry *e = &vocab->e[i];
        if (t->str_off[e->id] != UINT32_MAX) return rt_fail(RT_EFORMAT, "vocab: id %d used twice", e->id);
        int rc = set_token(L, e->id, vocab->text.s + e->off, e->len, true);
        if (rc) return rc;
    }
    /* insert only after all strings are stored: the arena may move while it grows */
    return 0;
}

static void index_vocab(loader *L) {
    tok_tokenizer *t = L->t;
    t->raw_arena = L->raw.s;
    t->str_arena = L->str.s;
    for (size_t id = 0; id < t->n_ids; id++)
        if (t->str_off[id] != UINT32_MAX && L->encodable[id]) tok_strmap_put(t, &t->vocab, (int32_t)id);
}

static int normalize_content(tok_tokenizer *t, const char *s, size_t n, char **out, size_t *out_n) {
    tok_state *st = tok_state_get(t);
    if (!st) return RT_ENOMEM;
    size_t m;
    int rc = tok_normalize(t, st, s, n, 0, false, &m);
    if (!rc) {
        *out = rt_malloc(m + 1);
        if (!*out) rc = RT_ENOMEM;
        else memcpy(*out, st->norm, m), *out_n = m;
    }
    tok_state_put(t, st);
    return rc;
}

static int load_added(loader *L, const json_t *added) {
    tok_tokenizer *t = L->t;
    size_t n = json_array_size(added);
    t->added = rt_calloc(n ? n : 1, sizeof *t->added);
    if (!t->added) return RT_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const json_t *a = json_array_get(added, i);
        tok_added *x = &t->added[i];
        const char *content;
        int rc = rt_json_get_str(a, "content", NULL, &content);
        if (!rc && !content) rc = rt_fail(RT_EFORMAT, "added token without content");
        if (!rc) rc = rt_json_get_bool(a, "special", false, &x->special);
        if (!rc) rc = rt_json_get_bool(a, "lstrip", false, &x->lstrip);
        if (!rc) rc = rt_json_get_bool(a, "rstrip", false, &x->rstrip);
        if (!rc) rc = rt_json_get_bool(a, "single_word", false, &x->single_word);
        if (!rc) rc = rt_json_get_bool(a, "normalized", !x->special, &x->normalized);
        if (rc) return rt_errorf(rc, "added_tokens[%zu]", i);
        x->id = (int32_t)json_integer_value(json_object_get(a, "id"));
        size_t len = json_string_length(json_object_get(a, "content"));
        bool in_model = t->str_off[x->id] != UINT32_MAX && !strcmp(L->str.s + t->str_off[x->id], content);
        if ((rc = set_token(L, x->id, content, len, in_model))) return rc;
        t->added_of_id[x->id] = (int32_t)i;
        t->is_special[x->id] = x->special;
        t->n_added = i + 1;
    }
    return 0;
}

static int build_tries(tok_tokenizer *t) {
    for (size_t i = 0; i < t->n_added; i++) {
        const tok_added *x = &t->added[i];
        const char *s = t->str_arena + t->str_off[x->id];
        size_t n = strlen(s);
        int rc;
        if (x->normalized && t->n_norm) {
            char *ns;
            size_t nn;
            if ((rc = normalize_content(t, s, n, &ns, &nn))) return rc;
            rc = trie_insert(&t->trie_norm, ns, nn, (int32_t)i);
            free(ns);
        } else {
            rc = trie_insert(x->normalized ? &t->trie_norm : &t->trie_raw, s, n, (int32_t)i);
        }
        if (rc) return rc;
    }
    return 0;
}

static void model_specials(tok_tokenizer *t, const json_t *model) {
    t->unk_id = -1;
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    if (unk) t->unk_id = tok_token_to_id(t, unk);
    for (int b = 0; b < 256; b++) {
        char c = (char)b, hex[8];
        t->byte_id[b] = t->byte_level ? tok_strmap_get(t, &t->vocab, &c, 1) : -1;
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        t->fallback_id[b] = tok_token_to_id(t, hex);
    }
}

static int load_json(tok_tokenizer *t, const json_t *root, const tokj_vocab_t *vocab, const tokj_merges_t *merges) {
    loader L = {.t = t};
    const json_t *model = json_object_get(root, "model"), *added = json_object_get(root, "added_tokens");
    if (!json_is_object(model)) return rt_fail(RT_EFORMAT, "no 'model' object");
    if (added && !json_is_array(added) && !json_is_null(added)) return rt_fail(RT_EFORMAT, "'added_tokens' is not an array");
    int rc = check_model(model);
    if (!rc) rc = parse_normalizer(t, json_object_get(root, "normalizer"));
    if (!rc) rc = parse_pre(t, json_object_get(root, "pre_tokenizer"));
    if (!rc) rc = parse_post(t, json_object_get(root, "post_processor"));
    if (rc) return rc;
    parse_decoder(t, json_object_get(root, "decoder"));
    if (!rc) rc = rt_json_get_bool(model, "ignore_merges", false, &t->ignore_merges);
    if (!rc) rc = rt_json_get_bool(model, "byte_fallback", false, &t->byte_fallback);
    if (!rc) rc = rt_json_get_bool(model, "fuse_unk", false, &t->fuse_unk);
    int64_t mx = -1;
    if (!rc) rc = max_id(vocab, added, &mx);
    if (!rc) rc = alloc_tables(t, &L, (size_t)(mx + 1));
    if (!rc) rc = load_vocab(&L, vocab);
    if (!rc) rc = load_added(&L, added);
    if (!rc) {
        index_vocab(&L);
        L.str.s = L.raw.s = NULL; /* owned by t now */
        model_specials(t, model);
        rc = load_merges(&L, merges);
    }
    if (!rc) rc = build_tries(t);
    free(L.str.s);
    free(L.raw.s);
    free(L.encodable);
    return rc;
}

/* model.vocab and model.merges from jansson's tree, into the tables tokenizer_json.c fills. */
static int tables_from_tree(const json_t *root, tokj_vocab_t *v, tokj_merges_t *m) {
    const json_t *model = json_object_get(root, "model"), *vocab = json_object_get(model, "vocab"),
                 *merges = json_object_get(model, "merges");
    if (!json_is_object(vocab) || !json_is_array(merges)) return 0; /* load_json() says what is wrong */
    const char *k;
    json_t *x;
    size_t off;
    int rc = 0;
    json_object_foreach((json_t *)vocab, k, x) {
        if ((rc = tokj_text_add(&v->text, k, strlen(k), &off))) return rc;
        if ((rc = tokj_vocab_push(v, off, strlen(k), json_is_integer(x) ? json_integer_value(x) : -1))) return rc;
    }
    for (size_t r = 0; r < json_array_size(merges) && !rc; r++) {
        const json_t *e = json_array_get(merges, r), *a = json_array_get(e, 0), *b = json_array_get(e, 1);
        size_t oa, ob;
        if (json_is_string(e)) {
            if (!(rc = tokj_text_add(&m->text, json_string_value(e), json_string_length(e), &oa)))
                rc = tokj_merge_split(m, oa, json_string_length(e));
        } else if (json_is_array(e) && json_array_size(e) == 2) {
            if (!json_is_string(a) || !json_is_string(b)) return rt_fail(RT_EFORMAT, "merges: expected strings");
            if (!(rc = tokj_text_add(&m->text, json_string_value(a), json_string_length(a), &oa)) &&
                !(rc = tokj_text_add(&m->text, json_string_value(b), json_string_length(b), &ob)))
                rc = tokj_merge_push(m, oa, json_string_length(a), ob, json_string_length(b));
        } else {
            rc = rt_fail(RT_EFORMAT, "merge %zu: expected \"a b\" or [a, b]", r);
        }
    }
    return rc;
}

/* The file parsed: jansson for all of it (tree_only), or jansson for all but model.vocab
 * and model.merges, which tokenizer_json.c reads from the text (they are the bulk of it). */
static int parse_file(const char *json, size_t len, bool tree_only, json_t **root, tokj_vocab_t *v, tokj_merges_t *m) {
    tokj_spans sp;
    if (tree_only || tokj_find(json, len, &sp)) {
        int rc = rt_json_loadb(json, len, "tokenizer.json", root);
        return rc ? rc : tables_from_tree(*root, v, m);
    }
    /* the rest of the file, with {} and [] in place of the two values, still goes to jansson;
     * each keeps the newlines of the value it stands for, so jansson's line numbers hold */
    char *rest = rt_malloc(len);
    if (!rest) return RT_ENOMEM;
    size_t o = 0, from = 0;
    for (int k = 0; k < 2; k++) {
        bool v_first = sp.vocab_at < sp.merges_at;
        size_t at = (k == 0) == v_first ? sp.vocab_at : sp.merges_at, end = (k == 0) == v_first ? sp.vocab_end : sp.merges_end;
        memcpy(rest + o, json + from, at - from), o += at - from;
        rest[o++] = json[at];
        for (size_t i = at; i < end; i++)
            if (json[i] == '\n') rest[o++] = '\n';
        rest[o++] = json[at] == '{' ? '}' : ']';
        from = end;
    }
    memcpy(rest + o, json + from, len - from), o += len - from;
    size_t rest_len = o;
    int rc = rt_json_loadb(rest, rest_len, "tokenizer.json", root);
    free(rest);
    if (!rc) rc = tokj_vocab(json, sp.vocab_at, sp.vocab_end, v);
    if (!rc) rc = tokj_merges(json, sp.merges_at, sp.merges_end, m);
    return rc;
}

int tok_load_buffer_opts(const char *json, size_t len, bool tree_only, tok_tokenizer **out) {
    *out = NULL;
    json_t *root = NULL;
    tokj_vocab_t v = {0};
    tokj_merges_t m = {0};
    tok_tokenizer *t = NULL;
    int rc = parse_file(json, len, tree_only, &root, &v, &m);
    if (!rc && !(t = rt_calloc(1, sizeof *t))) rc = RT_ENOMEM;
    if (!rc) {
        pthread_mutex_init(&t->lock, NULL);
        rc = load_json(t, root, &v, &m);
    }
    json_decref(root);
    tokj_vocab_free(&v);
    tokj_merges_free(&m);
    if (rc) {
        tok_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int tok_load_buffer(const char *json, size_t len, tok_tokenizer **out) { return tok_load_buffer_opts(json, len, false, out); }

int tok_load(const char *path, tok_tokenizer **out) {
    char *buf;
    size_t len;
    *out = NULL;
    int rc = rt_read_file(path, &buf, &len);
    if (rc) return rc;
    rc = tok_load_buffer(buf, len, out);
    free(buf);
    return rc ? rt_errorf(rc, "%s", path) : 0;
}

void tok_free(tok_tokenizer *t) {
    if (!t) return;
    for (tok_state *s = t->free_states, *nx; s; s = nx) {
        nx = s->next_free;
        tok_state_free(s);
    }
    pthread_mutex_destroy(&t->lock);
    for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    tok_strmap_free(&t->vocab);
    tok_mergemap_free(&t->merges);
    trie_free(&t->trie_raw);
    trie_free(&t->trie_norm);
    free(t->str_arena);
    free(t->str_off);
    free(t->raw_arena);
    free(t->raw_off);
    free(t->raw_len);
    free(t->is_special);
    free(t->added_of_id);
    free(t->added);
    free(t->post_pre);
    free(t->post_post);
    free(t);
}

/* ---- lookups ---- */

size_t tok_vocab_size(const tok_tokenizer *t) { return t->n_ids; }

const char *tok_id_to_token(const tok_tokenizer *t, int32_t id) {
    if (id < 0 || (size_t)id >= t->n_ids || t->str_off[id] == UINT32_MAX) return NULL;
    return t->str_arena + t->str_off[id];
}

bool tok_is_special(const tok_tokenizer *t, int32_t id) {
    return id >= 0 && (size_t)id < t->n_ids && t->is_special[id];
}

int32_t tok_token_to_id(const tok_tokenizer *t, const char *token) {
    size_t n = strlen(token);
    for (size_t i = 0; i < t->n_added; i++) {
        const char *s = t->str_arena + t->str_off[t->added[i].id];
        if (!strcmp(s, token)) return t->added[i].id;
    }
    if (!t->byte_level) return tok_strmap_get(t, &t->vocab, token, n);
    char stackb[512];
    char *tmp = n <= sizeof stackb ? stackb : malloc(n);
    if (!tmp) return -1;
    long k = bytelevel_decode(token, n, tmp);
    int32_t id = k < 0 ? -1 : tok_strmap_get(t, &t->vocab, tmp, (size_t)k);
    if (tmp != stackb) free(tmp);
    return id;
}
