/* mapfile.c - mmap of input files (registered with the SIGBUS guard, their descriptor kept to
 * notice in-place changes) and bounded whole-file reads. */
#define _POSIX_C_SOURCE 200809L
#include "base/mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/mapguard.h"
#include "base/status.h"

/* What a non-regular file is, for the error message. */
static const char *kind_of(mode_t mode) {
    if (S_ISFIFO(mode)) return "is a FIFO, ";
    if (S_ISDIR(mode)) return "is a directory, ";
    if (S_ISCHR(mode)) return "is a character device, ";
    if (S_ISBLK(mode)) return "is a block device, ";
    if (S_ISSOCK(mode)) return "is a socket, ";
    return "is ";
}

/* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever; it is
 * refused below, and regular files ignore the flag (cleared anyway for the reads). */
static clara_status open_regular(const char *path, int *fd_out, struct stat *st) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) return clara_fail(CLARA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, st) != 0) {
        int e = errno;
        close(fd);
        return clara_fail(CLARA_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        return clara_fail(CLARA_ERR_IO, "%s: %snot a regular file", path, kind_of(st->st_mode));
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    *fd_out = fd;
    return CLARA_OK;
}

clara_status clara_file_check(const char *path) {
    int fd = -1;
    struct stat st;
    clara_status s = open_regular(path, &fd, &st);
    if (s == CLARA_OK) close(fd);
    return s;
}

static int64_t mtime_ns(const struct stat *st) {
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static clara_file_id file_id(const struct stat *st) {
    clara_file_id id = {(uint64_t)st->st_dev, (uint64_t)st->st_ino, (uint64_t)st->st_size,
                        mtime_ns(st)};
    return id;
}

clara_status clara_map_file(const char *path, clara_mapped *out) {
    int fd = -1;
    struct stat st;
    memset(out, 0, sizeof *out);
    out->fd = -1;
    out->guard = -1;
    clara_status s = open_regular(path, &fd, &st);
    if (s != CLARA_OK) return s;
    size_t size = (size_t)st.st_size;
    if (size == 0) {
        close(fd);
        return CLARA_OK;
    }
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        close(fd);
        return clara_fail(CLARA_ERR_IO, "%s: cannot map: %s", path, strerror(e));
    }
    out->data = p;
    out->size = size;
    out->fd = fd;
    out->id = file_id(&st);
    out->guard = clara_mapguard_add(p, size);
    return CLARA_OK;
}

void clara_unmap_file(clara_mapped *m) {
    if (m->data) {
        clara_mapguard_remove(m->guard); /* before munmap: the range may be reused at once */
        munmap((void *)m->data, m->size);
        if (m->fd >= 0) close(m->fd);
    }
    m->data = NULL;
    m->size = 0;
    m->fd = -1;
    m->guard = -1;
}

clara_status clara_mapped_check(const clara_mapped *m, const char *name) {
    if (!m->data || m->fd < 0) return CLARA_OK;
    struct stat st;
    bool stat_ok = fstat(m->fd, &st) == 0;
    unsigned long long was = (unsigned long long)m->id.size;
    if (clara_mapguard_faults(m->guard) > 0)
        return clara_fail(CLARA_ERR_IO,
                          "%s was truncated while in use (%llu bytes when loaded, %llu now): its "
                          "mapped pages vanished",
                          name, was, stat_ok ? (unsigned long long)st.st_size : 0ull);
    if (!stat_ok) return clara_fail(CLARA_ERR_IO, "%s: cannot stat: %s", name, strerror(errno));
    if ((uint64_t)st.st_size != m->id.size)
        return clara_fail(CLARA_ERR_IO,
                          "%s changed on disk while in use: %llu bytes when loaded, %llu now", name,
                          was, (unsigned long long)st.st_size);
    if (mtime_ns(&st) != m->id.mtime_ns)
        return clara_fail(CLARA_ERR_IO,
                          "%s changed on disk while in use: rewritten in place (same size, new "
                          "modification time)",
                          name);
    return CLARA_OK;
}

clara_status clara_read_file(const char *path, size_t max_size, char **out, size_t *out_len) {
    int fd = -1;
    struct stat st;
    *out = NULL;
    clara_status s = open_regular(path, &fd, &st);
    if (s != CLARA_OK) return s;
    size_t size = (size_t)st.st_size;
    if (size > max_size) {
        close(fd);
        return clara_fail(CLARA_ERR_NOMEM, "%s: file is %zu bytes, more than the %zu allowed", path,
                          size, max_size);
    }
    char *buf = malloc(size + 1);
    if (!buf) {
        close(fd);
        return clara_fail(CLARA_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, size);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = errno;
            free(buf);
            close(fd);
            return clara_fail(CLARA_ERR_IO, "%s: read failed: %s", path,
                              n == 0 ? "unexpected end of file" : strerror(e));
        }
        got += (size_t)n;
    }
    close(fd);
    buf[size] = '\0';
    *out = buf;
    if (out_len) *out_len = size;
    return CLARA_OK;
}

void clara_release_pages(const void *p, size_t n) {
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0 || !p || !n) return;
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(page - 1);
    uintptr_t e = (uintptr_t)p + n;
    madvise((void *)a, e - a, MADV_DONTNEED);
}
