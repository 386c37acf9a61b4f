#!/usr/bin/env bash
# bench-scan.sh — how fast dup-scan walks a tree, next to find(1).
#
#   scripts/bench-scan.sh [CORPUS_DIR]
#
# Builds dup-scan (release), makes the large benchmark corpus (~1 GiB,
# ~50k files) in CORPUS_DIR (default ${TMPDIR:-/tmp}/dup-bench-corpus) with
# make-corpus.sh unless it is already there, then, with a warm cache, times
# the best of 3 runs of
#   dup-scan DIR > /dev/null
#   find DIR -printf '%p %s %T@ %m\n' > /dev/null
# and prints both times and their ratio (target: dup-scan <= 1.5 x find).
# MAKE_CORPUS overrides the path of make-corpus.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

CORPUS=${1:-${TMPDIR:-/tmp}/dup-bench-corpus}
CORPUS=${CORPUS%/}
MAKE_CORPUS=${MAKE_CORPUS:-/work/shared/bench/make-corpus.sh}

cargo build --release --quiet --bin dup-scan
BIN=${CARGO_TARGET_DIR:-target}/release/dup-scan

# make-corpus.sh writes the manifest last, so its presence means a whole corpus.
if [ ! -s "$CORPUS.manifest" ]; then
  echo "bench-scan: making the corpus in $CORPUS (a few minutes)" >&2
  "$MAKE_CORPUS" --size large --force "$CORPUS" >&2
fi

# Best wall time of 3 runs, in seconds.
best_of_3() {
  local best="" t0 t1 ms
  for _ in 1 2 3; do
    t0=$(date +%s%N)
    "$@" > /dev/null
    t1=$(date +%s%N)
    ms=$(( (t1 - t0) / 1000 ))
    if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
  done
  awk -v us="$best" 'BEGIN { printf "%.3f", us / 1e6 }'
}

items=$(find "$CORPUS" | wc -l)
"$BIN" "$CORPUS" > /dev/null    # warm the cache (and the user/group lookups' files)
find "$CORPUS" -printf '%p %s %T@ %m\n' > /dev/null
scan=$(best_of_3 "$BIN" "$CORPUS")
find=$(best_of_3 find "$CORPUS" -printf '%p %s %T@ %m\n')
ratio=$(awk -v a="$scan" -v b="$find" 'BEGIN { printf "%.2f", a / b }')
echo "tree:     $CORPUS ($items items)"
echo "dup-scan: ${scan} s"
echo "find:     ${find} s"
echo "ratio:    ${ratio} (target <= 1.5)"
