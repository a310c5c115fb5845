#!/usr/bin/env bash
# Checks and times the CUDA backend on a machine with an NVIDIA GPU (compute
# capability 9.0 or newer), in one go, writing what each step prints as
# files under $OUT (default: gpu-results/) and a short summary last:
#   1. the GPU (nvidia-smi);
#   2. a build with -DMOE_CUDA=ON in build-gpu/ (or the binaries of
#      --prebuilt DIR, built elsewhere with -DMOE_CUDA=ON: DIR holds moe and
#      test_cuda_backend, and DIR/lib any shared libraries this machine lacks);
#   3. test_cuda_backend: every operation against the CPU backend, and the
#      reference fixtures' logits on the GPU;
#   4. one fixture's greedy ids on --device cuda and --device cpu;
#   5. moe bench --device cuda on the synthetic 4-bit OLMoE-1B-7B, a
#      2048-token prompt and 128 generated tokens, fused and unfused
#      alternating (twice each), then --profile's time by kind of operation.
#
#   bash scripts/gpu_check.sh [--prebuilt DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export PATH="$PATH:/usr/local/cuda/bin"
out=${OUT:-gpu-results}
mkdir -p "$out"
prebuilt=""
if [ "${1:-}" = --prebuilt ]; then prebuilt=$(cd "$2" && pwd); fi
summary="$out/summary.txt"
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }

# 1. the card
nvidia-smi >"$out/device.txt" 2>&1
note "card: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"

# 2. the binaries
if [ -n "$prebuilt" ]; then
    bin=$prebuilt
    [ -d "$prebuilt/lib" ] && export LD_LIBRARY_PATH="$prebuilt/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    note "build: prebuilt binaries from $prebuilt"
else
    bin=$root/build-gpu
    if cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOE_CUDA=ON >"$out/build.log" 2>&1 &&
        cmake --build build-gpu --target moe test_cuda_backend >>"$out/build.log" 2>&1; then
        note "build: ok (build-gpu, -DMOE_CUDA=ON)"
    else
        note "build: FAILED (see build.log)"
        tail -20 "$out/build.log"
        exit 1
    fi
fi
export MOE_SOURCE_DIR=$root   # the fixtures, wherever the binaries were built

# 3. the tests
timeout 180 "$bin/test_cuda_backend" >"$out/test_cuda_backend.log" 2>&1
rc=$?
case $rc in
0) note "test_cuda_backend: passed" ;;
77) note "test_cuda_backend: SKIPPED ($(grep -m1 'skipped:' "$out/test_cuda_backend.log"))" ;;
*)
    note "test_cuda_backend: FAILED (exit $rc)"
    grep -E '^ERROR|\[  (FAILED|ERROR) |Failure|error' "$out/test_cuda_backend.log" | head -20 | tee -a "$summary"
    # out-of-bounds accesses and failed launches, named by kernel and line
    if command -v compute-sanitizer >/dev/null; then
        timeout 90 compute-sanitizer --tool memcheck --print-limit 10 "$bin/test_cuda_backend" >"$out/memcheck.log" 2>&1
        grep -m 12 -E '^=========.*(Invalid|Error|error|at 0x|by thread)' "$out/memcheck.log" | tee -a "$summary"
    fi
    ;;
esac
grep -E 'largest error|rope angles' "$out/test_cuda_backend.log" | tee -a "$summary"

# 4. the command line on both devices
fix=tests/fixtures/olmoe/base
prompt=51,130,212,151,205,118,52,51,126,132,74,47,125,70,65,189,46,138,0
for dev in cuda cpu; do
    ids=$(timeout 60 "$bin/moe" generate --model $fix --tokens $prompt -n 10 --ignore-eos --device $dev 2>&1 | head -1)
    note "generate --device $dev: $ids (reference: 173 62 30 155 228 192 193 136 97 55)"
done

# 5. the end-to-end benchmark on the GPU
timeout 240 "$bin/moe" bench --device cuda --prompt-tokens 2048 --gen-tokens 128 --fuse-gate-up both --repeat 2 \
    --profile >"$out/bench.txt" 2>&1
rc=$?
[ $rc -eq 0 ] || note "bench: FAILED (exit $rc)"
grep -E '^(model|fused|unfused|run|profile)|^ ' "$out/bench.txt" | tee -a "$summary"
