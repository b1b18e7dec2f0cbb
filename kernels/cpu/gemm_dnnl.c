/* kernels/cpu/gemm_dnnl.c — oneDNN's sgemm, opened at first use (see kernels/cpu/gemm_dnnl.h).
 *
 * The prototypes are oneDNN's public C API (dnnl.h), declared here so that building retort
 * needs no oneDNN headers: dnnl_sgemm, dnnl_version and dnnl_get_effective_cpu_isa have the
 * same signatures in oneDNN 2.x and 3.x. oneDNN's Debian build runs its GEMM on an OpenMP team
 * of omp_get_max_threads() threads; setting the calling thread's team size to one before each
 * call keeps every call on its own thread (the setting is per thread and costs a store). */
#include "kernels/cpu/gemm_dnnl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#include "core/status.h"

typedef struct {
    int major, minor, patch;
    const char *hash;
    unsigned cpu_runtime, gpu_runtime;
} dnnl_version_info;   /* dnnl_version_t */

typedef int (*sgemm_fn)(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                        const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
typedef const dnnl_version_info *(*version_fn)(void);
typedef int (*isa_fn)(void);
typedef void (*omp_threads_fn)(int n);

static struct {
    pthread_once_t once;
    const char *soname;     /* the library opened, NULL when none could be */
    sgemm_fn sgemm;
    version_fn version;
    isa_fn isa;
    omp_threads_fn omp_set_num_threads;   /* NULL for a oneDNN built without OpenMP */
    char why[200];          /* the dlerror text when none could be opened */
} lib = {PTHREAD_ONCE_INIT, NULL, NULL, NULL, NULL, NULL, ""};

static void open_lib(void) {
    static const char *const names[] = {"libdnnl.so.3", "libdnnl.so.2"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        void *h = dlopen(names[i], RTLD_LAZY | RTLD_LOCAL);
        if (!h) {
            if (i == 0 || !lib.why[0]) snprintf(lib.why, sizeof lib.why, "%s", dlerror());
            continue;
        }
        sgemm_fn f = (sgemm_fn)dlsym(h, "dnnl_sgemm");
        if (!f) {
            snprintf(lib.why, sizeof lib.why, "%s has no dnnl_sgemm", names[i]);
            dlclose(h);
            continue;
        }
        lib.sgemm = f;
        lib.version = (version_fn)dlsym(h, "dnnl_version");
        lib.isa = (isa_fn)dlsym(h, "dnnl_get_effective_cpu_isa");
        lib.omp_set_num_threads = (omp_threads_fn)dlsym(h, "omp_set_num_threads");   /* its libgomp */
        lib.soname = names[i];
        return;   /* the handle stays open for the life of the process */
    }
}

bool mm_dnnl_available(void) {
    pthread_once(&lib.once, open_lib);
    return lib.sgemm != NULL;
}

int mm_dnnl_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (!mm_dnnl_available()) return rt_fail(RT_EINTERNAL, "oneDNN is not available: %s", lib.why);
    if (lib.omp_set_num_threads) lib.omp_set_num_threads(1);
    int st = lib.sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (st != 0) return rt_fail(RT_EINTERNAL, "dnnl_sgemm(%c%c, %lld x %lld x %lld) failed with status %d",
                                ta ? 'T' : 'N', tb ? 'T' : 'N', (long long)M, (long long)N, (long long)K, st);
    return 0;
}

/* dnnl_cpu_isa_t values of oneDNN 2.6 and 3.x (dnnl_types.h) */
static const char *isa_name(int isa) {
    switch (isa) {
    case 0x1: return "sse41";
    case 0x3: return "avx";
    case 0x7: return "avx2";
    case 0x407: return "avx2_vnni";
    case 0x27: return "avx512_core";
    case 0x67: return "avx512_core_vnni";
    case 0xe7: return "avx512_core_bf16";
    case 0x3e7: return "avx512_core_amx";
    default: return NULL;
    }
}

const char *mm_dnnl_describe(char *buf, size_t n) {
    if (!mm_dnnl_available()) {
        snprintf(buf, n, "oneDNN not available (%s)", lib.why);
        return buf;
    }
    char ver[32] = "?", isa[32] = "?";
    const dnnl_version_info *v = lib.version ? lib.version() : NULL;
    if (v) snprintf(ver, sizeof ver, "%d.%d.%d", v->major, v->minor, v->patch);
    if (lib.isa) {
        int i = lib.isa();
        const char *name = isa_name(i);
        if (name) snprintf(isa, sizeof isa, "%s", name);
        else snprintf(isa, sizeof isa, "0x%x", (unsigned)i);
    }
    snprintf(buf, n, "oneDNN %s (%s), isa %s", ver, lib.soname, isa);
    return buf;
}
