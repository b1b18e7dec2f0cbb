/* teacher/driver.h — the generation driver behind `retort generate --db`: the prompts of a
 * run database that still lack K samples for (teacher, params) go through the in-process
 * engine (teacher/engine.h) or a remote OpenAI-compatible endpoint (teacher/oai_client.h),
 * and every finished sample is stored in its own transaction.
 *
 * Pending work. params is canonical JSON (gd_params_json: sorted keys; temperature, top_p,
 * max_tokens, seed, system, instruction and where it applies, think_prefix; top_k and min_p
 * only when set — remotely they are sent as vLLM's "top_k" / "min_p" fields), so samples of
 * different configurations never mix. For every prompt (of `source`, or all) the indices
 * 0..K-1 not yet in samples for (prompt, teacher, params) are the work, in prompt id order.
 * A sample is inserted with db_sample_put at its index, which the UNIQUE (prompt, teacher,
 * params, sample_index) key makes idempotent: a process killed at any moment loses at most
 * the samples in flight, and a rerun generates exactly the missing ones.
 *
 * Prompts. The stored messages are sent as they are, with: `system` (when not NULL) as a
 * first system message unless the prompt has one; `instruction` appended to the last user
 * message ("\n" between) — for every prompt when instruction_all, else only for prompts whose
 * source names a math set (contains "gsm8k", "math" or "aime", case-insensitive). Local: the
 * messages are rendered with tmpl and its generation prompt, and with think_prefix
 * "<think>\n" is appended unless the rendering already ends with it (deepseek-r1's does);
 * the template's end-of-turn token stops a sample as the config's eos does. Remote: there is
 * no portable way to prefill an assistant turn, so nothing is added to the request; R1
 * servers' own templates force "<think>\n".
 *
 * Seeds. Sample j of prompt p is drawn with seed gd_sample_seed(seed, p, j) (63 bits, stored
 * in samples.seed): one request per sample (n = 1) locally and remotely ("seed" field), so a
 * sample does not depend on what else runs or on which samples were already there.
 *
 * Stored per sample: text (oai_compose_text: reasoning — reasoning_content, or inline in
 * <think>…</think> — always as "<think>\nR\n</think>\n\nA", so every path stores the same
 * shape; local text is the decoded generation after the forced prefix, special tokens
 * skipped), prompt/thinking/answer tokens, finish_reason, mean_logprob, and with
 * logprobs > 0 the top-k alternatives in sample_topk (n_tokens × k pairs of int32 id and
 * float32 logprob, little-endian, one zstd frame). Token counts: local from the engine's
 * ids (thinking = ids up to and including "</think>": its token id, or the tokens of the
 * decoded text up to it when the vocabulary has no such token); remote from usage
 * (prompt_tokens; thinking = completion_tokens_details.reasoning_tokens, answer = the rest),
 * else, when a tokenizer is given, by encoding the two parts, else thinking and answer are
 * unknown (NULL). mean_logprob: locally always (the model's log-softmax of each chosen
 * token); remotely when logprobs ≥ 0 was asked for. Remote top-k ids are known only when
 * the server spells tokens "token_id:N" (vLLM return_tokens_as_token_ids), else -1.
 *
 * Stopping. *stop (may be NULL) is polled between steps: when it becomes non-zero nothing
 * more is issued, in-flight work is dropped (nothing half-written: each sample's row is one
 * transaction), and gd_run returns 0 with rep->interrupted set.
 * A local prompt the model can never take (longer than its context, or than the cache) is
 * skipped and counted in failed; the others go on, and gd_run then returns RT_EINVAL naming
 * how many were skipped and why.
 * Lockstep (retort generate --db under mpirun). With gd_opts.comm of more than one rank, the
 * engine is rank 0's of a parallel model (te_model_load_comm) and every step goes through
 * pe_step (teacher/parallel_engine.h): the requests issued since the last step travel with
 * it, while the other ranks sit in pe_follow(). gd_run runs on rank 0 alone and, however it
 * returns, first ends the followers (pe_end) — unless pe_step itself failed: then a follower
 * may be waiting inside a collective, rep->comm_failed is set, and the caller must end the
 * job (comm_abort). Results are those of the engine alone: the samples' seeds fix them.
 * Errors: RT_EINVAL (options; prompts skipped), a fatal remote error (RT_EIO with the server's status and
 * message; everything stored stays), RT_EIO when some samples failed after every retry (the
 * others are stored; a rerun retries those) — at once when max(16, 2·concurrency) samples in a
 * row did (the endpoint is down) —, the engine's and the database's.
 */
#ifndef RT_TEACHER_DRIVER_H
#define RT_TEACHER_DRIVER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/chat_template.h"
#include "core/comm.h"
#include "core/tokenizer.h"
#include "dataset/db.h"
#include "teacher/engine.h"
#include "teacher/oai_client.h"

#define GD_R1_INSTRUCTION "Please reason step by step, and put your final answer within \\boxed{}."

typedef struct {
    size_t prompts_total, prompts_done;   /* prompts with work at the start; finished since */
    size_t samples_total, samples_done;   /* samples to generate this run; stored so far */
    size_t existing;                      /* samples already stored before this run */
    size_t retries, failed;               /* failed attempts retried; samples given up */
    int64_t tokens;                       /* generated tokens (completion tokens) */
    double elapsed_s, tokens_per_s, samples_per_s, eta_s;   /* eta_s < 0: unknown */
    bool final;                           /* the last call */
} gd_progress;

typedef struct {
    const char *teacher;        /* samples.teacher (required) */
    const char *source;         /* only prompts of this source (NULL: all) */
    int n;                      /* K samples per prompt, ≥ 1 */
    int64_t max_tokens;
    double temperature, top_p;
    int top_k;                  /* 0: off (then not in params, not sent) */
    double min_p;               /* 0: off (then not in params, not sent) */
    uint64_t seed;
    int logprobs;               /* -1 none; 0 the chosen token's; K ≤ 20 also top K */
    const char *system;         /* NULL: no system message added */
    const char *instruction;    /* NULL: none */
    bool instruction_all;       /* every prompt (else math-like sources only) */
    bool think_prefix;

    /* local (engine != NULL) */
    te_engine *engine;          /* borrowed */
    const tok_tokenizer *tok;   /* required locally; remotely optional (token counts) */
    const ct_template *tmpl;   /* borrowed; NULL: the built-in deepseek-r1 */
    int max_queue;              /* requests queued in the engine at once (0: 64) */
    rt_comm *comm;              /* NULL or one rank: the engine alone; more: rank 0 in lockstep */

    /* remote (engine == NULL) */
    const oai_opts *remote;     /* endpoint, key, concurrency, retries */
    const char *model;          /* "model" of each request */

    const volatile sig_atomic_t *stop;
    void (*progress)(void *ctx, const gd_progress *p);
    void *progress_ctx;
    double progress_every_s;    /* 0: 1 s */
} gd_opts;

typedef struct {
    gd_progress p;
    bool interrupted;
    bool comm_failed;           /* lockstep broken: the caller aborts the other ranks */
} gd_report;

uint64_t gd_sample_seed(uint64_t seed, int64_t prompt_id, int64_t sample_index);
bool gd_source_is_math(const char *source);
/* The canonical params JSON of o (*json malloc'd). */
int gd_params_json(const gd_opts *o, char **json);

int gd_run(db_conn *db, const gd_opts *o, gd_report *rep);

#endif
