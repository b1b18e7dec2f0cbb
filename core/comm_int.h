/* core/comm_int.h — private to core/comm.c and core/comm_nccl.c: the communicator and the
 * NCCL backend's entry points (defined in comm_nccl.c in CUDA builds, never called otherwise).
 */
#ifndef RT_COMM_INT_H
#define RT_COMM_INT_H

#ifdef RT_NO_MPI
#include "core/mpi_none.h"
#else
#include <mpi.h>
#endif
#include <stddef.h>

#include "core/comm.h"

struct rt_comm {
    comm_backend backend;
    int rank, size;
    int finalize;          /* we called MPI_Init */
    int local_rank, local_size;   /* among the ranks on this node (found at open) */
    MPI_Comm mpi;
    /* COMM_NCCL only */
    rt_comm *host;         /* the bootstrap communicator (borrowed) */
    void *nccl;            /* ncclComm_t */
    void *stream;          /* cudaStream_t the collectives are enqueued on */
    int own_stream;        /* we created it (destroyed by comm_close) */
    /* MPI: the reduce-scatters' scratch, made at the first one and kept (freed by comm_close) */
    unsigned char *rs_buf;  /* [size × RS_CHUNK elements of 8 bytes] */
    int *rs_iv;             /* [4 × size]: Alltoallv's counts and displacements */
};

#ifdef RT_HAVE_CUDA
int nccl_open(rt_comm *host, int device, void *stream, rt_comm *c);
void nccl_close(rt_comm *c);
int nccl_allreduce(rt_comm *c, const void *send, void *recv, size_t count, rt_dtype dt, comm_op op);
int nccl_reduce_scatter(rt_comm *c, const void *send, void *recv, size_t recv_count, rt_dtype dt, comm_op op);
int nccl_reduce_scatterv(rt_comm *c, const void *send, void *recv, const size_t *recv_counts, rt_dtype dt, comm_op op);
int nccl_reduce(rt_comm *c, const void *send, void *recv, size_t count, rt_dtype dt, comm_op op, int root);
int nccl_allgather(rt_comm *c, const void *send, void *recv, size_t send_count, rt_dtype dt);
int nccl_gather(rt_comm *c, const void *send, void *recv, size_t send_count, rt_dtype dt, int root);
int nccl_alltoallv(rt_comm *c, const void *send, const size_t *send_counts, const size_t *send_displs, void *recv,
                   const size_t *recv_counts, const size_t *recv_displs, rt_dtype dt);
int nccl_broadcast(rt_comm *c, void *buf, size_t count, rt_dtype dt, int root);
int nccl_sync(rt_comm *c);
#endif

#endif
