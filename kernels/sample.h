/* kernels/sample.h — token sampling from one row of logits, with a counter-based RNG.
 *
 * smp_sample() draws a token from logits [V] under smp_params, applying in order:
 *   temperature  z = logits / temperature (temperature 0: greedy, the first maximal logit);
 *   top_k        keep the k most probable tokens (0: off; ties broken by lower token id);
 *   top_p        keep the smallest set of most probable tokens (of those left) whose mass,
 *                renormalized over those left, is ≥ top_p (1: off; at least one token);
 *   min_p        keep tokens whose probability is ≥ min_p · the largest probability (0: off);
 * then draws from the kept tokens renormalized, with the uniform u ∈ [0, 1) given (inverse
 * CDF, tokens in order of decreasing probability, ties by lower id). The same logits,
 * params and u always give the same token.
 *
 * The RNG is stateless: smp_uniform(seed, stream, step) hashes the three values
 * (splitmix64 finalizers), so request `seed`, sample `stream` draws the same numbers at
 * each generation step whatever else runs beside it.
 *
 * Logprobs are those of the model's own distribution, log_softmax(logits) (temperature 1,
 * no filter: what logit distillation stores), computed in double. smp_logprob() gives one
 * token's; smp_top_logprobs() the k largest (descending, ties by lower id), k ≤ V.
 * ws: smp_workspace_bytes(V) bytes, owned by the caller. Errors: RT_EINVAL (a parameter out
 * of range: temperature < 0 or not finite, top_k < 0, top_p ∉ (0, 1], min_p ∉ [0, 1], u ∉
 * [0, 1), V < 1).
 */
#ifndef RT_KERNELS_SAMPLE_H
#define RT_KERNELS_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    float temperature;   /* 0: greedy */
    int top_k;           /* 0: off */
    float top_p;         /* 1: off */
    float min_p;         /* 0: off */
} smp_params;

#define SMP_GREEDY ((smp_params){.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f})

int smp_check(const smp_params *p);
uint64_t smp_bits(uint64_t seed, uint64_t stream, uint64_t step);
double smp_uniform(uint64_t seed, uint64_t stream, uint64_t step);   /* [0, 1), 53 bits */

size_t smp_workspace_bytes(int64_t V);
int smp_sample(const float *logits, int64_t V, const smp_params *p, double u, void *ws, int32_t *token);

/* The distribution smp_sample draws from (after the filters, renormalized) into probs [V]
 * (0 for removed tokens); for tests and diagnostics. Greedy: 1 on the chosen token. */
int smp_probs(const float *logits, int64_t V, const smp_params *p, void *ws, double *probs);

float smp_logprob(const float *logits, int64_t V, int32_t token);
void smp_top_logprobs(const float *logits, int64_t V, int k, int32_t *ids, float *logprobs);

#define SMP_TOP_MAX 20   /* the most top-k logprobs the CUDA kernel returns per row */

#ifdef RT_HAVE_CUDA
/* CUDA (kernels/cuda/ds_sample.cu): smp_sample for n rows of logits [n, V] (f32, device) at
 * once, row i with its own params[i] (device array; each must pass smp_check, which the
 * caller does on the host) and uniform smp_uniform(rng[3i], rng[3i+1], rng[3i+2]) (seed,
 * stream, step; drawn on the GPU with the same hash). tokens [n]; logprob [n] (NULL: not
 * wanted) gets smp_logprob of the drawn token. The filters are thresholds on the double
 * probabilities, found by bisection (no sort): the same kept set and the same token as
 * smp_sample unless two probabilities tie exactly at a boundary or u·total lies within
 * double rounding of a cumulative sum (sums run in another order). ws:
 * smp_cuda_workspace_bytes(n, V) (8·n·V), owned by the caller (no allocation: capturable in
 * a CUDA graph). Asynchronous on `stream`; 0, RT_EINVAL or RT_EINTERNAL. */
#ifdef __cplusplus
extern "C" {
#endif
size_t smp_cuda_workspace_bytes(int64_t n, int64_t V);
int smp_sample_cuda(const float *logits, int64_t n, int64_t V, const smp_params *params, const uint64_t *rng,
                    void *ws, size_t ws_bytes, int32_t *tokens, float *logprob, void *stream);
/* smp_top_logprobs for n rows of logits [n, V] (f32, device): ids [n, k] and logprobs [n, k]
 * (device), each row's k largest, larger logit first, ties by lower id (the CPU twin's order),
 * log_softmax over the whole row in double. 1 ≤ k ≤ min(SMP_TOP_MAX, V). No workspace, no
 * allocation (capturable). Asynchronous on `stream`; 0, RT_EINVAL or RT_EINTERNAL. */
int smp_top_logprobs_cuda(const float *logits, int64_t n, int64_t V, int k, int32_t *ids, float *logprobs,
                          void *stream);
#ifdef __cplusplus
}
#endif
#endif

#endif
