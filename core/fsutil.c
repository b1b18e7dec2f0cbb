#include "core/fsutil.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/status.h"

int rt_read_file(const char *path, char **buf, size_t *len) {
    *buf = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return rt_fail(RT_EIO, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 0, n = 0;
    char *b = NULL;
    for (;;) {
        if (rt_grow((void **)&b, &cap, n + 65536 + 1, 1)) { free(b); fclose(f); return RT_ENOMEM; }
        size_t got = fread(b + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int err = ferror(f), e = errno;
    fclose(f);
    if (err) { free(b); return rt_fail(RT_EIO, "cannot read %s: %s", path, strerror(e)); }
    b[n] = 0;
    *buf = b;
    if (len) *len = n;
    return 0;
}

bool rt_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool rt_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

char *rt_path_join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    while (la > 1 && a[la - 1] == '/') la--;
    char *p = rt_malloc(la + lb + 2);
    if (!p) return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

char *rt_assets_dir(void) {
    const char *env = getenv("RETORT_ASSETS");
    if (env && *env) return rt_strdup(env);
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            char *p = rt_path_join(exe, "../shared/assets");
            if (!p || rt_is_dir(p)) return p;
            free(p);
        }
    }
    return rt_strdup("../shared/assets");
}

struct rt_atomic_file {
    char *path, *tmp;
    FILE *f;
    int failed;
};

/* NAME is STEM.tmp.XXXXXX (mkstemp's six characters); *stem_len gets STEM's length. */
static bool is_temporary(const char *name, size_t *stem_len) {
    size_t n = strlen(name);
    if (n < 11 || memcmp(name + n - 11, ".tmp.", 5)) return false;
    for (size_t i = n - 6; i < n; i++)
        if (!isalnum((unsigned char)name[i])) return false;
    *stem_len = n - 11;
    return true;
}

void rt_atomic_clean_stale(const char *dir, const char *stem, bool prefix) {
    DIR *d = opendir(dir);
    if (!d) return;
    size_t ls = strlen(stem);
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t sl;
        if (!is_temporary(e->d_name, &sl) || sl < ls || memcmp(e->d_name, stem, ls) || (!prefix && sl != ls)) continue;
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) continue;
        struct stat st;
        /* a writer holds an exclusive lock on its temporary until it commits or aborts: a
         * temporary nobody holds was left by a writer that died */
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0)
            unlinkat(dirfd(d), e->d_name, 0);
        close(fd);
    }
    closedir(d);
}

int rt_atomic_open(const char *path, rt_atomic_file **out) {
    *out = NULL;
    {
        char *dcopy = rt_strdup(path), *bcopy = rt_strdup(path);
        if (dcopy && bcopy) rt_atomic_clean_stale(dirname(dcopy), basename(bcopy), false);
        free(dcopy);
        free(bcopy);
    }
    rt_atomic_file *af = rt_calloc(1, sizeof *af);
    if (!af) return RT_ENOMEM;
    af->path = rt_strdup(path);
    af->tmp = rt_malloc(strlen(path) + 16);
    if (!af->path || !af->tmp) { free(af->path); free(af->tmp); free(af); return RT_ENOMEM; }
    sprintf(af->tmp, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(af->tmp);
    if (fd < 0) {
        int e = errno;
        free(af->path); free(af->tmp); free(af);
        return rt_fail(RT_EIO, "%s: cannot create: %s", path, strerror(e));
    }
    flock(fd, LOCK_EX | LOCK_NB); /* marks it live for rt_atomic_clean_stale; a fresh file, so this holds */
    fchmod(fd, 0644);
    af->f = fdopen(fd, "wb");
    if (!af->f) { close(fd); rt_atomic_abort(af); return rt_fail(RT_EIO, "%s: fdopen failed", path); }
    *out = af;
    return 0;
}

FILE *rt_atomic_stream(rt_atomic_file *af) { return af->f; }

int rt_atomic_write(rt_atomic_file *af, const void *data, size_t n) {
    if (n && fwrite(data, 1, n, af->f) != n) {
        af->failed = 1;
        return rt_fail(RT_EIO, "%s: write failed: %s", af->path, strerror(errno));
    }
    return 0;
}

void rt_atomic_abort(rt_atomic_file *af) {
    if (!af) return;
    if (af->f) fclose(af->f);
    unlink(af->tmp);
    free(af->path);
    free(af->tmp);
    free(af);
}

int rt_atomic_commit(rt_atomic_file *af) {
    int rc = 0;
    if (af->failed || ferror(af->f)) rc = rt_fail(RT_EIO, "%s: write failed", af->path);
    else if (fflush(af->f) != 0 || fsync(fileno(af->f)) != 0)
        rc = rt_fail(RT_EIO, "%s: write failed: %s", af->path, strerror(errno));
    int fe = fclose(af->f);
    af->f = NULL;
    if (!rc && fe != 0) rc = rt_fail(RT_EIO, "%s: close failed: %s", af->path, strerror(errno));
    if (!rc && rename(af->tmp, af->path) != 0)
        rc = rt_fail(RT_EIO, "%s: rename failed: %s", af->path, strerror(errno));
    if (rc) { rt_atomic_abort(af); return rc; }
    char *dcopy = rt_strdup(af->path);
    if (dcopy) {
        int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) { fsync(dfd); close(dfd); }
        free(dcopy);
    }
    free(af->path);
    free(af->tmp);
    free(af);
    return 0;
}

int rt_atomic_write_text(const char *path, const char *txt) {
    rt_atomic_file *af = NULL;
    int rc = rt_atomic_open(path, &af);
    if (rc) return rc;
    rc = rt_atomic_write(af, txt, strlen(txt));
    if (!rc) rc = rt_atomic_write(af, "\n", 1);
    if (rc) rt_atomic_abort(af);
    else rc = rt_atomic_commit(af);
    return rc;
}
