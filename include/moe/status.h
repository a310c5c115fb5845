/* moe/status.h — how every moe call reports failure.
 *
 * A function returns MOE_OK or another moe_status; the human-readable reason
 * (naming the argument, tensor or file at fault) is then in moe_last_error(),
 * kept per thread until the next failing call on that thread. */
#ifndef MOE_STATUS_H
#define MOE_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MOE_OK = 0,
    MOE_ERR_INVALID_ARG,  /* a NULL pointer, a missing option, a bad count */
    MOE_ERR_SHAPE,        /* dimensions that do not fit together */
    MOE_ERR_DTYPE,        /* an unsupported or mismatched data type */
    MOE_ERR_RANGE,        /* an index outside its valid range */
    MOE_ERR_NOMEM,        /* an allocation failed */
    MOE_ERR_IO,           /* a file could not be read or written */
    MOE_ERR_FORMAT,       /* a malformed file or value */
    MOE_ERR_UNSUPPORTED,  /* valid, but not something moe does (yet) */
    MOE_ERR_DEVICE        /* the GPU or its runtime failed a call */
} moe_status;

/* The message of the last failure on this thread ("" when none). */
const char *moe_last_error(void);

/* A short constant name for a status, e.g. "shape error". */
const char *moe_status_name(moe_status s);

#ifdef __cplusplus
}
#endif

#endif
