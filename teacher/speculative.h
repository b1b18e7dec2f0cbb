/* teacher/speculative.h — greedy draft-and-verify decoding with DeepSeek-V3's MTP layer.
 *
 * sd_greedy() generates up to max_new tokens after a prompt, greedily, and returns exactly
 * the tokens of plain greedy decoding (each emitted token is the argmax of the main model's
 * logits given the tokens before it); the MTP layer only proposes. Each step:
 *   draft   the MTP layer (ds_mtp_forward) runs on the (hidden state, next token) pairs it
 *           has not seen — position i pairs the main model's final hidden state h_i with
 *           token i+1 — and its last row's argmax d is the guess for the token after the
 *           pending one;
 *   verify  the main model runs [pending, d] in one forward: if its argmax after `pending`
 *           is d, both d and the argmax after d are emitted (2 tokens for one main forward),
 *           else its own argmax is emitted and the cache rewinds over d (ds_forward with an
 *           earlier position).
 * oracle (optional; for tests of the accept and reject paths and of the drafts) sees each
 * draft: oracle(ctx, pos, &d) gets in d the MTP layer's guess for the token at position pos
 * (−1 without an MTP layer) and may replace it. The model must have its MTP layer loaded
 * (ds_load_opts.load_mtp) unless an oracle is given. Generation stops after max_new
 * tokens or at a stop id (kept). out [max_new] (caller's); *n_out tokens written; stats
 * count verify steps, drafts and accepted drafts.
 * Errors: RT_EINVAL (no MTP layer, empty prompt, max_new < 1), ds_forward's, RT_ENOMEM.
 *
 * One accept/reject loop serves both engines: sd_run() drives it through an sd_ops table (the
 * main forward with hidden states out, the MTP forward, the rewind), which sd_greedy fills
 * with the CPU engine (ds_forward / ds_mtp_forward on a contiguous ds_cache) and
 * sd_greedy_cuda with the GPU engine (teacher/ds_cuda_mtp.c: the main model's passes and the
 * MTP layer on the device over the paged latent cache; the model needs dsc_load_opts.load_mtp
 * unless an oracle is given). sd_greedy_cuda initializes the model's cache (dsc_cache_init,
 * blocks of 16; what it held is forgotten) and uses it alone for the call; its tokens are
 * plain greedy decoding's on the GPU engine. Over P > 1 ranks every rank calls it with the same
 * arguments (its collectives are inside; an oracle must answer alike on every rank).
 * Errors as sd_greedy's, and dsc_forward's.
 */
#ifndef RT_TEACHER_SPECULATIVE_H
#define RT_TEACHER_SPECULATIVE_H

#include <stdbool.h>
#include <stdint.h>

#include "teacher/deepseek.h"

typedef struct {
    int64_t steps, drafted, accepted;
} sd_stats;

typedef int (*sd_oracle)(void *ctx, int64_t pos, int32_t *draft);

/* An engine for sd_run. forward runs tokens [n] at positions pos0, … of the one sequence (pos0 ≤
 * the cached length; less rewinds: the rows from pos0 on are forgotten, then rewritten) and writes
 * logits — all_logits: [n, vocab], else the last row's [vocab] — and hidden [n, hidden] (the final
 * normalized hidden states, f32). mtp (NULL: no MTP layer) runs the MTP layer on rows (hidden[i],
 * next[i]) at positions pos0 + i (all below the main cached length) and writes the last row's
 * logits [vocab]. Both return 0 or an RT_E… code. */
typedef struct {
    int64_t vocab, hidden;
    int (*forward)(void *ctx, const int32_t *tokens, int64_t pos0, int64_t n, bool all_logits, float *logits,
                   float *hidden);
    int (*mtp)(void *ctx, const float *hidden, const int32_t *next, int64_t pos0, int64_t n, float *logits);
} sd_ops;

int sd_run(const sd_ops *ops, void *ctx, const int32_t *prompt, int64_t n_prompt, int64_t max_new,
           const int32_t *stop_ids, int n_stop, sd_oracle oracle, void *oracle_ctx, int32_t *out, int64_t *n_out,
           sd_stats *stats);

int sd_greedy(ds_model *m, const int32_t *prompt, int64_t n_prompt, int64_t max_new, const int32_t *stop_ids,
              int n_stop, sd_oracle oracle, void *oracle_ctx, int32_t *out, int64_t *n_out, sd_stats *stats);

typedef struct dsc_model dsc_model;   /* teacher/ds_cuda.h */
int sd_greedy_cuda(dsc_model *m, const int32_t *prompt, int64_t n_prompt, int64_t max_new, const int32_t *stop_ids,
                   int n_stop, sd_oracle oracle, void *oracle_ctx, int32_t *out, int64_t *n_out, sd_stats *stats);

#endif
