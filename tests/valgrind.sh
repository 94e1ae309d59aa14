#!/usr/bin/env bash
# Memcheck over the minimal example and a short ebt_lm run on a tiny model
# (train with evaluation and checkpoints, resume, sample): any invalid
# access, use of uninitialised memory, bad free, or definite/indirect leak
# fails. OpenBLAS runs single-threaded: much faster under valgrind.
# Usage: bash tests/valgrind.sh [build dir]   (after `make`; ~10-15 s)
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
export OPENBLAS_NUM_THREADS=1
vg=(valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
run() {  # run <what> <command...>: quiet unless it fails
    local what="$1"; shift
    if ! "${vg[@]}" "$@" > "$dir/log" 2>&1; then
        cat "$dir/log"
        echo "valgrind: $what FAILED"
        exit 1
    fi
}
small="--d 16 --layers 1 --heads 2 --seq 16 --batch 4 --eval-batches 1"
run minimal "$build/minimal" "$dir/minimal.safetensors"
# shellcheck disable=SC2086
run "ebt_lm train" "$build/ebt_lm" train --data LICENSE $small --steps 4 --eval-every 2 --save-every 2 --out "$dir/e.safetensors"
# shellcheck disable=SC2086
run "ebt_lm train --resume" "$build/ebt_lm" train --data LICENSE $small --steps 6 --resume --out "$dir/e.safetensors"
run "ebt_lm sample" "$build/ebt_lm" sample --ckpt "$dir/e.safetensors" --prompt "The " --n 10 --steps 2
echo "valgrind: minimal, ebt_lm train / resume / sample: no errors, no leaks"
