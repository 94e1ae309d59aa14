#!/usr/bin/env bash
# Step time of `ebt_lm train` on one process x 2 threads against 2 ranks x
# 1 thread (README "Beyond one machine: MPI"). Needs `make mpi`.
#   bash tools/bench_mpi.sh [RUNS] [A|B|Abatch]...   (default: 3 runs of A and B)
# A: V=256 D=128 L=4 H=4 F=128 S=128 B=16; B: D=384 L=6 H=6 F=384 S=256 B=8;
# EBT mode detach, K=2, no noise, no replay. Each run trains a fresh model for
# a few steps on data/tinyshakespeare.txt; ebt_lm reports the mean time of
# the steps after the first and the part of it spent summing across ranks.
# Layouts alternate within each round so that load from other processes
# spreads over both. "Abatch": config A on one process and one thread at
# batches 16, 8, 4, 2, 1 (the compute of one rank as the batch is split).
# "sum": the sum alone (tools/bench_mpi_sum.c) on 2 ranks, A's and B's sizes.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}; shift || true
configs=("$@"); [ ${#configs[@]} -eq 0 ] && configs=(A B)
bin=build/ebt_lm; mbin=build/ebt_lm_mpi
mr=(mpirun --bind-to none); [ "$(id -u)" -eq 0 ] && mr+=(--allow-run-as-root)
ebt=(--data data/tinyshakespeare.txt --mode detach --k-min 2 --k-max 2 --noise 0 --alpha-rand 1 --replay 0
     --eval-every 0 --eval-batches 1 --save-every 1000000 --out /tmp/bench_mpi.safetensors)
cfg_A=(--d 128 --layers 4 --heads 4 --ff 128 --seq 128 --batch 16 --steps 12)
cfg_B=(--d 384 --layers 6 --heads 6 --ff 384 --seq 256 --batch 8 --steps 6)
# "ms comm" of one run: the ms per step and the ms of it summing
one() { "$@" 2>&1 | sed -n 's/.*: \([0-9.]*\) ms per step (\([0-9.]*\) ms of it summing.*/\1 \2/p'; }
# CPU seconds (user + system) of a command
cpu() { local TIMEFORMAT='%3U %3S'; { time "$@" > /dev/null 2>&1; } 2>&1 | awk '{print $1 + $2}'; }
stats() { sort -g | awk '{a[NR]=$1} END {if (NR) printf "%.3g (%.3g-%.3g)", a[int((NR+1)/2)], a[1], a[NR]}'; }
for c in "${configs[@]}"; do
    if [ "$c" = sum ]; then
        mpicc -O2 -fopenmp -o build/bench_mpi_sum tools/bench_mpi_sum.c || exit 1
        for n in 525575 6395143; do OMP_NUM_THREADS=1 "${mr[@]}" -np 2 build/bench_mpi_sum "$n" 30; done
        continue
    fi
    if [ "$c" = Abatch ]; then   # wall time, and CPU time: (12 steps - 2 steps) / 10, which load disturbs less
        for b in 16 8 4 2 1; do
            w=$(for r in $(seq "$runs"); do OMP_NUM_THREADS=1 one "$bin" train "${ebt[@]}" "${cfg_A[@]}" --batch "$b" | cut -d' ' -f1; done | stats)
            u=$(for r in $(seq "$runs"); do
                    c12=$(OMP_NUM_THREADS=1 cpu "$bin" train "${ebt[@]}" "${cfg_A[@]}" --batch "$b")
                    c2=$(OMP_NUM_THREADS=1 cpu "$bin" train "${ebt[@]}" "${cfg_A[@]}" --batch "$b" --steps 2)
                    echo "($c12 - $c2) * 100" | bc -l; done | stats)
            echo "A, batch $b, 1 process x 1 thread: $w ms/step wall, $u ms/step CPU"
        done
        continue
    fi
    declare -n cfg="cfg_$c"
    rm -f /tmp/bench_mpi.$$.*
    for r in $(seq "$runs"); do
        OMP_NUM_THREADS=2 one "$bin" train "${ebt[@]}" "${cfg[@]}" >> /tmp/bench_mpi.$$.1x2
        OMP_NUM_THREADS=1 one "${mr[@]}" -np 2 "$mbin" train "${ebt[@]}" "${cfg[@]}" >> /tmp/bench_mpi.$$.2x1
    done
    echo "$c, 1 process x 2 threads: $(cut -d' ' -f1 /tmp/bench_mpi.$$.1x2 | stats) ms/step"
    echo "$c, 2 ranks x 1 thread:    $(cut -d' ' -f1 /tmp/bench_mpi.$$.2x1 | stats) ms/step, summing $(cut -d' ' -f2 /tmp/bench_mpi.$$.2x1 | stats) ms"
    rm -f /tmp/bench_mpi.$$.*
done
rm -f /tmp/bench_mpi.safetensors
