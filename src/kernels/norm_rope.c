/* kernels/norm_rope.c — see norm_rope.h. */
#include "kernels/norm_rope.h"

#include <math.h>

void moe_rmsnorm(int n, const float *x, const float *w, float eps, float *y)
{
    /* the mean square in double: no loss for long rows, and within float
     * rounding of the reference's float32 sum */
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) y[i] = w[i] * (x[i] * inv);
}

void moe_rope_angles(int head_dim, double theta, int pos, float *cos_out, float *sin_out)
{
    for (int i = 0; i < head_dim / 2; i++) {
        float exponent = (float)(2 * i) / (float)head_dim;
        float inv_freq = 1.0f / powf((float)theta, exponent);
        float angle = (float)pos * inv_freq;
        cos_out[i] = cosf(angle);
        sin_out[i] = sinf(angle);
    }
}

void moe_rope_apply(int head_dim, float *x, const float *cos_t, const float *sin_t)
{
    int h = head_dim / 2;
    for (int i = 0; i < h; i++) {
        float a = x[i], b = x[i + h];
        x[i] = a * cos_t[i] - b * sin_t[i];
        x[i + h] = b * cos_t[i] + a * sin_t[i];
    }
}
