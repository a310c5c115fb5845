/* core/memory.c — aligned allocation and resident-memory readings. */
#include "core/memory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

void *moe_alloc(size_t bytes, const char *what)
{
    void *p = NULL;
    /* Round up so the size is a multiple of the alignment, as C11 asks. */
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded == 0) rounded = 64;
    if (posix_memalign(&p, 64, rounded) != 0) {
        moe_error_set(MOE_ERR_NOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
        return NULL;
    }
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
