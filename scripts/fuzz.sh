#!/usr/bin/env bash
# Fuzzes one target with libFuzzer for SECONDS (default 600):
#
#   bash scripts/fuzz.sh TARGET [SECONDS] [libFuzzer options...]
#
# TARGET is a tests/fuzz/fuzz_TARGET.c (safetensors, model_config,
# generation_config, tokenizer_load, tokenizer_encode, tokenizer_config,
# chat_template, checkpoint, server_request). It is built with clang, -fsanitize=fuzzer,
# address,undefined, into build-fuzz (or $MOE_FUZZ_BUILD), and started from
# the committed corpus tests/fuzz/corpus/TARGET with the dictionary
# tests/fuzz/dict/TARGET.dict if there is one. New inputs go to
# BUILD/fuzz-corpus/TARGET (the committed corpus is only read), crashes and
# hangs (over 10 s an input) to BUILD/fuzz-artifacts/TARGET/. To keep one as
# a regression, copy it into the committed corpus as regression-NAME: every
# build's ctest replays it (fuzz_TARGET_replay).
#
# Needs clang and its runtime (Debian: apt-get install clang libclang-rt-14-dev);
# the replays in CI do not.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh TARGET [SECONDS] [libFuzzer options...]}
seconds=${2:-600}
shift $(($# < 2 ? $# : 2))
if [ ! -f "tests/fuzz/fuzz_$target.c" ]; then
  echo "fuzz.sh: no target '$target'; targets:" $(ls tests/fuzz/fuzz_*.c | sed 's|.*/fuzz_||; s|\.c$||') >&2
  exit 2
fi
command -v clang >/dev/null || { echo "fuzz.sh: needs clang (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }
dir=${MOE_FUZZ_BUILD:-build-fuzz}
[ -f "$dir/build.ninja" ] || CC=clang cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOE_FUZZ=ON >/dev/null
cmake --build "$dir" --target "fuzz_$target"
work=$dir/fuzz-corpus/$target
artifacts=$dir/fuzz-artifacts/$target
mkdir -p "$work" "$artifacts"
dict=()
[ -f "tests/fuzz/dict/$target.dict" ] && dict=("-dict=tests/fuzz/dict/$target.dict")
exec "$dir/fuzz_$target" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "${dict[@]}" "$@" "$work" "tests/fuzz/corpus/$target"
