/* t_vk.h - what the Vulkan unit tests share: opening the device they test on (any Vulkan device
 * the machine has; CI: lavapipe). No device is a failure, never a skip. */
#ifndef CLARA_TEST_T_VK_H
#define CLARA_TEST_T_VK_H

#include <stdio.h>

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

#endif
