#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static rt_log_level g_level = RT_LOG_INFO;

void rt_log_set_level(rt_log_level level) { g_level = level; }
rt_log_level rt_log_get_level(void) { return g_level; }

int rt_log_parse_level(const char *s) {
    static const char *names[] = {"debug", "info", "warn", "error", "quiet"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(s, names[i])) return i;
    return -1;
}

void rt_log(rt_log_level level, const char *fmt, ...) {
    if (level < g_level) return;
    static const char *tags[] = {"debug", "info", "warning", "error"};
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "retort: %s: %s\n", tags[level < 4 ? level : 3], line);
}
