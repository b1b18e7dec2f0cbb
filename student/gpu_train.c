/* student/gpu_train.c — the student's training step on CUDA (see student/gpu_train.h). */
#include "student/gpu_train.h"

#include "core/cuda_try.h"
#include "core/status.h"

#ifndef RT_HAVE_CUDA

int gt_check_device(void) { return rt_fail(RT_EUNSUPPORTED, "built without CUDA"); }
int gt_create(sm_model *m, sd_data *d, const tr_options *o, rt_comm *host, gt_trainer **out) {
    (void)o, (void)host;
    *out = NULL;
    sm_free(m);
    sd_close(d);
    return gt_check_device();
}
void gt_free(gt_trainer *t) { (void)t; }
int gt_step(gt_trainer *t, tr_stats *out) { (void)t, (void)out; return gt_check_device(); }
int gt_eval(gt_trainer *t, sd_data *val, double *loss, int64_t *targets) {
    (void)t, (void)val, *loss = 0, *targets = 0;
    return gt_check_device();
}
int64_t gt_steps_done(const gt_trainer *t) { (void)t; return 0; }
int gt_save(gt_trainer *t, const char *dir, rt_dtype model_dtype) { (void)t, (void)dir, (void)model_dtype; return gt_check_device(); }
int gt_resume(gt_trainer *t, const char *dir) { (void)t, (void)dir; return gt_check_device(); }
double gt_peak_mem_gib(const gt_trainer *t) { (void)t; return 0; }

#else

#ifndef RT_FAKE_CUDA   /* tests/unit/test_gpu_train_fake.c stands the runtime and kernels in on the CPU */
#include <cuda_runtime.h>
#endif
#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/safetensors.h"
#include "kernels/act.h"
#include "kernels/attention.h"
#include "kernels/convert.h"
#include "kernels/embed.h"
#include "kernels/loss.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/optim.h"
#include "kernels/rope.h"
#include "student/gpu_plan.h"
#include "student/zero.h"

struct gt_trainer {
    sm_model *m;           /* host copy: the checkpoint's staging (CPU layout) */
    sd_data *d;
    tr_options o;
    rt_comm *host, *nccl;  /* nccl: NULL with one rank */
    rt_comm *nccl_side;    /* ZeRO-3: the gathers' communicator, on the side stream */
    zr_layout z;
    int64_t mbase;         /* first element of the state this rank keeps */
    bool sharded, z3;      /* ZeRO-2/3 with P > 1: per-unit buckets, a gradient shard; ZeRO-3: a weight shard */
    gp_plan p;
    gp_mem mem;            /* what is allocated below (gp_rank_memory) */
    int64_t N, T, step;
    sd_position pos;
    cudaStream_t stream, side;   /* side: ZeRO-3 gathers (prefetch) */
    mm_cuda_ctx *mm;
    ce_cuda_ws *ce;
    /* device */
    uint16_t *wb;          /* bf16 weights: [padded]; ZeRO-3: [S], this rank's shard */
    float *g;              /* f32 gradient: [padded]; ZeRO-2/3: [S], this rank's reduced shard */
    float *ga, *gl;        /* ZeRO-2/3 buckets: [gp_bucket_a], [gp_bucket_l] */
    uint16_t *wbuf[3];     /* ZeRO-3 gather buffers: two layers ([gp_bucket_l]), the embedding / head ([gp_bucket_a]) */
    float *master, *m1, *m2;   /* [zr_state_len]: device, or pinned host memory (offload) */
    float *hgrad;          /* offload: pinned [2·chunk], gradient chunks brought down (levels 0, 1) */
    float *gh;             /* offload with ZeRO-2/3: pinned [S], the rank's reduced gradient shard
                            * (then t->g is not allocated) */
    int64_t mb;            /* the micro-batch being computed (0-based, in the step) */
    uint16_t *hbf;         /* offload: pinned [2·chunk], bf16 chunks going up */
    int64_t chunk;         /* offload: elements per staged chunk */
    tp_pool *pool;         /* offload: the host AdamW's threads */
    cudaEvent_t staged[2];
    char *arena;           /* activations (student/gpu_plan.h) */
    /* units (0: embedding, 1 + l: layer l, L + 1: final norm and head): where each unit's
     * weights (ZeRO-3) and gradient bucket (ZeRO-2/3) are now; NULL when nowhere */
    uint16_t **wres;
    int *wslot;            /* the gather buffer holding it (ZeRO-3) */
    float **gres;
    size_t *rs_counts;     /* ZeRO-2/3: [P], the ranks' pieces of the unit being reduced */
    /* host */
    int32_t *tokens, *doc_start, *posi, *target;   /* [A, T] of the step */
    /* logit distillation (kd_alpha > 0): the step's teacher top-k [A, T (·K)] on the host; on the
     * device the per-micro-batch sums (loss, CE, D) [A, 3] and one micro-batch's top-k */
    kd_spec kd;
    uint8_t *top_n;
    int32_t *top_ids;
    float *top_lps;
    char *kd_dev;
    int32_t *pinned[2];    /* [7T + 1] each */
    cudaEvent_t copied[2];
    cudaEvent_t ready[3], main_done;   /* ZeRO-3: a gather buffer filled; the trainer's stream's work so far */
    /* offload_activations: the layer inputs x[0..L) in pinned host memory, streamed on xs */
    uint16_t *xh;          /* [L, T, D] */
    cudaStream_t xs;
    cudaEvent_t x_out[GP_X_SLOTS], x_in[GP_X_SLOTS], x_made;
    bool ev_made;
    double peak_gib;
    float eps, scale_attn;
    /* offload with ZeRO-3: the host AdamW of step s runs on its own thread (upd), unit after
     * unit in forward order, each unit's bf16 shard going up on stream `up` (event up_ev[u]),
     * while step s + 1 starts; gathering unit u waits for upd_done > u and up_ev[u] only */
    bool overlap, upd_made, upd_running;
    int dev;               /* this rank's device (the update thread selects it too) */
    pthread_t upd;
    pthread_mutex_t upd_mu;
    pthread_cond_t upd_cv;
    int upd_done, upd_rc;
    char upd_msg[256];
    double upd_lr, upd_coef;
    cudaStream_t up;
    cudaEvent_t *up_ev;    /* [units] */
};

static int wait_update(gt_trainer *t, int u, cudaStream_t s);

int gt_check_device(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) return rt_fail(RT_EUNSUPPORTED, "--device cuda: no usable CUDA device (%s)", cudaGetErrorString(e));
    if (n < 1) return rt_fail(RT_EUNSUPPORTED, "--device cuda: no CUDA device found");
    return 0;
}

#define BF(off) ((uint16_t *)(t->arena + (off)))
#define F4(off) ((float *)(t->arena + (off)))
#define I4(off) ((int32_t *)(t->arena + (off)))

static void note_memory(gt_trainer *t) {
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) {
        double gib = (double)(tot - fr) / (1024.0 * 1024.0 * 1024.0);
        if (gib > t->peak_gib) t->peak_gib = gib;
    }
}

/* ---- units, shards and where a weight or gradient is ---------------------------------- */

static int unit_count(const gt_trainer *t) { return (int)t->p.L + 2; }
static int64_t unit_lo(const gt_trainer *t, int u) {
    const gp_plan *p = &t->p;
    return u == 0 ? 0 : u <= p->L ? p->e_len + (u - 1) * p->layer_len : p->n - p->h_len;
}
static int64_t unit_len(const gt_trainer *t, int u) {
    const gp_plan *p = &t->p;
    return u == 0 ? p->e_len : u <= p->L ? p->layer_len : p->h_len;
}
static int unit_of(const gt_trainer *t, int64_t off) {
    const gp_plan *p = &t->p;
    if (off < p->e_len) return 0;
    if (off >= p->n - p->h_len) return (int)p->L + 1;
    return 1 + (int)((off - p->e_len) / p->layer_len);
}

/* The bf16 weights at GPU flat offset off (−1: NULL): the whole copy, or (ZeRO-3) the unit's
 * gathered buffer. */
static const uint16_t *W(const gt_trainer *t, int64_t off) {
    if (off < 0) return NULL;
    if (!t->z3) return t->wb + off;
    int u = unit_of(t, off);
    assert(t->wres[u]);
    return t->wres[u] + (off - unit_lo(t, u));
}

/* The f32 gradient at off (−1: NULL): the whole buffer, or (ZeRO-2/3) the unit's bucket. */
static float *G(const gt_trainer *t, int64_t off) {
    if (off < 0) return NULL;
    if (!t->sharded) return t->g + off;
    int u = unit_of(t, off);
    assert(t->gres[u]);
    return t->gres[u] + (off - unit_lo(t, u));
}

/* ZeRO-3: the trainer's stream waits until unit u's gather has landed. */
static int need_unit(gt_trainer *t, int u) {
    if (!t->z3) return 0;
    assert(t->wres[u]);
    CUDA_TRY(cudaStreamWaitEvent(t->stream, t->ready[t->wslot[u]], 0));
    return 0;
}

/* ZeRO-3: all-gather unit u's bf16 weights into gather buffer `slot`, on the side stream,
 * after the trainer's stream's work issued so far (which may still read the buffer's old
 * unit). Each rank's piece of the unit ([lo, lo+len) ∩ its shard; the flat layout keeps a
 * unit contiguous, and a unit meets one or a few shards) is broadcast from its owner. */
static int gather_unit(gt_trainer *t, int u, int slot) {
    const zr_layout *z = &t->z;
    uint16_t *buf = t->wbuf[slot];
    for (int v = 0; v < unit_count(t); v++)
        if (t->wres[v] == buf) t->wres[v] = NULL;
    CUDA_TRY(cudaEventRecord(t->main_done, t->stream));
    CUDA_TRY(cudaStreamWaitEvent(t->side, t->main_done, 0));
    TRY(wait_update(t, u, t->side));   /* offload: this unit's shard updated and up (not the whole step's) */
    int64_t lo = unit_lo(t, u), hi = lo + unit_len(t, u);
    for (int r = (int)(lo / z->shard); r < z->ranks && (int64_t)r * z->shard < hi; r++) {
        int64_t a = lo > (int64_t)r * z->shard ? lo : (int64_t)r * z->shard;
        int64_t b = hi < (int64_t)(r + 1) * z->shard ? hi : (int64_t)(r + 1) * z->shard;
        if (a >= b) continue;
        if (r == z->rank)
            CUDA_TRY(cudaMemcpyAsync(buf + (a - lo), t->wb + (a - t->mbase), (size_t)(b - a) * 2, cudaMemcpyDeviceToDevice,
                                     t->side));
        TRY(comm_broadcast(t->nccl_side, buf + (a - lo), (size_t)(b - a) * 2, RT_DT_U8, r));
    }
    CUDA_TRY(cudaEventRecord(t->ready[slot], t->side));
    t->wres[u] = buf;
    t->wslot[u] = slot;
    return 0;
}

/* ZeRO-2/3: unit u's gradient bucket for one micro-batch's backward: zero, except this rank's
 * own piece, which starts from its shard (so the reduction below also accumulates over the
 * step's micro-batches). */
static int bucket_begin(gt_trainer *t, int u, float *buf) {
    const zr_layout *z = &t->z;
    int64_t lo = unit_lo(t, u), hi = lo + unit_len(t, u);
    CUDA_TRY(cudaMemsetAsync(buf, 0, (size_t)(hi - lo) * 4, t->stream));
    int64_t a = lo > t->mbase ? lo : t->mbase, b = hi < t->mbase + z->shard ? hi : t->mbase + z->shard;
    if (a < b && t->gh && t->mb > 0)   /* the shard on the host: up again (the first micro-batch starts from 0) */
        CUDA_TRY(cudaMemcpyAsync(buf + (a - lo), t->gh + (a - t->mbase), (size_t)(b - a) * 4, cudaMemcpyHostToDevice,
                                 t->stream));
    else if (a < b && !t->gh)
        CUDA_TRY(cudaMemcpyAsync(buf + (a - lo), t->g + (a - t->mbase), (size_t)(b - a) * 4, cudaMemcpyDeviceToDevice,
                                 t->stream));
    t->gres[u] = buf;
    return 0;
}

/* ZeRO-2/3: unit u's backward is done: each rank's piece of the bucket is reduced over the
 * ranks into that rank's gradient shard — one reduce-scatter whose blocks are the shards'
 * pieces of the unit, which the flat layout lays end to end in rank order (most units meet
 * one or two shards; the other ranks' blocks are empty). A shard on the host (offload) is
 * reduced in place in the bucket and copied down. */
static int bucket_end(gt_trainer *t, int u) {
    const zr_layout *z = &t->z;
    float *buf = t->gres[u];
    int64_t lo = unit_lo(t, u), hi = lo + unit_len(t, u), a = 0, b = 0;
    for (int r = 0; r < z->ranks; r++) {
        int64_t ra = lo > (int64_t)r * z->shard ? lo : (int64_t)r * z->shard;
        int64_t rb = hi < (int64_t)(r + 1) * z->shard ? hi : (int64_t)(r + 1) * z->shard;
        t->rs_counts[r] = ra < rb ? (size_t)(rb - ra) : 0;
        if (r == z->rank && ra < rb) a = ra, b = rb;
    }
    float *own = a >= b ? NULL : t->gh ? buf + (a - lo) : t->g + (a - t->mbase);   /* gh: reduced in place */
    TRY(comm_reduce_scatterv(t->nccl, buf, own ? own : buf, t->rs_counts, RT_DT_F32, COMM_SUM));
    if (own && t->gh)
        CUDA_TRY(cudaMemcpyAsync(t->gh + (a - t->mbase), own, (size_t)(b - a) * 4, cudaMemcpyDeviceToHost, t->stream));
    t->gres[u] = NULL;
    return 0;
}

/* The optimizer state's part [zr_state_len] in or out: device memory, or pinned host memory
 * when offloaded. */
static int state_put(gt_trainer *t, float *dst, const float *src, size_t n) {
    if (t->o.offload_optimizer) memcpy(dst, src, n * 4);
    else CUDA_TRY(cudaMemcpy(dst, src, n * 4, cudaMemcpyHostToDevice));
    return 0;
}
static int state_get(gt_trainer *t, float *dst, const float *src, size_t n) {
    if (t->o.offload_optimizer) memcpy(dst, src, n * 4);
    else CUDA_TRY(cudaMemcpy(dst, src, n * 4, cudaMemcpyDeviceToHost));
    return 0;
}

/* Where weights or state come from: the whole CPU layout (cpu), a reader of the model's
 * weights (r: student/model.h), or the F32 tensors prefix + name of a checkpoint's
 * optimizer.safetensors (f, checked by check_optimizer). */
typedef struct {
    const float *cpu;
    sm_reader *r;
    const st_file *f;
    const char *prefix;
} wsrc;

/* The GPU layout's [lo, lo + len) of a source into part (zero first). */
static int gpu_range(const gt_trainer *t, const wsrc *s, float *part, int64_t lo, int64_t len) {
    memset(part, 0, (size_t)len * sizeof(float));
    if (s->cpu) {
        gp_to_gpu_range(&t->p, t->m, s->cpu, part, lo, len);
        return 0;
    }
    const sm_model *m = t->m;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const sm_tensor *x = &m->tensors[i];
        int64_t o = t->p.off[i], a = o > lo ? o : lo, b = o + x->numel < lo + len ? o + x->numel : lo + len;
        if (a >= b) continue;
        if (s->r) {
            TRY(sm_reader_read(s->r, x->offset + (a - o), x->offset + (b - o), part + (a - lo)));
        } else {
            char name[160];
            snprintf(name, sizeof name, "%s%s", s->prefix, x->name);
            const st_tensor *st = st_find(s->f, name);   /* checked: F32, numel elements */
            memcpy(part + (a - lo), (const float *)st->data + (a - o), (size_t)(b - a) * sizeof(float));
        }
    }
    return 0;
}

/* The model's f32 weights into the trainer: the bf16 weights (whole, or with ZeRO-3 this
 * rank's shard) and this rank's master part, streamed through one host chunk (f32 and bf16)
 * at a time, from s or (NULL) through an sm_reader of the model (its mmapped checkpoint or
 * seed): a rank never holds the whole model's weights on the host. */
#define UPLOAD_CHUNK ((int64_t)1 << 22)
static int upload_params(gt_trainer *t, const wsrc *s) {
    int64_t lo = t->z3 ? t->mbase : 0, len = t->z3 ? t->z.shard : t->z.padded, ns = zr_state_len(&t->z);
    int64_t C = len < UPLOAD_CHUNK ? len : UPLOAD_CHUNK;
    float *h = rt_aligned_alloc(64, (size_t)(C > 0 ? C : 1) * sizeof(float));
    uint16_t *hb = rt_malloc((size_t)(C > 0 ? C : 1) * 2);
    wsrc own = {0};
    int rc = h && hb ? 0 : RT_ENOMEM;
    if (!rc && !s) rc = sm_reader_open(t->m, &own.r), s = &own;
    for (int64_t k = 0; k < len && !rc; k += C) {
        int64_t n = len - k < C ? len - k : C, x = lo + k;   /* GPU flat [x, x + n) */
        rc = gpu_range(t, s, h, x, n);
        if (rc) break;
        cvt_f32_to_bf16(h, hb, (size_t)n);
        cudaError_t e = cudaMemcpy(t->wb + k, hb, (size_t)n * 2, cudaMemcpyHostToDevice);
        if (e != cudaSuccess) rc = rt_fail(RT_EINTERNAL, "uploading the weights: %s", cudaGetErrorString(e));
        int64_t a = x > t->mbase ? x : t->mbase, b = x + n < t->mbase + ns ? x + n : t->mbase + ns;
        if (!rc && a < b) rc = state_put(t, t->master + (a - t->mbase), h + (a - x), (size_t)(b - a));
    }
    sm_reader_close(own.r);
    free(h);
    free(hb);
    return rc;
}

/* This rank's part [zr_state_len] of a state buffer (a moment) from s, chunk by chunk. */
static int upload_state(gt_trainer *t, float *dst, const wsrc *s) {
    int64_t ns = zr_state_len(&t->z), C = ns < UPLOAD_CHUNK ? ns : UPLOAD_CHUNK;
    float *h = rt_aligned_alloc(64, (size_t)(C > 0 ? C : 1) * sizeof(float));
    int rc = h ? 0 : RT_ENOMEM;
    for (int64_t k = 0; k < ns && !rc; k += C) {
        int64_t n = ns - k < C ? ns - k : C;
        rc = gpu_range(t, s, h, t->mbase + k, n);
        if (!rc) rc = state_put(t, dst + k, h, (size_t)n);
    }
    free(h);
    return rc;
}

static int alloc_dev(void **p, size_t bytes) {
    CUDA_TRY(cudaMalloc(p, bytes ? bytes : 16));
    return 0;
}
static int alloc_state(gt_trainer *t, float **p, size_t n) {
    if (t->o.offload_optimizer) CUDA_TRY(cudaMallocHost((void **)p, n * 4));
    else CUDA_TRY(cudaMalloc((void **)p, n * 4));
    if (t->o.offload_optimizer) memset(*p, 0, n * 4);
    else CUDA_TRY(cudaMemset(*p, 0, n * 4));
    return 0;
}

static int create_device(gt_trainer *t) {
    int dev = t->host && comm_size(t->host) > 1 ? comm_local_rank(t->host) : 0, ndev = 0;
    CUDA_TRY(cudaGetDeviceCount(&ndev));
    if (ndev > 0) dev %= ndev;
    CUDA_TRY(cudaSetDevice(dev));
    t->dev = dev;
    CUDA_TRY(cudaStreamCreateWithFlags(&t->stream, cudaStreamNonBlocking));
    CUDA_TRY(cudaStreamCreateWithFlags(&t->side, cudaStreamNonBlocking));
    for (int i = 0; i < 2; i++) CUDA_TRY(cudaEventCreateWithFlags(&t->copied[i], cudaEventDisableTiming));
    for (int i = 0; i < 3; i++) CUDA_TRY(cudaEventCreateWithFlags(&t->ready[i], cudaEventDisableTiming));
    for (int i = 0; i < 2; i++) CUDA_TRY(cudaEventCreateWithFlags(&t->staged[i], cudaEventDisableTiming));
    CUDA_TRY(cudaEventCreateWithFlags(&t->main_done, cudaEventDisableTiming));
    t->ev_made = true;
    if (t->o.offload_activations) {
        CUDA_TRY(cudaStreamCreateWithFlags(&t->xs, cudaStreamNonBlocking));
        for (int i = 0; i < GP_X_SLOTS; i++) {
            CUDA_TRY(cudaEventCreateWithFlags(&t->x_out[i], cudaEventDisableTiming));
            CUDA_TRY(cudaEventCreateWithFlags(&t->x_in[i], cudaEventDisableTiming));
        }
        CUDA_TRY(cudaEventCreateWithFlags(&t->x_made, cudaEventDisableTiming));
    }
    int rank = t->host ? comm_rank(t->host) : 0, P = t->host ? comm_size(t->host) : 1;
    if (P > 1) TRY(comm_open_nccl(t->host, dev, t->stream, &t->nccl));
    if (P > 1 && t->o.zero == 3) TRY(comm_open_nccl(t->host, dev, t->side, &t->nccl_side));
    TRY(mm_cuda_ctx_create(&t->mm, 0));
    const sm_model *m = t->m;
    /* the sum of squares runs over at most the GPU layout's length, never more than the
     * model's flat length (gpu_plan.h), which is known before the plan */
    gp_ws_sizes ws = {rmsnorm_bwd_cuda_ws_bytes(t->T, m->D), attn_bwd_cuda_ws_bytes(t->T, m->Hq),
                      vec_sumsq_cuda_ws_bytes((size_t)m->n_params)};
    if (m->cfg.qk_norm && rmsnorm_bwd_cuda_ws_bytes(t->T * m->Hq, m->hd) > ws.norm_ws)   /* the per-head norms */
        ws.norm_ws = rmsnorm_bwd_cuda_ws_bytes(t->T * m->Hq, m->hd);
    int ck = t->o.offload_activations ? GP_CKPT_HOST : t->o.checkpoint_layers ? GP_CKPT_LAYERS : GP_CKPT_NONE;
    TRY(gp_plan_init(&t->p, m, t->T, ck, t->o.ce_chunk, t->o.grad_accum, &ws));
    RT_ASSERT(t->p.n <= m->n_params, "the GPU layout is longer than the model's");
    zr_layout_init(&t->z, t->p.n, rank, P, P > 1 ? t->o.zero : 0);
    t->sharded = t->z.level >= 2, t->z3 = t->z.level == 3;
    t->mbase = t->z.level ? (int64_t)rank * t->z.shard : 0;
    int nu = unit_count(t);
    t->wres = rt_calloc((size_t)nu, sizeof *t->wres);
    t->wslot = rt_calloc((size_t)nu, sizeof *t->wslot);
    t->gres = rt_calloc((size_t)nu, sizeof *t->gres);
    t->rs_counts = rt_calloc((size_t)P, sizeof *t->rs_counts);
    if (!t->wres || !t->wslot || !t->gres || !t->rs_counts) return RT_ENOMEM;
    TRY(ce_cuda_ws_create(&t->ce, t->p.ce_chunk, m->V, m->D));
    gp_rank_memory(&t->p, &t->z, t->o.offload_optimizer, gp_ce_ws_estimate(t->p.ce_chunk, m->V, m->D), &t->mem);
    if (t->o.kd_alpha > 0) gp_mem_add_kd(&t->mem, gp_kd_bytes(t->T, sd_top_k(t->d), t->o.grad_accum));
    size_t ns = (size_t)zr_state_len(&t->z);
    TRY(alloc_dev((void **)&t->wb, t->mem.weights));
    if (t->mem.grads) TRY(alloc_dev((void **)&t->g, t->mem.grads));
    else CUDA_TRY(cudaMallocHost((void **)&t->gh, (size_t)t->z.shard * 4));
    if (t->sharded) {
        TRY(alloc_dev((void **)&t->ga, 4 * (size_t)gp_bucket_a(&t->p)));
        TRY(alloc_dev((void **)&t->gl, 4 * (size_t)gp_bucket_l(&t->p)));
    }
    if (t->z3)
        for (int i = 0; i < 3; i++) TRY(alloc_dev((void **)&t->wbuf[i], 2 * (size_t)(i < 2 ? gp_bucket_l(&t->p) : gp_bucket_a(&t->p))));
    TRY(alloc_state(t, &t->master, ns));
    TRY(alloc_state(t, &t->m1, ns));
    TRY(alloc_state(t, &t->m2, ns));
    if (t->o.offload_optimizer) {
        t->chunk = gp_offload_chunk((int64_t)ns);
        if (!t->gh) CUDA_TRY(cudaMallocHost((void **)&t->hgrad, (size_t)(2 * t->chunk) * 4));
        CUDA_TRY(cudaMallocHost((void **)&t->hbf, (size_t)(2 * t->chunk) * 2));
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        int local = t->host ? comm_local_size(t->host) : 1;
        TRY(tp_create(cpus / local > 1 ? (int)(cpus / local) : 1, &t->pool));
        if (t->z3 && t->gh) {
            t->overlap = true;
            if (!(t->up_ev = rt_calloc((size_t)nu, sizeof *t->up_ev))) return RT_ENOMEM;
            CUDA_TRY(cudaStreamCreateWithFlags(&t->up, cudaStreamNonBlocking));
            for (int u = 0; u < nu; u++) CUDA_TRY(cudaEventCreateWithFlags(&t->up_ev[u], cudaEventDisableTiming));
            if (pthread_mutex_init(&t->upd_mu, NULL)) return rt_fail(RT_EINTERNAL, "pthread_mutex_init failed");
            if (pthread_cond_init(&t->upd_cv, NULL)) {
                pthread_mutex_destroy(&t->upd_mu);
                return rt_fail(RT_EINTERNAL, "pthread_cond_init failed");
            }
            t->upd_made = true;
        }
    }
    TRY(alloc_dev((void **)&t->arena, t->p.act_bytes));
    if (t->o.offload_activations) CUDA_TRY(cudaMallocHost((void **)&t->xh, (size_t)(t->p.L * t->T * m->D) * 2));
    for (int i = 0; i < 2; i++) CUDA_TRY(cudaMallocHost((void **)&t->pinned[i], (size_t)(7 * t->T + 1) * 4));
    CUDA_TRY(cudaMemcpy(F4(t->p.inv_freq), m->inv_freq, (size_t)(m->hd / 2) * sizeof(float), cudaMemcpyHostToDevice));
    TRY(upload_params(t, m->params ? &(wsrc){.cpu = m->params} : NULL));
    note_memory(t);
    return 0;
}

/* ---- logit distillation: the teacher top-k beside the batch, kd_fused_cuda at the head ---- */

static int kd_create(gt_trainer *t, size_t all) {
    int64_t K = sd_top_k(t->d), T = t->T, A = t->o.grad_accum;
    t->kd = (kd_spec){.kind = (kd_kind)t->o.kd_loss, .alpha = t->o.kd_alpha, .temperature = t->o.kd_temperature,
                      .beta = t->o.kd_beta, .k = (int)K};
    t->top_n = rt_malloc(all), t->top_ids = rt_malloc(all * (size_t)K * 4), t->top_lps = rt_malloc(all * (size_t)K * 4);
    if (!t->top_n || !t->top_ids || !t->top_lps) return RT_ENOMEM;
    size_t bytes = gp_kd_bytes(T, K, A);
    CUDA_TRY(cudaMalloc((void **)&t->kd_dev, bytes));
    return 0;
}

/* Micro-batch a's head with distillation: its top-k checked and uploaded, the loss, CE and D
 * into its sums, the loss also into its loss slot. */
static int kd_head(gt_trainer *t, int64_t a, const int32_t *target, const int32_t *rows, int64_t n_rows, float scale,
                   double *loss) {
    const gp_plan *p = &t->p;
    int64_t T = t->T, K = t->kd.k;
    double *sums = (double *)t->kd_dev + 3 * a;
    char *base = t->kd_dev + (size_t)t->o.grad_accum * 3 * sizeof(double);
    kd_spec host = t->kd;
    host.top_n = t->top_n + a * T, host.top_ids = t->top_ids + a * T * K, host.top_lps = t->top_lps + a * T * K;
    TRY(kd_check(&host, t->target + a * T, T, p->V));
    kd_spec dev = t->kd;
    dev.top_ids = (const int32_t *)(const void *)base;
    dev.top_lps = (const float *)(const void *)(base + (size_t)T * K * 4);
    dev.top_n = (const uint8_t *)(base + (size_t)T * K * 8);
    CUDA_TRY(cudaMemcpyAsync(base, host.top_ids, (size_t)(T * K) * 4, cudaMemcpyHostToDevice, t->stream));
    CUDA_TRY(cudaMemcpyAsync(base + (size_t)T * K * 4, host.top_lps, (size_t)(T * K) * 4, cudaMemcpyHostToDevice, t->stream));
    CUDA_TRY(cudaMemcpyAsync(base + (size_t)T * K * 8, host.top_n, (size_t)T, cudaMemcpyHostToDevice, t->stream));
    if (n_rows > 0)
        TRY(kd_fused_cuda(sums, BF(p->dxn), G(t, p->lm_head), BF(p->hf), W(t, p->lm_head), target, rows, n_rows, T, scale,
                          &dev, t->ce, t->stream));
    else
        CUDA_TRY(cudaMemsetAsync(sums, 0, 3 * sizeof(double), t->stream));
    CUDA_TRY(cudaMemcpyAsync(loss, sums, sizeof(double), cudaMemcpyDeviceToDevice, t->stream));
    return 0;
}

/* The step's mean CE and D over its targets (all ranks), after the stream has synchronized. */
static int kd_step_stats(gt_trainer *t, int64_t total, tr_stats *st) {
    int64_t A = t->o.grad_accum;
    double h[3 * 64], part[2] = {0, 0};
    for (int64_t a0 = 0; a0 < A; a0 += 64) {
        int64_t n = A - a0 < 64 ? A - a0 : 64;
        CUDA_TRY(cudaMemcpy(h, (double *)t->kd_dev + 3 * a0, (size_t)n * 3 * sizeof(double), cudaMemcpyDeviceToHost));
        for (int64_t a = 0; a < n; a++) part[0] += h[3 * a + 1], part[1] += h[3 * a + 2];
    }
    if (t->z.ranks > 1) TRY(comm_allreduce(t->host, part, part, 2, RT_DT_F64, COMM_SUM));
    st->ce_loss = total > 0 ? part[0] / (double)total : 0;
    st->kd_loss = total > 0 ? part[1] / (double)total : 0;
    return 0;
}

int gt_create(sm_model *m, sd_data *d, const tr_options *o, rt_comm *host, gt_trainer **out) {
    *out = NULL;
    int P = host ? comm_size(host) : 1, rc = gt_check_device();
    if (!rc && (o->batch < 1 || o->grad_accum < 1 || o->steps < 1 || !(o->lr > 0) || o->zero < 0 || o->zero > 3))
        rc = rt_fail(RT_EINVAL, "batch, grad-accum, steps ≥ 1, lr > 0 and ZeRO 0, 1, 2 or 3 expected");
    if (!rc && o->offload_activations && !o->checkpoint_layers)
        rc = rt_fail(RT_EINVAL, "offloading the layer inputs needs layer checkpointing");
    if (!rc && (int64_t)sd_vocab_size(d) > m->V)
        rc = rt_fail(RT_EINVAL, "the shards use a vocabulary of %u tokens, the model has %lld", sd_vocab_size(d), (long long)m->V);
    if (!rc) rc = tr_kd_check(m, d, o);
    if (!rc && P > 1 && (uint64_t)(o->batch * o->grad_accum * P) > sd_num_seqs(d))
        rc = rt_fail(RT_EINVAL, "a step of %lld sequences is more than the %llu sequences in the data: every rank needs sequences of its own",
                     (long long)(o->batch * o->grad_accum * P), (unsigned long long)sd_num_seqs(d));
    gt_trainer *t = rc ? NULL : rt_calloc(1, sizeof *t);
    if (!t) {
        sm_free(m);
        sd_close(d);
        return rc ? rc : RT_ENOMEM;
    }
    t->m = m, t->d = d, t->o = *o, t->host = host;
    t->N = sd_seq_len(d);
    t->T = o->batch * t->N;
    t->pos.seed = o->seed;
    t->eps = (float)m->cfg.rms_norm_eps;
    t->scale_attn = 1.0f / sqrtf((float)m->hd);
    size_t all = (size_t)(t->T * o->grad_accum);
    t->tokens = rt_malloc(all * 4), t->doc_start = rt_malloc(all * 4), t->posi = rt_malloc(all * 4);
    t->target = rt_malloc(all * 4);
    rc = (!t->tokens || !t->doc_start || !t->posi || !t->target) ? RT_ENOMEM : create_device(t);
    if (!rc && o->kd_alpha > 0) rc = kd_create(t, all);
    /* the host model's f32 buffers (an eager model's): uploaded, never used again here */
    free(m->params), free(m->grads);
    m->params = m->grads = NULL;
    if (rc) {
        gt_free(t);
        return rt_errorf(rc, "setting up the GPU trainer");
    }
    *out = t;
    return 0;
}

static int join_update(gt_trainer *t);

void gt_free(gt_trainer *t) {
    if (!t) return;
    (void)join_update(t);
    if (t->up) {
        cudaStreamSynchronize(t->up);
        for (int u = 0; t->up_ev && u < unit_count(t); u++)
            if (t->up_ev[u]) cudaEventDestroy(t->up_ev[u]);
        cudaStreamDestroy(t->up);
    }
    free(t->up_ev);
    if (t->upd_made) pthread_mutex_destroy(&t->upd_mu), pthread_cond_destroy(&t->upd_cv);
    if (t->stream) cudaStreamSynchronize(t->stream);
    if (t->side) cudaStreamSynchronize(t->side);
    comm_close(t->nccl_side);
    comm_close(t->nccl);
    cudaFree(t->wb), cudaFree(t->g), cudaFree(t->ga), cudaFree(t->gl), cudaFree(t->arena);
    for (int i = 0; i < 3; i++) cudaFree(t->wbuf[i]);
    float *st[3] = {t->master, t->m1, t->m2};
    for (int i = 0; i < 3; i++) {
        if (!st[i]) continue;
        if (t->o.offload_optimizer) cudaFreeHost(st[i]);
        else cudaFree(st[i]);
    }
    if (t->hgrad) cudaFreeHost(t->hgrad);
    if (t->gh) cudaFreeHost(t->gh);
    if (t->xh) cudaFreeHost(t->xh);
    if (t->xs) {
        cudaStreamSynchronize(t->xs);
        for (int i = 0; i < GP_X_SLOTS; i++) cudaEventDestroy(t->x_out[i]), cudaEventDestroy(t->x_in[i]);
        cudaEventDestroy(t->x_made);
        cudaStreamDestroy(t->xs);
    }
    if (t->hbf) cudaFreeHost(t->hbf);
    for (int i = 0; i < 2; i++) {
        if (t->pinned[i]) cudaFreeHost(t->pinned[i]);
        if (t->ev_made) cudaEventDestroy(t->copied[i]);
    }
    if (t->ev_made) {
        for (int i = 0; i < 3; i++) cudaEventDestroy(t->ready[i]);
        for (int i = 0; i < 2; i++) cudaEventDestroy(t->staged[i]);
        cudaEventDestroy(t->main_done);
    }
    tp_free(t->pool);
    ce_cuda_ws_free(t->ce);
    mm_cuda_ctx_free(t->mm);
    if (t->stream) cudaStreamDestroy(t->stream);
    if (t->side) cudaStreamDestroy(t->side);
    gp_plan_free(&t->p);
    sm_free(t->m);
    sd_close(t->d);
    free(t->wres), free(t->wslot), free(t->gres), free(t->rs_counts);
    free(t->tokens), free(t->doc_start), free(t->posi), free(t->target);
    free(t->top_n), free(t->top_ids), free(t->top_lps);
    cudaFree(t->kd_dev);
    free(t);
}

int64_t gt_steps_done(const gt_trainer *t) { return t->step; }
double gt_peak_mem_gib(const gt_trainer *t) { return t->peak_gib; }

/* ---- one micro-batch ------------------------------------------------------------------- */

/* Qwen3: q and k of every head RMS-normalized (q_norm, k_norm over rows of hd) between the
 * qkv projection and RoPE. The norm kernels take contiguous rows, so q (then k) is copied out
 * of the fused qkv ([T, W], ld W) into the kept qkr ([T·H, hd]: the norm's input, for the
 * backward), normalized into the qkn scratch and copied back into qkv. */
static int head_norms_fwd(gt_trainer *t, const gp_layer_off *w, const gp_layer_acts *k) {
    const gp_plan *p = &t->p;
    int64_t T = t->T, hd = p->hd, W_ = p->W;
    uint16_t *qkv = BF(k->qkv), *qkr = BF(k->qkr), *qkn = BF(p->qkn);
    float *rstd = F4(k->rqk);
    for (int j = 0; j < 2; j++) {   /* q, then k */
        int64_t H = j ? p->Hkv : p->Hq, col = j ? p->Hq * hd : 0, row = j ? T * p->Hq : 0;
        size_t width = (size_t)(H * hd) * 2, ld = (size_t)W_ * 2;
        CUDA_TRY(cudaMemcpy2DAsync(qkr + row * hd, width, qkv + col, ld, width, (size_t)T, cudaMemcpyDeviceToDevice, t->stream));
        TRY(rmsnorm_residual_fwd_cuda(qkn + row * hd, rstd + row, qkr + row * hd, qkr + row * hd, NULL, W(t, j ? w->kn : w->qn),
                                      T * H, hd, t->eps, t->stream));
        CUDA_TRY(cudaMemcpy2DAsync(qkv + col, ld, qkn + row * hd, width, width, (size_t)T, cudaMemcpyDeviceToDevice, t->stream));
    }
    return 0;
}

/* Their backward: dqkv's q (then k) part holds ∂L/∂(normed, before RoPE); copied out into qkn,
 * through the norm's backward into dqk (zeroed first: the kernel accumulates), q_norm's
 * (k_norm's) gradient accumulated, and copied back in place. */
static int head_norms_bwd(gt_trainer *t, const gp_layer_off *w, const gp_layer_acts *k) {
    const gp_plan *p = &t->p;
    int64_t T = t->T, hd = p->hd, W_ = p->W;
    uint16_t *dqkv = BF(p->dqkv), *qkr = BF(k->qkr), *dy = BF(p->qkn), *dx = BF(p->dqk);
    const float *rstd = F4(k->rqk);
    for (int j = 0; j < 2; j++) {
        int64_t H = j ? p->Hkv : p->Hq, col = j ? p->Hq * hd : 0, row = j ? T * p->Hq : 0;
        size_t width = (size_t)(H * hd) * 2, ld = (size_t)W_ * 2;
        int64_t nw = j ? w->kn : w->qn;
        CUDA_TRY(cudaMemcpy2DAsync(dy + row * hd, width, dqkv + col, ld, width, (size_t)T, cudaMemcpyDeviceToDevice, t->stream));
        CUDA_TRY(cudaMemsetAsync(dx + row * hd, 0, (size_t)(T * H * hd) * 2, t->stream));
        TRY(rmsnorm_bwd_cuda(dx + row * hd, G(t, nw), dy + row * hd, qkr + row * hd, W(t, nw), rstd + row, T * H, hd,
                             t->arena + p->norm_ws, t->stream));
        CUDA_TRY(cudaMemcpy2DAsync(dqkv + col, ld, dx + row * hd, width, width, (size_t)T, cudaMemcpyDeviceToDevice, t->stream));
    }
    return 0;
}

/* Layer l's forward from x[l]. The first norm of layers after the first was already formed
 * by the previous layer's fused residual add (its kernel normalizes the stored, rounded sum,
 * so this is the same value a separate norm gives). recompute: the checkpointed backward's
 * pass, which forms the first norm itself, stops at the SwiGLU output (what the backward
 * reads) and leaves x[l+1] alone. */
static int layer_fwd(gt_trainer *t, int64_t l, bool recompute) {
    const gp_plan *p = &t->p;
    const gp_layer_off *w = &p->layers[l];
    const gp_layer_acts *k = gp_acts_of(p, l);
    int64_t T = t->T, D = p->D, F = p->F, W_ = p->W, Hq = p->Hq, Hkv = p->Hkv, hd = p->hd, qd = Hq * hd;
    void *s = t->stream;
    uint16_t *x = BF(p->x[l]), *qkv = BF(k->qkv);
    const int32_t *pos = I4(p->batch) + 2 * T, *ds = I4(p->batch) + T;
    const float *inv = F4(p->inv_freq);
    attn_cuda_layout lay = {.ld_q = W_, .ld_kv = W_};
    if (recompute || l == 0) TRY(rmsnorm_fwd_cuda(BF(k->xn1), F4(k->rstd1), x, NULL, W(t, w->attn_norm), T, D, t->eps, s));
    TRY(mm_linear_fwd_cuda(t->mm, qkv, BF(k->xn1), W(t, w->wqkv), W(t, w->bqkv), T, W_, D, s));
    if (p->qk_norm) TRY(head_norms_fwd(t, w, k));
    TRY(rope_apply_cuda_ld(qkv, W_, pos, inv, T, Hq, hd, false, s));
    TRY(rope_apply_cuda_ld(qkv + qd, W_, pos, inv, T, Hkv, hd, false, s));
    TRY(attn_fwd_cuda_ex(BF(k->att), F4(k->lse), qkv, qkv + qd, qkv + qd + Hkv * hd, ds, T, Hq, Hkv, hd, t->scale_attn,
                         &lay, s));
    TRY(mm_linear_fwd_cuda(t->mm, BF(p->tmp), BF(k->att), W(t, w->wo), W(t, w->bo), T, D, qd, s));
    TRY(rmsnorm_residual_fwd_cuda(BF(k->xn2), F4(k->rstd2), BF(k->mid), x, BF(p->tmp), W(t, w->mlp_norm), T, D, t->eps, s));
    TRY(mm_linear_fwd_cuda(t->mm, BF(k->gu), BF(k->xn2), W(t, w->wgu), W(t, w->bgu), T, 2 * F, D, s));
    TRY(swiglu_fwd_cuda(BF(k->act), BF(k->gu), BF(k->gu) + F, T, F, 2 * F, s));
    if (recompute) return 0;
    TRY(mm_linear_fwd_cuda(t->mm, BF(p->out), BF(k->act), W(t, w->wd), W(t, w->bd), T, D, F, s));
    /* x[l+1] = mid + out, fused with the next norm: the final norm for the last layer (its
     * output and rstd are kept for the head), else layer l+1's first norm into its kept set
     * (with checkpointing that is set 0 again: this layer is done reading its xn1 and rstd1) */
    bool last = l + 1 == p->L;
    const gp_layer_acts *nx = last ? NULL : gp_acts_of(p, l + 1);
    int64_t nw = last ? p->norm_f : p->layers[l + 1].attn_norm;
    TRY(need_unit(t, unit_of(t, nw)));   /* ZeRO-3: the next unit, prefetched while this layer ran */
    TRY(rmsnorm_residual_fwd_cuda(last ? BF(p->hf) : BF(nx->xn1), last ? F4(p->rstd_f) : F4(nx->rstd1), BF(p->x[l + 1]),
                                  BF(k->mid), BF(p->out), W(t, nw), T, D, t->eps, s));
    return 0;
}

/* dres holds ∂L/∂x[l+1] on entry and ∂L/∂x[l] on return; weight gradients accumulate. */
static int layer_bwd(gt_trainer *t, int64_t l) {
    const gp_plan *p = &t->p;
    if (p->ckpt) TRY(layer_fwd(t, l, true));
    const gp_layer_off *w = &p->layers[l];
    const gp_layer_acts *k = gp_acts_of(p, l);
    int64_t T = t->T, D = p->D, F = p->F, W_ = p->W, Hq = p->Hq, Hkv = p->Hkv, hd = p->hd, qd = Hq * hd;
    void *s = t->stream;
    uint16_t *dres = BF(p->dres), *dxn = BF(p->dxn), *qkv = BF(k->qkv), *dqkv = BF(p->dqkv);
    const int32_t *pos = I4(p->batch) + 2 * T, *ds = I4(p->batch) + T;
    const float *inv = F4(p->inv_freq);
    attn_cuda_layout lay = {.ld_q = W_, .ld_kv = W_, .ld_dq = W_, .ld_dkv = W_};
    TRY(mm_linear_bwd_x_cuda(t->mm, BF(p->dact), false, dres, W(t, w->wd), T, D, F, s));
    TRY(mm_linear_bwd_w_cuda(t->mm, G(t, w->wd), G(t, w->bd), dres, BF(k->act), T, D, F, s));
    TRY(swiglu_bwd_cuda(BF(p->dgu), BF(p->dgu) + F, BF(p->dact), BF(k->gu), BF(k->gu) + F, T, F, 2 * F, s));
    TRY(mm_linear_bwd_x_cuda(t->mm, dxn, false, BF(p->dgu), W(t, w->wgu), T, 2 * F, D, s));
    TRY(mm_linear_bwd_w_cuda(t->mm, G(t, w->wgu), G(t, w->bgu), BF(p->dgu), BF(k->xn2), T, 2 * F, D, s));
    TRY(rmsnorm_bwd_cuda(dres, G(t, w->mlp_norm), dxn, BF(k->mid), W(t, w->mlp_norm), F4(k->rstd2), T, D,
                         t->arena + p->norm_ws, s));
    TRY(mm_linear_bwd_x_cuda(t->mm, BF(p->datt), false, dres, W(t, w->wo), T, D, qd, s));
    TRY(mm_linear_bwd_w_cuda(t->mm, G(t, w->wo), G(t, w->bo), dres, BF(k->att), T, D, qd, s));
    TRY(attn_bwd_cuda_ex(dqkv, dqkv + qd, dqkv + qd + Hkv * hd, BF(p->datt), BF(k->att), F4(k->lse), qkv, qkv + qd,
                         qkv + qd + Hkv * hd, ds, T, Hq, Hkv, hd, t->scale_attn, &lay, t->arena + p->attn_ws, s));
    TRY(rope_apply_cuda_ld(dqkv, W_, pos, inv, T, Hq, hd, true, s));
    TRY(rope_apply_cuda_ld(dqkv + qd, W_, pos, inv, T, Hkv, hd, true, s));
    if (p->qk_norm) TRY(head_norms_bwd(t, w, k));
    TRY(mm_linear_bwd_x_cuda(t->mm, dxn, false, dqkv, W(t, w->wqkv), T, W_, D, s));
    TRY(mm_linear_bwd_w_cuda(t->mm, G(t, w->wqkv), G(t, w->bqkv), dqkv, BF(k->xn1), T, W_, D, s));
    TRY(rmsnorm_bwd_cuda(dres, G(t, w->attn_norm), dxn, BF(p->x[l]), W(t, w->attn_norm), F4(k->rstd1), T, D,
                         t->arena + p->norm_ws, s));
    return 0;
}

/* ZeRO-3 gather buffers: layer l in slot l % 2; the final norm (with a tied head: alone, in
 * the layer slot the last layer leaves free) or the embedding and the untied head in slot 2. */
static int slot_of(const gt_trainer *t, int u) {
    int L = (int)t->p.L;
    if (u == 0) return 2;
    if (u <= L) return (u - 1) % 2;
    return t->p.tied ? L % 2 : 2;
}
static int prefetch(gt_trainer *t, int u) {
    if (!t->z3) return 0;
    int slot = slot_of(t, u);
    if (t->wres[u] == t->wbuf[slot]) return 0;   /* still there from this step (the update drops them all) */
    return gather_unit(t, u, slot);
}

/* offload_activations: x[l] (just formed on the trainer's stream) goes down to the host on xs
 * (x[L], the final norm's input, stays on the device); before a layer's forward overwrites a
 * slot, the copy out of the input it held must be done; in the backward x[l] comes back up
 * while layer l + 1 computes. Slots: x[l] in l % GP_X_SLOTS, so the three newest stay. */
static int x_down(gt_trainer *t, int64_t l) {
    if (!t->p.x_host || l >= t->p.L) return 0;
    size_t n = (size_t)(t->T * t->p.D);
    int k = (int)(l % GP_X_SLOTS);
    CUDA_TRY(cudaEventRecord(t->x_made, t->stream));
    CUDA_TRY(cudaStreamWaitEvent(t->xs, t->x_made, 0));
    CUDA_TRY(cudaMemcpyAsync(t->xh + (size_t)l * n, BF(t->p.x[l]), n * 2, cudaMemcpyDeviceToHost, t->xs));
    CUDA_TRY(cudaEventRecord(t->x_out[k], t->xs));
    return 0;
}
static int x_slot_free(gt_trainer *t, int64_t l) {   /* x[l] is about to be written */
    if (t->p.x_host) CUDA_TRY(cudaStreamWaitEvent(t->stream, t->x_out[l % GP_X_SLOTS], 0));
    return 0;
}
/* in the backward: is x[l] still on the device from the forward? */
static bool x_resident(const gt_trainer *t, int64_t l) { return !t->p.x_host || l + GP_X_SLOTS > t->p.L; }
static int x_up(gt_trainer *t, int64_t l) {
    if (l < 0 || x_resident(t, l)) return 0;
    size_t n = (size_t)(t->T * t->p.D);
    CUDA_TRY(cudaEventRecord(t->x_made, t->stream));   /* the slot's last reader is issued */
    CUDA_TRY(cudaStreamWaitEvent(t->xs, t->x_made, 0));
    CUDA_TRY(cudaMemcpyAsync(BF(t->p.x[l]), t->xh + (size_t)l * n, n * 2, cudaMemcpyHostToDevice, t->xs));
    CUDA_TRY(cudaEventRecord(t->x_in[l % GP_X_SLOTS], t->xs));
    return 0;
}
static int x_need(gt_trainer *t, int64_t l) {
    if (!x_resident(t, l)) CUDA_TRY(cudaStreamWaitEvent(t->stream, t->x_in[l % GP_X_SLOTS], 0));
    return 0;
}

/* A micro-batch's T tokens (host arrays tokens, doc_start, pos, target at k·T) packed into
 * pinned slot k % 2 (waiting for that slot's last copy) with the rows that carry a target and
 * the embedding backward's order, and uploaded on the trainer's stream. */
static int upload_batch(gt_trainer *t, int64_t k, int64_t *n_rows, int64_t *n_seg) {
    const gp_plan *p = &t->p;
    int64_t T = t->T;
    int slot = (int)(k & 1);
    CUDA_TRY(cudaEventSynchronize(t->copied[slot]));
    int32_t *h = t->pinned[slot];
    memcpy(h, t->tokens + k * T, (size_t)T * 4);
    memcpy(h + T, t->doc_start + k * T, (size_t)T * 4);
    memcpy(h + 2 * T, t->posi + k * T, (size_t)T * 4);
    memcpy(h + 3 * T, t->target + k * T, (size_t)T * 4);
    *n_rows = 0;
    for (int64_t i = 0; i < T; i++)
        if (h[3 * T + i] >= 0) h[4 * T + (*n_rows)++] = (int32_t)i;
    *n_seg = embed_bwd_plan(h, T, h + 5 * T, h + 6 * T);
    if (*n_seg < 0) return rt_fail(RT_ENOMEM, "planning the embedding backward");
    CUDA_TRY(cudaMemcpyAsync(I4(p->batch), h, (size_t)(7 * T + 1) * 4, cudaMemcpyHostToDevice, t->stream));
    CUDA_TRY(cudaEventRecord(t->copied[slot], t->stream));
    return 0;
}

/* The uploaded batch's forward up to the final norm (its output in hf): the embedding and
 * every layer, ZeRO-3 gathering each unit just before it is needed and prefetching the next. */
static int forward_trunk(gt_trainer *t) {
    const gp_plan *p = &t->p;
    TRY(prefetch(t, 0));
    TRY(prefetch(t, 1));
    TRY(need_unit(t, 0));
    TRY(x_slot_free(t, 0));
    TRY(embed_fwd_cuda(BF(p->x[0]), W(t, p->embed), I4(p->batch), t->T, p->D, t->stream));
    TRY(x_down(t, 0));
    for (int64_t l = 0; l < p->L; l++) {
        TRY(prefetch(t, (int)l + 2));   /* the next layer, or after the last one the final norm (and head) */
        TRY(need_unit(t, (int)l + 1));
        TRY(x_slot_free(t, l + 1));
        TRY(layer_fwd(t, l, false));
        TRY(x_down(t, l + 1));
    }
    return 0;
}

/* Micro-batch a of the step (host arrays at a·T): pack it into pinned slot a % 2 (waiting for
 * that slot's last copy), upload, forward, loss into loss slot a, backward. ZeRO-3 gathers
 * each unit's weights just before it is needed, the next one while the current one computes;
 * ZeRO-2/3 reduce each unit's gradient bucket as soon as its backward is done. */
static int micro_batch(gt_trainer *t, int64_t a, float scale) {
    const gp_plan *p = &t->p;
    int64_t T = t->T, D = p->D;
    int L = (int)p->L, H = L + 1;
    void *s = t->stream;
    int64_t n_rows, n_seg;
    TRY(upload_batch(t, a, &n_rows, &n_seg));
    const int32_t *tok = I4(p->batch), *target = I4(p->batch) + 3 * T, *rows = I4(p->batch) + 4 * T;
    const int32_t *order = I4(p->batch) + 5 * T, *seg = I4(p->batch) + 6 * T;
    double *loss = (double *)(t->arena + p->loss) + a;

    TRY(forward_trunk(t));
    /* the head: its gradient goes to the embedding's bucket when tied, else to the final
     * norm's unit, whose bucket also takes the final norm's */
    int head = p->tied ? 0 : H;
    if (t->sharded) TRY(bucket_begin(t, head, t->ga));
    TRY(need_unit(t, head));
    if (t->kd_dev) {
        TRY(kd_head(t, a, target, rows, n_rows, scale, loss));
        if (n_rows == 0) CUDA_TRY(cudaMemsetAsync(BF(p->dxn), 0, (size_t)(T * D) * 2, t->stream));
    } else if (n_rows > 0) {
        TRY(ce_fused_cuda(loss, BF(p->dxn), G(t, p->lm_head), BF(p->hf), W(t, p->lm_head), target, rows, n_rows, T, scale,
                          t->ce, s));
    } else {
        CUDA_TRY(cudaMemsetAsync(loss, 0, sizeof(double), t->stream));
        CUDA_TRY(cudaMemsetAsync(BF(p->dxn), 0, (size_t)(T * D) * 2, t->stream));
    }
    if (t->sharded && p->tied) TRY(bucket_begin(t, H, t->gl));
    CUDA_TRY(cudaMemsetAsync(BF(p->dres), 0, (size_t)(T * D) * 2, t->stream));
    TRY(need_unit(t, H));
    TRY(rmsnorm_bwd_cuda(BF(p->dres), G(t, p->norm_f), BF(p->dxn), BF(p->x[L]), W(t, p->norm_f), F4(p->rstd_f), T, D,
                         t->arena + p->norm_ws, s));
    if (t->sharded) TRY(bucket_end(t, H));
    for (int64_t l = L - 1; l >= 0; l--) {
        if (l < L - 1) TRY(need_unit(t, (int)l + 1));   /* gathered again (the last ones are still there) */
        if (l > 0) TRY(prefetch(t, (int)l));            /* layer l − 1 */
        TRY(x_up(t, l - 1));
        TRY(x_need(t, l));
        if (t->sharded) TRY(bucket_begin(t, (int)l + 1, t->gl));
        TRY(layer_bwd(t, l));
        if (t->sharded) TRY(bucket_end(t, (int)l + 1));
    }
    if (t->sharded && !p->tied) TRY(bucket_begin(t, 0, t->ga));
    TRY(embed_bwd_cuda(G(t, p->embed), BF(p->dres), tok, order, seg, n_seg, T, D, s));
    if (t->sharded) TRY(bucket_end(t, 0));
    return 0;
}

/* ---- the step -------------------------------------------------------------------------- */

/* The step's gradient: read its sequences, count the targets (all ranks), forward/backward
 * every micro-batch into t->g (zeroed first), sum over the ranks (levels 0, 1: one
 * all-reduce of the whole gradient after the last micro-batch; ZeRO-2/3: per unit, as the
 * backward goes). Losses stay on the device. */
static int step_grads(gt_trainer *t, int64_t *total_out) {
    const zr_layout *z = &t->z;
    int64_t T = t->T, A = t->o.grad_accum, total = 0, P = z->ranks, B = t->o.batch;
    sd_skip(t->d, &t->pos, (uint64_t)(z->rank * B * A));
    for (int64_t a = 0; a < A; a++) {
        int64_t n;
        int64_t K = t->kd.k;
        TRY(sd_read_kd(t->d, &t->pos, B, t->tokens + a * T, t->doc_start + a * T, t->posi + a * T, t->target + a * T, &n,
                       t->top_n ? t->top_n + a * T : NULL, t->top_n ? t->top_ids + a * T * K : NULL,
                       t->top_n ? t->top_lps + a * T * K : NULL));
        total += n;
    }
    sd_skip(t->d, &t->pos, (uint64_t)((P - 1 - z->rank) * B * A));
    if (P > 1) TRY(comm_allreduce(t->host, &total, &total, 1, RT_DT_I64, COMM_SUM));
    if (t->g) CUDA_TRY(cudaMemsetAsync(t->g, 0, t->mem.grads, t->stream));   /* (a host shard is overwritten by micro-batch 0) */
    float scale = total > 0 ? (float)(1.0 / (double)total) : 0.0f;
    for (t->mb = 0; t->mb < A; t->mb++) TRY(micro_batch(t, t->mb, scale));
    if (P > 1 && !t->sharded) TRY(comm_allreduce(t->nccl, t->g, t->g, (size_t)z->padded, RT_DT_F32, COMM_SUM));
    *total_out = total;
    return 0;
}

/* The gradient of state element x (GPU flat offset) and the bf16 weight it updates. */
static float *grad_at(const gt_trainer *t, int64_t x) { return t->g + (t->sharded ? x - t->mbase : x); }
static uint16_t *weight_at(const gt_trainer *t, int64_t x) { return t->wb + (t->z3 ? x - t->mbase : x); }

/* AdamW on the elements [a, b) of the state, per tensor part (decay on matrices): on the
 * device, or (offload) on the host's f32 state with the kernels' CPU twin on the trainer's
 * pool; g: the gradient of element a (device, or the host staging). */
static int adamw_range(gt_trainer *t, int64_t a0, int64_t b0, float *g, double lr, double coef) {
    const sm_model *m = t->m;
    bool off = t->o.offload_optimizer;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const sm_tensor *x = &m->tensors[i];
        int64_t o = t->p.off[i];
        int64_t a = o > a0 ? o : a0, b = o + x->numel < b0 ? o + x->numel : b0;
        if (a >= b) continue;
        adamw_hparams h = {.lr = lr, .beta1 = t->o.beta1, .beta2 = t->o.beta2, .eps = t->o.eps,
                           .weight_decay = x->decay ? t->o.weight_decay : 0.0, .step = t->step};
        int64_t k = a - t->mbase;
        float *ga = g + (a - a0);
        if (off) {
            if (coef != 1.0) vec_scale(ga, (size_t)(b - a), (float)coef, t->pool);
            adamw_step(t->master + k, ga, t->m1 + k, t->m2 + k, (size_t)(b - a), &h, t->pool);
        } else {
            TRY(adamw_step_cuda(t->master + k, weight_at(t, a), ga, t->m1 + k, t->m2 + k, (size_t)(b - a), &h, (float)coef,
                                t->stream));
        }
    }
    return 0;
}

/* The update of [lo, hi). Offloaded, in chunks through two pinned staging slots: with the
 * gradient on the device (levels 0, 1) chunk k+1's gradient comes down while the host updates
 * chunk k; the gradient shard on the host (ZeRO-2/3) is read in place; each chunk's bf16
 * copy then goes up (the trainer's stream keeps the copies in order; the next step starts
 * after the last one). */
static int update(gt_trainer *t, double lr, double coef) {
    const zr_layout *z = &t->z;
    if (z->hi <= z->lo) return 0;
    if (!t->o.offload_optimizer) return adamw_range(t, z->lo, z->hi, grad_at(t, z->lo), lr, coef);
    int64_t C = t->chunk, n = z->hi - z->lo, K = (n + C - 1) / C;
    for (int64_t k = -1; k < K; k++) {
        int64_t next = k + 1;
        if (!t->gh && next < K) {   /* bring chunk k+1 down into slot (k+1) % 2 */
            int64_t a = z->lo + next * C, len = a + C < z->hi ? C : z->hi - a;
            CUDA_TRY(cudaMemcpyAsync(t->hgrad + (next & 1) * C, grad_at(t, a), (size_t)len * 4, cudaMemcpyDeviceToHost,
                                     t->stream));
            CUDA_TRY(cudaEventRecord(t->staged[next & 1], t->stream));
        }
        if (k < 0) continue;
        int64_t a = z->lo + k * C, len = a + C < z->hi ? C : z->hi - a;
        /* its gradient is here, and the upload two chunks ago (the same slot) is gone */
        CUDA_TRY(cudaEventSynchronize(t->staged[k & 1]));
        TRY(adamw_range(t, a, a + len, t->gh ? t->gh + (a - t->mbase) : t->hgrad + (k & 1) * C, lr, coef));
        uint16_t *hb = t->hbf + (k & 1) * C;
        cvt_f32_to_bf16(t->master + (a - t->mbase), hb, (size_t)len);
        CUDA_TRY(cudaMemcpyAsync(weight_at(t, a), hb, (size_t)len * 2, cudaMemcpyHostToDevice, t->stream));
        if (t->gh) CUDA_TRY(cudaEventRecord(t->staged[k & 1], t->stream));
    }
    return 0;
}

/* ---- the offloaded update, overlapped with the next step (ZeRO-3) ------------------------ */

/* Unit u's part of this rank's state: AdamW on the host in chunks through the two pinned
 * bf16 slots (*k counts the chunks, alternating the slots across units), each chunk's bf16
 * copy going up on `up`; then up_ev[u]. The same ranges and math as update(). */
static int update_unit(gt_trainer *t, int u, int64_t *k) {
    const zr_layout *z = &t->z;
    int64_t lo = unit_lo(t, u), hi = lo + unit_len(t, u);
    int64_t ua = lo > z->lo ? lo : z->lo, ub = hi < z->hi ? hi : z->hi, C = t->chunk;
    for (int64_t a = ua; a < ub; a += C, (*k)++) {
        int64_t len = a + C < ub ? C : ub - a;
        int slot = (int)(*k & 1);
        CUDA_TRY(cudaEventSynchronize(t->staged[slot]));   /* the slot's last upload is gone */
        TRY(adamw_range(t, a, a + len, t->gh + (a - t->mbase), t->upd_lr, t->upd_coef));
        uint16_t *hb = t->hbf + (size_t)slot * (size_t)C;
        cvt_f32_to_bf16(t->master + (a - t->mbase), hb, (size_t)len);
        CUDA_TRY(cudaMemcpyAsync(weight_at(t, a), hb, (size_t)len * 2, cudaMemcpyHostToDevice, t->up));
        CUDA_TRY(cudaEventRecord(t->staged[slot], t->up));
    }
    CUDA_TRY(cudaEventRecord(t->up_ev[u], t->up));
    return 0;
}

static void *update_worker(void *arg) {
    gt_trainer *t = arg;
    int64_t k = 0;
    cudaError_t e = cudaSetDevice(t->dev);
    int rc = e == cudaSuccess ? 0 : rt_fail(RT_EINTERNAL, "cudaSetDevice on the optimizer thread: %s", cudaGetErrorString(e));
    for (int u = 0; u < unit_count(t); u++) {
        if (!rc) rc = update_unit(t, u, &k);
        pthread_mutex_lock(&t->upd_mu);
        if (rc && !t->upd_rc) {
            t->upd_rc = rc;
            snprintf(t->upd_msg, sizeof t->upd_msg, "%s", rt_errmsg());
        }
        t->upd_done = u + 1;
        pthread_cond_broadcast(&t->upd_cv);
        pthread_mutex_unlock(&t->upd_mu);
    }
    return NULL;
}

static int update_start(gt_trainer *t, double lr, double coef) {
    t->upd_lr = lr, t->upd_coef = coef, t->upd_done = 0, t->upd_rc = 0;
    if (pthread_create(&t->upd, NULL, update_worker, t)) return rt_fail(RT_EINTERNAL, "starting the optimizer thread failed");
    t->upd_running = true;
    return 0;
}

/* The stream s waits for unit u's update (nothing when no update is running). */
static int wait_update(gt_trainer *t, int u, cudaStream_t s) {
    if (!t->upd_running) return 0;
    pthread_mutex_lock(&t->upd_mu);
    while (t->upd_done <= u) pthread_cond_wait(&t->upd_cv, &t->upd_mu);
    int rc = t->upd_rc;
    pthread_mutex_unlock(&t->upd_mu);
    if (rc) return rt_fail(rc, "%s", t->upd_msg);
    CUDA_TRY(cudaStreamWaitEvent(s, t->up_ev[u], 0));
    return 0;
}

/* The update thread is done (every unit's upload enqueued; their events recorded). */
static int join_update(gt_trainer *t) {
    if (!t->upd_running) return 0;
    pthread_join(t->upd, NULL);
    t->upd_running = false;
    if (t->upd_rc) return rt_fail(t->upd_rc, "%s", t->upd_msg);
    return 0;
}

/* The state and weights as the last step left them: the update thread joined and its
 * uploads landed (before a checkpoint reads or replaces them). */
static int settle_update(gt_trainer *t) {
    TRY(join_update(t));
    if (t->up) CUDA_TRY(cudaStreamSynchronize(t->up));
    return 0;
}

static int step_inner(gt_trainer *t, tr_stats *st) {
    const zr_layout *z = &t->z;
    int64_t T = t->T, A = t->o.grad_accum, total = 0, P = z->ranks;
    TRY(step_grads(t, &total));
    TRY(join_update(t));   /* the last step's update thread: done by now (the forward waited for every unit) */
    double *dsum = (double *)(t->arena + t->p.sumsq);
    if (z->hi > z->lo && !t->gh)
        TRY(vec_sumsq_cuda(dsum, false, grad_at(t, z->lo), (size_t)(z->hi - z->lo), t->arena + t->p.sumsq_ws, t->stream));
    else
        CUDA_TRY(cudaMemsetAsync(dsum, 0, sizeof(double), t->stream));
    double losses[64], *hl = A <= 64 ? losses : rt_malloc((size_t)A * sizeof(double)), sumsq = 0, loss_sum = 0;
    if (!hl) return RT_ENOMEM;
    cudaError_t e = cudaMemcpyAsync(hl, t->arena + t->p.loss, (size_t)A * sizeof(double), cudaMemcpyDeviceToHost, t->stream);
    if (e == cudaSuccess) e = cudaMemcpyAsync(&sumsq, dsum, sizeof(double), cudaMemcpyDeviceToHost, t->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(t->stream);
    for (int64_t a = 0; a < A; a++) loss_sum += hl[a];
    if (hl != losses) free(hl);
    CUDA_TRY(e);
    if (t->gh && z->hi > z->lo) sumsq = vec_sumsq(t->gh + (z->lo - t->mbase), (size_t)(z->hi - z->lo), t->pool);
    if (P > 1) TRY(comm_allreduce(t->host, &loss_sum, &loss_sum, 1, RT_DT_F64, COMM_SUM));
    if (P > 1 && z->level > 0) TRY(comm_allreduce(t->host, &sumsq, &sumsq, 1, RT_DT_F64, COMM_SUM));
    double norm = sqrt(sumsq), coef = 1.0;
    if (t->o.clip > 0 && t->o.clip / (norm + 1e-6) < 1.0) coef = t->o.clip / (norm + 1e-6);
    double lr = tr_lr_at(&t->o, t->step);
    t->step++;
    if (t->overlap) TRY(update_start(t, lr, coef));   /* runs on while the next step's forward starts */
    else TRY(update(t, lr, coef));
    if (t->z3)   /* the gathered weights are the old ones now */
        for (int u = 0; u < unit_count(t); u++) t->wres[u] = NULL;
    if (P > 1 && (z->level == 1 || z->level == 2))
        TRY(comm_allgather(t->nccl, t->wb + (int64_t)z->rank * z->shard, t->wb, (size_t)z->shard, RT_DT_BF16));
    CUDA_TRY(cudaStreamSynchronize(t->stream));
    note_memory(t);
    *st = (tr_stats){.step = t->step, .loss = total > 0 ? loss_sum / (double)total : 0.0, .lr = lr, .grad_norm = norm,
                     .tokens = T * A * P, .loss_tokens = total, .epoch = t->pos.epoch};
    st->ce_loss = st->loss;
    if (t->kd_dev) TRY(kd_step_stats(t, total, st));
    return 0;
}

int gt_step(gt_trainer *t, tr_stats *st) {
    int rc = step_inner(t, st);
    return rc ? rt_errorf(rc, "GPU training step %lld", (long long)t->step + 1) : 0;
}

/* ---- validation loss ------------------------------------------------------------------- */

/* tr_eval's pass on the device: batch sequences at a time (the last batch padded with
 * positions of their own and no target), the forward of the step and the head's loss only
 * (ce_fused_cuda without gradients), the loss sum read back per batch. */
static int eval_inner(gt_trainer *t, sd_data *val, double *loss, int64_t *targets) {
    const gp_plan *p = &t->p;
    int64_t T = t->T, N = t->N, B = t->o.batch;
    if ((int64_t)sd_seq_len(val) != N)
        return rt_fail(RT_EINVAL, "the validation data holds sequences of %u tokens, the training data %lld",
                       sd_seq_len(val), (long long)N);
    if ((int64_t)sd_vocab_size(val) > p->V)
        return rt_fail(RT_EINVAL, "the validation data's vocabulary (%u) is larger than the model's (%lld)",
                       sd_vocab_size(val), (long long)p->V);
    sd_position pos = {0, 0, 0};   /* one pass over every sequence, as the CPU trainer */
    uint64_t n = sd_num_seqs(val);
    double sum = 0, *dl = (double *)(t->arena + p->loss);   /* slot 0: the step has read its losses */
    int64_t count = 0;
    for (uint64_t i = 0; i < n;) {
        int64_t k = (int64_t)(n - i < (uint64_t)B ? n - i : (uint64_t)B), nt = 0, n_rows, n_seg;
        TRY(sd_read(val, &pos, k, t->tokens, t->doc_start, t->posi, t->target, &nt));
        for (int64_t x = k * N; x < T; x++) t->tokens[x] = 0, t->doc_start[x] = (int32_t)x, t->posi[x] = 0, t->target[x] = -1;
        i += (uint64_t)k;
        if (nt == 0) continue;   /* (the same on every rank: ZeRO-3's gathers stay in step) */
        TRY(upload_batch(t, 0, &n_rows, &n_seg));
        TRY(forward_trunk(t));
        int head = p->tied ? 0 : (int)p->L + 1;
        TRY(need_unit(t, head));
        TRY(ce_fused_cuda(dl, NULL, NULL, BF(p->hf), W(t, p->lm_head), I4(p->batch) + 3 * T, I4(p->batch) + 4 * T, n_rows, T,
                          1.0f, t->ce, t->stream));
        double ls = 0;
        CUDA_TRY(cudaMemcpyAsync(&ls, dl, sizeof ls, cudaMemcpyDeviceToHost, t->stream));
        CUDA_TRY(cudaStreamSynchronize(t->stream));
        sum += ls;
        count += nt;
    }
    *loss = count ? sum / (double)count : NAN;
    *targets = count;
    return 0;
}

int gt_eval(gt_trainer *t, sd_data *val, double *loss, int64_t *targets) {
    *loss = 0;
    *targets = 0;
    int rc = eval_inner(t, val, loss, targets);
    return rc ? rt_errorf(rc, "validation loss on the GPU") : 0;
}

/* ---- checkpoints ----------------------------------------------------------------------- */

/* Saving streams the checkpoint one tensor at a time (tr_save_stream): for each tensor the
 * files ask for, every rank copies its piece of the tensor's GPU range out of its state part
 * and one alltoallv brings the pieces to rank 0 (ZeRO-0: rank 0 holds it all). Every rank
 * makes the same calls in the same order (the non-writing ranks, and rank 0 after a failed
 * write, run through the rest), so host memory is two tensors' worth per rank. */
typedef struct {
    gt_trainer *t;
    bool root, master;
    float *stage, *sink;     /* [largest tensor] each: this rank's piece; rank 0's drain */
    size_t *iv;              /* [4P]: alltoallv's counts and displacements */
    int64_t calls, total;
} save_ctx;

static int save_fetch(void *ctx, int kind, const sm_tensor *x, float *dst) {
    save_ctx *c = ctx;
    gt_trainer *t = c->t;
    const zr_layout *z = &t->z;
    c->calls++;
    const float *st = kind == 0 ? t->m1 : kind == 1 ? t->m2 : t->master;
    int64_t o = t->p.off[x - t->m->tensors], n = x->numel, S = z->shard, P = z->ranks;
    if (z->level == 0 || P == 1) {   /* rank 0 has the whole state (ZeRO-0: every rank has) */
        if (c->root) TRY(state_get(t, dst, st + o, (size_t)n));
    } else {
        int64_t a = o > t->mbase ? o : t->mbase, b = o + n < t->mbase + S ? o + n : t->mbase + S;
        size_t *sc = c->iv, *sd = sc + P, *rc = sd + P, *rd = rc + P;
        memset(c->iv, 0, 4 * (size_t)P * sizeof *c->iv);
        if (a < b) TRY(state_get(t, c->stage, st + (a - t->mbase), (size_t)(b - a)));
        sc[0] = a < b ? (size_t)(b - a) : 0;
        for (int64_t r = 0; c->root && r < P; r++) {
            int64_t ra = o > r * S ? o : r * S, rb = o + n < (r + 1) * S ? o + n : (r + 1) * S;
            rc[r] = ra < rb ? (size_t)(rb - ra) : 0;
            rd[r] = ra < rb ? (size_t)(ra - o) : 0;
        }
        TRY(comm_alltoallv(t->host, c->stage, sc, sd, c->root ? dst : c->sink, rc, rd, RT_DT_F32));
    }
    if (!c->root || dst == c->sink) return 0;
    static const char *what[3] = {"the AdamW first moments", "the AdamW second moments", "the weights"};
    for (int64_t k = 0; k < n; k++)
        if (!isfinite(dst[k]))
            return rt_fail(RT_ERANGE, "%s of %s hold %g at element %lld: not finite, the checkpoint is not written",
                           what[kind], x->name, (double)dst[k], (long long)k);
    return 0;
}

/* The calls of the sequence rank 0's writers did not make (all of them on the other ranks). */
static int save_drain(save_ctx *c) {
    const sm_model *m = c->t->m;
    int64_t nt = (int64_t)m->n_tensors, per = c->master ? 3 : 2;
    int rc = 0;
    while (!rc && c->calls < c->total) {
        int64_t k = c->calls, ti = k < nt ? k : (k - nt) / per, kind = k < nt ? 2 : (k - nt) % per;
        rc = save_fetch(c, (int)kind, &m->tensors[ti], c->sink);
    }
    return rc;
}

int gt_save(gt_trainer *t, const char *dir, rt_dtype model_dtype) {
    const zr_layout *z = &t->z;
    const sm_model *m = t->m;
    int64_t big = 1;
    for (size_t i = 0; i < m->n_tensors; i++) big = m->tensors[i].numel > big ? m->tensors[i].numel : big;
    save_ctx c = {.t = t, .root = z->rank == 0, .master = model_dtype != RT_DT_F32,
                  .total = (int64_t)m->n_tensors * (model_dtype != RT_DT_F32 ? 4 : 3)};
    c.stage = rt_malloc((size_t)big * 4), c.sink = rt_malloc((size_t)big * 4);
    c.iv = rt_calloc(4 * (size_t)z->ranks, sizeof *c.iv);
    int rc = c.stage && c.sink && c.iv ? 0 : rt_fail(RT_ENOMEM, "staging one tensor to save");
    if (!rc) rc = settle_update(t);
    if (!rc) {
        cudaError_t e = cudaStreamSynchronize(t->stream);
        if (e != cudaSuccess) rc = rt_fail(RT_EINTERNAL, "before a checkpoint: %s", cudaGetErrorString(e));
    }
    if (z->ranks > 1) {   /* nobody starts the gathers unless everybody can */
        int32_t ok = rc == 0;
        int arc = comm_allreduce(t->host, &ok, &ok, 1, RT_DT_I32, COMM_MIN);
        if (!rc && arc) rc = arc;
        if (!rc && !ok) rc = rt_fail(RT_ENOMEM, "saving checkpoint %s: another rank could not prepare", dir);
    }
    bool gathering = !rc;
    if (gathering && c.root)
        rc = tr_save_stream(m, save_fetch, &c, t->step, &t->pos, t->N, &t->o, dir, model_dtype);
    int drc = gathering ? save_drain(&c) : 0;
    if (!rc) rc = drc;
    free(c.stage), free(c.sink), free(c.iv);
    if (z->ranks > 1) {
        int32_t r0 = rc;
        int brc = comm_broadcast(t->host, &r0, 1, RT_DT_I32, 0);
        if (brc) return rt_errorf(brc, "saving checkpoint %s", dir);
        if (r0 && !c.root) return rt_fail(r0, "saving checkpoint %s failed on rank 0", dir);
    }
    return rc;
}

/* optimizer.safetensors holds exp_avg.NAME and exp_avg_sq.NAME of every tensor, F32 of its
 * size, and master.NAME of all or none (the f32 masters of a BF16 model.safetensors). */
static int check_optimizer(const gt_trainer *t, const st_file *f, bool *master) {
    const sm_model *m = t->m;
    char name[160];
    snprintf(name, sizeof name, "master.%s", m->n_tensors ? m->tensors[0].name : "");
    *master = st_find(f, name) != NULL;
    static const char *pre[3] = {"exp_avg.", "exp_avg_sq.", "master."};
    for (size_t i = 0; i < m->n_tensors; i++)
        for (int k = 0; k < (*master ? 3 : 2); k++) {
            snprintf(name, sizeof name, "%s%s", pre[k], m->tensors[i].name);
            const st_tensor *st = st_find(f, name);
            if (!st) return rt_fail(RT_EFORMAT, "optimizer.safetensors: %s missing", name);
            if (st->dtype != RT_DT_F32 || (int64_t)st->nelem != m->tensors[i].numel)
                return rt_fail(RT_EFORMAT, "optimizer.safetensors: %s is %s with %zu elements, F32 with %lld expected", name,
                               rt_dtype_name(st->dtype), st->nelem, (long long)m->tensors[i].numel);
        }
    return 0;
}

/* Every rank reads only what it keeps, from the mmapped files, chunk by chunk: the weights
 * (the f32 masters when the checkpoint has them, else model.safetensors), its part of the
 * moments, and trainer_state.json's step and data position. */
int gt_resume(gt_trainer *t, const char *dir) {
    sm_model w = *t->m;   /* the shapes, reading dir's model.safetensors */
    w.source = (char *)dir;
    st_file *f = NULL;
    wsrc ws = {0};
    bool master = false;
    char *sdir = tr_state_dir(dir), *path = sdir ? rt_path_join(sdir, "optimizer.safetensors") : NULL;
    free(sdir);
    int rc = path ? settle_update(t) : RT_ENOMEM;
    if (!rc) rc = tr_resume_position(t->d, &t->step, &t->pos, dir);
    if (!rc) rc = st_open(path, &f);
    if (!rc) rc = check_optimizer(t, f, &master);
    if (!rc && master) ws = (wsrc){.f = f, .prefix = "master."};
    else if (!rc) rc = sm_reader_open(&w, &ws.r);
    if (!rc) rc = upload_params(t, &ws);
    if (!rc) rc = upload_state(t, t->m1, &(wsrc){.f = f, .prefix = "exp_avg."});
    if (!rc) rc = upload_state(t, t->m2, &(wsrc){.f = f, .prefix = "exp_avg_sq."});
    sm_reader_close(ws.r);
    st_close(f);
    free(path);
    return rc ? rt_errorf(rc, "resuming from %s on the GPU", dir) : 0;
}

#endif
