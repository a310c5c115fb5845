# tests/serve/lib.sh — sourced by the scripts that run `moe serve`.
# start_server LOG COMMAND...: runs COMMAND in the background with stderr
# to LOG and waits for its "listening on" line (START_TRIES tenths of a
# second, default 300); sets $server (its pid) and $port. Returns 1, with
# the log shown, when it does not start.
start_server() {
  local log=$1
  shift
  "$@" 2>"$log" &
  server=$!
  port=
  for _ in $(seq 1 "${START_TRIES:-300}"); do
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$log")
    [ -n "$port" ] && return 0
    kill -0 $server 2>/dev/null || break
    sleep 0.1
  done
  cat "$log"
  echo "FAIL: the server did not start"
  return 1
}
