/* core/file.c — see file.h. */
#include "core/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

moe_status moe_file_read(const char *path, size_t max_bytes, int optional, char **text, size_t *len)
{
    *text = NULL;
    *len = 0;
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (optional && errno == ENOENT) return MOE_OK;
        return moe_error_set(MOE_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    }
    struct stat st;
    moe_status s = MOE_OK;
    if (fstat(fd, &st) != 0) s = moe_error_set(MOE_ERR_IO, "%s: cannot stat (%s)", path, strerror(errno));
    else if (S_ISDIR(st.st_mode)) s = moe_error_set(MOE_ERR_IO, "%s: is a directory, not a file", path);
    else if (!S_ISREG(st.st_mode)) s = moe_error_set(MOE_ERR_IO, "%s: not a regular file", path);
    else if ((unsigned long long)st.st_size > max_bytes)
        s = moe_error_set(MOE_ERR_FORMAT, "%s: %lld bytes, larger than the %zu-byte limit", path,
                          (long long)st.st_size, max_bytes);
    /* a regular file never blocks; clear the flag so reads behave plainly */
    if (s == MOE_OK && fcntl(fd, F_SETFL, 0) != 0)
        s = moe_error_set(MOE_ERR_IO, "%s: %s", path, strerror(errno));
    size_t cap = s == MOE_OK ? (size_t)st.st_size + 1 : 0, n = 0;
    char *buf = s == MOE_OK ? malloc(cap) : NULL;
    if (s == MOE_OK && !buf) s = moe_error_set(MOE_ERR_NOMEM, "%s: out of memory reading it", path);
    /* until the end of the file, which may have grown since fstat (up to the limit) */
    while (s == MOE_OK) {
        if (n + 1 == cap) {
            char probe;
            ssize_t more = cap > max_bytes ? read(fd, &probe, 1) : 1;
            if (more == 0) break; /* exactly at the limit */
            if (cap > max_bytes) {
                s = moe_error_set(MOE_ERR_FORMAT, "%s: larger than the %zu-byte limit", path, max_bytes);
                break;
            }
            size_t grown_cap = cap < max_bytes / 2 ? 2 * cap : max_bytes + 1;
            char *grown = realloc(buf, grown_cap);
            if (!grown) {
                s = moe_error_set(MOE_ERR_NOMEM, "%s: out of memory reading it", path);
                break;
            }
            buf = grown, cap = grown_cap;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) s = moe_error_set(MOE_ERR_IO, "%s: read error (%s)", path, strerror(errno));
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    if (s != MOE_OK) {
        free(buf);
        return s;
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return MOE_OK;
}
