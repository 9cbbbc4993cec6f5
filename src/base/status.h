/* status.h - recording error messages for clara_status returns (thread-local, no allocation). */
#ifndef CLARA_BASE_STATUS_H
#define CLARA_BASE_STATUS_H

#include "clara.h"

#if defined(__GNUC__)
#define CLARA_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CLARA_PRINTF(a, b)
#endif

/* Records a formatted message for clara_last_error() and returns st, so that error paths read
 * `return clara_fail(CLARA_ERR_FORMAT, "%s: tensor '%s' ends past the file", path, name);` */
clara_status clara_fail(clara_status st, const char *fmt, ...) CLARA_PRINTF(2, 3);

/* Prefixes the current message with a formatted context ("while reading X: "), returns st. */
clara_status clara_fail_context(clara_status st, const char *fmt, ...) CLARA_PRINTF(2, 3);

/* Clears the current message. */
void clara_clear_error(void);

/* Aborts with file and line: only for programmer errors, never for bad input. */
#define CLARA_ASSERT(cond)                                                                         \
    do {                                                                                           \
        if (!(cond)) clara_assert_fail(__FILE__, __LINE__, #cond);                                 \
    } while (0)
_Noreturn void clara_assert_fail(const char *file, int line, const char *expr);

#endif
