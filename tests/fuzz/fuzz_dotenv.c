/* fuzz_dotenv.c - libFuzzer target for the server's .env reader (server/dotenv.c, compiled into
 * this target: the server's sources are not in libclara). The input is written to a file that
 * srv_dotenv_load reads, in one of two ways the first byte picks:
 *   - raw (even): the bytes as they are. Whatever they hold, the reader returns 0 or -1, and what
 *     it kept is at most 4096 entries with non-empty, upper-cased, distinct keys, each of which
 *     srv_dotenv_get finds (in any case) with its own value;
 *   - round trip (odd): the bytes describe KEY=VALUE entries, which the target writes out as a
 *     .env file would hold them (unquoted where the value allows it, 'single' or "double" quoted
 *     with the escapes python-dotenv reads, an optional `export `, comments and blank lines
 *     between), the value made valid UTF-8 without NUL; reading the file back must give every
 *     key the value last written for it, and nothing else. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../../server/dotenv.c"

#include "base/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

/* server/util.c's, which would bring the whole server with it */
bool srv_utf8_valid(const char *s, size_t n) {
    return clara_utf8_valid(s, n, NULL);
}

static char g_path[4096];

static void remove_file(void) {
    unlink(g_path);
}

static void write_file(const char *s, size_t n) {
    if (!g_path[0]) {
        const char *dir = getenv("TMPDIR");
        snprintf(g_path, sizeof g_path, "%s/clara-fuzz-dotenv-XXXXXX", dir && *dir ? dir : "/tmp");
        int fd = mkstemp(g_path);
        CHECK(fd >= 0);
        close(fd);
        atexit(remove_file);
    }
    FILE *f = fopen(g_path, "wb");
    CHECK(f && fwrite(s, 1, n, f) == n && fclose(f) == 0);
}

static void check_table(void) {
    size_t n = srv_dotenv_count();
    CHECK(n <= DOTENV_MAX_ENTRIES);
    CHECK(srv_dotenv_key(n) == NULL);
    for (size_t i = 0; i < n; i++) {
        const char *k = srv_dotenv_key(i);
        CHECK(k && k[0]);
        for (const char *p = k; *p; p++) CHECK(toupper((unsigned char)*p) == (unsigned char)*p);
        for (size_t j = 0; j < i; j++) CHECK(strcasecmp(srv_dotenv_key(j), k) != 0);
        CHECK(srv_dotenv_get(k) == g_env[i].value && g_env[i].value);
    }
}

/* ---- round trip ------------------------------------------------------------------------------ */

typedef struct {
    char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        CHECK(b->p);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void puts_(buf *b, const char *s) {
    put(b, s, strlen(s));
}

/* Bytes d[0..n) as valid UTF-8 without NUL: ill-formed bytes and NUL become '?'. */
static void as_text(const uint8_t *d, size_t n, buf *out) {
    for (size_t i = 0; i < n;) {
        size_t l = clara_utf8_len(d + i, n - i);
        if (l == 0 || d[i] == 0) {
            put(out, "?", 1), i++;
        } else {
            put(out, (const char *)d + i, l), i += l;
        }
    }
}

static bool is_space(char c) {
    return isspace((unsigned char)c) != 0;
}

/* Whether v reads back as itself when written unquoted. */
static bool unquoted_ok(const char *v) {
    size_t n = strlen(v);
    if (n == 0) return true;
    if (v[0] == '\'' || v[0] == '"' || is_space(v[0]) || is_space(v[n - 1])) return false;
    if (strstr(v, "${") || strchr(v, '\n') || strchr(v, '\r')) return false;
    for (size_t i = 1; i < n; i++)
        if (v[i] == '#' && is_space(v[i - 1])) return false;
    return true;
}

typedef struct {
    char key[16];
    char *value;
} entry;

static void round_trip(const uint8_t *d, size_t n) {
    entry e[64];
    size_t ne = 0;
    buf file = {0};
    puts_(&file, "");
    if (n && d[0] & 1) puts_(&file, "\xef\xbb\xbf"); /* a BOM */
    size_t i = n ? 1 : 0;
    while (i + 2 <= n && ne < 64) {
        uint8_t style = d[i], klen = d[i + 1];
        i += 2;
        /* the key: 1-4 characters of [A-Z0-9_] (not starting with a digit), any case */
        entry *x = &e[ne++];
        size_t kn = 1 + klen % 4;
        for (size_t k = 0; k < kn; k++) {
            uint8_t c = i < n ? d[i++] : 0;
            static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789";
            x->key[k] = alpha[c % (k ? 37 : 27)];
        }
        x->key[kn] = '\0';
        /* the value: up to a 0xff byte (or the end) */
        size_t start = i;
        while (i < n && d[i] != 0xff) i++;
        buf v = {0};
        puts_(&v, "");
        as_text(d + start, i - start, &v);
        if (i < n) i++;
        x->value = v.p;
        /* separators and decorations */
        if (style & 0x40) puts_(&file, "# a comment line\n");
        if (style & 0x80) puts_(&file, "\n  \t\n");
        if (style & 0x08) puts_(&file, "export ");
        for (size_t k = 0; k < kn; k++) {
            char c = x->key[k];
            char lc = (char)(c >= 'A' && c <= 'Z' && (style & 0x20) ? c - 'A' + 'a' : c);
            put(&file, &lc, 1);
        }
        puts_(&file, style & 0x10 ? " = " : "=");
        int q = style % 3; /* 0 unquoted, 1 single, 2 double */
        /* python-dotenv too reads `K=  # c` as the value "# c": an empty value is quoted there */
        if (q == 0 && (!unquoted_ok(x->value) || (!x->value[0] && (style & 0x04)))) q = 1;
        if (q == 2 && strstr(x->value, "${")) q = 1; /* double quotes expand it */
        if (q == 0) {
            puts_(&file, x->value);
        } else {
            char qc = q == 1 ? '\'' : '"';
            put(&file, &qc, 1);
            for (const char *p = x->value; *p; p++) {
                if (*p == '\\' || *p == qc) put(&file, "\\", 1);
                if (q == 2 && *p == '\n' && (style & 0x04)) {
                    puts_(&file, "\\n");
                    continue;
                }
                put(&file, p, 1);
            }
            put(&file, &qc, 1);
        }
        puts_(&file, style & 0x04 ? "  # trailing comment\n" : "\n");
    }
    write_file(file.p, file.n);
    CHECK(srv_dotenv_load(g_path) == 0);
    check_table();
    size_t distinct = 0;
    for (size_t a = 0; a < ne; a++) {
        size_t last = a;
        bool first = true;
        for (size_t b = 0; b < ne; b++) {
            if (strcmp(e[a].key, e[b].key) != 0) continue;
            if (b < a) first = false;
            last = b;
        }
        distinct += first;
        const char *got = srv_dotenv_get(e[a].key);
        CHECK(got && strcmp(got, e[last].value) == 0);
    }
    CHECK(srv_dotenv_count() == distinct);
    for (size_t a = 0; a < ne; a++) free(e[a].value);
    free(file.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > (1u << 16)) return 0;
    if (data[0] & 1) {
        round_trip(data + 1, size - 1);
    } else {
        write_file((const char *)data + 1, size - 1);
        int rc = srv_dotenv_load(g_path);
        CHECK(rc == 0 || rc == -1);
        check_table();
    }
    srv_dotenv_free();
    return 0;
}
