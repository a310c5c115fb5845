/* core/memory.h — aligned allocation and process memory figures. */
#ifndef MOE_CORE_MEMORY_H
#define MOE_CORE_MEMORY_H

#include <stddef.h>

/* 64-byte aligned (one cache line, one AVX-512 vector); NULL on failure,
 * with the error message naming `what`. Free with moe_free. */
void *moe_alloc(size_t bytes, const char *what);
void *moe_calloc(size_t bytes, const char *what);
void moe_free(void *p);

/* Grows a workspace buffer of `cap` elements to at least n (contents not
 * kept): MOE_OK, or MOE_ERR_NOMEM with cap 0. A macro so that buf keeps its
 * own pointer type. */
#define MOE_GROW(buf, cap, n, what)                                                        \
    ((n) <= (cap) ? MOE_OK                                                                 \
                  : (moe_free(buf), (buf) = moe_alloc((n) * sizeof *(buf), what),          \
                     (cap) = (buf) ? (n) : 0, (buf) ? MOE_OK : MOE_ERR_NOMEM))

/* The memory this process can still take without swapping or being
 * killed, in bytes; 0 if unknown: MemAvailable of /proc/meminfo, or less
 * where a memory cgroup (a container's limit; v2 or v1) leaves less — its
 * limit minus what is charged to it, reclaimable page cache not counted.
 * MOE_MEMORY_AVAILABLE=BYTES in the environment replaces the reading (to
 * plan for less than the machine has; tests). */
size_t moe_available_memory_bytes(void);

/* Peak and current resident set size of this process, from /proc (0 if unknown). */
size_t moe_peak_rss_bytes(void);
size_t moe_current_rss_bytes(void);
/* Restarts the peak at the current RSS (Linux clear_refs); 0 on success. */
int moe_reset_peak_rss(void);

#endif
