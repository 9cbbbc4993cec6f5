/* test_mapguard.c - mapped files that change under us: non-regular files refused without
 * blocking, clara_mapped_check telling a rename (safe) from an in-place rewrite or truncation, the
 * SIGBUS guard turning a truncated mapping into zero pages (also from several threads at once),
 * faults it does not own still killing the process, and registry slots reused. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/mapfile.h"
#include "base/mapguard.h"
#include "t.h"

#define FILE_BYTES (3 * 4096 + 100) /* three pages and part of a fourth */

static char g_dir[] = "/tmp/clara-mapguard-XXXXXX";

static void path_of(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", g_dir, name);
}

/* A file of FILE_BYTES bytes, all `fill`. */
static void write_file(const char *path, int fill) {
    char *buf = malloc(FILE_BYTES);
    memset(buf, fill, FILE_BYTES);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, FILE_BYTES, f) != FILE_BYTES) abort();
    fclose(f);
    free(buf);
}

static unsigned long sum_bytes(const clara_mapped *m) {
    unsigned long s = 0;
    for (size_t i = 0; i < m->size; i++) s += ((const volatile uint8_t *)m->data)[i];
    return s;
}

/* From the last byte back, so the first read is in a vanished page when the file was cut. */
static unsigned long sum_backwards(const clara_mapped *m) {
    unsigned long s = 0;
    for (size_t i = m->size; i-- > 0;) s += ((const volatile uint8_t *)m->data)[i];
    return s;
}

static void test_non_regular_refused(void) {
    char fifo[256];
    path_of(fifo, sizeof fifo, "fifo");
    T_CHECK(mkfifo(fifo, 0600) == 0);
    alarm(10); /* opening a FIFO for reading blocks until a writer comes: a hang fails the test */
    clara_mapped m;
    T_EQ_INT(clara_map_file(fifo, &m), CLARA_ERR_IO);
    T_CHECK(err_has("is a FIFO, not a regular file") && err_has(fifo));
    T_CHECK(m.data == NULL && m.fd == -1 && m.guard == -1);
    T_EQ_INT(clara_file_check(fifo), CLARA_ERR_IO);
    T_CHECK(err_has("is a FIFO"));
    char *buf = NULL;
    T_EQ_INT(clara_read_file(fifo, 1 << 20, &buf, NULL), CLARA_ERR_IO);
    T_CHECK(err_has("is a FIFO") && buf == NULL);
    T_EQ_INT(clara_map_file(g_dir, &m), CLARA_ERR_IO);
    T_CHECK(err_has("is a directory, not a regular file"));
    T_EQ_INT(clara_file_check("/dev/null"), CLARA_ERR_IO);
    T_CHECK(err_has("is a character device"));
    alarm(0);
    unlink(fifo);
}

/* What clara_mapped_check says after a rename over the path, an in-place rewrite of the same size
 * and a truncation. */
static void test_check(void) {
    char path[256], other[256];
    path_of(path, sizeof path, "check.bin");
    path_of(other, sizeof other, "check.new");
    write_file(path, 1);
    clara_mapped m;
    T_EQ_INT(clara_map_file(path, &m), CLARA_OK);
    T_CHECK(m.fd >= 0 && m.id.size == FILE_BYTES && m.guard >= 0);
    T_EQ_INT(clara_mapped_check(&m, path), CLARA_OK);
    /* renamed over: the mapping still holds the old file, intact */
    write_file(other, 2);
    T_CHECK(rename(other, path) == 0);
    T_EQ_INT(clara_mapped_check(&m, path), CLARA_OK);
    T_EQ_INT(sum_bytes(&m), FILE_BYTES);
    clara_unmap_file(&m);
    T_CHECK(m.data == NULL && m.fd == -1 && m.guard == -1);

    /* rewritten in place, same size: only the modification time tells (set one far from now, as
     * the kernel's clock may not have ticked since the file was written) */
    T_EQ_INT(clara_map_file(path, &m), CLARA_OK);
    int fd = open(path, O_WRONLY);
    T_CHECK(fd >= 0 && pwrite(fd, "x", 1, 10) == 1);
    struct timespec ts[2] = {{1000000000, 0}, {1000000000, 0}};
    T_CHECK(futimens(fd, ts) == 0);
    T_EQ_INT(clara_mapped_check(&m, "the model"), CLARA_ERR_IO);
    T_CHECK(err_has("the model changed on disk while in use: rewritten in place"));
    /* grown */
    T_CHECK(ftruncate(fd, FILE_BYTES + 10) == 0);
    T_EQ_INT(clara_mapped_check(&m, "the model"), CLARA_ERR_IO);
    T_CHECK(err_has("12388 bytes when loaded, 12398 now"));
    close(fd);
    clara_unmap_file(&m);
    unlink(path);
}

static void test_guard_absorbs_truncation(void) {
    char path[256];
    path_of(path, sizeof path, "trunc.bin");
    write_file(path, 3);
    clara_mapped m;
    T_EQ_INT(clara_map_file(path, &m), CLARA_OK);
    T_EQ_INT(sum_bytes(&m), 3ul * FILE_BYTES);
    T_CHECK(truncate(path, 4096 + 7) == 0); /* pages 2.. vanish */
    T_EQ_INT(clara_mapguard_faults(m.guard), 0);
    /* without the guard this read dies of SIGBUS; with it the whole mapping reads zeros, the
     * pages still in the file included (one fault, not one per page) */
    T_EQ_INT(sum_backwards(&m), 0);
    T_EQ_INT(clara_mapguard_faults(m.guard), 1);
    T_EQ_INT(clara_mapped_check(&m, path), CLARA_ERR_IO);
    T_CHECK(err_has("was truncated while in use (12388 bytes when loaded, 4103 now): its mapped "
                    "pages vanished"));
    clara_unmap_file(&m);
    unlink(path);
}

typedef struct {
    const clara_mapped *m;
    unsigned long sum;
} reader_arg;

static void *reader(void *p) {
    reader_arg *a = p;
    a->sum = sum_bytes(a->m);
    return NULL;
}

/* Engine threads fault on the same mapping at about the same time: each handler call replaces
 * the mapping, none crashes, all read zeros past the point of truncation. */
static void test_guard_threads(void) {
    char path[256];
    path_of(path, sizeof path, "threads.bin");
    for (int round = 0; round < 20; round++) {
        write_file(path, 5);
        clara_mapped m;
        T_EQ_INT(clara_map_file(path, &m), CLARA_OK);
        T_CHECK(truncate(path, 0) == 0);
        pthread_t th[4];
        reader_arg args[4];
        for (int i = 0; i < 4; i++) {
            args[i] = (reader_arg){&m, 1};
            pthread_create(&th[i], NULL, reader, &args[i]);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            T_EQ_INT(args[i].sum, 0);
        }
        T_CHECK(clara_mapguard_faults(m.guard) >= 1);
        T_EQ_INT(clara_mapped_check(&m, path), CLARA_ERR_IO);
        clara_unmap_file(&m);
    }
    unlink(path);
}

/* How a child that runs fn ends: -1 for a normal exit 0, the signal that killed it, or 1000 +
 * its exit status. */
static int child_outcome(void (*fn)(void)) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 2); /* a sanitizer's report of the expected crash is not this test's output */
        fn();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (WIFSIGNALED(st)) return WTERMSIG(st);
    return WEXITSTATUS(st) == 0 ? -1 : 1000 + WEXITSTATUS(st);
}

/* Reads a truncated file through a mapping clara_map_file did not make (so not registered). */
static void fault_unregistered(void) {
    char path[256];
    path_of(path, sizeof path, "plain.bin");
    write_file(path, 7);
    int fd = open(path, O_RDONLY);
    const volatile uint8_t *p = mmap(NULL, FILE_BYTES, PROT_READ, MAP_PRIVATE, fd, 0);
    if (truncate(path, 0) != 0) _exit(3);
    unsigned s = p[2 * 4096];
    _exit(s == 0 ? 4 : 5); /* not reached: SIGBUS */
}

static void fault_registered(void) {
    char path[256];
    path_of(path, sizeof path, "child.bin");
    write_file(path, 7);
    clara_mapped m;
    if (clara_map_file(path, &m) != CLARA_OK || truncate(path, 0) != 0) _exit(3);
    _exit(sum_bytes(&m) == 0 ? 0 : 6);
}

static void sent_sigbus(void) {
    kill(getpid(), SIGBUS);
}

/* A crash is still a crash: with ASan its own handler (installed before ours) reports and exits
 * 1; otherwise the default action kills the process with SIGBUS. */
static bool died_of_sigbus(int outcome) {
#if defined(__SANITIZE_ADDRESS__)
    if (outcome > 1000) return true;
#endif
    return outcome == SIGBUS;
}

static void test_guard_scope(void) {
    /* the library installs nothing by itself: a registered mapping still faults */
    int before = child_outcome(fault_registered);
    T_CHECK_MSG(!clara_mapguard_installed() && died_of_sigbus(before),
                "without the guard a truncated mapping kills (outcome %d)", before);
    T_EQ_INT(clara_mapguard_install(), CLARA_OK);
    T_EQ_INT(clara_mapguard_install(), CLARA_OK); /* idempotent */
    T_CHECK(clara_mapguard_installed());
    int ok = child_outcome(fault_registered);
    T_CHECK_MSG(ok == -1, "with the guard the child reads zeros and exits 0 (outcome %d)", ok);
    int plain = child_outcome(fault_unregistered);
    T_CHECK_MSG(died_of_sigbus(plain), "a fault outside guarded mappings kills (outcome %d)",
                plain);
    int sent = child_outcome(sent_sigbus);
    T_CHECK_MSG(sent == SIGBUS || died_of_sigbus(sent), "a SIGBUS sent by kill kills (outcome %d)",
                sent);
}

/* Slots come back when mappings go; a full registry leaves the next mapping unguarded, not
 * failed. */
static void test_slots(void) {
    char path[256];
    path_of(path, sizeof path, "slots.bin");
    write_file(path, 1);
    for (int i = 0; i < 3 * CLARA_MAPGUARD_SLOTS; i++) {
        clara_mapped m;
        T_EQ_INT(clara_map_file(path, &m), CLARA_OK);
        if (m.guard < 0) {
            T_CHECK_MSG(0, "mapping %d got no slot: slots leak", i);
            break;
        }
        clara_unmap_file(&m);
    }
    static clara_mapped many[CLARA_MAPGUARD_SLOTS + 1];
    int guarded = 0;
    for (int i = 0; i <= CLARA_MAPGUARD_SLOTS; i++) {
        T_EQ_INT(clara_map_file(path, &many[i]), CLARA_OK);
        guarded += many[i].guard >= 0;
    }
    T_EQ_INT(guarded, CLARA_MAPGUARD_SLOTS);
    T_EQ_INT(many[CLARA_MAPGUARD_SLOTS].guard, -1);
    T_EQ_INT(sum_bytes(&many[CLARA_MAPGUARD_SLOTS]), FILE_BYTES);
    clara_unmap_file(&many[0]);
    clara_mapped again;
    T_EQ_INT(clara_map_file(path, &again), CLARA_OK);
    T_CHECK(again.guard >= 0);
    clara_unmap_file(&again);
    for (int i = 1; i <= CLARA_MAPGUARD_SLOTS; i++) clara_unmap_file(&many[i]);
    unlink(path);
}

int main(void) {
    if (!mkdtemp(g_dir)) return 1;
    T_RUN(test_non_regular_refused);
    T_RUN(test_check);
    T_RUN(test_guard_scope); /* installs the guard: the tests below rely on it */
    T_RUN(test_guard_absorbs_truncation);
    T_RUN(test_guard_threads);
    T_RUN(test_slots);
    rmdir(g_dir);
    return t_report("test_mapguard");
}
