/* kernels/cpu/yarn.c — YaRN rope frequencies and the interleaved rotation (contract in kernels/rope.h). */
#include "kernels/rope.h"

#include <math.h>

#include "core/status.h"

double yarn_mscale(double scale, double m) { return scale <= 1.0 ? 1.0 : 0.1 * m * log(scale) + 1.0; }

/* Dimension index at which a wavelength makes num_rot rotations over max_pos positions. */
static double correction_dim(double num_rot, double dim, double base, double max_pos) {
    return dim * log(max_pos / (num_rot * 2.0 * M_PI)) / (2.0 * log(base));
}

int yarn_init(const mc_rope *r, int64_t dim, float *inv_freq, float *cs_scale) {
    if (dim <= 0 || dim % 2 || dim > YARN_MAX_DIM) return rt_fail(RT_EINVAL, "rope dim %lld must be even and <= %d", (long long)dim, YARN_MAX_DIM);
    if (!(r->theta > 0)) return rt_fail(RT_EINVAL, "rope theta %g must be positive", r->theta);
    int64_t half = dim / 2;
    float base = (float)r->theta;
    if (r->type == MC_ROPE_DEFAULT) {
        for (int64_t i = 0; i < half; i++) inv_freq[i] = 1.0f / powf(base, (float)(2 * i) / (float)dim);
        *cs_scale = 1.0f;
        return 0;
    }
    if (r->type != MC_ROPE_YARN)
        return rt_fail(RT_EUNSUPPORTED, "rope type %s is not supported for DeepSeek-V3 (default, yarn)", mc_rope_name(r->type));
    double factor = r->factor;
    double af = r->attention_factor;
    if (af == 0.0) {
        if (r->mscale != 0.0 && r->mscale_all_dim != 0.0)
            af = yarn_mscale(factor, r->mscale) / yarn_mscale(factor, r->mscale_all_dim);
        else
            af = yarn_mscale(factor, 1.0);
    }
    double beta_fast = r->beta_fast != 0.0 ? r->beta_fast : 32.0, beta_slow = r->beta_slow != 0.0 ? r->beta_slow : 1.0;
    double omax = (double)r->original_max_position_embeddings;
    double low = floor(correction_dim(beta_fast, (double)dim, r->theta, omax));
    double high = ceil(correction_dim(beta_slow, (double)dim, r->theta, omax));
    if (low < 0) low = 0;
    if (high > (double)(dim - 1)) high = (double)(dim - 1);
    if (low == high) high += 0.001;
    float flow = (float)low, fspan = (float)(high - low), ffac = (float)factor;
    for (int64_t i = 0; i < half; i++) {
        float pf = powf(base, (float)(2 * i) / (float)dim);
        float extra = 1.0f / pf, inter = 1.0f / (ffac * pf);
        float ramp = ((float)i - flow) / fspan;
        ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
        float ef = 1.0f - ramp;             /* share of the extrapolated (unscaled) frequency */
        inv_freq[i] = inter * (1.0f - ef) + extra * ef;
    }
    *cs_scale = (float)af;
    return 0;
}

double yarn_softmax_scale(const mc_rope *r, int64_t qk_head_dim) {
    double s = 1.0 / sqrt((double)qk_head_dim);
    if (r->type != MC_ROPE_DEFAULT && r->mscale_all_dim != 0.0) {
        double m = yarn_mscale(r->factor, r->mscale_all_dim);
        s = s * m * m;
    }
    return s;
}

void yarn_tables(float *cos_t, float *sin_t, const int32_t *pos, int64_t T, const float *inv_freq, int64_t half,
                 float cs_scale) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < half; i++) {
            float a = (float)pos[t] * inv_freq[i];
            cos_t[t * half + i] = cosf(a) * cs_scale;
            sin_t[t * half + i] = sinf(a) * cs_scale;
        }
}

typedef struct {
    float *x;
    int64_t row_stride, H, vec_stride, dim;
    const float *cos_t, *sin_t;
    bool interleaved;
} rope_ctx;

static void rope_rows(void *p, size_t begin, size_t end, int thread) {
    const rope_ctx *c = p;
    int64_t half = c->dim / 2;
    float tmp[YARN_MAX_DIM];
    for (size_t t = begin; t < end; t++) {
        const float *cs = c->cos_t + (int64_t)t * half, *sn = c->sin_t + (int64_t)t * half;
        for (int64_t h = 0; h < c->H; h++) {
            float *v = c->x + (int64_t)t * c->row_stride + h * c->vec_stride;
            for (int64_t i = 0; i < c->dim; i++) tmp[i] = v[i];
            for (int64_t i = 0; i < half; i++) {
                float a = c->interleaved ? tmp[2 * i] : tmp[i];
                float b = c->interleaved ? tmp[2 * i + 1] : tmp[i + half];
                v[i] = a * cs[i] - b * sn[i];
                v[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
}

void yarn_rope_apply(float *x, int64_t T, int64_t row_stride, int64_t H, int64_t vec_stride, int64_t dim,
                     const float *cos_t, const float *sin_t, bool interleaved, tp_pool *pool) {
    if (T <= 0) return;
    rope_ctx c = {x, row_stride, H, vec_stride, dim, cos_t, sin_t, interleaved};
    tp_parallel_for(pool, (size_t)T, rope_rows, &c);
}
