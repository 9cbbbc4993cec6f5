/* mapfile.h - read-only memory mapping of whole files (weights are never copied). */
#ifndef CLARA_BASE_MAPFILE_H
#define CLARA_BASE_MAPFILE_H

#include <stddef.h>
#include <stdint.h>

#include "clara.h"

typedef struct {
    const uint8_t *data; /* NULL for an empty file */
    size_t size;
} clara_mapped;

/* Maps `path` read-only. On failure records "PATH: reason" and returns CLARA_ERR_IO; anything
 * but a regular file (a FIFO, a directory, a device) is refused without blocking. */
clara_status clara_map_file(const char *path, clara_mapped *out);
void clara_unmap_file(clara_mapped *m);
/* The same checks as clara_map_file without mapping: `path` opens for reading and is a regular
 * file. Never blocks (a FIFO is refused, not opened for a writer to come). */
clara_status clara_file_check(const char *path);

/* Reads a whole (small) file into a NUL-terminated malloc'd buffer; refuses files over max_size. */
clara_status clara_read_file(const char *path, size_t max_size, char **out, size_t *out_len);

#endif
