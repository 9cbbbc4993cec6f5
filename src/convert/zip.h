/* zip.h - read-only parser for ZIP archives of stored (uncompressed) entries, as written by
 * torch.save: End Of Central Directory (with comment), ZIP64 EOCD record/locator and ZIP64 extra
 * fields, central directory, local headers. Works on a (pointer, length) image; entry data points
 * into it. Compressed or encrypted entries, overlapping or duplicate entries, and anything
 * pointing past the end are rejected. */
#ifndef CLARA_CONVERT_ZIP_H
#define CLARA_CONVERT_ZIP_H

#include <stddef.h>
#include <stdint.h>

#include "clara.h"

typedef struct {
    const char *name;       /* NUL-terminated copy of the entry name */
    uint16_t flags;         /* general purpose bit flags */
    uint32_t crc32;         /* from the central directory */
    uint64_t size;          /* bytes of data (stored: compressed == uncompressed) */
    uint64_t header_offset; /* offset of the local header in the image */
    uint64_t data_offset;   /* offset of the first data byte in the image */
    const uint8_t *data;    /* image + data_offset */
} zip_entry;

typedef struct zip_archive zip_archive;

/* Parses the archive in data[0, len). `name` is used in error messages. `data` must outlive the
 * archive. At most ZIP_MAX_ENTRIES entries. */
#define ZIP_MAX_ENTRIES 1000000u
clara_status zip_parse(const uint8_t *data, size_t len, const char *name, zip_archive **out);
void zip_free(zip_archive *z);

/* Entries in central-directory order. */
size_t zip_n_entries(const zip_archive *z);
const zip_entry *zip_entry_at(const zip_archive *z, size_t i);
/* Exact name lookup; NULL if absent. */
const zip_entry *zip_find(const zip_archive *z, const char *name);
/* Recomputes the CRC-32 of the entry's data and compares it with the recorded one. */
clara_status zip_entry_check_crc(const zip_archive *z, const zip_entry *e);

/* CRC-32 (ISO-HDLC, the ZIP/zlib polynomial 0xEDB88320 reflected); continue with the previous
 * return value, start with 0. */
uint32_t zip_crc32(uint32_t crc, const void *data, size_t n);

#endif
