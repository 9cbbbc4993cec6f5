/* loader.h - the Vulkan loader (libvulkan.so.1), opened at run time with dlopen rather than linked,
 * so that a binary built with the Vulkan backend starts, and runs on the CPU, on a machine without
 * it; and the tables of the Vulkan functions the backend calls, looked up as the Vulkan spec says:
 * the global ones through vkGetInstanceProcAddr(NULL, ...), the instance ones through
 * vkGetInstanceProcAddr(instance, ...) once it exists, the device ones through
 * vkGetDeviceProcAddr(device, ...) (each device its own driver's entry points, so two devices of
 * different drivers never share a table). The build defines VK_NO_PROTOTYPES: nothing links a
 * Vulkan symbol, and a direct vkFoo() call does not compile.
 *
 * CLARA_VK_LOADER=PATH loads that file instead of libvulkan.so.1 (then libvulkan.so): a loader
 * in an unusual place, or, in the tests, one that is not there. */
#ifndef CLARA_VULKAN_LOADER_H
#define CLARA_VULKAN_LOADER_H

#ifndef VK_NO_PROTOTYPES
#define VK_NO_PROTOTYPES
#endif
#include <vulkan/vulkan.h>

#include "clara.h"

/* The functions the backend calls, without their vk prefix, by the level they are looked up at.
 * A new call adds its name here. */
#define CLVK_GLOBAL_FNS(X) X(CreateInstance)
#define CLVK_INSTANCE_FNS(X)                                                                       \
    X(DestroyInstance)                                                                             \
    X(EnumeratePhysicalDevices)                                                                    \
    X(GetPhysicalDeviceProperties)                                                                 \
    X(GetPhysicalDeviceMemoryProperties)                                                           \
    X(GetPhysicalDeviceQueueFamilyProperties)                                                      \
    X(CreateDevice)                                                                                \
    X(GetDeviceProcAddr)
#define CLVK_DEVICE_FNS(X)                                                                         \
    X(DestroyDevice)                                                                               \
    X(GetDeviceQueue)                                                                              \
    X(DeviceWaitIdle)                                                                              \
    X(CreateCommandPool)                                                                           \
    X(DestroyCommandPool)                                                                          \
    X(AllocateCommandBuffers)                                                                      \
    X(ResetCommandBuffer)                                                                          \
    X(BeginCommandBuffer)                                                                          \
    X(EndCommandBuffer)                                                                            \
    X(CreateFence)                                                                                 \
    X(DestroyFence)                                                                                \
    X(ResetFences)                                                                                 \
    X(WaitForFences)                                                                               \
    X(QueueSubmit)                                                                                 \
    X(CreateDescriptorPool)                                                                        \
    X(DestroyDescriptorPool)                                                                       \
    X(ResetDescriptorPool)                                                                         \
    X(CreateDescriptorSetLayout)                                                                   \
    X(DestroyDescriptorSetLayout)                                                                  \
    X(AllocateDescriptorSets)                                                                      \
    X(UpdateDescriptorSets)                                                                        \
    X(CreatePipelineLayout)                                                                        \
    X(DestroyPipelineLayout)                                                                       \
    X(CreateShaderModule)                                                                          \
    X(DestroyShaderModule)                                                                         \
    X(CreateComputePipelines)                                                                      \
    X(DestroyPipeline)                                                                             \
    X(CreateBuffer)                                                                                \
    X(DestroyBuffer)                                                                               \
    X(GetBufferMemoryRequirements)                                                                 \
    X(AllocateMemory)                                                                              \
    X(FreeMemory)                                                                                  \
    X(BindBufferMemory)                                                                            \
    X(MapMemory)                                                                                   \
    X(UnmapMemory)                                                                                 \
    X(CmdBindPipeline)                                                                             \
    X(CmdBindDescriptorSets)                                                                       \
    X(CmdPushConstants)                                                                            \
    X(CmdDispatch)                                                                                 \
    X(CmdCopyBuffer)                                                                               \
    X(CmdPipelineBarrier)

#define CLVK_FN_MEMBER(name) PFN_vk##name name;

/* One table: f.CreateInstance(...) calls vkCreateInstance. A clvk_dev holds its own. */
typedef struct {
    PFN_vkGetInstanceProcAddr GetInstanceProcAddr;
    CLVK_GLOBAL_FNS(CLVK_FN_MEMBER)
    CLVK_INSTANCE_FNS(CLVK_FN_MEMBER)
    CLVK_DEVICE_FNS(CLVK_FN_MEMBER)
} clvk_fns;

/* Opens the loader (once per process; it stays loaded) and fills f's global functions. No loader:
 * CLARA_ERR_NOT_FOUND, "the Vulkan loader (libvulkan.so.1) was not found ...: install the package
 * libvulkan1 ...", the same each time. */
clara_status clvk_load_global(clvk_fns *f);
/* Fills f's instance functions for inst (after clvk_load_global and vkCreateInstance). */
clara_status clvk_load_instance(clvk_fns *f, VkInstance inst);
/* Fills f's device functions for dev (after clvk_load_instance and vkCreateDevice). */
clara_status clvk_load_device(clvk_fns *f, VkDevice dev);

#endif
