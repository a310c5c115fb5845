#!/usr/bin/env bash
# scripts/bench_busy.sh — decode speed with and without another process
# holding one core: rounds alternate a quiet run and one where a busy loop
# runs pinned to the last CPU, and each side's decode tok/s is a median over
# the rounds. Several moe binaries (say, before and after a change) may be
# given: each runs in every round.
#   scripts/bench_busy.sh [ROUNDS] MOE_BINARY... [-- extra moe bench options]
set -euo pipefail
rounds=${1:-3}
shift || true
bins=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do bins+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
[ ${#bins[@]} -gt 0 ] || bins=(build/moe)
last=$(($(nproc) - 1))
tmp=$(mktemp -d)
hog=
trap '[ -n "$hog" ] && kill $hog 2>/dev/null; rm -rf "$tmp"' EXIT
decode() { "$1" bench --prompt-tokens 16 --gen-tokens 64 --json "${@:2}" |
           python3 -c 'import json, sys; print(json.load(sys.stdin)["decode_tps"])'; }
for r in $(seq 1 "$rounds"); do
    for i in "${!bins[@]}"; do
        q=$(decode "${bins[$i]}" "$@")
        taskset -c "$last" sh -c 'while :; do :; done' &
        hog=$!
        b=$(decode "${bins[$i]}" "$@")
        kill $hog; wait $hog 2>/dev/null || true; hog=
        echo "$q $b" >>"$tmp/$i"
        printf 'round %d %s: quiet %.2f tok/s, one core busy %.2f tok/s\n' "$r" "${bins[$i]}" "$q" "$b"
    done
done
for i in "${!bins[@]}"; do
    python3 - "$tmp/$i" "${bins[$i]}" <<'PY'
import statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
q = statistics.median(r[0] for r in rows); b = statistics.median(r[1] for r in rows)
print(f"{sys.argv[2]}: medians quiet {q:.2f} tok/s, one core busy {b:.2f} tok/s ({b / q:.2f} of quiet)")
PY
done
