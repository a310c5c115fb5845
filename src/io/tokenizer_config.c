/* io/tokenizer_config.c — see tokenizer_config.h. */
#include "io/tokenizer_config.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/json_file.h"

static moe_status dup_into(char **dst, const char *s, const char *origin)
{
    if (!(*dst = strdup(s))) return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", origin);
    return MOE_OK;
}

/* "bos_token": "<s>" or {"content": "<s>", ...} (an AddedToken) or null. */
static moe_status read_token(json_object *root, const char *origin, const char *name, char **out)
{
    json_object *v, *content;
    if (!json_object_object_get_ex(root, name, &v) || json_object_is_type(v, json_type_null)) return MOE_OK;
    if (json_object_is_type(v, json_type_string)) return dup_into(out, json_object_get_string(v), origin);
    if (json_object_is_type(v, json_type_object) && json_object_object_get_ex(v, "content", &content) &&
        json_object_is_type(content, json_type_string))
        return dup_into(out, json_object_get_string(content), origin);
    return moe_error_set(MOE_ERR_FORMAT, "%s: field '%s' must be a string or {\"content\": string} (got %s)", origin,
                         name, moe_json_text(v));
}

/* "chat_template": "..." or [{"name": "default", "template": "..."}, ...]. */
static moe_status read_template(json_object *root, const char *origin, moe_tokenizer_config *c)
{
    json_object *v;
    if (!json_object_object_get_ex(root, "chat_template", &v) || json_object_is_type(v, json_type_null)) return MOE_OK;
    const char *tpl = NULL;
    if (json_object_is_type(v, json_type_string)) tpl = json_object_get_string(v);
    else if (json_object_is_type(v, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(v) && !tpl; i++) {
            json_object *e = json_object_array_get_idx(v, i), *name, *t;
            if (json_object_object_get_ex(e, "name", &name) && json_object_is_type(name, json_type_string) &&
                !strcmp(json_object_get_string(name), "default") && json_object_object_get_ex(e, "template", &t) &&
                json_object_is_type(t, json_type_string))
                tpl = json_object_get_string(t);
        }
        if (!tpl)
            return moe_error_set(MOE_ERR_FORMAT, "%s: field 'chat_template' lists templates but none named \"default\"",
                                 origin);
    } else
        return moe_error_set(MOE_ERR_FORMAT, "%s: field 'chat_template' must be a string (got %s)", origin,
                             moe_json_text(v));
    moe_status st = dup_into(&c->chat_template, tpl, origin);
    return st == MOE_OK ? dup_into(&c->template_origin, origin, origin) : st;
}

static moe_status read_all(json_object *root, const char *origin, void *out)
{
    moe_tokenizer_config *c = out;
    moe_status st = read_template(root, origin, c);
    if (st == MOE_OK) st = read_token(root, origin, "bos_token", &c->bos_token);
    if (st == MOE_OK) st = read_token(root, origin, "eos_token", &c->eos_token);
    return st;
}

moe_status moe_tokenizer_config_parse(const char *json, const char *origin, moe_tokenizer_config *out)
{
    memset(out, 0, sizeof *out);
    moe_status st = moe_json_visit(NULL, NULL, json, origin, read_all, out, &out->found);
    if (st != MOE_OK) moe_tokenizer_config_free(out);
    return st;
}

/* DIR/chat_template.jinja whole into c->chat_template, if there is one. */
static moe_status read_jinja(const char *dir, moe_tokenizer_config *c)
{
    char *path = moe_path_join(dir, "chat_template.jinja"), *text;
    size_t len;
    if (!path) return moe_error_set(MOE_ERR_NOMEM, "out of memory");
    moe_status st = moe_text_file_read(path, 1, 16u << 20, &text, &len);
    if (st != MOE_OK || !text) {
        free(path);
        return st;
    }
    free(c->chat_template);
    free(c->template_origin);
    c->chat_template = text;
    c->template_origin = path;
    return MOE_OK;
}

moe_status moe_tokenizer_config_load_dir(const char *dir, moe_tokenizer_config *out)
{
    memset(out, 0, sizeof *out);
    moe_status st = moe_json_visit(dir, "tokenizer_config.json", NULL, NULL, read_all, out, &out->found);
    if (st == MOE_OK) st = read_jinja(dir, out);
    if (st != MOE_OK) moe_tokenizer_config_free(out);
    return st;
}

void moe_tokenizer_config_free(moe_tokenizer_config *c)
{
    if (!c) return;
    free(c->chat_template);
    free(c->template_origin);
    free(c->bos_token);
    free(c->eos_token);
    memset(c, 0, sizeof *c);
}
