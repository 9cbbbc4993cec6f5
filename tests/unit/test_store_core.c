/* test_store_core.c - the memory store above the database: the ranking arithmetic against
 * hand-computed values, the bounded cache, and the store's behaviour on a real SQLite file (and
 * PostgreSQL when CLARA_TEST_PG holds a connection string; tests/e2e/test_store_db.py sets it):
 * selection equal to exact brute force (with and without code pre-selection), filters, full text,
 * replicas' cache invalidation, models kept apart, export/import round trips. */
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/fp16.h"
#include "store/cache.h"
#include "store/rank.h"
#include "store/store.h"
#include "t.h"

enum { N_MEM = 4, N_EMBD = 256, PER = N_MEM * N_EMBD };

static const char *FP_A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char *FP_B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/* ---- arithmetic ---------------------------------------------------------------------------- */

static void test_cosine(void) {
    float q[2] = {1, 0}, a[2] = {1, 1}, z[2] = {0, 0}, m[2] = {-2, 0};
    T_NEAR(store_cosine(q, a, 2), 1 / sqrt(2.0), 1e-7);
    T_NEAR(store_cosine(q, m, 2), -1, 0);
    T_NEAR(store_cosine(q, z, 2), 0, 0); /* norms floored at 1e-12: no NaN */
}

static void test_top_k(void) {
    float s[7] = {0.5f, 0.9f, 0.9f, -1, 0.7f, 0.9f, 0.1f};
    size_t out[7];
    store_top_k(s, 7, 4, out);
    T_EQ_INT(out[0], 1); /* ties: the lower index first */
    T_EQ_INT(out[1], 2);
    T_EQ_INT(out[2], 5);
    T_EQ_INT(out[3], 4);
    store_top_k(s, 7, 7, out);
    T_EQ_INT(out[6], 3);
}

/* A code is the sign bits; the Hamming distance counts the values whose signs differ, on every
 * path (POPCNT or not: the same sums). */
static void test_code(void) {
    enum { N = 200 }; /* not a multiple of 64: the last word is partial */
    float a[N], b[N];
    for (int i = 0; i < N; i++) {
        a[i] = (float)((i * 37) % 11) - 5.0f;
        b[i] = i % 3 == 0 ? -a[i] : a[i];
    }
    a[7] = -0.0f; /* a negative zero has its sign bit: counted like a negative value */
    b[7] = 0.0f;
    uint64_t ca[4], cb[4], zero[4] = {0};
    T_EQ_INT(store_code_words(N), 4);
    store_sign_code(a, N, ca);
    store_sign_code(b, N, cb);
    int neg = 0, differ = 0;
    for (int i = 0; i < N; i++) {
        neg += signbit(a[i]) != 0;
        differ += signbit(a[i]) != signbit(b[i]);
    }
    uint32_t d[2];
    uint64_t both[8];
    memcpy(both, zero, sizeof zero);
    memcpy(both + 4, cb, sizeof cb);
    store_hamming(ca, both, 2, 4, d);
    T_EQ_INT(d[0], neg);
    T_EQ_INT(d[1], differ);
    T_CHECK(ca[3] >> (N - 192) == 0); /* nothing past the last value */
}

static void test_cache(void) {
    /* room for two entries (their floats and up to 64 bytes of bookkeeping each), not three */
    store_cache *c = store_cache_new(3 * (PER * sizeof(float) + 64));
    float v[PER], out[PER];
    for (int id = 1; id <= 5; id++) {
        for (int i = 0; i < PER; i++) v[i] = (float)(id * 100 + i);
        store_cache_put_vectors(c, id, 7, v, PER);
    }
    size_t bytes, limit, hits, misses, entries;
    store_cache_stats_read(c, &bytes, &limit, &hits, &misses, &entries);
    T_CHECK_MSG(bytes <= limit, "cache holds %zu bytes over its limit %zu", bytes, limit);
    T_CHECK(!store_cache_get_vectors(c, 1, 7, out, PER)); /* the oldest went first */
    T_CHECK(store_cache_get_vectors(c, 5, 7, out, PER) && out[3] == 503);
    T_CHECK(!store_cache_get_vectors(c, 5, 8, out, PER)); /* another model's */
    store_cache_free(c);
}

/* ---- the store ---------------------------------------------------------------------------- */

static uint64_t rng = 88172645463325252ull;
static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1;
}

/* Vectors like hidden states: a large shared direction, a cluster, and noise. */
static void make_vectors(float *v, int cluster) {
    for (int i = 0; i < PER; i++)
        v[i] = (i == 0 ? 20.0f : 0) + (float)((cluster * 31 + i * 7) % 11) * 0.3f + frand();
}

static store *open_store(const char *url) {
    store_options o = {url, 0, true, 0};
    store *s = NULL;
    store_err err = {0};
    T_CHECK_MSG(store_open(&o, &s, &err) == STORE_OK, "%s", err.msg);
    return s;
}

static store_model model(const char *fp) {
    return (store_model){fp, "test", N_MEM, N_EMBD};
}

/* Adds n one-chunk memories m0..m(n-1) with vectors; texts name their cluster. */
static void add_many(store *s, const char *coll, int n, float *all) {
    store_model m = model(FP_A);
    for (int i = 0; i < n; i++) {
        char text[64], id[32], meta[48];
        snprintf(text, sizeof text, "memory %d about topic%d", i, i % 7);
        snprintf(id, sizeof id, "m%d", i);
        snprintf(meta, sizeof meta, "{\"user\":\"%s\"}", i % 2 ? "odd" : "even");
        clara_chunk ch = {0, strlen(text), 4};
        make_vectors(all + (size_t)i * PER, i % 13);
        store_memory_in in = {id, text, strlen(text), meta, &ch, 1, all + (size_t)i * PER, 0, 0};
        store_err err = {0};
        T_CHECK_MSG(store_add(s, coll, true, &m, STORE_F32, &in, 1, NULL, &err) == STORE_OK, "%s",
                    err.msg);
    }
}

/* Cosine selection equals exact brute force over every stored vector, both when it scores
 * everything and when it pre-selects by code. */
static void check_cosine(store *s, const char *coll, const float *all, int n, size_t k) {
    store_model m = model(FP_A);
    int agree = 0, queries = 40;
    bool exact_seen = false, code_seen = false;
    for (int qi = 0; qi < queries; qi++) {
        float qv[PER], scores[4096];
        make_vectors(qv, qi % 13);
        for (int i = 0; i < n; i++) scores[i] = store_cosine(qv, all + (size_t)i * PER, PER);
        size_t want[16];
        store_top_k(scores, (size_t)n, k, want);
        store_query q = {coll, &m, STORE_SELECT_COSINE, qv, NULL, 0, k, 0, NULL, false};
        store_selection sel;
        store_err err = {0};
        if (store_select(s, &q, &sel, &err) != STORE_OK) {
            T_CHECK_MSG(0, "%s", err.msg);
            return;
        }
        bool same = sel.n == k;
        for (size_t i = 0; same && i < k; i++) {
            char id[32];
            snprintf(id, sizeof id, "m%zu", want[i]);
            same = strcmp(sel.memory_ids[i], id) == 0 && sel.scores[i] == scores[want[i]];
        }
        agree += same;
        exact_seen |= sel.exact;
        code_seen |= !sel.exact;
        store_selection_free(&sel);
    }
    T_CHECK_MSG(agree >= queries * 99 / 100,
                "top-%zu equals brute force on %d of %d queries (n=%d)", k, agree, queries, n);
    T_CHECK(n > 256 ? code_seen && !exact_seen : exact_seen && !code_seen);
}

static void check_filter_and_fulltext(store *s, const char *coll) {
    store_model m = model(FP_A);
    float qv[PER];
    make_vectors(qv, 3);
    store_query q = {coll, &m, STORE_SELECT_COSINE, qv, NULL, 0, 5, 0, "{\"user\":\"odd\"}", false};
    store_selection sel;
    store_err err = {0};
    T_CHECK(store_select(s, &q, &sel, &err) == STORE_OK && sel.n == 5);
    bool odd = true;
    for (size_t i = 0; i < sel.n; i++) odd &= atoi(sel.memory_ids[i] + 1) % 2 == 1;
    T_CHECK_MSG(odd, "the filter keeps only odd memories");
    store_selection_free(&sel);
    /* full text: the memories about topic4 first, then the most recent to fill top_k */
    store_query f = {coll, &m,   STORE_SELECT_FULLTEXT, NULL, "what about TOPIC4?", 18, 3, 0,
                     NULL, false};
    T_CHECK(store_select(s, &f, &sel, &err) == STORE_OK && sel.n == 3);
    bool topic = true;
    for (size_t i = 0; i < sel.n; i++) topic &= strstr(sel.texts[i], "topic4") != NULL;
    T_CHECK_MSG(topic, "full text finds the memories about topic4");
    store_selection_free(&sel);
    /* everything that fits, in the order added */
    store_query all = {coll, &m, STORE_SELECT_FULLTEXT, NULL, "x", 1, 5, 100000, NULL, false};
    T_CHECK(store_select(s, &all, &sel, &err) == STORE_OK && strcmp(sel.method, "all") == 0);
    T_CHECK(sel.n > 2 && strcmp(sel.memory_ids[0], "m0") == 0 &&
            strcmp(sel.memory_ids[1], "m1") == 0);
    store_selection_free(&sel);
}

/* Two handles on one database, as two replicas: a write through one is seen by the other's next
 * selection (its cached index is stale by the collection's version). */
static void check_replicas(const char *url) {
    store *a = open_store(url), *b = open_store(url);
    if (!a || !b) return;
    float v[3 * PER];
    add_many(a, "shared", 3, v);
    store_model m = model(FP_A);
    store_query q = {"shared", &m, STORE_SELECT_FULLTEXT, NULL, "x", 1, 10, 1000, NULL, false};
    store_selection sel;
    store_err err = {0};
    T_CHECK(store_select(b, &q, &sel, &err) == STORE_OK && sel.n == 3);
    store_selection_free(&sel);
    T_CHECK(store_delete_memory(a, "shared", "m1", &err) == STORE_OK);
    T_CHECK(store_select(b, &q, &sel, &err) == STORE_OK && sel.n == 2);
    store_selection_free(&sel);
    int64_t n = 0;
    T_CHECK(store_delete_collection(a, "shared", &n, &err) == STORE_OK && n == 2);
    T_CHECK(store_select(b, &q, &sel, &err) == STORE_NOT_FOUND);
    store_close(a);
    store_close(b);
}

static store_code fake_compress(void *arg, const clara_text *texts, size_t n, float *vectors,
                                store_err *err) {
    (void)err;
    (*(int *)arg) += (int)n;
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < PER; j++) vectors[i * PER + j] = (float)(texts[i].len + (size_t)j);
    return STORE_OK;
}

/* Vectors of another model are never used: its chunks are pending until made; a selection
 * without them is STORE_CHANGED (read again after a catch-up), and one made right after a
 * catch-up leaves them out (they were written since). */
static void check_models(store *s, const char *coll) {
    store_model b = model(FP_B);
    float qv[PER];
    make_vectors(qv, 1);
    store_query q = {coll, &b, STORE_SELECT_COSINE, qv, NULL, 0, 3, 0, NULL, false};
    store_selection sel;
    store_err err = {0};
    T_EQ_INT(store_select(s, &q, &sel, &err), STORE_CHANGED);
    q.after_catch_up = true;
    T_EQ_INT(store_select(s, &q, &sel, &err), STORE_OK);
    T_EQ_INT(sel.n, 0);
    store_selection_free(&sel);
    store_pending *p = NULL;
    size_t n = 0;
    int64_t total = 0;
    T_CHECK(store_pending_chunks(s, coll, &b, 10, &p, &n, &total, &err) == STORE_OK);
    T_CHECK(n == 10 && total == 300);
    store_pending_free(p, n);
    int made = 0;
    int64_t done = 0;
    T_CHECK(store_catch_up(s, coll, &b, STORE_F16, 64, fake_compress, &made, NULL, &done, &err) ==
            STORE_OK);
    T_CHECK(made == 300 && done == 300);
    T_CHECK(store_select(s, &q, &sel, &err) == STORE_OK && sel.n == 3);
    /* f16 storage reads back the f16 rounding of what was written */
    float want = clara_f16_to_f32(clara_f32_to_f16((float)strlen(sel.texts[0]) + 5));
    T_CHECK(sel.vectors[5] == want);
    store_selection_free(&sel);
}

static int collect(void *arg, const char *line) {
    FILE *f = arg;
    return fprintf(f, "%s\n", line) < 0;
}

static void check_export_import(store *s, const char *url2) {
    char *a = NULL, *b = NULL;
    size_t la = 0, lb = 0, n = 0;
    FILE *fa = open_memstream(&a, &la);
    store_err err = {0};
    T_CHECK(store_export(s, "c", collect, fa, &n, &err) == STORE_OK && n == 300);
    fclose(fa);
    store *t = open_store(url2);
    if (!t) return;
    char *save = NULL, *line = strtok_r(a, "\n", &save);
    int imported = 0;
    for (; line; line = strtok_r(NULL, "\n", &save)) {
        bool skipped;
        imported += store_import_line(t, line, strlen(line), false, &skipped, &err) == STORE_OK;
    }
    T_EQ_INT(imported, 300);
    free(a);
    a = NULL;
    fa = open_memstream(&a, &la);
    T_CHECK(store_export(s, "c", collect, fa, &n, &err) == STORE_OK);
    fclose(fa);
    FILE *fb = open_memstream(&b, &lb);
    T_CHECK(store_export(t, "c", collect, fb, &n, &err) == STORE_OK);
    fclose(fb);
    T_CHECK_MSG(la == lb && memcmp(a, b, la) == 0, "exported again after import: identical");
    bool skipped = false;
    line = strtok_r(a, "\n", &save);
    T_EQ_INT(store_import_line(t, line, strlen(line), false, &skipped, &err), STORE_CONFLICT);
    T_CHECK(store_import_line(t, line, strlen(line), true, &skipped, &err) == STORE_OK && skipped);
    free(a);
    free(b);
    store_close(t);
}

static void check_bad_input(store *s) {
    store_model m = model(FP_A);
    float v[PER] = {0};
    clara_chunk ch = {0, 4, 1};
    store_err err = {0};
    store_memory_in in = {"ok", "text", 4, "[1]", &ch, 1, v, 0, 0};
    T_EQ_INT(store_add(s, "c", true, &m, STORE_F16, &in, 1, NULL, &err), STORE_INVALID);
    /* metadata that means two things: a key twice, a number past the double range */
    in.metadata = "{\"a\": 1, \"o\": {\"b\": 1, \"b\": 2}}";
    T_EQ_INT(store_add(s, "c", true, &m, STORE_F16, &in, 1, NULL, &err), STORE_INVALID);
    T_CHECK(strstr(err.msg, "'b' twice") != NULL);
    in.metadata = "{\"a\": [1e999]}";
    T_EQ_INT(store_add(s, "c", true, &m, STORE_F16, &in, 1, NULL, &err), STORE_INVALID);
    T_CHECK(strstr(err.msg, "out of range") != NULL);
    in.metadata = NULL;
    in.id = "../x";
    T_EQ_INT(store_add(s, "c", true, &m, STORE_F16, &in, 1, NULL, &err), STORE_INVALID);
    in.id = "m0"; /* exists */
    T_EQ_INT(store_add(s, "c", true, &m, STORE_F16, &in, 1, NULL, &err), STORE_CONFLICT);
    T_CHECK(strstr(err.msg, "'m0'") != NULL);
    T_EQ_INT(store_add(s, "bad\x01name", true, &m, STORE_F16, &in, 1, NULL, &err), STORE_INVALID);
    store_memory got;
    T_EQ_INT(store_get(s, "nope", "m0", &got, &err), STORE_NOT_FOUND);
    /* all or nothing: the second memory's duplicate id keeps the first out too */
    store_memory_in two[2] = {{"fresh", "text", 4, NULL, &ch, 1, v, 0, 0},
                              {"m1", "text", 4, NULL, &ch, 1, v, 0, 0}};
    T_EQ_INT(store_add(s, "c", true, &m, STORE_F16, two, 2, NULL, &err), STORE_CONFLICT);
    T_EQ_INT(store_get(s, "c", "fresh", &got, &err), STORE_NOT_FOUND);
    /* one id twice in one add, into a new collection: a conflict naming both, nothing created */
    store_memory_in dup[3] = {{"twice", "text", 4, NULL, &ch, 1, v, 0, 0},
                              {NULL, "text", 4, NULL, &ch, 1, v, 0, 0},
                              {"twice", "text", 4, NULL, &ch, 1, v, 0, 0}};
    T_EQ_INT(store_add(s, "dupcoll", true, &m, STORE_F16, dup, 3, NULL, &err), STORE_CONFLICT);
    T_CHECK(strstr(err.msg, "memories 0 and 2") != NULL);
    T_EQ_INT(store_get(s, "dupcoll", "twice", &got, &err), STORE_NOT_FOUND);
}

/* Full text with a query word longer than the 64 bytes a word is cut to, made of 3-byte UTF-8
 * characters (a CJK question has no spaces): the cut must not split a character (PostgreSQL
 * refuses text that is not UTF-8). */
static void check_fulltext_utf8(store *s, const char *coll) {
    store_model m = model(FP_A);
    char q[3 * 30 + 1];
    for (int i = 0; i < 30; i++) memcpy(q + 3 * i, "\xe8\xae\xb0", 3); /* U+8BB0 */
    q[90] = 0;
    store_query f = {coll, &m, STORE_SELECT_FULLTEXT, NULL, q, 90, 3, 0, NULL, false};
    store_selection sel;
    store_err err = {0};
    T_CHECK_MSG(store_select(s, &f, &sel, &err) == STORE_OK && sel.n == 3, "%s", err.msg);
    store_selection_free(&sel);
}

/* A selection holds top_k chunks' vectors, not the whole collection's: with the address space
 * bounded to a little more than that, a top-1 query on a collection of large vectors works. */
static void check_select_memory(store *s) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    (void)s;
    return; /* the sanitizers reserve far more address space than any bound here */
#else
    enum { BIG_MEM = 64, BIG_EMBD = 1024, N = 300 };
    const size_t per = (size_t)BIG_MEM * BIG_EMBD; /* 256 KiB of f32 per chunk */
    store_model m = {"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc", "big",
                     BIG_MEM, BIG_EMBD};
    static char text[N * 8];
    clara_chunk ch[N];
    for (int i = 0; i < N; i++) {
        memcpy(text + 8 * i, "word000 ", 8);
        ch[i] = (clara_chunk){(size_t)8 * i, 8, 1};
    }
    float *v = calloc((size_t)N * per, sizeof *v);
    T_CHECK(v != NULL);
    if (!v) return;
    store_memory_in in = {"big", text, sizeof text, NULL, ch, N, v, 0, 0};
    store_err err = {0};
    T_CHECK_MSG(store_add(s, "big", true, &m, STORE_F16, &in, 1, NULL, &err) == STORE_OK, "%s",
                err.msg);
    free(v);
    store_query q = {"big", &m, STORE_SELECT_FULLTEXT, NULL, "word000", 7, 1, 0, NULL, false};
    store_selection sel;
    T_CHECK(store_select(s, &q, &sel, &err) == STORE_OK); /* the index, loaded unbounded */
    store_selection_free(&sel);
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld", &pages) != 1) pages = 0;
    if (f) fclose(f);
    struct rlimit old, low;
    if (pages == 0 || getrlimit(RLIMIT_AS, &old) != 0) return;
    low = old;
    low.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (48u << 20);
    if (old.rlim_cur != RLIM_INFINITY && old.rlim_cur < low.rlim_cur) return;
    T_CHECK(setrlimit(RLIMIT_AS, &low) == 0);
    store_code rc = store_select(s, &q, &sel, &err);
    setrlimit(RLIMIT_AS, &old);
    T_CHECK_MSG(rc == STORE_OK && sel.n == 1, "top-1 of %d chunks of %zu KiB: %s", N,
                per * sizeof(float) >> 10, rc == STORE_OK ? "" : err.msg);
    if (rc == STORE_OK) store_selection_free(&sel);
#endif
}

/* Paging with store_list while another replica (a second handle on the database) deletes and
 * re-adds memory "v" and then adds a memory t<k> after it, for good: a listing sees every t<k>
 * that existed when it started (the cursor of a page is the last row it returned, whatever
 * happens to that row meanwhile). */
typedef struct {
    store *s;
    volatile bool stop;
    volatile int n_t; /* t<k> memories committed */
} churn_arg;

static void *churn(void *arg) {
    churn_arg *c = arg;
    store_model m = model(FP_A);
    static float v[PER];
    clara_chunk ch = {0, 4, 1};
    for (int k = 0; !c->stop; k++) {
        store_err err = {0};
        char id[16];
        snprintf(id, sizeof id, "t%d", k);
        store_memory_in in = {"v", "text", 4, NULL, &ch, 1, v, 0, 0};
        store_memory_in t = {id, "text", 4, NULL, &ch, 1, v, 0, 0};
        store_delete_memory(c->s, "paged", "v", &err);
        store_add(c->s, "paged", true, &m, STORE_F32, &in, 1, NULL, &err);
        if (store_add(c->s, "paged", true, &m, STORE_F32, &t, 1, NULL, &err) == STORE_OK)
            __atomic_store_n(&c->n_t, k + 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

static void check_list_paging(const char *url) {
    store *s = open_store(url), *other = open_store(url);
    if (!s || !other) return;
    churn_arg c = {other, false, 0};
    pthread_t th;
    T_CHECK(pthread_create(&th, NULL, churn, &c) == 0);
    int bad = 0, runs = 0;
    store_err err = {0};
    while (__atomic_load_n(&c.n_t, __ATOMIC_SEQ_CST) < 2) usleep(1000);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (t1 = t0; t1.tv_sec - t0.tv_sec < 2 && bad == 0; runs++) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        int seen = 0, before = __atomic_load_n(&c.n_t, __ATOMIC_SEQ_CST);
        int64_t after = 0;
        do {
            store_memory *page = NULL;
            size_t n = 0;
            int64_t next = 0;
            if (store_list(s, "paged", after, 2, &page, &n, &next, &err) != STORE_OK) {
                fprintf(stderr, "store_list: %s\n", err.msg);
                break;
            }
            for (size_t i = 0; i < n; i++) {
                seen += page[i].id[0] == 't';
                store_memory_free(&page[i]);
            }
            free(page);
            after = next;
        } while (after);
        bad += seen < before;
    }
    c.stop = true;
    pthread_join(th, NULL);
    T_CHECK_MSG(bad == 0, "a listing missed memories that were there all along (run %d)", runs);
    store_close(other);
    store_close(s);
}

static void run_store(const char *url, const char *url2) {
    store *s = open_store(url);
    if (!s) return;
    static float all[300 * PER];
    add_many(s, "c", 300, all);
    check_cosine(s, "c", all, 300, 5);
    float small[40 * PER];
    add_many(s, "small", 40, small);
    check_cosine(s, "small", small, 40, 5);
    check_filter_and_fulltext(s, "c");
    check_fulltext_utf8(s, "c");
    check_select_memory(s);
    check_bad_input(s);
    check_models(s, "c");
    check_export_import(s, url2);
    store_close(s);
    check_replicas(url);
    check_list_paging(url);
}

int main(void) {
    T_RUN(test_cosine);
    T_RUN(test_top_k);
    T_RUN(test_code);
    T_RUN(test_cache);
    char dir[] = "/tmp/clara-store-core-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char a[128], b[128];
    snprintf(a, sizeof a, "%s/a.db", dir);
    snprintf(b, sizeof b, "%s/b.db", dir);
    run_store(a, b);
    const char *pg = getenv("CLARA_TEST_PG"), *pg2 = getenv("CLARA_TEST_PG2");
    if (pg && pg2)
        run_store(pg, pg2);
    else
        printf("CLARA_TEST_PG(2) not set: PostgreSQL runs from tests/e2e/test_store_db.py\n");
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    return t_report("test_store_core");
}
