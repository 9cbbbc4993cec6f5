/* pth.h - torch-free reader for PyTorch `.pth` checkpoints written by torch.save (zip container,
 * spec §2.6): a ZIP of stored entries under one top-level directory with <dir>/data.pkl (a
 * pickled dict, possibly nested, of tensors), <dir>/data/<key> (raw little-endian storage bytes)
 * and <dir>/byteorder ("little"). The pickle is interpreted by the allow-list VM in
 * torch_pickle.h; every tensor is bounds-checked against its storage entry. */
#ifndef CLARA_CONVERT_PTH_H
#define CLARA_CONVERT_PTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clara.h"
#include "convert/safetensors.h" /* st_dtype */

#define PTH_MAX_DEPTH    64   /* nested dicts */
#define PTH_MAX_NAME_LEN 4096 /* bytes of a joined tensor name */

typedef struct {
    const char *name; /* dict key path joined with '/', e.g. "encoder_adapter/model.x.weight" */
    st_dtype dtype;
    int type; /* clara_type, or -1 (BOOL, U8) */
    uint32_t n_dims;
    uint64_t shape[ST_MAX_DIMS];
    uint64_t stride[ST_MAX_DIMS]; /* in elements */
    uint64_t storage_offset;      /* in elements */
    uint64_t numel;
    uint64_t nbytes;         /* numel * element size (the size of a row-major copy) */
    const uint8_t *data;     /* element 0 (storage start + offset); little-endian */
    bool contiguous;         /* row-major dense: data[0, nbytes) is the tensor */
    const char *storage_key; /* "<key>" of <dir>/data/<key> */
} pth_tensor;

typedef struct pth_file pth_file;

/* Parses a .pth image in memory (not copied; must outlive the pth_file). `name` prefixes error
 * messages. The root must be a dict; nested dicts/OrderedDicts name their tensors by key path;
 * other leaves (ints, strings, lists, ...) are skipped and counted. */
clara_status pth_parse(const uint8_t *data, size_t len, const char *name, pth_file **out);
/* Maps and parses a file; the map is released by pth_free. */
clara_status pth_open(const char *path, pth_file **out);
void pth_free(pth_file *f);

/* Tensors in pickle (dict insertion) order. */
size_t pth_n_tensors(const pth_file *f);
const pth_tensor *pth_tensor_at(const pth_file *f, size_t i);
const pth_tensor *pth_find(const pth_file *f, const char *name);
/* Non-tensor, non-dict values that were skipped. */
size_t pth_n_skipped(const pth_file *f);
/* The archive's top-level directory name ("archive" for recent torch). */
const char *pth_archive_dir(const pth_file *f);
/* Verifies the CRC-32 of every entry of the archive (reads all the data). */
clara_status pth_check_crc(const pth_file *f);

/* Copies the tensor row-major (densely) into dst; dst_size must be at least t->nbytes. */
clara_status pth_tensor_copy(const pth_tensor *t, void *dst, size_t dst_size);

#endif
