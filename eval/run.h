/* eval/run.h — one benchmark run: questions into the database, k samples each through the
 * in-process engine, each answer verified and stored in eval_results.
 *
 * ev_questions_load() resolves a benchmark: "gsm8k", "math500" and "aime24" are the files
 * <assets>/benchmarks/{gsm8k,math500,aime24}_test.jsonl (core/fsutil.h rt_assets_dir()) read
 * with dataset/import.h's gsm8k / math / aime formats; anything else is a JSONL file of
 * {"prompt": TEXT, "answer": GOLD} records (the benchmark is named after the file, without
 * directory and extension). Every record is parsed first (a malformed line or a missing
 * answer is RT_EFORMAT naming FILE:LINE, and nothing is written), then each question is
 * stored as a prompt (source = the benchmark name; an existing prompt with the same content
 * is reused) in one transaction. Questions keep file order; a repeated question counts once.
 *
 * ev_generate() renders each question (with a chat template: the user message and the
 * generation prompt; without: the question text encoded with the tokenizer's special
 * tokens), draws samples 0..k-1 with the engine (sample j of a question uses seed
 * opts.seed + 1000003·prompt_id and sample index j, so a sample is the same whatever else
 * runs; with a template, its end-of-turn token — <|im_end|>, <|eot_id|>, <｜end▁of▁sentence｜> —
 * stops a sample as the config's eos does), decodes each (special tokens skipped), verifies it against the gold answer
 * (filters/verify.h, default options) and stores (run, model, benchmark, prompt, j,
 * response (zstd), extracted answer, correct, generated tokens, finish "stop"/"length",
 * latency) in eval_results, one transaction per engine step. A run holds one model: a run
 * name that already has rows of another model is RT_EINVAL. Samples already stored for
 * (run, model, prompt, j) are not generated again, so a killed run resumes and a rerun adds
 * nothing. Built-in benchmarks append R1's instruction ("Please reason step by step, and
 * put your final answer within \boxed{}.") to the question; custom files are used as written.
 * latency_ms is the wall time from the request's submission (requests are submitted only
 * when the engine's queue is empty) to the sample's last token.
 *
 * Lockstep (retort eval under mpirun). With ev_gen_opts.comm of more than one rank, the engine
 * is rank 0's of a model split over the ranks (te_model_load_opts with comm), and ev_generate
 * drives it through pe_step (teacher/parallel_engine.h), each question's request issued with
 * the next step, while the other ranks run pe_follow(); only rank 0 reads the database and
 * writes results. ev_generate ends the followers (pe_end) before it returns, on success and on
 * its own errors alike — except when the lockstep itself broke (pe_step's or pe_end's error,
 * rep->comm_failed set): the followers may wait in a collective then, and the caller ends the
 * job (comm_abort). The samples are those of the engine alone: their seeds fix them.
 *
 * Ownership: ev_questions_free releases what ev_questions_load made. The engine, tokenizer
 * and database are borrowed. Errors: RT_ENOTFOUND (benchmark file), RT_EFORMAT, RT_EINVAL
 * (a prompt the model cannot take), the engine's, the database's, RT_ENOMEM.
 */
#ifndef RT_EVAL_RUN_H
#define RT_EVAL_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/chat_template.h"
#include "core/comm.h"
#include "core/tokenizer.h"
#include "dataset/db.h"
#include "kernels/sample.h"
#include "teacher/engine.h"
#include "teacher/oai_client.h"

typedef struct {
    int64_t prompt_id;
    char *text;   /* the question as rendered for the model (instruction included) */
    char *gold;
} ev_q;

typedef struct {
    char *name;      /* benchmark name stored with each row */
    ev_q *q;
    size_t n;
} ev_questions;

int ev_questions_load(db_conn *db, const char *bench, ev_questions *out);
void ev_questions_free(ev_questions *qs);
/* Keeps the first n questions (all when n ≥ qs->n). */
void ev_questions_truncate(ev_questions *qs, size_t n);

typedef struct {
    const char *run, *model;   /* the names stored with each row */
    int k;                     /* samples per question, ≥ 1 */
    int64_t max_tokens;
    smp_params sampling;
    uint64_t seed;
    const tok_tokenizer *tok;  /* required */
    const ct_template *tmpl;   /* NULL: no chat template; borrowed */
    /* Called after every engine step (may be NULL): samples stored so far this call, the
     * samples this call has to generate, tokens generated. */
    void (*progress)(void *ctx, size_t done, size_t todo, int64_t tokens);
    void *progress_ctx;
    rt_comm *comm;             /* NULL or one rank: the engine alone; more: rank 0 in lockstep */
} ev_gen_opts;

typedef struct {
    size_t questions, existing, generated;
    bool comm_failed;          /* lockstep broken: the caller aborts the other ranks */
} ev_gen_report;

/* RT_EINVAL when run already has rows of a model other than model. */
int ev_run_model_check(db_conn *db, const char *run, const char *model);

int ev_generate(db_conn *db, te_engine *e, const ev_questions *qs, const ev_gen_opts *o, ev_gen_report *rep);

/* The same through an OpenAI-compatible endpoint (teacher/oai_client.h): one request per
 * sample, the question as the user message (no template, no tokenizer: o->tok and o->tmpl
 * may be NULL), seed gd_sample_seed(o->seed, prompt id, j), `model` in each request; the
 * response stored as oai_compose_text gives it (reasoning_content or inline thinking as
 * "<think>\nR\n</think>\n\nA"), n_tokens = usage.completion_tokens (NULL when absent),
 * the server's finish_reason, latency_ms = the successful attempt's wall time. Retries as the
 * client does; a fatal HTTP status stops with RT_EIO, samples that failed every retry are
 * RT_EIO at the end (the others are stored; a rerun retries them), at once when max(16,
 * 2·concurrency) samples in a row failed (the endpoint is down). */
typedef struct {
    const oai_opts *opts;
    const char *model;     /* the request's "model" */
} ev_remote;

int ev_generate_remote(db_conn *db, const ev_remote *remote, const ev_questions *qs, const ev_gen_opts *o,
                       ev_gen_report *rep);

#endif
