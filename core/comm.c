#include "core/comm.h"

#ifdef RT_NO_MPI
#include "core/mpi_none.h"
#else
#include <mpi.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/comm_int.h"
#include "core/log.h"
#include "core/status.h"

#define MPI_TRY(call)                                                                         \
    do {                                                                                      \
        int e_ = (call);                                                                      \
        if (e_ != MPI_SUCCESS) {                                                              \
            char m_[MPI_MAX_ERROR_STRING];                                                    \
            int l_ = 0;                                                                       \
            MPI_Error_string(e_, m_, &l_);                                                    \
            RT_DEBUG("%s failed at %s:%d: %s", #call, __FILE__, __LINE__, m_);               \
            return rt_fail(RT_EINTERNAL, "MPI failed: %s", m_);                               \
        }                                                                                     \
    } while (0)

static int launched_by_mpirun(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK") || getenv("SLURM_NTASKS");
}

int comm_open(comm_backend backend, rt_comm **out) {
    *out = NULL;
    rt_comm *c = rt_calloc(1, sizeof *c);
    if (!c) return RT_ENOMEM;
    if (backend == COMM_AUTO) backend = launched_by_mpirun() ? COMM_MPI : COMM_SINGLE;
    if (backend == COMM_NCCL) { free(c); return rt_fail(RT_EINVAL, "comm_open: NCCL communicators come from comm_open_nccl"); }
    c->backend = backend;
    c->size = c->local_size = 1;
#ifdef RT_NO_MPI
    if (backend == COMM_MPI) {
        free(c);
        return rt_fail(RT_EUNSUPPORTED, "this retort was built without MPI (make MPI=0): run it as one process, "
                                        "without mpirun or srun");
    }
#endif
    if (backend == COMM_MPI) {
        int inited = 0;
        MPI_Initialized(&inited);
        if (!inited) {
            if (MPI_Init(NULL, NULL) != MPI_SUCCESS) { free(c); return rt_fail(RT_EINTERNAL, "MPI_Init failed"); }
            c->finalize = 1;
        }
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        c->mpi = MPI_COMM_WORLD;
        MPI_Comm_rank(c->mpi, &c->rank);
        MPI_Comm_size(c->mpi, &c->size);
        MPI_Comm node;   /* the ranks sharing this node's memory */
        if (MPI_Comm_split_type(c->mpi, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
            MPI_Comm_rank(node, &c->local_rank);
            MPI_Comm_size(node, &c->local_size);
            MPI_Comm_free(&node);
        }
    }
    *out = c;
    return 0;
}

void comm_close(rt_comm *c) {
    if (!c) return;
#ifdef RT_HAVE_CUDA
    if (c->backend == COMM_NCCL) nccl_close(c);
#endif
    if (c->finalize) MPI_Finalize();
    free(c->rs_buf);
    free(c->rs_iv);
    free(c);
}

int comm_rank(const rt_comm *c) { return c->rank; }
int comm_size(const rt_comm *c) { return c->size; }
const char *comm_backend_name(const rt_comm *c) {
    return c->backend == COMM_MPI ? "mpi" : c->backend == COMM_NCCL ? "nccl" : "single";
}

int comm_local_rank(const rt_comm *c) { return c->local_rank; }
int comm_local_size(const rt_comm *c) { return c->local_size; }

int comm_open_nccl(rt_comm *host, int device, void *stream, rt_comm **out) {
    *out = NULL;
#ifdef RT_HAVE_CUDA
    if (!host || host->backend == COMM_NCCL) return rt_fail(RT_EINVAL, "comm_open_nccl: the host communicator must be single or MPI");
    rt_comm *c = rt_calloc(1, sizeof *c);
    if (!c) return RT_ENOMEM;
    c->backend = COMM_NCCL;
    c->rank = host->rank;
    c->size = host->size;
    c->local_rank = host->local_rank;
    c->local_size = host->local_size;
    c->host = host;
    int rc = nccl_open(host, device, stream, c);
    if (rc) { free(c); return rc; }
    *out = c;
    return 0;
#else
    (void)host; (void)device; (void)stream;
    return rt_fail(RT_EUNSUPPORTED, "NCCL communicator: this retort was built without CUDA");
#endif
}

int comm_sync(rt_comm *c) {
#ifdef RT_HAVE_CUDA
    if (c->backend == COMM_NCCL) return nccl_sync(c);
#endif
    (void)c;
    return 0;
}

#ifdef RT_HAVE_CUDA
#define NCCL_DISPATCH(call) do { if (c->backend == COMM_NCCL) return call; } while (0)
#else
#define NCCL_DISPATCH(call) do { } while (0)
#endif

static int mpi_type(rt_dtype dt, MPI_Datatype *t) {
    switch (dt) {
    case RT_DT_F32: *t = MPI_FLOAT; return 0;
    case RT_DT_F64: *t = MPI_DOUBLE; return 0;
    case RT_DT_I32: *t = MPI_INT32_T; return 0;
    case RT_DT_I64: *t = MPI_INT64_T; return 0;
    case RT_DT_U8: *t = MPI_UINT8_T; return 0;
    default: return rt_fail(RT_EUNSUPPORTED, "collectives on %s are not supported", rt_dtype_name(dt));
    }
}

static int int_count(size_t n) {
    return n <= (size_t)INT32_MAX ? 0 : rt_fail(RT_EINVAL, "collective of %zu elements exceeds the MPI count limit", n);
}

/* acc[i] = acc[i] op x[i] */
#define ACC_LOOP(T)                                                                     \
    do {                                                                                \
        T *a = acc;                                                                     \
        const T *b = x;                                                                 \
        for (size_t i = 0; i < n; i++) {                                                \
            if (op == COMM_SUM) a[i] = a[i] + b[i];                                     \
            else if (op == COMM_MAX) a[i] = b[i] > a[i] ? b[i] : a[i];                  \
            else a[i] = b[i] < a[i] ? b[i] : a[i];                                      \
        }                                                                               \
    } while (0)

static int accumulate(void *acc, const void *x, size_t n, rt_dtype dt, comm_op op) {
    switch (dt) {
    case RT_DT_F32: ACC_LOOP(float); return 0;
    case RT_DT_F64: ACC_LOOP(double); return 0;
    case RT_DT_I32: ACC_LOOP(int32_t); return 0;
    case RT_DT_I64: ACC_LOOP(int64_t); return 0;
    default: return rt_fail(RT_EUNSUPPORTED, "reductions on %s are not supported", rt_dtype_name(dt));
    }
}

/* Host reduce-scatter of blocks laid end to end in send — rank q's block of counts[q]
 * elements (counts NULL: n each) at the sum of the earlier ones' counts — in rounds of at most
 * RS_CHUNK elements per block: one MPI_Alltoallv brings this round's slice of this rank's
 * block from every rank into the communicator's scratch (made once: size × RS_CHUNK
 * elements, never per call), where it is reduced in rank order into recv. send is not read
 * after the round that sent it, so recv may be this rank's block of send (in place). */
#define RS_CHUNK ((size_t)1 << 18)
static size_t rs_count(const size_t *counts, size_t n, int q) { return counts ? counts[q] : n; }
static int reduce_scatter_host(rt_comm *c, const void *send, void *recv, const size_t *counts, size_t n, rt_dtype dt,
                               comm_op op) {
    size_t es = rt_dtype_size(dt), P = (size_t)c->size, me = (size_t)c->rank, most = 0, total = 0;
    MPI_Datatype t = MPI_DATATYPE_NULL;
    int rc = mpi_type(dt, &t);
    if (rc) return rc;
    if (dt == RT_DT_U8) return rt_fail(RT_EUNSUPPORTED, "reductions on U8 are not supported");
    for (size_t q = 0; q < P; q++) {
        size_t k = rs_count(counts, n, (int)q);
        most = k > most ? k : most;
        total += k;
    }
    if ((rc = int_count(total))) return rc;
    const unsigned char *in = send;
    if (c->backend == COMM_SINGLE || P == 1) {
        if (in != recv) memmove(recv, in, rs_count(counts, n, 0) * es);
        return 0;
    }
    if (!c->rs_buf) {
        c->rs_buf = rt_malloc(P * RS_CHUNK * 8);
        c->rs_iv = rt_malloc(4 * P * sizeof(int));
        if (!c->rs_buf || !c->rs_iv) {
            free(c->rs_buf), free(c->rs_iv);
            c->rs_buf = NULL, c->rs_iv = NULL;
            return rt_fail(RT_ENOMEM, "reduce-scatter scratch of %zu bytes", P * RS_CHUNK * 8);
        }
    }
    int *sc = c->rs_iv, *sd = sc + P, *rcn = sd + P, *rd = rcn + P;
    size_t mine = rs_count(counts, n, (int)me);
    for (size_t at = 0; at < most; at += RS_CHUNK) {
        size_t displ = 0, got = mine > at ? (mine - at < RS_CHUNK ? mine - at : RS_CHUNK) : 0;
        for (size_t q = 0; q < P; q++) {
            size_t k = rs_count(counts, n, (int)q), s = k > at ? (k - at < RS_CHUNK ? k - at : RS_CHUNK) : 0;
            sc[q] = (int)s, sd[q] = (int)(displ + at);
            rcn[q] = (int)got, rd[q] = (int)(q * RS_CHUNK);
            displ += k;
        }
        MPI_TRY(MPI_Alltoallv(in, sc, sd, t, c->rs_buf, rcn, rd, t, c->mpi));
        for (size_t q = 1; q < P && !rc; q++) rc = accumulate(c->rs_buf, c->rs_buf + q * RS_CHUNK * es, got, dt, op);
        if (rc) return rc;
        memcpy((unsigned char *)recv + at * es, c->rs_buf, got * es);
    }
    return 0;
}

int comm_reduce_scatter(rt_comm *c, const void *send, void *recv, size_t recv_count, rt_dtype dt, comm_op op) {
    NCCL_DISPATCH(nccl_reduce_scatter(c, send, recv, recv_count, dt, op));
    return reduce_scatter_host(c, send, recv, NULL, recv_count, dt, op);
}

int comm_reduce_scatterv(rt_comm *c, const void *send, void *recv, const size_t *recv_counts, rt_dtype dt, comm_op op) {
    NCCL_DISPATCH(nccl_reduce_scatterv(c, send, recv, recv_counts, dt, op));
    return reduce_scatter_host(c, send, recv, recv_counts, 0, dt, op);
}

int comm_reduce(rt_comm *c, const void *send, void *recv, size_t count, rt_dtype dt, comm_op op, int root) {
    if (root < 0 || root >= c->size) return rt_fail(RT_EINVAL, "reduce root %d is not a rank (size %d)", root, c->size);
    NCCL_DISPATCH(nccl_reduce(c, send, recv, count, dt, op, root));
    size_t es = rt_dtype_size(dt), P = (size_t)c->size;
    MPI_Datatype t = MPI_DATATYPE_NULL;
    int rc = mpi_type(dt, &t);
    if (rc) return rc;
    if (dt == RT_DT_U8) return rt_fail(RT_EUNSUPPORTED, "reductions on U8 are not supported");
    if (c->backend == COMM_SINGLE || P == 1) {
        if (send != recv) memmove(recv, send, count * es);
        return 0;
    }
    /* the root gathers a block of every rank's input and reduces it in rank order */
    size_t blk = count < ((size_t)1 << 20) ? count : (size_t)1 << 20;
    int me = c->rank == root;
    unsigned char *all = me && blk ? rt_malloc(P * blk * es) : NULL;
    int32_t ok = !me || !blk || all != NULL;
    if ((rc = comm_allreduce(c, &ok, &ok, 1, RT_DT_I32, COMM_MIN))) { free(all); return rc; }
    if (!ok) { free(all); return rt_fail(RT_ENOMEM, "reduce: %zu bytes at the root", P * blk * es); }
    for (size_t at = 0; at < count && !rc; at += blk) {
        size_t n = count - at < blk ? count - at : blk;
        int e = MPI_Gather((const unsigned char *)send + at * es, (int)n, t, all, (int)n, t, root, c->mpi);
        if (e != MPI_SUCCESS) { free(all); MPI_TRY(e); }
        if (!me) continue;
        for (size_t r = 1; r < P && !rc; r++) rc = accumulate(all, all + r * n * es, n, dt, op);
        if (!rc) memcpy((unsigned char *)recv + at * es, all, n * es);
    }
    free(all);
    return rc;
}

int comm_allgather(rt_comm *c, const void *send, void *recv, size_t send_count, rt_dtype dt) {
    NCCL_DISPATCH(nccl_allgather(c, send, recv, send_count, dt));
    MPI_Datatype t = MPI_DATATYPE_NULL;
    int rc = mpi_type(dt, &t);
    if (rc) return rc;
    if (c->backend == COMM_SINGLE) {
        memmove(recv, send, send_count * rt_dtype_size(dt));
        return 0;
    }
    if ((rc = int_count(send_count))) return rc;
    /* in place: this rank's block already sits at recv + rank·send_count. send == recv on
     * another rank means what it says — the input is recv's first block — so it is moved
     * to its slot first (MPI forbids aliased send and receive buffers) */
    const unsigned char *own = (const unsigned char *)recv + (size_t)c->rank * send_count * rt_dtype_size(dt);
    int in_place = send == recv || (const unsigned char *)send == own;
    if (in_place && send != own) memmove((void *)own, send, send_count * rt_dtype_size(dt));
    MPI_TRY(MPI_Allgather(in_place ? MPI_IN_PLACE : send, (int)send_count, t, recv, (int)send_count, t, c->mpi));
    return 0;
}

int comm_gather(rt_comm *c, const void *send, void *recv, size_t send_count, rt_dtype dt, int root) {
    if (root < 0 || root >= c->size) return rt_fail(RT_EINVAL, "gather root %d is not a rank (size %d)", root, c->size);
    NCCL_DISPATCH(nccl_gather(c, send, recv, send_count, dt, root));
    MPI_Datatype t = MPI_DATATYPE_NULL;
    int rc = mpi_type(dt, &t);
    if (rc) return rc;
    if (c->backend == COMM_SINGLE) {
        memmove(recv, send, send_count * rt_dtype_size(dt));
        return 0;
    }
    if ((rc = int_count(send_count))) return rc;
    int in_place = c->rank == root &&
                   (const unsigned char *)send == (const unsigned char *)recv + (size_t)root * send_count * rt_dtype_size(dt);
    MPI_TRY(MPI_Gather(in_place ? MPI_IN_PLACE : send, (int)send_count, t, recv, (int)send_count, t, root, c->mpi));
    return 0;
}

int comm_allreduce(rt_comm *c, const void *send, void *recv, size_t count, rt_dtype dt, comm_op op) {
    NCCL_DISPATCH(nccl_allreduce(c, send, recv, count, dt, op));
    size_t es = rt_dtype_size(dt), P = (size_t)c->size;
    if (c->backend == COMM_SINGLE || P == 1) {
        MPI_Datatype t = MPI_DATATYPE_NULL;
        int rc = mpi_type(dt, &t);
        if (rc) return rc;
        if (send != recv) memmove(recv, send, count * es);
        return 0;
    }
    if (count % P == 0) {   /* no padding needed: reduce into recv's own block, gather in place */
        size_t blk = count / P;
        unsigned char *own = (unsigned char *)recv + (size_t)c->rank * blk * es;
        int rc = comm_reduce_scatter(c, send, own, blk, dt, op);
        return rc ? rc : comm_allgather(c, own, recv, blk, dt);
    }
    /* pad to a multiple of P so every rank owns an equal block */
    size_t block = (count + P - 1) / P;
    unsigned char *pad = rt_calloc(block * P, es), *mine = rt_malloc(block * es);
    if (!pad || !mine) { free(pad); free(mine); return RT_ENOMEM; }
    memcpy(pad, send, count * es);
    int rc = comm_reduce_scatter(c, pad, mine, block, dt, op);
    if (!rc) rc = comm_allgather(c, mine, pad, block, dt);
    if (!rc) memcpy(recv, pad, count * es);
    free(pad);
    free(mine);
    return rc;
}

static int to_int_array(const size_t *v, int n, int **out) {
    *out = rt_malloc((size_t)n * sizeof **out);
    if (!*out) return RT_ENOMEM;
    for (int i = 0; i < n; i++) {
        if (v[i] > (size_t)INT32_MAX) { free(*out); return rt_fail(RT_EINVAL, "alltoallv count %zu too large", v[i]); }
        (*out)[i] = (int)v[i];
    }
    return 0;
}

int comm_alltoallv(rt_comm *c, const void *send, const size_t *send_counts, const size_t *send_displs, void *recv,
                   const size_t *recv_counts, const size_t *recv_displs, rt_dtype dt) {
    NCCL_DISPATCH(nccl_alltoallv(c, send, send_counts, send_displs, recv, recv_counts, recv_displs, dt));
    MPI_Datatype t = MPI_DATATYPE_NULL;
    int rc = mpi_type(dt, &t);
    if (rc) return rc;
    size_t es = rt_dtype_size(dt);
    if (c->backend == COMM_SINGLE) {
        if (send_counts[0] != recv_counts[0]) return rt_fail(RT_EINVAL, "alltoallv: send and receive counts differ");
        memmove((unsigned char *)recv + recv_displs[0] * es, (const unsigned char *)send + send_displs[0] * es,
                send_counts[0] * es);
        return 0;
    }
    int *a[4] = {0};
    const size_t *src[4] = {send_counts, send_displs, recv_counts, recv_displs};
    for (int i = 0; i < 4 && !rc; i++) rc = to_int_array(src[i], c->size, &a[i]);
    if (!rc) {
        int e = MPI_Alltoallv(send, a[0], a[1], t, recv, a[2], a[3], t, c->mpi);
        if (e != MPI_SUCCESS) rc = rt_fail(RT_EINTERNAL, "MPI_Alltoallv failed (error %d)", e);
    }
    for (int i = 0; i < 4; i++) free(a[i]);
    return rc;
}

int comm_broadcast(rt_comm *c, void *buf, size_t count, rt_dtype dt, int root) {
    if (root < 0 || root >= c->size) return rt_fail(RT_EINVAL, "broadcast root %d is not a rank (size %d)", root, c->size);
    NCCL_DISPATCH(nccl_broadcast(c, buf, count, dt, root));
    MPI_Datatype t = MPI_DATATYPE_NULL;
    int rc = mpi_type(dt, &t);
    if (rc) return rc;
    if (c->backend == COMM_SINGLE) return 0;
    if ((rc = int_count(count))) return rc;
    MPI_TRY(MPI_Bcast(buf, (int)count, t, root, c->mpi));
    return 0;
}

int comm_barrier(rt_comm *c) {
#ifdef RT_HAVE_CUDA
    if (c->backend == COMM_NCCL) {
        int rc = nccl_sync(c);
        return rc ? rc : comm_barrier(c->host);
    }
#endif
    if (c->backend == COMM_SINGLE) return 0;
    MPI_TRY(MPI_Barrier(c->mpi));
    return 0;
}

void comm_abort(rt_comm *c, int code) {
    if (c->backend == COMM_NCCL) c = c->host;
    if (c->backend == COMM_MPI) MPI_Abort(c->mpi, code);
}
