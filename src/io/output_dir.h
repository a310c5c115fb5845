/* io/output_dir.h — writing a whole directory so that `out` is only ever
 * absent, the old directory, or the complete new one: files go into a
 * temporary directory beside `out` (same file system), which is renamed into
 * place at the end — swapped with the old one in a single rename when
 * replacing. A process killed mid-way leaves `out` untouched and at most a
 * `<out>.tmp.XXXXXX` directory beside it.
 *
 * Such leftovers are cleared by the next run for the same `out`: each
 * temporary directory holds a file `.moe-owner` that its writer keeps
 * locked (flock) while it lives. The lock goes with the process, however it
 * ends, so a `<out>.tmp.XXXXXX` of this user whose owner file is there and
 * not locked was left by a run that died, and begin removes it. A directory
 * without the file (not moe's) or with it locked (a run in progress) is left
 * alone. The owner file is gone before the directory is renamed into place. */
#ifndef MOE_IO_OUTPUT_DIR_H
#define MOE_IO_OUTPUT_DIR_H

#include "moe/status.h"

typedef struct {
    char *out;                /* the destination, trailing slashes removed */
    char *tmp;                /* the directory being written */
    int replace;              /* `out` exists and is to be replaced */
    int owner_fd;             /* the locked tmp/.moe-owner; -1 when none */
    int stale_removed;        /* leftovers of killed runs that begin removed */
} moe_outdir;

/* Checks `out` and creates the temporary directory (after removing the
 * stale ones of killed runs: od->stale_removed counts them). An existing
 * `out` is an error unless `force`, and even then only a directory that is
 * empty or holds a config.json (a model directory) is replaced. `keep`,
 * when not NULL, is a path that must survive: `out` may not be it or hold it. */
moe_status moe_outdir_begin(const char *out, int force, const char *keep, moe_outdir *od);

/* tmp/name, malloc'd; NULL (with the error set) when out of memory. */
char *moe_outdir_file(const moe_outdir *od, const char *name);

/* Renames the temporary directory to `out` (replacing the old one, then
 * deleting it). On failure the new files stay in od->tmp, named in the
 * message. Finishes od either way. */
moe_status moe_outdir_commit(moe_outdir *od);

/* Deletes the temporary directory and what is in it; finishes od. */
void moe_outdir_abort(moe_outdir *od);

/* Copies the regular file `from` to `to` (which must not exist). */
moe_status moe_copy_file(const char *from, const char *to);

/* Deletes `path` and everything below it, without following links. */
int moe_remove_tree(const char *path);

#endif
