#!/usr/bin/env bash
# Installs, builds and runs every test. Where the CUDA compiler is
# installed, the CUDA backend is built too (build-cuda/, -DMOE_CUDA=ON) and
# every test runs against that build as well: without a GPU its GPU tests
# report themselves skipped, the rest run on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh build
ctest --test-dir build --output-on-failure
nvcc=$(command -v nvcc || true)
if [ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ]; then nvcc=/usr/local/cuda/bin/nvcc; fi
if [ -n "$nvcc" ]; then
    echo "test.sh: $nvcc found: the CUDA backend's build (build-cuda) and its tests"
    bash scripts/build.sh build-cuda -DMOE_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc"
    ctest --test-dir build-cuda --output-on-failure
fi
