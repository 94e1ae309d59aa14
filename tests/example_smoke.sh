#!/usr/bin/env bash
# Smoke test of examples/ebt_lm: tiny models train for a few steps on a
# small text, resume, evaluate (with the plot) and sample; both archs.
set -euo pipefail
bin="$1"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
data="$(dirname "$0")/../LICENSE"
small="--d 16 --layers 1 --heads 2 --seq 16 --batch 4 --eval-batches 1"
"$bin" train --data "$data" $small --steps 6 --eval-every 3 --save-every 3 --out "$dir/e.safetensors" > "$dir/train.log" 2>&1
"$bin" train --data "$data" $small --steps 9 --resume --out "$dir/e.safetensors" >> "$dir/train.log" 2>&1
grep -q "resuming" "$dir/train.log"
"$bin" train --data "$data" $small --arch transformer --steps 6 --out "$dir/t.safetensors" >> "$dir/train.log" 2>&1
"$bin" eval --ckpt "$dir/e.safetensors" --baseline "$dir/t.safetensors" --data "$data" --batches 1 --plot "$dir/p.png" > "$dir/eval.log" 2>&1
test -s "$dir/p.png"
"$bin" sample --ckpt "$dir/e.safetensors" --prompt "The " --n 20 --steps 2 > "$dir/sample.log" 2>&1
"$bin" sample --ckpt "$dir/t.safetensors" --prompt "The " --n 20 > "$dir/sample2.log" 2>&1
if "$bin" train --data /nonexistent --steps 1 > /dev/null 2>&1; then echo "bad corpus accepted"; exit 1; fi
echo "1 passed, 0 failed"
