/* core/status.h — status codes and the error message that travels with them.
 *
 * Library functions return 0 or a negative RT_E… code. The function that detects a
 * problem records one message with rt_fail(); each caller on the way up may add context
 * in front of it with rt_errorf() and return the same code. cli/ prints rt_errmsg() as
 * one line. The message buffer is per thread (like errno), so worker threads never see
 * each other's messages; it is the only state this module keeps.
 *
 * TRY(call) evaluates an int-status call and returns its code from the enclosing function
 * when it is not 0 (the message it recorded stays). The one checking macro for retort's own
 * status; foreign status types have theirs, shaped the same: CUDA_TRY (core/cuda_try.h).
 *
 * RT_ASSERT(cond, fmt, ...) states an internal invariant, as SQLite's assert() does: something
 * only a bug in retort can make false (a tensor name mc_expected_tensors gave that the loader
 * does not know, a plan whose pieces do not tile it, a parser node of no known kind). When it
 * is false the process prints "retort: internal error: FILE:LINE: cond: message" to stderr and
 * aborts — there is no sensible state to return to. The rule for choosing:
 *   - anything input can cause (files, options, configs, the network, the database's
 *     contents) is an error code, never an assert;
 *   - a foreign library or the system failing (CUDA, MPI, NCCL, SQLite, curl, pthreads, zstd,
 *     out of memory) is an error code (RT_EINTERNAL, RT_ENOMEM, …), never an assert;
 *   - only a contradiction between retort's own pieces is an RT_ASSERT.
 * Asserts are compiled in for the tests, the sanitizer and debug builds, and the default build;
 * -DNDEBUG compiles them out (cond is then not evaluated, so it must have no side effects).
 * Where a function must still return something after a failed invariant, it keeps a
 * defensive error return behind the RT_ASSERT (reached only with NDEBUG).
 */
#ifndef RT_STATUS_H
#define RT_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

enum {
    RT_OK = 0,
    RT_EIO = -1,          /* read/write/open failed, disk full, short file */
    RT_EFORMAT = -2,      /* input is malformed: bad header, bad JSON, wrong shape */
    RT_ENOMEM = -3,       /* allocation failed */
    RT_EINVAL = -4,       /* bad argument or option value */
    RT_ENOTFOUND = -5,    /* a named thing (file, tensor, key) does not exist */
    RT_EUNSUPPORTED = -6, /* valid but not handled: unknown model_type, dtype, … */
    RT_ERANGE = -7,       /* a value is out of its allowed range / overflow */
    RT_EINTERNAL = -8,    /* a library we call failed in an unexpected way */
};

#define RT_ERRMSG_MAX 1024

#define TRY(call)                                                                                        \
    do {                                                                                                 \
        int try_rc_ = (call);                                                                            \
        if (try_rc_) return try_rc_;                                                                     \
    } while (0)

#ifndef NDEBUG
#define RT_ASSERT(cond, ...) ((cond) ? (void)0 : rt_assert_fail(__FILE__, __LINE__, #cond, __VA_ARGS__))
#else
#define RT_ASSERT(cond, ...) ((void)sizeof((cond) ? 1 : 0))
#endif

/* RT_ASSERT's failure: prints the one line and aborts. */
void rt_assert_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

/* Name of a code: "I/O error", "format error", … */
const char *rt_strerror(int code);

/* Replace the current message with a new one; returns code. */
int rt_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefix the current message with context ("ctx: old message"); returns code.
 * If no message was recorded, the context alone becomes the message. */
int rt_errorf(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The current message of this thread ("" when none). */
const char *rt_errmsg(void);
void rt_errclear(void);

#ifdef __cplusplus
}
#endif

#endif
