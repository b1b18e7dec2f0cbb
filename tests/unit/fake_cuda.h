/* tests/unit/fake_cuda.h — just enough of the CUDA runtime's names for student/gpu_train.c and
 * teacher/dense_cuda.c to compile against a CPU stand-in (tests/unit/test_gpu_train_fake.c,
 * tests/unit/test_dense_cuda_fake.c). Every runtime call and
 * every kernel entry point the trainer uses is renamed to fake_… so the stand-ins never
 * collide with the real ones a CUDA build's library carries; so are comm_open_nccl,
 * comm_close, comm_allgather and comm_allreduce (NCCL becomes the host communicator). The
 * blocks at the end add tensor parallel (bf16 all-reduce, several devices) and CUDA graphs
 * (capture records, launch replays) for teacher/dense_cuda.c, and the DeepSeek kernels, the
 * expert all-to-all and their graph recording for teacher/ds_cuda.c. Include before
 * gpu_train.c (or dense_cuda.c); the stand-ins are tests/unit/fake_cuda_impl.h. */
#ifndef RT_TESTS_FAKE_CUDA_H
#define RT_TESTS_FAKE_CUDA_H

#include <stddef.h>

#include "core/comm.h"

/* the real ones, for the stand-ins and for the includer's own use */
static inline int fake_real_comm_allgather(rt_comm *c, const void *send, void *recv, size_t n, rt_dtype dt) {
    return comm_allgather(c, send, recv, n, dt);
}
static inline void fake_real_comm_close(rt_comm *c) { comm_close(c); }

#define RT_FAKE_CUDA 1
#ifndef RT_HAVE_CUDA
#define RT_HAVE_CUDA 1
#endif

typedef enum { cudaSuccess = 0, cudaErrorMemoryAllocation = 2, cudaErrorInvalidValue = 1 } cudaError_t;
typedef enum { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 } cudaMemcpyKind;
typedef struct fake_stream *cudaStream_t;
typedef struct fake_event *cudaEvent_t;
#define cudaStreamNonBlocking 1u
#define cudaEventDisableTiming 2u

#define cudaGetDeviceCount fake_cudaGetDeviceCount
#define cudaGetErrorString fake_cudaGetErrorString
#define cudaSetDevice fake_cudaSetDevice
#define cudaStreamCreateWithFlags fake_cudaStreamCreateWithFlags
#define cudaStreamDestroy fake_cudaStreamDestroy
#define cudaStreamSynchronize fake_cudaStreamSynchronize
#define cudaEventCreateWithFlags fake_cudaEventCreateWithFlags
#define cudaEventDestroy fake_cudaEventDestroy
#define cudaEventRecord fake_cudaEventRecord
#define cudaEventSynchronize fake_cudaEventSynchronize
#define cudaMalloc fake_cudaMalloc
#define cudaMallocHost fake_cudaMallocHost
#define cudaFree fake_cudaFree
#define cudaFreeHost fake_cudaFreeHost
#define cudaMemcpy fake_cudaMemcpy
#define cudaMemcpyAsync fake_cudaMemcpyAsync
#define cudaMemset fake_cudaMemset
#define cudaMemsetAsync fake_cudaMemsetAsync
#define cudaMemGetInfo fake_cudaMemGetInfo

cudaError_t cudaGetDeviceCount(int *n);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaMallocHost(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind k);
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st);
cudaError_t cudaMemset(void *p, int v, size_t n);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t st);
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b);

/* trainer: the ZeRO-3 prefetch stream's ordering */
#define cudaStreamWaitEvent fake_cudaStreamWaitEvent
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
/* trainer: the stand-in allocator's peak device bytes since the last reset (pinned host
 * memory, cudaMallocHost, is not device memory and is not counted) */
size_t fake_cuda_peak_bytes(void);
void fake_cuda_peak_reset(void);

/* the kernels' CUDA entry points (declared under RT_HAVE_CUDA by the kernel family headers) */
#define mm_cuda_ctx_create fake_mm_cuda_ctx_create
#define mm_cuda_ctx_free fake_mm_cuda_ctx_free
#define mm_linear_fwd_cuda fake_mm_linear_fwd_cuda
#define mm_linear_bwd_x_cuda fake_mm_linear_bwd_x_cuda
#define mm_linear_bwd_w_cuda fake_mm_linear_bwd_w_cuda
#define mm_gemm_cuda fake_mm_gemm_cuda
#define rmsnorm_fwd_cuda fake_rmsnorm_fwd_cuda
#define rmsnorm_residual_fwd_cuda fake_rmsnorm_residual_fwd_cuda
#define rmsnorm_bwd_cuda fake_rmsnorm_bwd_cuda
#define rmsnorm_bwd_cuda_ws_bytes fake_rmsnorm_bwd_cuda_ws_bytes
#define rope_apply_cuda fake_rope_apply_cuda
#define rope_apply_cuda_ld fake_rope_apply_cuda_ld
#define swiglu_fwd_cuda fake_swiglu_fwd_cuda
#define swiglu_bwd_cuda fake_swiglu_bwd_cuda
#define embed_fwd_cuda fake_embed_fwd_cuda
#define embed_bwd_cuda fake_embed_bwd_cuda
#define attn_fwd_cuda fake_attn_fwd_cuda
#define attn_fwd_cuda_ex fake_attn_fwd_cuda_ex
#define attn_bwd_cuda fake_attn_bwd_cuda
#define attn_bwd_cuda_ex fake_attn_bwd_cuda_ex
#define attn_bwd_cuda_ws_bytes fake_attn_bwd_cuda_ws_bytes
#define ce_cuda_ws_create fake_ce_cuda_ws_create
#define ce_cuda_ws_free fake_ce_cuda_ws_free
#define ce_fused_cuda fake_ce_fused_cuda
#define adamw_step_cuda fake_adamw_step_cuda
#define vec_sumsq_cuda fake_vec_sumsq_cuda
#define vec_sumsq_cuda_ws_bytes fake_vec_sumsq_cuda_ws_bytes
#define vec_scale_cuda fake_vec_scale_cuda
#define cvt_bf16_to_f32_cuda fake_cvt_bf16_to_f32_cuda
#define cvt_f32_to_bf16_cuda fake_cvt_f32_to_bf16_cuda
#define fp8_block_dequant_cuda fake_fp8_block_dequant_cuda
#define attn_paged_fwd_cuda fake_attn_paged_fwd_cuda
#define attn_paged_store_cuda fake_attn_paged_store_cuda
#define attn_paged_cuda_ws_bytes fake_attn_paged_cuda_ws_bytes
#define attn_paged_prefill_tiles fake_attn_paged_prefill_tiles
#define attn_paged_prefill_cuda fake_attn_paged_prefill_cuda

/* NCCL (core/comm.h's device backend) */
#define comm_open_nccl fake_comm_open_nccl
#define comm_close fake_comm_close
#define comm_allgather fake_comm_allgather
int comm_open_nccl(rt_comm *host, int device, void *stream, rt_comm **out);
void comm_close(rt_comm *c);
int comm_allgather(rt_comm *c, const void *send, void *recv, size_t send_count, rt_dtype dt);

/* the trainer itself */
#define gt_check_device fake_gt_check_device
#define gt_create fake_gt_create
#define gt_free fake_gt_free
#define gt_step fake_gt_step
#define gt_steps_done fake_gt_steps_done
#define gt_save fake_gt_save
#define gt_resume fake_gt_resume
#define gt_peak_mem_gib fake_gt_peak_mem_gib

/* ---- teacher/dense_cuda.c over several ranks (tensor parallel) ---------------------------
 * NCCL's bf16 all-reduce becomes the host communicator's f32 one, rounded to bf16 once at the
 * end (as NCCL sums bf16 in f32 per step; exact for two ranks); other dtypes pass through. The
 * stand-in runtime reports fake_devices GPUs (fake_cuda_impl.h: 1 unless the includer sets
 * more, e.g. one per rank under mpirun). */
static inline int fake_real_comm_allreduce(rt_comm *c, const void *send, void *recv, size_t n, rt_dtype dt,
                                           comm_op op) {
    return comm_allreduce(c, send, recv, n, dt, op);
}
#define comm_allreduce fake_comm_allreduce
int comm_allreduce(rt_comm *c, const void *send, void *recv, size_t count, rt_dtype dt, comm_op op);

/* ---- CUDA graphs (teacher/dense_cuda.c's decode passes) ------------------------------------
 * cudaStreamBeginCapture puts a stream in capture (one at a time): what is then enqueued on it
 * does not run but is recorded, its arguments copied, in the graph cudaStreamEndCapture returns;
 * cudaGraphLaunch replays the records in order, reading the buffers as they are then (as a graph
 * reads device memory at launch, with the scalars of the capture). Recorded: the kernel stand-ins
 * a decode pass calls, device-to-device cudaMemcpyAsync, and NCCL's all-reduce and all-gather
 * (any, while a capture is open: NCCL enqueues on the communicator's stream). During a capture a
 * host↔device cudaMemcpyAsync (pageable memory) or a cudaStreamSynchronize of the capturing
 * stream fails, as they invalidate a real capture. The calls go through the wrappers of
 * fake_cuda_impl.h's graph block: at once outside a capture. */
typedef struct fake_graph *cudaGraph_t;
typedef struct fake_graph *cudaGraphExec_t;
typedef enum {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2
} cudaStreamCaptureMode;
#define cudaStreamBeginCapture fake_cudaStreamBeginCapture
#define cudaStreamEndCapture fake_cudaStreamEndCapture
#define cudaGraphInstantiate fake_cudaGraphInstantiate
#define cudaGraphLaunch fake_cudaGraphLaunch
#define cudaGraphDestroy fake_cudaGraphDestroy
#define cudaGraphExecDestroy fake_cudaGraphExecDestroy
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags);
cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s);
cudaError_t cudaGraphDestroy(cudaGraph_t g);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x);
size_t fake_graph_launches(void);   /* graphs launched so far */
size_t fake_graph_instances(void);  /* graphs instantiated so far */
/* the recording wrappers (fake_g_…) in place of the stand-ins (fake_…) */
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
#define embed_fwd_cuda fake_g_embed_fwd_cuda
#define embed_fwd_rows_cuda fake_g_embed_fwd_rows_cuda
#define rmsnorm_heads_fwd_cuda fake_g_rmsnorm_heads_fwd_cuda
#define rmsnorm_fwd_cuda fake_g_rmsnorm_fwd_cuda
#define mm_linear_fwd_cuda fake_g_mm_linear_fwd_cuda
#define rope_apply_cuda_ld fake_g_rope_apply_cuda_ld
#define attn_paged_store_cuda fake_g_attn_paged_store_cuda
#define attn_paged_fwd_cuda fake_g_attn_paged_fwd_cuda
#define swiglu_fwd_cuda fake_g_swiglu_fwd_cuda
#define mm_gemm_cuda fake_g_mm_gemm_cuda
#define cudaMemcpyAsync fake_g_cudaMemcpyAsync
#define cudaStreamSynchronize fake_g_cudaStreamSynchronize
#define comm_allreduce fake_g_comm_allreduce
#define comm_allgather fake_g_comm_allgather
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
int comm_allreduce(rt_comm *c, const void *send, void *recv, size_t count, rt_dtype dt, comm_op op);
int comm_allgather(rt_comm *c, const void *send, void *recv, size_t send_count, rt_dtype dt);
/* ---- DeepSeek-V3 on the GPU (teacher/ds_cuda.c, tests/unit/test_ds_cuda_fake.c) ---------- */
#define cudaMemcpy2DAsync fake_cudaMemcpy2DAsync
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind k, cudaStream_t st);
#define fp8_act_quant_cuda fake_fp8_act_quant_cuda
#define fp8_swiglu_quant_cuda fake_fp8_swiglu_quant_cuda
#define fp8_gemm_grouped_cuda fake_fp8_gemm_grouped_cuda
#define fp8_gemm_splitk_plan fake_fp8_gemm_splitk_plan
#define fp8_gemm_splitk_workspace_bytes fake_fp8_gemm_splitk_workspace_bytes
#define fp8_gemm_dense_cuda fake_fp8_gemm_dense_cuda
#define fp8_gemm_lt_create fake_fp8_gemm_lt_create
#define fp8_gemm_lt_free fake_fp8_gemm_lt_free
#define bf16_gemm_f32_cuda fake_bf16_gemm_f32_cuda
#define bf16_gemm_batched_cuda fake_bf16_gemm_batched_cuda
#define ds_rmsnorm_cuda fake_ds_rmsnorm_cuda
#define ds_rope_cuda fake_ds_rope_cuda
#define mla_decode_workspace_bytes fake_mla_decode_workspace_bytes
#define mla_decode_cuda fake_mla_decode_cuda
#define mla_cache_append_cuda fake_mla_cache_append_cuda
#define moe_route_cuda fake_moe_route_cuda
#define moe_permute_cuda fake_moe_permute_cuda
#define moe_gather_rows_cuda fake_moe_gather_rows_cuda
#define moe_combine_cuda fake_moe_combine_cuda
#define smp_cuda_workspace_bytes fake_smp_cuda_workspace_bytes
#define smp_sample_cuda fake_smp_sample_cuda
#define smp_top_logprobs_cuda fake_smp_top_logprobs_cuda

/* ---- DeepSeek-V3 over several ranks (teacher/ds_cuda.c's expert parallel, tests/tools/ds_cuda_tp.c)
 * NCCL's all-to-all(v) becomes the host communicator's; with fake_fp8_exact the exact f32 values
 * behind a dispatched e4m3 buffer travel with its rows (as moe_gather_rows_cuda moves them), and
 * every call's bytes are counted (fake_a2a_bytes). */
static inline int fake_real_comm_alltoallv(rt_comm *c, const void *send, const size_t *sc, const size_t *sd, void *recv,
                                           const size_t *rc, const size_t *rd, rt_dtype dt) {
    return comm_alltoallv(c, send, sc, sd, recv, rc, rd, dt);
}
#define comm_alltoallv fake_comm_alltoallv
int comm_alltoallv(rt_comm *c, const void *send, const size_t *send_counts, const size_t *send_displs, void *recv,
                   const size_t *recv_counts, const size_t *recv_displs, rt_dtype dt);
size_t fake_a2a_bytes(void);   /* bytes this rank sent through the stand-in all-to-all so far */

/* ---- CUDA graphs of teacher/ds_cuda.c's decode passes -------------------------------------
 * The DeepSeek kernels' stand-ins and cudaMemcpy2DAsync go through recording wrappers as the
 * dense ones do (fake_cuda_impl.h's last block): at once outside a capture; inside one recorded
 * with their arguments (mla_dims by value) and replayed at launch; a host↔device
 * cudaMemcpy2DAsync in a capture fails. */
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
#undef moe_slab_pack_cuda
#define cudaMemcpy2DAsync fake_g_cudaMemcpy2DAsync
#define fp8_act_quant_cuda fake_g_fp8_act_quant_cuda
#define fp8_swiglu_quant_cuda fake_g_fp8_swiglu_quant_cuda
#define fp8_gemm_grouped_cuda fake_g_fp8_gemm_grouped_cuda
#define fp8_gemm_dense_cuda fake_g_fp8_gemm_dense_cuda
#define bf16_gemm_f32_cuda fake_g_bf16_gemm_f32_cuda
#define bf16_gemm_batched_cuda fake_g_bf16_gemm_batched_cuda
#define ds_rmsnorm_cuda fake_g_ds_rmsnorm_cuda
#define ds_rope_cuda fake_g_ds_rope_cuda
#define mla_decode_cuda fake_g_mla_decode_cuda
#define mla_cache_append_cuda fake_g_mla_cache_append_cuda
#define moe_route_cuda fake_g_moe_route_cuda
#define moe_permute_cuda fake_g_moe_permute_cuda
#define moe_gather_rows_cuda fake_g_moe_gather_rows_cuda
#define moe_combine_cuda fake_g_moe_combine_cuda
/* the capacity-padded expert-parallel dispatch: the slab packing and NCCL's all-to-all(v), recorded
 * in a capture (NCCL enqueues on the communicator's stream) */
#define moe_slab_pack_cuda fake_g_moe_slab_pack_cuda
#undef comm_alltoallv
#define comm_alltoallv fake_g_comm_alltoallv
int comm_alltoallv(rt_comm *c, const void *send, const size_t *send_counts, const size_t *send_displs, void *recv,
                   const size_t *recv_counts, const size_t *recv_displs, rt_dtype dt);
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind k, cudaStream_t st);

/* ---- fault injection (fake_cuda_impl.h's last block) ---------------------------------------
 * FAKE_CUDA_FAIL="KIND:N[@RANK]" (or fake_fault_set() from a test) makes the N-th (from 1)
 * stand-in of KIND that runs fail — kernel: a kernel launch (unspecified launch failure, as
 * kernels/cuda/common.cuh's RT_CUDA_LAUNCHED reports it), memcpy: cudaMemcpyAsync or
 * cudaMemcpy2DAsync (cudaErrorLaunchFailure), nccl: an all-reduce, all-gather or all-to-all(v)
 * (comm_nccl.c's "NCCL failed in ncclAllReduce: unhandled cuda error") —, on rank RANK only (the job's rank from
 * OMPI_COMM_WORLD_RANK / PMI_RANK; none: every rank). What runs counts: an eager call, or a
 * replayed one at cudaGraphLaunch (a capture records a check in front of each call; the graph
 * launch then fails as the real one does), and a kernel launched into a capture (failing there
 * as a launch check does). The error is sticky, as a real context's: every later
 * kernel, copy, synchronize and collective fails the same way. The engine reaches them through
 * fake_f_… wrappers in front of the recording ones. */
#undef embed_fwd_cuda
#undef embed_fwd_rows_cuda
#undef rmsnorm_heads_fwd_cuda
#undef rmsnorm_fwd_cuda
#undef mm_linear_fwd_cuda
#undef rope_apply_cuda_ld
#undef attn_paged_store_cuda
#undef attn_paged_fwd_cuda
#undef swiglu_fwd_cuda
#undef mm_gemm_cuda
#undef cudaMemcpyAsync
#undef cudaMemcpy2DAsync
#undef cudaStreamSynchronize
#undef cudaGraphLaunch
#undef cudaGetErrorString
#undef comm_allreduce
#undef comm_allgather
#undef comm_alltoallv
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
#undef moe_slab_pack_cuda
#define embed_fwd_cuda fake_f_embed_fwd_cuda
#define embed_fwd_rows_cuda fake_f_embed_fwd_rows_cuda
#define rmsnorm_heads_fwd_cuda fake_f_rmsnorm_heads_fwd_cuda
#define rmsnorm_fwd_cuda fake_f_rmsnorm_fwd_cuda
#define mm_linear_fwd_cuda fake_f_mm_linear_fwd_cuda
#define rope_apply_cuda_ld fake_f_rope_apply_cuda_ld
#define attn_paged_store_cuda fake_f_attn_paged_store_cuda
#define attn_paged_fwd_cuda fake_f_attn_paged_fwd_cuda
#define swiglu_fwd_cuda fake_f_swiglu_fwd_cuda
#define mm_gemm_cuda fake_f_mm_gemm_cuda
#define cudaMemcpyAsync fake_f_cudaMemcpyAsync
#define cudaMemcpy2DAsync fake_f_cudaMemcpy2DAsync
#define cudaStreamSynchronize fake_f_cudaStreamSynchronize
#define cudaGraphLaunch fake_f_cudaGraphLaunch
#define cudaGetErrorString fake_f_cudaGetErrorString
#define comm_allreduce fake_f_comm_allreduce
#define comm_allgather fake_f_comm_allgather
#define comm_alltoallv fake_f_comm_alltoallv
#define fp8_act_quant_cuda fake_f_fp8_act_quant_cuda
#define fp8_swiglu_quant_cuda fake_f_fp8_swiglu_quant_cuda
#define fp8_gemm_grouped_cuda fake_f_fp8_gemm_grouped_cuda
#define fp8_gemm_dense_cuda fake_f_fp8_gemm_dense_cuda
#define bf16_gemm_f32_cuda fake_f_bf16_gemm_f32_cuda
#define bf16_gemm_batched_cuda fake_f_bf16_gemm_batched_cuda
#define ds_rmsnorm_cuda fake_f_ds_rmsnorm_cuda
#define ds_rope_cuda fake_f_ds_rope_cuda
#define mla_decode_cuda fake_f_mla_decode_cuda
#define mla_cache_append_cuda fake_f_mla_cache_append_cuda
#define moe_route_cuda fake_f_moe_route_cuda
#define moe_permute_cuda fake_f_moe_permute_cuda
#define moe_gather_rows_cuda fake_f_moe_gather_rows_cuda
#define moe_combine_cuda fake_f_moe_combine_cuda
#define moe_slab_pack_cuda fake_f_moe_slab_pack_cuda
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st);
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind k, cudaStream_t st);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s);
const char *cudaGetErrorString(cudaError_t e);
int comm_allreduce(rt_comm *c, const void *send, void *recv, size_t count, rt_dtype dt, comm_op op);
int comm_allgather(rt_comm *c, const void *send, void *recv, size_t send_count, rt_dtype dt);
int comm_alltoallv(rt_comm *c, const void *send, const size_t *send_counts, const size_t *send_displs, void *recv,
                   const size_t *recv_counts, const size_t *recv_displs, rt_dtype dt);
#define fake_cudaErrorLaunchFailure ((cudaError_t)719)   /* the runtime's value */
/* "KIND:N[@RANK]" as FAKE_CUDA_FAIL; NULL or "": no fault. Resets the count and the sticky error. 0,
 * or -1 for a spec it does not read. */
int fake_fault_set(const char *spec);
int fake_fault_fired(void);    /* 1: the fault has fired (in this process) */

#endif
