/* kernels/cpu/rope.c — rotary embeddings. */
#include "kernels/rope.h"

#include <math.h>

#include "core/status.h"

#ifndef RT_KERNELS_ONLY
int rope_inv_freq(const mc_rope *r, int64_t head_dim, float *inv_freq) {
    int64_t half = head_dim / 2;
    if (r->type == MC_ROPE_YARN) return rt_fail(RT_EUNSUPPORTED, "rope type yarn is not supported by the student");
    for (int64_t i = 0; i < half; i++) {
        /* transformers: 1 / base^(arange(0, d, 2).float() / d), in f32 */
        float e = (float)(2 * i) / (float)head_dim;
        float f = (float)(1.0 / pow(r->theta, (double)e));
        if (r->type == MC_ROPE_LINEAR) f = f / (float)r->factor;
        if (r->type == MC_ROPE_LLAMA3) {
            double old = (double)r->original_max_position_embeddings;
            double low_wl = old / r->low_freq_factor, high_wl = old / r->high_freq_factor;
            double wl = 2 * M_PI / f;
            float scaled = wl > low_wl ? f / (float)r->factor : f;
            if (!(wl < high_wl) && !(wl > low_wl)) {
                float smooth = (float)((old / wl - r->low_freq_factor) / (r->high_freq_factor - r->low_freq_factor));
                scaled = (1 - smooth) * scaled / (float)r->factor + smooth * scaled;
            }
            f = scaled;
        }
        inv_freq[i] = f;
    }
    return 0;
}
#endif

void rope_tables(float *cos_t, float *sin_t, const int32_t *pos, int64_t T, const float *inv_freq, int64_t half) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < half; i++) {
            float a = (float)pos[t] * inv_freq[i];
            cos_t[t * half + i] = cosf(a);
            sin_t[t * half + i] = sinf(a);
        }
}

typedef struct {
    float *x;
    const float *c, *s;
    int64_t H, hd;
    bool inv;
} rope_ctx;

static void apply_rows(void *p, size_t begin, size_t end, int thread) {
    const rope_ctx *r = p;
    int64_t half = r->hd / 2;
    for (size_t t = begin; t < end; t++) {
        const float *c = r->c + (int64_t)t * half, *s = r->s + (int64_t)t * half;
        for (int64_t h = 0; h < r->H; h++) {
            float *x = r->x + ((int64_t)t * r->H + h) * r->hd;
            for (int64_t i = 0; i < half; i++) {
                float a = x[i], b = x[i + half], sn = r->inv ? -s[i] : s[i];
                x[i] = a * c[i] - b * sn;
                x[i + half] = b * c[i] + a * sn;
            }
        }
    }
}

void rope_apply(float *x, const float *cos_t, const float *sin_t, int64_t T, int64_t H, int64_t head_dim,
                bool inverse, tp_pool *pool) {
    rope_ctx r = {.x = x, .c = cos_t, .s = sin_t, .H = H, .hd = head_dim, .inv = inverse};
    tp_parallel_for(pool, (size_t)T, apply_rows, &r);
}
