/* core/comm_nccl.c — the NCCL backend of core/comm.h (CUDA builds only; see the contract
 * there). Device buffers; every call is enqueued on the communicator's stream. The
 * ncclUniqueId travels over the host (MPI) communicator.
 */
#ifdef RT_HAVE_CUDA

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/comm_int.h"
#include "core/cuda_try.h"
#include "core/log.h"
#include "core/status.h"

#define NCCL_TRY(call)                                                                                   \
    do {                                                                                                 \
        ncclResult_t e_ = (call);                                                                        \
        if (e_ != ncclSuccess) {                                                                         \
            RT_DEBUG("%s failed at %s:%d", #call, __FILE__, __LINE__);                                   \
            return rt_fail(RT_EINTERNAL, "NCCL failed%s%.*s: %s", RT_CALL_IN_(#call), ncclGetErrorString(e_)); \
        }                                                                                                \
    } while (0)


#define NC(c) ((ncclComm_t)(c)->nccl)
#define ST(c) ((cudaStream_t)(c)->stream)

static int nccl_type(rt_dtype dt, ncclDataType_t *t) {
    switch (dt) {
    case RT_DT_F32: *t = ncclFloat32; return 0;
    case RT_DT_F64: *t = ncclFloat64; return 0;
    case RT_DT_F16: *t = ncclFloat16; return 0;
    case RT_DT_BF16: *t = ncclBfloat16; return 0;
    case RT_DT_I32: *t = ncclInt32; return 0;
    case RT_DT_I64: *t = ncclInt64; return 0;
    case RT_DT_U8: *t = ncclUint8; return 0;
    default: return rt_fail(RT_EUNSUPPORTED, "NCCL collectives on %s are not supported", rt_dtype_name(dt));
    }
}

static int nccl_op(rt_dtype dt, comm_op op, ncclRedOp_t *o) {
    if (dt == RT_DT_U8) return rt_fail(RT_EUNSUPPORTED, "reductions on U8 are not supported");
    *o = op == COMM_SUM ? ncclSum : op == COMM_MAX ? ncclMax : ncclMin;
    return 0;
}

int nccl_open(rt_comm *host, int device, void *stream, rt_comm *c) {
    int n_dev = 0;
    CUDA_TRY(cudaGetDeviceCount(&n_dev));
    if (device < 0) device = comm_local_rank(host);
    if (device >= n_dev)
        return rt_fail(RT_EINVAL, "rank %d wants GPU %d, this node has %d (one rank per GPU)", host->rank, device, n_dev);
    CUDA_TRY(cudaSetDevice(device));
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (host->rank == 0) NCCL_TRY(ncclGetUniqueId(&id));
    int rc = comm_broadcast(host, &id, sizeof id, RT_DT_U8, 0);
    if (rc) return rt_errorf(rc, "broadcasting the NCCL id");
    ncclComm_t nc;
    NCCL_TRY(ncclCommInitRank(&nc, host->size, id, host->rank));
    c->nccl = nc;
    if (stream) {
        c->stream = stream;
    } else {
        cudaStream_t s;
        cudaError_t e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
        if (e != cudaSuccess) {
            ncclCommDestroy(nc);
            return rt_fail(RT_EINTERNAL, "cudaStreamCreateWithFlags: %s", cudaGetErrorString(e));
        }
        c->stream = s;
        c->own_stream = 1;
    }
    return 0;
}

void nccl_close(rt_comm *c) {
    if (c->nccl) ncclCommDestroy(NC(c));
    if (c->own_stream) cudaStreamDestroy(ST(c));
    c->nccl = NULL;
}

int nccl_sync(rt_comm *c) {
    CUDA_TRY(cudaStreamSynchronize(ST(c)));
    return 0;
}

int nccl_allreduce(rt_comm *c, const void *send, void *recv, size_t count, rt_dtype dt, comm_op op) {
    ncclDataType_t t = ncclFloat32;
    ncclRedOp_t o = ncclSum;
    int rc = nccl_type(dt, &t);
    if (!rc) rc = nccl_op(dt, op, &o);
    if (rc) return rc;
    NCCL_TRY(ncclAllReduce(send, recv, count, t, o, NC(c), ST(c)));
    return 0;
}

int nccl_reduce_scatter(rt_comm *c, const void *send, void *recv, size_t recv_count, rt_dtype dt, comm_op op) {
    ncclDataType_t t = ncclFloat32;
    ncclRedOp_t o = ncclSum;
    int rc = nccl_type(dt, &t);
    if (!rc) rc = nccl_op(dt, op, &o);
    if (rc) return rc;
    NCCL_TRY(ncclReduceScatter(send, recv, recv_count, t, o, NC(c), ST(c)));
    return 0;
}

int nccl_reduce_scatterv(rt_comm *c, const void *send, void *recv, const size_t *recv_counts, rt_dtype dt, comm_op op) {
    ncclDataType_t t = ncclFloat32;
    ncclRedOp_t o = ncclSum;
    int rc = nccl_type(dt, &t);
    if (!rc) rc = nccl_op(dt, op, &o);
    if (rc) return rc;
    int P = c->size, same = 1;
    for (int q = 1; q < P; q++) same &= recv_counts[q] == recv_counts[0];
    if (same) {
        NCCL_TRY(ncclReduceScatter(send, recv, recv_counts[0], t, o, NC(c), ST(c)));
        return 0;
    }
    const unsigned char *in = send;
    size_t es = rt_dtype_size(dt), at = 0;
    NCCL_TRY(ncclGroupStart());
    for (int q = 0; q < P; q++) {
        const void *blk = in + at * es;
        at += recv_counts[q];
        if (!recv_counts[q]) continue;
        ncclResult_t e = ncclReduce(blk, q == c->rank ? recv : (void *)blk, recv_counts[q], t, o, q, NC(c), ST(c));
        if (e != ncclSuccess) {
            ncclGroupEnd();
            return rt_fail(RT_EINTERNAL, "NCCL failed: %s", ncclGetErrorString(e));
        }
    }
    NCCL_TRY(ncclGroupEnd());
    return 0;
}

int nccl_reduce(rt_comm *c, const void *send, void *recv, size_t count, rt_dtype dt, comm_op op, int root) {
    ncclDataType_t t = ncclFloat32;
    ncclRedOp_t o = ncclSum;
    int rc = nccl_type(dt, &t);
    if (!rc) rc = nccl_op(dt, op, &o);
    if (rc) return rc;
    /* recvbuff is read at the root only; elsewhere send stands in for a NULL recv */
    NCCL_TRY(ncclReduce(send, c->rank == root ? recv : (void *)send, count, t, o, root, NC(c), ST(c)));
    return 0;
}

int nccl_allgather(rt_comm *c, const void *send, void *recv, size_t send_count, rt_dtype dt) {
    ncclDataType_t t = ncclFloat32;
    int rc = nccl_type(dt, &t);
    if (rc) return rc;
    NCCL_TRY(ncclAllGather(send, recv, send_count, t, NC(c), ST(c)));
    return 0;
}

/* Point-to-point inside one group: the root receives every rank's block (its own by a
 * device copy unless in place). */
int nccl_gather(rt_comm *c, const void *send, void *recv, size_t send_count, rt_dtype dt, int root) {
    ncclDataType_t t = ncclFloat32;
    int rc = nccl_type(dt, &t);
    if (rc) return rc;
    size_t bytes = send_count * rt_dtype_size(dt);
    NCCL_TRY(ncclGroupStart());
    if (c->rank == root) {
        for (int r = 0; r < c->size; r++) {
            unsigned char *dst = (unsigned char *)recv + (size_t)r * bytes;
            if (r != root) {
                ncclResult_t e = ncclRecv(dst, send_count, t, r, NC(c), ST(c));
                if (e != ncclSuccess) { ncclGroupEnd(); NCCL_TRY(e); }
            } else if ((const void *)dst != send && bytes) {
                cudaError_t e = cudaMemcpyAsync(dst, send, bytes, cudaMemcpyDeviceToDevice, ST(c));
                if (e != cudaSuccess) { ncclGroupEnd(); CUDA_TRY(e); }
            }
        }
    } else {
        ncclResult_t e = ncclSend(send, send_count, t, root, NC(c), ST(c));
        if (e != ncclSuccess) { ncclGroupEnd(); NCCL_TRY(e); }
    }
    NCCL_TRY(ncclGroupEnd());
    return 0;
}

int nccl_alltoallv(rt_comm *c, const void *send, const size_t *send_counts, const size_t *send_displs, void *recv,
                   const size_t *recv_counts, const size_t *recv_displs, rt_dtype dt) {
    ncclDataType_t t = ncclFloat32;
    int rc = nccl_type(dt, &t);
    if (rc) return rc;
    size_t es = rt_dtype_size(dt);
    NCCL_TRY(ncclGroupStart());
    for (int r = 0; r < c->size; r++) {
        ncclResult_t e = ncclSuccess;
        if (send_counts[r])
            e = ncclSend((const unsigned char *)send + send_displs[r] * es, send_counts[r], t, r, NC(c), ST(c));
        if (e == ncclSuccess && recv_counts[r])
            e = ncclRecv((unsigned char *)recv + recv_displs[r] * es, recv_counts[r], t, r, NC(c), ST(c));
        if (e != ncclSuccess) { ncclGroupEnd(); NCCL_TRY(e); }
    }
    NCCL_TRY(ncclGroupEnd());
    return 0;
}

int nccl_broadcast(rt_comm *c, void *buf, size_t count, rt_dtype dt, int root) {
    ncclDataType_t t = ncclFloat32;
    int rc = nccl_type(dt, &t);
    if (rc) return rc;
    NCCL_TRY(ncclBroadcast(buf, buf, count, t, root, NC(c), ST(c)));
    return 0;
}

#else
typedef int comm_nccl_not_built;   /* CPU build: nothing here (ISO C wants a declaration) */
#endif
