/* server/http.c — the HTTP side of `moe serve` on libmicrohttpd: routes,
 * the API key, request bodies (bounded), prompts built from requests, and
 * answers, whole or streamed as server-sent events.
 *
 * Threads: libmicrohttpd runs each connection on its own thread, so a
 * request's handler may simply wait for its job; the engine thread runs
 * the model. While it waits, a handler watches its socket: a client that
 * hangs up has its job cancelled, which frees the slot at the next step.
 * Encoding a prompt needs the tokenizer to itself (its cache), hence
 * tok_mu; decoding (in the engine) only reads it. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <netdb.h>

#include "engine.h"
#include "request.h"
#include "response.h"

typedef struct {
    const moe_server_config *cfg;
    moe_engine *engine;
    pthread_mutex_t tok_mu;
    int vocab;
    int32_t end_of_turn;            /* the chat template's, or -1 */
    long long started;              /* Unix seconds */
    pthread_mutex_t serial_mu;
    long long serial;
} server;

/* What one request carries between the handler's calls. */
typedef struct {
    char *body;
    size_t len, cap;
    int too_large;
} request_state;

/* ---- answers ---- */

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned status, const char *type, char *body)
{
    static const char OOM[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
    struct MHD_Response *r =
        body ? MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE)
             : MHD_create_response_from_buffer(sizeof OOM - 1, (void *)OOM, MHD_RESPMEM_PERSISTENT);
    if (!r) return free(body), MHD_NO;
    if (!body) status = 500, type = "application/json";
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, char *body)
{
    return send_text(c, status, "application/json", body);
}

static enum MHD_Result send_error(struct MHD_Connection *c, const moe_api_error *e, const char *method, const char *url)
{
    fprintf(stderr, "moe serve: %d %s %s: %s\n", e->status, method, url, e->message);
    return send_json(c, (unsigned)e->status, moe_api_error_json(e));
}

#define SEND_ERROR(c, method, url, status, type, code, param, ...)                          \
    do {                                                                                \
        moe_api_error e_;                                                               \
        moe_api_error_set(&e_, status, type, code, param, __VA_ARGS__);                 \
        return send_error(c, &e_, method, url);                                         \
    } while (0)

#define TOO_LARGE(S, c, method, url)                                                         \
    SEND_ERROR(c, method, url, 413, "invalid_request_error", "request_too_large", NULL,               \
               "the request body is over the %zu-byte limit (--max-body)", (S)->cfg->max_body)

/* ---- watching a client ---- */

static int client_fd(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* The peer closed its end (or the socket failed). */
static int client_gone(int fd)
{
    if (fd < 0) return 0;
    struct pollfd p = { .fd = fd, .events = POLLRDHUP };
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* Waits (under j->mu) for the engine to signal the job, 100 ms at most. */
static void wait_a_little(moe_job *j)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_nsec += 100000000L;
    if (t.tv_nsec >= 1000000000L) t.tv_sec++, t.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&j->cv, &j->mu, &t);
}

/* ---- requests into jobs ---- */

static int prompt_of(server *S, const moe_api_request *r, int32_t **ids, int *n, moe_api_error *e)
{
    const char *param = r->kind == MOE_API_CHAT ? "messages" : "prompt";
    *ids = NULL;
    *n = 0;
    if (r->prompt_ids) {
        if (!(*ids = malloc(sizeof(int32_t) * (size_t)r->n_prompt_ids))) goto oom;
        memcpy(*ids, r->prompt_ids, sizeof(int32_t) * (size_t)r->n_prompt_ids);
        *n = r->n_prompt_ids;
        for (int i = 0; i < *n; i++)
            if ((*ids)[i] >= S->vocab) {
                moe_api_error_set(e, 400, "invalid_request_error", NULL, "prompt",
                                  "'prompt[%d]' is token id %d, outside the model's vocabulary 0..%d", i,
                                  (int)(*ids)[i], S->vocab - 1);
                return -1;
            }
        return 0;
    }
    if (!S->cfg->tok) {
        moe_api_error_set(e, 400, "invalid_request_error", NULL, param,
                          "this model has no tokenizer (tokenizer.json): send the prompt as token ids to /v1/completions");
        return -1;
    }
    char *text = NULL;
    moe_status st = MOE_OK;
    pthread_mutex_lock(&S->tok_mu);
    if (r->kind == MOE_API_CHAT) {
        st = moe_chat_template_render(S->cfg->tpl, r->messages, r->n_messages, 1, &text);
        if (st == MOE_OK) st = moe_tokenizer_encode(S->cfg->tok, text, strlen(text), 0, ids, n);
    } else {
        st = moe_text_prompt_ids(S->cfg->tok, r->prompt_text, strlen(r->prompt_text), ids, n);
    }
    if (st == MOE_OK) st = moe_text_check_ids(S->cfg->tok, *ids, *n, S->vocab);
    pthread_mutex_unlock(&S->tok_mu);
    free(text);
    if (st == MOE_ERR_NOMEM) goto oom;
    if (st != MOE_OK) {
        moe_api_error_set(e, st == MOE_ERR_INVALID_ARG ? 400 : 500, st == MOE_ERR_INVALID_ARG ? "invalid_request_error"
                          : "server_error", NULL, st == MOE_ERR_INVALID_ARG ? param : NULL, "%s", moe_last_error());
        return -1;
    }
    return 0;
oom:
    moe_api_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    return -1;
}

/* A job from a checked request; NULL with *e set when the prompt or its
 * budget does not fit. */
static moe_job *job_of(server *S, moe_api_request *r, moe_api_error *e)
{
    int32_t *ids;
    int n, C = S->cfg->max_context;
    const char *param = r->kind == MOE_API_CHAT ? "messages" : "prompt";
    if (prompt_of(S, r, &ids, &n, e)) return free(ids), NULL;
    if (n == 0) {
        moe_api_error_set(e, 400, "invalid_request_error", NULL, param, "the prompt encodes to no tokens");
        return free(ids), NULL;
    }
    if (n >= C) {
        moe_api_error_set(e, 400, "invalid_request_error", "context_length_exceeded", param,
                          "this model's context is %d tokens and the prompt has %d: it leaves no room for an answer",
                          C, n);
        return free(ids), NULL;
    }
    if (r->max_tokens > C - n) {
        moe_api_error_set(e, 400, "invalid_request_error", "context_length_exceeded",
                          r->kind == MOE_API_CHAT ? "max_completion_tokens" : "max_tokens",
                          "this model's context is %d tokens; the prompt has %d and %d more were asked for (at most "
                          "%d fit)", C, n, r->max_tokens, C - n);
        return free(ids), NULL;
    }
    moe_job *j = moe_job_new();
    if (!j) {
        moe_api_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        return free(ids), NULL;
    }
    pthread_mutex_lock(&S->serial_mu);
    j->serial = ++S->serial;
    pthread_mutex_unlock(&S->serial_mu);
    j->kind = r->kind;
    j->prompt = ids;
    j->n_prompt = n;
    j->max_tokens = r->max_tokens > 0 ? r->max_tokens : C - n;
    j->sampling = moe_sampler_default_config();
    j->sampling.temperature = r->temperature;
    j->sampling.top_p = r->top_p;
    j->sampling.top_k = r->top_k;
    j->sampling.min_p = r->min_p;
    /* without a seed each request draws differently */
    j->sampling.seed = r->has_seed ? r->seed : (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull + (uint64_t)j->serial;
    for (int i = 0; i < r->n_stop; i++) j->stop[i] = r->stop[i], r->stop[i] = NULL;
    j->n_stop = r->n_stop;
    r->n_stop = 0;
    j->ignore_eos = r->ignore_eos;
    j->keep_ids = r->return_token_ids;
    j->end_of_turn = r->kind == MOE_API_CHAT ? S->end_of_turn : -1;
    j->t_arrival = moe_engine_now();
    return j;
}

static void meta_of(server *S, const moe_job *j, char *id, size_t id_size, moe_api_meta *m)
{
    snprintf(id, id_size, "%s-%lld-%lld", j->kind == MOE_API_CHAT ? "chatcmpl" : "cmpl", S->started, j->serial);
    *m = (moe_api_meta){ .kind = j->kind, .id = id, .created = (long long)time(NULL), .model = S->cfg->model_id };
}

static moe_api_usage usage_of(const moe_job *j)
{
    return (moe_api_usage){ .prompt_tokens = j->n_prompt, .completion_tokens = j->n_gen, .cached_tokens = j->n_cached };
}

/* ---- streaming ---- */

typedef struct {
    server *S;
    moe_job *job;
    int fd;
    char id[64];
    moe_api_meta meta;
    int include_usage;
    size_t sent_text;       /* of job->text */
    int sent_ids;           /* of job->ids */
    int first, finished;
    char *pending;          /* events made, not yet handed over */
    size_t pending_len, pending_off;
} stream;

static int append_event(stream *s, char *ev)
{
    if (!ev) return -1;
    size_t n = strlen(ev);
    char *g = realloc(s->pending, s->pending_len + n + 1);
    if (!g) return free(ev), -1;
    memcpy(g + s->pending_len, ev, n + 1);
    s->pending = g;
    s->pending_len += n;
    free(ev);
    return 0;
}

/* The next events: new text (and ids), and at the end the finish_reason,
 * usage and [DONE]. Waits for the engine, watching the client. -1 when the
 * client is gone or memory ran out. */
static int next_events(stream *s)
{
    moe_job *j = s->job;
    if (s->first) {
        /* as OpenAI's: the first chunk says who speaks (chat) and carries no text */
        s->first = 0;
        return append_event(s, moe_api_chunk_event(&s->meta, "", 0, 1, NULL, NULL, 0));
    }
    pthread_mutex_lock(&j->mu);
    while (!j->done && j->text_len == s->sent_text && (!j->keep_ids || j->n_ids == s->sent_ids)) {
        wait_a_little(j);
        if (!j->done && client_gone(s->fd)) {
            pthread_mutex_unlock(&j->mu);
            moe_job_cancel(s->S->engine, j);
            return -1;
        }
    }
    int rc = 0;
    /* one chunk for everything new; the last one says why it ended */
    size_t len = j->text_len - s->sent_text;
    int n_ids = j->keep_ids ? j->n_ids - s->sent_ids : 0;
    const char *reason = j->done && !j->failed ? j->finish_reason : NULL;
    if (len || n_ids || reason)
        rc |= append_event(s, moe_api_chunk_event(&s->meta, j->text + s->sent_text, len, 0, reason,
                                                  j->keep_ids ? j->ids + s->sent_ids : NULL, n_ids));
    s->sent_text = j->text_len;
    s->sent_ids += n_ids;
    if (j->done) {
        if (j->failed) rc |= append_event(s, moe_api_error_event(&j->err));
        else if (s->include_usage) {
            moe_api_usage u = usage_of(j);
            rc |= append_event(s, moe_api_usage_event(&s->meta, &u));
        }
        rc |= append_event(s, strdup("data: [DONE]\n\n"));
        s->finished = 1;
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    stream *s = cls;
    if (s->pending_off == s->pending_len) {
        free(s->pending);
        s->pending = NULL;
        s->pending_len = s->pending_off = 0;
        if (s->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        if (next_events(s)) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = s->pending_len - s->pending_off < max ? s->pending_len - s->pending_off : max;
    memcpy(buf, s->pending + s->pending_off, n);
    s->pending_off += n;
    return (ssize_t)n;
}

/* The response is gone (sent, or the connection failed): a job not done
 * is cancelled, and the stream's reference dropped. */
static void stream_free(void *cls)
{
    stream *s = cls;
    moe_job_cancel(s->S->engine, s->job);
    moe_job_release(s->S->engine, s->job);
    free(s->pending);
    free(s);
}

static enum MHD_Result answer_stream(server *S, struct MHD_Connection *c, moe_job *j, int include_usage)
{
    stream *s = calloc(1, sizeof *s);
    if (!s) {
        moe_job_cancel(S->engine, j);
        moe_job_release(S->engine, j);
        return send_json(c, 500, NULL);
    }
    *s = (stream){ .S = S, .job = j, .fd = client_fd(c), .include_usage = include_usage, .first = 1 };
    meta_of(S, j, s->id, sizeof s->id, &s->meta);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, s, stream_free);
    if (!r) {
        stream_free(s);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* The whole answer once the job is done; the client watched meanwhile. */
static enum MHD_Result answer_whole(server *S, struct MHD_Connection *c, moe_job *j)
{
    int fd = client_fd(c);
    pthread_mutex_lock(&j->mu);
    while (!j->done) {
        wait_a_little(j);
        if (!j->done && client_gone(fd)) {
            pthread_mutex_unlock(&j->mu);
            moe_job_cancel(S->engine, j);
            moe_job_release(S->engine, j);
            return MHD_NO;   /* closes the connection */
        }
    }
    pthread_mutex_unlock(&j->mu);
    char id[64];
    moe_api_meta m;
    meta_of(S, j, id, sizeof id, &m);
    moe_api_usage u = usage_of(j);
    enum MHD_Result ret;
    if (j->failed) {
        moe_api_error e = j->err;
        ret = send_json(c, (unsigned)e.status, moe_api_error_json(&e));
    } else {
        ret = send_json(c, 200, moe_api_response_json(&m, j->text, j->text_len, j->finish_reason, &u,
                                                      j->keep_ids ? j->ids : NULL, j->n_ids));
    }
    moe_job_release(S->engine, j);
    return ret;
}

static enum MHD_Result generate(server *S, struct MHD_Connection *c, moe_api_kind kind, request_state *rs,
                                const char *method, const char *url)
{
    moe_api_request r;
    moe_api_error e;
    if (rs->too_large) TOO_LARGE(S, c, method, url);
    if (moe_api_request_parse(rs->body ? rs->body : "", rs->len, kind, &r, &e)) return send_error(c, &e, method, url);
    if (r.model && strcmp(r.model, S->cfg->model_id) != 0) {
        moe_api_error_set(&e, 404, "invalid_request_error", "model_not_found", "model",
                          "the model '%s' does not exist; this server serves '%s'", r.model, S->cfg->model_id);
        moe_api_request_free(&r);
        return send_error(c, &e, method, url);
    }
    if (kind == MOE_API_CHAT && !S->cfg->tpl) {
        moe_api_request_free(&r);
        SEND_ERROR(c, method, url, 400, "invalid_request_error", NULL, "messages",
              "this model has no chat template (tokenizer_config.json); use /v1/completions, or start the server "
              "with --chat-template NAME");
    }
    moe_job *j = job_of(S, &r, &e);
    int stream = r.stream, include_usage = r.include_usage;
    moe_api_request_free(&r);
    if (!j) return send_error(c, &e, method, url);
    if (moe_engine_submit(S->engine, j, &e)) {
        moe_job_release(S->engine, j);
        return send_error(c, &e, method, url);
    }
    return stream ? answer_stream(S, c, j, include_usage) : answer_whole(S, c, j);
}

/* ---- routes ---- */

/* Compares the whole key whatever differs, so timing tells nothing. */
static int key_ok(const char *want, const char *header)
{
    static const char BEARER[] = "Bearer ";
    if (!header || strncmp(header, BEARER, sizeof BEARER - 1) != 0) return 0;
    const char *got = header + sizeof BEARER - 1;
    size_t a = strlen(want), b = strlen(got);
    unsigned diff = a != b;
    for (size_t i = 0; i < a; i++) diff |= (unsigned char)want[i] ^ (unsigned char)(i < b ? got[i] : 0);
    return diff == 0;
}

static enum MHD_Result route(server *S, struct MHD_Connection *c, const char *url, const char *method,
                             request_state *rs)
{
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    static const struct {
        const char *path;
        int post;
    } ROUTES[] = { { "/health", 0 }, { "/metrics", 0 }, { "/v1/models", 0 }, { "/v1/chat/completions", 1 },
                   { "/v1/completions", 1 } };
    int k = -1;
    for (int i = 0; i < 5; i++)
        if (!strcmp(url, ROUTES[i].path)) k = i;
    if (k < 0) SEND_ERROR(c, method, url, 404, "invalid_request_error", "not_found", NULL, "no such path: %s %s", method, url);
    if (ROUTES[k].post ? !post : !get)
        SEND_ERROR(c, method, url, 405, "invalid_request_error", "method_not_allowed", NULL, "%s takes %s, not %s", url,
              ROUTES[k].post ? "POST" : "GET", method);
    if (k == 0) return send_json(c, 200, strdup("{\"status\":\"ok\"}"));
    if (S->cfg->api_key &&
        !key_ok(S->cfg->api_key, MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION)))
        SEND_ERROR(c, method, url, 401, "invalid_request_error", "invalid_api_key", NULL,
              "a wrong or missing API key: send the server's --api-key as \"Authorization: Bearer KEY\"");
    if (k == 1) {
        moe_server_stats st;
        moe_engine_stats(S->engine, &st);
        return send_text(c, 200, "text/plain; version=0.0.4", moe_server_metrics_text(&st));
    }
    if (k == 2) return send_json(c, 200, moe_api_models_json(S->cfg->model_id, S->started));
    return generate(S, c, k == 3 ? MOE_API_CHAT : MOE_API_COMPLETION, rs, method, url);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **state)
{
    (void)version;
    server *S = cls;
    request_state *rs = *state;
    if (!rs) {
        if (!(rs = calloc(1, sizeof *rs))) return MHD_NO;
        *state = rs;
        /* a body announced over the limit is refused before it is read */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > S->cfg->max_body) TOO_LARGE(S, c, method, url);
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (rs->too_large || rs->len + n > S->cfg->max_body) {
            rs->too_large = 1;   /* the rest is read and dropped */
            return MHD_YES;
        }
        if (rs->len + n + 1 > rs->cap) {
            size_t cap = rs->cap ? rs->cap : 4096;
            while (cap < rs->len + n + 1) cap *= 2;
            char *g = realloc(rs->body, cap);
            if (!g) return MHD_NO;
            rs->body = g;
            rs->cap = cap;
        }
        memcpy(rs->body + rs->len, upload, n);
        rs->body[rs->len += n] = '\0';
        return MHD_YES;
    }
    return route(S, c, url, method, rs);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **state, enum MHD_RequestTerminationCode why)
{
    (void)cls, (void)c, (void)why;
    request_state *rs = *state;
    if (rs) free(rs->body), free(rs);
    *state = NULL;
}

/* One write for the whole line: other threads log their requests meanwhile,
 * and a prefix written apart from its message let their lines in between. */
static void log_mhd(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    fprintf(stderr, "moe serve: http: %s%s", msg, n && msg[n - 1] == '\n' ? "" : "\n");
}

/* ---- running ---- */

static int resolve(const char *host, int port, struct sockaddr_storage *addr)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc) {
        fprintf(stderr, "moe serve: --host %s: %s\n", host, gai_strerror(rc));
        return -1;
    }
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

int moe_server_run(const moe_server_config *cfg)
{
    server S = { .cfg = cfg, .vocab = moe_model_get_info(cfg->model).vocab_size, .end_of_turn = -1,
                 .started = (long long)time(NULL) };
    if (cfg->tpl && cfg->tok) {
        const char *eot = moe_chat_template_end_of_turn(cfg->tpl);
        S.end_of_turn = eot ? moe_tokenizer_token_id(cfg->tok, eot) : -1;
        if (S.end_of_turn < 0) {
            fprintf(stderr, "moe serve: the %s chat template ends a turn with '%s', which is not a token of the "
                    "tokenizer\n", moe_chat_format_name(cfg->tpl->format), eot ? eot : "");
            return 1;
        }
    }
    struct sockaddr_storage addr;
    if (resolve(cfg->host, cfg->port, &addr)) return 1;
    pthread_mutex_init(&S.tok_mu, NULL);
    pthread_mutex_init(&S.serial_mu, NULL);
    /* the signals are taken by sigtimedwait below: blocked in every thread started from here */
    sigset_t sigs, old;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, &old);
    signal(SIGPIPE, SIG_IGN);
    moe_engine_config ec = { .model = cfg->model, .tok = cfg->tok, .eos = cfg->eos, .parallel = cfg->parallel,
                             .max_context = cfg->max_context, .batch_tokens = cfg->batch_tokens, .queue = cfg->queue,
                             .log = 1, .step_delay_ms = cfg->step_delay_ms };
    int rc = 1;
    struct MHD_Daemon *d = NULL;
    if (moe_engine_create(&ec, &S.engine) != MOE_OK) {
        fprintf(stderr, "moe serve: %s\n", moe_last_error());
        goto out;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG | (addr.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    d = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, &S, MHD_OPTION_EXTERNAL_LOGGER, log_mhd,
                         NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_NOTIFY_COMPLETED,
                         on_completed, &S, MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned)(4 * (cfg->parallel + cfg->queue) + 16), MHD_OPTION_CONNECTION_TIMEOUT, 600u,
                         MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "moe serve: cannot listen on %s port %d: %s\n", cfg->host, cfg->port, strerror(errno));
        goto out;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    int port = di ? di->port : cfg->port;
    int v6 = addr.ss_family == AF_INET6;
    fprintf(stderr, "moe serve: listening on http://%s%s%s:%d (model '%s', %d slot%s of %d tokens, %d tokens a step)\n",
            v6 ? "[" : "", cfg->host, v6 ? "]" : "", port, cfg->model_id, cfg->parallel, cfg->parallel == 1 ? "" : "s",
            cfg->max_context, cfg->batch_tokens);
    fflush(stderr);
    int sig;
    while ((sig = sigwaitinfo(&sigs, NULL)) < 0 && errno == EINTR) {}
    fprintf(stderr, "moe serve: %s: draining (%d request%s in flight); again to stop at once\n",
            sig == SIGINT ? "interrupt" : "terminate", moe_engine_in_flight(S.engine),
            moe_engine_in_flight(S.engine) == 1 ? "" : "s");
    moe_engine_drain(S.engine);
    MHD_socket listener = MHD_quiesce_daemon(d);
    if (listener != MHD_INVALID_SOCKET) close(listener);
    struct timespec tick = { 0, 50000000L };
    while (moe_engine_in_flight(S.engine) > 0)
        if (sigtimedwait(&sigs, NULL, &tick) > 0) {
            fprintf(stderr, "moe serve: stopping now: cancelling what runs\n");
            moe_engine_cancel_all(S.engine);
        }
    rc = 0;
out:
    if (d) MHD_stop_daemon(d);
    moe_engine_free(S.engine);
    pthread_mutex_destroy(&S.tok_mu);
    pthread_mutex_destroy(&S.serial_mu);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0) fprintf(stderr, "moe serve: stopped\n");
    return rc;
}
