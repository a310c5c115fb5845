/* kernels/norm_rope.c — see norm_rope.h. */
#include "kernels/norm_rope.h"

#include <math.h>
#include <stddef.h>

#include "core/threadpool.h"

void moe_rmsnorm(int n, const float *x, const float *w, float eps, float *y)
{
    /* the mean square in double: no loss for long rows, and within float
     * rounding of the reference's float32 sum. Eight partial sums, so the
     * adds do not wait on each other (one chain took 2.8 µs a row of 2048:
     * a decode step runs 65 of them) */
    double part[8] = { 0 };
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) part[j] += (double)x[i + j] * x[i + j];
    for (; i < n; i++) part[0] += (double)x[i] * x[i];
    double ss = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    float inv = (float)(1.0 / sqrt(ss / n + eps));
    for (i = 0; i < n; i++) y[i] = w[i] * (x[i] * inv);
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

/* ---- many rows, split across threads ---- */

/* Rows below this run on the calling thread: a decode step's one row is not
 * worth waking the others for. */
enum { PARALLEL_MIN_ROWS = 16 };

typedef struct {
    int rows, n, heads, head_dim;
    const float *x, *w, *cos_t, *sin_t;
    float *y;
    float eps;
} rows_job;

static void rmsnorm_part(void *arg, int t, int nt)
{
    const rows_job *j = arg;
    int lo, hi;
    moe_parallel_split(j->rows, t, nt, &lo, &hi);
    for (int r = lo; r < hi; r++) moe_rmsnorm(j->n, j->x + (size_t)r * j->n, j->w, j->eps, j->y + (size_t)r * j->n);
}

static void rope_part(void *arg, int t, int nt)
{
    const rows_job *j = arg;
    int lo, hi, half = j->head_dim / 2;
    moe_parallel_split(j->rows, t, nt, &lo, &hi);
    for (int r = lo; r < hi; r++)
        for (int h = 0; h < j->heads; h++)
            moe_rope_apply(j->head_dim, j->y + ((size_t)r * j->heads + h) * j->head_dim, j->cos_t + (size_t)r * half,
                           j->sin_t + (size_t)r * half);
}

static void run_rows(moe_parallel_fn fn, rows_job *j)
{
    if (j->rows >= PARALLEL_MIN_ROWS) moe_parallel_run(fn, j);
    else fn(j, 0, 1);
}

void moe_rmsnorm_rows(int rows, int n, const float *x, const float *w, float eps, float *y)
{
    rows_job j = { .rows = rows, .n = n, .x = x, .w = w, .y = y, .eps = eps };
    run_rows(rmsnorm_part, &j);
}

void moe_rope_rows(int rows, int heads, int head_dim, float *x, const float *cos_t, const float *sin_t)
{
    rows_job j = { .rows = rows, .heads = heads, .head_dim = head_dim, .y = x, .cos_t = cos_t, .sin_t = sin_t };
    run_rows(rope_part, &j);
}
