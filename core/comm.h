/* core/comm.h — collective communication between ranks (one process per device).
 *
 * One interface, three backends: "single" (one rank, no library: every collective is a
 * copy), MPI (Open MPI; processes started by mpirun/srun, one per rank, on one or many
 * nodes) on host buffers, and NCCL on device buffers (CUDA builds).
 *
 * Host backends (single, MPI): reductions are deterministic and rank-ordered: element i of
 * the result is ((x_0[i] op x_1[i]) op x_2[i]) … op x_{P-1}[i], computed the same way on every
 * rank, so results do not depend on message timing, and equal a serial loop over the ranks'
 * inputs. (comm_allreduce is a rank-ordered reduce-scatter followed by an all-gather: the
 * same 2(P-1)/P · n bytes per rank as a ring.)
 *
 * Buffers are host memory (NCCL: device memory). Counts are elements. In place, as NCCL
 * defines it: allreduce with send == recv; reduce_scatter with recv == send + rank·recv_count;
 * allgather with send == recv + rank·send_count; gather (at the root) with
 * send == recv + root·send_count. Supported dtypes: F32, F64, I32, I64 (U8 for
 * gather/broadcast/alltoall; NCCL also BF16 and F16, reductions included).
 * comm_open() picks MPI when the process was started by mpirun/srun (or when forced), else
 * single (a build without MPI, make MPI=0, refuses MPI: RT_EUNSUPPORTED); comm_close() finalizes
 * MPI if comm_open() initialized it. The rt_comm is owned by
 * the caller. comm_local_rank/size: this rank's index among the ranks on its node, and
 * their number (MPI_COMM_TYPE_SHARED), for picking a GPU or a thread count.
 *
 * NCCL (built when RT_HAVE_CUDA; otherwise comm_open_nccl() returns RT_EUNSUPPORTED):
 * comm_open_nccl() makes a device communicator over the same ranks as `host` (an open
 * single or MPI communicator, borrowed, which must outlive it): it selects `device`
 * (cudaSetDevice; −1: the local rank), rank 0 draws the ncclUniqueId and broadcasts it over
 * `host`, and every rank joins with ncclCommInitRank. Collectives are then the same calls
 * with device pointers; they are enqueued on `stream` (a cudaStream_t; NULL: a non-blocking
 * stream the communicator creates and owns) and return once enqueued — comm_sync() waits for
 * them (host backends: returns 0 at once). comm_barrier() syncs the stream, then barriers on
 * the host communicator. NCCL does not promise rank-ordered or run-to-run identical
 * reductions (its ring/tree algorithm and protocol are chosen per size and topology, and
 * the summation order follows them): only the host backends give bit-equal results across
 * rank counts, and GPU runs are compared against them with a tolerance.
 *
 * Errors: RT_EINVAL (bad counts/dtype/root), RT_EUNSUPPORTED, RT_EINTERNAL (the MPI, CUDA or
 * NCCL call that failed, with its message), RT_ENOMEM.
 */
#ifndef RT_COMM_H
#define RT_COMM_H

#include <stddef.h>

#include "core/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rt_comm rt_comm;
typedef enum { COMM_SUM, COMM_MAX, COMM_MIN } comm_op;
typedef enum { COMM_AUTO, COMM_SINGLE, COMM_MPI, COMM_NCCL } comm_backend;

int comm_open(comm_backend backend, rt_comm **out);
void comm_close(rt_comm *c);                                    /* NULL is fine */
int comm_rank(const rt_comm *c);
int comm_size(const rt_comm *c);
const char *comm_backend_name(const rt_comm *c);
int comm_local_rank(const rt_comm *c);
int comm_local_size(const rt_comm *c);

int comm_open_nccl(rt_comm *host, int device, void *stream, rt_comm **out);
int comm_sync(rt_comm *c);

int comm_allreduce(rt_comm *c, const void *send, void *recv, size_t count, rt_dtype dt, comm_op op);
/* send: size × recv_count elements; rank r receives the reduction of block r. Host backends
 * exchange and reduce in rounds through a scratch the communicator keeps (made at its first
 * reduce-scatter, 2 MiB per rank; a call allocates nothing after that). */
int comm_reduce_scatter(rt_comm *c, const void *send, void *recv, size_t recv_count, rt_dtype dt, comm_op op);
/* The same with blocks of different lengths, laid end to end: rank r's block is recv_counts[r]
 * elements (0 is fine) at send + Σ_{q<r} recv_counts[q]; rank r receives its reduction in recv
 * (in place: recv == its block of send). recv_counts must be the same on every rank. Host
 * backends: one MPI_Alltoallv per round as above; NCCL: ncclReduceScatter when the counts are
 * equal, else one group (ncclGroupStart/End) of a ncclReduce per non-empty block. */
int comm_reduce_scatterv(rt_comm *c, const void *send, void *recv, const size_t *recv_counts, rt_dtype dt, comm_op op);
/* Rank `root` receives the reduction of every rank's send [count] in recv (significant at the
 * root only; NULL elsewhere is fine; recv == send in place). Host backends: rank-ordered as
 * above, through the root in blocks of at most 2^20 elements. */
int comm_reduce(rt_comm *c, const void *send, void *recv, size_t count, rt_dtype dt, comm_op op, int root);
/* recv: size × send_count elements, rank r's block at r × send_count. */
int comm_allgather(rt_comm *c, const void *send, void *recv, size_t send_count, rt_dtype dt);
/* recv (significant at root only; NULL elsewhere is fine): size × send_count elements,
 * rank r's block at r × send_count. */
int comm_gather(rt_comm *c, const void *send, void *recv, size_t send_count, rt_dtype dt, int root);
/* send_counts[r] elements go to rank r from send + send_displs[r]; likewise for recv. */
int comm_alltoallv(rt_comm *c, const void *send, const size_t *send_counts, const size_t *send_displs, void *recv,
                   const size_t *recv_counts, const size_t *recv_displs, rt_dtype dt);
int comm_broadcast(rt_comm *c, void *buf, size_t count, rt_dtype dt, int root);
int comm_barrier(rt_comm *c);
/* Ends every rank of the job with `code` (MPI_Abort; NCCL: its host's), for a failure on one
 * rank that the others, waiting in a collective, cannot learn of. Single: returns. */
void comm_abort(rt_comm *c, int code);

#ifdef __cplusplus
}
#endif

#endif
