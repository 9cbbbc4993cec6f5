/* dotenv.c - the .env file of the working directory, read as the Python server read it
 * (pydantic-settings through python-dotenv): KEY=VALUE lines, an optional "export " before the
 * key, # comments on their own line or after an unquoted value (with whitespace before the #),
 * 'single quotes' (only \' and \\ are escapes) and "double quotes" (\n \t \" \\ ... escapes),
 * both possibly over several lines, ${NAME} and ${NAME:-default} expanded in unquoted and double-
 * quoted values (from earlier lines, then the environment). Names are matched without regard to
 * case, as pydantic-settings does. A line that cannot be read is skipped with a warning, as
 * python-dotenv does. The environment wins over the file (config.c asks it first). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/mapfile.h"
#include "server.h"

#define DOTENV_MAX_BYTES   (1u << 20)
#define DOTENV_MAX_ENTRIES 4096

static struct {
    char *key; /* upper-cased */
    char *value;
} g_env[DOTENV_MAX_ENTRIES];
static size_t g_n;

typedef struct {
    const char *s;
    size_t n, i;
    int line; /* of the statement being read, for warnings */
} cursor;

static bool at_end(const cursor *c) {
    return c->i >= c->n;
}

static char peek(const cursor *c) {
    return at_end(c) ? '\0' : c->s[c->i];
}

static void skip_blanks(cursor *c) { /* spaces and tabs, not line ends */
    while (!at_end(c) && (peek(c) == ' ' || peek(c) == '\t' || peek(c) == '\f' || peek(c) == '\v'))
        c->i++;
}

static void skip_line(cursor *c) {
    while (!at_end(c) && peek(c) != '\n' && peek(c) != '\r') c->i++;
}

/* A growable string. */
typedef struct {
    char *p;
    size_t n, cap;
} str;

static bool str_put(str *s, char ch) {
    if (s->n + 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        char *p = realloc(s->p, cap);
        if (!p) return false;
        s->p = p;
        s->cap = cap;
    }
    s->p[s->n++] = ch;
    s->p[s->n] = '\0';
    return true;
}

static bool str_puts(str *s, const char *t, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!str_put(s, t[i])) return false;
    return true;
}

/* The value of name: an earlier line of the file, else the environment, else NULL. */
static const char *lookup(const char *name) {
    const char *v = srv_dotenv_get(name);
    return v ? v : getenv(name);
}

/* ${NAME} and ${NAME:-default} in v replaced, as python-dotenv's interpolation does. */
static char *expand(const char *v) {
    str out = {0};
    while (*v) {
        const char *close = v[0] == '$' && v[1] == '{' ? strchr(v + 2, '}') : NULL;
        if (!close) {
            if (!str_put(&out, *v++)) goto oom;
            continue;
        }
        const char *colon = memchr(v + 2, ':', (size_t)(close - v - 2));
        if (colon && colon[1] != '-') { /* not the :- form: python-dotenv leaves it as text */
            if (!str_put(&out, *v++)) goto oom;
            continue;
        }
        size_t nlen = (size_t)((colon ? colon : close) - (v + 2));
        char *name = strndup(v + 2, nlen);
        if (!name) goto oom;
        const char *val = lookup(name);
        free(name);
        if (!val && colon) {
            if (!str_puts(&out, colon + 2, (size_t)(close - colon - 2))) goto oom;
        } else if (val && !str_puts(&out, val, strlen(val))) {
            goto oom;
        }
        v = close + 1;
    }
    return out.p ? out.p : strdup("");
oom:
    free(out.p);
    return NULL;
}

/* A quoted value whose opening quote is at c->i; escapes as python-dotenv decodes them. */
static int quoted(cursor *c, str *out) {
    char q = peek(c);
    c->i++;
    for (;;) {
        if (at_end(c)) return -1; /* never closed */
        char ch = c->s[c->i++];
        if (ch == q) return 0;
        if (ch == '\\' && !at_end(c)) {
            char e = peek(c);
            const char *from = q == '\'' ? "\\'" : "\\'\"abfnrtv";
            const char *to = q == '\'' ? "\\'" : "\\'\"\a\b\f\n\r\t\v";
            const char *k = e ? strchr(from, e) : NULL;
            if (k) {
                c->i++;
                ch = to[k - from];
            }
        }
        if (!str_put(out, ch)) return -2;
    }
}

/* An unquoted value: the rest of the line, less a comment after whitespace, right-trimmed. */
static int unquoted(cursor *c, str *out) {
    size_t start = c->i;
    skip_line(c);
    size_t end = c->i;
    for (size_t k = start; k + 1 < end; k++) {
        if (!isspace((unsigned char)c->s[k])) continue;
        size_t h = k;
        while (h < end && isspace((unsigned char)c->s[h])) h++;
        if (h < end && c->s[h] == '#') {
            end = k;
            break;
        }
    }
    while (end > start && isspace((unsigned char)c->s[end - 1])) end--;
    return str_puts(out, c->s + start, end - start) ? 0 : -2;
}

static int read_key(cursor *c, str *key) {
    if (peek(c) == '\'') {
        c->i++;
        while (!at_end(c) && peek(c) != '\'')
            if (!str_put(key, (char)toupper((unsigned char)c->s[c->i++]))) return -2;
        if (at_end(c) || key->n == 0) return -1;
        c->i++;
        return 0;
    }
    while (!at_end(c) && peek(c) != '=' && peek(c) != '#' && !isspace((unsigned char)peek(c)))
        if (!str_put(key, (char)toupper((unsigned char)c->s[c->i++]))) return -2;
    return key->n ? 0 : -1;
}

static int add(char *key, char *value) {
    for (size_t i = 0; i < g_n; i++) {
        if (strcmp(g_env[i].key, key) == 0) { /* a later line wins */
            free(g_env[i].value);
            free(key);
            g_env[i].value = value;
            return 0;
        }
    }
    if (g_n == DOTENV_MAX_ENTRIES) {
        free(key);
        free(value);
        return -1;
    }
    g_env[g_n].key = key;
    g_env[g_n++].value = value;
    return 0;
}

static int line_of(const cursor *c, size_t at) {
    int line = 1;
    for (size_t i = 0; i < at && i < c->n; i++) line += c->s[i] == '\n';
    return line;
}

/* One statement at c->i (blank lines skipped before). 1 = read one, 0 = skipped (a comment, a
 * key without '=', a line that cannot be read), -2 = out of memory. */
static int statement(cursor *c, const char *path) {
    size_t start = c->i;
    if (peek(c) == '#') {
        skip_line(c);
        return 0;
    }
    if (c->n - c->i > 7 && memcmp(c->s + c->i, "export", 6) == 0 &&
        (c->s[c->i + 6] == ' ' || c->s[c->i + 6] == '\t')) {
        c->i += 6;
        skip_blanks(c);
    }
    str key = {0}, val = {0};
    int rc = read_key(c, &key);
    skip_blanks(c);
    bool has_value = rc == 0 && peek(c) == '=';
    if (has_value) {
        c->i++;
        skip_blanks(c);
        char q = peek(c);
        rc = q == '\'' || q == '"' ? quoted(c, &val) : unquoted(c, &val);
        if (rc == 0 && !val.p && !(val.p = strdup(""))) rc = -2;
        if (rc == 0 && q != '\'') { /* single quotes keep ${...} as written */
            char *x = expand(val.p);
            free(val.p);
            val.p = x;
            if (!x) rc = -2;
        }
    }
    /* what may follow: blanks, a comment, the end of the line */
    skip_blanks(c);
    if (rc == 0 && peek(c) == '#') skip_line(c);
    if (rc == 0 && !at_end(c) && peek(c) != '\n' && peek(c) != '\r') rc = -1;
    if (rc == -1) {
        fprintf(stderr, "clara-server: warning: %s line %d cannot be read; it is ignored\n", path,
                line_of(c, start));
        skip_line(c);
    }
    if (rc != 0 || !has_value) { /* a key without '=' has no value: it sets nothing */
        free(key.p);
        free(val.p);
        return rc == -2 ? -2 : 0;
    }
    return add(key.p, val.p) == 0 ? 1 : 0;
}

int srv_dotenv_load(const char *path) {
    srv_dotenv_free();
    if (access(path, F_OK) != 0) return 0; /* no file: nothing to read */
    char *text;
    size_t len;
    if (clara_read_file(path, DOTENV_MAX_BYTES, &text, &len) != CLARA_OK) {
        fprintf(stderr, "clara-server: error: %s: %s\n", path, clara_last_error());
        return -1;
    }
    if (!srv_utf8_valid(text, len) || memchr(text, '\0', len)) {
        fprintf(stderr, "clara-server: error: %s is not UTF-8 text\n", path);
        free(text);
        return -1;
    }
    cursor c = {text, len, 0, 1};
    size_t bom = len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
    c.i = bom;
    int rc = 0;
    for (;;) {
        while (!at_end(&c) && isspace((unsigned char)peek(&c))) c.i++;
        if (at_end(&c)) break;
        if (statement(&c, path) == -2) {
            fprintf(stderr, "clara-server: error: out of memory reading %s\n", path);
            rc = -1;
            break;
        }
    }
    free(text);
    return rc;
}

const char *srv_dotenv_get(const char *name) {
    for (size_t i = 0; i < g_n; i++)
        if (strcasecmp(g_env[i].key, name) == 0) return g_env[i].value;
    return NULL;
}

size_t srv_dotenv_count(void) {
    return g_n;
}

const char *srv_dotenv_key(size_t i) {
    return i < g_n ? g_env[i].key : NULL;
}

void srv_dotenv_free(void) {
    for (size_t i = 0; i < g_n; i++) {
        free(g_env[i].key);
        free(g_env[i].value);
    }
    g_n = 0;
}
