/* eval/demo.c — the built-in end-to-end demo (see demo.h): task, tokenizer, teacher,
 * generation, filters and student, evaluation and report, through the library stages. */
#include "eval/demo.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/chat_template.h"
#include "core/clock.h"
#include "core/fsutil.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "core/tokenizer.h"
#include "dataset/db.h"
#include "dataset/export.h"
#include "dataset/import.h"
#include "dataset/queue.h"
#include "dataset/render.h"
#include "eval/compare.h"
#include "eval/report.h"
#include "eval/results.h"
#include "eval/run.h"
#include "filters/pipeline.h"
#include "student/data.h"
#include "student/hfdir.h"
#include "student/model.h"
#include "student/train.h"
#include "teacher/engine.h"

#define TEACHER_NAME "demo-teacher"
#define TRAIN_SOURCE "demo-train"
#define TEST_BENCH "demo-test"
#define SEQ_LEN 512
/* Every chat carries this short system message: without one the qwen template inserts
 * Qwen2.5's default system prompt, about 70 more tokens per conversation to train on. */
#define SYSTEM "Solve step by step."
#define VOCAB 264 /* 256 bytes + 5 added tokens, rounded up to a multiple of 8 */
#define KD_TOPK 8         /* teacher alternatives stored per generated token, carried into the shards */
#define KD_ALPHA 0.5      /* the KD student: (1 − α)·CE + α·KL(teacher ‖ student) at T = 1 */

/* Sizes of one demo run: the full one (`make demo`) and --quick (the test). */
typedef struct {
    size_t n_train, n_test;
    int gen_k, eval_k;
    int64_t max_tokens;
    int t_dim, t_layers, t_ffn, t_heads, t_kv;
    int64_t t_steps, t_batch;
    double t_lr;
    int s_dim, s_layers, s_ffn, s_heads, s_kv;
    int64_t s_steps, s_batch;
    double s_lr;
} sizes;

static const sizes FULL = {.n_train = 1600, .n_test = 200, .gen_k = 2, .eval_k = 2, .max_tokens = 64,
                           .t_dim = 128, .t_layers = 4, .t_ffn = 384, .t_heads = 4, .t_kv = 2,
                           .t_steps = 600, .t_batch = 8, .t_lr = 5e-3,
                           .s_dim = 96, .s_layers = 4, .s_ffn = 256, .s_heads = 4, .s_kv = 2,
                           .s_steps = 600, .s_batch = 8, .s_lr = 5e-3};
static const sizes QUICK = {.n_train = 240, .n_test = 40, .gen_k = 2, .eval_k = 1, .max_tokens = 64,
                            .t_dim = 64, .t_layers = 2, .t_ffn = 192, .t_heads = 4, .t_kv = 2,
                            .t_steps = 150, .t_batch = 8, .t_lr = 3e-3,
                            .s_dim = 48, .s_layers = 2, .s_ffn = 128, .s_heads = 4, .s_kv = 2,
                            .s_steps = 100, .s_batch = 8, .s_lr = 3e-3};

const char *dm_stage_name(dm_stage s) {
    static const char *const names[DM_N_STAGES] = {"task", "tokenizer", "teacher", "generate", "distill", "evaluate"};
    return s < DM_N_STAGES ? names[s] : "?";
}

void dm_result_free(dm_result *r) {
    if (!r) return;
    json_decref(r->compare);
    r->compare = NULL;
}

/* ---- run state and events ---- */

typedef struct {
    const dm_options *o;
    const sizes *z;
    dm_result *res;
    double t0, t_stage;
    dm_stage stage;
    tp_pool *pool;
    tok_tokenizer *tok;
    db_conn *db;
    char *dir;
    pthread_mutex_t emit_lock; /* the two students train at once and both report progress */
} demo;

static void emit(demo *d, dm_event_kind k, double secs, const char *fmt, va_list ap) {
    if (!d->o->on_event) return;
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    dm_event ev = {.kind = k, .stage = d->stage, .seconds = secs, .text = line};
    pthread_mutex_lock(&d->emit_lock);
    d->o->on_event(d->o->ctx, &ev);
    pthread_mutex_unlock(&d->emit_lock);
}

static void __attribute__((format(printf, 3, 4))) stage_begin(demo *d, dm_stage s, const char *fmt, ...) {
    d->stage = s;
    d->t_stage = now_s();
    va_list ap;
    va_start(ap, fmt);
    emit(d, DM_EV_BEGIN, d->t_stage - d->t0, fmt, ap);
    va_end(ap);
}

static void __attribute__((format(printf, 2, 3))) note(demo *d, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    emit(d, DM_EV_NOTE, now_s() - d->t0, fmt, ap);
    va_end(ap);
}

static void __attribute__((format(printf, 2, 3))) stage_end(demo *d, const char *fmt, ...) {
    double s = now_s() - d->t_stage;
    d->res->seconds[d->stage] = s;
    va_list ap;
    va_start(ap, fmt);
    emit(d, DM_EV_END, s, fmt, ap);
    va_end(ap);
}

static char *path_in(const demo *d, const char *name) { return rt_path_join(d->dir, name); }

/* ---- 1. the task ---- */

static uint64_t mix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int below(uint64_t *s, int n) { return (int)(mix(s) % (uint64_t)n); }

typedef struct {
    int a, b, c, op1, op2; /* op: 0 gets (+), 1 loses (−) */
    int name, item;
} problem;

/* Names are two syllables (16 × 16), so the worked solutions, which restate who holds
 * what, differ beyond their digits: dedup's normalization folds every number to 0. */
static const char *const SYL1[] = {"Ka", "Lo", "Mi", "Ne", "Ro", "Sa", "Ti", "Vo", "Be", "Da", "Fi", "Go", "Hu", "Ja", "Pe", "Zu"};
static const char *const SYL2[] = {"ra", "len", "mo", "dia", "vin", "sha", "tor", "bel", "nik", "pa", "lu", "ron", "ze", "mi", "dan", "ko"};
static const char *const ITEMS[] = {"pens",  "coins", "cards",   "shells", "stamps", "apples", "books", "marbles",
                                    "bells", "kites", "buttons", "rings",  "cups",   "seeds",  "hats",  "leaves"};

static int value(const problem *p, int *mid) {
    int x = p->op1 ? p->a - p->b : p->a + p->b;
    if (mid) *mid = x;
    return p->op2 ? x - p->c : x + p->c;
}

/* Every number, intermediate result and answer is a single digit: 729 (numbers, steps)
 * tuples, small enough for a model of a few hundred thousand parameters to learn in
 * minutes on two cores. */
static void draw(uint64_t *s, problem *p) {
    for (;;) {
        *p = (problem){.a = 1 + below(s, 9), .b = 1 + below(s, 9), .c = 1 + below(s, 9), .op1 = below(s, 2),
                       .op2 = below(s, 2), .name = below(s, 256), .item = below(s, 16)};
        int x, y = value(p, &x);
        if (x >= 0 && x <= 9 && y >= 0 && y <= 9) return;
    }
}

static int key(const problem *p) { return (((p->a * 10 + p->b) * 10 + p->c) * 2 + p->op1) * 2 + p->op2; }
#define N_KEYS (10 * 10 * 10 * 2 * 2)

static void prompt_text(const problem *p, char *buf, size_t n) {
    /* 12 words: every 10-word window holds all three numbers and both steps, so the
     * decontamination n-grams of a test question match no train question */
    snprintf(buf, n, "%s%s has %d %s, %s %d, then %s %d. How many now?", SYL1[p->name / 16], SYL2[p->name % 16], p->a,
             ITEMS[p->item], p->op1 ? "loses" : "gets", p->b, p->op2 ? "loses" : "gets", p->c);
}

static void solution_text(const problem *p, char *buf, size_t n) {
    int x, y = value(p, &x);
    snprintf(buf, n, "<think>\n%s%s has %d %s.\n%d%c%d=%d\n%d%c%d=%d\n</think>\n\n\\boxed{%d}", SYL1[p->name / 16],
             SYL2[p->name % 16], p->a, ITEMS[p->item], p->a, p->op1 ? '-' : '+', p->b, x, x, p->op2 ? '-' : '+', p->c, y, y);
}

static int write_jsonl(const char *path, const problem *ps, size_t n, bool with_solution) {
    rt_atomic_file *af;
    int rc = rt_atomic_open(path, &af);
    if (rc) return rc;
    for (size_t i = 0; i < n && !rc; i++) {
        char q[256], sol[256], ans[16];
        prompt_text(&ps[i], q, sizeof q);
        solution_text(&ps[i], sol, sizeof sol);
        snprintf(ans, sizeof ans, "%d", value(&ps[i], NULL));
        json_t *j = with_solution ? json_pack("{s:s,s:s,s:s}", "prompt", q, "answer", ans, "solution", sol)
                                  : json_pack("{s:s,s:s}", "prompt", q, "answer", ans);
        char *line = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(j);
        if (!line) rc = rt_fail(RT_ENOMEM, "demo: out of memory");
        else {
            rc = rt_atomic_write(af, line, strlen(line));
            if (!rc) rc = rt_atomic_write(af, "\n", 1);
        }
        free(line);
    }
    if (rc) {
        rt_atomic_abort(af);
        return rc;
    }
    return rt_atomic_commit(af);
}

static int stage_task(demo *d) {
    const sizes *z = d->z;
    stage_begin(d, DM_TASK, "two-step arithmetic word problems, %zu train + %zu test, seed %llu", z->n_train, z->n_test,
                (unsigned long long)d->o->seed);
    uint64_t s = d->o->seed * 0x2545f4914f6cdd1dull + 1;
    size_t n = z->n_train + z->n_test;
    problem *ps = rt_calloc(n, sizeof *ps);
    unsigned char *used = rt_calloc(N_KEYS, 1);
    int rc = ps && used ? 0 : rt_fail(RT_ENOMEM, "demo: out of memory");
    /* the test split first; train problems never share a test problem's numbers and steps */
    for (size_t i = 0; i < n && !rc; i++) {
        size_t tries = 0;
        do draw(&s, &ps[i]);
        while (++tries < 100000 && (i < z->n_test ? used[key(&ps[i])] != 0 : used[key(&ps[i])] == 1));
        if (i < z->n_test) used[key(&ps[i])] = 1;
        else if (used[key(&ps[i])] == 1) rc = rt_fail(RT_EINTERNAL, "demo: could not draw distinct problems");
    }
    char *test = path_in(d, TEST_BENCH ".jsonl"), *train = path_in(d, "train.jsonl");
    if (!rc && (!test || !train)) rc = rt_fail(RT_ENOMEM, "demo: out of memory");
    if (!rc) rc = write_jsonl(test, ps, z->n_test, false);
    if (!rc) rc = write_jsonl(train, ps + z->n_test, z->n_train, true);
    if (!rc) {
        char q[256], sol[256];
        prompt_text(&ps[z->n_test], q, sizeof q);
        solution_text(&ps[z->n_test], sol, sizeof sol);
        note(d, "example: %s", q);
        note(d, "solution: %s", sol);
        d->res->train = z->n_train;
        d->res->test = z->n_test;
        stage_end(d, "%s, %s", train, test);
    }
    free(test);
    free(train);
    free(ps);
    free(used);
    return rc;
}

/* ---- 2. the tokenizer ---- */

/* GPT-2's byte-level alphabet: printable bytes stand for themselves, the rest map to
 * U+0100 upwards in byte order. */
static unsigned byte_char(unsigned b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    unsigned n = 0;
    for (unsigned x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
    return 256 + n;
}

static const char *const ADDED[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"};
#define N_ADDED 5

static int stage_tokenizer(demo *d) {
    stage_begin(d, DM_TOKENIZER, "byte-level BPE tokenizer.json: 256 byte tokens, no merges, qwen's added tokens");
    json_t *vocab = json_object(), *added = json_array();
    for (unsigned b = 0; b < 256 && vocab; b++) {
        unsigned cp = byte_char(b);
        char u[4];
        size_t n = cp < 0x80 ? (u[0] = (char)cp, 1) : (u[0] = (char)(0xc0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3f)), 2);
        json_t *id = json_integer(b);
        char keybuf[4] = {0};
        memcpy(keybuf, u, n);
        json_object_set_new(vocab, keybuf, id);
    }
    for (int i = 0; i < N_ADDED && added; i++)
        json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", 256 + i, "content", ADDED[i],
                                               "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special",
                                               i < 3));
    json_t *j = json_pack("{s:s,s:n,s:n,s:o,s:n,s:{s:s,s:b,s:b,s:b},s:n,s:{s:s,s:b,s:b,s:b},"
                          "s:{s:s,s:n,s:n,s:n,s:n,s:b,s:b,s:b,s:o,s:[]}}",
                          "version", "1.0", "truncation", "padding", "added_tokens", added, "normalizer",
                          "pre_tokenizer", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 1,
                          "post_processor", "decoder", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                          "use_regex", 1, "model", "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix",
                          "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab,
                          "merges");
    char *path = path_in(d, "tokenizer.json");
    int rc = j && path ? 0 : rt_fail(RT_ENOMEM, "demo: out of memory");
    if (!rc && json_dump_file(j, path, JSON_INDENT(1) | JSON_PRESERVE_ORDER))
        rc = rt_fail(RT_EIO, "writing %s", path);
    json_decref(j);
    if (!rc) rc = tok_load(path, &d->tok);
    if (!rc) {
        /* the real tokenizer path, round trip on a rendered chat */
        ct_message m[3] = {{"system", SYSTEM, NULL}, {"user", "Kalen has 7 pens, gets 2, then loses 5. How many now?", NULL},
                           {"assistant", "\\boxed{4}", "Kalen has 7 pens.\n7+2=9\n9-5=4"}};
        int32_t *ids = NULL;
        uint8_t *mask = NULL;
        size_t n = 0;
        rc = ct_render(d->tok, CT_QWEN, m, 3, false, &ids, &mask, &n);
        size_t trained = 0;
        for (size_t i = 0; i < n && !rc; i++) trained += mask[i];
        if (!rc)
            note(d, "vocabulary %zu ids; a rendered qwen chat is %zu tokens, %zu of them trained on", tok_vocab_size(d->tok),
                 n, trained);
        free(ids);
        free(mask);
    }
    if (!rc) stage_end(d, "%s", path);
    free(path);
    return rc;
}

/* ---- model configs and training ---- */

static json_t *model_config(const demo *d, int dim, int layers, int ffn, int heads, int kv) {
    int32_t eos = tok_token_to_id(d->tok, "<|im_end|>"), bos = tok_token_to_id(d->tok, "<|endoftext|>");
    return json_pack("{s:[s],s:f,s:i,s:i,s:s,s:i,s:f,s:i,s:i,s:i,s:s,s:i,s:i,s:i,s:f,s:f,s:i,s:b,s:s,s:b,s:b,s:i}",
                     "architectures", "Qwen2ForCausalLM", "attention_dropout", 0.0, "bos_token_id", bos, "eos_token_id",
                     eos, "hidden_act", "silu", "hidden_size", dim, "initializer_range", 0.02, "intermediate_size", ffn,
                     "max_position_embeddings", SEQ_LEN * 2, "max_window_layers", layers, "model_type", "qwen2",
                     "num_attention_heads", heads, "num_hidden_layers", layers, "num_key_value_heads", kv, "rms_norm_eps",
                     1e-6, "rope_theta", 10000.0, "sliding_window", SEQ_LEN * 2, "tie_word_embeddings", 1, "torch_dtype",
                     "float32", "use_cache", 1, "use_sliding_window", 0, "vocab_size", VOCAB);
}

/* "loss" is the cross-entropy (for a distilling run too, so the curves compare); a distilling
 * run adds its combined loss and mean KL. */
static int log_step(FILE *f, const tr_stats *s) {
    json_t *j = json_pack("{s:I,s:f,s:f,s:f,s:I}", "step", (json_int_t)s->step, "loss", s->ce_loss, "lr", s->lr,
                          "grad_norm", s->grad_norm, "tokens", (json_int_t)s->tokens);
    if (j && s->kd_loss != 0) {
        json_object_set_new(j, "kd_total", json_real(s->loss));
        json_object_set_new(j, "kd_loss", json_real(s->kd_loss));
    }
    char *txt = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    int rc = txt && fprintf(f, "%s\n", txt) >= 0 ? 0 : -1;
    free(txt);
    return rc;
}

/* Trains a model of config cfg from random weights on the shards in data for steps
 * updates; writes the checkpoint to out and the log (JSON lines) to log. */
static int train_model(demo *d, tp_pool *pool, const char *who, json_t *cfg, const char *data, int64_t steps,
                       int64_t batch, double lr, uint64_t seed, double kd_alpha, const char *out, const char *log,
                       int64_t *n_params) {
    sm_model *m = NULL;
    sd_data *sd = NULL;
    tr_trainer *t = NULL;
    int rc = sm_create_random(cfg, seed, &m);
    if (!rc) {
        *n_params = m->n_params;
        rc = sd_open(data, &sd);
    }
    tr_options o;
    tr_options_default(&o);
    o.batch = batch;
    o.steps = steps;
    o.lr = lr;
    o.warmup = steps / 10;
    o.weight_decay = 0.0;
    o.seed = seed;
    /* the model directory gets the demo's tokenizer and the template of the shards (student/hfdir.h) */
    hd_source hf = {0};
    char *tok = path_in(d, "tokenizer.json");
    if (!rc) rc = tok ? hd_source_from(NULL, data, tok, &hf) : RT_ENOMEM;
    free(tok);
    o.hf = &hf;
    o.kd_alpha = kd_alpha;   /* forward KL, T = 1 (the defaults) */
    if (!rc) {
        rc = tr_create(m, sd, &o, pool, &t);
        m = NULL;
        sd = NULL;
    }
    sm_free(m);
    sd_close(sd);
    FILE *lf = NULL;
    if (!rc && !(lf = fopen(log, "w"))) rc = rt_fail(RT_EIO, "cannot write %s: %s", log, strerror(errno));
    double t0 = now_s(), last = t0;
    tr_stats s = {0};
    for (int64_t i = 0; i < steps && !rc; i++) {
        if ((rc = tr_step(t, &s))) break;
        if (log_step(lf, &s)) rc = rt_fail(RT_EIO, "writing %s", log);
        double t1 = now_s();
        if (t1 - last >= 10 || s.step == steps || s.step == 1) {
            last = t1;
            note(d, "%sstep %lld/%lld  loss %.4f  lr %.2g  %.0f tok/s", who, (long long)s.step, (long long)steps, s.loss,
                 s.lr, (double)s.tokens * (double)s.step / (t1 - t0));
        }
    }
    if (lf && fclose(lf) && !rc) rc = rt_fail(RT_EIO, "writing %s", log);
    if (!rc) rc = tr_save(t, out, RT_DT_F32);
    tr_free(t);
    hd_source_free(&hf);
    return rc;
}

/* ---- 3. the teacher ---- */

/* Puts the demo's system message first in a conversation ({"messages": [...]}). */
static int add_system(json_t *conv) {
    json_t *msgs = json_object_get(conv, "messages"), *m = json_pack("{s:s,s:s}", "role", "system", "content", SYSTEM);
    if (!m || !json_is_array(msgs) || json_array_insert_new(msgs, 0, m)) return rt_fail(RT_ENOMEM, "demo: out of memory");
    return 0;
}

/* One training prompt with its reference solution (metadata "solution") into the shards. */
static int add_reference(void *ud, const db_prompt_row *p) {
    rd_session *rs = ud;
    json_error_t je;
    json_t *meta = json_loads(p->metadata, 0, &je);
    const char *sol = json_string_value(json_object_get(meta, "solution"));
    int rc = 0;
    if (!sol) rc = rt_fail(RT_EFORMAT, "prompt %lld has no reference solution", (long long)p->id);
    json_t *conv = rc ? NULL : exp_conversation(p->messages, sol, strlen(sol));
    if (!rc && !conv) rc = rt_fail(RT_ENOMEM, "demo: building a conversation");
    if (!rc) rc = add_system(conv);
    if (!rc) rc = rd_add(rs, conv, "reference solution");
    json_decref(conv);
    json_decref(meta);
    return rc;
}

static int teacher_shards(demo *d, const char *out, pk_report *rep) {
    pk_options po = {.seq_len = SEQ_LEN, .seed = d->o->seed, .drop_long = true};
    rd_session *rs = NULL;
    int rc = rd_begin(d->tok, ct_builtin(CT_QWEN), out, &po, d->pool, &rs);
    if (!rc) rc = db_source_prompts(d->db, TRAIN_SOURCE, add_reference, rs);
    if (rc) {
        rd_abort(rs);
        return rc;
    }
    json_t *meta = json_pack("{s:s,s:s}", "template", "qwen", "source", TRAIN_SOURCE);
    rc = rd_finish(rs, meta, rep);
    json_decref(meta);
    return rc;
}

static int stage_teacher(demo *d) {
    const sizes *z = d->z;
    stage_begin(d, DM_TEACHER, "import the train split into run.db, pack it, train the teacher");
    char *train = path_in(d, "train.jsonl"), *data = path_in(d, "teacher-data"), *out = path_in(d, "teacher"),
         *log = path_in(d, "teacher-train.jsonl");
    int rc = train && data && out && log ? 0 : rt_fail(RT_ENOMEM, "demo: out of memory");
    imp_options io = {.format = IMP_JSONL, .prompt_field = "prompt", .answer_field = "answer", .source = TRAIN_SOURCE};
    imp_report ir;
    if (!rc) rc = db_import_file(d->db, train, &io, d->pool, &ir);
    if (!rc) note(d, "imported %zu prompts (gold answers, solutions in metadata)", ir.prompts_new + ir.prompts_existing);
    pk_report pr;
    if (!rc) rc = teacher_shards(d, data, &pr);
    if (!rc)
        note(d, "packed %zu conversations into %zu sequences of %d tokens (%llu loss tokens)", pr.docs, pr.seqs, SEQ_LEN,
             (unsigned long long)pr.loss_tokens);
    json_t *cfg = rc ? NULL : model_config(d, z->t_dim, z->t_layers, z->t_ffn, z->t_heads, z->t_kv);
    if (!rc && !cfg) rc = rt_fail(RT_ENOMEM, "demo: out of memory");
    if (!rc)
        rc = train_model(d, d->pool, "", cfg, data, z->t_steps, z->t_batch, z->t_lr, d->o->seed + 1, 0.0, out, log,
                         &d->res->teacher_params);
    json_decref(cfg);
    if (!rc) stage_end(d, "teacher: qwen2, %lld parameters, %lld steps -> %s", (long long)d->res->teacher_params,
                       (long long)z->t_steps, out);
    free(train);
    free(data);
    free(out);
    free(log);
    return rc;
}

/* ---- 4. generation into run.db ---- */

typedef struct {
    int64_t id;
    char *user;
} train_prompt;

typedef struct {
    train_prompt **out;
    size_t *n, cap;
} train_acc;

static int add_train_prompt(void *ud, const db_prompt_turn *p) {
    train_acc *a = ud;
    if (rt_grow((void **)a->out, &a->cap, *a->n + 1, sizeof **a->out)) return rt_fail(RT_ENOMEM, "demo: out of memory");
    const char *u = p->last_content;
    (*a->out)[*a->n] = (train_prompt){p->id, rt_strdup(u ? u : "")};
    if (!(*a->out)[(*a->n)++].user) return rt_fail(RT_ENOMEM, "demo: out of memory");
    return 0;
}

static int load_train_prompts(demo *d, train_prompt **out, size_t *n) {
    *out = NULL;
    *n = 0;
    train_acc a = {out, n, 0};
    return db_source_last_turns(d->db, TRAIN_SOURCE, add_train_prompt, &a);
}

/* Thinking tokens: the generated ids up to and including the one that completes "</think>"
 * in the decoded text (each id decoded alone: the demo's tokenizer is byte-level, so the
 * pieces concatenate to the text); the rest are answer tokens. No "</think>": all thinking. */
static int count_thinking(const demo *d, const te_result *r, const char *text, int32_t *think, int32_t *answer) {
    const char *close = strstr(text, "</think>");
    *think = (int32_t)r->n_ids;
    *answer = 0;
    if (!close) return 0;
    size_t cut = (size_t)(close - text) + strlen("</think>"), at = 0;
    for (int64_t i = 0; i < r->n_ids && at < cut; i++) {
        char *piece = NULL;
        size_t n = 0;
        int rc = tok_decode(d->tok, &r->ids[i], 1, true, &piece, &n);
        free(piece);
        if (rc) return rc;
        at += n;
        if (at >= cut) {
            *think = (int32_t)(i + 1);
            *answer = (int32_t)(r->n_ids - i - 1);
        }
    }
    return 0;
}

static int store_sample(demo *d, const train_prompt *p, const te_result *r, const char *params, uint64_t seed) {
    char *text = NULL;
    size_t len = 0;
    int32_t think = -1, answer = -1;
    int rc = tok_decode(d->tok, r->ids, (size_t)r->n_ids, true, &text, &len);
    if (!rc) rc = count_thinking(d, r, text, &think, &answer);
    if (rc) {
        free(text);
        return rc;
    }
    db_sample s = {.prompt_id = p->id, .teacher = TEACHER_NAME, .params_json = params, .has_seed = true,
                   .seed = (int64_t)(seed & 0x7fffffffffffffffull), .sample_index = r->sample, .text = text,
                   .text_len = len, .prompt_tokens = (int32_t)r->n_prompt, .thinking_tokens = think, .answer_tokens = answer,
                   .finish_reason = r->finish == TE_FINISH_STOP ? "stop" : "length"};
    int64_t id = 0;
    bool inserted = false;
    rc = db_sample_put(d->db, &s, &id, &inserted);
    if (!rc && inserted && r->top_ids && r->top_k > 0 && r->n_ids > 0)
        rc = db_sample_topk_put(d->db, id, r->top_k, (size_t)r->n_ids, r->top_ids, r->top_logprobs);
    free(text);
    return rc;
}

static int stage_generate(demo *d) {
    const sizes *z = d->z;
    stage_begin(d, DM_GENERATE, "%d samples per train prompt at temperature 0.6 with the engine, into run.db", z->gen_k);
    char *dir = path_in(d, "teacher");
    train_prompt *ps = NULL;
    size_t n = 0;
    te_model *m = NULL;
    te_engine *e = NULL;
    int rc = dir ? load_train_prompts(d, &ps, &n) : rt_fail(RT_ENOMEM, "demo: out of memory");
    if (!rc) rc = te_model_load(dir, d->pool, &m);
    te_opts eo = {.max_batch = 32, .cache_tokens = 32 * (SEQ_LEN + 64), .tok = d->tok};
    if (!rc) rc = te_engine_create(m, &eo, &e);
    smp_params sp = {.temperature = 0.6f, .top_p = 0.95f};
    char params[128];
    snprintf(params, sizeof params, "{\"max_tokens\":%lld,\"temperature\":0.6,\"top_p\":0.95}", (long long)z->max_tokens);
    int32_t eot = tok_token_to_id(d->tok, "<|im_end|>");
    size_t next = 0, done = 0, total = n * (size_t)z->gen_k;
    double t0 = now_s(), last = t0;
    while (!rc) {
        te_stats st;
        te_stats_get(e, &st);
        while (!rc && next < n && st.queued == 0) {
            ct_message msg[2] = {{"system", SYSTEM, NULL}, {"user", ps[next].user, NULL}};
            int32_t *ids = NULL;
            uint8_t *mask = NULL;
            size_t n_ids = 0;
            rc = ct_render(d->tok, CT_QWEN, msg, 2, true, &ids, &mask, &n_ids);
            te_request r = {.prompt = ids, .n_prompt = (int64_t)n_ids, .n_samples = z->gen_k, .max_tokens = z->max_tokens,
                            .sampling = sp, .seed = d->o->seed * 1000003ull + (uint64_t)ps[next].id, .stop_ids = &eot,
                            .n_stop_ids = 1, .top_logprobs = KD_TOPK, .tag = next};
            if (!rc) rc = te_submit(e, &r);
            free(ids);
            free(mask);
            next++;
            te_stats_get(e, &st);
        }
        if (rc || !te_busy(e)) break;
        te_result *res = NULL;
        size_t k = 0;
        if ((rc = te_step(e, &res, &k))) break;
        if (k && !(rc = db_begin(d->db))) {
            for (size_t j = 0; j < k && !rc; j++) {
                const train_prompt *p = &ps[res[j].tag];
                rc = store_sample(d, p, &res[j], params, d->o->seed * 1000003ull + (uint64_t)p->id);
                done++;
            }
            if (!rc) rc = db_commit(d->db);
            else db_rollback(d->db);
        }
        te_results_free(res, k);
        double t1 = now_s();
        if (!rc && (t1 - last >= 10 || done == total)) {
            last = t1;
            te_stats_get(e, &st);
            note(d, "%zu/%zu samples, %lld tokens, %.0f tokens/s", done, total, (long long)st.generated_tokens,
                 (double)st.generated_tokens / (t1 - t0));
        }
    }
    d->res->samples = done;
    if (!rc) stage_end(d, "%zu samples of teacher %s in run.db", done, TEACHER_NAME);
    te_engine_free(e);
    te_model_free(m);
    for (size_t i = 0; i < n; i++) free(ps[i].user);
    free(ps);
    free(dir);
    return rc;
}

/* ---- 5. filters, snapshot, student ---- */

static void on_filter(void *ud, const fp_progress *p) {
    demo *d = ud;
    if (p->done == p->total && p->total) note(d, "filter %s: %zu samples", p->stage, p->total);
}

static int add_snapshot_conv(void *ctx, int64_t sample_id, json_t *conv) {
    (void)sample_id;
    int rc = add_system(conv);
    return rc ? rc : rd_add(ctx, conv, "snapshot sample");
}

/* The snapshot's samples, as dataset/export.h builds their conversations, with the system
 * message, rendered and packed (rd_export_snapshot() without it). */
static int snapshot_shards(demo *d, const exp_filter *ef, const char *out, const pk_options *po, const json_t *meta,
                           pk_report *rep) {
    rd_session *rs = NULL;
    int rc = rd_begin(d->tok, ct_builtin(CT_QWEN), out, po, d->pool, &rs);
    if (!rc) rc = db_each_conversation(d->db, ef, add_snapshot_conv, rs);
    if (rc) {
        rd_abort(rs);
        return rc;
    }
    return rd_finish(rs, meta, rep);
}

/* One student's training run, for train_students(). */
typedef struct {
    demo *d;
    const char *who; /* "SFT " or "KD ": in front of its progress lines */
    json_t *cfg;
    const char *data, *out, *log;
    double kd_alpha;
    int64_t *n_params;
    tp_pool *pool;
    int rc;
    char err[RT_ERRMSG_MAX]; /* rt_errmsg() is per thread: a failure's message comes back here */
} student_job;

static int run_student(student_job *j) {
    const sizes *z = j->d->z;
    return train_model(j->d, j->pool, j->who, j->cfg, j->data, z->s_steps, z->s_batch, z->s_lr, j->d->o->seed + 2,
                       j->kd_alpha, j->out, j->log, j->n_params);
}

static void *student_thread(void *arg) {
    student_job *j = arg;
    if ((j->rc = run_student(j))) snprintf(j->err, sizeof j->err, "%s", rt_errmsg());
    return NULL;
}

/* Trains the SFT and the KD student. The two are independent and a model this small keeps
 * two threads of one GEMM from scaling (about 1.6x on 2 cores), so with two threads or more
 * they train at once, each on its own half of the threads (on a 2-core machine each on one
 * thread: the same weights as `--threads 1`); with one thread, one after the other. */
static int train_students(demo *d, student_job jobs[2]) {
    int n = tp_size(d->pool);
    if (n < 2) {
        int rc = 0;
        for (int i = 0; i < 2 && !rc; i++) {
            jobs[i].pool = d->pool;
            rc = run_student(&jobs[i]);
        }
        return rc;
    }
    int rc = tp_create(n / 2, &jobs[0].pool);
    if (!rc) rc = tp_create(n - n / 2, &jobs[1].pool);
    json_t *cfg_kd = rc ? NULL : json_deep_copy(jobs[0].cfg); /* jansson's reference counts: one object per thread */
    if (!rc && !cfg_kd) rc = rt_fail(RT_ENOMEM, "demo: out of memory");
    pthread_t th;
    bool started = false;
    if (!rc) {
        jobs[1].cfg = cfg_kd;
        if (pthread_create(&th, NULL, student_thread, &jobs[1])) rc = rt_fail(RT_EIO, "demo: cannot start a thread");
        else started = true;
    }
    if (!rc) student_thread(&jobs[0]);
    if (started) pthread_join(th, NULL);
    json_decref(cfg_kd);
    tp_free(jobs[0].pool);
    tp_free(jobs[1].pool);
    for (int i = 0; i < 2 && !rc; i++)
        if (jobs[i].rc) rc = rt_fail(jobs[i].rc, "%s", jobs[i].err);
    return rc;
}

static int stage_distill(demo *d) {
    const sizes *z = d->z;
    stage_begin(d, DM_DISTILL, "filter, select a snapshot, export shards, train the student");
    char *test = path_in(d, TEST_BENCH ".jsonl"), *data = path_in(d, "student-data"), *out = path_in(d, "student"),
         *log = path_in(d, "student-train.jsonl");
    int rc = test && data && out && log ? 0 : rt_fail(RT_ENOMEM, "demo: out of memory");
    fp_config c;
    bool have_c = false;
    if (!rc && !(rc = fp_config_default(&c))) have_c = true;
    if (!rc) {
        c.n_benchmarks = 0; /* decontaminate against the demo's own test split only */
        rc = fp_config_add_decontam_file(&c, test);
    }
    if (!rc) rc = fp_config_add_decontam_field(&c, "prompt");
    fp_report fr;
    if (!rc) rc = fp_run(d->db, &c, d->pool, on_filter, d, &fr);
    if (!rc) {
        char line[512];
        size_t o = 0;
        for (int f = 0; f < FP_COUNT && o < sizeof line - 64; f++)
            if (fr.written[f])
                o += (size_t)snprintf(line + o, sizeof line - o, "%s%s %zu", o ? ", " : "", fp_filter_name((fp_filter)f),
                                      fr.failed[f]);
        note(d, "failed per filter: %s", line);
        note(d, "decontam: %zu test documents indexed, %zu samples flagged", fr.bench_docs, fr.failed[FP_DECONTAM]);
    }
    fp_select_opts so = {.snapshot = "demo", .per_prompt = 1, .policy = FP_POLICY_SHORTEST, .seed = d->o->seed};
    fp_select_report sr;
    if (!rc) rc = fp_select(d->db, &so, &sr);
    if (!rc) {
        d->res->selected = sr.selected;
        d->res->filtered_out = d->res->samples - sr.eligible;
        note(d, "snapshot demo: %zu samples from %zu prompts (%zu of %zu samples passed every filter)", sr.selected,
             sr.prompts, sr.eligible, d->res->samples);
    }
    pk_options po = {.seq_len = SEQ_LEN, .seed = d->o->seed, .drop_long = true, .top_k = KD_TOPK};
    exp_filter ef = {.snapshot = "demo", .with_topk = true};
    pk_report pr;
    json_t *meta = rc ? NULL : json_pack("{s:s,s:s}", "template", "qwen", "snapshot", "demo");
    if (!rc) rc = snapshot_shards(d, &ef, data, &po, meta, &pr);
    json_decref(meta);
    if (!rc) note(d, "exported %zu conversations into %zu sequences", pr.docs, pr.seqs);
    json_t *cfg = rc ? NULL : model_config(d, z->s_dim, z->s_layers, z->s_ffn, z->s_heads, z->s_kv);
    if (!rc && !cfg) rc = rt_fail(RT_ENOMEM, "demo: out of memory");
    /* the KD student: the same snapshot, shards, initial weights, data order and steps */
    char *kd_out = rc ? NULL : path_in(d, "student-kd"), *kd_log = rc ? NULL : path_in(d, "student-kd-train.jsonl");
    if (!rc && (!kd_out || !kd_log)) rc = rt_fail(RT_ENOMEM, "demo: out of memory");
    int64_t kd_params = 0;
    if (!rc) note(d, "the KD student: the same snapshot and steps, loss (1 - %.1f) CE + %.1f KL(teacher top-%d + tail || student)",
                  KD_ALPHA, KD_ALPHA, KD_TOPK);
    student_job jobs[2] = {
        {.d = d, .who = "SFT ", .cfg = cfg, .data = data, .kd_alpha = 0.0, .out = out, .log = log,
         .n_params = &d->res->student_params},
        {.d = d, .who = "KD ", .cfg = cfg, .data = data, .kd_alpha = KD_ALPHA, .out = kd_out, .log = kd_log,
         .n_params = &kd_params},
    };
    if (!rc) rc = train_students(d, jobs);
    free(kd_out);
    free(kd_log);
    json_decref(cfg);
    if (!rc) stage_end(d, "students (SFT and KD): qwen2, %lld parameters, %lld steps -> %s, %s-kd", (long long)d->res->student_params,
                       (long long)z->s_steps, out, out);
    if (have_c) fp_config_free(&c);
    free(test);
    free(data);
    free(out);
    free(log);
    return rc;
}

/* ---- 6. evaluation and report ---- */

static void on_eval(void *ctx, size_t done, size_t todo, int64_t tokens) {
    (void)tokens;
    demo *d = ctx;
    if (done == todo) note(d, "%zu samples", done);
}

static int eval_model(demo *d, const ev_questions *qs, const char *name) {
    char *dir = path_in(d, name);
    te_model *m = NULL;
    te_engine *e = NULL;
    int rc = dir ? te_model_load(dir, d->pool, &m) : rt_fail(RT_ENOMEM, "demo: out of memory");
    te_opts eo = {.max_batch = 32, .cache_tokens = 32 * (SEQ_LEN + 64), .tok = d->tok};
    if (!rc) rc = te_engine_create(m, &eo, &e);
    char model[64];
    snprintf(model, sizeof model, "demo-%s", name);
    ev_gen_opts go = {.run = name, .model = model, .k = d->z->eval_k, .max_tokens = d->z->max_tokens,
                      .sampling = {.temperature = 0.6f, .top_p = 0.95f}, .seed = d->o->seed, .tok = d->tok, .tmpl = NULL,
                      .progress = on_eval, .progress_ctx = d};
    ev_gen_report rep;
    if (!rc) rc = ev_generate(d->db, e, qs, &go, &rep);
    if (rc) rc = rt_errorf(rc, "evaluating the %s", name);
    te_engine_free(e);
    te_model_free(m);
    free(dir);
    return rc;
}

static int write_report(demo *d, const ev_run *const *runs) {
    char *path = path_in(d, "report.html"), *tl = path_in(d, "teacher-train.jsonl"), *sl = path_in(d, "student-train.jsonl"),
         *kl = path_in(d, "student-kd-train.jsonl");
    json_t *stats = NULL;
    ev_train_log *logs[3] = {NULL, NULL, NULL};
    int rc = path && tl && sl && kl ? 0 : rt_fail(RT_ENOMEM, "demo: out of memory");
    if (!rc) rc = db_stats(d->db, &stats);
    if (!rc) rc = ev_train_log_load(tl, &logs[0]);
    if (!rc) rc = ev_train_log_load(sl, &logs[1]);
    if (!rc) rc = ev_train_log_load(kl, &logs[2]);
    FILE *f = NULL;
    if (!rc && !(f = fopen(path, "w"))) rc = rt_fail(RT_EIO, "cannot write %s: %s", path, strerror(errno));
    ev_report_input in = {.title = "retort demo", .stats = stats, .runs = runs, .n_runs = 3,
                          .logs = (const ev_train_log *const *)logs, .n_logs = 3};
    if (!rc) rc = ev_report_write(f, &in);
    if (f && fclose(f) && !rc) rc = rt_fail(RT_EIO, "writing %s", path);
    if (!rc) note(d, "report: %s", path);
    ev_train_log_free(logs[0]);
    ev_train_log_free(logs[1]);
    ev_train_log_free(logs[2]);
    json_decref(stats);
    free(path);
    free(tl);
    free(sl);
    free(kl);
    return rc;
}

static int stage_evaluate(demo *d) {
    stage_begin(d, DM_EVALUATE, "teacher and student on the %zu test questions, k = %d, temperature 0.6", d->z->n_test,
                d->z->eval_k);
    char *test = path_in(d, TEST_BENCH ".jsonl");
    ev_questions qs = {0};
    ev_run *runs[3] = {NULL, NULL, NULL};
    int rc = test ? ev_questions_load(d->db, test, &qs) : rt_fail(RT_ENOMEM, "demo: out of memory");
    /* each question as the models saw their training chats: system message, user turn,
     * generation prompt; ev_generate encodes it as it is (special tokens recognised) */
    for (size_t i = 0; i < qs.n && !rc; i++) {
        ct_message m[2] = {{"system", SYSTEM, NULL}, {"user", qs.q[i].text, NULL}};
        char *text = NULL;
        rc = ct_render_text(CT_QWEN, m, 2, true, &text);
        if (!rc) {
            free(qs.q[i].text);
            qs.q[i].text = text;
        }
    }
    if (!rc) rc = eval_model(d, &qs, "teacher");
    if (!rc) rc = eval_model(d, &qs, "student");
    if (!rc) rc = eval_model(d, &qs, "student-kd");
    if (!rc) rc = ev_run_load(d->db, "teacher", &runs[0]);
    if (!rc) rc = ev_run_load(d->db, "student", &runs[1]);
    if (!rc) rc = ev_run_load(d->db, "student-kd", &runs[2]);
    const ev_bench *bt = rc ? NULL : ev_run_bench(runs[0], TEST_BENCH), *bs = rc ? NULL : ev_run_bench(runs[1], TEST_BENCH),
                   *bk = rc ? NULL : ev_run_bench(runs[2], TEST_BENCH);
    if (!rc && (!bt || !bs || !bk)) rc = rt_fail(RT_EINTERNAL, "demo: an evaluation run holds no %s results", TEST_BENCH);
    if (!rc) {
        d->res->teacher_pass1 = bt->pass1;
        d->res->student_pass1 = bs->pass1;
        d->res->teacher_cons = bt->cons;
        d->res->student_cons = bs->cons;
        d->res->student_kd_pass1 = bk->pass1;
        d->res->student_kd_cons = bk->cons;
        rc = ev_compare_json((const ev_run *const *)runs, 3, &d->res->compare);
    }
    if (!rc) rc = write_report(d, (const ev_run *const *)runs);
    if (!rc)
        stage_end(d, "teacher pass@1 %.3f, SFT student pass@1 %.3f, KD student pass@1 %.3f", d->res->teacher_pass1,
                  d->res->student_pass1, d->res->student_kd_pass1);
    ev_run_free(runs[0]);
    ev_run_free(runs[1]);
    ev_run_free(runs[2]);
    ev_questions_free(&qs);
    free(test);
    return rc;
}

/* ---- the run ---- */

static int make_dir(const char *p) {
    if (mkdir(p, 0755) && errno != EEXIST) return rt_fail(RT_EIO, "cannot create %s: %s", p, strerror(errno));
    if (!rt_is_dir(p)) return rt_fail(RT_EIO, "%s exists and is not a directory", p);
    return 0;
}

static int fresh_db(demo *d) {
    static const char *const names[] = {"run.db", "run.db-wal", "run.db-shm"};
    for (size_t i = 0; i < 3; i++) {
        char *p = path_in(d, names[i]);
        if (!p) return rt_fail(RT_ENOMEM, "demo: out of memory");
        int e = unlink(p) && errno != ENOENT ? errno : 0;
        int rc = e ? rt_fail(RT_EIO, "cannot remove %s: %s", p, strerror(e)) : 0;
        if (!rc && i == 0) rc = db_open(p, DB_OPEN_CREATE, &d->db);
        free(p);
        if (rc) return rc;
    }
    return 0;
}

int dm_run(const dm_options *opts, dm_result *out) {
    *out = (dm_result){0};
    demo d = {.o = opts, .z = opts->quick ? &QUICK : &FULL, .res = out, .t0 = now_s(), .emit_lock = PTHREAD_MUTEX_INITIALIZER};
    int rc = opts->dir && *opts->dir ? 0 : rt_fail(RT_EINVAL, "demo: a directory is required");
    if (!rc) rc = make_dir(opts->dir);
    if (!rc && !(d.dir = rt_strdup(opts->dir))) rc = rt_fail(RT_ENOMEM, "demo: out of memory");
    if (!rc) rc = tp_create(opts->threads, &d.pool);
    if (!rc) rc = fresh_db(&d);
    typedef int (*stage_fn)(demo *);
    static const stage_fn stages[DM_N_STAGES] = {stage_task, stage_tokenizer, stage_teacher, stage_generate,
                                                 stage_distill, stage_evaluate};
    for (int s = 0; s < DM_N_STAGES && !rc; s++) {
        rc = stages[s](&d);
        if (rc) rc = rt_errorf(rc, "demo stage %s", dm_stage_name((dm_stage)s));
    }
    out->total_seconds = now_s() - d.t0;
    db_close(d.db);
    tok_free(d.tok);
    tp_free(d.pool);
    free(d.dir);
    if (rc) dm_result_free(out);
    return rc;
}
