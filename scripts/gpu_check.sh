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
#      alternating (twice each), with the backend's count of captured and
#      replayed steps (MOE_CUDA_DEBUG=1); once more with CUDA graphs off
#      (MOE_CUDA_GRAPHS=0); then a run under --profile, whose time by kind
#      of operation waits for each operation (its own figures are slower);
#      then the same bench with MOE_CUDA_TENSOR_CORES=0 (float32 kernels
#      for prompts too, where the default takes the tensor cores), and
#      moe bench-layer --device cuda --quick both ways;
#   6. with --kernels: each kernel's time in a few plain decode steps and
#      in a 2048-token prompt, from Nsight Compute (ncu), as kernels.csv and
#      kernels_prompt.csv (a line a launch) and the sums by kernel in the
#      summary; then a decode step's DRAM bytes and load sectors by kernel
#      (kernels_mem.csv);
#   7. with --long: a 50000-token prompt and 5000 generated tokens with
#      the default options (an f16 KV cache, as llama.cpp keeps its own),
#      and the GPU memory the run held; then 50000 + 256 with the 8-bit
#      cache (--kv-cache q8: 53% of f16's bytes for decode to read);
#   8. with --peer DIR: llama.cpp's llama-bench on the same card, DIR
#      holding llamacpp_cuda.sh and what it needs (it builds llama.cpp in
#      the background, at the lowest priority, while moe is checked and
#      timed, then times pp2048 and tg128, and with --long tg128 after 50000
#      tokens, with an f16 and a q8_0 cache);
#   9. with --transformers: bench/transformers_peer.py on the same card
#      (bf16, sdpa, grouped_mm experts): prefill 2048 and decode after it,
#      and with --long prefill 50000 and decode after it;
#  10. with --baseline DIR: DIR/moe (an earlier build) and this build's moe
#      alternating on the 2048 + 128 bench, three runs each, so that a
#      change is measured against what it changed on the same card.
#
#   bash scripts/gpu_check.sh [--prebuilt DIR] [--long] [--kernels] [--peer DIR] [--transformers] [--baseline DIR]
#
# Where only a few files may come back from the GPU machine, write them
# elsewhere and send a tarball and the summary, with a time limit under the
# machine's so that the packing still runs:
#   D=/tmp/gr; OUT=$D timeout 570 bash scripts/gpu_check.sh ... >$D.log 2>&1
#   tar czf "$OUT/results.tgz" -C $D .; cp $D/summary.txt "$OUT/"
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export PATH="$PATH:/usr/local/cuda/bin"
out=${OUT:-gpu-results}
mkdir -p "$out"
prebuilt="" long="" kernels="" peer="" transformers="" baseline=""
while [ $# -gt 0 ]; do
    case "$1" in
    --prebuilt) prebuilt=$(cd "$2" && pwd); shift 2 ;;
    --long) long=1; shift ;;
    --kernels) kernels=1; shift ;;
    --peer) peer=$(cd "$2" && pwd); shift 2 ;;
    --transformers) transformers=1; shift ;;
    --baseline) baseline=$(cd "$2" && pwd); shift 2 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
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

# the peer's build and model, in the background while the tests run (a
# one-token run of llama-bench to finish it)
if [ -n "$peer" ]; then
    (timeout 420 nice -n 19 bash "$peer/llamacpp_cuda.sh" run -p 1 -n 0 -r 1 >"$out/peer_build.log" 2>&1) &
    peer_pid=$!
fi

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
# the same tests with prompts off the tensor cores (float32 throughout)
MOE_CUDA_TENSOR_CORES=0 timeout 180 "$bin/test_cuda_backend" >"$out/test_cuda_backend_tc.log" 2>&1
note "test_cuda_backend with MOE_CUDA_TENSOR_CORES=0: exit $?"
grep -E 'largest error' "$out/test_cuda_backend_tc.log" | tee -a "$summary"

# 4. the command line on both devices
fix=tests/fixtures/olmoe/base
prompt=51,130,212,151,205,118,52,51,126,132,74,47,125,70,65,189,46,138,0
for dev in cuda cpu; do
    ids=$(timeout 60 "$bin/moe" generate --model $fix --tokens $prompt -n 10 --ignore-eos --device $dev 2>&1 | head -1)
    note "generate --device $dev: $ids (reference: 173 62 30 155 228 192 193 136 97 55)"
done

# 5. the end-to-end benchmark on the GPU
MOE_CUDA_DEBUG=1 timeout 240 "$bin/moe" bench --device cuda --prompt-tokens 2048 --gen-tokens 128 --fuse-gate-up both \
    --repeat 2 >"$out/bench.txt" 2>&1
rc=$?
[ $rc -eq 0 ] || note "bench: FAILED (exit $rc)"
grep -E '^(model|fused|unfused|run|cuda backend|GPU memory)' "$out/bench.txt" | tee -a "$summary"
MOE_CUDA_GRAPHS=0 timeout 120 "$bin/moe" bench --device cuda --prompt-tokens 2048 --gen-tokens 128 \
    >"$out/bench_nographs.txt" 2>&1
note "graphs off: $(grep -E '^fused' "$out/bench_nographs.txt")"
timeout 120 "$bin/moe" bench --device cuda --prompt-tokens 2048 --gen-tokens 128 --profile >"$out/bench_profile.txt" 2>&1
grep -E '^profile|^ ' "$out/bench_profile.txt" | tee -a "$summary"

# an earlier build against this one, alternating
if [ -n "$baseline" ]; then
    for i in 1 2 3; do
        for which in baseline this; do
            b=$bin
            [ $which = baseline ] && b=$baseline
            timeout 60 "$b/moe" bench --device cuda --prompt-tokens 2048 --gen-tokens 128 \
                >"$out/bench_${which}_$i.txt" 2>&1
            note "$which build, run $i: $(grep -E '^fused' "$out/bench_${which}_$i.txt")"
        done
    done
fi

# the prompt off the tensor cores, and the expert layer alone, fused
# against unfused on the same bytes (both ways of taking a prompt)
MOE_CUDA_TENSOR_CORES=0 timeout 120 "$bin/moe" bench --device cuda --prompt-tokens 2048 --gen-tokens 128 \
    --fuse-gate-up both --repeat 2 >"$out/bench_tc.txt" 2>&1
grep -E '^(fused|unfused)' "$out/bench_tc.txt" | sed 's/^/tensor cores off: /' | tee -a "$summary"
for tc in 0 1; do
    MOE_CUDA_TENSOR_CORES=$tc timeout 150 "$bin/moe" bench-layer --device cuda --quick >"$out/bench_layer_tc$tc.txt" 2>&1
    note "bench-layer --device cuda --quick, MOE_CUDA_TENSOR_CORES=$tc (exit $?):"
    grep -vE '^\s*$' "$out/bench_layer_tc$tc.txt" | tail -12 | tee -a "$summary"
done

# 6. The kernels of a decode step, timed one by one (graphs off, so each
# launch is its own; a 16-token prompt, then 3 tokens: the forward between
# the last two embedding lookups is kept, not the last, which the bench's
# bandwidth probe follows), and those of a 2048-token prompt's forward;
# before the long runs and the peers, which a time limit would cut first
if [ -n "$kernels" ] && command -v ncu >/dev/null; then
    kernel_sums() {   # CSV, which forward (decode: the next to last; prompt: the first), title
        python3 - "$@" <<'PY'
import csv, sys, collections
path, which, title = sys.argv[1:4]
rows = [r for r in csv.reader(open(path)) if len(r) > 10]
if not rows:
    sys.exit(f"{title}: no kernels in {path}")
head, rows = rows[0], rows[1:]
iid, name, val = head.index("ID"), head.index("Kernel Name"), head.index("Metric Value")
def base(n):
    return n.replace("(anonymous namespace)::", "").split("(")[0].split("<")[0]
# each forward begins with the embedding lookup
starts = sorted({int(r[iid]) for r in rows if base(r[name]) == "embed_rows"})
if len(starts) < 2:
    sys.exit(f"{title}: fewer than two forwards in {path}")
a, b = (starts[-2], starts[-1]) if which == "decode" else (starts[0], starts[1])
keep, forwards = {int(r[iid]) for r in rows if a <= int(r[iid]) < b}, 1
t = collections.defaultdict(float); n = collections.Counter()
for r in rows:
    if int(r[iid]) in keep:
        k = base(r[name])
        t[k] += float(r[val].replace(",", "")) / forwards; n[k] += 1
total = sum(t.values())
print(f"{title} (ncu, {len(keep)//forwards} launches): {total/1000:.1f} us of kernel time")
for k, v in sorted(t.items(), key=lambda kv: -kv[1]):
    print(f"  {k:<28} {n[k]//forwards:4d} launches {v/1000:9.1f} us {100*v/total:5.1f}%")
PY
    }
    ncu_run() {   # name, then moe's arguments
        local f=$1
        shift
        MOE_CUDA_GRAPHS=0 timeout 200 ncu --clock-control none --print-kernel-base function \
            --metrics gpu__time_duration.sum --csv "$bin/moe" "$@" >"$out/$f.csv" 2>"$out/$f.log"
    }
    ncu_run kernels bench --device cuda --prompt-tokens 16 --gen-tokens 3
    kernel_sums "$out/kernels.csv" decode "kernels of a decode step" | tee -a "$summary"
    ncu_run kernels_prompt bench --device cuda --prompt-tokens 2048 --gen-tokens 2
    kernel_sums "$out/kernels_prompt.csv" prompt "kernels of a 2048-token prompt" | tee -a "$summary"
    # The same decode step's memory traffic by kernel: DRAM bytes read over
    # the kernel's time, and 32-byte sectors a global load request (16: a
    # warp's float4 loads side by side; 32: each lane on lines of its own).
    # A run of its own, last, so that a metric this ncu lacks costs only it.
    kernel_memory() {   # CSV
        python3 - "$@" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows:
    sys.exit("decode memory traffic: no kernels (see kernels_mem.log)")
head, rows = rows[0], rows[1:]
iid, name, metric, val = (head.index(h) for h in ("ID", "Kernel Name", "Metric Name", "Metric Value"))
def base(n):
    return n.replace("(anonymous namespace)::", "").split("(")[0].split("<")[0]
starts = sorted({int(r[iid]) for r in rows if base(r[name]) == "embed_rows"})
if len(starts) < 2:
    sys.exit("decode memory traffic: fewer than two forwards")
m = collections.defaultdict(lambda: collections.defaultdict(float))
for r in rows:
    if starts[-2] <= int(r[iid]) < starts[-1]:
        m[base(r[name])][r[metric]] += float(r[val].replace(",", ""))
t = lambda k: m[k]["gpu__time_duration.sum"]
print("decode step, memory by kernel (ncu): DRAM read GB/s over the kernel's time, sectors a load request")
for k in sorted(m, key=t, reverse=True):
    v = m[k]
    req = v["l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum"]
    spr = v["l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum"] / req if req else 0.0
    gbs = v["dram__bytes_read.sum"] / t(k) if t(k) else 0.0
    print(f"  {k:<28} {t(k)/1000:9.1f} us {v['dram__bytes_read.sum']/1e6:8.2f} MB {gbs:7.0f} GB/s {spr:5.1f} sectors/request")
PY
    }
    MOE_CUDA_GRAPHS=0 timeout 200 ncu --clock-control none --print-kernel-base function --metrics \
        gpu__time_duration.sum,dram__bytes_read.sum,l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum,l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum \
        --csv "$bin/moe" bench --device cuda --prompt-tokens 16 --gen-tokens 3 >"$out/kernels_mem.csv" 2>"$out/kernels_mem.log"
    kernel_memory "$out/kernels_mem.csv" | tee -a "$summary"
fi

# 7. a long context
if [ -n "$long" ]; then
    timeout 300 "$bin/moe" bench --device cuda --prompt-tokens 50000 --gen-tokens 5000 \
        >"$out/bench_long.txt" 2>&1
    note "long (50000 + 5000, default options): $(grep -E '^fused' "$out/bench_long.txt")"
    grep -E '^GPU memory' "$out/bench_long.txt" | tee -a "$summary"
    timeout 300 "$bin/moe" bench --device cuda --prompt-tokens 50000 --gen-tokens 256 --kv-cache q8 \
        >"$out/bench_long_q8.txt" 2>&1
    note "long (50000 + 256), q8 cache: $(grep -E '^fused' "$out/bench_long_q8.txt")"
fi

# 8. the peer on the same card
if [ -n "$peer" ]; then
    wait "$peer_pid"
    note "peer build: $(tail -1 "$out/peer_build.log")"
    timeout 180 bash "$peer/llamacpp_cuda.sh" run -p 2048 -n 128 -r 3 >"$out/peer.txt" 2>&1
    grep -E '^\|' "$out/peer.txt" | tee -a "$summary"
    if [ -n "$long" ]; then
        timeout 240 bash "$peer/llamacpp_cuda.sh" run -p 0 -n 128 -d 50000 -r 1 >"$out/peer_long.txt" 2>&1
        grep -E '^\|' "$out/peer_long.txt" | tail -1 | tee -a "$summary"
        timeout 240 bash "$peer/llamacpp_cuda.sh" run -p 0 -n 128 -d 50000 -r 1 -ctk q8_0 -ctv q8_0 \
            >"$out/peer_long_q8.txt" 2>&1
        grep -E '^\|' "$out/peer_long_q8.txt" | tail -1 | sed 's/^/q8_0 cache: /' | tee -a "$summary"
    fi
fi

# 9. transformers on the same card
if [ -n "$transformers" ]; then
    timeout 300 python3 bench/transformers_peer.py --prompts "2048${long:+,50000}" --gen-tokens 128 \
        --json "$out/transformers.json" >"$out/transformers.txt" 2>&1
    note "transformers peer (exit $?):"
    grep -E '^transformers' "$out/transformers.txt" | tee -a "$summary"
fi

