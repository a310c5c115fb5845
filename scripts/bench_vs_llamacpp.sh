#!/usr/bin/env bash
# scripts/bench_vs_llamacpp.sh — moe against llama.cpp's llama-bench on the
# same machine in one sitting: rounds that alternate the two programs, each
# program's figure a median over the rounds. The workload is 4-bit
# OLMoE-1B-7B (moe: its synthetic model; llama.cpp: a GGUF of the same shapes
# in Q4_0): decode of 64 tokens after a 16-token prompt against `tg64`, and a
# 512-token prompt against `pp512`, each round also probing the memory
# bandwidth (moe bench's probe) beside the decode run.
#   scripts/bench_vs_llamacpp.sh LLAMA_BENCH GGUF [ROUNDS] [THREADS] [extra moe bench options...]
# e.g. MOE_ISA=avx2 against a llama.cpp built without AVX-512 for the AVX2 side.
set -euo pipefail
peer=$1 gguf=$2 rounds=${3:-5} threads=${4:-2}
shift $(($# < 4 ? $# : 4))
moe=${MOE:-build/moe}
med() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for r in $(seq 1 "$rounds"); do
    load=$(cut -d' ' -f1 /proc/loadavg)
    "$moe" bench --prompt-tokens 16 --gen-tokens 64 --threads "$threads" --json "$@" >"$tmp/d.json"
    "$moe" bench --prompt-tokens 512 --gen-tokens 1 --threads "$threads" --json "$@" >"$tmp/p.json"
    "$peer" -m "$gguf" -t "$threads" -p 512 -n 64 -r 1 -o json >"$tmp/l.json" 2>/dev/null
    md=$(field decode_tps <"$tmp/d.json") bw=$(field bandwidth_gbps <"$tmp/d.json")
    share=$(field decode_bw_share <"$tmp/d.json") mp=$(field prefill_tps <"$tmp/p.json")
    read -r lp lt < <(python3 -c "
import json; rows = json.load(open('$tmp/l.json'))
pp = [r['avg_ts'] for r in rows if r['n_prompt'] > 0]; tg = [r['avg_ts'] for r in rows if r['n_gen'] > 0]
print(pp[0], tg[0])")
    printf 'round %d (load %s): moe decode %.2f tok/s (%.0f%% of %.1f GB/s) prefill %.2f | llama.cpp tg64 %.2f pp512 %.2f\n' \
        "$r" "$load" "$md" "$(awk "BEGIN { print 100 * $share }")" "$bw" "$mp" "$lt" "$lp"
    echo "$md $mp $lt $lp $share" >>"$tmp/rows"
done
for i in 1 2 3 4 5; do cut -d' ' -f$i "$tmp/rows" | med >"$tmp/m$i"; done
read -r md <"$tmp/m1"; read -r mp <"$tmp/m2"; read -r lt <"$tmp/m3"; read -r lp <"$tmp/m4"; read -r sh <"$tmp/m5"
printf 'medians of %d rounds: moe decode %.2f tok/s (%.0f%% of the probed bandwidth), llama.cpp tg64 %.2f: %.2fx\n' \
    "$rounds" "$md" "$(awk "BEGIN { print 100 * $sh }")" "$lt" "$(awk "BEGIN { print $md / $lt }")"
printf '                  moe prefill 512 %.2f tok/s, llama.cpp pp512 %.2f: %.2fx\n' "$mp" "$lp" \
    "$(awk "BEGIN { print $mp / $lp }")"
