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

/* Items handed out a chunk at a time from a shared counter, for work whose
 * threads may run at unequal speed: on a busy machine another process may
 * hold one of our cores, and a thread there would finish an even share
 * long after the others. Set next to 0 before the run; each thread then
 * loops on moe_work_take, which gives the next [lo, hi) of n items (at
 * most `chunk`), or returns 0 once none is left. Which thread computes an
 * item never changes its result. */
typedef struct {
    atomic_int next;
} moe_work;

static inline int moe_work_take(moe_work *w, int n, int chunk, int *lo, int *hi)
{
    int at = atomic_fetch_add_explicit(&w->next, chunk, memory_order_relaxed);
    if (at >= n) return 0;
    *lo = at;
    *hi = at + chunk < n ? at + chunk : n;
    return 1;
}

/* A barrier across the threads of the current moe_parallel_run. */
void moe_parallel_barrier(void);

#endif
