#!/usr/bin/env bash
# The main job: install, build, and run the layer benchmark (quick form) on
# synthetic experts. Extra arguments go to `moe bench-layer`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh build
./build/moe bench-layer --quick "$@"
