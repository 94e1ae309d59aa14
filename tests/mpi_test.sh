#!/usr/bin/env bash
# MPI test of `ebt_lm train` (make test; README "Beyond one machine: MPI").
# Usage: tests/mpi_test.sh BUILD_DIR   (BUILD_DIR holds ebt_lm, ebt_lm_mpi and
# ckpt_diff). Tiny models on LICENSE, every rank on one thread, all ranks on
# this machine (mpirun --oversubscribe). Checks:
#  - 1 rank gives the bits of the one-process build, with --accum 1 and 2;
#  - 2 and 3 ranks, --accum 1 and 2, give the parameters of one process on
#    the whole batch within TOL (float32 sums in another order), with
#    --check-sync comparing every rank's parameters at every step, and the
#    same bits when run again;
#  - a run of 3 steps on 2 ranks resumed to 6 on 3 ranks matches one
#    uninterrupted process within TOL;
#  - a NaN gradient on one rank (--fault-nan) is refused and retried alike
#    on every rank (--check-sync), as one process does;
#  - a hung rank (SIGSTOP) stops the job within --mpi-timeout with a message
#    naming the step and that rank; a killed rank (SIGKILL) stops it too;
#    the last checkpoint loads and resumes on another number of ranks.
set -uo pipefail
build="$1"
lm="$build/ebt_lm"; lmm="$build/ebt_lm_mpi"; cdiff="$build/ckpt_diff"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export OMP_NUM_THREADS=1
unset OPENBLAS_NUM_THREADS
TOL=1e-4        # relative, per tensor (max |a - b| / max |a|); measured at most 5.4e-6
# under `make asan`: OpenMPI's own allocations left at exit are not ours to report
mr=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" mpirun --oversubscribe --bind-to none)
[ "$(id -u)" -eq 0 ] && mr+=(--allow-run-as-root)
data="$(dirname "$0")/../LICENSE"
common=(--data "$data" --d 16 --layers 1 --heads 2 --seq 16 --batch 6 --eval-batches 1 --eval-every 0)
small=("${common[@]}" --replay 0)
passed=0; failed=0
ok()  { passed=$((passed + 1)); echo "ok: $*"; }
bad() { failed=$((failed + 1)); echo "FAILED: $*"; }
# run NAME NP ARGS...: ebt_lm_mpi train on NP ranks (NP 0: the one-process ebt_lm); log in $dir/NAME.log
run() {
    local name=$1 np=$2 opts=("${small[@]}"); shift 2
    [[ " $* " == *" --arch transformer "* ]] && opts=("${common[@]}")   # --replay is EBT's
    if [ "$np" -eq 0 ]; then "$lm" train "${opts[@]}" "$@" > "$dir/$name.log" 2>&1
    else "${mr[@]}" -np "$np" "$lmm" train "${opts[@]}" "$@" > "$dir/$name.log" 2>&1; fi || { bad "$name: exit $? ($(tail -n 3 "$dir/$name.log" | tr '\n' ' '))"; return 1; }
}
# same A B WHAT: identical files; near A B WHAT: parameters within TOL
same() { if cmp -s "$dir/$1" "$dir/$2"; then ok "$3: identical bits"; else bad "$3: $("$cdiff" "$dir/$1" "$dir/$2")"; fi; }
near() { local d; d=$("$cdiff" "$dir/$1" "$dir/$2" "$TOL") && ok "$3: $d" || bad "$3: $d (tolerance $TOL)"; }

# one process on the whole batch: the reference (the default recipe's randomness, replay off)
run ref 0 --steps 6 --out "$dir/ref.st"
run p_a2 0 --steps 6 --accum 2 --out "$dir/p_a2.st"
near ref.st p_a2.st "one process, --accum 2 against 1"
run n1 1 --steps 6 --out "$dir/n1.st" && same ref.st n1.st "1 rank against one process"
run n1_a2 1 --steps 6 --accum 2 --out "$dir/n1_a2.st" && same p_a2.st n1_a2.st "1 rank --accum 2 against one process --accum 2"
for np in 2 3; do
    for acc in 1 2; do
        run "n${np}_a$acc" "$np" --steps 6 --accum "$acc" --check-sync --out "$dir/n${np}_a$acc.st" &&
            near ref.st "n${np}_a$acc.st" "$np ranks --accum $acc (ranks in sync at every step) against one process"
    done
done
run n2_a1_again 2 --steps 6 --check-sync --out "$dir/n2_a1_again.st" && same n2_a1.st n2_a1_again.st "2 ranks, run again"
run n3_a2_again 3 --steps 6 --accum 2 --check-sync --out "$dir/n3_a2_again.st" && same n3_a2.st n3_a2_again.st "3 ranks --accum 2, run again"

# transformer++, and the replay buffer (per rank: ranks stay in sync, results are not one process's)
run tf_1 0 --arch transformer --steps 6 --out "$dir/tf_1.st"
run tf_3 3 --arch transformer --steps 6 --accum 2 --check-sync --out "$dir/tf_3.st" &&
    near tf_1.st tf_3.st "transformer++, 3 ranks --accum 2 against one process"
run replay 2 --steps 6 --replay 8 --check-sync --out "$dir/replay.st" && ok "replay buffer on 2 ranks: in sync at every step"

# resume across a change of the number of ranks
run res_a 2 --steps 3 --check-sync --out "$dir/res.st" && run res_b 3 --steps 6 --resume --check-sync --out "$dir/res.st" &&
    near ref.st res.st "3 steps on 2 ranks resumed to 6 on 3 against one process"

# a NaN gradient on rank 2 at step 3: refused and retried on every rank
run fault_1 0 --steps 6 --fault-nan 3 --out "$dir/fault_1.st"
if run fault_3 3 --steps 6 --fault-nan 3:2 --check-sync --out "$dir/fault_3.st"; then
    grep -q "step 3 was non-finite" "$dir/fault_3.log" && ok "NaN on rank 2: refused and retried" || bad "NaN on rank 2: no retry reported"
    near fault_1.st fault_3.st "NaN on rank 2 of 3 against NaN in one process"
fi

# the pid of rank R of the job whose mpirun is PID
rank_pid() {
    local p
    for p in $(ps -o pid= --ppid "$1"); do
        tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" && { echo "$p"; return 0; }
    done
    return 1
}
# alive PID: the process exists and is not a zombie
alive() { [ -e "/proc/$1/status" ] && ! grep -q "^State:.*Z" "/proc/$1/status" 2>/dev/null; }
# fault NAME NP SIGNAL RANK TIMEOUT: a long run; after its second checkpoint, SIGNAL to rank RANK;
# the job must end (non-zero) within TIMEOUT + 5 s; sets $fault_rc and $fault_secs
fault() {
    local name=$1 np=$2 sig=$3 rank=$4 timeout=$5 pid rp="" t0 i
    "${mr[@]}" -np "$np" "$lmm" train "${small[@]}" --steps 1000000 --save-every 20 --mpi-timeout "$timeout" \
        --out "$dir/$name.st" > "$dir/$name.log" 2>&1 &
    pid=$!
    for i in $(seq 600); do [ -s "$dir/$name.st" ] && [ "$("$cdiff" --step "$dir/$name.st" 2>/dev/null)" -ge 40 ] 2>/dev/null && break; sleep 0.1; done
    for i in $(seq 50); do rp=$(rank_pid "$pid" "$rank") && break; sleep 0.1; done
    [ -n "$rp" ] || {
        bad "$name: no rank $rank (mpirun $(kill -0 "$pid" 2>/dev/null && echo running || echo gone), children: $(ps -o pid=,comm= --ppid "$pid" | tr '\n' ' '); log: $(tail -n 5 "$dir/$name.log" | tr '\n' ' ')"
        kill -9 "$pid" 2>/dev/null; wait "$pid"; return 1; }
    t0=$(date +%s.%N)
    kill "-$sig" "$rp"
    for i in $(seq $(( (timeout + 5) * 10 ))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fault_secs=$(echo "$(date +%s.%N) - $t0" | bc)
    if kill -0 "$pid" 2>/dev/null; then bad "$name: still running $fault_secs s after SIG$sig"; kill -9 "$pid" "$rp" 2>/dev/null; fi
    wait "$pid"; fault_rc=$?
    for i in $(seq 30); do alive "$rp" || break; sleep 0.1; done
    alive "$rp" && { bad "$name: rank $rank left running"; kill -9 "$rp"; }
    return 0
}
# resume_check NAME NP: the checkpoint loads; NP ranks (0: one process) train it 3 more steps
resume_check() {
    local k on="$2 ranks"
    [ "$2" -eq 0 ] && on="one process (ebt_lm)"
    k=$("$cdiff" --step "$dir/$1.st") || { bad "$1: the last checkpoint does not load"; return 1; }
    run "$1_resume" "$2" --steps $((k + 3)) --resume --out "$dir/$1.st" &&
        [ "$("$cdiff" --step "$dir/$1.st")" -eq $((k + 3)) ] && ok "$1: checkpoint of step $k resumed on $on to $((k + 3))"
}

if fault hang 3 STOP 2 3; then
    # rank 2 must be named; a rank blocked waiting for rank 2's part of the last
    # sum (stopped between its messages to ranks 0 and 1) is unheard from too
    if [ "$fault_rc" -ne 0 ] && grep -Eq "nothing for .* from ranks? ([0-9]+, )*2(, [0-9]+)*; stopping every rank" "$dir/hang.log"; then
        ok "rank 2 hung (SIGSTOP): stopped after $fault_secs s (timeout 3 s), exit $fault_rc: $(grep -m1 "nothing for" "$dir/hang.log")"
    else bad "hung rank: exit $fault_rc after $fault_secs s: $(tail -n 5 "$dir/hang.log" | tr '\n' ' ')"; fi
    resume_check hang 2
fi
if fault kill 2 KILL 1 5; then
    [ "$fault_rc" -ne 0 ] && ok "rank 1 killed (SIGKILL): job stopped after $fault_secs s, exit $fault_rc: $(grep -m1 "exited on signal" "$dir/kill.log" | sed 's/ *$//')" ||
        bad "killed rank: exit $fault_rc after $fault_secs s"
    resume_check kill 0
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
