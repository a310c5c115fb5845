/* tests/fuzz/fuzz_support.c — see fuzz.h. */
#include "fuzz.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/output_dir.h"

char *fuzz_text(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) abort();
    if (size) memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

void fuzz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: fuzz check failed: %s\n", file, line, what);
    abort();
}

static char dir_path[64];

static void remove_dir(void) { moe_remove_tree(dir_path); }

const char *fuzz_dir(void)
{
    if (!dir_path[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(dir_path, sizeof dir_path, "%s/moe-fuzz.XXXXXX", base && strlen(base) < 32 ? base : "/tmp");
        if (!mkdtemp(dir_path)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(remove_dir);
    }
    return dir_path;
}

int fuzz_write_file(const char *dir, const char *name, const void *data, size_t size)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    const char *p = data;
    while (size) {
        ssize_t w = write(fd, p, size);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        p += w, size -= (size_t)w;
    }
    return close(fd);
}

void fuzz_clear_dir(const char *dir)
{
    moe_remove_tree(dir);
    mkdir(dir, 0700);
}

int fuzz_split(const uint8_t *data, size_t size, const uint8_t **start, size_t *len, int max)
{
    static const char SEP[] = "\n====\n";
    const size_t n = sizeof SEP - 1;
    int k = 0;
    size_t from = 0;
    while (k < max - 1) {
        const uint8_t *hit = size - from >= n ? memmem(data + from, size - from, SEP, n) : NULL;
        if (!hit) break;
        start[k] = data + from, len[k] = (size_t)(hit - (data + from));
        k++;
        from = (size_t)(hit - data) + n;
    }
    start[k] = data + from, len[k] = size - from;
    return k + 1;
}
