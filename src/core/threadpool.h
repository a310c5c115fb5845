/* core/threadpool.h — a fixed team of threads for data-parallel kernels.
 *
 * moe_parallel_run(fn, ctx) calls fn(ctx, i, n) once on each of n threads
 * (the caller is thread 0) and returns when all are done. Threads wait for
 * work by spinning briefly, then sleeping, so that a decode step of a few
 * hundred microseconds does not pay a futex wake-up per layer. */
#ifndef MOE_CORE_THREADPOOL_H
#define MOE_CORE_THREADPOOL_H

#include <stdatomic.h>

typedef void (*moe_parallel_fn)(void *ctx, int thread, int nthreads);

void moe_parallel_run(moe_parallel_fn fn, void *ctx);

/* fn(ctx, 0, 1) on the calling thread alone, moe_parallel_barrier a no-op
 * inside it: for work too small to pay for waking the team. */
void moe_parallel_run_alone(moe_parallel_fn fn, void *ctx);

/* Thread t's share [lo, hi) of n items split evenly over nt threads. */
static inline void moe_parallel_split(int n, int t, int nt, int *lo, int *hi)
{
    *lo = (int)((long long)n * t / nt);
    *hi = (int)((long long)n * (t + 1) / nt);
}

/* Even shares that a free thread may take over, for work whose threads may
 * run at unequal speed: on a busy machine another process may hold one of
 * our cores, and a thread there would finish an even share long after the
 * others. Thread t owns the share moe_parallel_split gives it and walks it
 * from the front, `own` items at a time, so that its memory is read in one
 * stream as with plain shares; once its share is done it takes `steal`
 * items at a time from the back of the others' shares. Zero it before the
 * run (= {0}); loop on moe_work_next until it returns 0. Which thread
 * computes an item never changes its result. */
enum { MOE_WORK_MAX_THREADS = 256 };
typedef struct {
    /* share t: items taken from its front (low 32 bits) and back (high) */
    _Atomic unsigned long long taken[MOE_WORK_MAX_THREADS];
} moe_work;

/* Thread t of nt: its next items [lo, hi) of n; 0 when none is left. */
int moe_work_next(moe_work *w, int t, int nt, int n, int own, int steal, int *lo, int *hi);

/* A barrier across the threads of the current moe_parallel_run. */
void moe_parallel_barrier(void);

#endif
