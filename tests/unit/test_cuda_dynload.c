/* core/cuda_dynload.c: cuBLASLt and NCCL are not mapped until a function of theirs is first
 * called, and then the call reaches the real library. Needs no GPU: without one the library
 * still loads and answers (with an error status). CPU-only builds skip. Each Criterion test
 * runs in its own process, so "not loaded yet" holds at the start of every test. */
#include "testutil.h"

#ifdef RT_HAVE_CUDA
#include <cublasLt.h>
#include <dlfcn.h>
#include <nccl.h>

#define STR_(x) #x
#define STR(x) STR_(x)
static const char *lt_so = "libcublasLt.so." STR(CUBLAS_VER_MAJOR), *nccl_so = "libnccl.so." STR(NCCL_MAJOR);

static int loaded(const char *so) {
    void *h = dlopen(so, RTLD_LAZY | RTLD_NOLOAD);
    if (h) dlclose(h);
    return h != NULL;
}

Test(cuda_dynload, cublaslt_is_loaded_at_first_call_only) {
    cr_assert(!loaded(lt_so), "%s is mapped before any cuBLASLt call (linked, not lazy)", lt_so);
    cublasLtHandle_t h = NULL;
    cublasStatus_t s = cublasLtCreate(&h);   /* no GPU: an error status from the library itself */
    cr_assert(loaded(lt_so), "%s not loaded by the first call (status %d)", lt_so, (int)s);
    if (s == CUBLAS_STATUS_SUCCESS) cr_assert_eq(cublasLtDestroy(h), CUBLAS_STATUS_SUCCESS);
}

Test(cuda_dynload, nccl_is_loaded_at_first_call_and_answers) {
    cr_assert(!loaded(nccl_so), "%s is mapped before any NCCL call (linked, not lazy)", nccl_so);
    const char *msg = ncclGetErrorString(ncclInvalidArgument);
    cr_assert(loaded(nccl_so), "%s not loaded by the first call", nccl_so);
    cr_assert(msg && strcmp(msg, "the NCCL library could not be loaded"), "got \"%s\"", msg ? msg : "(null)");
    cr_assert(strcmp(msg, ncclGetErrorString(ncclSuccess)), "two different codes, one message: %s", msg);
}
#else
Test(cuda_dynload, skipped_without_cuda) { cr_skip_test("skipped: CPU-only build (no CUDA libraries to load)"); }
#endif
