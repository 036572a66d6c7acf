#!/usr/bin/env bash
# make fuzz: every cargo-fuzz target of fuzz/ for FUZZ_SECONDS (default 600) each, one after the
# other, seeded from fuzz/seeds/<target> (python3 fuzz/seed.py); the grown corpus stays in
# fuzz/corpus/<target> (not committed), crashes in fuzz/artifacts/<target>. Exits non-zero on
# the first crash. FUZZ_TARGETS="a b" limits the run; figures go to fuzz/results.txt.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-600}"
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
results=results.txt
echo "# cargo fuzz run, ${seconds}s per target, $(date -u +%FT%TZ), git $(git rev-parse --short HEAD)" >> "$results"
cargo fuzz build -O
for t in $targets; do
  mkdir -p "corpus/$t" "logs"
  log="logs/$t.log"
  echo "== $t: ${seconds}s"
  if ! cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$seconds" -print_final_stats=1 > "$log" 2>&1; then
    tail -n 30 "$log"
    echo "$t: CRASH (input in fuzz/artifacts/$t, log fuzz/$log)" | tee -a "$results"
    exit 1
  fi
  runs=$(grep -a -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  speed=$(grep -a -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  corpus=$(find "corpus/$t" -type f | wc -l)
  echo "$t: ${seconds}s, $runs executions ($speed/s), corpus $corpus inputs, 0 crashes" | tee -a "$results"
done
