#!/usr/bin/env bash
# Configures and builds moe into build/ (or the directory given as $1, with
# any further arguments passed to cmake).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$dir"
