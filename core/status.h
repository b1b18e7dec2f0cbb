/* core/status.h — status codes and the error message that travels with them.
 *
 * Library functions return 0 or a negative RT_E… code. The function that detects a
 * problem records one message with rt_fail(); each caller on the way up may add context
 * in front of it with rt_errorf() and return the same code. cli/ prints rt_errmsg() as
 * one line. The message buffer is per thread (like errno), so worker threads never see
 * each other's messages; it is the only state this module keeps.
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
