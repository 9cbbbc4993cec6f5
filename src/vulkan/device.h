/* device.h - the Vulkan device layer: finding and choosing a compute device, buffers on it
 * (create, upload, download), compute pipelines from the SPIR-V embedded at build time, and
 * dispatches submitted one at a time or recorded into a batch (one command buffer, one submit and
 * wait). Every Vulkan failure becomes a clara_status with a one-line message naming the step and
 * the VkResult (clara_fail); a lost device is remembered, and every later call on it fails at once
 * with the same message. A clvk_dev is used by one thread at a time. */
#ifndef CLARA_VULKAN_DEVICE_H
#define CLARA_VULKAN_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clara.h"

#define CLVK_MAX_DEVICES 16

/* What a physical device is, for choosing and for reports. */
typedef struct {
    uint32_t index; /* in the loader's enumeration order: CLARA_VK_DEVICE=index picks it */
    char name[256];
    char type[16];      /* "discrete", "integrated", "virtual", "cpu" or "other" */
    uint64_t mem_bytes; /* the largest device-local memory heap */
    uint32_t vendor_id, api_version;
    bool has_compute; /* a queue family with compute */
} clvk_device_desc;

/* Every Vulkan device the loader finds, at most cap of them (*n: how many were written). No
 * driver or no device is not an error: *n = 0 (clara_last_error then says why). No Vulkan loader
 * (libvulkan.so.1, opened at run time: loader.h) is CLARA_ERR_NOT_FOUND, "the Vulkan loader
 * (libvulkan.so.1) was not found ...: install the package libvulkan1 ..."; other errors only for
 * failures of the Vulkan calls themselves. */
clara_status clvk_enumerate(clvk_device_desc *out, uint32_t cap, uint32_t *n);

typedef enum {
    CLVK_PICK_GPU, /* `auto`: the best GPU (discrete, then integrated, then virtual); never a CPU
                      device such as lavapipe */
    CLVK_PICK_ANY, /* `vulkan`: the best device, a CPU device included when it is the only one */
} clvk_pick;

typedef struct clvk_dev clvk_dev;

/* Opens the device the rule picks, or the one CLARA_VK_DEVICE=N names (any type; an index that is
 * not there is CLARA_ERR_INVALID_ARG). No suitable device, no driver or no Vulkan loader:
 * CLARA_ERR_NOT_FOUND saying what was found or what to install. */
clara_status clvk_open(clvk_pick pick, clvk_dev **out);
void clvk_close(clvk_dev *d);
const clvk_device_desc *clvk_desc(const clvk_dev *d);

/* For tests: treat device memory as not mappable, so uploads and downloads go through a staging
 * buffer and a copy on the queue, as on a discrete GPU. Affects buffers created afterwards. */
void clvk_force_staging(clvk_dev *d, bool on);
/* For tests: marks the device lost, as a VK_ERROR_DEVICE_LOST from the driver does. */
void clvk_mark_lost(clvk_dev *d);

typedef struct clvk_buf clvk_buf;

/* A storage buffer of `bytes` (> 0) on the device. Out of device memory: CLARA_ERR_NOMEM. */
clara_status clvk_buf_create(clvk_dev *d, size_t bytes, clvk_buf **out);
void clvk_buf_free(clvk_dev *d, clvk_buf *b);
size_t clvk_buf_size(const clvk_buf *b);
/* Copies len bytes from src to the buffer at off / from the buffer at off to dst; the range must
 * lie inside the buffer (CLARA_ERR_INVALID_ARG otherwise). Waits until the copy is done. With a
 * batch open, the dispatches recorded so far are submitted and waited for first (so a download
 * sees their writes and an upload cannot change what they read); likewise clvk_buf_free. */
clara_status clvk_upload(clvk_dev *d, clvk_buf *b, size_t off, const void *src, size_t len);
clara_status clvk_download(clvk_dev *d, const clvk_buf *b, size_t off, void *dst, size_t len);

/* The compute kernels, one per shader in src/vulkan/shaders/. */
typedef enum {
    CLVK_K_MATMUL,
    CLVK_K_RMSNORM,
    CLVK_K_SWIGLU,
    CLVK_K_ROPE,
    CLVK_K_ATTENTION, /* attention.comp (ops_layer.h) */
    CLVK_K_ROWS,      /* rows.comp (ops_layer.h) */
    CLVK_K_COUNT
} clvk_kernel;

/* Runs kernel k (its pipeline specialized with spec, made on first use and kept) over bufs
 * (bindings 0..n_bufs-1, the number the shader declares) with the push constants, as gx x gy
 * workgroups (each at most 65535), and waits for it to finish. With a batch open it records the
 * dispatch (after a barrier making the previous dispatch's writes visible to it) and returns at
 * once. */
clara_status clvk_dispatch(clvk_dev *d, clvk_kernel k, uint32_t spec, clvk_buf *const *bufs,
                           uint32_t n_bufs, const void *push, uint32_t push_size, uint32_t gx,
                           uint32_t gy);

/* Batches: between clvk_batch_begin and clvk_batch_end, clvk_dispatch records into one command
 * buffer, in order, each dispatch seeing every earlier one's writes; clvk_batch_end (and
 * clvk_batch_flush, which keeps the batch open) submits what was recorded once and waits. A batch
 * that reaches CLVK_BATCH_MAX dispatches (one descriptor set each) is submitted and waited for
 * transparently, and recording goes on. A failure names the batch ("a batch of 23 dispatches (2
 * rmsnorm, 12 matmul, ...)"); a lost device fails the end at once with the lost message and drops
 * what was recorded. Batches do not nest. clvk_batch_discard drops the unsubmitted dispatches
 * (after a failure: they are not run) and closes the batch. */
#define CLVK_BATCH_MAX 256
clara_status clvk_batch_begin(clvk_dev *d);
clara_status clvk_batch_flush(clvk_dev *d);
clara_status clvk_batch_end(clvk_dev *d);
void clvk_batch_discard(clvk_dev *d);
/* For tests and measurements: off makes clvk_batch_begin open nothing, so every dispatch is
 * submitted alone (as before batches existed). On by default. */
void clvk_set_batching(clvk_dev *d, bool on);
/* Queue submissions (each one a submit and a wait) and dispatches since the device was opened. */
uint64_t clvk_submits(const clvk_dev *d);
uint64_t clvk_dispatches(const clvk_dev *d);

#endif
