/* tools/cmd_tokenize.c — `moe tokenize`: the ids and pieces of a text, as
 * the checkpoint's tokenizer.json encodes it (with the special tokens its
 * post-processor adds unless --no-special); --bench FILE times the encoder
 * on a file instead; --jsonl FILE encodes and decodes many texts, for
 * comparing with the reference (scripts/fixtures/make_tokenizer_fixtures.py
 * --compare). */
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_probe.h"
#include "commands.h"
#include "moe/tokenizer.h"

static const char *CMD = "tokenize";

void tokenize_usage(FILE *f)
{
    fprintf(f, "usage: moe tokenize (--model DIR | --tokenizer FILE) --text TEXT [--json] [--no-special]\n"
               "       moe tokenize (--model DIR | --tokenizer FILE) --bench FILE [--repeat N] [--json]\n"
               "       moe tokenize (--model DIR | --tokenizer FILE) --jsonl FILE [--no-special]\n\n"
               "Prints the token ids of TEXT (first line) and their pieces (second line, as JSON strings),\n"
               "as the tokenizer.json's encode gives them: with the special tokens its post-processor adds\n"
               "(BOS, EOS and the like) unless --no-special.\n\n"
               "  --model DIR        checkpoint directory: reads DIR/tokenizer.json\n"
               "  --tokenizer FILE   a tokenizer.json\n"
               "  --text TEXT        the text (UTF-8; bytes that are not are read as U+FFFD, as the reference does)\n"
               "  --json             one JSON object: {\"ids\": [...], \"pieces\": [...]}\n"
               "  --no-special       add no special tokens\n"
               "  --bench FILE       time encoding FILE on one thread instead: MB/s with an empty piece cache\n"
               "                     (a freshly loaded tokenizer) and with a warm one, median of --repeat runs\n"
               "  --repeat N         runs for --bench (default 5)\n"
               "  --jsonl FILE       each line of FILE a JSON string: prints a line {\"ids\": [...], \"text\": ...,\n"
               "                     \"text_skip\": ...} for each, the ids and what decoding them gives with and\n"
               "                     without special tokens ('-': standard input)\n");
}

typedef struct {
    const char *model, *tokenizer, *text, *bench, *jsonl;
    int json, no_special, repeat;
} opts;

static int parse(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    o->repeat = 5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **value = !strcmp(a, "--model")       ? &o->model
                             : !strcmp(a, "--tokenizer") ? &o->tokenizer
                             : !strcmp(a, "--text")      ? &o->text
                             : !strcmp(a, "--bench")     ? &o->bench
                             : !strcmp(a, "--jsonl")     ? &o->jsonl
                                                         : NULL;
        if (!strcmp(a, "--json")) o->json = 1;
        else if (!strcmp(a, "--no-special")) o->no_special = 1;
        else if (value || !strcmp(a, "--repeat")) {
            if (i + 1 >= argc) return fprintf(stderr, "moe %s: '%s' needs a value\n(see moe %s --help)\n", CMD, a, CMD), 2;
            const char *v = argv[++i];
            if (value) *value = v;
            else {
                char *end;
                long r = strtol(v, &end, 10);
                if (*end || r < 1 || r > 1000)
                    return fprintf(stderr, "moe %s: bad value '%s' for '--repeat'\n(see moe %s --help)\n", CMD, v, CMD), 2;
                o->repeat = (int)r;
            }
        } else
            return fprintf(stderr, "moe %s: unknown option '%s'\n(see moe %s --help)\n", CMD, a, CMD), 2;
    }
    if (!o->model == !o->tokenizer)
        return fprintf(stderr, "moe %s: give one of --model DIR or --tokenizer FILE\n", CMD), 2;
    if (!!o->text + !!o->bench + !!o->jsonl != 1)
        return fprintf(stderr, "moe %s: --text TEXT is required (or --bench FILE, or --jsonl FILE), one of them\n", CMD),
               2;
    return 0;
}

static moe_tokenizer *open_tokenizer(const opts *o)
{
    moe_tokenizer *t = NULL;
    moe_status st = o->model ? moe_tokenizer_load_dir(o->model, &t) : moe_tokenizer_load(o->tokenizer, &t);
    if (st != MOE_OK) fprintf(stderr, "moe %s: %s\n", CMD, moe_last_error());
    return t;
}

static const char *json_text(json_object *o)
{
    return json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

static int print_tokens(const opts *o, const moe_tokenizer *t, const int32_t *ids, int n)
{
    json_object *obj = json_object_new_object(), *jids = json_object_new_array(), *pieces = json_object_new_array();
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        const char *p = moe_tokenizer_piece(t, ids[i], &len);
        json_object_array_add(jids, json_object_new_int(ids[i]));
        json_object_array_add(pieces, json_object_new_string_len(p ? p : "", (int)len));
    }
    json_object_object_add(obj, "ids", jids);
    json_object_object_add(obj, "pieces", pieces);
    if (o->json) printf("%s\n", json_text(obj));
    else {
        for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        for (int i = 0; i < n; i++) printf(i ? " %s" : "%s", json_text(json_object_array_get_idx(pieces, (size_t)i)));
        printf("\n");
    }
    json_object_put(obj);
    return 0;
}

static char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, len = 0, got;
    char *buf = malloc(cap);
    while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            char *g = realloc(buf, cap *= 2);
            if (!g) free(buf);
            buf = g;
        }
    }
    fclose(f);
    *n = len;
    return buf;
}

/* Each run: a freshly loaded tokenizer encodes the file (empty cache), then
 * encodes it again (warm cache). */
static int bench(const opts *o)
{
    size_t n;
    char *text = read_file(o->bench, &n);
    if (!text) return fprintf(stderr, "moe %s: cannot read '%s'\n", CMD, o->bench), 1;
    double *cold = calloc((size_t)o->repeat, sizeof *cold), *warm = calloc((size_t)o->repeat, sizeof *warm);
    int tokens = 0, rc = 0;
    for (int r = 0; r < o->repeat && !rc; r++) {
        moe_tokenizer *t = open_tokenizer(o);
        if (!t) {
            rc = 1;
            break;
        }
        for (int pass = 0; pass < 2 && !rc; pass++) {
            int32_t *ids;
            double t0 = bench_now_s();
            if (moe_tokenizer_encode(t, text, n, 0, &ids, &tokens) != MOE_OK) {
                fprintf(stderr, "moe %s: %s\n", CMD, moe_last_error());
                rc = 1;
                break;
            }
            (pass ? warm : cold)[r] = bench_now_s() - t0;
            free(ids);
        }
        moe_tokenizer_free(t);
    }
    if (!rc) {
        double mc = bench_median(cold, o->repeat), mw = bench_median(warm, o->repeat);
        if (o->json)
            printf("{\"file\":\"%s\",\"bytes\":%zu,\"tokens\":%d,\"runs\":%d,\"cold_s\":%.6f,\"cold_mb_s\":%.2f,"
                   "\"warm_s\":%.6f,\"warm_mb_s\":%.2f}\n",
                   o->bench, n, tokens, o->repeat, mc, n / mc / 1e6, mw, n / mw / 1e6);
        else
            printf("%s: %zu bytes, %d tokens (%.2f bytes/token); median of %d runs:\n"
                   "  empty cache %.3f s  %.2f MB/s\n  warm cache  %.3f s  %.2f MB/s\n",
                   o->bench, n, tokens, (double)n / (tokens ? tokens : 1), o->repeat, mc, n / mc / 1e6, mw,
                   n / mw / 1e6);
    }
    free(cold);
    free(warm);
    free(text);
    return rc;
}

static json_object *decoded(const moe_tokenizer *t, const int32_t *ids, int n, int flags)
{
    char *text;
    size_t len;
    if (moe_tokenizer_decode(t, ids, n, flags, &text, &len) != MOE_OK) return NULL;
    json_object *s = json_object_new_string_len(text, (int)len);
    free(text);
    return s;
}

/* One line of JSON out for each JSON string in: ids and decoded text. */
static int jsonl(const opts *o)
{
    FILE *f = strcmp(o->jsonl, "-") ? fopen(o->jsonl, "rb") : stdin;
    if (!f) return fprintf(stderr, "moe %s: cannot read '%s'\n", CMD, o->jsonl), 1;
    moe_tokenizer *t = open_tokenizer(o);
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int rc = t ? 0 : 1;
    for (long no = 1; !rc && (got = getline(&line, &cap, f)) > 0; no++) {
        json_object *in = json_tokener_parse(line);
        if (!in || !json_object_is_type(in, json_type_string)) {
            fprintf(stderr, "moe %s: %s line %ld is not a JSON string\n", CMD, o->jsonl, no);
            json_object_put(in);
            rc = 1;
            break;
        }
        int32_t *ids;
        int n;
        if (moe_tokenizer_encode(t, json_object_get_string(in), (size_t)json_object_get_string_len(in), !o->no_special,
                                 &ids, &n) != MOE_OK) {
            fprintf(stderr, "moe %s: %s line %ld: %s\n", CMD, o->jsonl, no, moe_last_error());
            json_object_put(in);
            rc = 1;
            break;
        }
        json_object *out = json_object_new_object(), *jids = json_object_new_array_ext(n);
        for (int i = 0; i < n; i++) json_object_array_add(jids, json_object_new_int(ids[i]));
        json_object_object_add(out, "ids", jids);
        json_object *text = decoded(t, ids, n, 0), *skip = decoded(t, ids, n, MOE_TOKENIZER_SKIP_SPECIAL);
        if (!text || !skip) {
            fprintf(stderr, "moe %s: %s line %ld: %s\n", CMD, o->jsonl, no, moe_last_error());
            rc = 1;
        }
        json_object_object_add(out, "text", text);
        json_object_object_add(out, "text_skip", skip);
        if (!rc) printf("%s\n", json_text(out));
        json_object_put(out);
        json_object_put(in);
        free(ids);
    }
    free(line);
    if (f != stdin) fclose(f);
    moe_tokenizer_free(t);
    return rc;
}

int tokenize_main(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        tokenize_usage(stdout);
        return 0;
    }
    opts o;
    int rc = parse(argc, argv, &o);
    if (rc) return rc;
    if (o.bench) return bench(&o);
    if (o.jsonl) return jsonl(&o);
    moe_tokenizer *t = open_tokenizer(&o);
    if (!t) return 1;
    int32_t *ids;
    int n;
    if (moe_tokenizer_encode(t, o.text, strlen(o.text), !o.no_special, &ids, &n) != MOE_OK) {
        fprintf(stderr, "moe %s: %s\n", CMD, moe_last_error());
        moe_tokenizer_free(t);
        return 1;
    }
    rc = print_tokens(&o, t, ids, n);
    free(ids);
    moe_tokenizer_free(t);
    return rc;
}
