/* moe/runtime.h — process-wide settings: threads and CPU kernel selection. */
#ifndef MOE_RUNTIME_H
#define MOE_RUNTIME_H

#include "moe/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Threads used by every parallel kernel (default: all online cores). */
moe_status moe_set_num_threads(int n);
int moe_num_threads(void);

/* CPU kernel sets, best first: "avx512vnni" (avx512 plus int8 dot products),
 * "avx512", "avx2", "portable". The best one the
 * CPU supports is chosen at start; MOE_ISA=<name> in the environment or this
 * call picks another (an error if the CPU cannot run it). */
moe_status moe_cpu_select_isa(const char *name);
const char *moe_cpu_isa(void);
int moe_cpu_isa_supported(const char *name);

#ifdef __cplusplus
}
#endif

#endif
