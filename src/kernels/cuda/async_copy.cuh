/* kernels/cuda/async_copy.cuh — copies from global to shared memory that
 * run while the threads compute (cp.async, sm_80 and later): a copy is
 * issued, its group committed, and a later wait lets through all but the
 * newest groups; a copy marked invalid fills its bytes with zeros. */
#ifndef MOE_KERNELS_CUDA_ASYNC_COPY_CUH
#define MOE_KERNELS_CUDA_ASYNC_COPY_CUH

__device__ inline void cp_async16(void *smem, const void *gmem, bool valid)
{
    unsigned a = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(a), "l"(gmem), "r"(valid ? 16 : 0));
}

__device__ inline void cp_async4(void *smem, const void *gmem, bool valid)
{
    unsigned a = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(a), "l"(gmem), "r"(valid ? 4 : 0));
}

__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

template <int N>
__device__ inline void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

#endif
