/* io/npy.c — see npy.h. The header is the magic "\x93NUMPY", version 1.0, a
 * little-endian u16 length, then a Python dict literal padded with spaces
 * and a newline so that the data starts at a multiple of 64 bytes. */
#include "io/npy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

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

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) return moe_error_set(MOE_ERR_NOMEM, "npy write: out of memory");
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        moe_status st = moe_error_set(MOE_ERR_IO, "%s: cannot create (%s)", path, strerror(errno));
        free(tmp);
        return st;
    }
    mode_t mask = umask(0); /* mkstemp makes 0600; give the file the usual mode */
    umask(mask);
    fchmod(fd, 0666 & ~mask);
    FILE *f = fdopen(fd, "wb");
    int ok = f != NULL;
    ok = ok && fwrite(head, 1, 10, f) == 10 && fwrite(dict, 1, (size_t)len, f) == (size_t)len;
    for (size_t i = 0; ok && i < pad; i++) ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF && fwrite(data, sizeof(float), count, f) == count;
    int saved = errno;
    if (f) ok = (fclose(f) == 0) && ok;
    else close(fd);
    if (!ok || rename(tmp, path) != 0) {
        if (ok) saved = errno;
        unlink(tmp);
        free(tmp);
        return moe_error_set(MOE_ERR_IO, "%s: write failed (%s)", path, strerror(saved));
    }
    free(tmp);
    return MOE_OK;
}
