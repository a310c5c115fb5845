#!/usr/bin/env bash
# tests/serve/openai_test.sh — runs openai_client_test.py (the official
# `openai` client from PyPI, in a virtual environment made here) against
# `moe serve` on the tiny fixture with the Tulu template, on a free loopback
# port. CI runs it after the build:  openai_test.sh BUILD_DIR
# Without PyPI (pip fails) it says so and skips; everything else is a test.
set -uo pipefail
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
venv=${OPENAI_VENV:-$build/openai-venv}
if ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
  rm -rf "$venv"
  if ! python3 -m venv "$venv" || ! timeout 600 "$venv/bin/pip" install --quiet openai; then
    echo "openai client test SKIPPED: could not make a virtual environment with openai from PyPI"
    exit 0
  fi
fi
ck=$build/text-checkpoints/tulu
log=$build/openai-serve.log
. "$here/lib.sh"
server=
trap 'kill -9 $server 2>/dev/null' EXIT
start_server "$log" "$build/moe" serve --model "$ck" --port 0 --parallel 4 --api-key test-key || exit 1
timeout 300 "$venv/bin/python" "$here/openai_client_test.py" "http://127.0.0.1:$port/v1" test-key "$build/moe" "$ck"
rc=$?
kill -INT $server
for _ in $(seq 1 100); do kill -0 $server 2>/dev/null || break; sleep 0.1; done
wait $server || { echo "FAIL: the server did not stop cleanly"; cat "$log"; rc=1; }
[ $rc = 0 ] || cat "$log"
exit $rc
