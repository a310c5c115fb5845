/* core/memory.c — aligned allocation and resident-memory readings. */
#include "core/memory.h"

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

static size_t status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0, n = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, n) == 0) {
            kb = strtoull(line + n, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

size_t moe_peak_rss_bytes(void) { return status_kb("VmHWM:") * 1024; }
size_t moe_current_rss_bytes(void) { return status_kb("VmRSS:") * 1024; }

int moe_reset_peak_rss(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    int ok = fputs("5", f) >= 0;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}
