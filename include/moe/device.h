/* moe/device.h — where weights live and work runs: the host's CPU or a GPU.
 *
 * A model (moe_model_options.device) and a single expert layer
 * (moe_switchglu_config.device) are each placed on one device. */
#ifndef MOE_DEVICE_H
#define MOE_DEVICE_H

#include <stddef.h>

#include "moe/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MOE_DEVICE_AUTO = -1,   /* CUDA when the build has it and a GPU is present, else the CPU */
    MOE_DEVICE_CPU = 0,
    MOE_DEVICE_CUDA = 1,    /* the first GPU (compute capability 9.0 or newer) */
} moe_device;

/* MOE_OK when a model can be placed on device d; else an error saying why
 * not (a build without CUDA, no GPU, a GPU too old). */
moe_status moe_device_available(moe_device d);

/* The rate at which the GPU's memory streams, in GB/s (1e9 bytes/s), for
 * a bandwidth floor measured in the same conditions as what it bounds: an
 * element-wise add y += x over two buffers of bytes/2 each (every element
 * read twice and written once, 1.5·bytes a pass), the median of `passes`
 * timed passes of several adds, after one untimed. Take bytes well beyond
 * the GPU's caches (1 GiB; at least 8 MiB is asked). Only MOE_DEVICE_CUDA
 * is probed: the host's bandwidth needs its threads, not a device's add,
 * and MOE_DEVICE_CPU is MOE_ERR_UNSUPPORTED. The buffers are allocated and
 * freed inside the call. */
moe_status moe_device_bandwidth(moe_device d, size_t bytes, int passes, double *gbps);

/* The GPU's memory in use (by every process and context on it: total less
 * free) and its total, in bytes: read before a model is placed and after
 * its run, the difference is what the run holds there (the run's own
 * buffers only grow, so after is also its peak). MOE_DEVICE_CPU is
 * MOE_ERR_UNSUPPORTED (the host's memory is the process's RSS). */
moe_status moe_device_memory(moe_device d, size_t *used_bytes, size_t *total_bytes);

#ifdef __cplusplus
}
#endif

#endif
