/* log.c - one line per message on stderr, prefixed with its level for warnings and errors. */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <strings.h>

static clara_log_level g_level = CLARA_LOG_INFO;

void clara_log_set_level(clara_log_level level) {
    g_level = level;
}

clara_log_level clara_log_get_level(void) {
    return g_level;
}

int clara_log_parse_level(const char *s) {
    static const struct {
        const char *name;
        clara_log_level level;
    } names[] = {{"debug", CLARA_LOG_DEBUG}, {"info", CLARA_LOG_INFO},
                 {"warn", CLARA_LOG_WARN},   {"warning", CLARA_LOG_WARN},
                 {"error", CLARA_LOG_ERROR}, {"quiet", CLARA_LOG_QUIET}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(s, names[i].name) == 0) return (int)names[i].level;
    return -1;
}

void clara_log(clara_log_level level, const char *fmt, ...) {
    if (level < g_level) return;
    static const char *prefix[] = {"debug: ", "", "warning: ", "error: "};
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* one fprintf per line so concurrent threads do not interleave within a line */
    fprintf(stderr, "clara: %s%s\n", prefix[level], line);
}
