/* log.h - leveled logging to stderr. The level comes from clara_log_set_level (CLI flags, or
 * CLARA_LOG_LEVEL in the server). */
#ifndef CLARA_BASE_LOG_H
#define CLARA_BASE_LOG_H

#include "base/status.h"

typedef enum {
    CLARA_LOG_DEBUG = 0,
    CLARA_LOG_INFO = 1,
    CLARA_LOG_WARN = 2,
    CLARA_LOG_ERROR = 3,
    CLARA_LOG_QUIET = 4,
} clara_log_level;

void clara_log_set_level(clara_log_level level);
clara_log_level clara_log_get_level(void);
/* Parses "debug|info|warn|warning|error|quiet" (case-insensitive); returns -1 if unknown. */
int clara_log_parse_level(const char *s);
void clara_log(clara_log_level level, const char *fmt, ...) CLARA_PRINTF(2, 3);

#define CLARA_LOGD(...) clara_log(CLARA_LOG_DEBUG, __VA_ARGS__)
#define CLARA_LOGI(...) clara_log(CLARA_LOG_INFO, __VA_ARGS__)
#define CLARA_LOGW(...) clara_log(CLARA_LOG_WARN, __VA_ARGS__)
#define CLARA_LOGE(...) clara_log(CLARA_LOG_ERROR, __VA_ARGS__)

#endif
