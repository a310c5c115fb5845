/* io/atomic_file.c — see atomic_file.h. */
#include "io/atomic_file.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

moe_status moe_atomic_open(const char *path, moe_atomic_file *af)
{
    memset(af, 0, sizeof *af);
    size_t n = strlen(path) + 16;
    af->path = strdup(path);
    af->tmp = malloc(n);
    if (!af->path || !af->tmp) {
        free(af->path), free(af->tmp);
        return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(af->tmp, n, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(af->tmp);
    if (fd < 0) {
        moe_status st = moe_error_set(MOE_ERR_IO, "%s: cannot create (%s)", path, strerror(errno));
        free(af->path), free(af->tmp);
        return st;
    }
    mode_t mask = umask(0); /* mkstemp makes 0600; give the file the usual mode */
    umask(mask);
    fchmod(fd, 0666 & ~mask);
    if (!(af->f = fdopen(fd, "wb"))) {
        close(fd);
        unlink(af->tmp);
        free(af->path), free(af->tmp);
        return moe_error_set(MOE_ERR_IO, "%s: cannot open for writing", path);
    }
    return MOE_OK;
}

moe_status moe_atomic_close(moe_atomic_file *af, int ok)
{
    int saved = errno;
    int closed = fclose(af->f) == 0;
    if (ok && !closed) saved = errno;
    moe_status st = MOE_OK;
    if (!ok || !closed || rename(af->tmp, af->path) != 0) {
        if (ok && closed) saved = errno;
        unlink(af->tmp);
        st = moe_error_set(MOE_ERR_IO, "%s: write failed (%s)", af->path, strerror(saved));
    }
    free(af->path), free(af->tmp);
    return st;
}
