/* tests/test_bad_input.c — the rows of README's "What moe does with bad
 * input": each broken input is made here (from the OLMoE base fixture) and
 * handed to the moe command itself, which must answer with its message and
 * an exit status of 1 to 127 — never a signal, never a hang (each run is
 * killed after 60 s, which fails the test). Checkpoint damage is tried with
 * `moe generate` and `moe convert`, which read checkpoints through the same
 * code and must give the same answer. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "io/output_dir.h"
#include "support/testfile.h"

#ifndef MOE_BINARY
#error "MOE_BINARY (the moe command) must be defined"
#endif

static char g_dir[64];
static char g_base[512], g_text[512];

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/moe-bad-input.XXXXXX");
    snprintf(g_base, sizeof g_base, "%s/tests/fixtures/olmoe/base", MOE_SOURCE_DIR);
    snprintf(g_text, sizeof g_text, "%s/tests/fixtures/text", MOE_SOURCE_DIR);
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return moe_remove_tree(g_dir);
}

/* a/b, in one of a few buffers that later calls reuse (a may be one) */
static char *path_of(const char *a, const char *b)
{
    static char buf[8][600];
    static int k;
    char joined[600];
    snprintf(joined, sizeof joined, "%s/%s", a, b);
    k = (k + 1) % 8;
    memcpy(buf[k], joined, sizeof joined);
    return buf[k];
}

/* A fresh checkpoint directory NAME: the base fixture's files, which the
 * row then damages. */
static const char *checkpoint(const char *name)
{
    static char dirs[4][600];
    static int k;
    k = (k + 1) % 4;
    char *dir = dirs[k];
    snprintf(dir, sizeof dirs[k], "%s/%s", g_dir, name);
    moe_remove_tree(dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    static const char *const FILES[] = { "config.json", "model.safetensors" };
    for (int i = 0; i < 2; i++) {
        size_t n;
        unsigned char *p = test_read_file(path_of(g_base, FILES[i]), &n);
        test_write_file(path_of(dir, FILES[i]), p, n);
        free(p);
    }
    return dir;
}

/* Rewrites DIR/model.safetensors with its header passed through `edit`
 * (the data as it was). */
static void edit_header(const char *dir, void (*edit)(json_object *header))
{
    size_t n;
    unsigned char *p = test_read_file(path_of(dir, "model.safetensors"), &n);
    uint64_t hlen;
    memcpy(&hlen, p, 8);
    json_object *h = json_tokener_parse((const char *)p + 8);
    assert_non_null(h);
    edit(h);
    const char *text = json_object_to_json_string_ext(h, JSON_C_TO_STRING_PLAIN);
    size_t tl = strlen(text), padded = (tl + 7) / 8 * 8, data = n - 8 - hlen;
    unsigned char *out = malloc(8 + padded + data);
    uint64_t le = padded;
    memcpy(out, &le, 8);
    memcpy(out + 8, text, tl);
    memset(out + 8 + tl, ' ', padded - tl);
    memcpy(out + 8 + padded, p + 8 + hlen, data);
    test_write_file(path_of(dir, "model.safetensors"), out, 8 + padded + data);
    free(out);
    free(p);
    json_object_put(h);
}

/* config.json with `from` replaced by `to`. */
static void edit_config(const char *dir, const char *from, const char *to)
{
    size_t n;
    char *p = (char *)test_read_file(path_of(dir, "config.json"), &n);
    char *at = strstr(p, from);
    assert_non_null(at);
    FILE *f = fopen(path_of(dir, "config.json"), "wb");
    fprintf(f, "%.*s%s%s", (int)(at - p), p, to, at + strlen(from));
    fclose(f);
    free(p);
}

/* Runs moe with argv (argv[0] is the subcommand) and `input` on stdin;
 * its stdout and stderr together in *out. Returns the exit status, or
 * fails the test when moe was killed by a signal or ran past 60 s. */
static int run_moe(const char *const *argv, const char *input, char *out, size_t cap)
{
    char tmpl[600];
    snprintf(tmpl, sizeof tmpl, "%s/output.XXXXXX", g_dir);
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    char in_path[600];
    snprintf(in_path, sizeof in_path, "%s/stdin", g_dir);
    test_write_file(in_path, input ? input : "", input ? strlen(input) : 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int in = open(in_path, O_RDONLY);
        dup2(in, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        const char *args[32] = { "moe" };
        int k = 1;
        for (; argv[k - 1] && k < 31; k++) args[k] = argv[k - 1];
        args[k] = NULL;
        execv(MOE_BINARY, (char *const *)args);
        _exit(127);
    }
    int status = 0;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > 60) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            print_error("moe %s ran past 60 s (a hang)\n", argv[0]);
            fail();
        }
        usleep(2000);
    }
    lseek(fd, 0, SEEK_SET);
    ssize_t got = read(fd, out, cap - 1);
    out[got > 0 ? got : 0] = '\0';
    close(fd);
    unlink(tmpl);
    if (WIFSIGNALED(status)) {
        print_error("moe %s died of signal %d:\n%s\n", argv[0], WTERMSIG(status), out);
        fail();
    }
    return WEXITSTATUS(status);
}

/* moe ARGV... must fail with status 1..127 and say `needle`. */
static void expect_refusal(const char *const *argv, const char *input, const char *needle)
{
    char out[16384];
    int rc = run_moe(argv, input, out, sizeof out);
    if (rc < 1 || rc > 127 || !strstr(out, needle)) {
        print_error("moe %s: exit %d, said:\n%s\nwanted a failure saying \"%s\"\n", argv[0], rc, out, needle);
        fail();
    }
}

/* A damaged checkpoint: refused alike by generate and convert. */
static void expect_checkpoint_refused(const char *dir, const char *needle)
{
    const char *gen[] = { "generate", "--model", dir, "--tokens", "1,2", "-n", "1", NULL };
    expect_refusal(gen, NULL, needle);
    const char *conv[] = { "convert", "--model", dir, "--out", path_of(g_dir, "never-written"), NULL };
    expect_refusal(conv, NULL, needle);
    struct stat st;
    assert_int_not_equal(stat(path_of(g_dir, "never-written"), &st), 0);
}

/* ---- the rows ---- */

static void truncated_file(void **state)
{
    (void)state;
    const char *dir = checkpoint("truncated");
    assert_int_equal(truncate(path_of(dir, "model.safetensors"), 1000000), 0);
    expect_checkpoint_refused(dir, "run past the data buffer");
    assert_int_equal(truncate(path_of(dir, "model.safetensors"), 0), 0);
    expect_checkpoint_refused(dir, "0 bytes, too short for the 8-byte header length");
    /* config.json cut mid-way */
    dir = checkpoint("cut-config");
    assert_int_equal(truncate(path_of(dir, "config.json"), 100), 0);
    expect_checkpoint_refused(dir, "cut-config/config.json: not valid JSON");
}

static void header_claims_2_60_bytes(void **state)
{
    (void)state;
    const char *dir = checkpoint("header-2-60");
    test_write_file(path_of(dir, "model.safetensors"), "\0\0\0\0\0\0\0\x10{}      ", 16);
    expect_checkpoint_refused(dir, "header length 1152921504606846976 is absurd");
}

static void set_dtype(json_object *h)
{
    json_object *t = json_object_object_get(h, "model.norm.weight");
    json_object_object_add(t, "dtype", json_object_new_string("I32"));
}

static void wrong_dtype(void **state)
{
    (void)state;
    const char *dir = checkpoint("wrong-dtype");
    edit_header(dir, set_dtype);
    expect_checkpoint_refused(dir, "tensor 'model.norm.weight' has dtype I32, expected F32, F16 or BF16");
}

static void set_shape(json_object *h)
{
    json_object *t = json_object_object_get(h, "model.layers.0.self_attn.q_proj.weight"), *s = json_object_new_array();
    json_object_array_add(s, json_object_new_int(256));
    json_object_array_add(s, json_object_new_int(64));
    json_object_object_add(t, "shape", s);
}

static void wrong_shape(void **state)
{
    (void)state;
    const char *dir = checkpoint("wrong-shape");
    edit_header(dir, set_shape);
    expect_checkpoint_refused(dir, "tensor 'model.layers.0.self_attn.q_proj.weight' has shape [256, 64], expected [128, 128]");
}

static void rename_norm(json_object *h)
{
    json_object *t = json_object_get(json_object_object_get(h, "model.norm.weight"));
    json_object_object_del(h, "model.norm.weight");
    json_object_object_add(h, "model.norm.weight_renamed", t);
}

static void missing_tensor(void **state)
{
    (void)state;
    const char *dir = checkpoint("missing-tensor");
    edit_header(dir, rename_norm);
    expect_checkpoint_refused(dir, "tensor 'model.norm.weight' is missing from the checkpoint");
}

static void overflowing_shape(json_object *h)
{
    json_object *t = json_object_object_get(h, "model.norm.weight"), *s = json_object_new_array();
    json_object_array_add(s, json_object_new_int64(4294967296));
    json_object_array_add(s, json_object_new_int64(4294967296));
    json_object_array_add(s, json_object_new_int(16));
    json_object_object_add(t, "shape", s);
}

static void shapes_that_overflow(void **state)
{
    (void)state;
    const char *dir = checkpoint("overflowing-shape");
    edit_header(dir, overflowing_shape);
    expect_checkpoint_refused(dir, "shape of F32 [ 4294967296, 4294967296, 16 ] needs more than 18446744073709551615");
    dir = checkpoint("overflowing-heads");
    edit_config(dir, "\"num_attention_heads\": 4", "\"head_dim\": 1073741824, \"num_attention_heads\": 4");
    expect_checkpoint_refused(dir, "make projections wider than 2147483647 rows");
    dir = checkpoint("vocab-2-31");
    edit_config(dir, "\"vocab_size\": 251", "\"vocab_size\": 2147483648");
    expect_checkpoint_refused(dir, "field 'vocab_size' is 2147483648, outside 1..2147483647");
    dir = checkpoint("layers-2-20");
    edit_config(dir, "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1048576");
    expect_checkpoint_refused(dir, "field 'num_hidden_layers' is 1048576, more than the 65536 layers moe takes");
}

static void unsupported_architecture(void **state)
{
    (void)state;
    const char *dir = checkpoint("llama");
    edit_config(dir, "\"model_type\": \"olmoe\"", "\"model_type\": \"llama\"");
    expect_checkpoint_refused(dir, "model_type 'llama' is not supported (moe runs: olmoe, qwen3_moe, mixtral)");
}

static void bad_index(void **state)
{
    (void)state;
    const char *dir = checkpoint("index-escapes");
    unlink(path_of(dir, "model.safetensors"));
    const char *idx = "{\"weight_map\": {\"lm_head.weight\": \"../base/model.safetensors\"}}";
    test_write_file(path_of(dir, "model.safetensors.index.json"), idx, strlen(idx));
    expect_checkpoint_refused(dir, "tensor 'lm_head.weight' maps to \"..\\/base\\/model.safetensors\", not a file name");
    idx = "{\"weight_map\": {\"lm_head.weight\": \"model-00002-of-00002.safetensors\"}}";
    test_write_file(path_of(dir, "model.safetensors.index.json"), idx, strlen(idx));
    expect_checkpoint_refused(dir, "model-00002-of-00002.safetensors': cannot open: No such file or directory");
}

static void not_a_file(void **state)
{
    (void)state;
    /* a directory for a file */
    const char *dir = checkpoint("dir-for-config");
    unlink(path_of(dir, "config.json"));
    assert_int_equal(mkdir(path_of(dir, "config.json"), 0755), 0);
    expect_checkpoint_refused(dir, "dir-for-config/config.json: is a directory, not a file");
    dir = checkpoint("dir-for-weights");
    unlink(path_of(dir, "model.safetensors"));
    assert_int_equal(mkdir(path_of(dir, "model.safetensors"), 0755), 0);
    expect_checkpoint_refused(dir, "dir-for-weights/model.safetensors': not a regular file");
    /* a FIFO nobody writes to: refused, not waited on */
    dir = checkpoint("fifo-config");
    unlink(path_of(dir, "config.json"));
    assert_int_equal(mkfifo(path_of(dir, "config.json"), 0644), 0);
    expect_checkpoint_refused(dir, "fifo-config/config.json: not a regular file");
    dir = checkpoint("fifo-weights");
    unlink(path_of(dir, "model.safetensors"));
    assert_int_equal(mkfifo(path_of(dir, "model.safetensors"), 0644), 0);
    expect_checkpoint_refused(dir, "fifo-weights/model.safetensors': not a regular file");
    /* a symlink loop */
    dir = checkpoint("symlink-loop");
    unlink(path_of(dir, "config.json"));
    assert_int_equal(symlink("config.json", path_of(dir, "config.json")), 0);
    expect_checkpoint_refused(dir, "symlink-loop/config.json: cannot open (Too many levels of symbolic links)");
    /* a directory that is not there */
    expect_checkpoint_refused(path_of(g_dir, "no-such-dir"), "no-such-dir/config.json: cannot open (No such file or directory)");
}

static void unreadable_file(void **state)
{
    (void)state;
    /* a file whose reading fails (this process's own memory at address 0) */
    const char *dir = checkpoint("unreadable-eio");
    unlink(path_of(dir, "config.json"));
    assert_int_equal(symlink("/proc/self/mem", path_of(dir, "config.json")), 0);
    expect_checkpoint_refused(dir, "unreadable-eio/config.json: read error (Input/output error)");
    if (geteuid() == 0) return; /* root reads a file of mode 000 */
    dir = checkpoint("unreadable-mode");
    assert_int_equal(chmod(path_of(dir, "config.json"), 0), 0);
    expect_checkpoint_refused(dir, "unreadable-mode/config.json: cannot open (Permission denied)");
}

/* A checkpoint with a text tokenizer: tokenizer.json and the chat files
 * of the text fixtures beside the base model. */
static const char *text_checkpoint(const char *name, const char *tokenizer_json)
{
    const char *dir = checkpoint(name);
    size_t n;
    unsigned char *p = test_read_file(path_of(g_text, "tokenizer_config_tulu.json"), &n);
    test_write_file(path_of(dir, "tokenizer_config.json"), p, n);
    free(p);
    if (tokenizer_json) test_write_file(path_of(dir, "tokenizer.json"), tokenizer_json, strlen(tokenizer_json));
    else {
        p = test_read_file(path_of(g_text, "tokenizer.json"), &n);
        test_write_file(path_of(dir, "tokenizer.json"), p, n);
        free(p);
    }
    return dir;
}

static void bad_tokenizer(void **state)
{
    (void)state;
    const char *dir = text_checkpoint("vocab-id-2-31", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 2147483648}, \"merges\": []}}");
    const char *gen[] = { "generate", "--model", dir, "--prompt", "a", NULL };
    expect_refusal(gen, NULL, "the id of vocab entry 'a' is 2147483648, not a token id");
    dir = text_checkpoint("tokenizer-not-json", "{\"model\": ");
    gen[2] = dir;
    expect_refusal(gen, NULL, "tokenizer-not-json/tokenizer.json: not valid JSON");
    const char *chat[] = { "chat", "--model", dir, NULL };
    expect_refusal(chat, "Hi\n", "tokenizer-not-json/tokenizer.json: not valid JSON");
    /* bytes that are not UTF-8 in a token (JSON is UTF-8; the reference refuses it too) */
    dir = text_checkpoint("tokenizer-not-utf8", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\xcd\": 0}, \"merges\": []}}");
    gen[2] = dir;
    expect_refusal(gen, NULL, "tokenizer-not-utf8/tokenizer.json: not valid JSON (invalid utf-8 string at byte 39)");
}

static void bad_requests(void **state)
{
    (void)state;
    const char *dir = text_checkpoint("text", NULL);
    /* a token outside the vocabulary, ids that are not ids */
    const char *a[] = { "generate", "--model", dir, "--tokens", "1,2,251", NULL };
    expect_refusal(a, NULL, "token id 251 (at 2) is outside the vocabulary 0..250");
    const char *b[] = { "generate", "--model", dir, "--tokens", "1,-2", NULL };
    expect_refusal(b, NULL, "'-2' at position 1 is not a token id");
    const char *c[] = { "generate", "--model", dir, "--tokens", "99999999999999999999", NULL };
    expect_refusal(c, NULL, "at position 0 is not a token id");
    /* a zero-length prompt */
    const char *d[] = { "generate", "--model", dir, "--prompt", "", NULL };
    expect_refusal(d, NULL, "--prompt: the text encodes to no tokens");
    /* a huge context: refused before loading, with both numbers */
    const char *e[] = { "generate", "--model", dir, "--tokens", "1", "--max-context", "1073741824", NULL };
    expect_refusal(e, NULL, "KV cache 2199.0 GB for 1073741824 tokens in F32");
    const char *f[] = { "chat", "--model", dir, "--max-context", "1073741824", NULL };
    expect_refusal(f, "Hi\n", "for 1073741824 tokens in F32");
    /* values out of range */
    const char *g[] = { "generate", "--model", dir, "--tokens", "1", "--prefill-step", "0", NULL };
    expect_refusal(g, NULL, "bad value '0' for '--prefill-step'");
    const char *h[] = { "generate", "--model", dir, "--tokens", "1", "--max-context", "99999999999", NULL };
    expect_refusal(h, NULL, "bad value '99999999999' for '--max-context'");
    /* a turn longer than the context */
    const char *i[] = { "chat", "--model", dir, "--max-context", "8", NULL };
    expect_refusal(i, "Hello there, what is the capital of France?\n", "the conversation is full");
}

/* Invalid UTF-8 is not refused: it is read as U+FFFD, as the reference
 * tokenizer's callers read it (Python's errors="replace"). */
static void invalid_utf8(void **state)
{
    (void)state;
    const char *dir = text_checkpoint("utf8", NULL);
    const char *a[] = { "generate", "--model", dir, "--prompt", "a\xff\xfe" "b", "-n", "1", "--json", NULL };
    char out[16384];
    assert_int_equal(run_moe(a, NULL, out, sizeof out), 0);
    assert_non_null(strstr(out, "\"prompt_tokens\":"));
    const char *b[] = { "chat", "--model", dir, "-n", "1", "--json", NULL };
    assert_int_equal(run_moe(b, "\xc3\x28 \xed\xa0\x80\n", out, sizeof out), 0);
    assert_non_null(strstr(out, "\"turn\":1"));
}

int main(void)
{
    /* the memory check sees a machine of 1 GB, whatever this one has */
    setenv("MOE_MEMORY_AVAILABLE", "1000000000", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(truncated_file),  cmocka_unit_test(header_claims_2_60_bytes),
        cmocka_unit_test(wrong_dtype),     cmocka_unit_test(wrong_shape),
        cmocka_unit_test(missing_tensor),  cmocka_unit_test(shapes_that_overflow),
        cmocka_unit_test(unsupported_architecture), cmocka_unit_test(bad_index),
        cmocka_unit_test(not_a_file),      cmocka_unit_test(unreadable_file),
        cmocka_unit_test(bad_tokenizer),   cmocka_unit_test(bad_requests),
        cmocka_unit_test(invalid_utf8),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
