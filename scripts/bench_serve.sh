#!/usr/bin/env bash
# scripts/bench_serve.sh — aggregate decode throughput of `moe serve` with N
# concurrent streams against one stream, and the time to first token of a
# short request arriving while N-1 others stream. On the synthetic
# OLMoE-1B-7B by default (token-id prompts; nothing to download).
#   scripts/bench_serve.sh [MOE_BINARY] [N] [TOKENS] [extra moe serve options...]
set -euo pipefail
moe=${1:-build/moe} n=${2:-8} tokens=${3:-64}
shift $(($# < 3 ? $# : 3))
log=$(mktemp)
. "$(dirname "$0")/../tests/serve/lib.sh"
server=
trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
START_TRIES=6000 start_server "$log" "$moe" serve --port 0 --parallel "$n" --queue 0 "$@" || exit 1
url=http://127.0.0.1:$port/v1/completions
body() { echo "{\"prompt\":[$((100 + $1)),$((200 + $1)),$((300 + $1)),7],\"max_tokens\":$2,\"ignore_eos\":true,\"temperature\":0}"; }
now() { date +%s.%N; }
# warm up (first touches of the weights)
curl -sS --max-time 600 "$url" -d "$(body 0 4)" >/dev/null
t0=$(now); curl -sS --max-time 600 "$url" -d "$(body 1 "$tokens")" >/dev/null; t1=$(now)
one=$(awk "BEGIN { print $tokens / ($t1 - $t0) }")
t0=$(now)
for k in $(seq 1 "$n"); do curl -sS --max-time 600 "$url" -d "$(body "$k" "$tokens")" >/dev/null & done
wait $(jobs -p | grep -v "^$server$")
t1=$(now)
many=$(awk "BEGIN { print $n * $tokens / ($t1 - $t0) }")
# a short request while n-1 stream: its TTFT in steps and seconds, from the server's log line
for k in $(seq 2 "$n"); do curl -sS --max-time 600 "$url" -d "$(body "$k" "$tokens")" >/dev/null & done
sleep 2
curl -sS --max-time 600 "$url" -d "$(body 99 1)" >/dev/null
ttft=$(grep "prompt 4 tokens (0 cached), generated 1," "$log" | tail -n1 | sed -n 's/.*TTFT \([0-9.]*\) s.*/\1/p')
wait $(jobs -p | grep -v "^$server$")
printf 'one stream: %.2f tok/s; %d streams: %.2f tok/s aggregate (%.2fx); a new request beside %d streams: TTFT %s s\n' \
  "$one" "$n" "$many" "$(awk "BEGIN { print $many / $one }")" $((n - 1)) "$ttft"
