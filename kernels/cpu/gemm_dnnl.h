/* kernels/cpu/gemm_dnnl.h — oneDNN's f32 GEMM as one of mm_sgemm's kernels (kernels/matmul.h).
 *
 * retort does not link oneDNN: the first call opens libdnnl (the soname of oneDNN 3, then 2;
 * Debian's package libdnnl2) with dlopen and looks up dnnl_sgemm. oneDNN picks its own code
 * for the CPU at run time from the CPU's features (AVX2, AVX-512, AVX512-BF16, AMX...): that
 * is why retort uses it, on CPUs with AVX-512 whose OpenBLAS does not know them. The handle
 * and function pointers are a process-wide cache written once (like the dynamic linker's own
 * tables). Every call runs on the calling thread alone (oneDNN's OpenMP team of one), so the
 * pool stays the only source of parallelism. oneDNN's own ONEDNN_MAX_CPU_ISA caps the code it
 * picks (tests use it to run older code paths). */
#ifndef RT_KERNELS_CPU_GEMM_DNNL_H
#define RT_KERNELS_CPU_GEMM_DNNL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Whether libdnnl could be opened (opens it on the first call; a failure is remembered). */
bool mm_dnnl_available(void);

/* Row-major C = alpha·op(A)·op(B) + beta·C, mm_sgemm's contract. Returns 0, or RT_EINTERNAL
 * (oneDNN missing or refusing the call: the caller runs another kernel; C is unchanged only
 * when oneDNN is missing). Single-threaded; oneDNN may allocate its packing buffers. */
int mm_dnnl_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* "oneDNN 2.6.3 (libdnnl.so.2), isa avx2" or why it is missing, into buf (returned). */
const char *mm_dnnl_describe(char *buf, size_t n);

#endif
