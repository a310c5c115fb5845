/* io/json_file.c — see json_file.h. */
#include "io/json_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/file.h"

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
    moe_status st = moe_file_read(path, max_bytes, optional, text, len);
    if (st != MOE_OK || !*text || strlen(*text) == *len) return st;
    free(*text);
    *text = NULL;
    *len = 0;
    return moe_error_set(MOE_ERR_FORMAT, "%s: holds a NUL byte; not a text file", path);
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
