#!/usr/bin/env bash
# The first command's wall time (README, "A first result in minutes"): `ttc demo` with its
# defaults and the user's thread settings (none set: the backend picks its own), once on the
# machine as it is, once with two CPU-bound jobs beside it (a laptop's other work). The load
# average before and after each run is printed with it: on a shared machine, say what it was.
#
#   bash benchmarks/first_command.sh              # .venv/bin/ttc
#   bash benchmarks/first_command.sh path/to/ttc
set -euo pipefail
TTC=${1:-.venv/bin/ttc}
unset OMP_NUM_THREADS

run() {
    echo "== $1; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    TIMEFORMAT="wall %R s, user %U s, sys %S s"
    time "$TTC" demo --quiet
    echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
}

run "the machine as it is"
python3 -c "while True: pass" & BUSY1=$!
python3 -c "while True: pass" & BUSY2=$!
trap 'kill $BUSY1 $BUSY2 || true' EXIT
run "with two busy loops (python3 -c 'while True: pass' x2)"
