/* bench/lab_attention.c — kernel lab: flash attention forward and backward
 * (kernels/cuda/attention.cu) on packed documents. Variants: head dim 128 with the GQA of
 * Qwen2.5-7B (28 q / 4 kv heads) and Llama-3-8B (32 / 8), head dim 64 (16 / 4); one 8192-token
 * document, and 8192 tokens packed as 4 × 2048 and 16 × 512; the forward with query tiles of
 * 64 (the default) and 128 ("bq128": 8 warps share each K/V tile).
 * FLOPs counted as usual for causal attention: forward 4·hd·Hq·Σ_docs L(L+1)/2 (QKᵀ and PV on
 * the unmasked half), backward 2.5× that (the standard count; this backward recomputes S and
 * dP in two kernels to stay deterministic, so it executes 3.5× — the count is not inflated).
 * Usage: lab_attention [tokens] */
#include "bench/lab_common.h"

#include <math.h>

#include "kernels/attention.h"

typedef struct {
    uint16_t *q, *k, *v, *o, *dout, *dq, *dk, *dv;
    float *lse;
    void *ws;
    int32_t *ds;
    int64_t T, Hq, Hkv, hd;
    int bwd, block_q;
} a_ctx;

static int run(void *p) {
    a_ctx *c = (a_ctx *)p;
    float scale = 1.0f / sqrtf((float)c->hd);
    if (!c->bwd)
    {
        attn_cuda_layout lay = {.block_q = c->block_q};
        return attn_fwd_cuda_ex(c->o, c->lse, c->q, c->k, c->v, c->ds, c->T, c->Hq, c->Hkv, c->hd, scale, &lay, NULL);
    }
    return attn_bwd_cuda(c->dq, c->dk, c->dv, c->dout, c->o, c->lse, c->q, c->k, c->v, c->ds, c->T, c->Hq, c->Hkv,
                         c->hd, scale, c->ws, NULL);
}

int main(int argc, char **argv) {
    int64_t T = argc > 1 ? atoll(argv[1]) : 8192;
    lab_peak pk = lab_measure_peak("lab_attention: causal flash attention over packed documents (bf16 mma.sync)");
    struct { const char *name; int64_t Hq, Hkv, hd; } heads[] = {
        {"qwen7b 28/4x128", 28, 4, 128}, {"llama8b 32/8x128", 32, 8, 128}, {"hd64 16/4x64", 16, 4, 64}};
    int64_t doclens[] = {0, 2048, 512};   /* 0: one document of T */
    int32_t *ds = (int32_t *)malloc((size_t)T * 4);
    for (size_t hi = 0; hi < 3; hi++)
        for (size_t di = 0; di < 3; di++) {
            a_ctx c = {0};
            c.T = T, c.Hq = heads[hi].Hq, c.Hkv = heads[hi].Hkv, c.hd = heads[hi].hd;
            int64_t L = doclens[di] ? doclens[di] : T;
            double pairs = 0;
            for (int64_t t = 0; t < T; t++) ds[t] = (int32_t)(t / L * L);
            for (int64_t s = 0; s < T; s += L) {
                double l = (double)(T - s < L ? T - s : L);
                pairs += l * (l + 1) / 2;
            }
            size_t nq = (size_t)(T * c.Hq * c.hd), nk = (size_t)(T * c.Hkv * c.hd);
            c.q = (uint16_t *)lab_alloc(nq * 2), c.o = (uint16_t *)lab_alloc(nq * 2), c.dout = (uint16_t *)lab_alloc(nq * 2);
            c.dq = (uint16_t *)lab_alloc(nq * 2);
            c.k = (uint16_t *)lab_alloc(nk * 2), c.v = (uint16_t *)lab_alloc(nk * 2);
            c.dk = (uint16_t *)lab_alloc(nk * 2), c.dv = (uint16_t *)lab_alloc(nk * 2);
            c.lse = (float *)lab_alloc((size_t)(T * c.Hq) * 4);
            c.ws = lab_alloc(attn_bwd_cuda_ws_bytes(T, c.Hq));
            c.ds = (int32_t *)lab_alloc((size_t)T * 4);
            LAB_CU(cudaMemcpy(c.ds, ds, (size_t)T * 4, cudaMemcpyHostToDevice));
            lab_fill_bf16(c.q, nq, 1.f, 7), lab_fill_bf16(c.k, nk, 1.f, 8), lab_fill_bf16(c.v, nk, 1.f, 9);
            lab_fill_bf16(c.dout, nq, 1.f, 10);
            double fwd_flops = 4.0 * (double)c.hd * (double)c.Hq * pairs;
            char name[96];
            c.bwd = 0;
            c.block_q = 128;
            snprintf(name, sizeof name, "attn fwd bq128 %s T=%lld doc=%lld", heads[hi].name, (long long)T, (long long)L);
            lab_report_flops(&pk, name, lab_time(run, &c), fwd_flops);
            c.block_q = 64;   /* last: leaves o and lse for the backward */
            snprintf(name, sizeof name, "attn fwd %s T=%lld doc=%lld", heads[hi].name, (long long)T, (long long)L);
            lab_report_flops(&pk, name, lab_time(run, &c), fwd_flops);
            c.bwd = 1;
            snprintf(name, sizeof name, "attn bwd %s T=%lld doc=%lld", heads[hi].name, (long long)T, (long long)L);
            lab_report_flops(&pk, name, lab_time(run, &c), 2.5 * fwd_flops);
            cudaFree(c.q), cudaFree(c.o), cudaFree(c.dout), cudaFree(c.dq), cudaFree(c.k), cudaFree(c.v);
            cudaFree(c.dk), cudaFree(c.dv), cudaFree(c.lse), cudaFree(c.ws), cudaFree(c.ds);
        }
    free(ds);
    return 0;
}
