/* core/threadpool.c — the thread team behind moe_parallel_run.
 *
 * Workers are created on first use and kept. Every wait — a worker for the
 * next run, the caller for the team to finish, a thread at a barrier — spins
 * for a short while (SPIN_NS: a decode step's regions follow each other
 * within microseconds, far sooner than a futex wake-up), then yields for a
 * few milliseconds (YIELD_NS: about a scheduler time slice, the time a
 * thread of ours waits when another process holds its core), then sleeps on
 * the word it waits for. Sleeping matters on a busy machine: threads that
 * only spin or yield kept taking turns from the stragglers they waited for,
 * and a step took up to ~100× its time; with a process spinning on one of
 * two cores, yielding before sleeping kept decode at 0.50 of its quiet
 * speed where sleeping at once gave 0.37 (bench/RESULTS.md).
 *
 * The default team is one thread per physical core the process may run on
 * (hyperthreads share a core's load and multiply units, which every kernel
 * here keeps busy). */
#include "core/threadpool.h"

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#include "moe/runtime.h"
#include "core/error.h"

enum { MAX_THREADS = 256 };
static const long SPIN_NS = 50 * 1000;           /* spin this long, */
static const long YIELD_NS = 5L * 1000 * 1000;   /* then yield this long, then sleep */

/* A word threads wait on, and how many sleep on it. */
typedef struct {
    atomic_uint value;
    atomic_int sleepers;
} wait_word;

static struct {
    wait_word generation;     /* bumped to start a run */
    wait_word finished;       /* workers done with the current run */
    wait_word barrier_phase;  /* bumped when a barrier opens */
    atomic_int barrier_count;
    moe_parallel_fn fn;
    void *ctx;
    int team;                 /* threads taking part in the current run */
    int workers;              /* worker threads created (team - 1 at most) */
    int threads_wanted;       /* moe_set_num_threads, 0 = not set yet */
    unsigned born_at[MAX_THREADS]; /* generation when each worker was created */
} pool;

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void word_sleep(wait_word *w, unsigned seen)
{
#if defined(__linux__)
    /* returns at once if the word no longer holds `seen` */
    syscall(SYS_futex, &w->value, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
#else
    (void)w, (void)seen;
    sched_yield();
#endif
}

/* Returns once w's value differs from `seen`. */
static void word_wait_change(wait_word *w, unsigned seen)
{
    if (atomic_load_explicit(&w->value, memory_order_acquire) != seen) return;
    long deadline = 0;
    for (int spins = 1;; spins++) {
        cpu_relax();
        if (atomic_load_explicit(&w->value, memory_order_acquire) != seen) return;
        if (spins % 64) continue;     /* the clock costs more than a pause */
        if (!deadline) deadline = now_ns() + SPIN_NS;
        else if (now_ns() >= deadline) break;
    }
    /* then yield for a while: where another thread of ours waits to run on
     * this core it gets it, and where none does we stay on this core rather
     * than sleep and be woken wherever the scheduler likes (often the
     * busy core of the thread that wakes us) */
    for (long until = now_ns() + YIELD_NS; now_ns() < until;) {
        sched_yield();
        if (atomic_load_explicit(&w->value, memory_order_acquire) != seen) return;
    }
    atomic_fetch_add(&w->sleepers, 1);
    while (atomic_load_explicit(&w->value, memory_order_acquire) == seen) word_sleep(w, seen);
    atomic_fetch_sub(&w->sleepers, 1);
}

/* Changes w (by delta) and wakes whoever sleeps on it. The sleeper counts
 * itself before its last look at the value, so either it sees the change
 * or we see it counted. */
static unsigned word_add(wait_word *w, unsigned delta)
{
    unsigned v = atomic_fetch_add_explicit(&w->value, delta, memory_order_acq_rel) + delta;
#if defined(__linux__)
    if (atomic_load(&w->sleepers) > 0) syscall(SYS_futex, &w->value, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#endif
    return v;
}

static void *worker_main(void *arg)
{
    int id = (int)(intptr_t)arg;
    /* Not the current generation: the creator may bump it before we get here. */
    unsigned seen = pool.born_at[id];
    for (;;) {
        word_wait_change(&pool.generation, seen);
        seen = atomic_load_explicit(&pool.generation.value, memory_order_acquire);
        if (id < pool.team) pool.fn(pool.ctx, id, pool.team);
        word_add(&pool.finished, 1);
    }
    return NULL;
}

/* Physical cores among the CPUs this process may run on: a core counted
 * once however many hardware threads it has (sysfs topology); every
 * allowed CPU when the topology cannot be read. */
static int physical_cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        return n > 0 ? (int)n : 1;
    }
    int allowed = CPU_COUNT(&set), cores = 0;
    static long seen[CPU_SETSIZE];
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &set)) continue;
        char path[96];
        long core = -1, package = 0;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
        FILE *f = fopen(path, "r");
        if (!f || fscanf(f, "%ld", &core) != 1) {
            if (f) fclose(f);
            return allowed > 0 ? allowed : 1;
        }
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
        if ((f = fopen(path, "r"))) {
            if (fscanf(f, "%ld", &package) != 1) package = 0;
            fclose(f);
        }
        long key = package * 1000000L + core;
        int known = 0;
        for (int i = 0; i < cores && !known; i++) known = seen[i] == key;
        if (!known) seen[cores++] = key;
    }
    return cores > 0 ? cores : 1;
}

int moe_num_threads(void)
{
    if (pool.threads_wanted > 0) return pool.threads_wanted;
    /* decided once: the topology is read from files */
    int n = physical_cores();
    const char *env = getenv("MOE_THREADS");
    if (env && atoi(env) > 0) n = atoi(env);
    if (n < 1) n = 1;
    if (n > MAX_THREADS) n = MAX_THREADS;
    pool.threads_wanted = n;
    return n;
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
        pool.born_at[pool.workers + 1] = atomic_load(&pool.generation.value);
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
    atomic_store(&pool.finished.value, 0);
    word_add(&pool.generation, 1);
    fn(ctx, 0, n);
    /* every worker (also those beyond the team) reports once a run */
    for (unsigned done; (done = atomic_load_explicit(&pool.finished.value, memory_order_acquire)) <
                        (unsigned)pool.workers;)
        word_wait_change(&pool.finished, done);
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
    unsigned phase = atomic_load(&pool.barrier_phase.value);
    if (atomic_fetch_add(&pool.barrier_count, 1) == n - 1) {
        atomic_store(&pool.barrier_count, 0);
        word_add(&pool.barrier_phase, 1);
        return;
    }
    word_wait_change(&pool.barrier_phase, phase);
}

/* Items of share r from its front (the owner) or its back (another thread). */
static int work_take(moe_work *w, int r, int nt, int n, int chunk, int from_back, int *lo, int *hi)
{
    int a, b;
    moe_parallel_split(n, r, nt, &a, &b);
    unsigned long long cur = atomic_load_explicit(&w->taken[r], memory_order_relaxed);
    for (;;) {
        int front = (int)(cur & 0xffffffffu), back = (int)(cur >> 32), left = b - a - front - back;
        if (left <= 0) return 0;
        int c = chunk < left ? chunk : left;
        unsigned long long next = from_back ? cur + ((unsigned long long)c << 32) : cur + (unsigned long long)c;
        if (atomic_compare_exchange_weak_explicit(&w->taken[r], &cur, next, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *lo = from_back ? b - back - c : a + front;
            *hi = *lo + c;
            return 1;
        }
    }
}

int moe_work_next(moe_work *w, int t, int nt, int n, int own, int steal, int *lo, int *hi)
{
    if (nt > MOE_WORK_MAX_THREADS) nt = MOE_WORK_MAX_THREADS;   /* the pool's own limit */
    if (own < 1) own = 1;
    if (steal < 1) steal = 1;
    if (work_take(w, t, nt, n, own, 0, lo, hi)) return 1;
    for (int i = 1; i < nt; i++)
        if (work_take(w, (t + i) % nt, nt, n, steal, 1, lo, hi)) return 1;
    return 0;
}
