/* t_vk.h - what the Vulkan unit tests share: opening the device they test on (any Vulkan device
 * the machine has; CI: lavapipe; no device is a failure, never a skip) and making buffers on it. */
#ifndef CLARA_TEST_T_VK_H
#define CLARA_TEST_T_VK_H

#include <stdio.h>

#include "t.h"
#include "vulkan/device.h"

/* The device (CLVK_PICK_ANY), its name printed; NULL with the reason on stderr. */
static inline clvk_dev *t_vk_open(void) {
    clvk_dev *d = NULL;
    if (clvk_open(CLVK_PICK_ANY, &d) != CLARA_OK) {
        fprintf(stderr, "FAIL: no Vulkan device to test on: %s\n", clara_last_error());
        return NULL;
    }
    printf("testing on %s (%s)\n", clvk_desc(d)->name, clvk_desc(d)->type);
    return d;
}

/* A device buffer of `bytes` holding a copy of host (left as created when host is NULL); NULL
 * on failure, reported as a failed check. */
static inline clvk_buf *t_vk_buf(clvk_dev *d, const void *host, size_t bytes) {
    clvk_buf *b = NULL;
    if (clvk_buf_create(d, bytes, &b) != CLARA_OK ||
        (host && clvk_upload(d, b, 0, host, bytes) != CLARA_OK)) {
        T_CHECK_MSG(0, "buffer of %zu bytes: %s", bytes, clara_last_error());
        clvk_buf_free(d, b);
        return NULL;
    }
    return b;
}

/* The same for n floats. */
static inline clvk_buf *t_vk_floats(clvk_dev *d, const float *host, size_t n) {
    return t_vk_buf(d, host, n * sizeof(float));
}

#endif
