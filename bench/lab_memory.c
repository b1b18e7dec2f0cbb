/* bench/lab_memory.c — kernel lab: the memory-bound student kernels against the measured
 * bandwidth peak: RMSNorm forward (plain and fused with the residual add) and backward
 * (fused residual gradient), RoPE, SwiGLU forward/backward (separate and fused gate_up
 * layouts), embedding forward/backward, AdamW (with the bf16 copy), sum of squares.
 * Bytes are the minimum each kernel must move (each input read once, each output written
 * once); GB/s is that over the median time. Shapes: 8192 tokens of Qwen2.5-7B (hidden 3584,
 * FFN 18944, 28 q heads of 128) and Llama-3-8B's hidden 4096; AdamW over 1e9 parameters.
 * Usage: lab_memory [tokens] */
#include "bench/lab_common.h"

#include <math.h>

#include "kernels/act.h"
#include "kernels/embed.h"
#include "kernels/norm.h"
#include "kernels/optim.h"
#include "kernels/rope.h"

typedef struct {
    int which;
    int64_t M, D, F, H, hd, V, n_seg;
    size_t n;
    uint16_t *a, *b, *c, *d, *w;
    float *f1, *f2, *f3, *f4, *rstd, *inv;
    int32_t *ids, *pos, *order, *seg;
    void *ws;
    double *out;
    adamw_hparams h;
} m_ctx;

static int run(void *p) {
    m_ctx *c = (m_ctx *)p;
    switch (c->which) {
    case 0: return rmsnorm_fwd_cuda(c->b, c->rstd, c->a, NULL, c->w, c->M, c->D, 1e-6f, NULL);
    case 1: return rmsnorm_fwd_cuda(c->b, c->rstd, c->a, c->c, c->w, c->M, c->D, 1e-6f, NULL);
    case 2: return rmsnorm_bwd_cuda(c->d, c->f1, c->c, c->a, c->w, c->rstd, c->M, c->D, c->ws, NULL);
    case 3: return rope_apply_cuda(c->a, c->pos, c->inv, c->M, c->H, c->hd, false, NULL);
    case 4: return swiglu_fwd_cuda(c->b, c->a, c->a + c->M * c->F, c->M, c->F, c->F, NULL);
    case 5: return swiglu_fwd_cuda(c->b, c->a, c->a + c->F, c->M, c->F, 2 * c->F, NULL);
    case 6: return swiglu_bwd_cuda(c->c, c->c + c->M * c->F, c->b, c->a, c->a + c->M * c->F, c->M, c->F, c->F, NULL);
    case 7: return embed_fwd_cuda(c->b, c->a, c->ids, c->M, c->D, NULL);
    case 8: return embed_bwd_cuda(c->f1, c->b, c->ids, c->order, c->seg, c->n_seg, c->M, c->D, NULL);
    case 9: c->h.step++; return adamw_step_cuda(c->f1, c->a, c->f2, c->f3, c->f4, c->n, &c->h, 1.f, NULL);
    default: return vec_sumsq_cuda(c->out, false, c->f2, c->n, c->ws, NULL);
    }
}

int main(int argc, char **argv) {
    int64_t M = argc > 1 ? atoll(argv[1]) : 8192;
    lab_peak pk = lab_measure_peak("lab_memory: memory-bound student kernels");
    char name[96];
    int64_t Ds[] = {3584, 4096};
    for (int di = 0; di < 2; di++) {
        m_ctx c = {0};
        c.M = M, c.D = Ds[di];
        size_t n = (size_t)(M * c.D);
        c.a = (uint16_t *)lab_alloc(n * 2), c.b = (uint16_t *)lab_alloc(n * 2), c.c = (uint16_t *)lab_alloc(n * 2);
        c.d = (uint16_t *)lab_alloc(n * 2), c.w = (uint16_t *)lab_alloc((size_t)c.D * 2);
        c.f1 = (float *)lab_alloc((size_t)c.D * 4), c.rstd = (float *)lab_alloc((size_t)M * 4);
        c.ws = lab_alloc(rmsnorm_bwd_cuda_ws_bytes(M, c.D));
        lab_fill_bf16(c.a, n, 1.f, 1), lab_fill_bf16(c.c, n, 0.1f, 2), lab_fill_bf16(c.w, (size_t)c.D, 1.f, 3);
        LAB_CU(cudaMemset(c.d, 0, n * 2));
        LAB_CU(cudaMemset(c.f1, 0, (size_t)c.D * 4));
        double row = (double)n * 2;
        c.which = 0;
        snprintf(name, sizeof name, "rmsnorm fwd D=%lld M=%lld", (long long)c.D, (long long)M);
        lab_report_bytes(&pk, name, lab_time(run, &c), 2 * row);
        c.which = 1;
        snprintf(name, sizeof name, "rmsnorm fwd +residual D=%lld M=%lld", (long long)c.D, (long long)M);
        lab_report_bytes(&pk, name, lab_time(run, &c), 4 * row);
        c.which = 2;
        snprintf(name, sizeof name, "rmsnorm bwd +residual D=%lld M=%lld", (long long)c.D, (long long)M);
        lab_report_bytes(&pk, name, lab_time(run, &c), 4 * row);
        cudaFree(c.a), cudaFree(c.b), cudaFree(c.c), cudaFree(c.d), cudaFree(c.w), cudaFree(c.f1), cudaFree(c.rstd);
        cudaFree(c.ws);
    }
    {   /* RoPE on q of Qwen2.5-7B */
        m_ctx c = {0};
        c.M = M, c.H = 28, c.hd = 128;
        size_t n = (size_t)(M * c.H * c.hd);
        c.a = (uint16_t *)lab_alloc(n * 2), c.pos = (int32_t *)lab_alloc((size_t)M * 4), c.inv = (float *)lab_alloc(64 * 4);
        int32_t *pos = (int32_t *)malloc((size_t)M * 4);
        float inv[64];
        for (int64_t t = 0; t < M; t++) pos[t] = (int32_t)(t % 4096);
        for (int i = 0; i < 64; i++) inv[i] = (float)pow(1e6, -(double)(2 * i) / 128.0);
        LAB_CU(cudaMemcpy(c.pos, pos, (size_t)M * 4, cudaMemcpyHostToDevice));
        LAB_CU(cudaMemcpy(c.inv, inv, 64 * 4, cudaMemcpyHostToDevice));
        lab_fill_bf16(c.a, n, 1.f, 4);
        c.which = 3;
        snprintf(name, sizeof name, "rope q 28x128 M=%lld", (long long)M);
        lab_report_bytes(&pk, name, lab_time(run, &c), 2.0 * (double)n * 2);
        cudaFree(c.a), cudaFree(c.pos), cudaFree(c.inv);
        free(pos);
    }
    {   /* SwiGLU, F = 18944 */
        m_ctx c = {0};
        c.M = M, c.F = 18944;
        size_t n = (size_t)(M * c.F);
        c.a = (uint16_t *)lab_alloc(2 * n * 2), c.b = (uint16_t *)lab_alloc(n * 2), c.c = (uint16_t *)lab_alloc(2 * n * 2);
        lab_fill_bf16(c.a, 2 * n, 2.f, 5), lab_fill_bf16(c.b, n, 1.f, 6);
        c.which = 4;
        snprintf(name, sizeof name, "swiglu fwd F=18944 M=%lld", (long long)M);
        lab_report_bytes(&pk, name, lab_time(run, &c), 3.0 * (double)n * 2);
        c.which = 5;
        snprintf(name, sizeof name, "swiglu fwd fused gate_up F=18944 M=%lld", (long long)M);
        lab_report_bytes(&pk, name, lab_time(run, &c), 3.0 * (double)n * 2);
        c.which = 6;
        snprintf(name, sizeof name, "swiglu bwd F=18944 M=%lld", (long long)M);
        lab_report_bytes(&pk, name, lab_time(run, &c), 5.0 * (double)n * 2);
        cudaFree(c.a), cudaFree(c.b), cudaFree(c.c);
    }
    {   /* embedding, V = 151936, D = 3584 */
        m_ctx c = {0};
        c.M = M, c.D = 3584, c.V = 151936;
        size_t n = (size_t)(M * c.D), nt = (size_t)(c.V * c.D);
        c.a = (uint16_t *)lab_alloc(nt * 2), c.b = (uint16_t *)lab_alloc(n * 2), c.f1 = (float *)lab_alloc(nt * 4);
        c.ids = (int32_t *)lab_alloc((size_t)M * 4), c.order = (int32_t *)lab_alloc((size_t)M * 4);
        c.seg = (int32_t *)lab_alloc((size_t)(M + 1) * 4);
        int32_t *ids = (int32_t *)malloc((size_t)M * 4), *order = (int32_t *)malloc((size_t)M * 4);
        int32_t *seg = (int32_t *)malloc((size_t)(M + 1) * 4);
        uint64_t s = 12345;
        for (int64_t i = 0; i < M; i++) {   /* a Zipf-ish mix: half the tokens from 2000 frequent ids */
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            ids[i] = (int32_t)((i & 1) ? s % 2000 : s % (uint64_t)c.V);
        }
        c.n_seg = embed_bwd_plan(ids, M, order, seg);
        LAB_CU(cudaMemcpy(c.ids, ids, (size_t)M * 4, cudaMemcpyHostToDevice));
        LAB_CU(cudaMemcpy(c.order, order, (size_t)M * 4, cudaMemcpyHostToDevice));
        LAB_CU(cudaMemcpy(c.seg, seg, (size_t)(c.n_seg + 1) * 4, cudaMemcpyHostToDevice));
        lab_fill_bf16(c.a, nt, 1.f, 7), lab_fill_bf16(c.b, n, 1.f, 8);
        LAB_CU(cudaMemset(c.f1, 0, nt * 4));
        c.which = 7;
        snprintf(name, sizeof name, "embed fwd D=3584 M=%lld", (long long)M);
        lab_report_bytes(&pk, name, lab_time(run, &c), 2.0 * (double)n * 2);
        c.which = 8;
        snprintf(name, sizeof name, "embed bwd D=3584 M=%lld (%lld ids)", (long long)M, (long long)c.n_seg);
        lab_report_bytes(&pk, name, lab_time(run, &c), (double)n * 2 + 2.0 * (double)c.n_seg * c.D * 4);
        cudaFree(c.a), cudaFree(c.b), cudaFree(c.f1), cudaFree(c.ids), cudaFree(c.order), cudaFree(c.seg);
        free(ids), free(order), free(seg);
    }
    {   /* AdamW and the gradient norm over 1e9 parameters: p, g, m, v f32 + the bf16 copy */
        m_ctx c = {0};
        c.n = (size_t)1000000000;
        c.f1 = (float *)lab_alloc(c.n * 4), c.f2 = (float *)lab_alloc(c.n * 4), c.f3 = (float *)lab_alloc(c.n * 4);
        c.f4 = (float *)lab_alloc(c.n * 4), c.a = (uint16_t *)lab_alloc(c.n * 2);
        c.ws = lab_alloc(vec_sumsq_cuda_ws_bytes(c.n)), c.out = (double *)lab_alloc(8);
        LAB_CU(cudaMemset(c.f1, 0, c.n * 4));
        LAB_CU(cudaMemset(c.f2, 0, c.n * 4));
        LAB_CU(cudaMemset(c.f3, 0, c.n * 4));
        LAB_CU(cudaMemset(c.f4, 0, c.n * 4));
        c.h = (adamw_hparams){.lr = 1e-4, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .step = 0};
        c.which = 9;
        lab_report_bytes(&pk, "adamw f32 + bf16 copy n=1e9", lab_time(run, &c), (double)c.n * (16 + 12 + 2));
        c.which = 10;
        lab_report_bytes(&pk, "grad sumsq n=1e9", lab_time(run, &c), (double)c.n * 4);
        cudaFree(c.f1), cudaFree(c.f2), cudaFree(c.f3), cudaFree(c.f4), cudaFree(c.a), cudaFree(c.ws), cudaFree(c.out);
    }
    return 0;
}
