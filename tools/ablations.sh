#!/usr/bin/env bash
# The experiments of README "Does thinking pay?". Every run trains for the
# same wall time (MINUTES, default 8) on tinyshakespeare with ONE thread,
# two runs at a time on a 2-core machine (so every run gets the same share
# of it), then `ebt_lm eval` measures each on the same validation windows
# (and on an out-of-distribution text). About 55 minutes on 2 cores.
#   bash tools/ablations.sh [OUTDIR] [EBT_LM binary]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-ablations}; bin=${2:-$root/build/ebt_lm}
data=$root/data/tinyshakespeare.txt; ood=/usr/share/common-licenses/GPL-3
min=${MINUTES:-8}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
mkdir -p "$out"; cd "$out"
train() {  # name, options...   (skipped when its log says it finished)
    local name=$1; shift
    [ -s "$name.log" ] && grep -q "^done:" "$name.log" && return 0
    "$bin" train --data "$data" --minutes "$min" --out "$name.st" "$@" > "$name.log" 2>&1
}
evaluate() {  # name, extra eval options...
    local name=$1; shift
    "$bin" eval --ckpt "$name.st" --baseline tf.st --data "$data" --batches 8 "$@" > "$name.eval" 2>/dev/null
}
pair() {  # two "name|options" specs, trained side by side
    local a=$1 b=$2
    # shellcheck disable=SC2086
    train "${a%%|*}" ${a#*|} & train "${b%%|*}" ${b#*|}; wait
}
pair "default|" "s1|--recipe s1"
pair "s2|--recipe s2" "tf|--arch transformer"
pair "default_k2|--k-min 2 --k-max 2" "default_rand1|--alpha-rand 1"
pair "default_noise0|--noise 0" "default_replay0|--replay 0"
# the transformer++ at the default EBT's number of training tokens (steps)
steps=$(sed -n 's/^done: .* steps \([0-9]*\) .*/\1/p' default.log)
[ -s tf_tokens.log ] || "$bin" train --arch transformer --data "$data" --steps "$steps" --out tf_tokens.st > tf_tokens.log 2>&1 &
evaluate default --ood "$ood" --calibration default.cal.png --compute default.compute.png --plot default.steps.png; wait
evaluate s1 --ood "$ood" --calibration s1.cal.png --plot s1.steps.png &
evaluate s2 --ood "$ood" --calibration s2.cal.png --plot s2.steps.png; wait
evaluate default_k2 & evaluate default_rand1; wait
evaluate default_noise0 & evaluate default_replay0; wait
"$bin" eval --ckpt tf_tokens.st --data "$data" --batches 8 --ood "$ood" > tf_tokens.eval 2>/dev/null &
"$bin" eval --ckpt tf.st --data "$data" --batches 8 --ood "$ood" > tf.eval 2>/dev/null; wait
echo "ablations: done in $out"
