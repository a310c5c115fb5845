/* tests/support/testfile.h — whole files written and read back by tests
 * that make their own inputs; failures fail the test. */
#ifndef MOE_TESTS_TESTFILE_H
#define MOE_TESTS_TESTFILE_H

#include <stddef.h>

/* path gets exactly n bytes of p (created or replaced). */
void test_write_file(const char *path, const void *p, size_t n);

/* The whole of path (malloc'd, with a NUL after the n bytes). */
unsigned char *test_read_file(const char *path, size_t *n);

#endif
