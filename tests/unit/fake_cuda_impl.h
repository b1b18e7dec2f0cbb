/* tests/unit/fake_cuda_impl.h — the CPU stand-ins behind tests/unit/fake_cuda.h: the CUDA
 * runtime (device memory is host memory, NaN-poisoned on allocation and counted: fake_in_use,
 * fake_peak, fake_mallocs; cudaMemGetInfo reports fake_total_bytes, which a test may shrink, and
 * cudaMalloc fails beyond it; streams and events do nothing), every kernel entry point
 * student/gpu_train.c and teacher/dense_cuda.c call (the kernels' CPU twins on bf16-rounded
 * inputs and outputs, strides honoured), and NCCL as the host communicator (bf16 all-gathers
 * moved as int32 pairs). Included once, after the code under test, by
 * tests/unit/test_gpu_train_fake.c, tests/unit/test_dense_cuda_fake.c and
 * tests/tools/gpu_train_fake_dp.c; FAKE_CHECK(cond) asserts what the caller must hand the kernels
 * (defined by the includer). */
#ifndef RT_TESTS_FAKE_CUDA_IMPL_H
#define RT_TESTS_FAKE_CUDA_IMPL_H

#include <stdint.h>

/* ---- the runtime ------------------------------------------------------------------------ */

static size_t fake_in_use, fake_mallocs;
static size_t fake_peak;   /* the most fake_in_use has been since the last reset */
static size_t fake_total_bytes = (size_t)80 << 30;

cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "fake CUDA error"; }
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    (void)flags;
    *s = (cudaStream_t)malloc(1);
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) { free(s); return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t s) { (void)s; return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
    (void)flags;
    *e = (cudaEvent_t)malloc(1);
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) { free(e); return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) { (void)e, (void)s; return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t e) { (void)e; return cudaSuccess; }
/* host: pinned host memory (cudaMallocHost), not device memory, so not counted */
static cudaError_t fake_alloc(void **p, size_t n, int host) {
    if (!host && fake_in_use + n > fake_total_bytes) return cudaErrorMemoryAllocation;
    size_t *h = malloc(n + 64);
    if (!h) return cudaErrorMemoryAllocation;
    h[0] = n;
    h[1] = (size_t)host;
    if (!host) {
        fake_in_use += n;
        fake_mallocs++;
        if (fake_in_use > fake_peak) fake_peak = fake_in_use;
    }
    memset((char *)h + 64, 0xff, n);   /* NaN in f32 and bf16: a read before a write shows */
    *p = (char *)h + 64;
    return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t n) { return fake_alloc(p, n, 0); }
cudaError_t cudaMallocHost(void **p, size_t n) { return fake_alloc(p, n, 1); }
cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    size_t *h = (size_t *)((char *)p - 64);
    if (!h[1]) fake_in_use -= h[0];
    free(h);
    return cudaSuccess;
}
cudaError_t cudaFreeHost(void *p) { return cudaFree(p); }
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind k) { (void)k; memmove(d, s, n); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st) {
    (void)st;
    return cudaMemcpy(d, s, n, k);
}
cudaError_t cudaMemset(void *p, int v, size_t n) { memset(p, v, n); return cudaSuccess; }
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t st) { (void)st; return cudaMemset(p, v, n); }
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b) {
    *total_b = fake_total_bytes;
    *free_b = *total_b - fake_in_use;
    return cudaSuccess;
}

/* ---- trainer: stream ordering and the allocator's peak ---------------------------------- */

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags) { (void)s, (void)e, (void)flags; return cudaSuccess; }
size_t fake_cuda_peak_bytes(void) { return fake_peak; }
void fake_cuda_peak_reset(void) { fake_peak = fake_in_use; }

/* ---- the kernels, as their CPU twins on bf16 values ---------------------------------- */

static float *up(const uint16_t *x, size_t n) {   /* bf16 → a fresh f32 array */
    float *f = malloc((n ? n : 1) * sizeof(float));
    cvt_bf16_to_f32(x, f, n);
    return f;
}
static void down(float *f, uint16_t *x, size_t n) {   /* f32 → bf16, frees f */
    cvt_f32_to_bf16(f, x, n);
    free(f);
}
/* rows of `w` elements, `ld` apart → dense f32, and back */
static float *up_ld(const uint16_t *x, int64_t rows, int64_t w, int64_t ld) {
    float *f = malloc((size_t)(rows * w) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) cvt_bf16_to_f32(x + r * ld, f + r * w, (size_t)w);
    return f;
}
static void down_ld(float *f, uint16_t *x, int64_t rows, int64_t w, int64_t ld) {
    for (int64_t r = 0; r < rows; r++) cvt_f32_to_bf16(f + r * w, x + r * ld, (size_t)w);
    free(f);
}

/* what the real kernels refuse (their host-side checks) or assume (16-byte vectors of bf16
 * and f32), asserted here so the trainer's arguments would pass on the device too */
#define A16(p) FAKE_CHECK(((uintptr_t)(const void *)(p) & 15) == 0)

struct mm_cuda_ctx { int unused; };
struct ce_cuda_ws { ce_workspace ws; size_t dev; };

int mm_cuda_ctx_create(mm_cuda_ctx **out, size_t workspace_bytes) {
    (void)workspace_bytes;
    *out = calloc(1, sizeof **out);
    return 0;
}
void mm_cuda_ctx_free(mm_cuda_ctx *c) { free(c); }
int mm_linear_fwd_cuda(mm_cuda_ctx *c, uint16_t *y, const uint16_t *x, const uint16_t *w, const uint16_t *b, int64_t M,
                       int64_t N, int64_t K, void *stream) {
    (void)c, (void)stream;
    float *xf = up(x, (size_t)(M * K)), *wf = up(w, (size_t)(N * K)), *bf = b ? up(b, (size_t)N) : NULL;
    float *yf = malloc((size_t)(M * N) * sizeof(float));
    mm_linear_fwd(yf, xf, wf, bf, M, N, K, NULL);
    down(yf, y, (size_t)(M * N));
    free(xf), free(wf), free(bf);
    return 0;
}
int mm_linear_bwd_x_cuda(mm_cuda_ctx *c, uint16_t *dx, bool acc, const uint16_t *dy, const uint16_t *w, int64_t M,
                         int64_t N, int64_t K, void *stream) {
    (void)c, (void)stream;
    float *dyf = up(dy, (size_t)(M * N)), *wf = up(w, (size_t)(N * K)), *dxf = up(dx, (size_t)(M * K));
    mm_linear_bwd_x(dxf, acc, dyf, wf, M, N, K, NULL);
    down(dxf, dx, (size_t)(M * K));
    free(dyf), free(wf);
    return 0;
}
int mm_linear_bwd_w_cuda(mm_cuda_ctx *c, float *dw, float *db, const uint16_t *dy, const uint16_t *x, int64_t M,
                         int64_t N, int64_t K, void *stream) {
    (void)c, (void)stream;
    float *dyf = up(dy, (size_t)(M * N)), *xf = up(x, (size_t)(M * K));
    mm_linear_bwd_w(dw, db, dyf, xf, M, N, K, NULL);
    free(dyf), free(xf);
    return 0;
}
int rmsnorm_residual_fwd_cuda(uint16_t *y, float *rstd, uint16_t *sum, const uint16_t *x, const uint16_t *add,
                              const uint16_t *w, int64_t M, int64_t D, float eps, void *stream) {
    (void)stream;
    FAKE_CHECK(D % 8 == 0 && D <= 16384);
    A16(y); A16(sum); A16(x); A16(w);
    if (add) A16(add);
    size_t n = (size_t)(M * D);
    float *s = up(x, n), *wf = up(w, (size_t)D), *yf = malloc(n * sizeof(float));
    if (add) {
        float *af = up(add, n);
        for (size_t i = 0; i < n; i++) s[i] += af[i];
        free(af);
    }
    uint16_t *sb = malloc(n * 2);
    cvt_f32_to_bf16(s, sb, n);   /* the norm reads the stored, rounded sum */
    cvt_bf16_to_f32(sb, s, n);
    memcpy(sum, sb, n * 2);
    free(sb);
    rmsnorm_fwd(yf, rstd, s, wf, M, D, eps, NULL);
    down(yf, y, n);
    free(s), free(wf);
    return 0;
}
int rmsnorm_fwd_cuda(uint16_t *y, float *rstd, uint16_t *res, const uint16_t *add, const uint16_t *w, int64_t M,
                     int64_t D, float eps, void *stream) {
    return rmsnorm_residual_fwd_cuda(y, rstd, res, res, add, w, M, D, eps, stream);
}
/* sized as kernels/cuda/norm.cu sizes it (blocks of ROWS = 16 rows, D partial sums each) */
size_t rmsnorm_bwd_cuda_ws_bytes(int64_t M, int64_t D) { return (size_t)((M + 15) / 16 * D) * sizeof(float); }
int rmsnorm_bwd_cuda(uint16_t *dres, float *dw, const uint16_t *dy, const uint16_t *x, const uint16_t *w,
                     const float *rstd, int64_t M, int64_t D, void *ws, void *stream) {
    (void)stream;
    memset(ws, 0, rmsnorm_bwd_cuda_ws_bytes(M, D));   /* the planned scratch must hold it */
    FAKE_CHECK(D % 8 == 0 && D <= 16384);
    A16(dres); A16(dy); A16(x); A16(w); A16(dw); A16(ws);
    size_t n = (size_t)(M * D);
    float *dr = up(dres, n), *dyf = up(dy, n), *xf = up(x, n), *wf = up(w, (size_t)D);
    rmsnorm_bwd(dr, dw, dyf, xf, wf, rstd, M, D, NULL);
    down(dr, dres, n);
    free(dyf), free(xf), free(wf);
    return 0;
}
int rope_apply_cuda_ld(uint16_t *x, int64_t ld, const int32_t *pos, const float *inv_freq, int64_t T, int64_t H,
                       int64_t hd, bool inverse, void *stream) {
    (void)stream;
    FAKE_CHECK(hd % 2 == 0 && hd <= 256 && ld >= H * hd);
    float *c = malloc((size_t)(T * hd / 2) * sizeof(float)), *s = malloc((size_t)(T * hd / 2) * sizeof(float));
    rope_tables(c, s, pos, T, inv_freq, hd / 2);
    float *xf = up_ld(x, T, H * hd, ld);
    rope_apply(xf, c, s, T, H, hd, inverse, NULL);
    down_ld(xf, x, T, H * hd, ld);
    free(c), free(s);
    return 0;
}
int swiglu_fwd_cuda(uint16_t *a, const uint16_t *g, const uint16_t *u, int64_t M, int64_t F, int64_t ld_in,
                    void *stream) {
    (void)stream;
    FAKE_CHECK(F % 8 == 0 && ld_in % 8 == 0 && ld_in >= F);
    A16(a); A16(g); A16(u);
    float *gf = up_ld(g, M, F, ld_in), *uf = up_ld(u, M, F, ld_in), *af = malloc((size_t)(M * F) * sizeof(float));
    swiglu_fwd(af, gf, uf, (size_t)(M * F), NULL);
    down(af, a, (size_t)(M * F));
    free(gf), free(uf);
    return 0;
}
int swiglu_bwd_cuda(uint16_t *dg, uint16_t *du, const uint16_t *da, const uint16_t *g, const uint16_t *u, int64_t M,
                    int64_t F, int64_t ld_in, void *stream) {
    (void)stream;
    FAKE_CHECK(F % 8 == 0 && ld_in % 8 == 0 && ld_in >= F);
    A16(dg); A16(du); A16(da); A16(g); A16(u);
    size_t n = (size_t)(M * F);
    float *gf = up_ld(g, M, F, ld_in), *uf = up_ld(u, M, F, ld_in), *daf = up(da, n);
    float *dgf = malloc(n * sizeof(float)), *duf = malloc(n * sizeof(float));
    swiglu_bwd(dgf, duf, NULL, daf, gf, uf, n, NULL);
    down_ld(dgf, dg, M, F, ld_in);
    down_ld(duf, du, M, F, ld_in);
    free(gf), free(uf), free(daf);
    return 0;
}
int embed_fwd_cuda(uint16_t *out, const uint16_t *table, const int32_t *ids, int64_t M, int64_t D, void *stream) {
    (void)stream;
    FAKE_CHECK(D % 8 == 0);
    A16(out); A16(table);
    for (int64_t t = 0; t < M; t++) memcpy(out + t * D, table + (int64_t)ids[t] * D, (size_t)D * 2);
    return 0;
}
int embed_bwd_cuda(float *dtable, const uint16_t *dout, const int32_t *ids, const int32_t *order, const int32_t *seg,
                   int64_t n_seg, int64_t M, int64_t D, void *stream) {
    (void)stream;
    /* the plan the trainer uploaded must group the ids: check it, then the CPU twin */
    for (int64_t s = 0; s < n_seg; s++)
        for (int32_t i = seg[s]; i < seg[s + 1]; i++) FAKE_CHECK(ids[order[i]] == ids[order[seg[s]]]);
    FAKE_CHECK(seg[n_seg] == M);
    float *df = up(dout, (size_t)(M * D));
    embed_bwd(dtable, df, ids, M, D, NULL);
    free(df);
    return 0;
}
int attn_fwd_cuda_ex(uint16_t *o, float *lse, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                     const int32_t *doc_start, int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, float scale,
                     const attn_cuda_layout *lay, void *stream) {
    (void)stream;
    int64_t lq = lay && lay->ld_q ? lay->ld_q : Hq * hd, lkv = lay && lay->ld_kv ? lay->ld_kv : Hkv * hd;
    FAKE_CHECK((hd == 64 || hd == 128) && Hkv > 0 && Hq % Hkv == 0);
    FAKE_CHECK(lq >= Hq * hd && lkv >= Hkv * hd && lq % 8 == 0 && lkv % 8 == 0);
    A16(o); A16(q); A16(k); A16(v);
    float *qf = up_ld(q, T, Hq * hd, lq), *kf = up_ld(k, T, Hkv * hd, lkv), *vf = up_ld(v, T, Hkv * hd, lkv);
    float *of = malloc((size_t)(T * Hq * hd) * sizeof(float)), *ws = malloc(attn_workspace_floats(T, Hq, 1) * sizeof(float));
    attn_fwd(of, lse, qf, kf, vf, doc_start, T, Hq, Hkv, hd, scale, ws, NULL);
    down(of, o, (size_t)(T * Hq * hd));
    free(qf), free(kf), free(vf), free(ws);
    return 0;
}
size_t attn_bwd_cuda_ws_bytes(int64_t T, int64_t Hq) { return (size_t)(T * Hq) * 4; }
int attn_bwd_cuda_ex(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout, const uint16_t *o,
                     const float *lse, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                     const int32_t *doc_start, int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, float scale,
                     const attn_cuda_layout *lay, void *ws_dev, void *stream) {
    (void)stream;
    memset(ws_dev, 0, attn_bwd_cuda_ws_bytes(T, Hq));   /* the planned scratch must hold it */
    int64_t lq = lay && lay->ld_q ? lay->ld_q : Hq * hd, lkv = lay && lay->ld_kv ? lay->ld_kv : Hkv * hd;
    int64_t ldq = lay && lay->ld_dq ? lay->ld_dq : Hq * hd, ldkv = lay && lay->ld_dkv ? lay->ld_dkv : Hkv * hd;
    FAKE_CHECK((hd == 64 || hd == 128) && Hkv > 0 && Hq % Hkv == 0);
    FAKE_CHECK(lq >= Hq * hd && lkv >= Hkv * hd && ldq >= Hq * hd && ldkv >= Hkv * hd && lq % 8 == 0 && lkv % 8 == 0);
    A16(q); A16(k); A16(v); A16(o); A16(dout); A16(dq); A16(dk); A16(dv);
    float *qf = up_ld(q, T, Hq * hd, lq), *kf = up_ld(k, T, Hkv * hd, lkv), *vf = up_ld(v, T, Hkv * hd, lkv);
    float *of = up(o, (size_t)(T * Hq * hd)), *dof = up(dout, (size_t)(T * Hq * hd));
    float *dqf = malloc((size_t)(T * Hq * hd) * sizeof(float)), *dkf = malloc((size_t)(T * Hkv * hd) * sizeof(float)),
          *dvf = malloc((size_t)(T * Hkv * hd) * sizeof(float)), *ws = malloc(attn_workspace_floats(T, Hq, 1) * sizeof(float));
    attn_bwd(dqf, dkf, dvf, dof, of, lse, qf, kf, vf, doc_start, T, Hq, Hkv, hd, scale, ws, NULL);
    down_ld(dqf, dq, T, Hq * hd, ldq);
    down_ld(dkf, dk, T, Hkv * hd, ldkv);
    down_ld(dvf, dv, T, Hkv * hd, ldkv);
    free(qf), free(kf), free(vf), free(of), free(dof), free(ws);
    return 0;
}
int ce_cuda_ws_create(ce_cuda_ws **out, int64_t chunk, int64_t V, int64_t D) {
    *out = calloc(1, sizeof **out);
    /* the device buffers kernels/cuda/loss.cu allocates (rows, their gradient, logits, their
     * gradient, row losses), counted as device memory; the stand-in computes on the host */
    (*out)->dev = (size_t)chunk * ((size_t)D * 4 + (size_t)V * 6 + 8);
    fake_in_use += (*out)->dev;
    if (fake_in_use > fake_peak) fake_peak = fake_in_use;
    return ce_workspace_init(&(*out)->ws, chunk, V, D);
}
void ce_cuda_ws_free(ce_cuda_ws *ws) {
    if (!ws) return;
    fake_in_use -= ws->dev;
    ce_workspace_free(&ws->ws);
    free(ws);
}
int ce_fused_cuda(double *loss_sum, uint16_t *dh, float *dw, const uint16_t *h, const uint16_t *w, const int32_t *target,
                  const int32_t *rows, int64_t n_rows, int64_t M, float scale, ce_cuda_ws *ws, void *stream) {
    (void)stream;
    /* the row list must be the rows with a target, ascending */
    int64_t k = 0;
    for (int64_t i = 0; i < M; i++)
        if (target[i] >= 0) FAKE_CHECK(k < n_rows && rows[k++] == i);
    FAKE_CHECK(k == n_rows);
    int64_t D = ws->ws.D, V = ws->ws.V;
    float *hf = up(h, (size_t)(M * D)), *wf = up(w, (size_t)(V * D)), *dhf = malloc((size_t)(M * D) * sizeof(float));
    ce_fused(loss_sum, dh ? dhf : NULL, dh ? dw : NULL, hf, wf, target, M, scale, &ws->ws, NULL);
    if (dh) down(dhf, dh, (size_t)(M * D));
    else free(dhf);
    free(hf), free(wf);
    return 0;
}
int kd_fused_cuda(double *sums, uint16_t *dh, float *dw, const uint16_t *h, const uint16_t *w, const int32_t *target,
                  const int32_t *rows, int64_t n_rows, int64_t M, float scale, const kd_spec *kd, ce_cuda_ws *ws,
                  void *stream) {
    (void)stream;
    int64_t k = 0;
    for (int64_t i = 0; i < M; i++)
        if (target[i] >= 0) FAKE_CHECK(k < n_rows && rows[k++] == i);
    FAKE_CHECK(k == n_rows);
    int64_t D = ws->ws.D, V = ws->ws.V;
    float *hf = up(h, (size_t)(M * D)), *wf = up(w, (size_t)(V * D)), *dhf = malloc((size_t)(M * D) * sizeof(float));
    int rc = kd_fused(&sums[0], &sums[1], &sums[2], dh ? dhf : NULL, dh ? dw : NULL, hf, wf, target, M, scale, kd, &ws->ws, NULL);
    if (dh) down(dhf, dh, (size_t)(M * D));
    else free(dhf);
    free(hf), free(wf);
    return rc;
}
int adamw_step_cuda(float *p, uint16_t *p_bf16, const float *g, float *m, float *v, size_t n, const adamw_hparams *h,
                    float grad_scale, void *stream) {
    (void)stream;
    FAKE_CHECK(h->step >= 1);
    float *gs = malloc((n ? n : 1) * sizeof(float));
    memcpy(gs, g, n * sizeof(float));
    if (grad_scale != 1.0f) vec_scale(gs, n, grad_scale, NULL);
    adamw_step(p, gs, m, v, n, h, NULL);
    if (p_bf16) cvt_f32_to_bf16(p, p_bf16, n);
    free(gs);
    return 0;
}
/* sized as kernels/cuda/optim.cu sizes it: one double per block of 65536, and the total */
size_t vec_sumsq_cuda_ws_bytes(size_t n) { return ((n + 65535) / 65536 + 1) * sizeof(double); }
int vec_sumsq_cuda(double *out, bool accumulate, const float *x, size_t n, void *ws, void *stream) {
    (void)stream;
    /* the scratch the trainer planned must hold this call's partial sums: write them */
    memset(ws, 0, vec_sumsq_cuda_ws_bytes(n));
    *out = (accumulate ? *out : 0.0) + vec_sumsq(x, n, NULL);
    return 0;
}
/* D[M,N] = alpha·op(A)·op(B) + beta·D, naive, f32 sums of bf16 values */
int mm_gemm_cuda(mm_cuda_ctx *c, void *d, bool d_f32, int64_t ldd, const uint16_t *a, int64_t lda, bool trans_a,
                 const uint16_t *b, int64_t ldb, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, float beta,
                 void *stream) {
    (void)c, (void)stream;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            float s = 0;
            for (int64_t k = 0; k < K; k++)
                s += bf16_to_f32(trans_a ? a[k * lda + i] : a[i * lda + k]) *
                     bf16_to_f32(trans_b ? b[j * ldb + k] : b[k * ldb + j]);
            if (d_f32) {
                float *y = (float *)d + i * ldd + j;
                *y = alpha * s + (beta != 0 ? beta * *y : 0);
            } else {
                uint16_t *y = (uint16_t *)d + i * ldd + j;
                *y = f32_to_bf16(alpha * s + (beta != 0 ? beta * bf16_to_f32(*y) : 0));
            }
        }
    return 0;
}
/* the split-KV plan of kernels/cuda/paged_attention.cu (pa_make_plan), for the scratch size */
size_t attn_paged_cuda_ws_bytes(int64_t n, int64_t Hq, int64_t Hkv, int64_t hd, int64_t max_ctx) {
    if (n <= 0 || Hkv <= 0 || Hq % Hkv) return 0;
    int64_t rep = Hq / Hkv, G = 1;
    for (int64_t g = 8; g >= 1; g--)
        if (rep % g == 0) {
            G = g;
            break;
        }
    if (max_ctx < 1) max_ctx = 1;
    int64_t blocks = n * Hkv * (rep / G), splits = 1;
    if (blocks < 256 && max_ctx > 256) {
        splits = (256 + blocks - 1) / blocks;
        if (splits > (max_ctx + 255) / 256) splits = (max_ctx + 255) / 256;
        if (splits > 64) splits = 64;
    }
    int64_t span = ((max_ctx + splits - 1) / splits + 63) / 64 * 64, ns = (max_ctx + span - 1) / span;
    return ns > 1 ? (size_t)(n * Hq * ns * (hd + 2)) * sizeof(float) : 0;
}
/* the CPU twin attn_paged_fwd on f32 copies of the blocks the queries read */
int attn_paged_fwd_cuda(uint16_t *o, const uint16_t *q, int64_t ld_q, int64_t n, int64_t Hq, int64_t Hkv, int64_t hd,
                        float scale, const uint16_t *k, const uint16_t *v, int64_t bs, int64_t bstride,
                        const int32_t *tables, int64_t table_ld, const int32_t *seq_of, const int32_t *ctx,
                        int64_t max_ctx, void *ws, void *stream) {
    (void)stream;
    FAKE_CHECK((hd == 64 || hd == 128) && Hkv > 0 && Hq % Hkv == 0 && ld_q >= Hq * hd && bstride % 8 == 0);
    A16(k); A16(v);
    size_t wsb = attn_paged_cuda_ws_bytes(n, Hq, Hkv, hd, max_ctx);
    if (wsb) memset(ws, 0, wsb);   /* the planned scratch must hold it */
    int64_t kd = Hkv * hd, maxb = 0;
    const int32_t **tabs = malloc((size_t)n * sizeof *tabs);
    for (int64_t i = 0; i < n; i++) {
        FAKE_CHECK(ctx[i] >= 1 && ctx[i] <= max_ctx);
        tabs[i] = tables + (int64_t)seq_of[i] * table_ld;
        for (int64_t b = 0; b < (ctx[i] + bs - 1) / bs; b++) maxb = tabs[i][b] > maxb ? tabs[i][b] : maxb;
    }
    size_t ne = (size_t)((maxb + 1) * bstride);
    float *kf = calloc(ne, sizeof(float)), *vf = calloc(ne, sizeof(float));
    for (int64_t b = 0; b <= maxb; b++) {
        cvt_bf16_to_f32(k + b * bstride, kf + b * bstride, (size_t)(bs * kd));
        cvt_bf16_to_f32(v + b * bstride, vf + b * bstride, (size_t)(bs * kd));
    }
    float *qf = up_ld(q, n, Hq * hd, ld_q), *of = malloc((size_t)(n * Hq * hd) * sizeof(float));
    float *w = malloc(attn_paged_workspace_floats(max_ctx, 1) * sizeof(float));
    attn_paged_fwd(of, qf, n, Hq, Hkv, hd, scale, kf, vf, bs, bstride, tabs, ctx, w, NULL);
    down(of, o, (size_t)(n * Hq * hd));
    free(tabs), free(kf), free(vf), free(qf), free(w);
    return 0;
}
int attn_paged_store_cuda(uint16_t *k_cache, uint16_t *v_cache, const uint16_t *k, const uint16_t *v, int64_t ld,
                          int64_t n, int64_t kd, int64_t bs, int64_t bstride, const int32_t *tables, int64_t table_ld,
                          const int32_t *seq_of, const int32_t *pos, void *stream) {
    (void)stream;
    FAKE_CHECK(kd % 8 == 0 && ld % 8 == 0 && ld >= kd && bstride % 8 == 0);
    A16(k_cache); A16(v_cache); A16(k); A16(v);
    for (int64_t t = 0; t < n; t++) {
        int64_t at = (int64_t)tables[(int64_t)seq_of[t] * table_ld + pos[t] / bs] * bstride + (pos[t] % bs) * kd;
        memcpy(k_cache + at, k + t * ld, (size_t)kd * 2);
        memcpy(v_cache + at, v + t * ld, (size_t)kd * 2);
    }
    return 0;
}
int cvt_f32_to_bf16_cuda(const float *src, uint16_t *dst, size_t n, void *stream) {
    (void)stream;
    cvt_f32_to_bf16(src, dst, n);
    return 0;
}

/* ---- NCCL: the host communicator itself (device memory is host memory here) ---------- */

int comm_open_nccl(rt_comm *host, int device, void *stream, rt_comm **out) {
    (void)device, (void)stream;
    *out = host;
    return 0;
}
void comm_close(rt_comm *c) { (void)c; }   /* the trainer's "NCCL" comm is borrowed */
int comm_allgather(rt_comm *c, const void *send, void *recv, size_t send_count, rt_dtype dt) {
    if (dt == RT_DT_BF16) {   /* pure movement: pairs of bf16 as int32 (the parts are multiples of 16) */
        FAKE_CHECK(send_count % 2 == 0);
        return fake_real_comm_allgather(c, send, recv, send_count / 2, RT_DT_I32);
    }
    return fake_real_comm_allgather(c, send, recv, send_count, dt);
}

#endif
