/* bench/lab_layer.c — kernel lab: one Qwen2.5-7B decoder layer (hidden 3584, 28 q / 4 kv heads
 * of 128, FFN 18944, q/k/v biases), forward and backward, with the student's CUDA kernels in
 * the order the trainer calls them (student/model.c's layer, on the GPU path): fused residual
 * RMSNorm, one fused QKV GEMM with the bias epilogue, RoPE and flash attention reading q/k/v in
 * place in its output (row strides), o GEMM, RMSNorm, one
 * fused gate_up GEMM [2F, D] and SwiGLU on its strided output, down GEMM; then the backward with
 * f32 weight gradients. Prints the time of the layer's forward+backward, the achieved TFLOP/s
 * (model FLOPs: 6·T·(layer matrix parameters) + the causal attention's 3.5× forward FLOPs —
 * recomputation not counted) and that as a share of the measured GEMM peak, which is the
 * model-FLOPs utilization this layer would give a training step (the LM head: lab_loss).
 * Also the per-kernel breakdown. Usage: lab_layer [tokens] [doc_len] */
#include <math.h>

#include "bench/lab_common.h"

#include "kernels/act.h"
#include "kernels/attention.h"
#include "kernels/norm.h"
#include "kernels/rope.h"

enum { D_ = 3584, HQ = 28, HKV = 4, HD = 128, F_ = 18944 };

typedef struct {
    int64_t T;
    mm_cuda_ctx *mm;
    /* weights (bf16) and their f32 gradients */
    uint16_t *wqkv, *bqkv, *wo, *wgu, *wd, *n1, *n2;   /* q/k/v fused: [(Hq+2Hkv)·hd, D] */
    float *gwqkv, *gbqkv, *gwo, *gwgu, *gwd, *gn1, *gn2;
    /* activations */
    uint16_t *res, *prev, *xn1, *qkv, *att, *tmp, *mid, *xn2, *gu, *act, *out;
    float *rstd1, *rstd2, *lse, *inv;
    int32_t *pos, *ds;
    /* gradients */
    uint16_t *dres, *dxn, *dqkv, *datt, *dgu, *dact;
    void *nws, *aws;
    double t_ms[32];
    int timing;
    cudaEvent_t ev[64];
    int nev;
} layer;

#define STEP(L, idx, call)                                                              \
    do {                                                                                \
        if ((L)->timing) cudaEventRecord((L)->ev[2 * (idx)], 0);                        \
        if (call) return 1;                                                             \
        if ((L)->timing) cudaEventRecord((L)->ev[2 * (idx) + 1], 0);                    \
    } while (0)

static const char *step_names[] = {
    "rmsnorm fwd (+residual)", "qkv GEMM (+bias)", "rope q,k", "attention fwd", "o GEMM",
    "rmsnorm fwd +residual", "gate_up GEMM", "swiglu fwd", "down GEMM",
    "down bwd (x, w)", "swiglu bwd", "gate_up bwd (x, w)", "rmsnorm bwd +residual", "o bwd (x, w)",
    "attention bwd", "rope inverse q,k", "qkv bwd (x, w, b)", "rmsnorm bwd +residual (attn)"};
#define NSTEPS 18

static int layer_fwd_bwd(void *p) {
    layer *L = (layer *)p;
    int64_t T = L->T, qd = HQ * HD, kd = HKV * HD, W = qd + 2 * kd;
    float sc = 1.0f / sqrtf((float)HD);
    attn_cuda_layout lay = {.ld_q = W, .ld_kv = W, .ld_dq = W, .ld_dkv = W};
    uint16_t *q = L->qkv, *k = L->qkv + qd, *v = L->qkv + qd + kd;
    uint16_t *dq = L->dqkv, *dk = L->dqkv + qd, *dv = L->dqkv + qd + kd;
    mm_cuda_ctx *m = L->mm;
    /* forward: res += prev (the last layer's output), xn1 = norm(res) */
    STEP(L, 0, rmsnorm_fwd_cuda(L->xn1, L->rstd1, L->res, L->prev, L->n1, T, D_, 1e-6f, NULL));
    STEP(L, 1, mm_linear_fwd_cuda(m, L->qkv, L->xn1, L->wqkv, L->bqkv, T, W, D_, NULL));
    STEP(L, 2, rope_apply_cuda_ld(q, W, L->pos, L->inv, T, HQ, HD, false, NULL) ||
                   rope_apply_cuda_ld(k, W, L->pos, L->inv, T, HKV, HD, false, NULL));
    STEP(L, 3, attn_fwd_cuda_ex(L->att, L->lse, q, k, v, L->ds, T, HQ, HKV, HD, sc, &lay, NULL));
    STEP(L, 4, mm_linear_fwd_cuda(m, L->tmp, L->att, L->wo, NULL, T, D_, qd, NULL));
    /* mid = res + tmp (out of place: res stays as norm 1's input for the backward) */
    STEP(L, 5, rmsnorm_residual_fwd_cuda(L->xn2, L->rstd2, L->mid, L->res, L->tmp, L->n2, T, D_, 1e-6f, NULL));
    STEP(L, 6, mm_linear_fwd_cuda(m, L->gu, L->xn2, L->wgu, NULL, T, 2 * F_, D_, NULL));
    STEP(L, 7, swiglu_fwd_cuda(L->act, L->gu, L->gu + F_, T, F_, 2 * F_, NULL));
    STEP(L, 8, mm_linear_fwd_cuda(m, L->out, L->act, L->wd, NULL, T, D_, F_, NULL));
    /* backward: dres holds ∂L/∂(layer output) = ∂L/∂mid's residual path */
    STEP(L, 9, mm_linear_bwd_x_cuda(m, L->dact, false, L->dres, L->wd, T, D_, F_, NULL) ||
                   mm_linear_bwd_w_cuda(m, L->gwd, NULL, L->dres, L->act, T, D_, F_, NULL));
    STEP(L, 10, swiglu_bwd_cuda(L->dgu, L->dgu + F_, L->dact, L->gu, L->gu + F_, T, F_, 2 * F_, NULL));
    STEP(L, 11, mm_linear_bwd_x_cuda(m, L->dxn, false, L->dgu, L->wgu, T, 2 * F_, D_, NULL) ||
                    mm_linear_bwd_w_cuda(m, L->gwgu, NULL, L->dgu, L->xn2, T, 2 * F_, D_, NULL));
    STEP(L, 12, rmsnorm_bwd_cuda(L->dres, L->gn2, L->dxn, L->mid, L->n2, L->rstd2, T, D_, L->nws, NULL));
    STEP(L, 13, mm_linear_bwd_x_cuda(m, L->datt, false, L->dres, L->wo, T, D_, qd, NULL) ||
                    mm_linear_bwd_w_cuda(m, L->gwo, NULL, L->dres, L->att, T, D_, qd, NULL));
    STEP(L, 14, attn_bwd_cuda_ex(dq, dk, dv, L->datt, L->att, L->lse, q, k, v, L->ds, T, HQ, HKV, HD, sc, &lay, L->aws,
                                 NULL));
    STEP(L, 15, rope_apply_cuda_ld(dq, W, L->pos, L->inv, T, HQ, HD, true, NULL) ||
                    rope_apply_cuda_ld(dk, W, L->pos, L->inv, T, HKV, HD, true, NULL));
    STEP(L, 16, mm_linear_bwd_x_cuda(m, L->dxn, false, L->dqkv, L->wqkv, T, W, D_, NULL) ||
                    mm_linear_bwd_w_cuda(m, L->gwqkv, L->gbqkv, L->dqkv, L->xn1, T, W, D_, NULL));
    STEP(L, 17, rmsnorm_bwd_cuda(L->dres, L->gn1, L->dxn, L->res, L->n1, L->rstd1, T, D_, L->nws, NULL));
    return 0;
}

static uint16_t *bf(int64_t n, float amp, uint64_t seed) {
    uint16_t *p = (uint16_t *)lab_alloc((size_t)n * 2);
    lab_fill_bf16(p, (size_t)n, amp, seed);
    return p;
}
static float *f32z(int64_t n) {
    float *p = (float *)lab_alloc((size_t)n * 4);
    LAB_CU(cudaMemset(p, 0, (size_t)n * 4));
    return p;
}

int main(int argc, char **argv) {
    int64_t T = argc > 1 ? atoll(argv[1]) : 8192, doc = argc > 2 ? atoll(argv[2]) : 2048;
    lab_peak pk = lab_measure_peak("lab_layer: one Qwen2.5-7B decoder layer, forward + backward");
    layer L = {0};
    L.T = T;
    int64_t qd = HQ * HD, kd = HKV * HD;
    LAB_RT(mm_cuda_ctx_create(&L.mm, 0));
    uint64_t s = 100;
    int64_t W = qd + 2 * kd;
    L.wqkv = bf(W * D_, 0.02f, s++), L.bqkv = bf(W, 0.1f, s++);
    L.wo = bf(D_ * qd, 0.02f, s++), L.wgu = bf(2 * F_ * D_, 0.02f, s++), L.wd = bf(D_ * F_, 0.02f, s++);
    L.n1 = bf(D_, 1.f, s++), L.n2 = bf(D_, 1.f, s++);
    L.gwqkv = f32z(W * D_), L.gbqkv = f32z(W), L.gwo = f32z(D_ * qd), L.gwgu = f32z(2 * F_ * D_), L.gwd = f32z(D_ * F_);
    L.gn1 = f32z(D_), L.gn2 = f32z(D_);
    L.res = bf(T * D_, 1.f, s++), L.prev = bf(T * D_, 0.1f, s++), L.xn1 = bf(T * D_, 1.f, s++);
    L.qkv = bf(T * W, 1.f, s++), L.att = bf(T * qd, 1.f, s++);
    L.tmp = bf(T * D_, 1.f, s++), L.mid = bf(T * D_, 1.f, s++), L.xn2 = bf(T * D_, 1.f, s++);
    L.gu = bf(T * 2 * F_, 1.f, s++), L.act = bf(T * F_, 1.f, s++), L.out = bf(T * D_, 1.f, s++);
    L.dres = bf(T * D_, 1e-3f, s++), L.dxn = bf(T * D_, 1.f, s++), L.dqkv = bf(T * W, 1.f, s++);
    L.datt = bf(T * qd, 1.f, s++);
    L.dgu = bf(T * 2 * F_, 1.f, s++), L.dact = bf(T * F_, 1.f, s++);
    L.rstd1 = f32z(T), L.rstd2 = f32z(T), L.lse = f32z(HQ * T), L.inv = f32z(HD / 2);
    L.nws = lab_alloc(rmsnorm_bwd_cuda_ws_bytes(T, D_)), L.aws = lab_alloc(attn_bwd_cuda_ws_bytes(T, HQ));
    L.pos = (int32_t *)lab_alloc((size_t)T * 4), L.ds = (int32_t *)lab_alloc((size_t)T * 4);
    int32_t *pos = (int32_t *)malloc((size_t)T * 4), *ds = (int32_t *)malloc((size_t)T * 4);
    double pairs = 0;
    for (int64_t t = 0; t < T; t++) ds[t] = (int32_t)(t / doc * doc), pos[t] = (int32_t)(t - ds[t]);
    for (int64_t t = 0; t < T; t++) pairs += (double)(t - ds[t] + 1);
    float inv[HD / 2];
    for (int i = 0; i < HD / 2; i++) inv[i] = (float)pow(1e6, -(double)(2 * i) / HD);
    LAB_CU(cudaMemcpy(L.pos, pos, (size_t)T * 4, cudaMemcpyHostToDevice));
    LAB_CU(cudaMemcpy(L.ds, ds, (size_t)T * 4, cudaMemcpyHostToDevice));
    LAB_CU(cudaMemcpy(L.inv, inv, sizeof inv, cudaMemcpyHostToDevice));
    free(pos), free(ds);

    double params = (double)(qd + 2 * kd) * D_ + (double)D_ * qd + 3.0 * F_ * D_;
    double flops = 6.0 * (double)T * params + 3.5 * 4.0 * HD * HQ * pairs;
    double ms = lab_time(layer_fwd_bwd, &L);
    char name[96];
    snprintf(name, sizeof name, "layer fwd+bwd T=%lld doc=%lld", (long long)T, (long long)doc);
    lab_report_flops(&pk, name, ms, flops);
    printf("  %-44s %9.0f tokens/s per layer (x layers = a model's step without head and optimizer)\n", "",
           (double)T / (ms * 1e-3));
    /* per-step breakdown (one more run with events between the steps) */
    for (int i = 0; i < 2 * NSTEPS; i++) LAB_CU(cudaEventCreate(&L.ev[i]));
    L.timing = 1;
    if (layer_fwd_bwd(&L)) return 1;
    LAB_CU(cudaDeviceSynchronize());
    printf("  breakdown of one run:\n");
    for (int i = 0; i < NSTEPS; i++) {
        float t = 0;
        LAB_CU(cudaEventElapsedTime(&t, L.ev[2 * i], L.ev[2 * i + 1]));
        printf("    %-40s %8.3f ms %5.1f%%\n", step_names[i], t, 100.0 * t / ms);
    }
    return 0;
}
