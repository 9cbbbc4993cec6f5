/* status.c - thread-local error messages behind clara_last_error(). */
#include "base/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLARA_ERRMSG_MAX 1024

static _Thread_local char g_errmsg[CLARA_ERRMSG_MAX];

const char *clara_last_error(void) {
    return g_errmsg;
}

void clara_clear_error(void) {
    g_errmsg[0] = '\0';
}

clara_status clara_fail(clara_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_errmsg, sizeof g_errmsg, fmt, ap);
    va_end(ap);
    return st;
}

clara_status clara_fail_context(clara_status st, const char *fmt, ...) {
    char prefix[CLARA_ERRMSG_MAX];
    char old[CLARA_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_errmsg, sizeof old);
    /* truncation is fine: the message is for people */
    size_t n = strlen(prefix);
    if (n > sizeof g_errmsg - 3) n = sizeof g_errmsg - 3;
    memcpy(g_errmsg, prefix, n);
    memcpy(g_errmsg + n, ": ", 2);
    size_t room = sizeof g_errmsg - n - 3, m = strlen(old);
    if (m > room) m = room;
    memcpy(g_errmsg + n + 2, old, m);
    g_errmsg[n + 2 + m] = '\0';
    return st;
}

const char *clara_status_name(clara_status st) {
    switch (st) {
    case CLARA_OK:
        return "ok";
    case CLARA_ERR_IO:
        return "I/O error";
    case CLARA_ERR_FORMAT:
        return "format error";
    case CLARA_ERR_UNSUPPORTED:
        return "unsupported";
    case CLARA_ERR_NOMEM:
        return "out of memory";
    case CLARA_ERR_INVALID_ARG:
        return "invalid argument";
    case CLARA_ERR_NOT_FOUND:
        return "not found";
    case CLARA_ERR_CANCELLED:
        return "cancelled";
    }
    return "unknown status";
}

void clara_assert_fail(const char *file, int line, const char *expr) {
    fprintf(stderr, "clara: internal error at %s:%d: assertion '%s' failed\n", file, line, expr);
    abort();
}
