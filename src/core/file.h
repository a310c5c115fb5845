/* core/file.h — reading a small file (a JSON config, a tokenizer) whole,
 * whatever the path turns out to be: a FIFO or a device is refused without
 * waiting on it, a directory is named as one, and a file larger than the
 * caller's limit is refused from its size before anything is allocated. */
#ifndef MOE_CORE_FILE_H
#define MOE_CORE_FILE_H

#include <stddef.h>

#include "moe/status.h"

/* Reads `path` into *text (malloc'd, NUL-terminated, free() it; *len without
 * the NUL). Errors name the path: MOE_ERR_IO "PATH: cannot open (reason)"
 * (a missing file, a symlink loop, no permission; MOE_OK with *text NULL
 * instead when the file does not exist and `optional`), "PATH: is a
 * directory, not a file", "PATH: not a regular file", "PATH: read error
 * (reason)"; MOE_ERR_FORMAT "PATH: N bytes, larger than the M-byte limit". */
moe_status moe_file_read(const char *path, size_t max_bytes, int optional, char **text, size_t *len);

#endif
