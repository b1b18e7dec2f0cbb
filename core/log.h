/* core/log.h — leveled logging to stderr.
 *
 * The level is the one piece of global mutable state the library keeps. Messages below
 * the level are dropped. Library code logs progress and warnings; errors travel as status
 * codes (core/status.h) and are printed by cli/.
 */
#ifndef RT_LOG_H
#define RT_LOG_H

typedef enum { RT_LOG_DEBUG = 0, RT_LOG_INFO = 1, RT_LOG_WARN = 2, RT_LOG_ERROR = 3, RT_LOG_QUIET = 4 } rt_log_level;

void rt_log_set_level(rt_log_level level);
rt_log_level rt_log_get_level(void);
/* Parses "debug", "info", "warn", "error", "quiet"; returns -1 for anything else. */
int rt_log_parse_level(const char *s);
void rt_log(rt_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define RT_DEBUG(...) rt_log(RT_LOG_DEBUG, __VA_ARGS__)
#define RT_INFO(...) rt_log(RT_LOG_INFO, __VA_ARGS__)
#define RT_WARN(...) rt_log(RT_LOG_WARN, __VA_ARGS__)

#endif
