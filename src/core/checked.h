/* core/checked.h — sizes computed from numbers moe did not choose (a file's
 * header, a config's fields, a command line, a request) without silent
 * wrap-around: each helper returns 1 with the result, or 0 when it does
 * not fit, so that the caller refuses the input by name before it
 * allocates anything. */
#ifndef MOE_CORE_CHECKED_H
#define MOE_CORE_CHECKED_H

#include <stddef.h>
#include <stdint.h>

/* *out = a·b; 0 (and *out = SIZE_MAX) when it overflows size_t. */
static inline int moe_size_mul(size_t a, size_t b, size_t *out)
{
    if (__builtin_mul_overflow(a, b, out)) return *out = SIZE_MAX, 0;
    return 1;
}

/* *out = a + b; 0 (and *out = SIZE_MAX) when it overflows size_t. */
static inline int moe_size_add(size_t a, size_t b, size_t *out)
{
    if (__builtin_add_overflow(a, b, out)) return *out = SIZE_MAX, 0;
    return 1;
}

/* *out = the product of the n factors; 0 (and *out = SIZE_MAX) when it
 * overflows. A negative factor does not fit either. */
static inline int moe_size_product(const int64_t *factors, int n, size_t *out)
{
    size_t p = 1;
    for (int i = 0; i < n; i++)
        if (factors[i] < 0 || !moe_size_mul(p, (size_t)factors[i], &p)) return *out = SIZE_MAX, 0;
    *out = p;
    return 1;
}

/* *out = a·b as an int; 0 when the product is outside int's range. */
static inline int moe_int_mul(int a, int b, int *out) { return !__builtin_mul_overflow(a, b, out); }

#endif
