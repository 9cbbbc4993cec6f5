/* device.c - the Vulkan device layer (device.h): instance, device enumeration and choice, one
 * compute queue, buffers with upload/download (mapped where the memory allows, else through a
 * staging buffer), pipelines from the embedded SPIR-V, dispatches recorded into one command buffer
 * (alone, or a batch of them with barriers between), and submit-and-wait with clear errors. Every
 * Vulkan call goes through a function table (loader.h): libvulkan is loaded at run time. */
#include "vulkan/device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/status.h"
#include "vulkan/loader.h"

/* The shaders' SPIR-V, embedded by the Makefile (build/gen/vk_shaders.c). */
extern const unsigned char vk_spv_matmul[], vk_spv_rmsnorm[], vk_spv_swiglu[], vk_spv_rope[];
extern const size_t vk_spv_matmul_len, vk_spv_rmsnorm_len, vk_spv_swiglu_len, vk_spv_rope_len;
extern const unsigned char vk_spv_attention[], vk_spv_rows[];
extern const size_t vk_spv_attention_len, vk_spv_rows_len;

#define MAX_BINDINGS  5
#define MAX_PIPELINES 32
#define MAX_PUSH      64 /* Vulkan guarantees 128 */
/* A dispatch that has not finished after this long is reported, not waited on for ever. */
#define FENCE_TIMEOUT_NS (300ull * 1000 * 1000 * 1000)

static const struct {
    const unsigned char *spv;
    const size_t *len;
    uint32_t n_bindings;
    const char *name;
} kernels[CLVK_K_COUNT] = {
    [CLVK_K_MATMUL] = {vk_spv_matmul, &vk_spv_matmul_len, 3, "matmul"},
    [CLVK_K_RMSNORM] = {vk_spv_rmsnorm, &vk_spv_rmsnorm_len, 3, "rmsnorm"},
    [CLVK_K_SWIGLU] = {vk_spv_swiglu, &vk_spv_swiglu_len, 2, "swiglu"},
    [CLVK_K_ROPE] = {vk_spv_rope, &vk_spv_rope_len, 2, "rope"},
    [CLVK_K_ATTENTION] = {vk_spv_attention, &vk_spv_attention_len, 5, "attention"},
    [CLVK_K_ROWS] = {vk_spv_rows, &vk_spv_rows_len, 2, "rows"},
};

typedef struct {
    clvk_kernel k;
    uint32_t spec;
    VkPipeline pipe;
} pipeline_entry;

struct clvk_dev {
    clvk_fns vk; /* this instance's and device's Vulkan functions */
    VkInstance inst;
    VkPhysicalDevice phys;
    VkDevice dev;
    VkQueue queue;
    uint32_t queue_family;
    VkPhysicalDeviceMemoryProperties mem;
    VkCommandPool cmd_pool;
    VkCommandBuffer cmd;
    VkFence fence;
    VkDescriptorPool desc_pool;
    VkDescriptorSetLayout set_layout[MAX_BINDINGS + 1]; /* by binding count */
    VkPipelineLayout pipe_layout[MAX_BINDINGS + 1];
    pipeline_entry pipes[MAX_PIPELINES];
    uint32_t n_pipes;
    clvk_device_desc desc;
    bool force_staging, lost;
    /* the command buffer's recorded, unsubmitted dispatches (one descriptor set each, from
     * desc_pool, which is reset when they are submitted), by kernel for messages */
    bool batch_open, batching_off;
    uint32_t n_rec, rec_by_kernel[CLVK_K_COUNT];
    uint64_t submits, dispatches;
    /* a failed submit of a batch that the caller could not be told of (clvk_buf_free): the next
     * clvk_batch_flush/end reports it */
    clara_status held;
    char held_msg[256];
};

struct clvk_buf {
    VkBuffer buf;
    VkDeviceMemory mem;
    void *map; /* NULL: not host visible (or staging forced) */
    size_t size;
};

static const char *result_name(VkResult r) {
    switch (r) {
    case VK_SUCCESS:
        return "VK_SUCCESS";
    case VK_TIMEOUT:
        return "VK_TIMEOUT";
    case VK_ERROR_OUT_OF_HOST_MEMORY:
        return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
        return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED:
        return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST:
        return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED:
        return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT:
        return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT:
        return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT:
        return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER:
        return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS:
        return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_OUT_OF_POOL_MEMORY:
        return "VK_ERROR_OUT_OF_POOL_MEMORY";
    case VK_ERROR_INVALID_SHADER_NV:
        return "VK_ERROR_INVALID_SHADER_NV";
    default:
        return "an unknown VkResult";
    }
}

static const char *lost_msg = "the Vulkan device was lost (VK_ERROR_DEVICE_LOST: a driver reset, "
                              "a hang or a crash); it cannot be used again";

/* Turns a failed VkResult of step `what` into a clara_status with a message; marks d lost. */
static clara_status vk_fail(clvk_dev *d, VkResult r, const char *what) {
    if (r == VK_ERROR_DEVICE_LOST) {
        if (d) d->lost = true;
        return clara_fail(CLARA_ERR_IO, "vulkan: %s: %s", what, lost_msg);
    }
    clara_status st = CLARA_ERR_IO;
    if (r == VK_ERROR_OUT_OF_HOST_MEMORY || r == VK_ERROR_OUT_OF_DEVICE_MEMORY ||
        r == VK_ERROR_OUT_OF_POOL_MEMORY || r == VK_ERROR_TOO_MANY_OBJECTS)
        st = CLARA_ERR_NOMEM;
    else if (r == VK_ERROR_INCOMPATIBLE_DRIVER || r == VK_ERROR_FEATURE_NOT_PRESENT ||
             r == VK_ERROR_EXTENSION_NOT_PRESENT)
        st = CLARA_ERR_UNSUPPORTED;
    return clara_fail(st, "vulkan: %s failed: %s (%d)", what, result_name(r), (int)r);
}

#define VK_TRY(d, call, what)                                                                      \
    do {                                                                                           \
        VkResult r_ = (call);                                                                      \
        if (r_ != VK_SUCCESS) return vk_fail((d), r_, (what));                                     \
    } while (0)

static clara_status check_lost(const clvk_dev *d) {
    return d->lost ? clara_fail(CLARA_ERR_IO, "vulkan: %s", lost_msg) : CLARA_OK;
}

/* Loads the loader's global functions into vk, creates the instance, then loads its functions. */
static clara_status instance_create(clvk_fns *vk, VkInstance *out) {
    clara_status st = clvk_load_global(vk);
    if (st != CLARA_OK) return st;
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .pApplicationName = "clara",
                             .pEngineName = "clara",
                             .apiVersion = VK_API_VERSION_1_1};
    VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                               .pApplicationInfo = &app};
    VkResult r = vk->CreateInstance(&ci, NULL, out);
    if (r == VK_ERROR_INCOMPATIBLE_DRIVER)
        return clara_fail(CLARA_ERR_NOT_FOUND, "vulkan: no Vulkan driver is installed (%s)",
                          result_name(r));
    if (r != VK_SUCCESS) return vk_fail(NULL, r, "creating the Vulkan instance");
    st = clvk_load_instance(vk, *out);
    if (st != CLARA_OK && vk->DestroyInstance) vk->DestroyInstance(*out, NULL);
    if (st != CLARA_OK) *out = VK_NULL_HANDLE;
    return st;
}

static const char *type_name(VkPhysicalDeviceType t) {
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
        return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
        return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
        return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
        return "cpu";
    default:
        return "other";
    }
}

/* The first queue family with compute (UINT32_MAX: none). */
static uint32_t compute_family(const clvk_fns *vk, VkPhysicalDevice p) {
    uint32_t n = 0;
    vk->GetPhysicalDeviceQueueFamilyProperties(p, &n, NULL);
    VkQueueFamilyProperties q[32];
    if (n > 32) n = 32;
    vk->GetPhysicalDeviceQueueFamilyProperties(p, &n, q);
    for (uint32_t i = 0; i < n; i++)
        if (q[i].queueFlags & VK_QUEUE_COMPUTE_BIT) return i;
    return UINT32_MAX;
}

static void describe(const clvk_fns *vk, VkPhysicalDevice p, uint32_t index, clvk_device_desc *o) {
    VkPhysicalDeviceProperties pr;
    VkPhysicalDeviceMemoryProperties m;
    vk->GetPhysicalDeviceProperties(p, &pr);
    vk->GetPhysicalDeviceMemoryProperties(p, &m);
    memset(o, 0, sizeof *o);
    o->index = index;
    snprintf(o->name, sizeof o->name, "%s", pr.deviceName);
    snprintf(o->type, sizeof o->type, "%s", type_name(pr.deviceType));
    for (uint32_t h = 0; h < m.memoryHeapCount; h++)
        if ((m.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
            m.memoryHeaps[h].size > o->mem_bytes)
            o->mem_bytes = m.memoryHeaps[h].size;
    o->vendor_id = pr.vendorID;
    o->api_version = pr.apiVersion;
    o->has_compute = compute_family(vk, p) != UINT32_MAX;
}

/* The physical devices of inst (at most CLVK_MAX_DEVICES). */
static clara_status physical_devices(const clvk_fns *vk, VkInstance inst, VkPhysicalDevice *p,
                                     uint32_t *n) {
    *n = CLVK_MAX_DEVICES;
    VkResult r = vk->EnumeratePhysicalDevices(inst, n, p);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE)
        return vk_fail(NULL, r, "listing the Vulkan devices");
    return CLARA_OK;
}

clara_status clvk_enumerate(clvk_device_desc *out, uint32_t cap, uint32_t *n) {
    clvk_fns vk;
    VkInstance inst;
    VkPhysicalDevice p[CLVK_MAX_DEVICES];
    uint32_t np = 0;
    *n = 0;
    clara_status st = instance_create(&vk, &inst);
    if (st == CLARA_ERR_NOT_FOUND && vk.GetInstanceProcAddr) return CLARA_OK; /* no driver */
    if (st != CLARA_OK) return st;
    st = physical_devices(&vk, inst, p, &np);
    for (uint32_t i = 0; st == CLARA_OK && i < np && *n < cap; i++)
        describe(&vk, p[i], i, &out[(*n)++]);
    vk.DestroyInstance(inst, NULL);
    return st;
}

/* Preference of a device type: discrete > integrated > virtual > other > cpu. */
static int type_rank(const char *t) {
    static const char *order[] = {"cpu", "other", "virtual", "integrated", "discrete"};
    for (int i = 0; i < 5; i++)
        if (strcmp(t, order[i]) == 0) return i;
    return 0;
}

/* The index (into descs) the rule picks into *idx, or an error with a message. */
static clara_status choose(const clvk_device_desc *descs, uint32_t n, clvk_pick pick, int *idx) {
    const char *env = getenv("CLARA_VK_DEVICE");
    if (env && *env) {
        char *end;
        unsigned long v = strtoul(env, &end, 10);
        if (*end || v >= n || !descs[v].has_compute)
            return clara_fail(CLARA_ERR_INVALID_ARG,
                              "vulkan: CLARA_VK_DEVICE=%s names no compute device (%u found)", env,
                              n);
        *idx = (int)v;
        return CLARA_OK;
    }
    int best = -1;
    for (uint32_t i = 0; i < n; i++) {
        if (!descs[i].has_compute) continue;
        if (pick == CLVK_PICK_GPU && strcmp(descs[i].type, "cpu") == 0) continue;
        if (best < 0 || type_rank(descs[i].type) > type_rank(descs[best].type) ||
            (type_rank(descs[i].type) == type_rank(descs[best].type) &&
             descs[i].mem_bytes > descs[best].mem_bytes))
            best = (int)i;
    }
    if (best < 0)
        return clara_fail(CLARA_ERR_NOT_FOUND, "vulkan: no %s found (%u Vulkan device%s: %s%s)",
                          pick == CLVK_PICK_GPU ? "Vulkan GPU" : "Vulkan compute device", n,
                          n == 1 ? "" : "s", n ? descs[0].name : "none", n > 1 ? ", ..." : "");
    *idx = best;
    return CLARA_OK;
}

/* One descriptor set layout and pipeline layout per binding count (all bindings storage buffers,
 * push constants up to MAX_PUSH bytes). */
static clara_status layouts_create(clvk_dev *d) {
    for (uint32_t nb = 1; nb <= MAX_BINDINGS; nb++) {
        VkDescriptorSetLayoutBinding b[MAX_BINDINGS];
        for (uint32_t i = 0; i < nb; i++)
            b[i] =
                (VkDescriptorSetLayoutBinding){.binding = i,
                                               .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                               .descriptorCount = 1,
                                               .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
        VkDescriptorSetLayoutCreateInfo sl = {
            .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
            .bindingCount = nb,
            .pBindings = b};
        VK_TRY(d, d->vk.CreateDescriptorSetLayout(d->dev, &sl, NULL, &d->set_layout[nb]),
               "creating a descriptor set layout");
        VkPushConstantRange pc = {VK_SHADER_STAGE_COMPUTE_BIT, 0, MAX_PUSH};
        VkPipelineLayoutCreateInfo pl = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                         .setLayoutCount = 1,
                                         .pSetLayouts = &d->set_layout[nb],
                                         .pushConstantRangeCount = 1,
                                         .pPushConstantRanges = &pc};
        VK_TRY(d, d->vk.CreatePipelineLayout(d->dev, &pl, NULL, &d->pipe_layout[nb]),
               "creating a pipeline layout");
    }
    return CLARA_OK;
}

/* The logical device with one compute queue, its command buffer, fence and descriptor pool. */
static clara_status device_create(clvk_dev *d) {
    float prio = 1.0f;
    VkDeviceQueueCreateInfo q = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                 .queueFamilyIndex = d->queue_family,
                                 .queueCount = 1,
                                 .pQueuePriorities = &prio};
    VkDeviceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                             .queueCreateInfoCount = 1,
                             .pQueueCreateInfos = &q};
    VK_TRY(d, d->vk.CreateDevice(d->phys, &ci, NULL, &d->dev), "creating the logical device");
    clara_status st = clvk_load_device(&d->vk, d->dev);
    if (st != CLARA_OK) { /* a partial table: clvk_close must not call through it */
        PFN_vkDestroyDevice destroy =
            (PFN_vkDestroyDevice)d->vk.GetDeviceProcAddr(d->dev, "vkDestroyDevice");
        if (destroy) destroy(d->dev, NULL);
        d->dev = VK_NULL_HANDLE;
        return st;
    }
    d->vk.GetDeviceQueue(d->dev, d->queue_family, 0, &d->queue);
    d->vk.GetPhysicalDeviceMemoryProperties(d->phys, &d->mem);
    VkCommandPoolCreateInfo cp = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                  .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                  .queueFamilyIndex = d->queue_family};
    VK_TRY(d, d->vk.CreateCommandPool(d->dev, &cp, NULL, &d->cmd_pool), "creating a command pool");
    VkCommandBufferAllocateInfo ca = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                      .commandPool = d->cmd_pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                      .commandBufferCount = 1};
    VK_TRY(d, d->vk.AllocateCommandBuffers(d->dev, &ca, &d->cmd), "allocating a command buffer");
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VK_TRY(d, d->vk.CreateFence(d->dev, &fi, NULL, &d->fence), "creating a fence");
    VkDescriptorPoolSize ps = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, CLVK_BATCH_MAX * MAX_BINDINGS};
    VkDescriptorPoolCreateInfo dp = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                     .maxSets = CLVK_BATCH_MAX,
                                     .poolSizeCount = 1,
                                     .pPoolSizes = &ps};
    VK_TRY(d, d->vk.CreateDescriptorPool(d->dev, &dp, NULL, &d->desc_pool),
           "creating a descriptor pool");
    return layouts_create(d);
}

clara_status clvk_open(clvk_pick pick, clvk_dev **out) {
    *out = NULL;
    clvk_dev *d = calloc(1, sizeof *d);
    if (!d) return clara_fail(CLARA_ERR_NOMEM, "vulkan: out of memory");
    clara_status st = instance_create(&d->vk, &d->inst);
    if (st != CLARA_OK) {
        free(d);
        return st;
    }
    VkPhysicalDevice p[CLVK_MAX_DEVICES];
    clvk_device_desc descs[CLVK_MAX_DEVICES];
    uint32_t np = 0;
    st = physical_devices(&d->vk, d->inst, p, &np);
    for (uint32_t i = 0; st == CLARA_OK && i < np; i++) describe(&d->vk, p[i], i, &descs[i]);
    int c = -1;
    if (st == CLARA_OK) st = choose(descs, np, pick, &c);
    if (st != CLARA_OK) {
        clvk_close(d);
        return st;
    }
    d->phys = p[c];
    d->desc = descs[c];
    d->queue_family = compute_family(&d->vk, d->phys);
    st = device_create(d);
    if (st != CLARA_OK) {
        clvk_close(d);
        return st;
    }
    *out = d;
    return CLARA_OK;
}

void clvk_close(clvk_dev *d) {
    if (!d) return;
    if (d->dev) {
        d->vk.DeviceWaitIdle(d->dev);
        for (uint32_t i = 0; i < d->n_pipes; i++)
            d->vk.DestroyPipeline(d->dev, d->pipes[i].pipe, NULL);
        for (uint32_t nb = 1; nb <= MAX_BINDINGS; nb++) {
            d->vk.DestroyPipelineLayout(d->dev, d->pipe_layout[nb], NULL);
            d->vk.DestroyDescriptorSetLayout(d->dev, d->set_layout[nb], NULL);
        }
        d->vk.DestroyDescriptorPool(d->dev, d->desc_pool, NULL);
        d->vk.DestroyFence(d->dev, d->fence, NULL);
        d->vk.DestroyCommandPool(d->dev, d->cmd_pool, NULL);
        d->vk.DestroyDevice(d->dev, NULL);
    }
    if (d->inst) d->vk.DestroyInstance(d->inst, NULL);
    free(d);
}

const clvk_device_desc *clvk_desc(const clvk_dev *d) {
    return &d->desc;
}

void clvk_force_staging(clvk_dev *d, bool on) {
    d->force_staging = on;
}

void clvk_mark_lost(clvk_dev *d) {
    d->lost = true;
}

/* The first memory type allowed by `bits` with all of `want`; -1 if none. */
static int memory_type(const clvk_dev *d, uint32_t bits, VkMemoryPropertyFlags want) {
    for (uint32_t i = 0; i < d->mem.memoryTypeCount; i++)
        if ((bits & (1u << i)) && (d->mem.memoryTypes[i].propertyFlags & want) == want)
            return (int)i;
    return -1;
}

/* A buffer in memory with `want` (device-local for storage; host-visible for staging). Device-
 * local memory that is also host visible and coherent (integrated GPUs, lavapipe, resizable BAR)
 * is mapped, so copies skip the queue. */
static clara_status buf_create(clvk_dev *d, size_t bytes, VkMemoryPropertyFlags want,
                               clvk_buf **out) {
    const VkMemoryPropertyFlags host =
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    *out = NULL;
    if (bytes == 0) return clara_fail(CLARA_ERR_INVALID_ARG, "vulkan: a buffer of 0 bytes");
    clvk_buf *b = calloc(1, sizeof *b);
    if (!b) return clara_fail(CLARA_ERR_NOMEM, "vulkan: out of memory");
    *out = b;
    b->size = bytes;
    VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                             .size = (bytes + 3) & ~(size_t)3, /* shaders read words */
                             .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                      VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                      VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                             .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    VK_TRY(d, d->vk.CreateBuffer(d->dev, &bi, NULL, &b->buf), "creating a buffer");
    VkMemoryRequirements req;
    d->vk.GetBufferMemoryRequirements(d->dev, b->buf, &req);
    int mt = memory_type(d, req.memoryTypeBits, want);
    if (mt < 0 && want != host) mt = memory_type(d, req.memoryTypeBits, host);
    if (mt < 0)
        return clara_fail(CLARA_ERR_UNSUPPORTED, "vulkan: %s has no memory type for buffers",
                          d->desc.name);
    VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                               .allocationSize = req.size,
                               .memoryTypeIndex = (uint32_t)mt};
    VkResult r = d->vk.AllocateMemory(d->dev, &ai, NULL, &b->mem);
    if (r != VK_SUCCESS)
        return clara_fail_context(vk_fail(d, r, "allocating device memory"), "%zu bytes on %s",
                                  bytes, d->desc.name);
    VK_TRY(d, d->vk.BindBufferMemory(d->dev, b->buf, b->mem, 0), "binding buffer memory");
    bool mappable = (d->mem.memoryTypes[mt].propertyFlags & host) == host;
    if (mappable && (want == host || !d->force_staging))
        VK_TRY(d, d->vk.MapMemory(d->dev, b->mem, 0, VK_WHOLE_SIZE, 0, &b->map), "mapping memory");
    return CLARA_OK;
}

clara_status clvk_buf_create(clvk_dev *d, size_t bytes, clvk_buf **out) {
    clara_status st = check_lost(d);
    if (st == CLARA_OK) st = buf_create(d, bytes, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, out);
    if (st != CLARA_OK && *out) {
        clvk_buf_free(d, *out);
        *out = NULL;
    }
    return st;
}

static clara_status settle(clvk_dev *d);

void clvk_buf_free(clvk_dev *d, clvk_buf *b) {
    if (!b) return;
    /* the recorded dispatches may use b: they run first (a failure is held for the batch's end) */
    clara_status st = settle(d);
    if (st != CLARA_OK && d->held == CLARA_OK) {
        d->held = st;
        snprintf(d->held_msg, sizeof d->held_msg, "%s", clara_last_error());
    }
    if (b->map) d->vk.UnmapMemory(d->dev, b->mem);
    if (b->buf) d->vk.DestroyBuffer(d->dev, b->buf, NULL);
    if (b->mem) d->vk.FreeMemory(d->dev, b->mem, NULL);
    free(b);
}

size_t clvk_buf_size(const clvk_buf *b) {
    return b->size;
}

static clara_status cmd_begin(clvk_dev *d) {
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    VK_TRY(d, d->vk.ResetCommandBuffer(d->cmd, 0), "resetting the command buffer");
    VK_TRY(d, d->vk.BeginCommandBuffer(d->cmd, &bi), "beginning a command buffer");
    return CLARA_OK;
}

/* Ends the command buffer, submits it and waits for the fence (what: for messages). */
static clara_status cmd_submit_wait(clvk_dev *d, const char *what) {
    /* the recorded writes made visible to the host (downloads read mapped memory) and to the
     * next submission's commands */
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = VK_ACCESS_MEMORY_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_MEMORY_READ_BIT | VK_ACCESS_MEMORY_WRITE_BIT |
                                           VK_ACCESS_HOST_READ_BIT};
    d->vk.CmdPipelineBarrier(d->cmd, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT,
                             VK_PIPELINE_STAGE_ALL_COMMANDS_BIT | VK_PIPELINE_STAGE_HOST_BIT, 0, 1,
                             &mb, 0, NULL, 0, NULL);
    VK_TRY(d, d->vk.EndCommandBuffer(d->cmd), "ending a command buffer");
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                       .commandBufferCount = 1,
                       .pCommandBuffers = &d->cmd};
    d->submits++;
    VK_TRY(d, d->vk.QueueSubmit(d->queue, 1, &si, d->fence), what);
    VkResult r = d->vk.WaitForFences(d->dev, 1, &d->fence, VK_TRUE, FENCE_TIMEOUT_NS);
    if (r == VK_TIMEOUT) {
        /* the queue still owns the work: the device cannot be trusted with more */
        d->lost = true;
        return clara_fail(CLARA_ERR_IO, "vulkan: %s did not finish within %llu s on %s", what,
                          FENCE_TIMEOUT_NS / 1000000000ull, d->desc.name);
    }
    if (r != VK_SUCCESS) return vk_fail(d, r, what);
    VK_TRY(d, d->vk.ResetFences(d->dev, 1, &d->fence), "resetting a fence");
    return CLARA_OK;
}

static clara_status check_range(const clvk_buf *b, size_t off, size_t len) {
    if (off > b->size || len > b->size - off)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "vulkan: bytes [%zu, +%zu) lie outside a buffer of %zu bytes", off, len,
                          b->size);
    return CLARA_OK;
}

/* Copies len bytes between two buffers on the queue and waits. */
static clara_status copy_wait(clvk_dev *d, const clvk_buf *src, size_t src_off, clvk_buf *dst,
                              size_t dst_off, size_t len) {
    clara_status st = cmd_begin(d);
    if (st != CLARA_OK) return st;
    VkBufferCopy c = {src_off, dst_off, len};
    d->vk.CmdCopyBuffer(d->cmd, src->buf, dst->buf, 1, &c);
    return cmd_submit_wait(d, "copying a buffer");
}

/* Through a host-visible staging buffer: to_device copies host -> staging -> b, else back. */
static clara_status staged(clvk_dev *d, clvk_buf *b, size_t off, void *host, size_t len,
                           bool to_device) {
    clvk_buf *s = NULL;
    const VkMemoryPropertyFlags hv =
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    clara_status st = buf_create(d, len, hv, &s);
    if (st == CLARA_OK && !s->map)
        st = clara_fail(CLARA_ERR_UNSUPPORTED, "vulkan: no mappable memory on %s", d->desc.name);
    if (st == CLARA_OK && to_device) {
        memcpy(s->map, host, len);
        st = copy_wait(d, s, 0, b, off, len);
    } else if (st == CLARA_OK) {
        st = copy_wait(d, b, off, s, 0, len);
        if (st == CLARA_OK) memcpy(host, s->map, len);
    }
    clvk_buf_free(d, s);
    return st;
}

clara_status clvk_upload(clvk_dev *d, clvk_buf *b, size_t off, const void *src, size_t len) {
    clara_status st = check_lost(d);
    if (st == CLARA_OK) st = check_range(b, off, len);
    if (st == CLARA_OK && len) st = settle(d);
    if (st != CLARA_OK || len == 0) return st;
    if (b->map) {
        memcpy((uint8_t *)b->map + off, src, len);
        return CLARA_OK;
    }
    return staged(d, b, off, (void *)src, len, true);
}

clara_status clvk_download(clvk_dev *d, const clvk_buf *b, size_t off, void *dst, size_t len) {
    clara_status st = check_lost(d);
    if (st == CLARA_OK) st = check_range(b, off, len);
    if (st == CLARA_OK && len) st = settle(d);
    if (st != CLARA_OK || len == 0) return st;
    if (b->map) {
        memcpy(dst, (const uint8_t *)b->map + off, len);
        return CLARA_OK;
    }
    return staged(d, (clvk_buf *)b, off, dst, len, false);
}

/* The pipeline of kernel k specialized with spec (constant_id 0), made on first use. */
static clara_status pipeline_get(clvk_dev *d, clvk_kernel k, uint32_t spec, VkPipeline *out) {
    for (uint32_t i = 0; i < d->n_pipes; i++)
        if (d->pipes[i].k == k && d->pipes[i].spec == spec) {
            *out = d->pipes[i].pipe;
            return CLARA_OK;
        }
    if (d->n_pipes == MAX_PIPELINES)
        return clara_fail(CLARA_ERR_NOMEM, "vulkan: more than %d pipelines", MAX_PIPELINES);
    VkShaderModuleCreateInfo mi = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                   .codeSize = *kernels[k].len,
                                   .pCode = (const uint32_t *)(const void *)kernels[k].spv};
    VkShaderModule mod;
    VK_TRY(d, d->vk.CreateShaderModule(d->dev, &mi, NULL, &mod), "creating a shader module");
    VkSpecializationMapEntry me = {0, 0, sizeof(uint32_t)};
    VkSpecializationInfo sp = {1, &me, sizeof spec, &spec};
    VkComputePipelineCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = mod,
                  .pName = "main",
                  .pSpecializationInfo = &sp},
        .layout = d->pipe_layout[kernels[k].n_bindings]};
    VkResult r = d->vk.CreateComputePipelines(d->dev, VK_NULL_HANDLE, 1, &ci, NULL, out);
    d->vk.DestroyShaderModule(d->dev, mod, NULL);
    if (r != VK_SUCCESS)
        return clara_fail_context(vk_fail(d, r, "creating a compute pipeline"), "shader %s",
                                  kernels[k].name);
    d->pipes[d->n_pipes++] = (pipeline_entry){k, spec, *out};
    return CLARA_OK;
}

/* What the recorded dispatches are, for messages: the kernel's name for one, else "a batch of N
 * dispatches (2 rmsnorm, 12 matmul, ...)". */
static void describe_recorded(const clvk_dev *d, char *out, size_t cap) {
    if (d->n_rec == 1) {
        for (int k = 0; k < CLVK_K_COUNT; k++)
            if (d->rec_by_kernel[k]) snprintf(out, cap, "%s", kernels[k].name);
        return;
    }
    size_t n = (size_t)snprintf(out, cap, "a batch of %u dispatches (", d->n_rec);
    const char *sep = "";
    for (int k = 0; k < CLVK_K_COUNT && n < cap; k++) {
        if (!d->rec_by_kernel[k]) continue;
        n += (size_t)snprintf(out + n, cap - n, "%s%u %s", sep, d->rec_by_kernel[k],
                              kernels[k].name);
        sep = ", ";
    }
    if (n < cap) snprintf(out + n, cap - n, ")");
}

/* Submits the recorded dispatches and waits; then their descriptor sets are free again. */
static clara_status submit_recorded(clvk_dev *d) {
    char what[192];
    describe_recorded(d, what, sizeof what);
    d->n_rec = 0;
    memset(d->rec_by_kernel, 0, sizeof d->rec_by_kernel);
    clara_status st = cmd_submit_wait(d, what);
    /* after a timeout or a lost device the sets may still be in use: the pool stays as it is */
    if (!d->lost) {
        VkResult r = d->vk.ResetDescriptorPool(d->dev, d->desc_pool, 0);
        if (r != VK_SUCCESS && st == CLARA_OK) st = vk_fail(d, r, "resetting the descriptor pool");
    }
    return st;
}

/* Runs what a batch has recorded so far (nothing to do when it has recorded nothing). */
static clara_status settle(clvk_dev *d) {
    if (d->n_rec == 0) return CLARA_OK;
    clara_status st = check_lost(d);
    return st == CLARA_OK ? submit_recorded(d) : st;
}

/* Drops the recorded dispatches unsubmitted; the command buffer is reset when next begun. */
static void drop_recorded(clvk_dev *d) {
    if (d->n_rec && !d->lost) d->vk.ResetDescriptorPool(d->dev, d->desc_pool, 0);
    d->n_rec = 0;
    memset(d->rec_by_kernel, 0, sizeof d->rec_by_kernel);
}

/* A descriptor set for n_bufs bindings pointing at bufs. A full pool (CLVK_BATCH_MAX sets, or a
 * driver that counts otherwise) makes the recorded dispatches run first, then it is asked again. */
static clara_status descriptor_set(clvk_dev *d, clvk_buf *const *bufs, uint32_t n_bufs,
                                   VkDescriptorSet *set) {
    VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                      .descriptorPool = d->desc_pool,
                                      .descriptorSetCount = 1,
                                      .pSetLayouts = &d->set_layout[n_bufs]};
    VkResult r = d->vk.AllocateDescriptorSets(d->dev, &ai, set);
    if ((r == VK_ERROR_OUT_OF_POOL_MEMORY || r == VK_ERROR_FRAGMENTED_POOL) && d->n_rec) {
        clara_status st = submit_recorded(d);
        if (st != CLARA_OK) return st;
        r = d->vk.AllocateDescriptorSets(d->dev, &ai, set);
    }
    if (r != VK_SUCCESS) return vk_fail(d, r, "allocating a descriptor set");
    VkDescriptorBufferInfo bi[MAX_BINDINGS];
    VkWriteDescriptorSet wr[MAX_BINDINGS];
    for (uint32_t i = 0; i < n_bufs; i++) {
        bi[i] = (VkDescriptorBufferInfo){bufs[i]->buf, 0, VK_WHOLE_SIZE};
        wr[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                       .dstSet = *set,
                                       .dstBinding = i,
                                       .descriptorCount = 1,
                                       .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                       .pBufferInfo = &bi[i]};
    }
    d->vk.UpdateDescriptorSets(d->dev, n_bufs, wr, 0, NULL);
    return CLARA_OK;
}

/* Begins the command buffer for the first recorded dispatch; before any later one, a barrier:
 * the earlier dispatches' shader writes finish and become visible to this one's reads and writes
 * (and its writes wait for their reads). */
static clara_status record_start(clvk_dev *d) {
    if (d->n_rec == 0) return cmd_begin(d);
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT};
    d->vk.CmdPipelineBarrier(d->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                             VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
    return CLARA_OK;
}

clara_status clvk_dispatch(clvk_dev *d, clvk_kernel k, uint32_t spec, clvk_buf *const *bufs,
                           uint32_t n_bufs, const void *push, uint32_t push_size, uint32_t gx,
                           uint32_t gy) {
    clara_status st = check_lost(d);
    if (st != CLARA_OK) return st;
    CLARA_ASSERT(k < CLVK_K_COUNT && n_bufs == kernels[k].n_bindings && push_size <= MAX_PUSH);
    if (gx == 0 || gy == 0) return CLARA_OK;
    if (gx > 65535 || gy > 65535)
        return clara_fail(CLARA_ERR_INVALID_ARG, "vulkan: %s: %u x %u workgroups (at most 65535)",
                          kernels[k].name, gx, gy);
    VkPipeline pipe;
    if ((st = pipeline_get(d, k, spec, &pipe)) != CLARA_OK) return st;
    if (d->n_rec == CLVK_BATCH_MAX && (st = submit_recorded(d)) != CLARA_OK) return st;
    VkDescriptorSet set;
    if ((st = descriptor_set(d, bufs, n_bufs, &set)) != CLARA_OK) return st;
    if ((st = record_start(d)) != CLARA_OK) return st;
    VkPipelineLayout pl = d->pipe_layout[n_bufs];
    d->vk.CmdBindPipeline(d->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
    d->vk.CmdBindDescriptorSets(d->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pl, 0, 1, &set, 0, NULL);
    uint8_t pc[MAX_PUSH] = {0};
    memcpy(pc, push, push_size);
    d->vk.CmdPushConstants(d->cmd, pl, VK_SHADER_STAGE_COMPUTE_BIT, 0, MAX_PUSH, pc);
    d->vk.CmdDispatch(d->cmd, gx, gy, 1);
    d->n_rec++, d->rec_by_kernel[k]++, d->dispatches++;
    return d->batch_open ? CLARA_OK : submit_recorded(d);
}

clara_status clvk_batch_begin(clvk_dev *d) {
    clara_status st = check_lost(d);
    if (st != CLARA_OK || d->batching_off) return st;
    CLARA_ASSERT(!d->batch_open);
    d->batch_open = true;
    d->held = CLARA_OK;
    return CLARA_OK;
}

clara_status clvk_batch_flush(clvk_dev *d) {
    clara_status st = check_lost(d);
    if (st != CLARA_OK) {
        drop_recorded(d);
        return st;
    }
    if (d->held != CLARA_OK) {
        st = clara_fail(d->held, "%s", d->held_msg);
        d->held = CLARA_OK;
        drop_recorded(d);
        return st;
    }
    return settle(d);
}

clara_status clvk_batch_end(clvk_dev *d) {
    clara_status st = clvk_batch_flush(d);
    d->batch_open = false;
    return st;
}

void clvk_batch_discard(clvk_dev *d) {
    drop_recorded(d);
    d->batch_open = false;
    d->held = CLARA_OK;
}

void clvk_set_batching(clvk_dev *d, bool on) {
    d->batching_off = !on;
}

uint64_t clvk_submits(const clvk_dev *d) {
    return d->submits;
}

uint64_t clvk_dispatches(const clvk_dev *d) {
    return d->dispatches;
}
