/* teacher/ds_cuda_int.h — what teacher/ds_cuda.c and teacher/ds_cuda_mtp.c share (private; not
 * the library's interface): the model's device layout (weights and activations as byte offsets
 * into two arenas) and the steps of ds_cuda.c the MTP layer reuses.
 *
 * With dsc_model.mtp set, layers[L] (L = num_hidden_layers) is the MTP layer's decoder layer: laid
 * out, split over the ranks, loaded and run like a main layer, with a latent cache layer of its
 * own (the arena then holds L + 1 layers; the block tables are the main sequence's); dsc_model.mt
 * holds the MTP layer's other weights. Functions return 0 or an RT_E… code (ds_cuda.h). */
#ifndef RT_TEACHER_DS_CUDA_INT_H
#define RT_TEACHER_DS_CUDA_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/comm.h"
#include "core/model_config.h"
#include "core/safetensors.h"
#include "kernels/fp8.h"
#include "kernels/moe.h"
#include "teacher/cuda_batch.h"
#include "teacher/ds_cuda.h"
#include "teacher/kvcache.h"

/* an FP8 matrix on the device: byte offsets of its e4m3 values and f32 block scales */
typedef struct {
    size_t w, s;
    int64_t rows, cols;
} dmat;

typedef struct {
    size_t attn_norm, ffn_norm, q_a_norm, kv_norm;   /* f32 */
    dmat q_a, q_b, kv_a, o;                          /* q_b is q_proj without q_lora */
    size_t kvb;                                      /* bf16 [H·(dn+dv), R] */
    bool moe;
    dmat w13, w2;                                    /* dense MLP or shared experts (rows 0: none) */
    int64_t inter;                                   /* their intermediate size */
    size_t gate, gate_bias;                          /* bf16 [E, D], f32 [E] (NONE: absent) */
    dmat e13, e2;                                    /* all experts end to end: [E·2I, D], [E·D, I] */
} dsc_layer;

/* byte offsets into the activation arena */
typedef struct {
    size_t x, xn, tmp, att, aq, as, qa, qan, q, kv, lat, qabs, olat, ov;
    size_t logit, ridx, rw, off, ros, sor, mqp, msp, gu, hq, hs, y, ys;
    size_t hf, logits, lpart, lgather, meta, inv_freq;
    size_t sendq, sends, recvq, recvs, yb, ret, pidx;   /* expert parallel (P > 1) */
    size_t cat;                                       /* MTP: [T, 2D] bf16 [enorm(e) | hnorm(h)] */
    size_t sl, sparams, srng, stok, slp, neginf;     /* device sampling (dsc_sample) */
    size_t gemm_ws, mla_ws, smp_ws, end;
} dsc_act;

/* the MTP layer's weights beside its decoder layer (teacher/deepseek.h's ds_mtp_forward) */
typedef struct {
    size_t embed, head;                    /* bf16 [V, D] whole; bf16 this rank's LM-head rows [Vr, D] */
    size_t enorm, hnorm, norm;             /* f32 [D]: enorm, hnorm, shared_head.norm */
    dmat eh;                               /* eh_proj [D, 2D] FP8 (whole on every rank) */
} dsc_mtp_w;

struct dsc_model {
    mc_config c;
    dsc_plan p;
    /* H (heads), El (routed experts) and Fl (dense intermediate) are this rank's; the rest the model's */
    int64_t D, L, V, H, R, dr, dn, dv, dq, ql, E, K, I, Imax, Kmax, El, Fl;
    int P, rank;                           /* ranks (1: one GPU) */
    int64_t h0, f0;                        /* this rank's first head, first dense intermediate row */
    int64_t Vp, v0, Vr;                    /* LM-head rows per rank (padded), this rank's first and count */
    rt_comm *host, *nccl;                  /* borrowed; NCCL's over the same ranks (P > 1) */
    int32_t *hidx;                         /* host: a MoE layer's routing, then its index lists (P > 1) */
    int64_t dense_layers;                  /* layers with a dense MLP */
    size_t embed, norm, head;              /* bf16, f32, bf16 */
    dsc_layer *layers;                     /* [L + mtp]: layer L is the MTP layer's decoder layer */
    bool mtp;                              /* the MTP layer is loaded (dsc_load_opts.load_mtp) */
    dsc_mtp_w mt;                          /* its other weights */
    dsc_act a;
    size_t gemm_ws_bytes, mla_ws_bytes, smp_ws_bytes;
    int64_t dev_rows;                      /* logits rows the last dsc_forward left on the device */
    int64_t bs, n_blocks;                  /* dsc_cache_init */
    size_t layer_stride;                   /* elements of one layer's latent arena */
    float cs_scale, attn_scale, eps;
    moe_router_cfg router;
    cudaStream_t stream;
    fp8_lt *lt;
    uint8_t *wb;                           /* device: weights */
    uint16_t *kv;                          /* device: latent arena */
    char *arena;                           /* device: activations and workspaces */
    int32_t *meta;                         /* host: a pass's ints, uploaded at once */
    cb_graphs g;                           /* CUDA graphs of decode passes (teacher/cuda_batch.h) */
};

static inline size_t up256(size_t n) { return (n + 255) / 256 * 256; }
static inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

typedef struct {
    dsc_model *m;
    const st_file *f;
    const char *dir;
    float *stage;                          /* DSC_CHUNK floats */
    uint16_t *stage16;                     /* DSC_CHUNK bf16 */
} loader;

typedef cb_piece piece;   /* tokens [from, from + n) of sequence s's new tokens */

#define A(off) ((void *)(m->arena + (off)))
#define BF(off) ((uint16_t *)(m->arena + (off)))
#define F4(off) ((float *)(m->arena + (off)))
#define I4(off) ((int32_t *)(m->arena + (off)))
#define W8(off) ((const uint8_t *)(m->wb + (off)))
#define WF(off) ((const float *)(m->wb + (off)))
#define W16(off) ((const uint16_t *)(m->wb + (off)))

/* ds_cuda.c's steps, for ds_cuda_mtp.c */
dmat dsc_put_fp8(size_t *at, int64_t rows, int64_t cols);
size_t dsc_put(size_t *at, size_t bytes);
void dsc_layout_layer(dsc_model *m, int64_t l, size_t *at);          /* layer l's weights at *at, … */
int dsc_load_layer(dsc_model *m, loader *ld, int64_t l);             /* layer l's weights from the mapping */
int dsc_load_fp8(loader *ld, const char *name, int64_t rows, int64_t cols, const dmat *d);   /* whole */
int dsc_load_plain(loader *ld, const char *name, int64_t rows, int64_t cols, size_t at, bool to16);
int dsc_load_plain_rows(loader *ld, const char *name, int64_t rows, int64_t cols, int64_t r0, int64_t nr, size_t at,
                        bool to16);
int dsc_linear(dsc_model *m, const dmat *w, const uint16_t *in, int64_t T, uint16_t *out);
int dsc_attention(dsc_model *m, const dsc_layer *y, int64_t l, int64_t T, int64_t ld, int64_t max_ctx);
int dsc_feed_forward(dsc_model *m, const dsc_layer *y, int64_t T);   /* tmp = FFN(xn) */
int dsc_pass(dsc_model *m, kv_seq *const *seqs, const piece *pc, int64_t np, int64_t T, const int32_t *tokens_of,
             const int64_t *tok_at, int64_t dev_row, float *logits);
int dsc_reserve(dsc_model *m, kv_pool *cache, kv_seq *s, int64_t new_len);

/* ds_cuda_mtp.c's, for ds_cuda.c: the MTP layer's weights after the main ones (layout), its
 * other tensors from the mapping (load). */
void dsc_mtp_layout(dsc_model *m, size_t *at);
int dsc_mtp_load(dsc_model *m, loader *ld);

#endif
