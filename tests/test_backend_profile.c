/* tests/test_backend_profile.c — the profiling backend (backend/profile.c)
 * wraps every operation of the backend it holds: an operation it did not
 * wrap would be called with the wrapper's state in place of the inner
 * backend's, so each one is checked to be the wrapper's own, and a few are
 * run to see them counted under their kind and computed by the inner
 * backend. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "backend/backend.h"

/* Adding a member to moe_backend changes its size and stops this test from
 * compiling: wrap the new operation in backend/profile.c (or say below why
 * it needs none), then list it here. */
_Static_assert(sizeof(moe_backend) == 2 * sizeof(void *) + 2 * sizeof(int) + 32 * sizeof(void (*)(void)),
               "moe_backend changed: check backend/profile.c wraps every operation, then update this test");

#define OP(field) { #field, offsetof(moe_backend, field) }
static const struct {
    const char *name;
    size_t at;
} WRAPPED[] = {
    OP(alloc),          OP(free),          OP(upload),           OP(download),     OP(linear_create),
    OP(linear_load_rows), OP(linear_free), OP(experts_create),   OP(experts_load), OP(experts_set_fused),
    OP(experts_free),   OP(embed),         OP(rmsnorm),          OP(linear),       OP(split_cols),
    OP(clip),           OP(rope_angles),   OP(rope),             OP(kv_store),     OP(attention),
    OP(add),            OP(router_topk),   OP(experts),          OP(argmax_rows),  OP(sync),
    OP(destroy),
};
/* not wrapped, and why: linear_bytes, linear_name, experts_fused and
 * experts_bytes take a layer, not the backend; step_begin and step_end are
 * NULL in the wrapper (each operation runs, and is timed, as it comes) */

static void *field(const moe_backend *b, size_t at)
{
    void *p;
    memcpy(&p, (const char *)b + at, sizeof p);
    return p;
}

static void every_operation_is_wrapped(void **state)
{
    (void)state;
    moe_backend *plain = moe_backend_cpu_create(), *wrapped = moe_backend_profile_wrap(moe_backend_cpu_create());
    assert_non_null(plain), assert_non_null(wrapped);
    for (size_t i = 0; i < sizeof WRAPPED / sizeof WRAPPED[0]; i++) {
        void *mine = field(wrapped, WRAPPED[i].at), *inner = field(plain, WRAPPED[i].at);
        if (!mine || mine == inner) fail_msg("profile backend: %s is not wrapped", WRAPPED[i].name);
    }
    assert_null(wrapped->step_begin), assert_null(wrapped->step_end);
    assert_ptr_equal(wrapped->linear_bytes, plain->linear_bytes);
    plain->destroy(plain);
    wrapped->destroy(wrapped);
}

static void operations_counted_by_kind(void **state)
{
    (void)state;
    moe_backend *b = moe_backend_profile_wrap(moe_backend_cpu_create());
    assert_non_null(b);
    float x[5] = { 1.5f, -2.0f, 7.25f, 7.25f, NAN }, y[5] = { 0.5f, 0.5f, 0.5f, 0.5f, 0.5f };
    int32_t id = -1;
    assert_int_equal(b->argmax_rows(b, x, 1, 5, &id), MOE_OK);
    assert_int_equal(id, 2);   /* the first of the largest; NaN never */
    assert_int_equal(b->add(b, 4, x, y), MOE_OK);
    assert_true(x[0] == 2.0f && x[3] == 7.75f);
    double seconds[MOE_OP_COUNT];
    long calls[MOE_OP_COUNT];
    assert_int_equal(moe_backend_profile_read(b, seconds, calls), 1);
    assert_int_equal(calls[MOE_OP_LM_HEAD], 1);
    assert_int_equal(calls[MOE_OP_OTHER], 1);
    assert_int_equal(calls[MOE_OP_EXPERTS], 0);
    moe_backend_profile_reset(b);
    assert_int_equal(moe_backend_profile_read(b, seconds, calls), 1);
    assert_int_equal(calls[MOE_OP_LM_HEAD], 0);
    b->destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_operation_is_wrapped),
        cmocka_unit_test(operations_counted_by_kind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
