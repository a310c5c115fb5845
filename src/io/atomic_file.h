/* io/atomic_file.h — writing a file so that readers (and the user) only
 * ever see the old file or the complete new one: the bytes go to a
 * temporary file beside `path`, renamed over it on success and removed on
 * failure. */
#ifndef MOE_IO_ATOMIC_FILE_H
#define MOE_IO_ATOMIC_FILE_H

#include <stdio.h>

#include "moe/status.h"

typedef struct {
    FILE *f;          /* write here */
    char *path, *tmp;
} moe_atomic_file;

moe_status moe_atomic_open(const char *path, moe_atomic_file *af);

/* ok: close, then rename into place (an error if either fails); !ok: close
 * and remove the temporary file. Either way af is finished with. */
moe_status moe_atomic_close(moe_atomic_file *af, int ok);

#endif
