/* tests/tools/kernel_cpu.c — runs one CPU kernel on inputs from a safetensors file and writes
 * its outputs to another, for tests/ref/test_kernels_cpu.py (which makes the inputs and the
 * expected values with torch / transformers; nothing here computes an expected value).
 *
 *   kernel_cpu IN.safetensors OUT.safetensors
 *
 * IN's __metadata__ names the operation ("op") and its scalar parameters (strings); its
 * tensors are the operands, F32 unless said. "threads" (default 1) sizes the thread pool (1: no
 * pool). Operations and what they write:
 *   rmsnorm  x [M,D], w [D], dy [M,D], dx0 [M,D], dw0 [D]; optional add [M,D]; eps, inplace.
 *            y, rstd from rmsnorm_fwd — or, with add, y, rstd, sum from rmsnorm_residual_fwd
 *            (inplace=1: sum is x's own buffer) — then dx = dx0 + ∂, dw = dw0 + ∂ from
 *            rmsnorm_bwd on the norm's input.
 *   rope     x, dy [T,H,hd], pos [T] I32; rope_type (default|linear|llama3), theta, factor,
 *            low_freq_factor, high_freq_factor, original_max_position_embeddings.
 *            inv_freq [hd/2] (rope_inv_freq), cos, sin [T,hd/2] (rope_tables), y = rope_apply(x),
 *            dx = rope_apply(dy, inverse).
 *   yarn     x [T,H,VS], pos [T] I32; rope_type (default|yarn), theta, factor, beta_fast, beta_slow,
 *            mscale, mscale_all_dim, attention_factor, original_max_position_embeddings;
 *            dim (default VS), offset (default 0), interleaved (0|1). inv_freq [dim/2], cs_scale
 *            [1] (yarn_init), y: x with the dim values at offset of every vector rotated by
 *            yarn_tables + yarn_rope_apply (row stride H·VS, vector stride VS).
 *   gemm     A, B, C0 as stored (row strides lda, ldb, ldc may exceed the used width); ta, tb,
 *            M, N, K, alpha, beta; kernel (auto|blas|avx2). C: mm_sgemm (auto) or mm_sgemm_with.
 *   linear   x [M,K], w [N,K], dy [M,N], dx0 [M,K], dw0 [N,K]; optional b [N], db0 [N];
 *            accumulate (0|1). y (mm_linear_fwd), y_cols (mm_linear_fwd_cols), dx
 *            (mm_linear_bwd_x from dx0), dw, db (mm_linear_bwd_w from dw0, db0; db NULL
 *            without b).
 *   swiglu   g, u, da [n]. a (swiglu_fwd), dg, du, a_bwd (swiglu_bwd, which writes a again).
 *   embed    table [V,D], ids [M] I32, dout [M,D], dtable0 [V,D]. out (embed_fwd), dtable
 *            (dtable0 + embed_bwd).
 * Exit status 0, or 1 with one line on stderr (bad input names what is wrong).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/model_config.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "kernels/act.h"
#include "kernels/embed.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/rope.h"

#define MAX_OUT 8

typedef struct {
    st_file *in;
    const json_t *meta;
    tp_pool *pool;
    st_wtensor out[MAX_OUT];
    void *owned[MAX_OUT];
    int n_out;
} job;

static int fail(const char *fmt, const char *a) {
    fprintf(stderr, "kernel_cpu: ");
    fprintf(stderr, fmt, a);
    fprintf(stderr, "\n");
    return 1;
}

static const char *meta_str(const job *j, const char *key, const char *dflt) {
    const json_t *v = j->meta ? json_object_get(j->meta, key) : NULL;
    return v && json_is_string(v) ? json_string_value(v) : dflt;
}
static double meta_num(const job *j, const char *key, double dflt) {
    const char *s = meta_str(j, key, NULL);
    return s ? strtod(s, NULL) : dflt;
}
static int64_t meta_int(const job *j, const char *key, int64_t dflt) {
    const char *s = meta_str(j, key, NULL);
    return s ? strtoll(s, NULL, 10) : dflt;
}

/* A copy of tensor `name` (dtype dt), or NULL when absent and !required (a message when required). */
static void *get(const job *j, const char *name, rt_dtype dt, bool required, const st_tensor **info) {
    const st_tensor *t = st_find(j->in, name);
    if (info) *info = t;
    if (!t) {
        if (required) fprintf(stderr, "kernel_cpu: input tensor %s missing\n", name);
        return NULL;
    }
    if (t->dtype != dt) {
        fprintf(stderr, "kernel_cpu: input tensor %s is %s, wanted %s\n", name, rt_dtype_name(t->dtype),
                rt_dtype_name(dt));
        return NULL;
    }
    void *p = malloc(t->nbytes ? t->nbytes : 1);
    if (p) memcpy(p, t->data, t->nbytes);
    return p;
}

/* Queues data (malloc'd, owned by the job from here on) as output `name` of the given shape. */
static void put(job *j, const char *name, void *data, rt_dtype dt, int ndim, const int64_t *shape) {
    st_wtensor *w = &j->out[j->n_out];
    w->name = name, w->dtype = dt, w->ndim = ndim, w->data = data;
    for (int i = 0; i < ndim; i++) w->shape[i] = shape[i];
    j->owned[j->n_out++] = data;
}

static int op_rmsnorm(job *j) {
    const st_tensor *tx;
    float *x = get(j, "x", RT_DT_F32, true, &tx), *w = get(j, "w", RT_DT_F32, true, NULL);
    float *dy = get(j, "dy", RT_DT_F32, true, NULL), *dx = get(j, "dx0", RT_DT_F32, true, NULL);
    float *dw = get(j, "dw0", RT_DT_F32, true, NULL), *add = get(j, "add", RT_DT_F32, false, NULL);
    if (!x || !w || !dy || !dx || !dw || tx->ndim != 2) return 1;
    int64_t M = tx->shape[0], D = tx->shape[1];
    float eps = (float)meta_num(j, "eps", 1e-6);
    float *y = malloc((size_t)(M * D) * sizeof *y), *rstd = malloc((size_t)M * sizeof *rstd);
    const float *norm_in = x;
    if (add) {
        float *sum = meta_int(j, "inplace", 0) ? x : malloc((size_t)(M * D) * sizeof *sum);
        rmsnorm_residual_fwd(y, rstd, sum, x, add, w, M, D, eps, j->pool);
        norm_in = sum;
        put(j, "sum", sum, RT_DT_F32, 2, (int64_t[]){M, D});
        if (sum != x) free(x);
        free(add);
    } else {
        rmsnorm_fwd(y, rstd, x, w, M, D, eps, j->pool);
    }
    rmsnorm_bwd(dx, dw, dy, norm_in, w, rstd, M, D, j->pool);
    if (!add) free(x);
    free(w), free(dy);
    put(j, "y", y, RT_DT_F32, 2, (int64_t[]){M, D});
    put(j, "rstd", rstd, RT_DT_F32, 1, (int64_t[]){M});
    put(j, "dx", dx, RT_DT_F32, 2, (int64_t[]){M, D});
    put(j, "dw", dw, RT_DT_F32, 1, (int64_t[]){D});
    return 0;
}

static int op_rope(job *j) {
    const st_tensor *tx;
    float *x = get(j, "x", RT_DT_F32, true, &tx), *dy = get(j, "dy", RT_DT_F32, true, NULL);
    int32_t *pos = get(j, "pos", RT_DT_I32, true, NULL);
    if (!x || !dy || !pos || tx->ndim != 3) return 1;
    int64_t T = tx->shape[0], H = tx->shape[1], hd = tx->shape[2], half = hd / 2;
    mc_rope r = {.theta = meta_num(j, "theta", 10000.0),
                 .factor = meta_num(j, "factor", 1.0),
                 .low_freq_factor = meta_num(j, "low_freq_factor", 1.0),
                 .high_freq_factor = meta_num(j, "high_freq_factor", 4.0),
                 .original_max_position_embeddings = meta_int(j, "original_max_position_embeddings", 8192)};
    const char *type = meta_str(j, "rope_type", "default");
    if (!strcmp(type, "default")) r.type = MC_ROPE_DEFAULT;
    else if (!strcmp(type, "linear")) r.type = MC_ROPE_LINEAR;
    else if (!strcmp(type, "llama3")) r.type = MC_ROPE_LLAMA3;
    else return fail("unknown rope_type %s (default, linear, llama3)", type);
    float *inv = malloc((size_t)half * sizeof *inv);
    float *c = malloc((size_t)(T * half) * sizeof *c), *s = malloc((size_t)(T * half) * sizeof *s);
    if (rope_inv_freq(&r, hd, inv)) return fail("%s", rt_errmsg());
    rope_tables(c, s, pos, T, inv, half);
    rope_apply(x, c, s, T, H, hd, false, j->pool);
    rope_apply(dy, c, s, T, H, hd, true, j->pool);
    free(pos);
    put(j, "inv_freq", inv, RT_DT_F32, 1, (int64_t[]){half});
    put(j, "cos", c, RT_DT_F32, 2, (int64_t[]){T, half});
    put(j, "sin", s, RT_DT_F32, 2, (int64_t[]){T, half});
    put(j, "y", x, RT_DT_F32, 3, (int64_t[]){T, H, hd});
    put(j, "dx", dy, RT_DT_F32, 3, (int64_t[]){T, H, hd});
    return 0;
}

static int op_yarn(job *j) {
    const st_tensor *tx;
    float *x = get(j, "x", RT_DT_F32, true, &tx);
    int32_t *pos = get(j, "pos", RT_DT_I32, true, NULL);
    if (!x || !pos || tx->ndim != 3) return 1;
    int64_t T = tx->shape[0], H = tx->shape[1], VS = tx->shape[2];
    int64_t dim = meta_int(j, "dim", VS), off = meta_int(j, "offset", 0), half = dim / 2;
    if (dim <= 0 || dim % 2 || dim > YARN_MAX_DIM || off < 0 || off + dim > VS) return fail("yarn: bad dim/offset%s", "");
    mc_rope r = {.theta = meta_num(j, "theta", 10000.0),
                 .factor = meta_num(j, "factor", 1.0),
                 .beta_fast = meta_num(j, "beta_fast", 32.0),
                 .beta_slow = meta_num(j, "beta_slow", 1.0),
                 .mscale = meta_num(j, "mscale", 1.0),
                 .mscale_all_dim = meta_num(j, "mscale_all_dim", 0.0),
                 .attention_factor = meta_num(j, "attention_factor", 0.0),
                 .original_max_position_embeddings = meta_int(j, "original_max_position_embeddings", 4096)};
    const char *type = meta_str(j, "rope_type", "yarn");
    if (!strcmp(type, "default")) r.type = MC_ROPE_DEFAULT;
    else if (!strcmp(type, "yarn")) r.type = MC_ROPE_YARN;
    else return fail("unknown rope_type %s (default, yarn)", type);
    float *inv = malloc((size_t)half * sizeof *inv), *cs = malloc(sizeof *cs);
    float *c = malloc((size_t)(T * half) * sizeof *c), *s = malloc((size_t)(T * half) * sizeof *s);
    if (yarn_init(&r, dim, inv, cs)) return fail("%s", rt_errmsg());
    yarn_tables(c, s, pos, T, inv, half, *cs);
    yarn_rope_apply(x + off, T, H * VS, H, VS, dim, c, s, meta_int(j, "interleaved", 1), j->pool);
    free(pos), free(c), free(s);
    put(j, "inv_freq", inv, RT_DT_F32, 1, (int64_t[]){half});
    put(j, "cs_scale", cs, RT_DT_F32, 1, (int64_t[]){1});
    put(j, "y", x, RT_DT_F32, 3, (int64_t[]){T, H, VS});
    return 0;
}

static int op_gemm(job *j) {
    const st_tensor *tc;
    float *A = get(j, "A", RT_DT_F32, true, NULL), *B = get(j, "B", RT_DT_F32, true, NULL);
    float *C = get(j, "C0", RT_DT_F32, true, &tc);
    if (!A || !B || !C) return 1;
    bool ta = meta_int(j, "ta", 0), tb = meta_int(j, "tb", 0);
    int64_t M = meta_int(j, "M", 0), N = meta_int(j, "N", 0), K = meta_int(j, "K", 0);
    int64_t lda = meta_int(j, "lda", 0), ldb = meta_int(j, "ldb", 0), ldc = meta_int(j, "ldc", 0);
    float alpha = (float)meta_num(j, "alpha", 1.0), beta = (float)meta_num(j, "beta", 0.0);
    const char *kernel = meta_str(j, "kernel", "auto");
    if (!strcmp(kernel, "auto")) mm_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else if (!strcmp(kernel, "blas")) mm_sgemm_with(MM_GEMM_BLAS, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else if (!strcmp(kernel, "avx2")) mm_sgemm_with(MM_GEMM_AVX2, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else if (!strcmp(kernel, "dnnl")) mm_sgemm_with(MM_GEMM_DNNL, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else return fail("unknown kernel %s (auto, blas, avx2, dnnl)", kernel);
    free(A), free(B);
    put(j, "C", C, RT_DT_F32, tc->ndim, tc->shape);
    return 0;
}

static int op_linear(job *j) {
    const st_tensor *tx, *tw;
    float *x = get(j, "x", RT_DT_F32, true, &tx), *w = get(j, "w", RT_DT_F32, true, &tw);
    float *dy = get(j, "dy", RT_DT_F32, true, NULL), *dx = get(j, "dx0", RT_DT_F32, true, NULL);
    float *dw = get(j, "dw0", RT_DT_F32, true, NULL);
    float *b = get(j, "b", RT_DT_F32, false, NULL), *db = get(j, "db0", RT_DT_F32, false, NULL);
    if (!x || !w || !dy || !dx || !dw || tx->ndim != 2 || tw->ndim != 2) return 1;
    int64_t M = tx->shape[0], K = tx->shape[1], N = tw->shape[0];
    float *y = malloc((size_t)(M * N) * sizeof *y), *yc = malloc((size_t)(M * N) * sizeof *yc);
    mm_linear_fwd(y, x, w, b, M, N, K, j->pool);
    mm_linear_fwd_cols(yc, x, w, b, M, N, K, j->pool);
    mm_linear_bwd_x(NULL, false, dy, w, M, N, K, j->pool);   /* dx == NULL: skipped, nothing to see */
    mm_linear_bwd_x(dx, meta_int(j, "accumulate", 0), dy, w, M, N, K, j->pool);
    mm_linear_bwd_w(dw, b ? db : NULL, dy, x, M, N, K, j->pool);
    free(x), free(w), free(dy), free(b);
    put(j, "y", y, RT_DT_F32, 2, (int64_t[]){M, N});
    put(j, "y_cols", yc, RT_DT_F32, 2, (int64_t[]){M, N});
    put(j, "dx", dx, RT_DT_F32, 2, (int64_t[]){M, K});
    put(j, "dw", dw, RT_DT_F32, 2, (int64_t[]){N, K});
    if (db) put(j, "db", db, RT_DT_F32, 1, (int64_t[]){N});
    return 0;
}

static int op_swiglu(job *j) {
    const st_tensor *tg;
    float *g = get(j, "g", RT_DT_F32, true, &tg), *u = get(j, "u", RT_DT_F32, true, NULL);
    float *da = get(j, "da", RT_DT_F32, true, NULL);
    if (!g || !u || !da) return 1;
    size_t n = tg->nelem;
    float *a = malloc(n * sizeof *a), *a2 = malloc(n * sizeof *a2);
    float *dg = malloc(n * sizeof *dg), *du = malloc(n * sizeof *du);
    swiglu_fwd(a, g, u, n, j->pool);
    swiglu_bwd(dg, du, a2, da, g, u, n, j->pool);
    free(g), free(u), free(da);
    int64_t shape[] = {(int64_t)n};
    put(j, "a", a, RT_DT_F32, 1, shape);
    put(j, "dg", dg, RT_DT_F32, 1, shape);
    put(j, "du", du, RT_DT_F32, 1, shape);
    put(j, "a_bwd", a2, RT_DT_F32, 1, shape);
    return 0;
}

static int op_embed(job *j) {
    const st_tensor *tt, *ti;
    float *table = get(j, "table", RT_DT_F32, true, &tt), *dout = get(j, "dout", RT_DT_F32, true, NULL);
    float *dtable = get(j, "dtable0", RT_DT_F32, true, NULL);
    int32_t *ids = get(j, "ids", RT_DT_I32, true, &ti);
    if (!table || !dout || !dtable || !ids || tt->ndim != 2) return 1;
    int64_t V = tt->shape[0], D = tt->shape[1], M = (int64_t)ti->nelem;
    for (int64_t m = 0; m < M; m++)
        if (ids[m] < 0 || ids[m] >= V) return fail("ids: %s out of range", "an id");
    float *out = malloc((size_t)(M * D) * sizeof *out);
    embed_fwd(out, table, ids, M, D, j->pool);
    embed_bwd(dtable, dout, ids, M, D, j->pool);
    free(table), free(dout), free(ids);
    put(j, "out", out, RT_DT_F32, 2, (int64_t[]){M, D});
    put(j, "dtable", dtable, RT_DT_F32, 2, (int64_t[]){V, D});
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: kernel_cpu IN.safetensors OUT.safetensors\n");
        return 2;
    }
    job j = {0};
    if (st_open(argv[1], &j.in)) return fail("%s", rt_errmsg());
    j.meta = st_metadata(j.in, 0);
    mm_blas_single_thread();
    int threads = (int)meta_int(&j, "threads", 1);
    if (threads > 1 && tp_create(threads, &j.pool)) return fail("%s", rt_errmsg());
    const char *op = meta_str(&j, "op", "");
    int rc;
    if (!strcmp(op, "rmsnorm")) rc = op_rmsnorm(&j);
    else if (!strcmp(op, "rope")) rc = op_rope(&j);
    else if (!strcmp(op, "yarn")) rc = op_yarn(&j);
    else if (!strcmp(op, "gemm")) rc = op_gemm(&j);
    else if (!strcmp(op, "linear")) rc = op_linear(&j);
    else if (!strcmp(op, "swiglu")) rc = op_swiglu(&j);
    else if (!strcmp(op, "embed")) rc = op_embed(&j);
    else rc = fail("unknown op \"%s\" (rmsnorm, rope, yarn, gemm, linear, swiglu, embed)", op);
    if (!rc && st_write(argv[2], j.out, (size_t)j.n_out, NULL)) rc = fail("%s", rt_errmsg());
    for (int i = 0; i < j.n_out; i++) free(j.owned[i]);
    tp_free(j.pool);
    st_close(j.in);
    return rc;
}
