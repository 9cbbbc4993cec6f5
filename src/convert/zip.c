/* zip.c - stored-entry ZIP reader (see zip.h). Record layouts from PKWARE's APPNOTE.TXT:
 * EOCD 22 bytes + comment, ZIP64 EOCD locator 20 bytes, ZIP64 EOCD record 56+ bytes, central
 * directory header 46 bytes + name/extra/comment, local header 30 bytes + name/extra. */
#include "convert/zip.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/status.h"

#define SIG_LOCAL    0x04034b50u
#define SIG_CENTRAL  0x02014b50u
#define SIG_EOCD     0x06054b50u
#define SIG_EOCD64   0x06064b50u
#define SIG_LOCATOR  0x07064b50u
#define EOCD_SIZE    22u
#define LOCATOR_SIZE 20u
#define EOCD64_SIZE  56u
#define CDH_SIZE     46u
#define LFH_SIZE     30u

struct zip_archive {
    char *name;
    const uint8_t *data;
    size_t len;
    zip_entry *entries; /* central directory order */
    zip_entry **sorted; /* by name */
    size_t n;
};

static uint16_t rd16(const uint8_t *p) {
    return (uint16_t)(p[0] | p[1] << 8);
}
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) {
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

uint32_t zip_crc32(uint32_t crc, const void *data, size_t n) {
    /* built per call (2k steps) rather than cached, so there is no shared state between threads */
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    const uint8_t *p = data;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* Where the central directory is and how many entries it has. */
typedef struct {
    uint64_t count, cd_size, cd_offset;
} cd_info;

/* The last EOCD signature whose comment reaches exactly to the end of the image. */
static clara_status find_eocd(const zip_archive *z, size_t *pos) {
    if (z->len < EOCD_SIZE)
        return clara_fail(CLARA_ERR_FORMAT, "%s: %zu bytes is too short for a ZIP archive", z->name,
                          z->len);
    size_t lo = z->len - EOCD_SIZE > 0xffff ? z->len - EOCD_SIZE - 0xffff : 0;
    for (size_t p = z->len - EOCD_SIZE + 1; p-- > lo;) {
        if (rd32(z->data + p) == SIG_EOCD && p + EOCD_SIZE + rd16(z->data + p + 20) == z->len) {
            *pos = p;
            return CLARA_OK;
        }
    }
    return clara_fail(CLARA_ERR_FORMAT,
                      "%s: no ZIP end of central directory record (not a ZIP archive or truncated)",
                      z->name);
}

static clara_status read_eocd64(const zip_archive *z, size_t eocd, cd_info *cd) {
    const uint8_t *loc = z->data + eocd - LOCATOR_SIZE;
    uint64_t off = rd64(loc + 8);
    if (rd32(loc + 4) != 0 || rd32(loc + 16) > 1)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: multi-disk ZIP archives are not supported",
                          z->name);
    if (off > eocd - LOCATOR_SIZE || eocd - LOCATOR_SIZE - off < EOCD64_SIZE)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: ZIP64 end of central directory offset %llu is "
                          "out of range",
                          z->name, (unsigned long long)off);
    const uint8_t *r = z->data + off;
    if (rd32(r) != SIG_EOCD64)
        return clara_fail(CLARA_ERR_FORMAT, "%s: bad ZIP64 end of central directory signature",
                          z->name);
    if (rd32(r + 16) != 0 || rd32(r + 20) != 0 || rd64(r + 24) != rd64(r + 32))
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: multi-disk ZIP archives are not supported",
                          z->name);
    cd->count = rd64(r + 32);
    cd->cd_size = rd64(r + 40);
    cd->cd_offset = rd64(r + 48);
    /* the central directory must end where the ZIP64 record starts */
    if (cd->cd_offset > off || cd->cd_size != off - cd->cd_offset)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: central directory does not end at the ZIP64 "
                          "end record",
                          z->name);
    return CLARA_OK;
}

static clara_status read_cd_info(const zip_archive *z, cd_info *cd) {
    size_t eocd = 0;
    clara_status s = find_eocd(z, &eocd);
    if (s != CLARA_OK) return s;
    const uint8_t *e = z->data + eocd;
    if (eocd >= LOCATOR_SIZE && rd32(e - LOCATOR_SIZE) == SIG_LOCATOR)
        return read_eocd64(z, eocd, cd);
    if (rd16(e + 4) != 0 || rd16(e + 6) != 0 || rd16(e + 8) != rd16(e + 10))
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: multi-disk ZIP archives are not supported",
                          z->name);
    cd->count = rd16(e + 10);
    cd->cd_size = rd32(e + 12);
    cd->cd_offset = rd32(e + 16);
    if (cd->cd_offset > eocd || cd->cd_size != eocd - cd->cd_offset)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: central directory (offset %llu, %llu bytes) does not end at the "
                          "end record (offset %zu)",
                          z->name, (unsigned long long)cd->cd_offset,
                          (unsigned long long)cd->cd_size, eocd);
    return CLARA_OK;
}

/* Applies the ZIP64 extended information extra field (id 1): each 32-bit field that is
 * 0xFFFFFFFF is replaced, in order usize, csize, offset, by the next 64-bit value. */
static clara_status apply_zip64_extra(const zip_archive *z, const char *ename, const uint8_t *x,
                                      size_t xlen, uint64_t *usize, uint64_t *csize,
                                      uint64_t *off) {
    uint64_t *fields[3] = {usize, csize, off};
    while (xlen >= 4) {
        uint16_t id = rd16(x), sz = rd16(x + 2);
        if (sz > xlen - 4) break; /* tolerate junk padding after the last well-formed field */
        if (id == 0x0001) {
            const uint8_t *p = x + 4;
            size_t left = sz;
            for (int i = 0; i < 3; i++) {
                if (*fields[i] != 0xffffffffu) continue;
                if (left < 8)
                    return clara_fail(CLARA_ERR_FORMAT, "%s: entry '%s': short ZIP64 extra field",
                                      z->name, ename);
                *fields[i] = rd64(p);
                p += 8;
                left -= 8;
            }
            return CLARA_OK;
        }
        x += 4 + sz;
        xlen -= 4 + sz;
    }
    return CLARA_OK;
}

/* Reads the local header of `e` (at e->header_offset) to find where its data starts. */
static clara_status read_local(const zip_archive *z, zip_entry *e, size_t name_len) {
    uint64_t h = e->header_offset, end;
    if (h > z->len || z->len - h < LFH_SIZE || rd32(z->data + h) != SIG_LOCAL)
        return clara_fail(CLARA_ERR_FORMAT, "%s: entry '%s': bad local header at offset %llu",
                          z->name, e->name, (unsigned long long)h);
    const uint8_t *l = z->data + h;
    uint64_t data = h + LFH_SIZE + rd16(l + 26) + rd16(l + 28); /* name and extra lengths */
    if (rd16(l + 26) != name_len || data > z->len || memcmp(l + LFH_SIZE, e->name, name_len) != 0)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: entry '%s': local header does not match the central directory",
                          z->name, e->name);
    if (!clara_add_u64(data, e->size, &end) || end > z->len)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: entry '%s': %llu bytes of data at offset %llu run past the end of "
                          "the file (%zu bytes)",
                          z->name, e->name, (unsigned long long)e->size, (unsigned long long)data,
                          z->len);
    e->data_offset = data;
    e->data = z->data + data;
    return CLARA_OK;
}

/* Parses one central directory header at *pos (advanced past it). */
static clara_status read_central(zip_archive *z, const cd_info *cd, uint64_t *pos, zip_entry *e) {
    uint64_t cd_end = cd->cd_offset + cd->cd_size, p = *pos;
    if (cd_end - p < CDH_SIZE || rd32(z->data + p) != SIG_CENTRAL)
        return clara_fail(CLARA_ERR_FORMAT, "%s: bad central directory entry at offset %llu",
                          z->name, (unsigned long long)p);
    const uint8_t *c = z->data + p;
    size_t nlen = rd16(c + 28), xlen = rd16(c + 30), clen = rd16(c + 32);
    if (cd_end - p - CDH_SIZE < (uint64_t)nlen + xlen + clen)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: central directory entry at offset %llu is "
                          "truncated",
                          z->name, (unsigned long long)p);
    char *nm = malloc(nlen + 1);
    if (!nm) return clara_fail(CLARA_ERR_NOMEM, "%s: out of memory", z->name);
    memcpy(nm, c + CDH_SIZE, nlen);
    nm[nlen] = '\0';
    e->name = nm;
    if (memchr(nm, '\0', nlen))
        return clara_fail(CLARA_ERR_FORMAT, "%s: entry name contains a NUL byte", z->name);
    e->flags = rd16(c + 8);
    uint16_t method = rd16(c + 10);
    e->crc32 = rd32(c + 16);
    uint64_t csize = rd32(c + 20), usize = rd32(c + 24), off = rd32(c + 42);
    clara_status s = apply_zip64_extra(z, nm, c + CDH_SIZE + nlen, xlen, &usize, &csize, &off);
    if (s != CLARA_OK) return s;
    if (e->flags & 0x41) /* bit 0: encrypted, bit 6: strong encryption */
        return clara_fail(CLARA_ERR_UNSUPPORTED, "%s: entry '%s' is encrypted", z->name, nm);
    if (method != 0)
        return clara_fail(CLARA_ERR_UNSUPPORTED,
                          "%s: entry '%s' is compressed (method %u); only stored entries are "
                          "supported",
                          z->name, nm, method);
    if (csize != usize)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: entry '%s' is stored but its sizes differ "
                          "(%llu vs %llu)",
                          z->name, nm, (unsigned long long)csize, (unsigned long long)usize);
    e->size = usize;
    e->header_offset = off;
    *pos = p + CDH_SIZE + nlen + xlen + clen;
    return read_local(z, e, nlen);
}

static int cmp_entry_offset(const void *a, const void *b) {
    const zip_entry *x = *(zip_entry *const *)a, *y = *(zip_entry *const *)b;
    return x->header_offset < y->header_offset ? -1 : x->header_offset > y->header_offset;
}

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp((*(zip_entry *const *)a)->name, (*(zip_entry *const *)b)->name);
}

/* Entries (local header through data) must not overlap each other or the central directory;
 * names must be unique. Leaves z->sorted ordered by name. */
static clara_status check_entries(zip_archive *z, const cd_info *cd) {
    for (size_t i = 0; i < z->n; i++) z->sorted[i] = &z->entries[i];
    qsort(z->sorted, z->n, sizeof *z->sorted, cmp_entry_offset);
    for (size_t i = 0; i < z->n; i++) {
        const zip_entry *e = z->sorted[i];
        uint64_t end = e->data_offset + e->size; /* checked in read_local */
        uint64_t next = i + 1 < z->n ? z->sorted[i + 1]->header_offset : cd->cd_offset;
        if (end > next)
            return clara_fail(CLARA_ERR_FORMAT, "%s: entry '%s' overlaps %s", z->name, e->name,
                              i + 1 < z->n ? "the next entry" : "the central directory");
    }
    qsort(z->sorted, z->n, sizeof *z->sorted, cmp_entry_name);
    for (size_t i = 1; i < z->n; i++)
        if (strcmp(z->sorted[i - 1]->name, z->sorted[i]->name) == 0)
            return clara_fail(CLARA_ERR_FORMAT, "%s: duplicate entry '%s'", z->name,
                              z->sorted[i]->name);
    return CLARA_OK;
}

static clara_status parse_all(zip_archive *z) {
    cd_info cd = {0};
    clara_status s = read_cd_info(z, &cd);
    if (s != CLARA_OK) return s;
    /* every entry needs a 46-byte central header and a 30-byte local header */
    if (cd.count > ZIP_MAX_ENTRIES || cd.count > cd.cd_size / CDH_SIZE ||
        cd.count > z->len / (CDH_SIZE + LFH_SIZE))
        return clara_fail(CLARA_ERR_FORMAT, "%s: implausible entry count %llu", z->name,
                          (unsigned long long)cd.count);
    z->entries = calloc(cd.count ? cd.count : 1, sizeof *z->entries);
    z->sorted = calloc(cd.count ? cd.count : 1, sizeof *z->sorted);
    if (!z->entries || !z->sorted) return clara_fail(CLARA_ERR_NOMEM, "%s: out of memory", z->name);
    uint64_t pos = cd.cd_offset;
    for (; z->n < cd.count; z->n++) {
        s = read_central(z, &cd, &pos, &z->entries[z->n]);
        if (s != CLARA_OK) {
            z->n++; /* so zip_free releases the name just allocated */
            return s;
        }
    }
    if (pos != cd.cd_offset + cd.cd_size)
        return clara_fail(CLARA_ERR_FORMAT, "%s: central directory has %llu unused bytes", z->name,
                          (unsigned long long)(cd.cd_offset + cd.cd_size - pos));
    return check_entries(z, &cd);
}

clara_status zip_parse(const uint8_t *data, size_t len, const char *name, zip_archive **out) {
    *out = NULL;
    zip_archive *z = calloc(1, sizeof *z);
    if (!z || !(z->name = strdup(name ? name : "zip"))) {
        free(z);
        return clara_fail(CLARA_ERR_NOMEM, "%s: out of memory", name ? name : "zip");
    }
    z->data = data;
    z->len = len;
    clara_status s = parse_all(z);
    if (s != CLARA_OK) {
        zip_free(z);
        return s;
    }
    *out = z;
    return CLARA_OK;
}

void zip_free(zip_archive *z) {
    if (!z) return;
    for (size_t i = 0; i < z->n; i++) free((char *)z->entries[i].name);
    free(z->entries);
    free(z->sorted);
    free(z->name);
    free(z);
}

size_t zip_n_entries(const zip_archive *z) {
    return z->n;
}

const zip_entry *zip_entry_at(const zip_archive *z, size_t i) {
    return i < z->n ? &z->entries[i] : NULL;
}

const zip_entry *zip_find(const zip_archive *z, const char *name) {
    size_t lo = 0, hi = z->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, z->sorted[mid]->name);
        if (c == 0) return z->sorted[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

clara_status zip_entry_check_crc(const zip_archive *z, const zip_entry *e) {
    uint32_t crc = zip_crc32(0, e->data, (size_t)e->size);
    if (crc != e->crc32)
        return clara_fail(CLARA_ERR_FORMAT,
                          "%s: entry '%s': CRC-32 mismatch (recorded %08x, computed %08x)", z->name,
                          e->name, e->crc32, crc);
    return CLARA_OK;
}
