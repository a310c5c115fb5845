#!/usr/bin/env bash
# tests/serve/serve_test.sh — `moe serve` end to end with curl, on the tiny
# OLMoE fixture with a tokenizer and the Tulu chat template, on a free
# loopback port: answers equal to moe generate's and moe chat's (greedy),
# the SSE framing, stop sequences, requests run together giving what each
# gives alone, the bad-request table of the README, 503 when full, a client
# that hangs up freeing its slot, and Ctrl-C draining. Every request has a
# time limit and the server is killed on exit, so the test cannot hang.
#   serve_test.sh MOE_BINARY CHECKPOINT_DIR WORK_DIR
set -uo pipefail
moe=$1 ck=$2 work=$3
mkdir -p "$work"
log=$work/serve.log
fails=0 passes=0
pass() { passes=$((passes + 1)); echo "ok: $1"; }
fail() { fails=$((fails + 1)); echo "FAIL: $1"; }
check() { if eval "$2"; then pass "$1"; else fail "$1"; echo "${r:-}" | head -c 3000; echo; fi; }

# a step pauses 5 ms (a test-only knob) so that requests stay in flight long enough to overlap
. "$(dirname "$0")/lib.sh"
server=
trap 'kill -9 $server 2>/dev/null; wait $server 2>/dev/null' EXIT
start_server "$log" env MOE_SERVE_TEST_STEP_MS=5 "$moe" serve --model "$ck" --host 127.0.0.1 --port 0 --parallel 2 \
  --queue 1 --max-context 128 --max-body 4096 --api-key sekrit --threads 1 || exit 1
url=http://127.0.0.1:$port
auth="Authorization: Bearer sekrit"

# req PATH BODY [curl options]: the body, then the status on its own last line
req() { local path=$1 body=$2; shift 2; curl -sS --max-time 20 -H "$auth" -H 'Content-Type: application/json' \
  -w '\n%{http_code}' "$@" "$url$path" -d "$body"; }
status_of() { tail -n1 <<<"$1"; }
body_of() { sed '$d' <<<"$1"; }
# a JSON array field's contents, "1,2,3"
ids_of() { sed -n "s/.*\"$1\":\[\([0-9,]*\)\].*/\1/p" <<<"$2"; }
metric() { curl -sS --max-time 5 -H "$auth" "$url/metrics" | sed -n "s/^$1 //p"; }

# --- what works ---
r=$(curl -sS --max-time 5 -w '\n%{http_code}' "$url/health")
check "GET /health needs no key" '[ "$(status_of "$r")" = 200 ] && grep -q "\"status\":\"ok\"" <<<"$r"'
r=$(curl -sS --max-time 5 -w '\n%{http_code}' -H "$auth" "$url/v1/models")
check "GET /v1/models" '[ "$(status_of "$r")" = 200 ] && grep -q "\"data\":\[{\"id\":\"$(basename "$ck")\",\"object\":\"model\"" <<<"$r"'

gen=$("$moe" generate --model "$ck" --prompt "Hello world" -n 5 --json 2>/dev/null)
r=$(req /v1/completions '{"prompt":"Hello world","max_tokens":5,"temperature":0,"return_token_ids":true}')
check "completion of text equals moe generate's" '[ "$(status_of "$r")" = 200 ] &&
  [ "$(ids_of token_ids "$r")" = "$(ids_of ids "$gen")" ] && grep -q "\"text\":\"V-jumYestion\"" <<<"$r" &&
  grep -q "\"finish_reason\":\"length\"" <<<"$r" &&
  grep -q "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5,\"total_tokens\":8" <<<"$r"'

ids=51,130,212,151,205,118,52,51,126,132,74,47,125,70,65,189,46,138,0
gen=$("$moe" generate --model "$ck" --tokens $ids -n 10 --ignore-eos --json 2>/dev/null)
r=$(req /v1/completions "{\"prompt\":[$ids],\"max_tokens\":10,\"temperature\":0,\"ignore_eos\":true,\"return_token_ids\":true}")
check "completion of token ids equals moe generate --tokens" '[ "$(status_of "$r")" = 200 ] &&
  [ "$(ids_of token_ids "$r")" = "$(ids_of ids "$gen")" ] && [ "$(ids_of ids "$gen")" = 173,62,30,155,228,192,193,136,97,55 ]'

chat=$(printf 'Hi\n' | "$moe" chat --model "$ck" -n 4 --json 2>/dev/null)
chat_text=$(sed -n 's/.*"text":"\(.*\)","prompt_tokens".*/\1/p' <<<"$chat")
r=$(req /v1/chat/completions '{"model":"'"$(basename "$ck")"'","messages":[{"role":"user","content":"Hi"}],"max_tokens":4,"temperature":0}')
check "chat equals moe chat's first turn" '[ "$(status_of "$r")" = 200 ] && [ -n "$chat_text" ] &&
  grep -qF "\"message\":{\"role\":\"assistant\",\"content\":\"$chat_text\"}" <<<"$r" &&
  grep -q "\"object\":\"chat.completion\"" <<<"$r" && grep -q "\"prompt_tokens\":17,\"completion_tokens\":4" <<<"$r"'

r=$(req /v1/chat/completions '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":4,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}' -N -D "$work/headers")
s=$(body_of "$r")
content=$(grep '^data: {' <<<"$s" | sed -n 's/.*"delta":{[^}]*"content":"\([^"]*\)".*/\1/p' | tr -d '\n')
check "chat streamed: SSE events, role first, the same text, usage, [DONE]" '[ "$(status_of "$r")" = 200 ] &&
  grep -qi "^content-type: text/event-stream" "$work/headers" &&
  [ "$(grep -c "^data: " <<<"$s")" = "$(grep -c . <<<"$s")" ] &&
  head -n1 <<<"$s" | grep -q "\"delta\":{\"role\":\"assistant\",\"content\":\"\"}" &&
  [ "$content" = "$chat_text" ] && grep "^data: {" <<<"$s" | tail -n2 | head -n1 | grep -q "\"finish_reason\":\"length\"" &&
  grep -q "\"choices\":\[\],\"usage\":{\"prompt_tokens\":17,\"completion_tokens\":4" <<<"$s" &&
  [ "$(grep -v "^$" <<<"$s" | tail -n1)" = "data: [DONE]" ] && [ -z "$(sed -n "2~2p" <<<"$s" | tr -d "\n")" ]'

r=$(req /v1/completions '{"prompt":"Hello world","max_tokens":5,"temperature":0,"stop":["jum","zz"]}')
check "a stop sequence ends the text before it" '[ "$(status_of "$r")" = 200 ] && grep -q "\"text\":\"V-\",\"logprobs\":null,\"finish_reason\":\"stop\"" <<<"$r"'
r=$(req /v1/completions '{"prompt":"Hello world","max_tokens":5,"temperature":0,"stop":"jum","stream":true}' -N)
check "a stop sequence streamed: held back, never sent" '[ "$(status_of "$r")" = 200 ] &&
  [ "$(sed -n "s/.*\"text\":\"\([^\"]*\)\".*/\1/p" <<<"$r" | tr -d "\n")" = "V-" ] && ! grep -q "j" <<<"$(sed -n "s/.*\"text\":\"\([^\"]*\)\".*/\1/p" <<<"$r")"'

# --- requests together: each the same as alone ---
declare -a alone
for k in 0 1 2; do
  p="[$((k * 7 + 3)),$((k * 11 + 5)),$((k + 40)),17,$((k * 3 + 90))]"
  bodies[$k]="{\"prompt\":$p,\"max_tokens\":24,\"temperature\":0,\"ignore_eos\":true,\"return_token_ids\":true}"
  alone[$k]=$(ids_of token_ids "$(req /v1/completions "${bodies[$k]}")")
done
for k in 0 1 2; do req /v1/completions "${bodies[$k]}" >"$work/together.$k" & done
wait $(jobs -p | grep -v "^$server$") 2>/dev/null
same=1
for k in 0 1 2; do
  [ -n "${alone[$k]}" ] && [ "$(ids_of token_ids "$(cat "$work/together.$k")")" = "${alone[$k]}" ] || same=0
done
check "three requests at once (two slots, one queued) equal each alone" '[ $same = 1 ] && [ "$(metric moe_batch_sequences_max)" = 2 ]'

# prompt cache: a prompt that begins with what a slot holds (the last prompt and
# its answer but the last token, never fed) computes only the rest, with the same answer
r=$(req /v1/completions "${bodies[0]}")
first=$(ids_of token_ids "$r")
ext="$(sed -n 's/.*"prompt":\[\([0-9,]*\)\].*/\1/p' <<<"${bodies[0]}"),${first%,*},7,8"
gen=$("$moe" generate --model "$ck" --tokens "$ext" -n 6 --ignore-eos --json 2>/dev/null)
r=$(req /v1/completions "{\"prompt\":[$ext],\"max_tokens\":6,\"temperature\":0,\"ignore_eos\":true,\"return_token_ids\":true}")
check "a prompt extending a slot's tokens reuses them, the answer unchanged" '[ "$(status_of "$r")" = 200 ] &&
  grep -q "\"cached_tokens\":28}" <<<"$r" && [ "$(ids_of token_ids "$r")" = "$(ids_of ids "$gen")" ]'

# a conversation going on: the second turn, sent with the first answer, finds the first in a slot
# (17 prompt tokens and 5 of the 6 answered; the answer re-encodes to the ids the model chose)
say() { req /v1/chat/completions "{\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}$1],\"max_tokens\":6,\"temperature\":0}"; }
r=$(say "")
answer=$(sed -n 's/.*"message":{"role":"assistant","content":\(".*"\)},"logprobs".*/\1/p' <<<"$r")
turn2=",{\"role\":\"assistant\",\"content\":$answer},{\"role\":\"user\",\"content\":\"More\"}"
r=$(say "$turn2")
again=$(say "$turn2")   # the slot now holds this prompt and more: all of it kept but its last token
check "a conversation's next turn reuses the slot that holds it, with the answer it gets afresh" '[ -n "$answer" ] &&
  grep -q "\"prompt_tokens\":42,.*\"cached_tokens\":22}" <<<"$r" && grep -q "\"cached_tokens\":41}" <<<"$again" &&
  [ "$(sed -n "s/.*\"content\":\(\".*\"\)},\"logprobs\".*/\1/p" <<<"$r")" = "$(sed -n "s/.*\"content\":\(\".*\"\)},\"logprobs\".*/\1/p" <<<"$again")" ]'

# --- bad requests: each answered, the server alive ---
bad() {  # bad NAME STATUS CODE-OR-WORDS PATH BODY [curl options]
  local name=$1 want=$2 words=$3 path=$4 body=$5; shift 5
  local r; r=$(req "$path" "$body" "$@")
  check "$name -> $want" '[ "$(status_of "$r")" = "$want" ] && grep -q "^{\"error\":{\"message\":\".*$words" <<<"$(body_of "$r")"'
}
bad "malformed JSON" 400 "not valid JSON" /v1/chat/completions '{"messages":[{"role":"user","content":"Hi"}'
bad "wrong type" 400 "'max_tokens' must be an integer, not a string" /v1/completions '{"prompt":"a","max_tokens":"5"}'
bad "unknown model" 404 "the model 'gpt-4' does not exist.*\"code\":\"model_not_found\"" /v1/chat/completions '{"model":"gpt-4","messages":[{"role":"user","content":"Hi"}]}'
bad "empty messages" 400 "'messages' is empty" /v1/chat/completions '{"messages":[]}'
bad "an image part" 400 "of type 'image_url'; this model reads text parts only" /v1/chat/completions '{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}'
bad "huge max_tokens" 400 "at most 125 fit.*\"code\":\"context_length_exceeded\"" /v1/completions '{"prompt":"Hello world","max_tokens":1000000}'
long=$(seq -s, 1 130)
bad "a prompt over the context" 400 "context is 128 tokens and the prompt has 130.*context_length_exceeded" /v1/completions "{\"prompt\":[$long]}"
bad "a token id outside the vocabulary" 400 "token id 251, outside the model's vocabulary" /v1/completions '{"prompt":[1,251]}'
bad "invalid UTF-8" 400 "invalid utf-8" /v1/completions "$(printf '{"prompt":"a\377b"}')"
bad "a body over --max-body" 413 "over the 4096-byte limit.*request_too_large" /v1/completions "{\"prompt\":\"$(head -c 5000 /dev/zero | tr '\0' a)\"}"
bad "n > 1" 400 "'n' must be 1" /v1/completions '{"prompt":"a","n":2}'
bad "an unknown path" 404 "no such path" /v1/nothing '{}'
bad "a wrong method" 405 "takes POST, not GET" /v1/completions '' -G
r=$(curl -sS --max-time 5 -w '\n%{http_code}' -H "Authorization: Bearer wrong" "$url/v1/models")
check "a wrong API key -> 401" '[ "$(status_of "$r")" = 401 ] && grep -q "\"code\":\"invalid_api_key\"" <<<"$r"'
r=$(curl -sS --max-time 5 -w '\n%{http_code}' "$url/v1/completions" -d '{"prompt":"a"}')
check "no API key -> 401" '[ "$(status_of "$r")" = 401 ]'

# --- full: two running, one queued, the next refused ---
longbody='{"prompt":[5,6,7],"max_tokens":120,"ignore_eos":true,"temperature":0}'
for k in 1 2 3; do req /v1/completions "$longbody" >"$work/long.$k" & done
for _ in $(seq 1 100); do [ "$(metric moe_requests_running)" = 2 ] && [ "$(metric moe_requests_queued)" = 1 ] && break; sleep 0.05; done
r=$(req /v1/completions '{"prompt":"a","max_tokens":1}')
check "every slot busy and the queue full -> 503" '[ "$(status_of "$r")" = 503 ] && grep -q "\"code\":\"server_busy\"" <<<"$r"'
wait $(jobs -p | grep -v "^$server$") 2>/dev/null
check "the three long requests finished" '[ "$(grep -l "\"finish_reason\":\"length\"" "$work"/long.? | wc -l)" = 3 ]'

# --- a client that hangs up frees its slot (streamed, and not) ---
before=$(metric 'moe_requests_total{outcome="cancelled"}')
req /v1/completions '{"prompt":[5,6],"max_tokens":120,"ignore_eos":true,"stream":true}' -N --max-time 0.3 >/dev/null 2>&1
req /v1/completions '{"prompt":[5,7],"max_tokens":120,"ignore_eos":true}' --max-time 0.3 >/dev/null 2>&1
for _ in $(seq 1 100); do [ "$(metric 'moe_requests_total{outcome="cancelled"}')" = $((before + 2)) ] && break; sleep 0.02; done
check "two clients gone: both requests cancelled, slots free" '[ "$(metric "moe_requests_total{outcome=\"cancelled\"}")" = $((before + 2)) ] &&
  [ "$(metric moe_requests_running)" = 0 ] && grep -q "generated [0-9]*,.*cancelled" "$log"'

# --- Ctrl-C drains: the request in flight finishes, then the server exits ---
req /v1/completions '{"prompt":[9,9],"max_tokens":60,"ignore_eos":true,"stream":true}' -N >"$work/drain" &
client=$!
for _ in $(seq 1 100); do [ "$(metric moe_requests_running)" = 1 ] && break; sleep 0.02; done
kill -INT $server
for _ in $(seq 1 200); do kill -0 $server 2>/dev/null || break; sleep 0.05; done
wait $client
wait $server
rc=$?
check "SIGINT drains: the stream ends with finish_reason and [DONE], exit 0" '[ $rc = 0 ] &&
  grep -q "\"finish_reason\":\"length\"" "$work/drain" && grep -q "^data: \[DONE\]" "$work/drain" &&
  grep -q "draining (1 request in flight)" "$log" && grep -q "moe serve: stopped" "$log"'
grep -q "moe serve: request [0-9]* completion: prompt 3 tokens (0 cached), generated 5, TTFT [0-9.]* s, decode [0-9.]* tok/s" "$log" &&
  pass "a log line per request" || fail "a log line per request"

[ $fails = 0 ] || { echo "--- server log"; cat "$log"; }
echo "$passes passed, $fails failed"
[ $fails = 0 ]
