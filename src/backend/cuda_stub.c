/* backend/cuda_stub.c — the CUDA backend's entry in a build without CUDA
 * (compiled instead of backend/cuda.c when MOE_CUDA is off): it says so. */
#include <stddef.h>

#include "backend/backend.h"
#include "core/error.h"

moe_backend *moe_backend_cuda_create(void)
{
    moe_error_set(MOE_ERR_UNSUPPORTED, "moe was built without CUDA (cmake -DMOE_CUDA=ON)");
    return NULL;
}
