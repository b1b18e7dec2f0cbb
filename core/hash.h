/* core/hash.h — the 64-bit mixers every module hashes and seeds with (host and device).
 *
 * rt_mix64(z)       splitmix64's finalizer (Stafford's variant 13, as in Vigna's
 *                   splitmix64.c): a bijection on 64 bits with full avalanche.
 * rt_splitmix64(&s) the splitmix64 generator: adds the golden gamma 0x9e3779b97f4a7c15 to
 *                   the state and returns rt_mix64 of it. Seeds xoshiro, shuffles, MinHash.
 * rt_fmix64(x)      MurmurHash3's 64-bit finalizer (fmix64); a different bijection, kept for
 *                   the places whose numbers were defined with it.
 * rt_hash3(seed, stream, step) the counter-based draw the samplers share: the CPU sampler
 *                   (kernels/cpu/sample.c) and the CUDA one (kernels/cuda/ds_sample.cu) call
 *                   this same function, so request `seed`, draw `stream`, position `step`
 *                   give the same bits on both devices.
 * Pure functions of their arguments; no state, no errors. Included by .cu files too: there
 * every function is __host__ __device__.
 */
#ifndef RT_CORE_HASH_H
#define RT_CORE_HASH_H

#include <stdint.h>

#ifdef __CUDACC__
#define RT_HASH_FN static __host__ __device__ __forceinline__
#else
#define RT_HASH_FN static inline
#endif

#define RT_GOLDEN_GAMMA 0x9e3779b97f4a7c15ULL

RT_HASH_FN uint64_t rt_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

RT_HASH_FN uint64_t rt_splitmix64(uint64_t *state) { return rt_mix64(*state += RT_GOLDEN_GAMMA); }

RT_HASH_FN uint64_t rt_fmix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

RT_HASH_FN uint64_t rt_hash3(uint64_t seed, uint64_t stream, uint64_t step) {
    uint64_t h = rt_mix64(seed + RT_GOLDEN_GAMMA);
    h = rt_mix64(h ^ (stream * 0xd6e8feb86659fd93ULL + 0x632be59bd9b4e019ULL));
    return rt_mix64(h ^ (step * RT_GOLDEN_GAMMA + 0xa0761d6478bd642fULL));
}

#endif
