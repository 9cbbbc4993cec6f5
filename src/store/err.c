/* err.c - store_fail(), shared by the store and its database backends. */
#include "store/db.h"

#include <stdarg.h>
#include <stdio.h>

store_code store_fail(store_err *err, store_code code, const char *fmt, ...) {
    if (!err) return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    /* messages are one line (they end up in logs and JSON answers); databases write several */
    for (char *c = err->msg; *c; c++)
        if (*c == '\n' || *c == '\r') *c = ' ';
    return code;
}
