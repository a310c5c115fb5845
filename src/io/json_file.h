/* io/json_file.h — a small JSON file of a checkpoint (generation_config.json,
 * tokenizer_config.json) read whole and parsed with json-c, with errors that
 * name the file. */
#ifndef MOE_IO_JSON_FILE_H
#define MOE_IO_JSON_FILE_H

#include <json-c/json.h>
#include <stddef.h>

#include "moe/status.h"

/* Reads and parses `path` into *out (json_object_put it). A file that does
 * not exist is MOE_OK with *out NULL when `optional`, else MOE_ERR_IO; text
 * that is not JSON, or whose top level is not an object, is MOE_ERR_FORMAT. */
moe_status moe_json_file_load(const char *path, int optional, json_object **out);

/* The same from text in memory; `origin` names it in messages. */
moe_status moe_json_parse_object(const char *text, const char *origin, json_object **out);

/* A whole file into *text (malloc'd, NUL-terminated, free() it; *len
 * without the NUL). A file that does not exist is MOE_OK with *text NULL
 * when `optional`, else MOE_ERR_IO; a file over max_bytes or holding a NUL
 * byte is MOE_ERR_FORMAT. */
moe_status moe_text_file_read(const char *path, int optional, size_t max_bytes, char **text, size_t *len);

/* A checkpoint's JSON file read field by field: `visit` gets the top-level
 * object and the name of its origin for messages. From DIR/name when dir is
 * not NULL (a missing file: MOE_OK, *found 0, visit not called), else from
 * `text`, named `origin`. */
typedef moe_status (*moe_json_visitor)(json_object *root, const char *origin, void *out);
moe_status moe_json_visit(const char *dir, const char *name, const char *text, const char *origin,
                          moe_json_visitor visit, void *out, int *found);

/* A value as compact JSON ("</s>", not "<\/s>"), for messages; valid
 * while the value lives. */
const char *moe_json_text(json_object *v);

/* dir + "/" + name, malloc'd; NULL when out of memory. */
char *moe_path_join(const char *dir, const char *name);

#endif
