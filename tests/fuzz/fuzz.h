/* tests/fuzz/fuzz.h — what the fuzz targets share. Each fuzz_<name>.c
 * defines LLVMFuzzerTestOneInput (and, if it needs set-up, a
 * LLVMFuzzerInitialize); built with clang's -fsanitize=fuzzer it is a
 * libFuzzer binary (scripts/fuzz.sh), otherwise it is linked with
 * replay.c, which runs it once over each file of the committed corpus
 * (ctest fuzz_<name>_replay): crashes found once stay caught.
 *
 * A target must never abort on input it merely refuses: a refusal is an
 * error status with a message. It calls fuzz_check() on what must hold
 * whatever the input (ids in range, round trips), and anything else that
 * goes wrong shows as a sanitizer report. */
#ifndef MOE_TESTS_FUZZ_H
#define MOE_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* data[0..size) as a NUL-terminated string (malloc'd; a NUL inside ends
 * what C string readers see, as it would in a file). */
char *fuzz_text(const uint8_t *data, size_t size);

/* A condition every input must meet: prints `what` and aborts when not. */
#define fuzz_check(cond, what) ((cond) ? (void)0 : fuzz_fail(__FILE__, __LINE__, (what)))
void fuzz_fail(const char *file, int line, const char *what) __attribute__((noreturn));

/* A private directory for this process's files (created on first use,
 * removed at exit), and a file written in it. */
const char *fuzz_dir(void);
/* dir/name with `size` bytes; 0, or -1 when it cannot be written. */
int fuzz_write_file(const char *dir, const char *name, const void *data, size_t size);
/* Empties `dir` (not its subdirectories' parents: it removes what is in it). */
void fuzz_clear_dir(const char *dir);

/* Splits input into parts at a separator line: part i is [start[i],
 * start[i] + len[i]). The separator is "\n====\n"; at most max parts. */
int fuzz_split(const uint8_t *data, size_t size, const uint8_t **start, size_t *len, int max);

#endif
