/* core/memory.c — aligned allocation and resident-memory readings. */
#include "core/memory.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/error.h"

/* Blocks from this size on (weights, the KV cache, prefill activations)
 * are aligned to and asked for as 2 MiB pages: a KV cache filling a token
 * at a time takes one page fault per 2 MiB instead of one per 4 KiB, and
 * streaming weights touches far fewer TLB entries. Where transparent huge
 * pages are off the advice is ignored. */
enum { HUGE_FROM = 8 << 20, HUGE_PAGE = 2 << 20 };

void *moe_alloc(size_t bytes, const char *what)
{
    void *p = NULL;
    size_t align = bytes >= HUGE_FROM ? HUGE_PAGE : 64;
    /* Round up so the size is a multiple of the alignment, as C11 asks. */
    size_t rounded = (bytes + align - 1) & ~(align - 1);
    if (rounded == 0) rounded = 64;
    if (posix_memalign(&p, align, rounded) != 0) {
        moe_error_set(MOE_ERR_NOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
        return NULL;
    }
    if (align == HUGE_PAGE) madvise(p, rounded, MADV_HUGEPAGE);
    return p;
}

void *moe_calloc(size_t bytes, const char *what)
{
    void *p = moe_alloc(bytes, what);
    if (p) memset(p, 0, bytes);
    return p;
}

void moe_free(void *p) { free(p); }

/* The first number after `key` in a file of "key value" lines (or the
 * file's only number when key is ""); 0 when absent, UINT64_MAX for "max". */
static unsigned long long file_number(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[256];
    unsigned long long v = 0;
    size_t n = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, n) != 0) continue;
        const char *p = line + n;
        while (*p == ' ' || *p == ':') p++;
        v = !strncmp(p, "max", 3) ? UINT64_MAX : strtoull(p, NULL, 10);
        break;
    }
    fclose(f);
    return v;
}

/* What the memory cgroup this process sees at /sys/fs/cgroup still allows
 * (limit - (usage - inactive page cache)); UINT64_MAX when there is no limit. */
static unsigned long long cgroup_room(void)
{
    static const struct {
        const char *limit, *usage, *stat, *inactive_file;
    } V[] = {
        { "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat", "inactive_file" },
        { "/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
          "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file" },
    };
    for (size_t i = 0; i < sizeof V / sizeof V[0]; i++) {
        unsigned long long limit = file_number(V[i].limit, "");
        if (!limit) continue;
        /* v1 says "no limit" with a page-rounded 2^63 */
        if (limit >= (1ull << 60)) return UINT64_MAX;
        unsigned long long used = file_number(V[i].usage, ""), cache = file_number(V[i].stat, V[i].inactive_file);
        used = used > cache ? used - cache : 0;
        return limit > used ? limit - used : 0;
    }
    return UINT64_MAX;
}

size_t moe_available_memory_bytes(void)
{
    const char *env = getenv("MOE_MEMORY_AVAILABLE");
    if (env && *env) return (size_t)strtoull(env, NULL, 10);
    unsigned long long kb = file_number("/proc/meminfo", "MemAvailable"), room = cgroup_room();
    unsigned long long have = !kb || kb > UINT64_MAX / 1024 ? UINT64_MAX : kb * 1024;
    if (room < have) have = room;
    if (have == UINT64_MAX) return 0; /* neither tells */
    return have > SIZE_MAX ? SIZE_MAX : (size_t)have;
}

size_t moe_peak_rss_bytes(void) { return (size_t)file_number("/proc/self/status", "VmHWM") * 1024; }
size_t moe_current_rss_bytes(void) { return (size_t)file_number("/proc/self/status", "VmRSS") * 1024; }

int moe_reset_peak_rss(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    int ok = fputs("5", f) >= 0;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}
