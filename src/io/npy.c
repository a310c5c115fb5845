/* io/npy.c — see npy.h. The header is the magic "\x93NUMPY", version 1.0, a
 * little-endian u16 length, then a Python dict literal padded with spaces
 * and a newline so that the data starts at a multiple of 64 bytes. */
#include "io/npy.h"

#include <stdio.h>

#include "core/error.h"
#include "io/atomic_file.h"

moe_status moe_npy_write_f32(const char *path, const float *data, int ndim, const int64_t *shape)
{
    if (!path || (!data && ndim > 0) || ndim < 0 || ndim > 8)
        return moe_error_set(MOE_ERR_INVALID_ARG, "npy write: bad arguments");
    char dict[256];
    int len = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        len += snprintf(dict + len, sizeof dict - (size_t)len, "%lld%s", (long long)shape[i],
                        ndim == 1 ? "," : i + 1 < ndim ? ", " : "");
        count *= (size_t)shape[i];
    }
    len += snprintf(dict + len, sizeof dict - (size_t)len, "), }");
    size_t total = 10 + (size_t)len + 1;
    size_t pad = (64 - total % 64) % 64;
    unsigned char head[10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0 };
    size_t hlen = (size_t)len + pad + 1;
    head[8] = (unsigned char)(hlen & 0xff);
    head[9] = (unsigned char)(hlen >> 8);

    moe_atomic_file af;
    moe_status st = moe_atomic_open(path, &af);
    if (st != MOE_OK) return st;
    FILE *f = af.f;
    int ok = fwrite(head, 1, 10, f) == 10 && fwrite(dict, 1, (size_t)len, f) == (size_t)len;
    for (size_t i = 0; ok && i < pad; i++) ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF && fwrite(data, sizeof(float), count, f) == count;
    return moe_atomic_close(&af, ok);
}
