#!/usr/bin/env bash
# Builds the threaded tests with ThreadSanitizer into build-tsan (or $1) and
# runs them at 4 threads, whatever the machine has, so that the thread
# pool's workers, barriers and hand-offs always run concurrently: the pool
# itself, the kernels' tests (each kernel set's threaded drivers), attention, the model
# forward through the layers (test_model_errors, test_batch), chat sessions,
# the server's engine thread, and the moe command end to end (generate,
# chat, serve). The expert layer's own long tests (test_switchglu,
# test_linear) run their code through the model tests here and stay out,
# to keep CI short. Any report fails the run (halt_on_error).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-tsan}
tests=(test_threadpool test_kernels test_kernels_i8 test_attention test_batch test_model_errors test_chat test_server_engine)
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOE_TSAN=ON >/dev/null
cmake --build "$dir" --target moe "${tests[@]}"
pattern="^($(IFS='|'; echo "${tests[*]}")|cli_generate_greedy_reference|cli_generate_prompt_json|cli_chat_kv_cache|serve_end_to_end)\$"
MOE_THREADS=4 TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ctest --test-dir "$dir" --output-on-failure -R "$pattern"
