/* bench/lab_paged_prefill.c — kernel lab: prefill attention on the paged bf16 KV cache, the
 * tensor-core kernel (attn_paged_prefill_cuda) against the scalar paged kernel it replaces for
 * prefill pieces (attn_paged_fwd_cuda), same inputs, same run. Shapes: Qwen2.5-1.5B (12 q /
 * 2 kv heads × 128) and Llama-3-8B (32 / 8 × 128); a 4096-token prompt as one piece (prefix 0)
 * and its last 512-token chunk continuing a cached prefix of 3584; block size 16, the blocks of
 * the table shuffled. FLOPs: 4·hd·Hq·Σ_queries ctx (QKᵀ and PV on the unmasked keys). Each pair
 * ends with a line "  ratio <shape>  <new/old>x" (bench/first_light.sh reads the 1.5B lines).
 * Usage: lab_paged_prefill [prompt tokens] */
#include "bench/lab_common.h"

#include <math.h>

#include "kernels/attention.h"

typedef struct {
    uint16_t *q, *o, *kc;
    int32_t *tab, *seq, *ctx, *tiles;
    void *ws;
    int64_t n, Hq, Hkv, hd, bs, stride, table_ld, max_ctx, n_tiles;
    int prefill;
} p_ctx;

static int run(void *p) {
    p_ctx *c = (p_ctx *)p;
    float scale = 1.0f / sqrtf((float)c->hd);
    int64_t kd = c->Hkv * c->hd;
    if (c->prefill)
        return attn_paged_prefill_cuda(c->o, c->q, c->Hq * c->hd, c->n, c->Hq, c->Hkv, c->hd, scale, c->kc,
                                       c->kc + c->bs * kd, c->bs, c->stride, c->tab, c->table_ld, c->seq, c->ctx,
                                       c->tiles, c->n_tiles, NULL);
    return attn_paged_fwd_cuda(c->o, c->q, c->Hq * c->hd, c->n, c->Hq, c->Hkv, c->hd, scale, c->kc, c->kc + c->bs * kd,
                               c->bs, c->stride, c->tab, c->table_ld, c->seq, c->ctx, c->max_ctx, c->ws, NULL);
}

int main(int argc, char **argv) {
    int64_t P = argc > 1 ? atoll(argv[1]) : 4096;
    lab_peak pk = lab_measure_peak("lab_paged_prefill: prefill attention on the paged KV cache");
    struct { const char *name; int64_t Hq, Hkv, hd; } heads[] = {{"qwen1.5b 12/2x128", 12, 2, 128},
                                                                 {"llama8b 32/8x128", 32, 8, 128}};
    int64_t chunks[] = {P, 512};
    for (size_t hi = 0; hi < 2; hi++)
        for (size_t ci = 0; ci < 2; ci++) {
            p_ctx c = {0};
            c.Hq = heads[hi].Hq, c.Hkv = heads[hi].Hkv, c.hd = heads[hi].hd, c.bs = 16;
            c.n = chunks[ci] < P ? chunks[ci] : P;
            int64_t kd = c.Hkv * c.hd, nb = (P + c.bs - 1) / c.bs, prefix = P - c.n;
            c.stride = 2 * c.bs * kd, c.table_ld = nb, c.max_ctx = P;
            int32_t *tab = malloc((size_t)nb * 4), *seq = malloc((size_t)c.n * 4), *ctx = malloc((size_t)c.n * 4);
            int32_t *tiles = malloc((size_t)c.n * 4);
            uint64_t r = 12345;
            for (int64_t b = 0; b < nb; b++) tab[b] = (int32_t)b;
            for (int64_t b = nb - 1; b > 0; b--) {
                r ^= r << 13, r ^= r >> 7, r ^= r << 17;
                int64_t j = (int64_t)(r % (uint64_t)(b + 1));
                int32_t t = tab[b];
                tab[b] = tab[j], tab[j] = t;
            }
            double work = 0;
            for (int64_t i = 0; i < c.n; i++) seq[i] = 0, ctx[i] = (int32_t)(prefix + i + 1), work += ctx[i];
            c.n_tiles = attn_paged_prefill_tiles(tiles, seq, c.n, c.Hq, c.Hkv);
            size_t nq = (size_t)(c.n * c.Hq * c.hd), pool = (size_t)(nb * c.stride);
            c.q = lab_alloc(nq * 2), c.o = lab_alloc(nq * 2), c.kc = lab_alloc(pool * 2);
            lab_fill_bf16(c.q, nq, 1.f, 3), lab_fill_bf16(c.kc, pool, 1.f, 4);
            c.tab = lab_alloc((size_t)nb * 4), c.seq = lab_alloc((size_t)c.n * 4), c.ctx = lab_alloc((size_t)c.n * 4);
            c.tiles = lab_alloc((size_t)c.n * 4);
            LAB_CU(cudaMemcpy(c.tab, tab, (size_t)nb * 4, cudaMemcpyHostToDevice));
            LAB_CU(cudaMemcpy(c.seq, seq, (size_t)c.n * 4, cudaMemcpyHostToDevice));
            LAB_CU(cudaMemcpy(c.ctx, ctx, (size_t)c.n * 4, cudaMemcpyHostToDevice));
            LAB_CU(cudaMemcpy(c.tiles, tiles, (size_t)c.n * 4, cudaMemcpyHostToDevice));
            size_t wsb = attn_paged_cuda_ws_bytes(c.n, c.Hq, c.Hkv, c.hd, c.max_ctx);
            c.ws = wsb ? lab_alloc(wsb) : NULL;
            double flops = 4.0 * (double)c.hd * (double)c.Hq * work, ms[2];
            char name[96];
            for (int v = 0; v < 2; v++) {
                c.prefill = v;
                snprintf(name, sizeof name, "%s %s n=%lld prefix=%lld", v ? "prefill mma" : "paged scalar",
                         heads[hi].name, (long long)c.n, (long long)prefix);
                ms[v] = lab_time(run, &c);
                lab_report_flops(&pk, name, ms[v], flops);
            }
            printf("  ratio %s n=%lld prefix=%lld  %.2fx\n", heads[hi].name, (long long)c.n, (long long)prefix,
                   ms[0] / ms[1]);
            cudaFree(c.q), cudaFree(c.o), cudaFree(c.kc), cudaFree(c.tab), cudaFree(c.seq), cudaFree(c.ctx);
            cudaFree(c.tiles), cudaFree(c.ws);
            free(tab), free(seq), free(ctx), free(tiles);
        }
    return 0;
}
