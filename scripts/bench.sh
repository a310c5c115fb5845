#!/usr/bin/env bash
# The main job: install, build, and run the end-to-end benchmark on the
# built-in synthetic OLMoE-1B-7B (4-bit, made in memory, no download): a
# 512-token prompt and 64 generated tokens. Extra arguments go to `moe bench`
# (e.g. --fuse-gate-up both --repeat 3, --json, --synthetic-bits 8).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh build
./build/moe bench --prompt-tokens 512 --gen-tokens 64 "$@"
