/* outfile.h - output files written under a temporary name and renamed into place when complete,
 * so a failed or interrupted write never leaves a partial file under the final name. */
#ifndef CLARA_BASE_OUTFILE_H
#define CLARA_BASE_OUTFILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "clara.h"

typedef struct {
    FILE *fp;
    char *final_path;
    char *tmp_path;
    uint64_t written; /* bytes written so far */
} clara_outfile;

/* Creates "<path>.tmp.XXXXXX" next to `path`. */
clara_status clara_outfile_open(clara_outfile *f, const char *path);
clara_status clara_outfile_write(clara_outfile *f, const void *data, size_t n);
/* Writes `n` zero bytes (alignment padding). */
clara_status clara_outfile_pad(clara_outfile *f, size_t n);
/* Flushes, fsyncs and renames onto the final path. The struct is released either way. */
clara_status clara_outfile_commit(clara_outfile *f);
/* Removes the temporary file and releases the struct; safe to call twice. */
void clara_outfile_abort(clara_outfile *f);

/* The CLI installs a SIGINT/SIGTERM handler that removes the temporary file being written; the
 * library registers and unregisters it here. Only one output at a time is tracked. */
const char *clara_outfile_current_tmp(void);

#endif
