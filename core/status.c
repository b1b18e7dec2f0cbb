#include "core/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char errbuf[RT_ERRMSG_MAX];

const char *rt_strerror(int code) {
    switch (code) {
    case RT_OK: return "ok";
    case RT_EIO: return "I/O error";
    case RT_EFORMAT: return "format error";
    case RT_ENOMEM: return "out of memory";
    case RT_EINVAL: return "invalid argument";
    case RT_ENOTFOUND: return "not found";
    case RT_EUNSUPPORTED: return "unsupported";
    case RT_ERANGE: return "out of range";
    case RT_EINTERNAL: return "internal error";
    default: return "unknown error";
    }
}

int rt_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    return code;
}

int rt_errorf(int code, const char *fmt, ...) {
    char ctx[RT_ERRMSG_MAX], old[RT_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    if (!errbuf[0]) {
        snprintf(errbuf, sizeof errbuf, "%s", ctx);
        return code;
    }
    memcpy(old, errbuf, sizeof old);
    size_t lc = strlen(ctx), lo = strlen(old), cap = sizeof errbuf - 1;
    if (lc > cap - 2) lc = cap - 2;
    if (lo > cap - 2 - lc) lo = cap - 2 - lc;
    memcpy(errbuf, ctx, lc);
    memcpy(errbuf + lc, ": ", 2);
    memcpy(errbuf + lc + 2, old, lo);
    errbuf[lc + 2 + lo] = 0;
    return code;
}

const char *rt_errmsg(void) { return errbuf; }

void rt_errclear(void) { errbuf[0] = 0; }

void rt_assert_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
    char msg[RT_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "retort: internal error: %s:%d: %s: %s\n", file, line, cond, msg);
    fflush(stderr);
    abort();
}
