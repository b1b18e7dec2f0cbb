/* bench/lab_loss.c — kernel lab: the fused, chunked LM head + cross-entropy
 * (kernels/cuda/loss.cu) at the size: 151,936-token vocabulary (Qwen2.5), hidden
 * 3584, 32768 tokens (override: lab_loss [tokens]); chunk sizes 1024, 2048 and 4096 rows, and
 * the loss alone. FLOPs: the three GEMMs, 3·2·M·V·D (1·2·M·V·D loss only). Also prints the
 * device memory the chunk's logits take, against the 19.9 GB the full f32 logits would. */
#include "bench/lab_common.h"

#include "kernels/loss.h"

typedef struct {
    ce_cuda_ws *ws;
    uint16_t *h, *w, *dh;
    float *dw;
    int32_t *target;
    double *loss;
    int64_t M;
    int grad;
} l_ctx;

static int run(void *p) {
    l_ctx *c = (l_ctx *)p;
    return ce_fused_cuda(c->loss, c->grad ? c->dh : NULL, c->grad ? c->dw : NULL, c->h, c->w, c->target, NULL, c->M,
                         c->M, 1.0f / (float)c->M, c->ws, NULL);
}

int main(int argc, char **argv) {
    int64_t M = argc > 1 ? atoll(argv[1]) : 32768, V = 151936, D = 3584;
    lab_peak pk = lab_measure_peak("lab_loss: fused chunked LM head + cross-entropy");
    l_ctx c = {0};
    c.M = M;
    c.h = (uint16_t *)lab_alloc((size_t)(M * D) * 2), c.dh = (uint16_t *)lab_alloc((size_t)(M * D) * 2);
    c.w = (uint16_t *)lab_alloc((size_t)(V * D) * 2), c.dw = (float *)lab_alloc((size_t)(V * D) * 4);
    c.target = (int32_t *)lab_alloc((size_t)M * 4), c.loss = (double *)lab_alloc(8);
    lab_fill_bf16(c.h, (size_t)(M * D), 1.f, 1), lab_fill_bf16(c.w, (size_t)(V * D), 0.02f, 2);
    LAB_CU(cudaMemset(c.dw, 0, (size_t)(V * D) * 4));
    int32_t *t = (int32_t *)malloc((size_t)M * 4);
    for (int64_t i = 0; i < M; i++) t[i] = (int32_t)((i * 7919) % V);
    LAB_CU(cudaMemcpy(c.target, t, (size_t)M * 4, cudaMemcpyHostToDevice));
    free(t);
    int64_t chunks[] = {1024, 2048, 4096};
    for (int ci = 0; ci < 3; ci++) {
        LAB_RT(ce_cuda_ws_create(&c.ws, chunks[ci], V, D));
        char name[96];
        c.grad = 1;
        snprintf(name, sizeof name, "ce fwd+bwd V=%lld D=%lld M=%lld chunk=%lld", (long long)V, (long long)D,
                 (long long)M, (long long)chunks[ci]);
        lab_report_flops(&pk, name, lab_time(run, &c), 6.0 * (double)M * V * D);
        c.grad = 0;
        snprintf(name, sizeof name, "ce loss only M=%lld chunk=%lld", (long long)M, (long long)chunks[ci]);
        lab_report_flops(&pk, name, lab_time(run, &c), 2.0 * (double)M * V * D);
        printf("  %-44s %9.2f GB of chunk logits (f32) + gradient (bf16); full logits would be %.1f GB\n", "",
               (double)chunks[ci] * V * 6 / 1e9, (double)M * V * 4 / 1e9);
        ce_cuda_ws_free(c.ws);
    }
    return 0;
}
