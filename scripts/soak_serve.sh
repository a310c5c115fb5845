#!/usr/bin/env bash
# scripts/soak_serve.sh — a soak test of `moe serve`: the server on the tiny
# OLMoE fixture (with the test tokenizer and the Tulu chat template), 16
# clients sending good, bad and misbehaving requests for SECONDS (default
# 600) while the server's RSS is sampled (tests/serve/soak_client.py says
# what is sent and checked). Prints a summary; exits non-zero on any failed
# check or on RSS growing past RSS_BOUND_MB after the warm-up.
#   scripts/soak_serve.sh MOE_BINARY [SECONDS] [WORK_DIR]
# Environment: CLIENTS (16), PARALLEL (4 slots), QUEUE (32), THREADS (1),
# WARMUP (seconds; a tenth of the run, 60 at most), RSS_BOUND_MB (8),
# THINK_MS (0: a random pause of up to this after each request), SEED (1).
# Leaves serve.log (the server's log) and rss.csv (seconds, rss_kb,
# requests) in WORK_DIR (default: a new temporary directory).
set -uo pipefail
moe=${1:?usage: soak_serve.sh MOE_BINARY [SECONDS] [WORK_DIR]}
seconds=${2:-600}
work=${3:-$(mktemp -d /tmp/moe-soak.XXXXXX)}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$work/tulu"
moe=$(cd "$(dirname "$moe")" && pwd)/$(basename "$moe")

# the checkpoint: the base fixture's weights beside the text fixtures (as the ctest checkpoints are made)
for pair in config.json:olmoe/base/config.json model.safetensors:olmoe/base/model.safetensors \
  tokenizer.json:text/tokenizer.json tokenizer_config.json:text/tokenizer_config_tulu.json; do
  ln -sf "$root/tests/fixtures/${pair#*:}" "$work/tulu/${pair%%:*}"
done

context=256 max_body=16384 key=soak-key
. "$root/tests/serve/lib.sh"
server=
trap 'kill -9 $server 2>/dev/null; wait $server 2>/dev/null' EXIT
rm -f "$work/serve.log" "$work/rss.csv"   # start_server reads the port from the log
start_server "$work/serve.log" env MOE_THREADS="${THREADS:-1}" "$moe" serve --model "$work/tulu" --host 127.0.0.1 \
  --port 0 --parallel "${PARALLEL:-4}" --queue "${QUEUE:-32}" --max-context $context --max-body $max_body \
  --api-key $key --threads "${THREADS:-1}" || exit 1
echo "soak: moe serve pid $server on port $port for $seconds s; log and RSS in $work"

python3 "$root/tests/serve/soak_client.py" --port "$port" --pid "$server" --api-key $key --model-id tulu \
  --max-context $context --max-body $max_body --vocab 251 --duration "$seconds" --clients "${CLIENTS:-16}" \
  --rss-csv "$work/rss.csv" --rss-bound-mb "${RSS_BOUND_MB:-8}" --think-ms "${THINK_MS:-0}" --seed "${SEED:-1}" \
  ${WARMUP:+--warmup "$WARMUP"}
rc=$?

# the server must still be there, stop cleanly on SIGINT and never have crashed
if ! kill -0 "$server" 2>/dev/null; then
  echo "FAIL: the server died"; tail -n 20 "$work/serve.log"; exit 1
fi
kill -INT "$server"
for _ in $(seq 1 200); do kill -0 "$server" 2>/dev/null || break; sleep 0.05; done
wait "$server"
src=$?
server=
if [ $src != 0 ] || ! grep -q "moe serve: stopped" "$work/serve.log"; then
  echo "FAIL: the server did not stop cleanly on SIGINT (exit $src)"; tail -n 20 "$work/serve.log"; rc=1
fi
errors=$(grep -c "moe serve: 5[0-9][0-9] " "$work/serve.log")
[ "$errors" = 0 ] || { echo "FAIL: the server logged $errors 5xx answers"; grep -m5 "moe serve: 5[0-9][0-9] " "$work/serve.log"; rc=1; }
echo "soak: server log: $(grep -c "^moe serve: request " "$work/serve.log") requests run, $(grep -c "^moe serve: 4[0-9][0-9] " "$work/serve.log") refused (4xx), $(grep -c "^moe serve: http: " "$work/serve.log") libmicrohttpd messages"
exit $rc
