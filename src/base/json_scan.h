/* json_scan.h - one pass over a JSON text that checks its syntax and bounds its shape (how many
 * values, how deep) without allocating anything. A tree parser such as cJSON spends ~100 bytes per
 * value, so a 4 MB text of tiny values costs it ~200 MB; scanning first lets a caller refuse such a
 * text before any tree exists, and parse only texts whose tree is bounded by their own size.
 *
 * The grammar is RFC 8259's, strictly: whitespace is space, tab, CR and LF; strings hold no raw
 * control characters; numbers have no leading zeros, '+' or bare '.'. Two additions keep the scan
 * never more permissive than cJSON 1.7.15, which builds the tree afterwards: a \u escape of a
 * UTF-16 surrogate must be a high one followed by an escaped low one, and a number is at most
 * CLARA_JSON_NUMBER_MAX characters (cJSON reads no more). A UTF-8 byte order mark at the very
 * start is skipped when 2 or more bytes follow it (RFC 8259 section 8.1 allows it; cJSON does it
 * then). Bytes >= 0x80 are taken as they are inside strings: checking UTF-8 is the caller's
 * (base/utf8.h). */
#ifndef CLARA_BASE_JSON_SCAN_H
#define CLARA_BASE_JSON_SCAN_H

#include <stddef.h>

#define CLARA_JSON_DEPTH_CAP  256 /* the largest max_depth a scan honours (its stack is bits) */
#define CLARA_JSON_NUMBER_MAX 63  /* characters in one number at most */

typedef enum {
    CLARA_JSON_OK,       /* exactly one value, surrounded by whitespace at most */
    CLARA_JSON_SYNTAX,   /* offset: the first byte that cannot be where it is (or the length) */
    CLARA_JSON_TOO_MANY, /* more than max_values values; offset: where the first extra starts */
    CLARA_JSON_TOO_DEEP, /* more than max_depth nested arrays/objects; offset: the bracket */
} clara_json_verdict;

typedef struct {
    clara_json_verdict verdict;
    size_t offset; /* where the scan stopped: the text's length when OK */
    size_t values; /* values counted (scalars, arrays, objects; keys are not values) */
    size_t depth;  /* deepest nesting reached: 0 for a scalar, 1 for [] or {} */
    char root;     /* the first byte of the top-level value ('{', '[', '"', '-', '0'..'9', 't',
                      'f', 'n'), or 0 when there is none */
} clara_json_scan_result;

/* Scans the n bytes at s, stopping at the first syntax error or the first value past a limit, so
 * the work is at most one look at each byte. max_depth is clamped to CLARA_JSON_DEPTH_CAP; pass
 * (size_t)-1 as max_values for no limit on values. Returns out->verdict. */
clara_json_verdict clara_json_scan(const char *s, size_t n, size_t max_values, size_t max_depth,
                                   clara_json_scan_result *out);

#endif
