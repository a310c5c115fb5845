/* io/output_dir.c — see output_dir.h. */
#include "io/output_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

static char *join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", a, b);
    return p;
}

/* 1: an empty directory or one holding config.json; 0 otherwise. */
static int looks_replaceable(const char *dir)
{
    char *cfg = join(dir, "config.json");
    struct stat st;
    int has_config = cfg && stat(cfg, &st) == 0 && S_ISREG(st.st_mode);
    free(cfg);
    if (has_config) return 1;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int empty = 1;
    for (struct dirent *e; empty && (e = readdir(d)) != NULL;)
        empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
    closedir(d);
    return empty;
}

/* 1 when `inner` is `outer` or lies below it (both resolved). */
static int contains(const char *outer, const char *inner)
{
    char a[PATH_MAX], b[PATH_MAX];
    if (!realpath(outer, a) || !realpath(inner, b)) return 0;
    size_t n = strlen(a);
    if (n == 1) return 1; /* "/" */
    return strncmp(a, b, n) == 0 && (b[n] == '\0' || b[n] == '/');
}

static const char OWNER[] = ".moe-owner";

/* Creates tmp/.moe-owner and locks it for as long as this process lives
 * (or until finish closes it): the mark of a run in progress. */
static moe_status claim(moe_outdir *od)
{
    char *p = join(od->tmp, OWNER);
    if (!p) return moe_error_set(MOE_ERR_NOMEM, "out of memory");
    int fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    moe_status s = MOE_OK;
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0)
        s = moe_error_set(MOE_ERR_IO, "cannot create and lock '%s' (%s)", p, strerror(errno));
    else {
        char line[64];
        int n = snprintf(line, sizeof line, "moe pid %ld\n", (long)getpid());
        if (write(fd, line, (size_t)n) != n) { /* only informative */ }
        od->owner_fd = fd;
        fd = -1;
    }
    if (fd >= 0) close(fd);
    free(p);
    return s;
}

/* 1 when `path` is a directory of this user holding an owner file that no
 * live process has locked: a run that died left it. Then *lock_fd holds the
 * lock, for the caller to keep while it removes the directory. */
static int is_stale(const char *path, int *lock_fd)
{
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) return 0;
    char *p = join(path, OWNER);
    int fd = p ? open(p, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK) : -1;
    free(p);
    if (fd < 0) return 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return 0;
    }
    *lock_fd = fd;
    return 1;
}

/* Removes `out`.tmp.XXXXXX directories left by killed runs; returns how many. */
static int remove_stale(const char *out)
{
    const char *slash = strrchr(out, '/');
    char *parent = slash ? strndup(out, slash == out ? 1 : (size_t)(slash - out)) : strdup(".");
    const char *base = slash ? slash + 1 : out;
    size_t bn = strlen(base);
    DIR *d = parent ? opendir(parent) : NULL;
    int removed = 0;
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        const char *name = e->d_name;
        if (strncmp(name, base, bn) != 0 || strncmp(name + bn, ".tmp.", 5) != 0 || strlen(name + bn + 5) != 6) continue;
        char *path = join(parent, name);
        int lock;
        if (path && is_stale(path, &lock)) {
            removed += moe_remove_tree(path) == 0;
            close(lock);
        }
        free(path);
    }
    if (d) closedir(d);
    free(parent);
    return removed;
}

moe_status moe_outdir_begin(const char *out, int force, const char *keep, moe_outdir *od)
{
    memset(od, 0, sizeof *od);
    od->owner_fd = -1;
    if (!out || !*out) return moe_error_set(MOE_ERR_INVALID_ARG, "no output directory given");
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/') n--;
    if (!(od->out = strndup(out, n))) return moe_error_set(MOE_ERR_NOMEM, "out of memory");
    struct stat st;
    moe_status s = MOE_OK;
    if (lstat(od->out, &st) == 0) {
        if (!force)
            s = moe_error_set(MOE_ERR_INVALID_ARG, "'%s' already exists; pass --force to replace it", od->out);
        else if (!S_ISDIR(st.st_mode))
            s = moe_error_set(MOE_ERR_INVALID_ARG, "'%s' exists and is not a directory; --force replaces only a model "
                              "directory", od->out);
        else if (keep && contains(od->out, keep))
            s = moe_error_set(MOE_ERR_INVALID_ARG, "'%s' holds the source '%s'; write somewhere else", od->out, keep);
        else if (!looks_replaceable(od->out))
            s = moe_error_set(MOE_ERR_INVALID_ARG, "'%s' is not empty and holds no config.json; --force replaces only "
                              "a model directory", od->out);
        od->replace = 1;
    } else if (errno != ENOENT) {
        s = moe_error_set(MOE_ERR_IO, "'%s': %s", od->out, strerror(errno));
    }
    if (s == MOE_OK) od->stale_removed = remove_stale(od->out);
    if (s == MOE_OK) {
        size_t tn = n + 16;
        if (!(od->tmp = malloc(tn))) s = moe_error_set(MOE_ERR_NOMEM, "out of memory");
        else {
            snprintf(od->tmp, tn, "%s.tmp.XXXXXX", od->out);
            if (!mkdtemp(od->tmp)) {
                s = moe_error_set(MOE_ERR_IO, "cannot create a directory beside '%s' (%s)", od->out, strerror(errno));
                free(od->tmp);
                od->tmp = NULL;
            } else {
                mode_t mask = umask(0); /* mkdtemp makes 0700; give it the usual mode */
                umask(mask);
                chmod(od->tmp, 0777 & ~mask);
                if ((s = claim(od)) != MOE_OK) {
                    moe_remove_tree(od->tmp);
                    free(od->tmp);
                    od->tmp = NULL;
                }
            }
        }
    }
    if (s != MOE_OK) {
        free(od->out);
        memset(od, 0, sizeof *od);
        od->owner_fd = -1;
    }
    return s;
}

char *moe_outdir_file(const moe_outdir *od, const char *name)
{
    char *p = join(od->tmp, name);
    if (!p) moe_error_set(MOE_ERR_NOMEM, "out of memory");
    return p;
}

static void finish(moe_outdir *od)
{
    if (od->owner_fd >= 0) close(od->owner_fd);
    free(od->out), free(od->tmp);
    memset(od, 0, sizeof *od);
    od->owner_fd = -1;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

int moe_remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -1;
    return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void moe_outdir_abort(moe_outdir *od)
{
    if (od->tmp) moe_remove_tree(od->tmp);
    finish(od);
}

/* Replaces od->out with od->tmp; afterwards od->tmp names the old one. */
static int swap_in(moe_outdir *od)
{
#ifdef RENAME_EXCHANGE
    if (renameat2(AT_FDCWD, od->tmp, AT_FDCWD, od->out, RENAME_EXCHANGE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return -1;
#endif
    /* no atomic exchange here: move the old one aside, then the new one in */
    size_t n = strlen(od->out) + 16;
    char *old = malloc(n);
    if (!old) return -1;
    snprintf(old, n, "%s.old.XXXXXX", od->out);
    if (!mkdtemp(old) || rename(od->out, old) != 0) {
        int e = errno;
        rmdir(old);
        free(old);
        errno = e;
        return -1;
    }
    if (rename(od->tmp, od->out) != 0) {
        int e = errno;
        rename(old, od->out);
        free(old);
        errno = e;
        return -1;
    }
    free(od->tmp);
    od->tmp = old;
    return 0;
}

static int move_in(const moe_outdir *od)
{
#ifdef RENAME_NOREPLACE
    if (renameat2(AT_FDCWD, od->tmp, AT_FDCWD, od->out, RENAME_NOREPLACE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return -1;
#endif
    struct stat st;
    if (lstat(od->out, &st) == 0) {
        errno = EEXIST;
        return -1;
    }
    return rename(od->tmp, od->out);
}

moe_status moe_outdir_commit(moe_outdir *od)
{
    /* the owner file goes first (still locked: no one takes the directory for
     * a leftover meanwhile, as it is no longer marked) */
    char *owner = join(od->tmp, OWNER);
    if (owner) unlink(owner);
    free(owner);
    /* the new directory's entries reach the disk before its name does */
    int fd = open(od->tmp, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    moe_status s = MOE_OK;
    if (od->replace ? swap_in(od) != 0 : move_in(od) != 0)
        s = moe_error_set(MOE_ERR_IO, "cannot rename '%s' to '%s' (%s); the complete output is in '%s'", od->tmp,
                          od->out, strerror(errno), od->tmp);
    else if (od->replace && moe_remove_tree(od->tmp) != 0)
        s = moe_error_set(MOE_ERR_IO, "'%s' is in place, but the old one moved to '%s' could not be deleted (%s)",
                          od->out, od->tmp, strerror(errno));
    finish(od);
    return s;
}

moe_status moe_copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) return moe_error_set(MOE_ERR_IO, "%s: cannot open (%s)", from, strerror(errno));
    int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (out < 0) {
        moe_status s = moe_error_set(MOE_ERR_IO, "%s: cannot create (%s)", to, strerror(errno));
        close(in);
        return s;
    }
    char buf[1 << 16];
    ssize_t r = 0;
    int ok = 1;
    while (ok && (r = read(in, buf, sizeof buf)) != 0) {
        if (r < 0) {
            ok = errno == EINTR;
            continue;
        }
        for (ssize_t done = 0; ok && done < r;) {
            ssize_t w = write(out, buf + done, (size_t)(r - done));
            if (w > 0) done += w;
            else ok = w < 0 && errno == EINTR;
        }
    }
    int e = errno;
    if (close(out) != 0 && ok) ok = 0, e = errno;
    close(in);
    if (ok) return MOE_OK;
    unlink(to);
    return moe_error_set(MOE_ERR_IO, "copying %s to %s failed (%s)", from, to, strerror(e));
}
