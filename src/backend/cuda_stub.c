/* backend/cuda_stub.c — the CUDA backend's entries in a build without CUDA
 * (compiled instead of backend/cuda.c when MOE_CUDA is off): they say so. */
#include <stddef.h>

#include "backend/backend.h"
#include "core/error.h"

moe_backend *moe_backend_cuda_create(void)
{
    moe_error_set(MOE_ERR_UNSUPPORTED, "moe was built without CUDA (cmake -DMOE_CUDA=ON)");
    return NULL;
}

moe_status moe_cuda_memory_info(size_t *free_bytes, size_t *total_bytes)
{
    *free_bytes = *total_bytes = 0;
    return moe_error_set(MOE_ERR_UNSUPPORTED, "moe was built without CUDA (cmake -DMOE_CUDA=ON)");
}
