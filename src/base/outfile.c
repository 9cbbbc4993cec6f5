/* outfile.c - write-to-temporary then rename, for every file the tools produce. */
#define _POSIX_C_SOURCE 200809L
#include "base/outfile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/status.h"

/* Path of the temporary file being written, for the CLI's signal handler to unlink. A plain
 * array (not a pointer to heap memory) so that reading it from a signal handler is safe. */
static char g_current_tmp[4096];

const char *clara_outfile_current_tmp(void) {
    return g_current_tmp[0] ? g_current_tmp : NULL;
}

static void release(clara_outfile *f) {
    free(f->final_path);
    free(f->tmp_path);
    f->final_path = NULL;
    f->tmp_path = NULL;
    f->fp = NULL;
    g_current_tmp[0] = '\0';
}

clara_status clara_outfile_open(clara_outfile *f, const char *path) {
    memset(f, 0, sizeof *f);
    size_t n = strlen(path);
    if (n == 0 || n + 16 > sizeof g_current_tmp)
        return clara_fail(CLARA_ERR_INVALID_ARG, "output path is empty or too long");
    f->final_path = strdup(path);
    f->tmp_path = malloc(n + 16);
    if (!f->final_path || !f->tmp_path) {
        release(f);
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    memcpy(f->tmp_path, path, n);
    memcpy(f->tmp_path + n, ".tmp.XXXXXX", 12);
    int fd = mkstemp(f->tmp_path);
    if (fd < 0) {
        clara_status s = clara_fail(CLARA_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        release(f);
        return s;
    }
    /* mkstemp creates 0600; give the file the permissions a plain creat() would */
    mode_t mask = umask(0);
    umask(mask);
    int chmod_rc = fchmod(fd, 0666 & ~mask);
    (void)chmod_rc; /* not fatal: the file is still ours to write */
    f->fp = fdopen(fd, "wb");
    if (!f->fp) {
        close(fd);
        unlink(f->tmp_path);
        release(f);
        return clara_fail(CLARA_ERR_IO, "%s: cannot open stream", path);
    }
    memcpy(g_current_tmp, f->tmp_path, strlen(f->tmp_path) + 1);
    return CLARA_OK;
}

clara_status clara_outfile_write(clara_outfile *f, const void *data, size_t n) {
    if (n && fwrite(data, 1, n, f->fp) != n)
        return clara_fail(CLARA_ERR_IO, "%s: write failed: %s", f->final_path, strerror(errno));
    f->written += n;
    return CLARA_OK;
}

clara_status clara_outfile_pad(clara_outfile *f, size_t n) {
    static const uint8_t zeros[64];
    while (n > 0) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        clara_status s = clara_outfile_write(f, zeros, k);
        if (s != CLARA_OK) return s;
        n -= k;
    }
    return CLARA_OK;
}

clara_status clara_outfile_commit(clara_outfile *f) {
    clara_status s = CLARA_OK;
    if (fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0)
        s = clara_fail(CLARA_ERR_IO, "%s: flush failed: %s", f->final_path, strerror(errno));
    if (fclose(f->fp) != 0 && s == CLARA_OK)
        s = clara_fail(CLARA_ERR_IO, "%s: close failed: %s", f->final_path, strerror(errno));
    f->fp = NULL;
    if (s == CLARA_OK && rename(f->tmp_path, f->final_path) != 0)
        s = clara_fail(CLARA_ERR_IO, "%s: rename failed: %s", f->final_path, strerror(errno));
    if (s != CLARA_OK) unlink(f->tmp_path);
    release(f);
    return s;
}

void clara_outfile_abort(clara_outfile *f) {
    if (f->fp) fclose(f->fp);
    if (f->tmp_path) unlink(f->tmp_path);
    release(f);
}
