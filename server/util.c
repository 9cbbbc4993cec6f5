/* util.c - small helpers for the server: clocks, strict UTF-8 validation, constant-time string
 * comparison, base64, resident memory and handing freed memory back, the CPU feature level,
 * timestamps as the Python server wrote them. */
#include <stdio.h> /* first: defines __GLIBC__ */
#include <math.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/utf8.h"
#include "server.h"

double srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

bool srv_host_is_loopback(const char *host) {
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0 ||
           strcmp(host, "localhost") == 0;
}

/* Control bytes, quotes, backslashes and non-ASCII as \xNN: a log line stays one line of text
 * whatever a client sends (no terminal escapes, no forged lines). */
void srv_log_escape(char *dst, size_t cap, const char *src) {
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)src; *p && o + 5 < cap; p++) {
        if (*p < 0x20 || *p >= 0x7f || *p == '\\' || *p == '"')
            o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", *p);
        else
            dst[o++] = (char)*p;
    }
    if (cap) dst[o < cap ? o : cap - 1] = '\0';
}

double srv_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF. */
bool srv_utf8_valid(const char *str, size_t n) {
    return clara_utf8_valid(str, n, NULL);
}

bool srv_json_has_nul_escape(const char *s, size_t n) {
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != '\\') continue;
        if (s[i + 1] == 'u' && n - i >= 6 && memcmp(s + i + 2, "0000", 4) == 0) return true;
        i++; /* skip the escaped character so "\\\\u0000" is not taken for an escape */
    }
    return false;
}

/* Compares every byte of the longer input whatever the contents, so timing reveals at most the
 * key's length. */
bool srv_ct_equal(const char *a, size_t alen, const char *b, size_t blen) {
    size_t n = alen > blen ? alen : blen;
    volatile unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < n; i++) {
        unsigned char x = i < alen ? (unsigned char)a[i] : 0;
        unsigned char y = i < blen ? (unsigned char)b[i] : 0;
        diff |= (unsigned char)(x ^ y);
    }
    return diff == 0;
}

uint64_t srv_rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, rss = 0;
    if (!f) return 0;
    if (fscanf(f, "%llu %llu", &size, &rss) != 2) rss = 0;
    fclose(f);
    return (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* glibc starts by serving blocks of 128 KiB and more with their own mmap (unmapped on free), but
 * raises that threshold to the size of each such block freed, up to 32 MiB: after the first 4 MB
 * request body, bodies and decoded vectors come from the heaps, which keep much of what is freed
 * (bench/json_memory.py: 10 s after bursts of 64 bodies of 4 MB, RSS stayed up to 130 MiB above
 * where it started, 20-50 MiB with the threshold fixed, ~0 with malloc_trim after large requests
 * too). Fixing it at glibc's own starting point keeps large blocks going back to the kernel. */
void srv_memory_init(void) {
#ifdef __GLIBC__
    mallopt(M_MMAP_THRESHOLD, 128 << 10);
#endif
}

void srv_memory_trim(void) {
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

/* The kernel level the engine runs (cpuid at start, or CLARA_ISA): ref, avx2 or avx512. */
const char *srv_isa(void) {
    return clara_backend_isa();
}

void srv_iso8601(double t, char *buf, size_t cap) {
    /* microseconds rounded to nearest, as Python rounds a timestamp */
    long long us_total = llround(t * 1e6);
    time_t secs = (time_t)(us_total / 1000000);
    long us = (long)(us_total % 1000000);
    if (us < 0) us += 1000000, secs--;
    struct tm tm;
    gmtime_r(&secs, &tm);
    char frac[16] = "";
    if (us) snprintf(frac, sizeof frac, ".%06ld", us);
    snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d%s+00:00", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}
