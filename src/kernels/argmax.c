/* kernels/argmax.c — the greedy choice (kernels/argmax.h). */
#include <math.h>

#include "kernels/argmax.h"

int moe_argmax_f32(const float *z, int n)
{
    int best = 0;
    float m = -INFINITY;
    for (int i = 0; i < n; i++)
        if (z[i] > m) {  /* false for NaN, so NaN is never chosen */
            m = z[i];
            best = i;
        }
    return best;
}
