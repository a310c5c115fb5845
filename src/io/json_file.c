/* io/json_file.c — see json_file.h. */
#include "io/json_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

enum { MAX_JSON_BYTES = 64 << 20 };

const char *moe_json_text(json_object *v)
{
    return json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

char *moe_path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

moe_status moe_json_parse_object(const char *text, const char *origin, json_object **out)
{
    *out = NULL;
    enum json_tokener_error jerr;
    json_object *root = json_tokener_parse_verbose(text, &jerr);
    if (!root) return moe_error_set(MOE_ERR_FORMAT, "%s: not valid JSON (%s)", origin, json_tokener_error_desc(jerr));
    if (!json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return moe_error_set(MOE_ERR_FORMAT, "%s: the top level is not a JSON object", origin);
    }
    *out = root;
    return MOE_OK;
}

moe_status moe_text_file_read(const char *path, int optional, size_t max_bytes, char **text, size_t *len)
{
    *text = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (optional && errno == ENOENT) return MOE_OK;
        return moe_error_set(MOE_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    moe_status st = MOE_OK;
    for (;;) {
        if (n + 1 >= cap) {
            cap = cap ? 2 * cap : 16384;
            char *grown = cap <= 2 * max_bytes + 2 ? realloc(buf, cap) : NULL;
            if (!grown) {
                st = moe_error_set(MOE_ERR_NOMEM, "%s: out of memory reading it", path);
                break;
            }
            buf = grown;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n > max_bytes) {
            st = moe_error_set(MOE_ERR_FORMAT, "%s: larger than %zu bytes", path, max_bytes);
            break;
        }
        if (got == 0) break;
    }
    if (st == MOE_OK && ferror(f)) st = moe_error_set(MOE_ERR_IO, "%s: read error", path);
    fclose(f);
    if (st == MOE_OK) {
        buf[n] = '\0';
        if (strlen(buf) != n) st = moe_error_set(MOE_ERR_FORMAT, "%s: holds a NUL byte; not a text file", path);
    }
    if (st != MOE_OK) {
        free(buf);
        return st;
    }
    *text = buf;
    *len = n;
    return MOE_OK;
}

moe_status moe_json_file_load(const char *path, int optional, json_object **out)
{
    *out = NULL;
    char *text;
    size_t len;
    moe_status st = moe_text_file_read(path, optional, MAX_JSON_BYTES, &text, &len);
    if (st != MOE_OK || !text) return st;
    st = moe_json_parse_object(text, path, out);
    free(text);
    return st;
}

moe_status moe_json_visit(const char *dir, const char *name, const char *text, const char *origin,
                          moe_json_visitor visit, void *out, int *found)
{
    *found = 0;
    json_object *root = NULL;
    char *path = NULL;
    moe_status st;
    if (dir) {
        if (!(path = moe_path_join(dir, name))) return moe_error_set(MOE_ERR_NOMEM, "out of memory");
        st = moe_json_file_load(origin = path, 1, &root);
    } else
        st = moe_json_parse_object(text, origin, &root);
    if (st == MOE_OK && root) {
        *found = 1;
        st = visit(root, origin, out);
    }
    json_object_put(root);
    free(path);
    return st;
}
