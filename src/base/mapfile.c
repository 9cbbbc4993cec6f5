/* mapfile.c - mmap of input files and bounded whole-file reads. */
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

clara_status clara_map_file(const char *path, clara_mapped *out) {
    int fd = -1;
    struct stat st;
    out->data = NULL;
    out->size = 0;
    clara_status s = open_regular(path, &fd, &st);
    if (s != CLARA_OK) return s;
    size_t size = (size_t)st.st_size;
    if (size == 0) {
        close(fd);
        return CLARA_OK;
    }
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) return clara_fail(CLARA_ERR_IO, "%s: cannot map: %s", path, strerror(e));
    out->data = p;
    out->size = size;
    return CLARA_OK;
}

void clara_unmap_file(clara_mapped *m) {
    if (m->data) munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
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
