/* core/threadpool.c — the thread team behind moe_parallel_run.
 *
 * Workers are created on first use and kept. A run bumps a generation
 * counter; idle workers spin on it for a while (cheap wake-up between layers)
 * and then sleep on a condition variable (no burnt core when moe is idle). */
#include "core/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "moe/runtime.h"
#include "core/error.h"

enum { MAX_THREADS = 256, SPIN_ROUNDS = 4000 };

static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake;
    atomic_uint generation;
    atomic_int finished;      /* workers done with the current generation */
    atomic_int barrier_count;
    atomic_uint barrier_phase;
    moe_parallel_fn fn;
    void *ctx;
    int team;                 /* threads taking part in the current run */
    int workers;              /* worker threads created (team - 1 at most) */
    int threads_wanted;       /* moe_set_num_threads, 0 = not set yet */
    unsigned born_at[MAX_THREADS]; /* generation when each worker was created */
} pool = { .mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER };

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *worker_main(void *arg)
{
    int id = (int)(intptr_t)arg;
    /* Not the current generation: the creator may bump it before we get here. */
    unsigned seen = pool.born_at[id];
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&pool.generation, memory_order_acquire) == seen) {
            if (++spins < SPIN_ROUNDS) { cpu_relax(); continue; }
            pthread_mutex_lock(&pool.mu);
            while (atomic_load(&pool.generation) == seen) pthread_cond_wait(&pool.wake, &pool.mu);
            pthread_mutex_unlock(&pool.mu);
        }
        seen = atomic_load(&pool.generation);
        if (id < pool.team) pool.fn(pool.ctx, id, pool.team);
        atomic_fetch_add_explicit(&pool.finished, 1, memory_order_release);
    }
    return NULL;
}

int moe_num_threads(void)
{
    if (pool.threads_wanted > 0) return pool.threads_wanted;
    /* decided once: sysconf reads a file under /sys on every call */
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    const char *env = getenv("MOE_THREADS");
    if (env && atoi(env) > 0) n = atoi(env);
    if (n < 1) n = 1;
    if (n > MAX_THREADS) n = MAX_THREADS;
    pool.threads_wanted = (int)n;
    return (int)n;
}

moe_status moe_set_num_threads(int n)
{
    if (n < 1 || n > MAX_THREADS)
        return moe_error_set(MOE_ERR_INVALID_ARG, "thread count %d is outside 1..%d", n, MAX_THREADS);
    pool.threads_wanted = n;
    return MOE_OK;
}

/* Creates workers up to n-1; returns the team size that can run. */
static int ensure_workers(int n)
{
    while (pool.workers < n - 1) {
        pthread_t t;
        pool.born_at[pool.workers + 1] = atomic_load(&pool.generation);
        if (pthread_create(&t, NULL, worker_main, (void *)(intptr_t)(pool.workers + 1)) != 0) break;
        pthread_detach(t);
        pool.workers++;
    }
    return pool.workers + 1 < n ? pool.workers + 1 : n;
}

void moe_parallel_run(moe_parallel_fn fn, void *ctx)
{
    int n = ensure_workers(moe_num_threads());
    pool.team = n; /* read by moe_parallel_barrier, also when running alone */
    if (n == 1) { fn(ctx, 0, 1); return; }
    pool.fn = fn;
    pool.ctx = ctx;
    atomic_store(&pool.finished, 0);
    pthread_mutex_lock(&pool.mu);
    atomic_fetch_add_explicit(&pool.generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mu);
    fn(ctx, 0, n);
    int spins = 0;
    while (atomic_load_explicit(&pool.finished, memory_order_acquire) < pool.workers) {
        if (++spins < SPIN_ROUNDS) cpu_relax();
        else sched_yield();
    }
}

void moe_parallel_run_alone(moe_parallel_fn fn, void *ctx)
{
    pool.team = 1;
    fn(ctx, 0, 1);
}

void moe_parallel_barrier(void)
{
    int n = pool.team;
    if (n <= 1) return;
    unsigned phase = atomic_load(&pool.barrier_phase);
    if (atomic_fetch_add(&pool.barrier_count, 1) == n - 1) {
        atomic_store(&pool.barrier_count, 0);
        atomic_fetch_add(&pool.barrier_phase, 1);
        return;
    }
    int spins = 0;
    while (atomic_load(&pool.barrier_phase) == phase) {
        if (++spins < SPIN_ROUNDS) cpu_relax();
        else sched_yield();
    }
}
