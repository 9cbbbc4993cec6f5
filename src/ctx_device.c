/* ctx_device.c - where a context's layers run (clara.h: clara_ctx_params.backend, gpu_layers):
 * the choice of backend when the context is made, its report (clara_ctx_backend), and the names
 * of the backends. The Vulkan side is in src/vulkan/engine.h; a build without it runs on the CPU
 * and refuses `vulkan` with a message saying so. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "base/status.h"
#include "ctx.h"
#ifdef CLARA_HAVE_VULKAN
#include "vulkan/engine.h"
#endif

#ifdef CLARA_HAVE_VULKAN
/* The devices choice b may take: any Vulkan device for vulkan, else (auto, gpu) a GPU only. */
static clvk_pick pick_of(clara_backend_choice b) {
    return b == CLARA_BACKEND_VULKAN ? CLVK_PICK_ANY : CLVK_PICK_GPU;
}
#endif

#define NO_VULKAN                                                                                  \
    "the Vulkan backend was asked for, but this binary was built without it (it needs "            \
    "libvulkan-dev and glslc at build time; docs/VULKAN.md)"

clara_status clara_backend_parse(const char *name, clara_backend_choice *out) {
    static const struct {
        const char *name;
        clara_backend_choice c;
    } names[] = {{"auto", CLARA_BACKEND_AUTO},     {"cpu", CLARA_BACKEND_CPU},
                 {"vulkan", CLARA_BACKEND_VULKAN}, {"cuda", CLARA_BACKEND_GPU},
                 {"mps", CLARA_BACKEND_GPU},       {"gpu", CLARA_BACKEND_GPU}};
    for (size_t i = 0; name && i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(name, names[i].name) == 0) {
            *out = names[i].c;
            return CLARA_OK;
        }
    return clara_fail(
        CLARA_ERR_INVALID_ARG,
        "unknown backend '%s' (auto, cpu, vulkan; cuda, mps and gpu mean a GPU, which is "
        "driven through Vulkan)",
        name ? name : "");
}

clara_status clara_backend_probe(clara_backend_choice b, char *device, size_t cap) {
    if (cap) device[0] = '\0';
    if (b == CLARA_BACKEND_CPU) return CLARA_OK;
#ifndef CLARA_HAVE_VULKAN
    if (b != CLARA_BACKEND_AUTO) return clara_fail(CLARA_ERR_UNSUPPORTED, "%s", NO_VULKAN);
    return CLARA_OK;
#else
    clvk_dev *d = NULL;
    clara_status st = clvk_open(pick_of(b), &d);
    if (st == CLARA_OK) {
        if (cap) snprintf(device, cap, "%s (%s device)", clvk_desc(d)->name, clvk_desc(d)->type);
        clvk_close(d);
    }
    return b == CLARA_BACKEND_AUTO ? CLARA_OK : st;
#endif
}

static void note(clara_ctx *ctx, const char *fmt, const char *arg) {
    snprintf(ctx->backend_note, sizeof ctx->backend_note, fmt, arg);
}

clara_status clara_ctx_device_init(clara_ctx *ctx, const clara_ctx_params *p) {
    clara_backend_choice b = p ? p->backend : CLARA_BACKEND_AUTO;
    int layers = p ? p->gpu_layers : -1;
    if (b == CLARA_BACKEND_CPU) return CLARA_OK;
    if (layers == 0) {
        note(ctx, "%s", "gpu_layers 0: every layer on the CPU");
        return CLARA_OK;
    }
#ifndef CLARA_HAVE_VULKAN
    if (b != CLARA_BACKEND_AUTO) return clara_fail(CLARA_ERR_UNSUPPORTED, "%s", NO_VULKAN);
    note(ctx, "%s", "built without the Vulkan backend");
    return CLARA_OK;
#else
    clvk_engine *e = NULL;
    clara_status st = clvk_engine_create(ctx->m, pick_of(b), layers, &e);
    if (st == CLARA_OK) {
        ctx->vk = e;
        return CLARA_OK;
    }
    /* auto: no GPU (or none usable) is the CPU, said once; an explicit layer count that does
     * not fit stays an error */
    if (b == CLARA_BACKEND_AUTO && !(layers > 0 && st == CLARA_ERR_NOMEM)) {
        note(ctx, "no Vulkan GPU used: %s", clara_last_error());
        CLARA_LOGI("%s; running on the CPU", ctx->backend_note);
        return CLARA_OK;
    }
    return st;
#endif
}

void clara_ctx_device_free(clara_ctx *ctx) {
#ifdef CLARA_HAVE_VULKAN
    clvk_engine_free(ctx->vk);
#endif
    ctx->vk = NULL;
}

void clara_ctx_backend(const clara_ctx *ctx, clara_ctx_backend_info *out) {
    memset(out, 0, sizeof *out);
    snprintf(out->backend, sizeof out->backend, "cpu");
    out->n_layer = ctx->m->hp.n_layer;
    snprintf(out->note, sizeof out->note, "%s", ctx->backend_note);
    out->cpu_repacked = clara_model_repacked_bytes(ctx->m);
#ifdef CLARA_HAVE_VULKAN
    if (!ctx->vk) return;
    clvk_engine_info i;
    clvk_engine_describe(ctx->vk, &i);
    snprintf(out->backend, sizeof out->backend, "vulkan");
    snprintf(out->device, sizeof out->device, "%s", i.desc.name);
    snprintf(out->device_type, sizeof out->device_type, "%s", i.desc.type);
    out->device_memory = i.desc.mem_bytes;
    out->gpu_layers = i.n_layers;
    out->bytes_used = i.bytes;
#endif
}
