/* teacher/engine.h — the generation engine: one model interface over the dense
 * (teacher/dense.h) and DeepSeek-V3 (teacher/deepseek.h) forwards, requests, continuous
 * batching, n samples per prompt, sampling and stop conditions.
 *
 * te_model_load() reads config.json and opens the directory with the matching forward
 * (model_type llama / qwen2 → dense, deepseek_v3 → DeepSeek); it borrows `pool` (NULL:
 * single-threaded), which must outlive it. te_model_load_comm() is the same over the ranks
 * of `comm` (NULL, or one rank: te_model_load): with more than one rank a deepseek_v3
 * checkpoint is opened with ds_load_parallel (teacher/parallel.h: each rank loads its heads,
 * experts and vocabulary rows and the forward runs the collectives), and dense models are
 * refused on the CPU (RT_EUNSUPPORTED: they have a parallel layout on CUDA only,
 * te_model_load_opts with TE_DEVICE_CUDA). The model borrows comm, which
 * must outlive it; every rank then drives its engine in lockstep (teacher/parallel_engine.h).
 *
 * te_submit() queues a copy of a request: a prompt of token ids, n samples, at most
 * max_tokens new tokens each (clipped to the model's context), sampling parameters and a
 * seed, stop token ids (the config's eos_token_id too unless ignore_config_eos), stop
 * strings (need te_opts.tok), and whether to return logprobs (the model's log_softmax of
 * each chosen token, and top_logprobs alternatives per position).
 *
 * te_step() first feeds every running sequence its last token — one batched forward over a
 * paged KV cache (teacher/kvcache.h; dn_forward, or ds_forward_paged with latent rows) — and
 * draws the next; then it admits queued requests, in order, while the batch has room
 * (max_batch sequences; a request larger than max_batch is admitted alone) and the cache can
 * hold them: each admitted prompt runs through the model once (in chunks of prefill_chunk
 * tokens), its n samples share the prompt's blocks (forked; a shared block is copied when a
 * sample first writes into it) and draw their first token. Requests join and leave between
 * steps. A finished sample (stop token — kept as the last id —, stop string, or max_tokens:
 * finish "stop" or "length") is returned from the step that finished it; the caller frees
 * results with te_results_free().
 *
 * Memory bound: the cache holds cache_tokens positions in blocks of block_size. A request
 * is admitted only when the blocks it can ever need fit beside those reserved by running
 * requests — ceil((prompt + max_tokens) / bs) for the first sample, that minus the prompt's
 * full blocks for each other one — so a running request never runs out of cache and nothing
 * is preempted; the others wait in the queue. A request that could never fit is refused by
 * te_submit (RT_ERANGE).
 *
 * Streaming and cancelling: te_opts.on_token (NULL: none) is called from te_step, on the
 * stepping thread, once for every token drawn, right after it is appended (the token that
 * finishes a sample included, before that sample's result is made); the te_token it gets and
 * its arrays are valid only during the call. te_cancel() drops every sequence and queued copy
 * of the requests with a tag: their cache blocks and reservation are freed at once, and no
 * result is returned for them.
 *
 * Determinism: sample j of a request draws its t-th token with u = smp_uniform(seed, j, t)
 * (kernels/sample.h) from its own logits, so a request gives the same tokens alone, beside
 * other requests, or as part of n > 1 (sample j of n equals sample j of any other n > j).
 * Errors: load's, RT_EINVAL (bad request), RT_ERANGE (cannot fit), RT_ENOMEM.
 */
#ifndef RT_TEACHER_ENGINE_H
#define RT_TEACHER_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/comm.h"
#include "core/model_config.h"
#include "core/threadpool.h"
#include "core/tokenizer.h"
#include "kernels/sample.h"

typedef struct te_model te_model;     /* opaque; owned by the caller of te_model_load */
typedef struct te_engine te_engine;   /* opaque; owned by the caller of te_engine_create */

#define TE_MAX_TOP_LOGPROBS 20

int te_model_load(const char *dir, tp_pool *pool, te_model **out);
int te_model_load_comm(const char *dir, tp_pool *pool, rt_comm *comm, te_model **out);

/* Where the forward runs. TE_DEVICE_CUDA (teacher/dense_cuda.h): a dense Llama/Qwen model's
 * weights go to the GPU in bf16 (as stored, or converted per tensor), and the forward and the
 * KV cache live there; logits come back to the host, where sampling stays. The GPU's memory
 * plan sizes the cache: te_engine_create takes all of it when cache_tokens is 0 and clips a
 * larger cache_tokens to it. A model that does not fit is refused at load with one line.
 * A deepseek_v3 model runs on teacher/ds_cuda.h (FP8 weights stay FP8; sampling on the device).
 * With comm over P > 1 ranks (mpirun, one GPU per rank: gpu < 0 picks the local rank) the model
 * is split over them — dense: tensor parallel (teacher/dense_cuda.h); deepseek_v3: tensor-parallel
 * attention, dense MLPs and vocabulary, expert-parallel MoE (teacher/ds_cuda.h) — and every rank
 * drives its engine in lockstep (teacher/parallel_engine.h), as for the CPU's parallel DeepSeek-V3.
 * RT_EUNSUPPORTED (one line saying which): a CPU-only build, no usable GPU, a split the layout
 * cannot make, shapes or dtypes the kernels do not take. */
typedef enum { TE_DEVICE_CPU = 0, TE_DEVICE_CUDA = 1 } te_device;
typedef struct {
    tp_pool *pool;                  /* CPU threads (NULL: one) */
    rt_comm *comm;                  /* NULL or one rank: a single process */
    te_device device;
    int gpu;                        /* CUDA device index; < 0: the process's local rank */
    double gpu_memory_fraction;     /* share of the GPU's memory the engine may take (0: 0.9) */
    bool no_cuda_graphs;            /* cuda: decode steps run eagerly, not as CUDA graphs */
} te_load_opts;
int te_model_load_opts(const char *dir, const te_load_opts *o, te_model **out);
/* "cpu" / "cuda" → *out; RT_EINVAL otherwise. */
int te_device_parse(const char *s, te_device *out);
const char *te_device_name(te_device d);
void te_model_free(te_model *m);   /* NULL is fine */
const mc_config *te_model_config(const te_model *m);
/* Bytes of weights the model holds in memory (this rank's part; host or device). */
size_t te_model_resident_bytes(const te_model *m);
bool te_model_is_deepseek(const te_model *m);

typedef struct {
    const int32_t *prompt;          /* [n_prompt] ids (copied) */
    int64_t n_prompt;
    int n_samples;                  /* ≥ 1 */
    int64_t max_tokens;             /* ≥ 1 */
    smp_params sampling;
    uint64_t seed;
    const int32_t *stop_ids;        /* extra stop token ids (copied), n_stop_ids of them */
    int n_stop_ids;
    bool ignore_config_eos;         /* do not stop on the config's eos_token_id */
    const char *const *stop;        /* stop strings (copied), n_stop of them */
    int n_stop;
    bool logprobs;                  /* return each chosen token's logprob */
    int top_logprobs;               /* 0..TE_MAX_TOP_LOGPROBS alternatives per position */
    uint64_t tag;                   /* the caller's id, returned with each result */
} te_request;

typedef enum { TE_FINISH_LENGTH = 0, TE_FINISH_STOP } te_finish;

typedef struct {
    uint64_t tag;
    int sample;                     /* 0..n_samples-1 */
    int32_t *ids;                   /* [n_ids] generated ids (a stop token is included) */
    int64_t n_ids;
    float *logprobs;                /* [n_ids] or NULL */
    int32_t *top_ids;               /* [n_ids, top_k] or NULL */
    float *top_logprobs;            /* [n_ids, top_k] or NULL */
    int top_k;
    te_finish finish;
    int stop_string;                /* index of the stop string that matched, else -1 */
    int64_t n_prompt;
} te_result;

typedef struct {
    uint64_t tag;
    int sample;
    int64_t index;                  /* position in the sample's output, 0-based */
    int32_t id;
    bool has_logprob;               /* the request asked for logprobs */
    float logprob;
    const int32_t *top_ids;         /* [top_k] or NULL */
    const float *top_logprobs;      /* [top_k] or NULL */
    int top_k;
} te_token;

typedef struct {
    int max_batch;                  /* sequences per step (0: 16) */
    int64_t cache_tokens;           /* KV positions over all sequences (0: 65536) */
    int64_t block_size;             /* positions per cache block (0: 16) */
    int64_t prefill_chunk;          /* prompt tokens per forward (0: 512) */
    const tok_tokenizer *tok;       /* borrowed; needed for stop strings; when given, only ids
                                       it names are ever drawn (a padded vocabulary's extra
                                       rows and any id without a token are masked out) */
    void (*on_token)(void *user, const te_token *t);   /* NULL: none (see above) */
    void *user;
} te_opts;

typedef struct {
    int64_t prompt_tokens, generated_tokens, steps;
    int running, queued;            /* sequences running, requests queued */
    int64_t blocks_reserved, blocks_total;
    int64_t blocks_in_use;          /* cache blocks holding positions now */
} te_stats;

int te_engine_create(te_model *m, const te_opts *opts, te_engine **out);
void te_engine_free(te_engine *e);   /* NULL is fine; drops unfinished requests */

int te_submit(te_engine *e, const te_request *r);
int te_step(te_engine *e, te_result **results, size_t *n_results);
/* Drops the requests tagged tag (queued or running); returns how many sequences and queued
 * requests it dropped (0: none had that tag). */
int te_cancel(te_engine *e, uint64_t tag);
bool te_busy(const te_engine *e);    /* requests queued or running */
void te_stats_get(const te_engine *e, te_stats *s);
void te_results_free(te_result *r, size_t n);

#endif
