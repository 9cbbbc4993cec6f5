/* json_scan.c - the scanner of json_scan.h. Open arrays and objects are a stack of one bit each
 * (no recursion: hostile nesting cannot exhaust the C stack, and nothing is allocated); the loop
 * alternates between "a value starts here" and "a value just ended". */
#include "base/json_scan.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const unsigned char *s;
    size_t n, i; /* the text and the read position */
    size_t values, max_values;
    size_t depth, max_depth, deepest;
    uint64_t objects[CLARA_JSON_DEPTH_CAP / 64]; /* bit d set: open level d is an object */
    clara_json_verdict verdict;                  /* why a step failed */
    char root;
} scanner;

typedef enum { STEP_VALUE, STEP_AFTER, STEP_DONE, STEP_FAIL } step;

static void skip_ws(scanner *sc) {
    while (sc->i < sc->n) {
        unsigned char c = sc->s[sc->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return;
        sc->i++;
    }
}

static bool at(const scanner *sc, unsigned char c) {
    return sc->i < sc->n && sc->s[sc->i] == c;
}

static int hex_value(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static bool hex4(scanner *sc, unsigned *u) {
    unsigned v = 0;
    for (int k = 0; k < 4; k++, sc->i++) {
        int h = sc->i < sc->n ? hex_value(sc->s[sc->i]) : -1;
        if (h < 0) return false;
        v = v << 4 | (unsigned)h;
    }
    *u = v;
    return true;
}

/* After "\u". cJSON refuses a lone surrogate, so the scan does too: a high one must be followed
 * by an escaped low one. A failure points at the escape's backslash. */
static bool unicode_escape(scanner *sc) {
    size_t start = sc->i - 2;
    unsigned u, lo;
    if (!hex4(sc, &u)) return false;
    if (u < 0xD800 || u > 0xDFFF) return true;
    bool pair = u <= 0xDBFF && at(sc, '\\') && sc->i + 1 < sc->n && sc->s[sc->i + 1] == 'u';
    if (pair) {
        sc->i += 2;
        if (!hex4(sc, &lo)) return false;
        if (lo >= 0xDC00 && lo <= 0xDFFF) return true;
    }
    sc->i = start;
    return false;
}

/* From the opening quote to past the closing one. */
static bool scan_string(scanner *sc) {
    sc->i++;
    while (sc->i < sc->n) {
        unsigned char c = sc->s[sc->i];
        if (c == '"') {
            sc->i++;
            return true;
        }
        if (c < 0x20) return false;
        sc->i++;
        if (c != '\\') continue;
        if (sc->i >= sc->n) return false;
        c = sc->s[sc->i++];
        if (c == 'u') {
            if (!unicode_escape(sc)) return false;
        } else if (!memchr("\"\\/bfnrt", c, 8)) {
            sc->i--;
            return false;
        }
    }
    return false;
}

static bool digits(scanner *sc) {
    size_t start = sc->i;
    while (sc->i < sc->n && sc->s[sc->i] >= '0' && sc->s[sc->i] <= '9') sc->i++;
    return sc->i > start;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? of at most CLARA_JSON_NUMBER_MAX characters. */
static bool scan_number(scanner *sc) {
    size_t start = sc->i;
    if (at(sc, '-')) sc->i++;
    if (at(sc, '0'))
        sc->i++;
    else if (!digits(sc))
        return false;
    if (at(sc, '.')) {
        sc->i++;
        if (!digits(sc)) return false;
    }
    if (at(sc, 'e') || at(sc, 'E')) {
        sc->i++;
        if (at(sc, '+') || at(sc, '-')) sc->i++;
        if (!digits(sc)) return false;
    }
    if (sc->i - start <= CLARA_JSON_NUMBER_MAX) return true;
    sc->i = start + CLARA_JSON_NUMBER_MAX;
    return false;
}

static bool scan_literal(scanner *sc, const char *word) {
    size_t len = strlen(word);
    if (sc->n - sc->i < len || memcmp(sc->s + sc->i, word, len) != 0) return false;
    sc->i += len;
    return true;
}

static bool top_is_object(const scanner *sc) {
    size_t d = sc->depth - 1;
    return sc->objects[d / 64] >> (d % 64) & 1;
}

/* An object member's key and colon; the value follows. */
static step member_key(scanner *sc) {
    skip_ws(sc);
    if (!at(sc, '"') || !scan_string(sc)) return STEP_FAIL;
    skip_ws(sc);
    if (!at(sc, ':')) return STEP_FAIL;
    sc->i++;
    return STEP_VALUE;
}

static step fail(scanner *sc, clara_json_verdict why) {
    sc->verdict = why;
    return STEP_FAIL;
}

/* Opens an array or object at the bracket; an empty one is closed at once. */
static step open_container(scanner *sc, bool object) {
    if (sc->depth >= sc->max_depth) return fail(sc, CLARA_JSON_TOO_DEEP);
    size_t d = sc->depth++;
    if (object)
        sc->objects[d / 64] |= (uint64_t)1 << (d % 64);
    else
        sc->objects[d / 64] &= ~((uint64_t)1 << (d % 64));
    if (sc->depth > sc->deepest) sc->deepest = sc->depth;
    sc->values++;
    sc->i++;
    skip_ws(sc);
    if (at(sc, object ? '}' : ']')) {
        sc->depth--;
        sc->i++;
        return STEP_AFTER;
    }
    return object ? member_key(sc) : STEP_VALUE;
}

static bool scan_scalar(scanner *sc, char c) {
    switch (c) {
    case '"':
        return scan_string(sc);
    case 't':
        return scan_literal(sc, "true");
    case 'f':
        return scan_literal(sc, "false");
    case 'n':
        return scan_literal(sc, "null");
    default:
        return (c == '-' || (c >= '0' && c <= '9')) && scan_number(sc);
    }
}

static step start_value(scanner *sc) {
    skip_ws(sc);
    if (sc->i >= sc->n) return STEP_FAIL;
    if (sc->values >= sc->max_values) return fail(sc, CLARA_JSON_TOO_MANY);
    char c = (char)sc->s[sc->i];
    if (sc->values == 0) sc->root = c;
    if (c == '{' || c == '[') return open_container(sc, c == '{');
    if (!scan_scalar(sc, c)) {
        if (sc->values == 0) sc->root = 0;
        return STEP_FAIL;
    }
    sc->values++;
    return STEP_AFTER;
}

static step after_value(scanner *sc) {
    if (sc->depth == 0) return STEP_DONE;
    skip_ws(sc);
    bool object = top_is_object(sc);
    if (at(sc, ',')) {
        sc->i++;
        return object ? member_key(sc) : STEP_VALUE;
    }
    if (!at(sc, object ? '}' : ']')) return STEP_FAIL;
    sc->depth--;
    sc->i++;
    return STEP_AFTER;
}

clara_json_verdict clara_json_scan(const char *s, size_t n, size_t max_values, size_t max_depth,
                                   clara_json_scan_result *out) {
    scanner sc = {.s = (const unsigned char *)s,
                  .n = n,
                  .max_values = max_values,
                  .max_depth = max_depth < CLARA_JSON_DEPTH_CAP ? max_depth : CLARA_JSON_DEPTH_CAP,
                  .verdict = CLARA_JSON_SYNTAX};
    /* cJSON skips a byte order mark only when at least 2 bytes follow it */
    if (n >= 5 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) sc.i = 3;
    step st = STEP_VALUE;
    while (st == STEP_VALUE || st == STEP_AFTER)
        st = st == STEP_VALUE ? start_value(&sc) : after_value(&sc);
    if (st == STEP_DONE) {
        skip_ws(&sc);
        sc.verdict = sc.i == n ? CLARA_JSON_OK : CLARA_JSON_SYNTAX;
    }
    *out = (clara_json_scan_result){sc.verdict, sc.i, sc.values, sc.deepest, sc.root};
    return sc.verdict;
}
