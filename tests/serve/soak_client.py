#!/usr/bin/env python3
"""tests/serve/soak_client.py — a soak test's clients for `moe serve`
(scripts/soak_serve.sh starts the server and runs this).

N client threads send requests for DURATION seconds: good ones (chat and
completions, whole and streamed, short and long, with and without stop
sequences, text and token-id prompts) and bad ones (malformed JSON, wrong
types, an unknown model, values out of range, a max_tokens over the context,
invalid UTF-8, a body over --max-body, an unknown path, a wrong method or
key), and clients that misbehave (hang up mid-stream or before the answer,
read a stream slowly, trickle the body, send half a body and leave). Every
answer is checked: a good request gets a 200 with a well-formed body or
event stream, a bad one a 4xx with an OpenAI error object; a 5xx, a
connection the server dropped, or no answer within the time limit is a
failure. Meanwhile the server's resident memory (VmRSS of /proc/PID/status)
is sampled into a CSV. At the end: the server is still healthy, nothing runs
or waits (/metrics), and a summary of requests by kind, failures and the RSS
curve; exit 1 on any failure, or when RSS grew past --rss-bound-mb after
the warm-up.

Python's standard library only (http.client, socket, threading, json).
"""
import argparse
import http.client
import json
import random
import socket
import sys
import threading
import time

# ---------------------------------------------------------------------------
# settings shared by every thread (set in main)
A = None
STOP = threading.Event()
LOCK = threading.Lock()
COUNTS = {}        # kind -> [requests, failures]
FAILURES = []      # (time, kind, what), the first 50 kept whole
FAIL_TOTAL = [0]
CACHED = [0]     # conversations whose second turn found the first in a slot
CURRENT = {}     # client -> (kind, since): what each is doing


class Fail(Exception):
    """A check that did not hold: the message says which and what came."""


def record(kind, ok, what=""):
    with LOCK:
        c = COUNTS.setdefault(kind, [0, 0])
        c[0] += 1
        if not ok:
            c[1] += 1
            FAIL_TOTAL[0] += 1
            if len(FAILURES) < 50:
                FAILURES.append((time.time() - A.t0, kind, what[:600]))
                print("FAIL %s: %s" % (kind, what[:600]), file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# HTTP

def headers(extra=None, key=True):
    h = {"Content-Type": "application/json"}
    if key and A.api_key:
        h["Authorization"] = "Bearer " + A.api_key
    if extra:
        h.update(extra)
    return h


def conn():
    return http.client.HTTPConnection(A.host, A.port, timeout=A.timeout)


def call(method, path, body=None, hdrs=None):
    """(status, headers, body bytes) of one request on its own connection."""
    c = conn()
    try:
        if isinstance(body, str):
            body = body.encode()
        c.request(method, path, body=body, headers=hdrs if hdrs is not None else headers())
        r = c.getresponse()
        return r.status, r.getheader("Content-Type", ""), r.read()
    finally:
        c.close()


def error_of(status, body, want_status, words=None, code=None):
    """A bad request's answer: want_status and {"error": {"message", ...}}."""
    if status != want_status:
        raise Fail("status %d, wanted %d: %r" % (status, want_status, body[:300]))
    try:
        e = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        raise Fail("no error object: %r" % body[:300])
    if not isinstance(e.get("message"), str) or not e["message"]:
        raise Fail("an error without a message: %r" % body[:300])
    if not {"type", "param", "code"} <= set(e):
        raise Fail("an error object without type, param or code: %r" % body[:300])
    if words and words not in e["message"]:
        raise Fail("the message %r does not say %r" % (e["message"], words))
    if code and e.get("code") != code:
        raise Fail("code %r, wanted %r" % (e.get("code"), code))


def usage_ok(u, max_tokens=None):
    if not isinstance(u, dict):
        raise Fail("no usage: %r" % (u,))
    p, c, t = u.get("prompt_tokens"), u.get("completion_tokens"), u.get("total_tokens")
    if not all(isinstance(x, int) for x in (p, c, t)) or p < 1 or c < 0 or t != p + c:
        raise Fail("usage does not add up: %r" % (u,))
    if max_tokens is not None and c > max_tokens:
        raise Fail("%d tokens generated, %d asked for at most" % (c, max_tokens))
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens")
    if not isinstance(cached, int) or not 0 <= cached <= p:
        raise Fail("cached_tokens %r of %d" % (cached, p))


def text_ok(text, stops):
    if not isinstance(text, str):
        raise Fail("text is not a string: %r" % (text,))
    for s in stops:
        if s in text:
            raise Fail("the text %r holds the stop sequence %r" % (text, s))


def whole_ok(kind, status, ctype, body, req):
    """A good request answered whole."""
    if status != 200:
        raise Fail("status %d: %r" % (status, body[:300]))
    if not ctype.startswith("application/json"):
        raise Fail("content type %r" % ctype)
    try:
        o = json.loads(body)
    except ValueError:
        raise Fail("not JSON: %r" % body[:300])
    want = "chat.completion" if kind == "chat" else "text_completion"
    if o.get("object") != want or not isinstance(o.get("id"), str) or o.get("model") != A.model_id:
        raise Fail("object %r id %r model %r" % (o.get("object"), o.get("id"), o.get("model")))
    ch = o.get("choices")
    if not isinstance(ch, list) or len(ch) != 1:
        raise Fail("choices %r" % (ch,))
    c = ch[0]
    if c.get("finish_reason") not in ("stop", "length"):
        raise Fail("finish_reason %r" % c.get("finish_reason"))
    if kind == "chat":
        m = c.get("message") or {}
        if m.get("role") != "assistant":
            raise Fail("message %r" % (m,))
        text = m.get("content")
    else:
        text = c.get("text")
    stops = stop_list(req)
    text_ok(text, stops)
    mt = req.get("max_tokens", req.get("max_completion_tokens"))
    u = o.get("usage")
    usage_ok(u, mt)
    if c["finish_reason"] == "length" and mt is not None and u["completion_tokens"] != mt:
        raise Fail("finish_reason length after %d of %d tokens" % (u["completion_tokens"], mt))
    if req.get("return_token_ids"):
        ids = c.get("token_ids")
        if not isinstance(ids, list) or len(ids) != u["completion_tokens"]:
            raise Fail("token_ids %r for %d tokens" % (ids, u["completion_tokens"]))


def stop_list(req):
    s = req.get("stop")
    if s is None:
        return []
    return [x for x in ([s] if isinstance(s, str) else s) if x]


class Stream:
    """Reads server-sent events from a response, checking the framing."""

    def __init__(self, resp):
        self.r = resp
        self.buf = b""

    def events(self, pause=0.0, chunk=None):
        """Yields each event's data (str); pause seconds between reads of
        chunk bytes (a slow client), else reads line by line."""
        while True:
            if chunk:
                if pause:
                    time.sleep(pause)
                data = self.r.read1(chunk) if hasattr(self.r, "read1") else self.r.read(chunk)
                if not data:
                    if self.buf.strip():
                        raise Fail("the stream ends inside an event: %r" % self.buf[-200:])
                    return
                self.buf += data
            else:
                line = self.r.readline()
                if not line:
                    if self.buf.strip():
                        raise Fail("the stream ends inside an event: %r" % self.buf[-200:])
                    return
                self.buf += line
            while b"\n\n" in self.buf:
                ev, self.buf = self.buf.split(b"\n\n", 1)
                lines = ev.split(b"\n")
                if len(lines) != 1 or not lines[0].startswith(b"data: "):
                    raise Fail("an event that is not one data line: %r" % ev[:300])
                try:
                    yield lines[0][6:].decode("utf-8")
                except UnicodeDecodeError:
                    raise Fail("an event that is not UTF-8: %r" % ev[:300])


def stream_ok(kind, resp, req, pause=0.0, chunk=None, hang_up_after=None):
    """A good request streamed: events of the right object, the role first
    (chat), one finish_reason, usage when asked, [DONE] last. With
    hang_up_after k: returns after k events (the caller closes)."""
    if resp.status != 200:
        body = resp.read()
        raise Fail("status %d: %r" % (resp.status, body[:300]))
    ctype = resp.getheader("Content-Type", "")
    if not ctype.startswith("text/event-stream"):
        raise Fail("content type %r" % ctype)
    want = "chat.completion.chunk" if kind == "chat" else "text_completion"
    mt = req.get("max_tokens", req.get("max_completion_tokens"))
    text, n_ids, finish, usage, done, k = "", 0, None, None, False, 0
    for data in Stream(resp).events(pause, chunk):
        k += 1
        if hang_up_after is not None and k >= hang_up_after:
            return
        if done:
            raise Fail("an event after [DONE]: %r" % data[:300])
        if data == "[DONE]":
            done = True
            continue
        try:
            o = json.loads(data)
        except ValueError:
            raise Fail("an event that is not JSON: %r" % data[:300])
        if "error" in o:
            raise Fail("an error event: %r" % data[:300])
        if o.get("object") != want or o.get("model") != A.model_id:
            raise Fail("event object %r model %r" % (o.get("object"), o.get("model")))
        ch = o.get("choices")
        if ch == [] and "usage" in o:
            if usage is not None or not finish:
                raise Fail("usage out of place: %r" % data[:300])
            usage = o["usage"]
            continue
        if not isinstance(ch, list) or len(ch) != 1:
            raise Fail("choices %r" % (ch,))
        if finish:
            raise Fail("a chunk after finish_reason: %r" % data[:300])
        c = ch[0]
        if kind == "chat":
            d = c.get("delta")
            if not isinstance(d, dict):
                raise Fail("no delta: %r" % data[:300])
            if k == 1 and d != {"role": "assistant", "content": ""}:
                raise Fail("the first chunk is not the role: %r" % data[:300])
            piece = d.get("content", "")
        else:
            piece = c.get("text")
        if not isinstance(piece, str):
            raise Fail("a chunk's text is %r" % (piece,))
        text += piece
        if c.get("token_ids") is not None:
            n_ids += len(c["token_ids"])
        if c.get("finish_reason") is not None:
            if c["finish_reason"] not in ("stop", "length"):
                raise Fail("finish_reason %r" % c["finish_reason"])
            finish = c["finish_reason"]
    if not done:
        raise Fail("the stream ended without [DONE] after %d events" % k)
    if not finish:
        raise Fail("the stream ended without a finish_reason")
    text_ok(text, stop_list(req))
    if (req.get("stream_options") or {}).get("include_usage"):
        if usage is None:
            raise Fail("include_usage asked, no usage chunk")
        usage_ok(usage, mt)
        if req.get("return_token_ids") and n_ids != usage["completion_tokens"]:
            raise Fail("%d token ids streamed for %d tokens" % (n_ids, usage["completion_tokens"]))
        if finish == "length" and mt is not None and usage["completion_tokens"] != mt:
            raise Fail("finish_reason length after %d of %d tokens" % (usage["completion_tokens"], mt))
    elif usage is not None:
        raise Fail("a usage chunk nobody asked for")


# ---------------------------------------------------------------------------
# requests

WORDS = ["Hello", "world", "the", "cat", "sat", "on", "a", "mat", "why", "is", "sky", "blue", "tell", "me",
         "story", "about", "dragons", "é", "ü", "你好", "🙂", "1234", "and", "then", "\n", "code:", "{", "}"]


def text(rng, lo=1, hi=12):
    """Words, the first of them ASCII: the test tokenizer has no token for
    some characters (a prompt of those alone encodes to nothing, a 400)."""
    return " ".join([rng.choice(WORDS[:17])] + [rng.choice(WORDS) for _ in range(rng.randint(lo, hi) - 1)])


def sampling(rng, req):
    r = rng.random()
    if r < 0.4:
        req["temperature"] = 0
    elif r < 0.8:
        req["temperature"] = round(rng.uniform(0.2, 1.5), 2)
        if rng.random() < 0.5:
            req["top_p"] = round(rng.uniform(0.5, 1), 2)
        if rng.random() < 0.3:
            req["top_k"] = rng.randint(1, 40)
        if rng.random() < 0.3:
            req["min_p"] = round(rng.uniform(0, 0.3), 2)
    if rng.random() < 0.5:
        req["seed"] = rng.randint(0, 2 ** 31)
    if rng.random() < 0.3:
        req["stop"] = rng.choice(["e", ["a", "zz"], [" ", "\n", "x", "q"], "the", ["", "o"]])
    if rng.random() < 0.2:
        req["ignore_eos"] = True
    if rng.random() < 0.3:
        req["return_token_ids"] = True


def good_request(rng, kind, long=False):
    """A request the server must answer with a 200; prompts kept short
    enough that a long answer fits the context beside them."""
    req = {}
    if rng.random() < 0.5:
        req["model"] = A.model_id
    if kind == "chat":
        msgs = []
        if rng.random() < 0.3:
            msgs.append({"role": rng.choice(["system", "developer"]), "content": text(rng, 1, 4)})
        if rng.random() < 0.4:
            msgs.append({"role": "user", "content": text(rng, 1, 5)})
            msgs.append({"role": "assistant", "content": text(rng, 1, 5)})
        content = text(rng, 1, 8)
        if rng.random() < 0.2:
            content = [{"type": "text", "text": content}, {"type": "text", "text": text(rng, 1, 3)}]
        msgs.append({"role": "user", "content": content})
        req["messages"] = msgs
        key = "max_completion_tokens" if rng.random() < 0.3 else "max_tokens"
    else:
        if rng.random() < 0.3:
            req["prompt"] = [rng.randrange(A.vocab) for _ in range(rng.randint(1, 40))]
        else:
            req["prompt"] = text(rng, 1, 16)
        key = "max_tokens"
    sampling(rng, req)
    if long:
        req[key] = rng.randint(A.max_context // 4, A.max_context // 3)
        req["ignore_eos"] = True
    elif rng.random() < 0.9:
        req[key] = rng.randint(1, 24)
    # else no limit: the rest of the context, or up to an end of sequence
    return req


def path_of(kind):
    return "/v1/chat/completions" if kind == "chat" else "/v1/completions"


def do_good(rng, streamed, long=False):
    kind = rng.choice(["chat", "completion"])
    req = good_request(rng, kind, long)
    if streamed:
        req["stream"] = True
        if rng.random() < 0.6:
            req["stream_options"] = {"include_usage": True}
        c = conn()
        try:
            c.request("POST", path_of(kind), body=json.dumps(req).encode(), headers=headers())
            stream_ok(kind, c.getresponse(), req)
        finally:
            c.close()
    else:
        status, ctype, body = call("POST", path_of(kind), json.dumps(req))
        whole_ok(kind, status, ctype, body, req)


def do_conversation(rng):
    """Two turns of a chat, the second sent with the first answer: the slot
    that holds the first turn may be reused (the prompt cache), or taken by
    another request meanwhile; either way the answer must be whole."""
    msgs = [{"role": "user", "content": text(rng, 1, 6)}]
    answers = []
    for turn in range(2):
        req = {"messages": msgs, "max_tokens": rng.randint(1, 8), "temperature": 0}
        status, ctype, body = call("POST", "/v1/chat/completions", json.dumps(req))
        whole_ok("chat", status, ctype, body, req)
        o = json.loads(body)
        answers.append(o)
        msgs = msgs + [{"role": "assistant", "content": o["choices"][0]["message"]["content"]},
                       {"role": "user", "content": text(rng, 1, 4)}]
    cached = answers[1]["usage"]["prompt_tokens_details"]["cached_tokens"]
    with LOCK:
        CACHED[0] += cached > 0


def do_slow_reader(rng):
    """A stream read a few bytes at a time with pauses: the server must wait
    for it, not drop it."""
    kind = rng.choice(["chat", "completion"])
    req = good_request(rng, kind)
    req["stream"] = True
    req["max_tokens"] = rng.randint(8, 24)
    req.pop("max_completion_tokens", None)
    c = conn()
    try:
        c.request("POST", path_of(kind), body=json.dumps(req).encode(), headers=headers())
        stream_ok(kind, c.getresponse(), req, pause=0.02, chunk=rng.choice([50, 200, 1000]))
    finally:
        c.close()


def do_slow_sender(rng):
    """A good body sent in pieces over about a second."""
    kind = rng.choice(["chat", "completion"])
    req = good_request(rng, kind)
    req["max_tokens"] = rng.randint(1, 8)
    req.pop("max_completion_tokens", None)
    body = json.dumps(req).encode()
    s = socket.create_connection((A.host, A.port), timeout=A.timeout)
    try:
        head = "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
            path_of(kind), len(body))
        if A.api_key:
            head += "Authorization: Bearer %s\r\n" % A.api_key
        head += "Connection: close\r\n\r\n"
        s.sendall(head.encode())
        parts = rng.randint(2, 6)
        step = max(1, len(body) // parts)
        for i in range(0, len(body), step):
            time.sleep(1.0 / parts)
            s.sendall(body[i:i + step])
        resp = http.client.HTTPResponse(s)
        resp.begin()
        whole_ok(kind, resp.status, resp.getheader("Content-Type", ""), resp.read(), req)
    finally:
        s.close()


def do_hang_up_stream(rng):
    """A client that leaves mid-stream (the server cancels its job)."""
    kind = rng.choice(["chat", "completion"])
    req = good_request(rng, kind, long=True)
    req["stream"] = True
    c = conn()
    try:
        c.request("POST", path_of(kind), body=json.dumps(req).encode(), headers=headers())
        stream_ok(kind, c.getresponse(), req, hang_up_after=rng.randint(1, 6))
    finally:
        c.close()


def do_hang_up_whole(rng):
    """A client that leaves before its whole answer comes."""
    kind = rng.choice(["chat", "completion"])
    req = good_request(rng, kind, long=True)
    c = conn()
    try:
        c.request("POST", path_of(kind), body=json.dumps(req).encode(), headers=headers())
        time.sleep(rng.uniform(0, 0.3))
    finally:
        c.close()


def do_half_body(rng):
    """Headers announcing a body, part of it, then gone."""
    s = socket.create_connection((A.host, A.port), timeout=A.timeout)
    try:
        body = b'{"prompt":"hello","max_tokens":4}'
        head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % (len(body) + 50)
        if A.api_key:
            head += "Authorization: Bearer %s\r\n" % A.api_key
        s.sendall((head + "\r\n").encode() + body)
        time.sleep(rng.uniform(0, 0.2))
    finally:
        s.close()


def bad_cases(rng):
    """(name, path, body bytes, status, words in the message, code)"""
    C = A.max_context
    ids_over = "[%s]" % ",".join(str(rng.randrange(A.vocab)) for _ in range(C + rng.randint(0, 20)))
    big = rng.randint(A.max_body + 1, A.max_body * 4)
    cases = [
        ("malformed_json", "/v1/chat/completions", b'{"messages":[{"role":"user","content":"Hi"}', 400,
         "not valid JSON", None),
        ("malformed_json", "/v1/completions", b'{"prompt":"a",}', 400, "not valid JSON", None),
        ("malformed_json", "/v1/completions", b'{"prompt":"a"} x', 400, "not valid JSON", None),
        ("malformed_json", "/v1/completions", b'', 400, "empty", None),
        ("malformed_json", "/v1/completions", b'[1,2]', 400, "must be a JSON object", None),
        ("wrong_type", "/v1/completions", b'{"prompt":"a","max_tokens":"5"}', 400, "must be an integer", None),
        ("wrong_type", "/v1/completions", b'{"prompt":{"x":1}}', 400, "'prompt' must be", None),
        ("wrong_type", "/v1/chat/completions", b'{"messages":"hi"}', 400, "must be an array", None),
        ("wrong_type", "/v1/chat/completions", b'{"messages":[{"role":1,"content":"x"}]}', 400, "must be a string", None),
        ("wrong_type", "/v1/completions", b'{"prompt":"a","stream":"yes"}', 400, "must be a boolean", None),
        ("wrong_type", "/v1/completions", b'{"prompt":"a","stop":[1]}', 400, "'stop' must be", None),
        ("wrong_type", "/v1/completions", b'{"prompt":[1,-2]}', 400, "must be a token id", None),
        ("unknown_model", "/v1/chat/completions",
         b'{"model":"gpt-4","messages":[{"role":"user","content":"Hi"}]}', 404, "does not exist", "model_not_found"),
        ("unknown_model", "/v1/completions", b'{"model":"","prompt":"a"}', 404, "does not exist", "model_not_found"),
        ("out_of_range", "/v1/completions", b'{"prompt":"a","temperature":5}', 400, "between", None),
        ("out_of_range", "/v1/completions", b'{"prompt":"a","top_p":-1}', 400, "between", None),
        ("out_of_range", "/v1/completions", b'{"prompt":"a","max_tokens":0}', 400, "between", None),
        ("out_of_range", "/v1/completions", b'{"prompt":"a","max_tokens":-7}', 400, "between", None),
        ("out_of_range", "/v1/completions", b'{"prompt":"a","n":3}', 400, "'n' must be 1", None),
        ("out_of_range", "/v1/completions", b'{"prompt":"a","stop":["a","b","c","d","e"]}', 400, "at most 4", None),
        ("out_of_range", "/v1/completions", b'{"prompt":"a","min_p":1.5}', 400, "between", None),
        ("out_of_range", "/v1/completions", ('{"prompt":[1,%d]}' % (A.vocab + rng.randint(0, 1000))).encode(), 400,
         "outside the model's vocabulary", None),
        ("out_of_range", "/v1/chat/completions", b'{"messages":[]}', 400, "is empty", None),
        ("out_of_range", "/v1/completions", b'{"prompt":"a","logprobs":true}', 400, "not supported", None),
        ("out_of_range", "/v1/completions", b'{"prompt":"a\\u0000b"}', 400, "NUL", None),
        ("huge_max_tokens", "/v1/completions",
         ('{"prompt":"Hello world","max_tokens":%d}' % rng.choice([C, 10 ** 6, 2 ** 31 - 1, 2 ** 62])).encode(), 400,
         "more were asked for", "context_length_exceeded"),
        ("huge_max_tokens", "/v1/chat/completions",
         ('{"messages":[{"role":"user","content":"Hi"}],"max_completion_tokens":%d}' % (10 ** 9)).encode(), 400,
         "more were asked for", "context_length_exceeded"),
        ("huge_max_tokens", "/v1/completions", ('{"prompt":%s}' % ids_over).encode(), 400, "leaves no room",
         "context_length_exceeded"),
        ("invalid_utf8", "/v1/completions", b'{"prompt":"a\xffb"}', 400, "invalid utf-8", None),
        ("invalid_utf8", "/v1/chat/completions", b'{"messages":[{"role":"user","content":"\xc3("}]}', 400,
         "invalid utf-8", None),
        ("invalid_utf8", "/v1/completions", b'{"prompt":"\xed\xa0\x80"}', 400, "invalid utf-8", None),
        ("invalid_utf8", "/v1/completions", b'{"prompt":"\xc0\xaf"}', 400, "invalid utf-8", None),
        ("invalid_utf8", "/v1/completions", b'{"prompt":"\xf4\x90\x80\x80"}', 400, "invalid utf-8", None),
        ("oversized_body", "/v1/completions", ('{"prompt":"%s"}' % ("a" * big)).encode(), 413, "over the",
         "request_too_large"),
        ("unknown_path", "/v1/embeddings", b'{}', 404, "no such path", "not_found"),
    ]
    return cases


def do_bad(rng):
    name, path, body, status, words, code = rng.choice(bad_cases(rng))
    try:
        st, _, got = call("POST", path, body)
    except (BrokenPipeError, ConnectionResetError):
        # a body over the limit announced by Content-Length may be answered
        # and the connection closed before all of it is sent; then the answer
        # must still be readable: retry reading with chunked upload
        if name != "oversized_body":
            raise
        st, got = oversized_chunked(body)
    error_of(st, got, status, words, code)
    return name


def oversized_chunked(body):
    """A body over the limit sent chunked (no Content-Length): read and dropped, then a 413."""
    c = conn()
    try:
        def gen():
            for i in range(0, len(body), 8192):
                yield body[i:i + 8192]
        c.request("POST", "/v1/completions", body=gen(), headers=headers(), encode_chunked=True)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def do_bad_http(rng):
    """Errors outside the body: a wrong method, a wrong or missing key."""
    r = rng.random()
    if r < 0.4:
        st, _, body = call("GET", "/v1/completions", None, headers())
        error_of(st, body, 405, "takes POST", "method_not_allowed")
        return "wrong_method"
    if A.api_key:
        h = headers(key=False)
        if r < 0.7:
            h["Authorization"] = "Bearer nope"
        st, _, body = call("POST", "/v1/completions", '{"prompt":"a"}', h)
        error_of(st, body, 401, "API key", "invalid_api_key")
        return "wrong_key"
    st, _, body = call("POST", "/v1/completions", b'{"prompt":"a","best_of":2}')
    error_of(st, body, 400, "best_of")
    return "out_of_range"


def do_get(rng):
    path = rng.choice(["/health", "/v1/models", "/metrics"])
    st, ctype, body = call("GET", path, None, headers())
    if st != 200:
        raise Fail("GET %s: status %d %r" % (path, st, body[:300]))
    if path == "/metrics":
        if b"moe_requests_running" not in body:
            raise Fail("metrics without moe_requests_running: %r" % body[:300])
    else:
        o = json.loads(body)
        if path == "/health" and o != {"status": "ok"}:
            raise Fail("health %r" % o)
        if path == "/v1/models" and o["data"][0]["id"] != A.model_id:
            raise Fail("models %r" % o)


# (kind, weight, function); a function returning a string records under that kind
KINDS = [
    ("good_whole", 22, lambda rng: do_good(rng, False)),
    ("good_stream", 22, lambda rng: do_good(rng, True)),
    ("long_whole", 3, lambda rng: do_good(rng, False, long=True)),
    ("long_stream", 3, lambda rng: do_good(rng, True, long=True)),
    ("conversation", 4, do_conversation),
    ("slow_reader", 3, do_slow_reader),
    ("slow_sender", 2, do_slow_sender),
    ("get", 6, do_get),
    ("bad", 30, do_bad),
    ("bad_http", 4, do_bad_http),
    ("hang_up_stream", 3, do_hang_up_stream),
    ("hang_up_whole", 2, do_hang_up_whole),
    ("half_body", 1, do_half_body),
]


def client(i):
    rng = random.Random(A.seed * 1000 + i)
    names = [k[0] for k in KINDS]
    weights = [k[1] for k in KINDS]
    fns = {k[0]: k[2] for k in KINDS}
    while not STOP.is_set():
        kind = rng.choices(names, weights)[0]
        t = time.time()
        CURRENT[i] = (kind, t)
        try:
            sub = fns[kind](rng)
            record(sub if isinstance(sub, str) else kind, True)
        except Fail as e:
            record(kind, False, str(e))
        except socket.timeout:
            record(kind, False, "no answer within %g s" % A.timeout)
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            record(kind, False, "the connection failed after %.1f s: %r" % (time.time() - t, e))
        except Exception as e:  # a bug in the checks themselves is a failure too
            record(kind, False, "unexpected %r" % e)
        if A.think_ms:
            time.sleep(rng.uniform(0, A.think_ms) / 1000)


# ---------------------------------------------------------------------------
# memory

def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def sampler(samples, out):
    while True:
        t = time.time() - A.t0
        kb = rss_kb(A.pid)
        if kb is None:
            record("server_alive", False, "the server (pid %d) is gone" % A.pid)
            STOP.set()
        with LOCK:
            n = sum(c[0] for c in COUNTS.values())
        samples.append((t, kb, n))
        out.write("%.1f,%s,%d\n" % (t, kb if kb is not None else "", n))
        out.flush()
        if STOP.wait(A.rss_every):
            return


def slope_mb_per_min(pts):
    """Least-squares slope of (seconds, kB) points, in MB a minute."""
    if len(pts) < 2:
        return 0.0
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in pts)
    return (sxy / sxx) * 60 / 1024 if sxx else 0.0


def metrics():
    st, _, body = call("GET", "/metrics", None, headers())
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def main():
    global A
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, help="the server's process id, for its RSS")
    p.add_argument("--api-key", default=None)
    p.add_argument("--model-id", required=True)
    p.add_argument("--max-context", type=int, required=True)
    p.add_argument("--max-body", type=int, required=True)
    p.add_argument("--vocab", type=int, required=True, help="the model's vocabulary size")
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--timeout", type=float, default=60, help="seconds a request may take")
    p.add_argument("--think-ms", type=float, default=0, help="a random pause up to this after each request")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rss-csv", required=True)
    p.add_argument("--rss-every", type=float, default=2)
    p.add_argument("--warmup", type=float, default=None, help="seconds (default: a tenth of the duration, 60 at most)")
    p.add_argument("--rss-bound-mb", type=float, default=8,
                   help="the most RSS may grow from the warm-up's end to the end of the run")
    A = p.parse_args()
    if A.warmup is None:
        A.warmup = min(60.0, A.duration / 10)
    A.t0 = time.time()

    samples = []
    out = open(A.rss_csv, "w")
    out.write("seconds,rss_kb,requests\n")
    mem = threading.Thread(target=sampler, args=(samples, out), daemon=True)
    mem.start()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(A.clients)]
    for t in threads:
        t.start()
    STOP.wait(A.duration)
    STOP.set()
    print("soak: in flight at the end (kind, seconds so far): " +
          ", ".join("%s %.1f" % (k, time.time() - t) for k, t in CURRENT.values()), flush=True)
    stuck = 0
    for t in threads:
        t.join(A.timeout + 10)
        stuck += t.is_alive()
    mem.join()
    elapsed = time.time() - A.t0
    print("soak: clients stopped %.1f s after the end" % (elapsed - A.duration), flush=True)

    # after: healthy, nothing left running or waiting (cancelled jobs end at the next step)
    after_ok = True
    for _ in range(100):
        try:
            m = metrics()
        except Exception as e:
            record("final_check", False, "metrics: %r" % e)
            after_ok = False
            break
        if m.get("moe_requests_running") == 0 and m.get("moe_requests_queued") == 0:
            break
        time.sleep(0.1)
    else:
        print(m)
        record("final_check", False, "still running or queued after the clients stopped: %r" % {
            k: v for k, v in m.items() if "running" in k or "queued" in k})
        after_ok = False
    if after_ok:
        try:
            do_good(random.Random(0), False)
            record("final_check", True)
        except Exception as e:
            record("final_check", False, "a request after the soak: %r" % e)
    if stuck:
        record("final_check", False, "%d client threads still waiting" % stuck)
    out.close()

    # summary
    total = sum(c[0] for c in COUNTS.values())
    print("soak: %d clients, %.0f s, %d requests (%.1f a second), %d failed" % (
        A.clients, elapsed, total, total / elapsed, FAIL_TOTAL[0]))
    for k in sorted(COUNTS):
        print("  %-16s %7d  failed %d" % (k, COUNTS[k][0], COUNTS[k][1]))
    try:
        m = metrics()
        print("server: ok %d, failed %d, cancelled %d, rejected %d; %d tokens generated, %d prompt tokens (%d cached)" % (
            m.get('moe_requests_total{outcome="ok"}', 0), m.get('moe_requests_total{outcome="failed"}', 0),
            m.get('moe_requests_total{outcome="cancelled"}', 0), m.get('moe_requests_total{outcome="rejected"}', 0),
            m.get("moe_generation_tokens_total", 0), m.get("moe_prompt_tokens_total", 0),
            m.get("moe_prompt_tokens_cached_total", 0)))
    except Exception as e:
        print("server: /metrics failed: %r" % e)
    if COUNTS.get("conversation"):
        print("conversations: %d of %d found their first turn in a slot" % (CACHED[0], COUNTS["conversation"][0]))
    pts = [(t, kb) for t, kb, _ in samples if kb is not None]
    rc = 0
    if pts:
        warm = [p for p in pts if p[0] >= A.warmup]
        w0 = warm[0][1] if warm else pts[-1][1]
        end = pts[-1][1]
        mx = max(p[1] for p in pts)
        mx_after = max(p[1] for p in warm) if warm else end
        slope = slope_mb_per_min(warm)
        print("rss: start %.1f MB, at warm-up's end (%.0f s) %.1f MB, end %.1f MB, max %.1f MB; "
              "after warm-up: growth %+.2f MB (max %+.2f), slope %+.3f MB/min (bound %.1f MB)" % (
                  pts[0][1] / 1024, A.warmup, w0 / 1024, end / 1024, mx / 1024, (end - w0) / 1024,
                  (mx_after - w0) / 1024, slope, A.rss_bound_mb))
        minute = []
        for mins in range(0, int(elapsed // 60) + 1):
            near = min(pts, key=lambda p: abs(p[0] - 60 * mins))
            minute.append("%d:%.1f" % (mins, near[1] / 1024))
        print("rss by minute (MB): " + " ".join(minute))
        if (mx_after - w0) / 1024 > A.rss_bound_mb:
            print("FAIL: RSS grew %.2f MB after the warm-up, over the bound of %.1f MB" % (
                (mx_after - w0) / 1024, A.rss_bound_mb))
            rc = 1
    else:
        print("FAIL: no RSS samples (is pid %d alive?)" % A.pid)
        rc = 1
    if FAIL_TOTAL[0]:
        print("failures (first %d of %d):" % (len(FAILURES), FAIL_TOTAL[0]))
        for t, k, w in FAILURES:
            print("  %6.1f s %s: %s" % (t, k, w))
        rc = 1
    print("soak: %s" % ("passed" if rc == 0 else "FAILED"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
