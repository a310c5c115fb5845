/* core/error.c — per-thread error messages and status names. */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[512];

moe_status moe_error_set(moe_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return s;
}

const char *moe_last_error(void) { return last_error; }

const char *moe_status_name(moe_status s)
{
    static const char *const names[] = {
        [MOE_OK] = "ok",
        [MOE_ERR_INVALID_ARG] = "invalid argument",
        [MOE_ERR_SHAPE] = "shape error",
        [MOE_ERR_DTYPE] = "dtype error",
        [MOE_ERR_RANGE] = "out of range",
        [MOE_ERR_NOMEM] = "out of memory",
        [MOE_ERR_IO] = "i/o error",
        [MOE_ERR_FORMAT] = "format error",
        [MOE_ERR_UNSUPPORTED] = "unsupported",
        [MOE_ERR_DEVICE] = "device error",
    };
    if ((unsigned)s >= sizeof names / sizeof names[0]) return "unknown status";
    return names[s];
}
