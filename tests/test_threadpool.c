/* tests/test_threadpool.c — the thread team: every thread of a run runs once
 * with its index, barriers hold every thread until all arrive, and
 * moe_work_next hands out each item exactly once whatever the team size,
 * chunk sizes and thread speeds (a slow thread's share is taken over). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/threadpool.h"
#include "moe/runtime.h"

enum { MAX_ITEMS = 5000 };

typedef struct {
    moe_work work;
    int n, own, steal, slow;    /* slow: this thread starts late */
    atomic_int count[MAX_ITEMS];
    atomic_int ran[64];
    atomic_int by_thread[64];
} work_job;

static void pause_ms(int ms)
{
    struct timespec ts = { 0, (long)ms * 1000000L };
    nanosleep(&ts, NULL);
}

static void work_thread(void *arg, int t, int nt)
{
    work_job *j = arg;
    atomic_fetch_add(&j->ran[t], 1);
    if (t == j->slow && nt > 1 && j->n >= 1001) pause_ms(50);
    int lo, hi;
    while (moe_work_next(&j->work, t, nt, j->n, j->own, j->steal, &lo, &hi)) {
        assert_true(lo >= 0 && lo < hi && hi <= j->n);
        for (int i = lo; i < hi; i++) atomic_fetch_add(&j->count[i], 1);
        atomic_fetch_add(&j->by_thread[t], hi - lo);
    }
}

static void every_item_once(void **state)
{
    (void)state;
    static const int ns[] = { 0, 1, 2, 5, 17, 100, 1001, MAX_ITEMS };
    static const int chunks[][2] = { { 1, 1 }, { 8, 2 }, { 16, 3 }, { 1000, 7 } };
    for (int threads = 1; threads <= 4; threads++)
        for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
            for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++)
                for (int slow = -1; slow < 2; slow++) {
                    assert_int_equal(moe_set_num_threads(threads), MOE_OK);
                    work_job *j = calloc(1, sizeof *j);
                    assert_non_null(j);
                    j->n = ns[a], j->own = chunks[c][0], j->steal = chunks[c][1], j->slow = slow;
                    moe_parallel_run(work_thread, j);
                    for (int t = 0; t < threads; t++)
                        if (atomic_load(&j->ran[t]) != 1) fail_msg("thread %d of %d ran %d times", t, threads, j->ran[t]);
                    for (int i = 0; i < j->n; i++)
                        if (atomic_load(&j->count[i]) != 1)
                            fail_msg("%d threads, n %d, own %d, steal %d: item %d taken %d times", threads, j->n,
                                     j->own, j->steal, i, j->count[i]);
                    /* a thread that starts 50 ms late finds its share
                     * taken over by the others */
                    if (slow >= 0 && threads > 1 && j->n >= 1001 && j->steal < 5)
                        assert_true(atomic_load(&j->by_thread[slow]) < j->n / threads);
                    free(j);
                }
}

typedef struct {
    atomic_int arrived;
    atomic_int wrong;
} barrier_job;

static void barrier_thread(void *arg, int t, int nt)
{
    barrier_job *j = arg;
    for (int round = 1; round <= 50; round++) {
        if (t == round % nt) pause_ms(round % 7 == 0 ? 8 : 0);   /* now and then past the spin */
        atomic_fetch_add(&j->arrived, 1);
        moe_parallel_barrier();
        /* everyone has arrived for this round, no one for the next */
        if (atomic_load(&j->arrived) != round * nt) atomic_fetch_add(&j->wrong, 1);
        moe_parallel_barrier();
    }
}

static void barrier_holds_everyone(void **state)
{
    (void)state;
    for (int threads = 1; threads <= 4; threads++) {
        assert_int_equal(moe_set_num_threads(threads), MOE_OK);
        barrier_job j = { 0 };
        moe_parallel_run(barrier_thread, &j);
        assert_int_equal(atomic_load(&j.wrong), 0);
        assert_int_equal(atomic_load(&j.arrived), 50 * threads);
    }
}

static void thread_counts(void **state)
{
    (void)state;
    assert_true(moe_num_threads() >= 1);
    assert_int_not_equal(moe_set_num_threads(0), MOE_OK);
    assert_int_not_equal(moe_set_num_threads(100000), MOE_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(thread_counts),
        cmocka_unit_test(every_item_once),
        cmocka_unit_test(barrier_holds_everyone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
