/* loader.c - the Vulkan loader opened with dlopen and the function tables filled from it
 * (loader.h). The library is opened once per process and never closed, as a linked library would
 * stay; a failure is remembered as its message, and every later call fails with it. */
#include "vulkan/loader.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static PFN_vkGetInstanceProcAddr g_gipa;
static char g_why[768]; /* why the loader could not be used ("" once it could) */

/* dlerror's text as one line (messages are one line by contract). */
static void last_dl_error(char *out, size_t cap) {
    const char *e = dlerror();
    snprintf(out, cap, "%s", e ? e : "unknown error");
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
}

static void load_once(void) {
    const char *env = getenv("CLARA_VK_LOADER");
    const char *names[2] = {"libvulkan.so.1", "libvulkan.so"};
    char err[512] = "";
    void *h = NULL;
    const char *which = NULL;
    if (env && *env) {
        which = env;
        if (!(h = dlopen(env, RTLD_NOW | RTLD_LOCAL))) {
            char e[400];
            last_dl_error(e, sizeof e);
            snprintf(err, sizeof err, "CLARA_VK_LOADER=%s: %s", env, e);
        }
    } else {
        for (int i = 0; i < 2 && !h; i++)
            if ((h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL)))
                which = names[i];
            else if (i == 0) /* the first name's error is the one that says most */
                last_dl_error(err, sizeof err);
    }
    if (!h) {
        snprintf(g_why, sizeof g_why,
                 "vulkan: the Vulkan loader (libvulkan.so.1) was not found (%s): install the "
                 "package libvulkan1 (Debian, Ubuntu; vulkan-loader elsewhere) and a Vulkan driver "
                 "to use a GPU; the CPU works without them",
                 err);
        return;
    }
    void *sym = dlsym(h, "vkGetInstanceProcAddr");
    if (!sym) {
        snprintf(g_why, sizeof g_why,
                 "vulkan: %s is not a Vulkan loader (it has no vkGetInstanceProcAddr)", which);
        dlclose(h);
        return;
    }
    memcpy(&g_gipa, &sym, sizeof g_gipa); /* POSIX: an object pointer that holds a function */
    g_why[0] = '\0';
}

/* Looks up vkNAME through get(owner, "vkNAME") into f->NAME; a missing function is an error. The
 * statement ends with its own semicolon, so the X lists expand to a sequence of them. */
#define LOOKUP(get, owner, name)                                                                   \
    do {                                                                                           \
        if (!(f->name = (PFN_vk##name)get(owner, "vk" #name))) return missing("vk" #name);         \
    } while (0);

static clara_status missing(const char *fn) {
    return clara_fail(CLARA_ERR_UNSUPPORTED,
                      "vulkan: the Vulkan loader or driver has no %s (Vulkan 1.1 is needed)", fn);
}

clara_status clvk_load_global(clvk_fns *f) {
    memset(f, 0, sizeof *f);
    if (pthread_once(&g_once, load_once) != 0)
        return clara_fail(CLARA_ERR_IO, "vulkan: loading the Vulkan loader failed");
    if (!g_gipa) return clara_fail(CLARA_ERR_NOT_FOUND, "%s", g_why);
    f->GetInstanceProcAddr = g_gipa;
#define X(name) LOOKUP(f->GetInstanceProcAddr, NULL, name)
    CLVK_GLOBAL_FNS(X)
#undef X
    return CLARA_OK;
}

clara_status clvk_load_instance(clvk_fns *f, VkInstance inst) {
#define X(name) LOOKUP(f->GetInstanceProcAddr, inst, name)
    CLVK_INSTANCE_FNS(X)
#undef X
    return CLARA_OK;
}

clara_status clvk_load_device(clvk_fns *f, VkDevice dev) {
#define X(name) LOOKUP(f->GetDeviceProcAddr, dev, name)
    CLVK_DEVICE_FNS(X)
#undef X
    return CLARA_OK;
}
