/* bench/lab_gemm.c — kernel lab: the student's linear layers through cuBLASLt
 * (kernels/cuda/matmul.cu), forward (with and without the bias epilogue), input gradient
 * (beta = 1 accumulation) and weight gradient (f32, beta = 1), for the projection shapes of
 * Qwen2.5-7B (hidden 3584, 28 q / 4 kv heads of 128, FFN 18944) and Llama-3-8B (4096,
 * 32 / 8, 14336) at 8192 tokens. Prints TFLOP/s against the measured peak.
 * Usage: lab_gemm [tokens]   (LAB_REPS=n for more repetitions) */
#include "bench/lab_common.h"

typedef struct {
    mm_cuda_ctx *mm;
    uint16_t *x, *w, *b, *y, *dy, *dx;
    float *dw;
    int64_t M, N, K;
    int which;   /* 0 fwd, 1 fwd+bias, 2 bwd_x accumulate, 3 bwd_w */
} g_ctx;

static int run(void *p) {
    g_ctx *c = (g_ctx *)p;
    switch (c->which) {
    case 0: return mm_linear_fwd_cuda(c->mm, c->y, c->x, c->w, NULL, c->M, c->N, c->K, NULL);
    case 1: return mm_linear_fwd_cuda(c->mm, c->y, c->x, c->w, c->b, c->M, c->N, c->K, NULL);
    case 2: return mm_linear_bwd_x_cuda(c->mm, c->dx, true, c->dy, c->w, c->M, c->N, c->K, NULL);
    default: return mm_linear_bwd_w_cuda(c->mm, c->dw, NULL, c->dy, c->x, c->M, c->N, c->K, NULL);
    }
}

int main(int argc, char **argv) {
    int64_t M = argc > 1 ? atoll(argv[1]) : 8192;
    lab_peak pk = lab_measure_peak("lab_gemm: bf16 linear layers (cuBLASLt)");
    struct { const char *name; int64_t N, K; } shapes[] = {
        {"qwen7b qkv  3584->4608", 4608, 3584}, {"qwen7b o    3584->3584", 3584, 3584},
        {"qwen7b gate_up 3584->37888", 37888, 3584}, {"qwen7b down 18944->3584", 3584, 18944},
        {"llama8b qkv 4096->6144", 6144, 4096}, {"llama8b gate_up 4096->28672", 28672, 4096},
        {"llama8b down 14336->4096", 4096, 14336},
    };
    static const char *ops[] = {"fwd", "fwd+bias", "bwd_x+=", "bwd_w f32+="};
    g_ctx c = {0};
    LAB_RT(mm_cuda_ctx_create(&c.mm, 0));
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        c.M = M, c.N = shapes[s].N, c.K = shapes[s].K;
        c.x = (uint16_t *)lab_alloc((size_t)(M * c.K) * 2), c.dx = (uint16_t *)lab_alloc((size_t)(M * c.K) * 2);
        c.w = (uint16_t *)lab_alloc((size_t)(c.N * c.K) * 2), c.b = (uint16_t *)lab_alloc((size_t)c.N * 2);
        c.y = (uint16_t *)lab_alloc((size_t)(M * c.N) * 2), c.dy = (uint16_t *)lab_alloc((size_t)(M * c.N) * 2);
        c.dw = (float *)lab_alloc((size_t)(c.N * c.K) * 4);
        lab_fill_bf16(c.x, (size_t)(M * c.K), 1.f, 3), lab_fill_bf16(c.w, (size_t)(c.N * c.K), 0.02f, 4);
        lab_fill_bf16(c.dy, (size_t)(M * c.N), 1.f, 5), lab_fill_bf16(c.b, (size_t)c.N, 1.f, 6);
        LAB_CU(cudaMemset(c.dx, 0, (size_t)(M * c.K) * 2));
        LAB_CU(cudaMemset(c.dw, 0, (size_t)(c.N * c.K) * 4));
        for (int op = 0; op < 4; op++) {
            c.which = op;
            char name[96];
            snprintf(name, sizeof name, "%s %s M=%lld", shapes[s].name, ops[op], (long long)M);
            lab_report_flops(&pk, name, lab_time(run, &c), 2.0 * (double)M * (double)c.N * (double)c.K);
        }
        cudaFree(c.x), cudaFree(c.dx), cudaFree(c.w), cudaFree(c.b), cudaFree(c.y), cudaFree(c.dy), cudaFree(c.dw);
    }
    mm_cuda_ctx_free(c.mm);
    return 0;
}
