/* tests/unit/fake_cuda_impl.h — the CPU stand-ins behind tests/unit/fake_cuda.h: the CUDA
 * runtime (device memory is host memory, NaN-poisoned on allocation and counted: fake_in_use,
 * fake_peak, fake_mallocs; cudaMemGetInfo reports fake_total_bytes, which a test may shrink, and
 * cudaMalloc fails beyond it; streams and events do nothing), every kernel entry point
 * student/gpu_train.c and teacher/dense_cuda.c call (the kernels' CPU twins on bf16-rounded
 * inputs and outputs, strides honoured), NCCL as the host communicator (bf16 all-gathers
 * moved as int32 pairs, bf16 all-reduces summed in f32), fake_devices GPUs, and CUDA graphs
 * (a capture records the calls made on its stream, a launch replays them). Included once, after the code under test, by
 * tests/unit/test_gpu_train_fake.c, tests/unit/test_dense_cuda_fake.c and
 * tests/tools/gpu_train_fake_dp.c; FAKE_CHECK(cond) asserts what the caller must hand the kernels
 * (defined by the includer). */
#ifndef RT_TESTS_FAKE_CUDA_IMPL_H
#define RT_TESTS_FAKE_CUDA_IMPL_H

#include <stdint.h>

/* fault injection (the block at the end) wraps these two: defined below under their fake_… names */
#undef cudaGetErrorString
#undef cudaGraphLaunch
#define cudaGetErrorString fake_cudaGetErrorString
#define cudaGraphLaunch fake_cudaGraphLaunch

/* CUDA graphs (the block at the end): the stand-ins below keep their fake_… names; the code
 * under test reaches them through the recording wrappers fake_g_… (fake_cuda.h) */
#undef embed_fwd_cuda
#undef rmsnorm_fwd_cuda
#undef mm_linear_fwd_cuda
#undef rope_apply_cuda_ld
#undef attn_paged_store_cuda
#undef attn_paged_fwd_cuda
#undef swiglu_fwd_cuda
#undef mm_gemm_cuda
#undef cudaMemcpyAsync
#undef cudaStreamSynchronize
#undef comm_allreduce
#undef comm_allgather
#define embed_fwd_cuda fake_embed_fwd_cuda
#define rmsnorm_fwd_cuda fake_rmsnorm_fwd_cuda
#define mm_linear_fwd_cuda fake_mm_linear_fwd_cuda
#define rope_apply_cuda_ld fake_rope_apply_cuda_ld
#define attn_paged_store_cuda fake_attn_paged_store_cuda
#define attn_paged_fwd_cuda fake_attn_paged_fwd_cuda
#define swiglu_fwd_cuda fake_swiglu_fwd_cuda
#define mm_gemm_cuda fake_mm_gemm_cuda
#define cudaMemcpyAsync fake_cudaMemcpyAsync
#define cudaStreamSynchronize fake_cudaStreamSynchronize
#define comm_allreduce fake_comm_allreduce
#define comm_allgather fake_comm_allgather

/* ---- the runtime ------------------------------------------------------------------------ */

static size_t fake_in_use, fake_mallocs;
static size_t fake_peak;   /* the most fake_in_use has been since the last reset */
static size_t fake_total_bytes = (size_t)80 << 30;
static int fake_devices = 1;   /* GPUs the runtime reports (dense_cuda_tp: one per rank) */

cudaError_t cudaGetDeviceCount(int *n) { *n = fake_devices; return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "fake CUDA error"; }
cudaError_t cudaSetDevice(int d) { return d >= 0 && d < fake_devices ? cudaSuccess : cudaErrorInvalidValue; }
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
/* the tensor-core prefill's tiles: runs of at most 16 queries of one table row (narrower than
 * the kernel's, so a piece takes several) */
int64_t attn_paged_prefill_tiles(int32_t *tiles, const int32_t *seq_of, int64_t n, int64_t Hq, int64_t Hkv) {
    FAKE_CHECK(Hkv > 0 && Hq % Hkv == 0);
    int64_t nt = 0;
    for (int64_t i = 0; i < n; nt++) {
        tiles[nt] = (int32_t)i;
        int64_t j = i + 1;
        while (j < n && j - i < 16 && seq_of[j] == seq_of[i]) j++;
        i = j;
    }
    return nt;
}
/* the prefill: the tiles checked (in order, from 0, each inside one table row, at most 64
 * queries), then the CPU twin as for attn_paged_fwd_cuda */
static size_t fake_prefill_calls;   /* how often the engine took the tensor-core prefill */
int attn_paged_prefill_cuda(uint16_t *o, const uint16_t *q, int64_t ld_q, int64_t n, int64_t Hq, int64_t Hkv,
                            int64_t hd, float scale, const uint16_t *k, const uint16_t *v, int64_t bs, int64_t bstride,
                            const int32_t *tables, int64_t table_ld, const int32_t *seq_of, const int32_t *ctx,
                            const int32_t *tiles, int64_t n_tiles, void *stream) {
    FAKE_CHECK(ld_q % 8 == 0 && n_tiles >= 1 && n_tiles <= n && tiles[0] == 0);
    fake_prefill_calls++;
    A16(q);
    FAKE_CHECK((uintptr_t)o % 4 == 0);
    int64_t max_ctx = 1;
    for (int64_t t = 0; t < n_tiles; t++) {
        int64_t end = t + 1 < n_tiles ? tiles[t + 1] : n;
        FAKE_CHECK(end > tiles[t] && end - tiles[t] <= 64);
        for (int64_t i = tiles[t]; i < end; i++) FAKE_CHECK(seq_of[i] == seq_of[tiles[t]]);
    }
    for (int64_t i = 0; i < n; i++) max_ctx = ctx[i] > max_ctx ? ctx[i] : max_ctx;
    size_t wsb = attn_paged_cuda_ws_bytes(n, Hq, Hkv, hd, max_ctx);
    void *ws = wsb ? malloc(wsb) : NULL;
    int rc = attn_paged_fwd_cuda(o, q, ld_q, n, Hq, Hkv, hd, scale, k, v, bs, bstride, tables, table_ld, seq_of, ctx,
                                 max_ctx, ws, stream);
    free(ws);
    return rc;
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

/* ---- NCCL's all-reduce for teacher/dense_cuda.c's tensor parallel (see fake_cuda.h) ---- */

int comm_allreduce(rt_comm *c, const void *send, void *recv, size_t count, rt_dtype dt, comm_op op) {
    if (dt != RT_DT_BF16) return fake_real_comm_allreduce(c, send, recv, count, dt, op);
    float *f = malloc((count ? count : 1) * sizeof(float));
    cvt_bf16_to_f32(send, f, count);
    int rc = fake_real_comm_allreduce(c, f, f, count, RT_DT_F32, op);
    cvt_f32_to_bf16(f, recv, count);
    free(f);
    return rc;
}

/* ---- CUDA graphs: capture records the calls, launch replays them (see fake_cuda.h) ------- */

typedef union {
    void *p;
    int64_t i;
    double f;
} fake_arg;
typedef struct fake_call {
    int (*run)(const fake_arg *a);   /* 0, or an error */
    fake_arg a[20];
} fake_call;
struct fake_graph {
    fake_call *calls;
    size_t n, cap;
};
static cudaStream_t fake_cap_stream;        /* the stream in capture, or NULL */
static struct fake_graph *fake_cap_graph;   /* what it records */
static size_t fake_launches, fake_instances;

static bool fake_capturing(const void *stream) { return fake_cap_graph && stream == (const void *)fake_cap_stream; }
static fake_arg *fake_record(int (*run)(const fake_arg *)) {
    struct fake_graph *g = fake_cap_graph;
    if (g->n == g->cap) g->calls = realloc(g->calls, (g->cap = g->cap ? 2 * g->cap : 64) * sizeof *g->calls);
    FAKE_CHECK(g->calls);
    g->calls[g->n].run = run;
    return g->calls[g->n++].a;
}
#define P_(x) ((fake_arg){.p = (void *)(x)})
#define I_(x) ((fake_arg){.i = (int64_t)(x)})
#define F_(x) ((fake_arg){.f = (double)(x)})

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
    (void)mode;
    if (fake_cap_graph || !s) return cudaErrorInvalidValue;
    fake_cap_stream = s;
    fake_cap_graph = calloc(1, sizeof *fake_cap_graph);
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g) {
    if (!fake_cap_graph || s != fake_cap_stream) return cudaErrorInvalidValue;
    *g = fake_cap_graph;
    fake_cap_graph = NULL, fake_cap_stream = NULL;
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags) {
    (void)flags;
    struct fake_graph *e = calloc(1, sizeof *e);
    e->n = e->cap = g->n;
    e->calls = malloc((g->n ? g->n : 1) * sizeof *e->calls);
    memcpy(e->calls, g->calls, g->n * sizeof *e->calls);
    *x = e;
    fake_instances++;
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s) {
    if (fake_capturing(s)) return cudaErrorInvalidValue;
    for (size_t i = 0; i < x->n; i++)
        if (x->calls[i].run(x->calls[i].a)) return cudaErrorInvalidValue;
    fake_launches++;
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
    if (g) free(g->calls), free(g);
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x) { return cudaGraphDestroy(x); }
size_t fake_graph_launches(void) { return fake_launches; }
size_t fake_graph_instances(void) { return fake_instances; }

/* rmsnorm_heads_fwd_cuda: the CPU twin on the bf16 values, rounded back to bf16 */
static int fake_rmsnorm_heads_fwd_cuda(uint16_t *x, int64_t ld, int64_t T, int64_t H, int64_t hd, const uint16_t *w,
                                       float eps) {
    FAKE_CHECK(hd % 8 == 0 && hd <= 256 && ld % 8 == 0);
    A16(x); A16(w);
    float *f = malloc((size_t)(H * hd) * sizeof(float)), *wf = malloc((size_t)hd * sizeof(float));
    cvt_bf16_to_f32(w, wf, (size_t)hd);
    for (int64_t t = 0; t < T; t++) {
        cvt_bf16_to_f32(x + t * ld, f, (size_t)(H * hd));
        rmsnorm_heads_fwd(f, H * hd, 1, H, hd, wf, eps);
        cvt_f32_to_bf16(f, x + t * ld, (size_t)(H * hd));
    }
    free(f), free(wf);
    return 0;
}
static int rp_rms_heads(const fake_arg *a) {
    return fake_rmsnorm_heads_fwd_cuda(a[0].p, a[1].i, a[2].i, a[3].i, a[4].i, a[5].p, (float)a[6].f);
}
int fake_g_rmsnorm_heads_fwd_cuda(uint16_t *x, int64_t ld, int64_t T, int64_t H, int64_t hd, const uint16_t *w,
                                  float eps, void *stream) {
    if (!fake_capturing(stream)) return fake_rmsnorm_heads_fwd_cuda(x, ld, T, H, hd, w, eps);
    fake_arg *a = fake_record(rp_rms_heads);
    a[0] = P_(x), a[1] = I_(ld), a[2] = I_(T), a[3] = I_(H), a[4] = I_(hd), a[5] = P_(w), a[6] = F_(eps);
    return 0;
}
/* embed_fwd_rows_cuda: rows [v0, v0 + nv) of the vocabulary, zeros for ids outside */
static int fake_embed_fwd_rows_cuda(uint16_t *out, const uint16_t *table, const int32_t *ids, int64_t M, int64_t D,
                                    int64_t v0, int64_t nv) {
    FAKE_CHECK(D % 8 == 0);
    A16(out); A16(table);
    for (int64_t t = 0; t < M; t++) {
        int64_t r = (int64_t)ids[t] - v0;
        if (r >= 0 && r < nv) memcpy(out + t * D, table + r * D, (size_t)D * 2);
        else memset(out + t * D, 0, (size_t)D * 2);
    }
    return 0;
}
static int rp_embed_rows(const fake_arg *a) {
    return fake_embed_fwd_rows_cuda(a[0].p, a[1].p, a[2].p, a[3].i, a[4].i, a[5].i, a[6].i);
}
int fake_g_embed_fwd_rows_cuda(uint16_t *out, const uint16_t *table, const int32_t *ids, int64_t M, int64_t D,
                               int64_t v0, int64_t nv, void *stream) {
    if (!fake_capturing(stream)) return fake_embed_fwd_rows_cuda(out, table, ids, M, D, v0, nv);
    fake_arg *a = fake_record(rp_embed_rows);
    a[0] = P_(out), a[1] = P_(table), a[2] = P_(ids), a[3] = I_(M), a[4] = I_(D), a[5] = I_(v0), a[6] = I_(nv);
    return 0;
}
static int rp_embed(const fake_arg *a) { return fake_embed_fwd_cuda(a[0].p, a[1].p, a[2].p, a[3].i, a[4].i, NULL); }
int fake_g_embed_fwd_cuda(uint16_t *out, const uint16_t *table, const int32_t *ids, int64_t M, int64_t D, void *stream) {
    if (!fake_capturing(stream)) return fake_embed_fwd_cuda(out, table, ids, M, D, stream);
    fake_arg *a = fake_record(rp_embed);
    a[0] = P_(out), a[1] = P_(table), a[2] = P_(ids), a[3] = I_(M), a[4] = I_(D);
    return 0;
}
static int rp_rmsnorm(const fake_arg *a) {
    return fake_rmsnorm_fwd_cuda(a[0].p, a[1].p, a[2].p, a[3].p, a[4].p, a[5].i, a[6].i, (float)a[7].f, NULL);
}
int fake_g_rmsnorm_fwd_cuda(uint16_t *y, float *rstd, uint16_t *res, const uint16_t *add, const uint16_t *w, int64_t M,
                            int64_t D, float eps, void *stream) {
    if (!fake_capturing(stream)) return fake_rmsnorm_fwd_cuda(y, rstd, res, add, w, M, D, eps, stream);
    fake_arg *a = fake_record(rp_rmsnorm);
    a[0] = P_(y), a[1] = P_(rstd), a[2] = P_(res), a[3] = P_(add), a[4] = P_(w), a[5] = I_(M), a[6] = I_(D), a[7] = F_(eps);
    return 0;
}
static int rp_linear(const fake_arg *a) {
    return fake_mm_linear_fwd_cuda(a[0].p, a[1].p, a[2].p, a[3].p, a[4].p, a[5].i, a[6].i, a[7].i, NULL);
}
int fake_g_mm_linear_fwd_cuda(mm_cuda_ctx *c, uint16_t *y, const uint16_t *x, const uint16_t *w, const uint16_t *b,
                              int64_t M, int64_t N, int64_t K, void *stream) {
    if (!fake_capturing(stream)) return fake_mm_linear_fwd_cuda(c, y, x, w, b, M, N, K, stream);
    fake_arg *a = fake_record(rp_linear);
    a[0] = P_(c), a[1] = P_(y), a[2] = P_(x), a[3] = P_(w), a[4] = P_(b), a[5] = I_(M), a[6] = I_(N), a[7] = I_(K);
    return 0;
}
static int rp_rope(const fake_arg *a) {
    return fake_rope_apply_cuda_ld(a[0].p, a[1].i, a[2].p, a[3].p, a[4].i, a[5].i, a[6].i, a[7].i != 0, NULL);
}
int fake_g_rope_apply_cuda_ld(uint16_t *x, int64_t ld, const int32_t *pos, const float *inv_freq, int64_t T, int64_t H,
                              int64_t hd, bool inverse, void *stream) {
    if (!fake_capturing(stream)) return fake_rope_apply_cuda_ld(x, ld, pos, inv_freq, T, H, hd, inverse, stream);
    fake_arg *a = fake_record(rp_rope);
    a[0] = P_(x), a[1] = I_(ld), a[2] = P_(pos), a[3] = P_(inv_freq), a[4] = I_(T), a[5] = I_(H), a[6] = I_(hd);
    a[7] = I_(inverse);
    return 0;
}
static int rp_store(const fake_arg *a) {
    return fake_attn_paged_store_cuda(a[0].p, a[1].p, a[2].p, a[3].p, a[4].i, a[5].i, a[6].i, a[7].i, a[8].i, a[9].p,
                                      a[10].i, a[11].p, a[12].p, NULL);
}
int fake_g_attn_paged_store_cuda(uint16_t *k_cache, uint16_t *v_cache, const uint16_t *k, const uint16_t *v, int64_t ld,
                                 int64_t n, int64_t kd, int64_t bs, int64_t bstride, const int32_t *tables,
                                 int64_t table_ld, const int32_t *seq_of, const int32_t *pos, void *stream) {
    if (!fake_capturing(stream))
        return fake_attn_paged_store_cuda(k_cache, v_cache, k, v, ld, n, kd, bs, bstride, tables, table_ld, seq_of, pos,
                                          stream);
    fake_arg *a = fake_record(rp_store);
    a[0] = P_(k_cache), a[1] = P_(v_cache), a[2] = P_(k), a[3] = P_(v), a[4] = I_(ld), a[5] = I_(n), a[6] = I_(kd);
    a[7] = I_(bs), a[8] = I_(bstride), a[9] = P_(tables), a[10] = I_(table_ld), a[11] = P_(seq_of), a[12] = P_(pos);
    return 0;
}
static int rp_paged(const fake_arg *a) {
    return fake_attn_paged_fwd_cuda(a[0].p, a[1].p, a[2].i, a[3].i, a[4].i, a[5].i, a[6].i, (float)a[7].f, a[8].p,
                                    a[9].p, a[10].i, a[11].i, a[12].p, a[13].i, a[14].p, a[15].p, a[16].i, a[17].p, NULL);
}
int fake_g_attn_paged_fwd_cuda(uint16_t *o, const uint16_t *q, int64_t ld_q, int64_t n, int64_t Hq, int64_t Hkv,
                               int64_t hd, float scale, const uint16_t *k, const uint16_t *v, int64_t bs, int64_t bstride,
                               const int32_t *tables, int64_t table_ld, const int32_t *seq_of, const int32_t *ctx,
                               int64_t max_ctx, void *ws, void *stream) {
    if (!fake_capturing(stream))
        return fake_attn_paged_fwd_cuda(o, q, ld_q, n, Hq, Hkv, hd, scale, k, v, bs, bstride, tables, table_ld, seq_of,
                                        ctx, max_ctx, ws, stream);
    fake_arg *a = fake_record(rp_paged);
    a[0] = P_(o), a[1] = P_(q), a[2] = I_(ld_q), a[3] = I_(n), a[4] = I_(Hq), a[5] = I_(Hkv), a[6] = I_(hd);
    a[7] = F_(scale), a[8] = P_(k), a[9] = P_(v), a[10] = I_(bs), a[11] = I_(bstride), a[12] = P_(tables);
    a[13] = I_(table_ld), a[14] = P_(seq_of), a[15] = P_(ctx), a[16] = I_(max_ctx), a[17] = P_(ws);
    return 0;
}
static int rp_swiglu(const fake_arg *a) { return fake_swiglu_fwd_cuda(a[0].p, a[1].p, a[2].p, a[3].i, a[4].i, a[5].i, NULL); }
int fake_g_swiglu_fwd_cuda(uint16_t *act, const uint16_t *g, const uint16_t *u, int64_t M, int64_t F, int64_t ld_in,
                           void *stream) {
    if (!fake_capturing(stream)) return fake_swiglu_fwd_cuda(act, g, u, M, F, ld_in, stream);
    fake_arg *a = fake_record(rp_swiglu);
    a[0] = P_(act), a[1] = P_(g), a[2] = P_(u), a[3] = I_(M), a[4] = I_(F), a[5] = I_(ld_in);
    return 0;
}
static int rp_gemm(const fake_arg *a) {
    return fake_mm_gemm_cuda(a[0].p, a[1].p, a[2].i != 0, a[3].i, a[4].p, a[5].i, a[6].i != 0, a[7].p, a[8].i,
                             a[9].i != 0, a[10].i, a[11].i, a[12].i, (float)a[13].f, (float)a[14].f, NULL);
}
int fake_g_mm_gemm_cuda(mm_cuda_ctx *c, void *d, bool d_f32, int64_t ldd, const uint16_t *x, int64_t lda, bool trans_a,
                        const uint16_t *b, int64_t ldb, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                        float beta, void *stream) {
    if (!fake_capturing(stream))
        return fake_mm_gemm_cuda(c, d, d_f32, ldd, x, lda, trans_a, b, ldb, trans_b, M, N, K, alpha, beta, stream);
    fake_arg *a = fake_record(rp_gemm);
    a[0] = P_(c), a[1] = P_(d), a[2] = I_(d_f32), a[3] = I_(ldd), a[4] = P_(x), a[5] = I_(lda), a[6] = I_(trans_a);
    a[7] = P_(b), a[8] = I_(ldb), a[9] = I_(trans_b), a[10] = I_(M), a[11] = I_(N), a[12] = I_(K), a[13] = F_(alpha);
    a[14] = F_(beta);
    return 0;
}
static int rp_memcpy(const fake_arg *a) { return fake_cudaMemcpyAsync(a[0].p, a[1].p, (size_t)a[2].i, (cudaMemcpyKind)a[3].i, NULL) != cudaSuccess; }
cudaError_t fake_g_cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st) {
    if (!fake_capturing(st)) return fake_cudaMemcpyAsync(d, s, n, k, st);
    if (k != cudaMemcpyDeviceToDevice) return cudaErrorInvalidValue;   /* pageable host memory */
    fake_arg *a = fake_record(rp_memcpy);
    a[0] = P_(d), a[1] = P_(s), a[2] = I_(n), a[3] = I_(k);
    return cudaSuccess;
}
cudaError_t fake_g_cudaStreamSynchronize(cudaStream_t s) {
    return fake_capturing(s) ? cudaErrorInvalidValue : fake_cudaStreamSynchronize(s);
}
static int rp_allreduce(const fake_arg *a) {
    return fake_comm_allreduce(a[0].p, a[1].p, a[2].p, (size_t)a[3].i, (rt_dtype)a[4].i, (comm_op)a[5].i);
}
int fake_g_comm_allreduce(rt_comm *c, const void *send, void *recv, size_t count, rt_dtype dt, comm_op op) {
    if (!fake_cap_graph) return fake_comm_allreduce(c, send, recv, count, dt, op);
    fake_arg *a = fake_record(rp_allreduce);
    a[0] = P_(c), a[1] = P_(send), a[2] = P_(recv), a[3] = I_(count), a[4] = I_(dt), a[5] = I_(op);
    return 0;
}
static int rp_allgather(const fake_arg *a) {
    return fake_comm_allgather(a[0].p, a[1].p, a[2].p, (size_t)a[3].i, (rt_dtype)a[4].i);
}
int fake_g_comm_allgather(rt_comm *c, const void *send, void *recv, size_t send_count, rt_dtype dt) {
    if (!fake_cap_graph) return fake_comm_allgather(c, send, recv, send_count, dt);
    fake_arg *a = fake_record(rp_allgather);
    a[0] = P_(c), a[1] = P_(send), a[2] = P_(recv), a[3] = I_(send_count), a[4] = I_(dt);
    return 0;
}
#undef P_
#undef I_
#undef F_
/* ---- DeepSeek-V3 on the GPU (teacher/ds_cuda.c): the ds kernels as their CPU twins -------- *
 * FP8 quantization and GEMMs (kernels/fp8.h's fp8_act_quant, fp8_swiglu_quant, fp8_gemm,
 * fp8_gemm_grouped on bf16-rounded inputs, bf16 out), the router (moe_route), the norms
 * (rmsnorm_fwd) and YaRN rope (yarn_tables + yarn_rope_apply, interleaved); the permutation,
 * gather, combine, cache append and the absorbed MLA core from their definitions in
 * kernels/moe.h and kernels/mla.h (f32 sums, one bf16 rounding, as the kernels). The scratch
 * sizes (split-K partials, MLA splits) follow the kernels' own plans for a 132-SM device, and
 * every call writes all the scratch it asks for, so a plan that gave too little shows.
 * fake_fp8_exact (set by a test): the quantizers also keep the exact f32 values they were given,
 * under the e4m3 buffer's address (moved along by moe_gather_rows_cuda), and the FP8 GEMMs
 * multiply those by the exactly dequantized weights (kernels/fp8.h's fp8_linear_fwd, the CPU
 * engine's own product) — bf16 activations without the e4m3 rounding, to check the orchestration
 * against the CPU engine at a bf16 tolerance. */
#include "kernels/fp8.h"
#include "kernels/mla.h"
#include "kernels/moe.h"
#include "kernels/sample.h"
#include "kernels/rope.h"

#define FAKE_SMS 132

/* the stand-ins below under their fake_… names (the code under test reaches them through the
 * recording wrappers of the last block) */
#undef cudaMemcpy2DAsync
#undef fp8_act_quant_cuda
#undef fp8_swiglu_quant_cuda
#undef fp8_gemm_grouped_cuda
#undef fp8_gemm_dense_cuda
#undef bf16_gemm_f32_cuda
#undef bf16_gemm_batched_cuda
#undef ds_rmsnorm_cuda
#undef ds_rope_cuda
#undef mla_decode_cuda
#undef mla_cache_append_cuda
#undef moe_route_cuda
#undef moe_permute_cuda
#undef moe_gather_rows_cuda
#undef moe_combine_cuda
#define cudaMemcpy2DAsync fake_cudaMemcpy2DAsync
#define fp8_act_quant_cuda fake_fp8_act_quant_cuda
#define fp8_swiglu_quant_cuda fake_fp8_swiglu_quant_cuda
#define fp8_gemm_grouped_cuda fake_fp8_gemm_grouped_cuda
#define fp8_gemm_dense_cuda fake_fp8_gemm_dense_cuda
#define bf16_gemm_f32_cuda fake_bf16_gemm_f32_cuda
#define bf16_gemm_batched_cuda fake_bf16_gemm_batched_cuda
#define ds_rmsnorm_cuda fake_ds_rmsnorm_cuda
#define ds_rope_cuda fake_ds_rope_cuda
#define mla_decode_cuda fake_mla_decode_cuda
#define mla_cache_append_cuda fake_mla_cache_append_cuda
#define moe_route_cuda fake_moe_route_cuda
#define moe_permute_cuda fake_moe_permute_cuda
#define moe_gather_rows_cuda fake_moe_gather_rows_cuda
#define moe_combine_cuda fake_moe_combine_cuda
#undef moe_slab_pack_cuda
#define moe_slab_pack_cuda fake_moe_slab_pack_cuda
#undef comm_alltoallv
#define comm_alltoallv fake_comm_alltoallv

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind k, cudaStream_t st) {
    (void)k, (void)st;
    FAKE_CHECK(width <= dpitch && width <= spitch);
    for (size_t r = 0; r < height; r++) memmove((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
    return cudaSuccess;
}
static bool fake_fp8_exact;
static struct {
    const void *q;    /* an e4m3 activation buffer */
    float *x;         /* the exact values quantized into it, [rows, K] */
    int64_t rows, K;
} fake_exact[16];
static void fake_exact_put(const void *q, float *x, int64_t rows, int64_t K) {   /* takes x */
    int free_slot = -1;
    for (int i = 0; i < 16; i++) {
        if (fake_exact[i].q == q) {
            free(fake_exact[i].x);
            fake_exact[i].q = NULL;
        }
        if (!fake_exact[i].q && free_slot < 0) free_slot = i;
    }
    FAKE_CHECK(free_slot >= 0);
    fake_exact[free_slot].q = q, fake_exact[free_slot].x = x, fake_exact[free_slot].rows = rows, fake_exact[free_slot].K = K;
}
static const float *fake_exact_get(const void *q, int64_t rows, int64_t K) {
    for (int i = 0; i < 16; i++)
        if (fake_exact[i].q == q) {
            FAKE_CHECK(fake_exact[i].K == K && fake_exact[i].rows >= rows);
            return fake_exact[i].x;
        }
    for (int i = 0; i < 16; i++) {   /* rows further down a quantized buffer (ds_cuda's owned tokens) */
        const uint8_t *b = fake_exact[i].q;
        if (b && fake_exact[i].K == K && (const uint8_t *)q > b && (const uint8_t *)q < b + fake_exact[i].rows * K &&
            ((const uint8_t *)q - b) % K == 0) {
            int64_t r0 = ((const uint8_t *)q - b) / K;
            FAKE_CHECK(r0 + rows <= fake_exact[i].rows);
            return fake_exact[i].x + r0 * K;
        }
    }
    FAKE_CHECK(!"an FP8 GEMM read activations no quantizer wrote");
    return NULL;
}
static inline void fake_exact_clear(void) {
    for (int i = 0; i < 16; i++) free(fake_exact[i].x), fake_exact[i].q = NULL, fake_exact[i].x = NULL;
}
int fp8_act_quant_cuda(const uint16_t *x, int64_t M, int64_t K, uint8_t *q, float *scale, int scale_t, void *stream) {
    (void)stream;
    FAKE_CHECK(K % 128 == 0 && scale_t == 0);
    A16(x); A16(q); A16(scale);
    float *xf = up(x, (size_t)(M * K));
    int rc = fp8_act_quant(xf, M, K, q, scale);
    if (fake_fp8_exact) fake_exact_put(q, xf, M, K);
    else free(xf);
    return rc;
}
int fp8_swiglu_quant_cuda(const uint16_t *gu, int64_t M, int64_t I, uint8_t *q, float *scale, int scale_t,
                          void *stream) {
    (void)stream;
    FAKE_CHECK(I % 128 == 0 && scale_t == 0);
    A16(gu); A16(q); A16(scale);
    float *f = up(gu, (size_t)(M * 2 * I));
    int rc = fp8_swiglu_quant(f, M, I, q, scale);
    if (fake_fp8_exact) {   /* h = silu(g)·u in f32, as the kernel forms it before quantizing */
        float *h = malloc((size_t)(M * I) * sizeof(float));
        for (int64_t r = 0; r < M; r++)
            for (int64_t j = 0; j < I; j++) {
                float g = f[r * 2 * I + j];
                h[r * I + j] = g / (1.0f + expf(-g)) * f[r * 2 * I + I + j];
            }
        fake_exact_put(q, h, M, I);
    }
    free(f);
    return rc;
}
/* out [M, N] bf16 = exact x · W (W an e4m3 [N, K] matrix with its 128×128 scales) */
static void fake_exact_gemm(const float *x, const uint8_t *w, const float *w_scale, int64_t M, int64_t N, int64_t K,
                            uint16_t *out) {
    fp8_weight fw = {.w = w, .scale = w_scale, .rows = N, .cols = K, .block_rows = 128, .block_cols = 128,
                     .scale_cols = (K + 127) / 128};
    float *y = malloc((size_t)(M * N) * sizeof(float) + 1);
    fp8_linear_fwd(y, x, &fw, NULL, M, NULL);
    cvt_f32_to_bf16(y, out, (size_t)(M * N));
    free(y);
}
/* kernels/cuda/fp8_gemm.cu's plan: 64×128 tiles, one wave, at least 4 K blocks per split */
int fp8_gemm_splitk_plan(int64_t M, int64_t N, int64_t K) {
    int64_t ctas = ((M + 63) / 64) * ((N + 127) / 128), want = FAKE_SMS / ctas, most = K / 128 / 4;
    int64_t sp = want < most ? want : most;
    return (int)(sp < 1 ? 1 : sp > 32 ? 32 : sp);
}
size_t fp8_gemm_splitk_workspace_bytes(int64_t M, int64_t N, int splits) {
    return splits > 1 ? (size_t)splits * (size_t)M * (size_t)N * sizeof(float) : 0;
}
int fp8_gemm_dense_cuda(const uint8_t *a, const float *a_scale, const uint8_t *w, const float *w_scale, int64_t M,
                        int64_t N, int64_t K, int splits, void *ws, size_t ws_bytes, uint16_t *out, void *stream) {
    (void)stream;
    size_t need = fp8_gemm_splitk_workspace_bytes(M, N, splits);
    FAKE_CHECK(K % 128 == 0 && splits >= 1 && ws_bytes >= need);
    A16(a); A16(w); A16(out);
    if (need) memset(ws, 0, need);
    if (fake_fp8_exact) {
        fake_exact_gemm(fake_exact_get(a, M, K), w, w_scale, M, N, K, out);
        return 0;
    }
    return fp8_gemm(a, a_scale, w, w_scale, M, N, K, NULL, out, NULL);
}
int fp8_gemm_grouped_cuda(const uint8_t *a, const float *a_scale, const uint8_t *w, const float *w_scale,
                          const int32_t *offsets, int64_t G, int64_t max_total_rows, int64_t N, int64_t K,
                          uint16_t *out, void *stream) {
    (void)stream;
    FAKE_CHECK(K % 128 == 0 && offsets[G] - offsets[0] <= max_total_rows);
    A16(a); A16(w); A16(out);
    if (fake_fp8_exact) {
        const float *x = fake_exact_get(a, offsets[G], K);
        size_t sz = (size_t)(((N + 127) / 128) * (K / 128));
        for (int64_t g = 0; g < G; g++)
            if (offsets[g + 1] > offsets[g])
                fake_exact_gemm(x + (int64_t)offsets[g] * K, w + (size_t)(g * N * K), w_scale + g * sz,
                                offsets[g + 1] - offsets[g], N, K, out + (int64_t)offsets[g] * N);
        return 0;
    }
    int64_t *o64 = malloc((size_t)(G + 1) * sizeof *o64);
    for (int64_t g = 0; g <= G; g++) o64[g] = offsets[g];
    int rc = fp8_gemm_grouped(a, a_scale, w, w_scale, o64, G, N, K, NULL, out, NULL);
    free(o64);
    return rc;
}
struct fp8_lt { void *ws; };
int fp8_gemm_lt_create(fp8_lt **out) {   /* the handle's 32 MiB cuBLASLt workspace is device memory */
    *out = calloc(1, sizeof **out);
    if (cudaMalloc(&(*out)->ws, (size_t)32 << 20) != cudaSuccess) {
        free(*out);
        *out = NULL;
        return RT_ENOMEM;
    }
    return 0;
}
void fp8_gemm_lt_free(fp8_lt *h) {
    if (!h) return;
    cudaFree(h->ws);
    free(h);
}
int bf16_gemm_f32_cuda(fp8_lt *h, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N, int64_t K, float *out,
                       void *stream) {
    (void)h, (void)stream;
    A16(x); A16(w); A16(out);
    float *xf = up(x, (size_t)(M * K)), *wf = up(w, (size_t)(N * K));
    mm_linear_fwd(out, xf, wf, NULL, M, N, K, NULL);
    free(xf), free(wf);
    return 0;
}
int bf16_gemm_batched_cuda(fp8_lt *h, int w_trans, const uint16_t *x, int64_t ldx, int64_t sx, const uint16_t *w,
                           int64_t ldw, int64_t sw, uint16_t *out, int64_t ldo, int64_t so, int64_t M, int64_t N,
                           int64_t K, int64_t batch, void *stream) {
    (void)h, (void)stream;
    A16(x); A16(w); A16(out);
    float *wf = malloc((size_t)(N * K) * sizeof(float)), *xr = malloc((size_t)K * sizeof(float));
    for (int64_t b = 0; b < batch; b++) {
        for (int64_t j = 0; j < N; j++)   /* W_b as [N, K] */
            for (int64_t k = 0; k < K; k++) wf[j * K + k] = bf16_to_f32(w_trans ? w[b * sw + j * ldw + k] : w[b * sw + k * ldw + j]);
        for (int64_t i = 0; i < M; i++) {
            for (int64_t k = 0; k < K; k++) xr[k] = bf16_to_f32(x[b * sx + i * ldx + k]);
            for (int64_t j = 0; j < N; j++) {
                float acc = 0;
                for (int64_t k = 0; k < K; k++) acc += xr[k] * wf[j * K + k];
                out[b * so + i * ldo + j] = f32_to_bf16(acc);
            }
        }
    }
    free(wf), free(xr);
    return 0;
}
int ds_rmsnorm_cuda(uint16_t *x, int64_t ldx, const uint16_t *res, const float *w, int64_t M, int64_t D, float eps,
                    uint16_t *y, int64_t ldy, void *stream) {
    (void)stream;
    FAKE_CHECK(D > 0 && ldx >= D && ldy >= D);
    float *r = malloc((size_t)D * sizeof(float)), *o = malloc((size_t)D * sizeof(float));
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < D; j++) {
            float v = bf16_to_f32(x[i * ldx + j]);
            if (res) {   /* the fused residual add, stored rounded */
                x[i * ldx + j] = f32_to_bf16(v + bf16_to_f32(res[i * ldx + j]));
                v = bf16_to_f32(x[i * ldx + j]);
            }
            r[j] = v;
        }
        rmsnorm_fwd(o, NULL, r, w, 1, D, eps, NULL);
        cvt_f32_to_bf16(o, y + i * ldy, (size_t)D);
    }
    free(r), free(o);
    return 0;
}
int ds_rope_cuda(uint16_t *x, int64_t T, int64_t row_stride, int64_t H, int64_t vec_stride, int64_t dim,
                 const int32_t *pos, const float *inv_freq, float cs_scale, void *stream) {
    (void)stream;
    FAKE_CHECK(dim > 0 && dim % 2 == 0 && dim <= 512);
    int64_t half = dim / 2;
    float *c = malloc((size_t)(T * half) * sizeof(float)), *s = malloc((size_t)(T * half) * sizeof(float));
    float *f = malloc((size_t)(T * H * dim) * sizeof(float));
    yarn_tables(c, s, pos, T, inv_freq, half, cs_scale);
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) cvt_bf16_to_f32(x + t * row_stride + h * vec_stride, f + (t * H + h) * dim, (size_t)dim);
    yarn_rope_apply(f, T, H * dim, H, dim, dim, c, s, true, NULL);
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) cvt_f32_to_bf16(f + (t * H + h) * dim, x + t * row_stride + h * vec_stride, (size_t)dim);
    free(c), free(s), free(f);
    return 0;
}
/* kernels/cuda/ds_mla.cu's split plan (64 heads per CTA, 32-row chunks) */
size_t mla_decode_workspace_bytes(int64_t n, int64_t H, int64_t max_ctx) {
    int64_t ctas = n * ((H + 63) / 64), want = (2 * FAKE_SMS + ctas - 1) / ctas, most = (max_ctx + 255) / 256;
    int64_t ns = want < most ? want : most;
    if (ns < 1) ns = 1;
    if (ns > 64) ns = 64;
    int64_t rps = (max_ctx + ns - 1) / ns;
    rps = (rps + 31) / 32 * 32;
    ns = (max_ctx + rps - 1) / rps;
    return ns > 1 ? (size_t)(n * H) * (size_t)ns * (512 + 1) * sizeof(float) : 0;
}
int mla_cache_append_cuda(const uint16_t *rows, int64_t n, const int32_t *slot, void *kv, float *kv_scale,
                          void *stream) {
    (void)stream;
    FAKE_CHECK(kv_scale == NULL);
    A16(rows); A16(kv);
    for (int64_t i = 0; i < n; i++) memcpy((uint16_t *)kv + (int64_t)slot[i] * 576, rows + i * 576, 576 * 2);
    return 0;
}
/* out[i, h] = Σ_j softmax_j(scale · q[i, h]·row_j) · c_j over the first ctx[i] rows of the sequence */
int mla_decode_cuda(const mla_dims *d, const uint16_t *q, int64_t n, const void *kv, const float *kv_scale,
                    int64_t page, const int32_t *block_table, int64_t bt_stride, const int32_t *seq_of,
                    const int32_t *ctx, int64_t max_ctx, void *ws, size_t ws_bytes, uint16_t *out, void *stream) {
    (void)stream;
    FAKE_CHECK(d->kv_rank == 512 && d->rope_dim == 64 && d->n_heads % 16 == 0 && page > 0 && kv_scale == NULL);
    size_t need = mla_decode_workspace_bytes(n, d->n_heads, max_ctx);
    FAKE_CHECK(ws_bytes >= need);
    if (need) memset(ws, 0, need);
    A16(q); A16(kv); A16(out);
    const uint16_t *cache = kv;
    int64_t H = d->n_heads, DL = 576;
    float *p = malloc((size_t)max_ctx * sizeof(float)), *o = malloc(512 * sizeof(float)), *qf = malloc((size_t)DL * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        FAKE_CHECK(ctx[i] >= 1 && ctx[i] <= max_ctx);
        const int32_t *bt = block_table + (int64_t)(seq_of ? seq_of[i] : i) * bt_stride;
        for (int64_t h = 0; h < H; h++) {
            cvt_bf16_to_f32(q + (i * H + h) * DL, qf, (size_t)DL);
            float mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < ctx[i]; j++) {
                const uint16_t *row = cache + ((int64_t)bt[j / page] * page + j % page) * DL;
                float sc = 0;
                for (int64_t c = 0; c < DL; c++) sc += qf[c] * bf16_to_f32(row[c]);
                p[j] = sc * d->scale;
                mx = p[j] > mx ? p[j] : mx;
            }
            for (int64_t j = 0; j < ctx[i]; j++) sum += p[j] = expf(p[j] - mx);
            memset(o, 0, 512 * sizeof(float));
            for (int64_t j = 0; j < ctx[i]; j++) {
                const uint16_t *row = cache + ((int64_t)bt[j / page] * page + j % page) * DL;
                for (int64_t c = 0; c < 512; c++) o[c] += p[j] / sum * bf16_to_f32(row[c]);
            }
            cvt_f32_to_bf16(o, out + (i * H + h) * 512, 512);
        }
    }
    free(p), free(o), free(qf);
    return 0;
}
int moe_route_cuda(const moe_router_cfg *c, const float *logits, const float *bias, int64_t n, int64_t stride,
                   int32_t *idx, float *w, void *stream) {
    (void)stream;
    FAKE_CHECK(stride >= c->top_k && c->n_experts <= 1024 && c->top_k <= 32);
    int32_t ti[32];
    float tw[32];
    for (int64_t t = 0; t < n; t++) {
        int rc = moe_route(c, logits + t * c->n_experts, bias, 1, ti, tw);
        if (rc) return rc;
        memcpy(idx + t * stride, ti, (size_t)c->top_k * sizeof *ti);
        memcpy(w + t * stride, tw, (size_t)c->top_k * sizeof *tw);
    }
    return 0;
}
int moe_permute_cuda(const int32_t *idx, int64_t n_slots, int64_t n_experts, int32_t *offsets, int32_t *row_of_slot,
                     int32_t *slot_of_row, void *stream) {
    (void)stream;
    FAKE_CHECK(n_experts <= 4096);
    memset(offsets, 0, (size_t)(n_experts + 1) * sizeof *offsets);
    for (int64_t i = 0; i < n_slots; i++)
        if (idx[i] >= 0 && idx[i] < n_experts) offsets[idx[i] + 1]++;
    for (int64_t e = 0; e < n_experts; e++) offsets[e + 1] += offsets[e];
    int32_t *fill = malloc((size_t)n_experts * sizeof *fill);
    memcpy(fill, offsets, (size_t)n_experts * sizeof *fill);
    for (int64_t i = 0; i < n_slots; i++) {
        if (idx[i] < 0 || idx[i] >= n_experts) {
            row_of_slot[i] = -1;
            continue;
        }
        int32_t r = fill[idx[i]]++;
        row_of_slot[i] = r;
        slot_of_row[r] = (int32_t)i;
    }
    free(fill);
    return 0;
}
int moe_gather_rows_cuda(const void *src, int64_t row_bytes, const int32_t *slot_of_row, int64_t n_rows,
                         int64_t slots_per_token, void *dst, void *stream) {
    (void)stream;
    for (int64_t r = 0; r < n_rows; r++)
        memcpy((char *)dst + r * row_bytes, (const char *)src + (slot_of_row[r] / slots_per_token) * row_bytes,
               (size_t)row_bytes);
    for (int i = 0; fake_fp8_exact && i < 16; i++)   /* e4m3 rows: their exact values move along */
        if (fake_exact[i].q == src && fake_exact[i].K == row_bytes) {
            float *x = malloc((size_t)(n_rows * row_bytes) * sizeof(float) + 1);
            for (int64_t r = 0; r < n_rows; r++)
                memcpy(x + r * row_bytes, fake_exact[i].x + (slot_of_row[r] / slots_per_token) * row_bytes,
                       (size_t)row_bytes * sizeof(float));
            fake_exact_put(dst, x, n_rows, row_bytes);
            break;
        }
    return 0;
}
int moe_combine_cuda(const uint16_t *y, const int32_t *row_of_slot, const float *w, int64_t n, int64_t slots,
                     int64_t dim, const uint16_t *base, uint16_t *out, void *stream) {
    (void)stream;
    FAKE_CHECK(dim % 2 == 0);
    A16(y); A16(out);
    if (base) A16(base);
    float *acc = malloc((size_t)dim * sizeof(float));
    for (int64_t t = 0; t < n; t++) {
        for (int64_t j = 0; j < dim; j++) acc[j] = base ? bf16_to_f32(base[t * dim + j]) : 0.0f;
        for (int64_t k = 0; k < slots; k++) {
            int32_t r = row_of_slot[t * slots + k];
            if (r < 0) continue;
            float wt = w[t * slots + k];
            for (int64_t j = 0; j < dim; j++) acc[j] += wt * bf16_to_f32(y[(int64_t)r * dim + j]);
        }
        cvt_f32_to_bf16(acc, out + t * dim, (size_t)dim);
    }
    free(acc);
    return 0;
}
int moe_slab_pack_cuda(const int32_t *idx, int64_t n, int64_t K, int64_t n_experts, int64_t P, int64_t cap,
                       int32_t none, int32_t slot0, int32_t *slot, int32_t *lexp, int32_t *comb, void *stream) {
    (void)stream;
    return moe_slab_pack(idx, n, K, n_experts, P, cap, none, slot0, slot, lexp, comb);
}
size_t smp_cuda_workspace_bytes(int64_t n, int64_t V) { return (size_t)(8 * n * V); }
/* smp_sample on each row with its own params and uniform, smp_logprob of the drawn id */
int smp_sample_cuda(const float *logits, int64_t n, int64_t V, const smp_params *params, const uint64_t *rng,
                    void *ws, size_t ws_bytes, int32_t *tokens, float *logprob, void *stream) {
    (void)stream;
    FAKE_CHECK(ws_bytes >= smp_cuda_workspace_bytes(n, V));
    A16(logits);
    memset(ws, 0, smp_cuda_workspace_bytes(n, V));
    void *hws = malloc(smp_workspace_bytes(V));
    int rc = 0;
    for (int64_t i = 0; i < n && !rc; i++) {
        FAKE_CHECK(smp_check(&params[i]) == 0);
        rc = smp_sample(logits + i * V, V, &params[i], smp_uniform(rng[3 * i], rng[3 * i + 1], rng[3 * i + 2]), hws,
                        &tokens[i]);
        if (!rc && logprob) logprob[i] = smp_logprob(logits + i * V, V, tokens[i]);
    }
    free(hws);
    return rc;
}

/* smp_top_logprobs on each row */
int smp_top_logprobs_cuda(const float *logits, int64_t n, int64_t V, int k, int32_t *ids, float *logprobs,
                          void *stream) {
    (void)stream;
    FAKE_CHECK(k >= 1 && k <= SMP_TOP_MAX && k <= V);
    for (int64_t i = 0; i < n; i++) smp_top_logprobs(logits + i * V, V, k, ids + i * k, logprobs + i * k);
    return 0;
}

/* ---- DeepSeek-V3 over several ranks: NCCL's all-to-all(v) (see fake_cuda.h) ------------------ */

static size_t fake_a2a_sent;
size_t fake_a2a_bytes(void) { return fake_a2a_sent; }
int comm_alltoallv(rt_comm *c, const void *send, const size_t *send_counts, const size_t *send_displs, void *recv,
                   const size_t *recv_counts, const size_t *recv_displs, rt_dtype dt) {
    int P = comm_size(c), ex = -1;
    for (int q = 0; q < P; q++) fake_a2a_sent += send_counts[q] * rt_dtype_size(dt);
    int rc = fake_real_comm_alltoallv(c, send, send_counts, send_displs, recv, recv_counts, recv_displs, dt);
    for (int i = 0; fake_fp8_exact && dt == RT_DT_U8 && i < 16; i++)
        if (fake_exact[i].q == send) ex = i;
    /* every rank takes part in the exchange of exact values when one does: the flag and the buffer's
     * role (a dispatched e4m3 buffer) are the same on all ranks */
    if (rc || !fake_fp8_exact || dt != RT_DT_U8) return rc;
    int64_t K = ex >= 0 ? fake_exact[ex].K : 0, Kall = K;
    rc = fake_real_comm_allreduce(c, &K, &Kall, 1, RT_DT_I64, COMM_MAX);
    if (rc || Kall == 0) return rc;
    size_t *cnt = malloc((size_t)(4 * P) * sizeof *cnt), rows = 0;
    for (int q = 0; q < P; q++) {   /* rows of Kall bytes → Kall floats */
        FAKE_CHECK(send_counts[q] % (size_t)Kall == 0 && recv_counts[q] % (size_t)Kall == 0);
        cnt[q] = send_counts[q], cnt[P + q] = send_displs[q], cnt[2 * P + q] = recv_counts[q];
        cnt[3 * P + q] = recv_displs[q];
        rows = recv_displs[q] + recv_counts[q] > rows ? recv_displs[q] + recv_counts[q] : rows;
    }
    float *x = malloc(rows * sizeof(float) + 1);
    const float *src = ex >= 0 ? fake_exact[ex].x : x;
    rc = fake_real_comm_alltoallv(c, src, cnt, cnt + P, x, cnt + 2 * P, cnt + 3 * P, RT_DT_F32);
    free(cnt);
    if (rc) {
        free(x);
        return rc;
    }
    fake_exact_put(recv, x, (int64_t)(rows / (size_t)Kall), Kall);
    return 0;
}

/* ---- CUDA graphs of teacher/ds_cuda.c's decode passes: the recording wrappers (fake_cuda.h) -- */
#define P_(x) ((fake_arg){.p = (void *)(x)})
#define I_(x) ((fake_arg){.i = (int64_t)(x)})
#define F_(x) ((fake_arg){.f = (double)(x)})
static int rp_memcpy2d(const fake_arg *a) {
    return fake_cudaMemcpy2DAsync(a[0].p, (size_t)a[1].i, a[2].p, (size_t)a[3].i, (size_t)a[4].i, (size_t)a[5].i,
                                  (cudaMemcpyKind)a[6].i, NULL) != cudaSuccess;
}
cudaError_t fake_g_cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                                     size_t height, cudaMemcpyKind k, cudaStream_t st) {
    if (!fake_capturing(st)) return fake_cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, k, st);
    if (k != cudaMemcpyDeviceToDevice) return cudaErrorInvalidValue;   /* pageable host memory */
    fake_arg *a = fake_record(rp_memcpy2d);
    a[0] = P_(dst), a[1] = I_(dpitch), a[2] = P_(src), a[3] = I_(spitch), a[4] = I_(width), a[5] = I_(height);
    a[6] = I_(k);
    return cudaSuccess;
}
static int rp_act_quant(const fake_arg *a) {
    return fake_fp8_act_quant_cuda(a[0].p, a[1].i, a[2].i, a[3].p, a[4].p, (int)a[5].i, NULL);
}
int fake_g_fp8_act_quant_cuda(const uint16_t *x, int64_t M, int64_t K, uint8_t *q, float *scale, int scale_t,
                              void *stream) {
    if (!fake_capturing(stream)) return fake_fp8_act_quant_cuda(x, M, K, q, scale, scale_t, stream);
    fake_arg *a = fake_record(rp_act_quant);
    a[0] = P_(x), a[1] = I_(M), a[2] = I_(K), a[3] = P_(q), a[4] = P_(scale), a[5] = I_(scale_t);
    return 0;
}
static int rp_swiglu_quant(const fake_arg *a) {
    return fake_fp8_swiglu_quant_cuda(a[0].p, a[1].i, a[2].i, a[3].p, a[4].p, (int)a[5].i, NULL);
}
int fake_g_fp8_swiglu_quant_cuda(const uint16_t *gu, int64_t M, int64_t I, uint8_t *q, float *scale, int scale_t,
                                 void *stream) {
    if (!fake_capturing(stream)) return fake_fp8_swiglu_quant_cuda(gu, M, I, q, scale, scale_t, stream);
    fake_arg *a = fake_record(rp_swiglu_quant);
    a[0] = P_(gu), a[1] = I_(M), a[2] = I_(I), a[3] = P_(q), a[4] = P_(scale), a[5] = I_(scale_t);
    return 0;
}
static int rp_gemm_grouped(const fake_arg *a) {
    return fake_fp8_gemm_grouped_cuda(a[0].p, a[1].p, a[2].p, a[3].p, a[4].p, a[5].i, a[6].i, a[7].i, a[8].i, a[9].p,
                                      NULL);
}
int fake_g_fp8_gemm_grouped_cuda(const uint8_t *x, const float *a_scale, const uint8_t *w, const float *w_scale,
                                 const int32_t *offsets, int64_t G, int64_t max_total_rows, int64_t N, int64_t K,
                                 uint16_t *out, void *stream) {
    if (!fake_capturing(stream))
        return fake_fp8_gemm_grouped_cuda(x, a_scale, w, w_scale, offsets, G, max_total_rows, N, K, out, stream);
    fake_arg *a = fake_record(rp_gemm_grouped);
    a[0] = P_(x), a[1] = P_(a_scale), a[2] = P_(w), a[3] = P_(w_scale), a[4] = P_(offsets), a[5] = I_(G);
    a[6] = I_(max_total_rows), a[7] = I_(N), a[8] = I_(K), a[9] = P_(out);
    return 0;
}
static int rp_gemm_dense(const fake_arg *a) {
    return fake_fp8_gemm_dense_cuda(a[0].p, a[1].p, a[2].p, a[3].p, a[4].i, a[5].i, a[6].i, (int)a[7].i, a[8].p,
                                    (size_t)a[9].i, a[10].p, NULL);
}
int fake_g_fp8_gemm_dense_cuda(const uint8_t *x, const float *a_scale, const uint8_t *w, const float *w_scale, int64_t M,
                               int64_t N, int64_t K, int splits, void *ws, size_t ws_bytes, uint16_t *out, void *stream) {
    if (!fake_capturing(stream))
        return fake_fp8_gemm_dense_cuda(x, a_scale, w, w_scale, M, N, K, splits, ws, ws_bytes, out, stream);
    fake_arg *a = fake_record(rp_gemm_dense);
    a[0] = P_(x), a[1] = P_(a_scale), a[2] = P_(w), a[3] = P_(w_scale), a[4] = I_(M), a[5] = I_(N), a[6] = I_(K);
    a[7] = I_(splits), a[8] = P_(ws), a[9] = I_(ws_bytes), a[10] = P_(out);
    return 0;
}
static int rp_bf16_gemm(const fake_arg *a) {
    return fake_bf16_gemm_f32_cuda(a[0].p, a[1].p, a[2].p, a[3].i, a[4].i, a[5].i, a[6].p, NULL);
}
int fake_g_bf16_gemm_f32_cuda(fp8_lt *h, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N, int64_t K,
                              float *out, void *stream) {
    if (!fake_capturing(stream)) return fake_bf16_gemm_f32_cuda(h, x, w, M, N, K, out, stream);
    fake_arg *a = fake_record(rp_bf16_gemm);
    a[0] = P_(h), a[1] = P_(x), a[2] = P_(w), a[3] = I_(M), a[4] = I_(N), a[5] = I_(K), a[6] = P_(out);
    return 0;
}
static int rp_bf16_batched(const fake_arg *a) {
    return fake_bf16_gemm_batched_cuda(a[0].p, (int)a[1].i, a[2].p, a[3].i, a[4].i, a[5].p, a[6].i, a[7].i, a[8].p,
                                       a[9].i, a[10].i, a[11].i, a[12].i, a[13].i, a[14].i, NULL);
}
int fake_g_bf16_gemm_batched_cuda(fp8_lt *h, int w_trans, const uint16_t *x, int64_t ldx, int64_t sx, const uint16_t *w,
                                  int64_t ldw, int64_t sw, uint16_t *out, int64_t ldo, int64_t so, int64_t M, int64_t N,
                                  int64_t K, int64_t batch, void *stream) {
    if (!fake_capturing(stream))
        return fake_bf16_gemm_batched_cuda(h, w_trans, x, ldx, sx, w, ldw, sw, out, ldo, so, M, N, K, batch, stream);
    fake_arg *a = fake_record(rp_bf16_batched);
    a[0] = P_(h), a[1] = I_(w_trans), a[2] = P_(x), a[3] = I_(ldx), a[4] = I_(sx), a[5] = P_(w), a[6] = I_(ldw);
    a[7] = I_(sw), a[8] = P_(out), a[9] = I_(ldo), a[10] = I_(so), a[11] = I_(M), a[12] = I_(N), a[13] = I_(K);
    a[14] = I_(batch);
    return 0;
}
static int rp_ds_rmsnorm(const fake_arg *a) {
    return fake_ds_rmsnorm_cuda(a[0].p, a[1].i, a[2].p, a[3].p, a[4].i, a[5].i, (float)a[6].f, a[7].p, a[8].i, NULL);
}
int fake_g_ds_rmsnorm_cuda(uint16_t *x, int64_t ldx, const uint16_t *res, const float *w, int64_t M, int64_t D,
                           float eps, uint16_t *y, int64_t ldy, void *stream) {
    if (!fake_capturing(stream)) return fake_ds_rmsnorm_cuda(x, ldx, res, w, M, D, eps, y, ldy, stream);
    fake_arg *a = fake_record(rp_ds_rmsnorm);
    a[0] = P_(x), a[1] = I_(ldx), a[2] = P_(res), a[3] = P_(w), a[4] = I_(M), a[5] = I_(D), a[6] = F_(eps);
    a[7] = P_(y), a[8] = I_(ldy);
    return 0;
}
static int rp_ds_rope(const fake_arg *a) {
    return fake_ds_rope_cuda(a[0].p, a[1].i, a[2].i, a[3].i, a[4].i, a[5].i, a[6].p, a[7].p, (float)a[8].f, NULL);
}
int fake_g_ds_rope_cuda(uint16_t *x, int64_t T, int64_t row_stride, int64_t H, int64_t vec_stride, int64_t dim,
                        const int32_t *pos, const float *inv_freq, float cs_scale, void *stream) {
    if (!fake_capturing(stream))
        return fake_ds_rope_cuda(x, T, row_stride, H, vec_stride, dim, pos, inv_freq, cs_scale, stream);
    fake_arg *a = fake_record(rp_ds_rope);
    a[0] = P_(x), a[1] = I_(T), a[2] = I_(row_stride), a[3] = I_(H), a[4] = I_(vec_stride), a[5] = I_(dim);
    a[6] = P_(pos), a[7] = P_(inv_freq), a[8] = F_(cs_scale);
    return 0;
}
static int rp_mla_decode(const fake_arg *a) {
    mla_dims d = {.n_heads = a[0].i, .nope_dim = a[1].i, .rope_dim = a[2].i, .v_dim = a[3].i, .kv_rank = a[4].i,
                  .scale = (float)a[5].f};
    return fake_mla_decode_cuda(&d, a[6].p, a[7].i, a[8].p, a[9].p, a[10].i, a[11].p, a[12].i, a[13].p, a[14].p,
                                a[15].i, a[16].p, (size_t)a[17].i, a[18].p, NULL);
}
int fake_g_mla_decode_cuda(const mla_dims *d, const uint16_t *q, int64_t n, const void *kv, const float *kv_scale,
                           int64_t page, const int32_t *block_table, int64_t bt_stride, const int32_t *seq_of,
                           const int32_t *ctx, int64_t max_ctx, void *ws, size_t ws_bytes, uint16_t *out, void *stream) {
    if (!fake_capturing(stream))
        return fake_mla_decode_cuda(d, q, n, kv, kv_scale, page, block_table, bt_stride, seq_of, ctx, max_ctx, ws,
                                    ws_bytes, out, stream);
    fake_arg *a = fake_record(rp_mla_decode);   /* the dims by value, as a kernel's parameters */
    a[0] = I_(d->n_heads), a[1] = I_(d->nope_dim), a[2] = I_(d->rope_dim), a[3] = I_(d->v_dim), a[4] = I_(d->kv_rank);
    a[5] = F_(d->scale), a[6] = P_(q), a[7] = I_(n), a[8] = P_(kv), a[9] = P_(kv_scale), a[10] = I_(page);
    a[11] = P_(block_table), a[12] = I_(bt_stride), a[13] = P_(seq_of), a[14] = P_(ctx), a[15] = I_(max_ctx);
    a[16] = P_(ws), a[17] = I_(ws_bytes), a[18] = P_(out);
    return 0;
}
static int rp_mla_append(const fake_arg *a) {
    return fake_mla_cache_append_cuda(a[0].p, a[1].i, a[2].p, a[3].p, a[4].p, NULL);
}
int fake_g_mla_cache_append_cuda(const uint16_t *rows, int64_t n, const int32_t *slot, void *kv, float *kv_scale,
                                 void *stream) {
    if (!fake_capturing(stream)) return fake_mla_cache_append_cuda(rows, n, slot, kv, kv_scale, stream);
    fake_arg *a = fake_record(rp_mla_append);
    a[0] = P_(rows), a[1] = I_(n), a[2] = P_(slot), a[3] = P_(kv), a[4] = P_(kv_scale);
    return 0;
}
static int rp_moe_route(const fake_arg *a) {
    return fake_moe_route_cuda(a[0].p, a[1].p, a[2].p, a[3].i, a[4].i, a[5].p, a[6].p, NULL);
}
int fake_g_moe_route_cuda(const moe_router_cfg *c, const float *logits, const float *bias, int64_t n, int64_t stride,
                          int32_t *idx, float *w, void *stream) {
    if (!fake_capturing(stream)) return fake_moe_route_cuda(c, logits, bias, n, stride, idx, w, stream);
    fake_arg *a = fake_record(rp_moe_route);   /* c: the model's, alive as long as the graph */
    a[0] = P_(c), a[1] = P_(logits), a[2] = P_(bias), a[3] = I_(n), a[4] = I_(stride), a[5] = P_(idx), a[6] = P_(w);
    return 0;
}
static int rp_moe_permute(const fake_arg *a) {
    return fake_moe_permute_cuda(a[0].p, a[1].i, a[2].i, a[3].p, a[4].p, a[5].p, NULL);
}
int fake_g_moe_permute_cuda(const int32_t *idx, int64_t n_slots, int64_t n_experts, int32_t *offsets,
                            int32_t *row_of_slot, int32_t *slot_of_row, void *stream) {
    if (!fake_capturing(stream))
        return fake_moe_permute_cuda(idx, n_slots, n_experts, offsets, row_of_slot, slot_of_row, stream);
    fake_arg *a = fake_record(rp_moe_permute);
    a[0] = P_(idx), a[1] = I_(n_slots), a[2] = I_(n_experts), a[3] = P_(offsets), a[4] = P_(row_of_slot);
    a[5] = P_(slot_of_row);
    return 0;
}
static int rp_moe_gather(const fake_arg *a) {
    return fake_moe_gather_rows_cuda(a[0].p, a[1].i, a[2].p, a[3].i, a[4].i, a[5].p, NULL);
}
int fake_g_moe_gather_rows_cuda(const void *src, int64_t row_bytes, const int32_t *slot_of_row, int64_t n_rows,
                                int64_t slots_per_token, void *dst, void *stream) {
    if (!fake_capturing(stream))
        return fake_moe_gather_rows_cuda(src, row_bytes, slot_of_row, n_rows, slots_per_token, dst, stream);
    fake_arg *a = fake_record(rp_moe_gather);
    a[0] = P_(src), a[1] = I_(row_bytes), a[2] = P_(slot_of_row), a[3] = I_(n_rows), a[4] = I_(slots_per_token);
    a[5] = P_(dst);
    return 0;
}
static int rp_moe_combine(const fake_arg *a) {
    return fake_moe_combine_cuda(a[0].p, a[1].p, a[2].p, a[3].i, a[4].i, a[5].i, a[6].p, a[7].p, NULL);
}
int fake_g_moe_combine_cuda(const uint16_t *y, const int32_t *row_of_slot, const float *w, int64_t n, int64_t slots,
                            int64_t dim, const uint16_t *base, uint16_t *out, void *stream) {
    if (!fake_capturing(stream)) return fake_moe_combine_cuda(y, row_of_slot, w, n, slots, dim, base, out, stream);
    fake_arg *a = fake_record(rp_moe_combine);
    a[0] = P_(y), a[1] = P_(row_of_slot), a[2] = P_(w), a[3] = I_(n), a[4] = I_(slots), a[5] = I_(dim), a[6] = P_(base);
    a[7] = P_(out);
    return 0;
}
static int rp_slab_pack(const fake_arg *a) {
    return fake_moe_slab_pack_cuda(a[0].p, a[1].i, a[2].i, a[3].i, a[4].i, a[5].i, (int32_t)a[6].i, (int32_t)a[10].i,
                                   a[7].p, a[8].p, a[9].p, NULL);
}
int fake_g_moe_slab_pack_cuda(const int32_t *idx, int64_t n, int64_t K, int64_t n_experts, int64_t P, int64_t cap,
                              int32_t none, int32_t slot0, int32_t *slot, int32_t *lexp, int32_t *comb, void *stream) {
    if (!fake_capturing(stream))
        return fake_moe_slab_pack_cuda(idx, n, K, n_experts, P, cap, none, slot0, slot, lexp, comb, stream);
    int rc = moe_slab_check(n, K, n_experts, P, cap);   /* on the host, at the call */
    if (rc) return rc;
    fake_arg *a = fake_record(rp_slab_pack);
    a[0] = P_(idx), a[1] = I_(n), a[2] = I_(K), a[3] = I_(n_experts), a[4] = I_(P), a[5] = I_(cap), a[6] = I_(none);
    a[7] = P_(slot), a[8] = P_(lexp), a[9] = P_(comb), a[10] = I_(slot0);
    return 0;
}
/* the counts and displacements are the caller's host arrays: copied into the record (P ≤ 16) */
static int rp_alltoallv(const fake_arg *a) {
    const size_t *c = a[5].p;
    int P = (int)a[4].i;
    return fake_comm_alltoallv(a[0].p, a[1].p, c, c + P, a[2].p, c + 2 * P, c + 3 * P, (rt_dtype)a[3].i);
}
int fake_g_comm_alltoallv(rt_comm *c, const void *send, const size_t *send_counts, const size_t *send_displs, void *recv,
                          const size_t *recv_counts, const size_t *recv_displs, rt_dtype dt) {
    if (!fake_cap_graph) return fake_comm_alltoallv(c, send, send_counts, send_displs, recv, recv_counts, recv_displs, dt);
    int P = comm_size(c);
    FAKE_CHECK(P <= 16);
    /* kept (reachable) as long as the process: a graph's constants */
    static size_t **kept, n_kept;
    size_t *cnt = malloc((size_t)(4 * P) * sizeof *cnt);
    kept = realloc(kept, (n_kept + 1) * sizeof *kept);
    FAKE_CHECK(cnt && kept);
    kept[n_kept++] = cnt;
    memcpy(cnt, send_counts, (size_t)P * sizeof *cnt), memcpy(cnt + P, send_displs, (size_t)P * sizeof *cnt);
    memcpy(cnt + 2 * P, recv_counts, (size_t)P * sizeof *cnt), memcpy(cnt + 3 * P, recv_displs, (size_t)P * sizeof *cnt);
    fake_arg *a = fake_record(rp_alltoallv);
    a[0] = P_(c), a[1] = P_(send), a[2] = P_(recv), a[3] = I_(dt), a[4] = I_(P), a[5] = P_(cnt);
    return 0;
}
#undef P_
#undef I_
#undef F_

/* ==== fault injection (see fake_cuda.h's last block) ======================================== *
 * Kept in this one block: fake_f_… wrappers in front of the recording ones (fake_g_…), a count
 * per kind of what runs, and a check recorded in front of each call a capture records. */
#include <stdio.h>

enum { FAKE_F_KERNEL = 1, FAKE_F_MEMCPY = 2, FAKE_F_NCCL = 3 };
static struct {
    int read;                 /* FAKE_CUDA_FAIL looked at (or fake_fault_set called) */
    int kind;                 /* what fails (0: nothing) */
    long long n, seen[4];     /* the N-th of kind fails; how many of each ran */
    int fired;                /* the sticky error: every later call fails */
    int in_launch;            /* a check of the graph being launched fired */
} fake_ft;

static int fake_fault_rank(void) {   /* the job's rank, as mpirun / srun tell it */
    const char *r = getenv("OMPI_COMM_WORLD_RANK");
    if (!r) r = getenv("PMI_RANK");
    return r ? atoi(r) : 0;
}
int fake_fault_set(const char *spec) {
    memset(&fake_ft, 0, sizeof fake_ft);
    fake_ft.read = 1;
    if (!spec || !*spec) return 0;
    char kind[16];
    long long n = 0;
    int rank = -1, used = 0;
    if (sscanf(spec, "%15[a-z]:%lld%n", kind, &n, &used) != 2 || n < 1) return -1;
    if (spec[used] == '@') {
        int u2 = 0;
        if (sscanf(spec + used, "@%d%n", &rank, &u2) != 1 || spec[used + u2]) return -1;
    } else if (spec[used]) {
        return -1;
    }
    int k = !strcmp(kind, "kernel") ? FAKE_F_KERNEL : !strcmp(kind, "memcpy") ? FAKE_F_MEMCPY
          : !strcmp(kind, "nccl") ? FAKE_F_NCCL : 0;
    if (!k) return -1;
    if (rank < 0 || rank == fake_fault_rank()) fake_ft.kind = k, fake_ft.n = n;
    return 0;
}
int fake_fault_fired(void) { return fake_ft.fired; }
static void fake_fault_init(void) {
    if (!fake_ft.read) FAKE_CHECK(fake_fault_set(getenv("FAKE_CUDA_FAIL")) == 0);   /* KIND:N[@RANK] */
}
/* One call of kind runs now: 1 when it fails (the N-th, or any after the sticky error). */
static int fake_fault_now(int kind) {
    fake_fault_init();
    if (fake_ft.fired) return 1;
    if (++fake_ft.seen[kind] == fake_ft.n && kind == fake_ft.kind) fake_ft.fired = kind;
    return fake_ft.fired != 0;
}
static int rp_fault(const fake_arg *a) {   /* a graph's check: the call after it fails */
    if (!fake_fault_now((int)a[0].i)) return 0;
    fake_ft.in_launch = 1;
    return 1;
}
static void fake_fault_record(int kind) { fake_record(rp_fault)[0].i = kind; }

const char *fake_f_cudaGetErrorString(cudaError_t e) {
    return e == fake_cudaErrorLaunchFailure ? "unspecified launch failure" : fake_cudaGetErrorString(e);
}
/* a kernel: 0 (go on), or the status its launch check returns (kernels/cuda/common.cuh) */
static int fake_f_kernel(const char *name, const void *stream) {
    if (!fake_fault_now(FAKE_F_KERNEL)) {   /* eager, or into a capture (a launch that fails there: its host checks) */
        if (fake_capturing(stream)) fake_fault_record(FAKE_F_KERNEL);
        return 0;
    }
    return rt_fail(RT_EINTERNAL, "cudaGetLastError() failed after %s: %s", name,
                   fake_f_cudaGetErrorString(fake_cudaErrorLaunchFailure));
}
/* a collective (NCCL enqueues on its own stream: any capture records it): 0, or comm_nccl.c's status */
static int fake_f_nccl(const char *call) {
    fake_fault_init();
    if (fake_cap_graph) {
        fake_fault_record(FAKE_F_NCCL);
        return 0;
    }
    if (!fake_fault_now(FAKE_F_NCCL)) return 0;
    return rt_fail(RT_EINTERNAL, "NCCL failed in %s: unhandled cuda error", call);
}
#define FAKE_FK(name, stream)                         \
    do {                                              \
        int frc_ = fake_f_kernel(#name, stream);      \
        if (frc_) return frc_;                        \
    } while (0)

cudaError_t fake_f_cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s) {
    fake_fault_init();
    if (fake_ft.fired) return fake_cudaErrorLaunchFailure;
    fake_ft.in_launch = 0;
    cudaError_t e = fake_cudaGraphLaunch(x, s);
    return e != cudaSuccess && fake_ft.in_launch ? fake_cudaErrorLaunchFailure : e;
}
cudaError_t fake_f_cudaStreamSynchronize(cudaStream_t s) {
    fake_fault_init();
    if (fake_ft.fired && !fake_capturing(s)) return fake_cudaErrorLaunchFailure;
    return fake_g_cudaStreamSynchronize(s);
}
cudaError_t fake_f_cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st) {
    fake_fault_init();
    if (fake_capturing(st)) {
        if (k == cudaMemcpyDeviceToDevice) fake_fault_record(FAKE_F_MEMCPY);
    } else if (fake_fault_now(FAKE_F_MEMCPY)) {
        return fake_cudaErrorLaunchFailure;
    }
    return fake_g_cudaMemcpyAsync(d, s, n, k, st);
}
cudaError_t fake_f_cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                                     size_t height, cudaMemcpyKind k, cudaStream_t st) {
    fake_fault_init();
    if (fake_capturing(st)) {
        if (k == cudaMemcpyDeviceToDevice) fake_fault_record(FAKE_F_MEMCPY);
    } else if (fake_fault_now(FAKE_F_MEMCPY)) {
        return fake_cudaErrorLaunchFailure;
    }
    return fake_g_cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, k, st);
}
int fake_f_comm_allreduce(rt_comm *c, const void *send, void *recv, size_t count, rt_dtype dt, comm_op op) {
    int rc = fake_f_nccl("ncclAllReduce");
    return rc ? rc : fake_g_comm_allreduce(c, send, recv, count, dt, op);
}
int fake_f_comm_allgather(rt_comm *c, const void *send, void *recv, size_t send_count, rt_dtype dt) {
    int rc = fake_f_nccl("ncclAllGather");
    return rc ? rc : fake_g_comm_allgather(c, send, recv, send_count, dt);
}
int fake_f_comm_alltoallv(rt_comm *c, const void *send, const size_t *send_counts, const size_t *send_displs, void *recv,
                          const size_t *recv_counts, const size_t *recv_displs, rt_dtype dt) {
    int rc = fake_f_nccl("ncclGroupEnd");   /* comm_nccl.c's all-to-all(v): sends and receives in a group */
    return rc ? rc : fake_g_comm_alltoallv(c, send, send_counts, send_displs, recv, recv_counts, recv_displs, dt);
}
/* the kernels: the check, then the recording wrapper */
int fake_f_rmsnorm_heads_fwd_cuda(uint16_t *x, int64_t ld, int64_t T, int64_t H, int64_t hd, const uint16_t *w, float eps, void *stream) {
    FAKE_FK(rmsnorm_heads_fwd_cuda, stream);
    return fake_g_rmsnorm_heads_fwd_cuda(x, ld, T, H, hd, w, eps, stream);
}
int fake_f_embed_fwd_rows_cuda(uint16_t *out, const uint16_t *table, const int32_t *ids, int64_t M, int64_t D, int64_t v0, int64_t nv, void *stream) {
    FAKE_FK(embed_fwd_rows_cuda, stream);
    return fake_g_embed_fwd_rows_cuda(out, table, ids, M, D, v0, nv, stream);
}
int fake_f_embed_fwd_cuda(uint16_t *out, const uint16_t *table, const int32_t *ids, int64_t M, int64_t D, void *stream) {
    FAKE_FK(embed_fwd_cuda, stream);
    return fake_g_embed_fwd_cuda(out, table, ids, M, D, stream);
}
int fake_f_rmsnorm_fwd_cuda(uint16_t *y, float *rstd, uint16_t *res, const uint16_t *add, const uint16_t *w, int64_t M, int64_t D, float eps, void *stream) {
    FAKE_FK(rmsnorm_fwd_cuda, stream);
    return fake_g_rmsnorm_fwd_cuda(y, rstd, res, add, w, M, D, eps, stream);
}
int fake_f_mm_linear_fwd_cuda(mm_cuda_ctx *c, uint16_t *y, const uint16_t *x, const uint16_t *w, const uint16_t *b, int64_t M, int64_t N, int64_t K, void *stream) {
    FAKE_FK(mm_linear_fwd_cuda, stream);
    return fake_g_mm_linear_fwd_cuda(c, y, x, w, b, M, N, K, stream);
}
int fake_f_rope_apply_cuda_ld(uint16_t *x, int64_t ld, const int32_t *pos, const float *inv_freq, int64_t T, int64_t H, int64_t hd, bool inverse, void *stream) {
    FAKE_FK(rope_apply_cuda_ld, stream);
    return fake_g_rope_apply_cuda_ld(x, ld, pos, inv_freq, T, H, hd, inverse, stream);
}
int fake_f_attn_paged_store_cuda(uint16_t *k_cache, uint16_t *v_cache, const uint16_t *k, const uint16_t *v, int64_t ld, int64_t n, int64_t kd, int64_t bs, int64_t bstride, const int32_t *tables, int64_t table_ld, const int32_t *seq_of, const int32_t *pos, void *stream) {
    FAKE_FK(attn_paged_store_cuda, stream);
    return fake_g_attn_paged_store_cuda(k_cache, v_cache, k, v, ld, n, kd, bs, bstride, tables, table_ld, seq_of, pos, stream);
}
int fake_f_attn_paged_fwd_cuda(uint16_t *o, const uint16_t *q, int64_t ld_q, int64_t n, int64_t Hq, int64_t Hkv, int64_t hd, float scale, const uint16_t *k, const uint16_t *v, int64_t bs, int64_t bstride, const int32_t *tables, int64_t table_ld, const int32_t *seq_of, const int32_t *ctx, int64_t max_ctx, void *ws, void *stream) {
    FAKE_FK(attn_paged_fwd_cuda, stream);
    return fake_g_attn_paged_fwd_cuda(o, q, ld_q, n, Hq, Hkv, hd, scale, k, v, bs, bstride, tables, table_ld, seq_of, ctx, max_ctx, ws, stream);
}
int fake_f_swiglu_fwd_cuda(uint16_t *act, const uint16_t *g, const uint16_t *u, int64_t M, int64_t F, int64_t ld_in, void *stream) {
    FAKE_FK(swiglu_fwd_cuda, stream);
    return fake_g_swiglu_fwd_cuda(act, g, u, M, F, ld_in, stream);
}
int fake_f_mm_gemm_cuda(mm_cuda_ctx *c, void *d, bool d_f32, int64_t ldd, const uint16_t *x, int64_t lda, bool trans_a, const uint16_t *b, int64_t ldb, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, float beta, void *stream) {
    FAKE_FK(mm_gemm_cuda, stream);
    return fake_g_mm_gemm_cuda(c, d, d_f32, ldd, x, lda, trans_a, b, ldb, trans_b, M, N, K, alpha, beta, stream);
}
int fake_f_fp8_act_quant_cuda(const uint16_t *x, int64_t M, int64_t K, uint8_t *q, float *scale, int scale_t, void *stream) {
    FAKE_FK(fp8_act_quant_cuda, stream);
    return fake_g_fp8_act_quant_cuda(x, M, K, q, scale, scale_t, stream);
}
int fake_f_fp8_swiglu_quant_cuda(const uint16_t *gu, int64_t M, int64_t I, uint8_t *q, float *scale, int scale_t, void *stream) {
    FAKE_FK(fp8_swiglu_quant_cuda, stream);
    return fake_g_fp8_swiglu_quant_cuda(gu, M, I, q, scale, scale_t, stream);
}
int fake_f_fp8_gemm_grouped_cuda(const uint8_t *x, const float *a_scale, const uint8_t *w, const float *w_scale, const int32_t *offsets, int64_t G, int64_t max_total_rows, int64_t N, int64_t K, uint16_t *out, void *stream) {
    FAKE_FK(fp8_gemm_grouped_cuda, stream);
    return fake_g_fp8_gemm_grouped_cuda(x, a_scale, w, w_scale, offsets, G, max_total_rows, N, K, out, stream);
}
int fake_f_fp8_gemm_dense_cuda(const uint8_t *x, const float *a_scale, const uint8_t *w, const float *w_scale, int64_t M, int64_t N, int64_t K, int splits, void *ws, size_t ws_bytes, uint16_t *out, void *stream) {
    FAKE_FK(fp8_gemm_dense_cuda, stream);
    return fake_g_fp8_gemm_dense_cuda(x, a_scale, w, w_scale, M, N, K, splits, ws, ws_bytes, out, stream);
}
int fake_f_bf16_gemm_f32_cuda(fp8_lt *h, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N, int64_t K, float *out, void *stream) {
    FAKE_FK(bf16_gemm_f32_cuda, stream);
    return fake_g_bf16_gemm_f32_cuda(h, x, w, M, N, K, out, stream);
}
int fake_f_bf16_gemm_batched_cuda(fp8_lt *h, int w_trans, const uint16_t *x, int64_t ldx, int64_t sx, const uint16_t *w, int64_t ldw, int64_t sw, uint16_t *out, int64_t ldo, int64_t so, int64_t M, int64_t N, int64_t K, int64_t batch, void *stream) {
    FAKE_FK(bf16_gemm_batched_cuda, stream);
    return fake_g_bf16_gemm_batched_cuda(h, w_trans, x, ldx, sx, w, ldw, sw, out, ldo, so, M, N, K, batch, stream);
}
int fake_f_ds_rmsnorm_cuda(uint16_t *x, int64_t ldx, const uint16_t *res, const float *w, int64_t M, int64_t D, float eps, uint16_t *y, int64_t ldy, void *stream) {
    FAKE_FK(ds_rmsnorm_cuda, stream);
    return fake_g_ds_rmsnorm_cuda(x, ldx, res, w, M, D, eps, y, ldy, stream);
}
int fake_f_ds_rope_cuda(uint16_t *x, int64_t T, int64_t row_stride, int64_t H, int64_t vec_stride, int64_t dim, const int32_t *pos, const float *inv_freq, float cs_scale, void *stream) {
    FAKE_FK(ds_rope_cuda, stream);
    return fake_g_ds_rope_cuda(x, T, row_stride, H, vec_stride, dim, pos, inv_freq, cs_scale, stream);
}
int fake_f_mla_decode_cuda(const mla_dims *d, const uint16_t *q, int64_t n, const void *kv, const float *kv_scale, int64_t page, const int32_t *block_table, int64_t bt_stride, const int32_t *seq_of, const int32_t *ctx, int64_t max_ctx, void *ws, size_t ws_bytes, uint16_t *out, void *stream) {
    FAKE_FK(mla_decode_cuda, stream);
    return fake_g_mla_decode_cuda(d, q, n, kv, kv_scale, page, block_table, bt_stride, seq_of, ctx, max_ctx, ws, ws_bytes, out, stream);
}
int fake_f_mla_cache_append_cuda(const uint16_t *rows, int64_t n, const int32_t *slot, void *kv, float *kv_scale, void *stream) {
    FAKE_FK(mla_cache_append_cuda, stream);
    return fake_g_mla_cache_append_cuda(rows, n, slot, kv, kv_scale, stream);
}
int fake_f_moe_route_cuda(const moe_router_cfg *c, const float *logits, const float *bias, int64_t n, int64_t stride, int32_t *idx, float *w, void *stream) {
    FAKE_FK(moe_route_cuda, stream);
    return fake_g_moe_route_cuda(c, logits, bias, n, stride, idx, w, stream);
}
int fake_f_moe_permute_cuda(const int32_t *idx, int64_t n_slots, int64_t n_experts, int32_t *offsets, int32_t *row_of_slot, int32_t *slot_of_row, void *stream) {
    FAKE_FK(moe_permute_cuda, stream);
    return fake_g_moe_permute_cuda(idx, n_slots, n_experts, offsets, row_of_slot, slot_of_row, stream);
}
int fake_f_moe_gather_rows_cuda(const void *src, int64_t row_bytes, const int32_t *slot_of_row, int64_t n_rows, int64_t slots_per_token, void *dst, void *stream) {
    FAKE_FK(moe_gather_rows_cuda, stream);
    return fake_g_moe_gather_rows_cuda(src, row_bytes, slot_of_row, n_rows, slots_per_token, dst, stream);
}
int fake_f_moe_combine_cuda(const uint16_t *y, const int32_t *row_of_slot, const float *w, int64_t n, int64_t slots, int64_t dim, const uint16_t *base, uint16_t *out, void *stream) {
    FAKE_FK(moe_combine_cuda, stream);
    return fake_g_moe_combine_cuda(y, row_of_slot, w, n, slots, dim, base, out, stream);
}
int fake_f_moe_slab_pack_cuda(const int32_t *idx, int64_t n, int64_t K, int64_t n_experts, int64_t P, int64_t cap, int32_t none, int32_t slot0, int32_t *slot, int32_t *lexp, int32_t *comb, void *stream) {
    FAKE_FK(moe_slab_pack_cuda, stream);
    return fake_g_moe_slab_pack_cuda(idx, n, K, n_experts, P, cap, none, slot0, slot, lexp, comb, stream);
}
#undef FAKE_FK
/* ==== end of fault injection =================================================================== */

#endif
