/* mapfile.h - read-only memory mapping of whole files (weights are never copied). */
#ifndef CLARA_BASE_MAPFILE_H
#define CLARA_BASE_MAPFILE_H

#include <stddef.h>
#include <stdint.h>

#include "clara.h"

/* Which file, and which version of it: what fstat said when it was opened. */
typedef struct {
    uint64_t dev, ino, size;
    int64_t mtime_ns;
} clara_file_id;

typedef struct {
    const uint8_t *data; /* NULL for an empty file */
    size_t size;
    /* Kept open while mapped (-1 otherwise): fstat on it sees the mapped file itself even after
     * another file was renamed over its path, which is the safe way to replace one. */
    int fd;
    int guard;        /* slot in the SIGBUS guard's registry (base/mapguard.h), -1 if none */
    clara_file_id id; /* at map time */
} clara_mapped;

/* Maps `path` read-only. On failure records "PATH: reason" and returns CLARA_ERR_IO; anything
 * but a regular file (a FIFO, a directory, a device) is refused without blocking. */
clara_status clara_map_file(const char *path, clara_mapped *out);
void clara_unmap_file(clara_mapped *m);
/* The same checks as clara_map_file without mapping: `path` opens for reading and is a regular
 * file. Never blocks (a FIFO is refused, not opened for a writer to come). */
clara_status clara_file_check(const char *path);

/* Whether the mapped file is still the one mapped: CLARA_ERR_IO naming `name` when it was
 * truncated (a fault absorbed by the guard, or a smaller size) or rewritten in place (another
 * size or modification time). A file renamed over the path does not count: the mapping still
 * holds the old one, intact. CLARA_OK for an empty or unowned mapping. */
clara_status clara_mapped_check(const clara_mapped *m, const char *name);

/* Reads a whole (small) file into a NUL-terminated malloc'd buffer; refuses files over max_size. */
/* Drops the pages of a clean file mapping that hold [p, p + n) from this process: they stay in
 * the page cache and are faulted in again if read, so this only lowers RSS. Only for ranges of a
 * file mapping (clara_map_file): anonymous memory would read back as zeros. Without it every byte
 * read once stays resident until exit. */
void clara_release_pages(const void *p, size_t n);

clara_status clara_read_file(const char *path, size_t max_size, char **out, size_t *out_len);

#endif
