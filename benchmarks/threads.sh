#!/usr/bin/env bash
# Thread settings of the transformers backend on a busy machine (issue 12): `ttc run --n 8` and a
# 3-problem `ttc eval`, with torch's default threads (`--threads torch`, which is what ttc did before
# `--threads` existed), the new default (`auto`) and OMP_NUM_THREADS=1, interleaved so that the
# settings see the same load. Extra load: two `python3 -c "while True: pass"` processes.
# Each line records `uptime`'s load averages before and after, and the last progress-bar line.
# Usage: benchmarks/threads.sh [OUTDIR]     (LIMIT=seconds per command, default 300)
set -u
OUT=${1:-${TMPDIR:-/tmp}/ttc-threads}
PY=${PY:-python}
LIMIT=${LIMIT:-300}
Q="Tom has 3 apples. Tom gets 5 more apples. How many apples does Tom have now?"
DATA=${DATA:-gsm8k}
mkdir -p "$OUT"
python3 -c "while True: pass" & L1=$!
python3 -c "while True: pass" & L2=$!
trap 'kill $L1 $L2' EXIT
one() {  # label, env, ttc arguments...
  local label=$1 envs=$2; shift 2
  local up; up=$(uptime | sed 's/.*load average: //')
  local t0; t0=$(date +%s.%N)
  env $envs timeout "$LIMIT" "$PY" -m ttc.cli "$@" > "$OUT/$label.out" 2> "$OUT/$label.err"
  local rc=$?
  local t1; t1=$(date +%s.%N)
  local up2; up2=$(uptime | sed 's/.*load average: //')
  local last; last=$(tr '\r' '\n' < "$OUT/$label.err" | grep -E "tokens:|it/s|s/it" | tail -1 | cut -c1-90)
  printf "%-22s rc=%-3s %6.1f s  load before: %-18s after: %-18s last bar: %s\n" "$label" "$rc" \
    "$(echo "$t1 - $t0" | bc)" "$up" "$up2" "$last" | tee -a "$OUT/results.txt"
}
RUN=(run "$Q" --n 8 --max-tokens 48 --seed 0)
EVAL=(eval --dataset "$DATA" --limit 3 --strategy majority --n 4 --max-tokens 48)
one run-torch "" "${RUN[@]}" --threads torch
one run-auto "" "${RUN[@]}"
one eval-torch "" "${EVAL[@]}" --threads torch --output "$OUT/eval-torch.jsonl"
one eval-auto "" "${EVAL[@]}" --output "$OUT/eval-auto.jsonl"
one run-omp1 "OMP_NUM_THREADS=1" "${RUN[@]}"
one run-torch-2 "" "${RUN[@]}" --threads torch
one run-auto-2 "" "${RUN[@]}"
