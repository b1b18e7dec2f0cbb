/* core/cuda_dynload.c — cuBLASLt and NCCL, loaded at first use (CUDA builds only).
 *
 * retort links no CUDA library but the static CUDA runtime: the cublasLt* and nccl*
 * functions it calls are defined here, and the first call of one opens its library with
 * dlopen (libcublasLt.so.<major>, libnccl.so.<major> of the headers built against, found
 * through the binary's rpath like any linked library) and jumps to the real function. A
 * command that never touches the GPU (tokenize, import, filter, ...) so never maps these
 * libraries: 0.76 GB of shared objects whose loading and relocation cost every process
 * about 0.3 s of wall time and 26 000 page faults.
 *
 * Errors: a library that cannot be loaded logs one warning (the dlerror text) and every
 * function of it returns CUBLAS_STATUS_NOT_INITIALIZED / ncclSystemError, which the callers'
 * checks turn into their usual one-line message. The resolved function pointers are a
 * process-wide cache (like the dynamic linker's own tables), written once, atomically.
 * Adding a call to another cublasLt or nccl function: add its LAZY line below (the link
 * fails with an undefined reference until then).
 */
#ifdef RT_HAVE_CUDA

#include <cublasLt.h>
#include <dlfcn.h>
#include <nccl.h>
#include <pthread.h>

#include "core/log.h"

#define STR_(x) #x
#define STR(x) STR_(x)

typedef struct {
    const char *soname;
    pthread_once_t once;
    void *handle;          /* NULL until opened, and if opening failed */
} lazy_lib;

static lazy_lib cublaslt = {"libcublasLt.so." STR(CUBLAS_VER_MAJOR), PTHREAD_ONCE_INIT, NULL};
static lazy_lib nccl = {"libnccl.so." STR(NCCL_MAJOR), PTHREAD_ONCE_INIT, NULL};

static void lazy_open(lazy_lib *l) {
    l->handle = dlopen(l->soname, RTLD_LAZY | RTLD_LOCAL);
    if (!l->handle) RT_WARN("cannot load %s: %s", l->soname, dlerror());
}
static void open_cublaslt(void) { lazy_open(&cublaslt); }
static void open_nccl(void) { lazy_open(&nccl); }

static void *lazy_sym(lazy_lib *l, void (*open_fn)(void), const char *name) {
    pthread_once(&l->once, open_fn);
    if (!l->handle) return NULL;
    void *p = dlsym(l->handle, name);
    if (!p) RT_WARN("%s: no symbol %s", l->soname, name);
    return p;
}

/* Defines `ret name params` forwarding `args` to the library's function; `fail` when the
 * library or the symbol is missing. The header's prototype checks the definition. */
#define LAZY(lib, fail, ret, name, params, args)                                      \
    ret name params {                                                                 \
        typedef ret(*fn_t) params;                                                    \
        static fn_t cached;                                                           \
        fn_t f = __atomic_load_n(&cached, __ATOMIC_ACQUIRE);                          \
        if (!f) {                                                                     \
            f = (fn_t)lazy_sym(&lib, open_##lib, #name);                              \
            if (!f) return fail;                                                      \
            __atomic_store_n(&cached, f, __ATOMIC_RELEASE);                           \
        }                                                                             \
        return f args;                                                                \
    }

#define LT(name, params, args) LAZY(cublaslt, CUBLAS_STATUS_NOT_INITIALIZED, cublasStatus_t, name, params, args)
#define NC(name, params, args) LAZY(nccl, ncclSystemError, ncclResult_t, name, params, args)

LT(cublasLtCreate, (cublasLtHandle_t *h), (h))
LT(cublasLtDestroy, (cublasLtHandle_t h), (h))
LT(cublasLtMatmul,
   (cublasLtHandle_t h, cublasLtMatmulDesc_t desc, const void *alpha, const void *A, cublasLtMatrixLayout_t Ad,
    const void *B, cublasLtMatrixLayout_t Bd, const void *beta, const void *C, cublasLtMatrixLayout_t Cd, void *D,
    cublasLtMatrixLayout_t Dd, const cublasLtMatmulAlgo_t *algo, void *ws, size_t wsbytes, cudaStream_t stream),
   (h, desc, alpha, A, Ad, B, Bd, beta, C, Cd, D, Dd, algo, ws, wsbytes, stream))
LT(cublasLtMatmulAlgoGetHeuristic,
   (cublasLtHandle_t h, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t Ad, cublasLtMatrixLayout_t Bd,
    cublasLtMatrixLayout_t Cd, cublasLtMatrixLayout_t Dd, cublasLtMatmulPreference_t pref, int requested,
    cublasLtMatmulHeuristicResult_t results[], int *returned),
   (h, desc, Ad, Bd, Cd, Dd, pref, requested, results, returned))
LT(cublasLtMatmulDescCreate, (cublasLtMatmulDesc_t *d, cublasComputeType_t ct, cudaDataType_t st), (d, ct, st))
LT(cublasLtMatmulDescDestroy, (cublasLtMatmulDesc_t d), (d))
LT(cublasLtMatmulDescSetAttribute, (cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void *buf, size_t n),
   (d, a, buf, n))
LT(cublasLtMatmulPreferenceCreate, (cublasLtMatmulPreference_t *p), (p))
LT(cublasLtMatmulPreferenceDestroy, (cublasLtMatmulPreference_t p), (p))
LT(cublasLtMatmulPreferenceSetAttribute,
   (cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t a, const void *buf, size_t n), (p, a, buf, n))
LT(cublasLtMatrixLayoutCreate, (cublasLtMatrixLayout_t *l, cudaDataType t, uint64_t rows, uint64_t cols, int64_t ld),
   (l, t, rows, cols, ld))
LT(cublasLtMatrixLayoutDestroy, (cublasLtMatrixLayout_t l), (l))
LT(cublasLtMatrixLayoutSetAttribute, (cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t a, const void *buf, size_t n),
   (l, a, buf, n))

NC(ncclAllGather, (const void *s, void *r, size_t n, ncclDataType_t t, ncclComm_t c, cudaStream_t st), (s, r, n, t, c, st))
NC(ncclAllReduce, (const void *s, void *r, size_t n, ncclDataType_t t, ncclRedOp_t op, ncclComm_t c, cudaStream_t st),
   (s, r, n, t, op, c, st))
NC(ncclBroadcast, (const void *s, void *r, size_t n, ncclDataType_t t, int root, ncclComm_t c, cudaStream_t st),
   (s, r, n, t, root, c, st))
NC(ncclCommDestroy, (ncclComm_t c), (c))
NC(ncclCommInitRank, (ncclComm_t *c, int nranks, ncclUniqueId id, int rank), (c, nranks, id, rank))
NC(ncclGetUniqueId, (ncclUniqueId *id), (id))
NC(ncclGroupEnd, (void), ())
NC(ncclGroupStart, (void), ())
NC(ncclRecv, (void *r, size_t n, ncclDataType_t t, int peer, ncclComm_t c, cudaStream_t st), (r, n, t, peer, c, st))
NC(ncclReduce, (const void *s, void *r, size_t n, ncclDataType_t t, ncclRedOp_t op, int root, ncclComm_t c, cudaStream_t st),
   (s, r, n, t, op, root, c, st))
NC(ncclReduceScatter, (const void *s, void *r, size_t n, ncclDataType_t t, ncclRedOp_t op, ncclComm_t c, cudaStream_t st),
   (s, r, n, t, op, c, st))
NC(ncclSend, (const void *s, size_t n, ncclDataType_t t, int peer, ncclComm_t c, cudaStream_t st), (s, n, t, peer, c, st))

const char *ncclGetErrorString(ncclResult_t r) {
    typedef const char *(*fn_t)(ncclResult_t);
    static fn_t cached;
    fn_t f = __atomic_load_n(&cached, __ATOMIC_ACQUIRE);
    if (!f) {
        f = (fn_t)lazy_sym(&nccl, open_nccl, "ncclGetErrorString");
        if (!f) return "the NCCL library could not be loaded";
        __atomic_store_n(&cached, f, __ATOMIC_RELEASE);
    }
    return f(r);
}

#else
typedef int rt_cuda_dynload_unused; /* ISO C: a translation unit is not empty */
#endif
