/* core/error.h — setting the per-thread error message behind moe_last_error(). */
#ifndef MOE_CORE_ERROR_H
#define MOE_CORE_ERROR_H

#include "moe/status.h"

/* Records a printf-style message for moe_last_error() and returns s, so that
 * failures read `return moe_error_set(MOE_ERR_SHAPE, "x has %d columns", n);` */
moe_status moe_error_set(moe_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
