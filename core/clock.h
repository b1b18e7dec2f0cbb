/* core/clock.h — the one monotonic clock every stage times itself with.
 *
 * now_s() is seconds on CLOCK_MONOTONIC as a double: differences of two calls are elapsed
 * wall time (never negative, unaffected by clock changes); the value itself means nothing.
 * No state, no errors (clock_gettime cannot fail for CLOCK_MONOTONIC on Linux).
 */
#ifndef RT_CORE_CLOCK_H
#define RT_CORE_CLOCK_H

#include <time.h>

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
