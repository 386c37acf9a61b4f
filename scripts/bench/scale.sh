#!/usr/bin/env bash
# scale.sh — memory at scale (issue 13): an N-entry tree of empty files through
# dup-scan | dup-delta | dup-pack | dup-put (full, encrypted), dup-ls --files and
# dup-get, with the peak RSS of every process of every step.
#
#   scale.sh [--entries N] [--per-dir K] [--workdir DIR] [--keep]
#
# N defaults to 1000000 (5000000 is the issue's figure; it takes a long while on
# 2 cores), K (files per directory) to 1000. Binaries come from DUP_BIN_DIR
# (default: the crate's target/release). Prints one line per process:
#   step  process  wall_s  peak_rss_MiB
# and checks that the restore holds N files. The tree is kept in WORKDIR/tree
# between runs with the same N and K (delete it, or --keep nothing: the repo,
# cache and restore are always removed at the start).
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
N=1000000
K=1000
W=/var/tmp/dup-scale
while [ $# -gt 0 ]; do
  case $1 in
    --entries) N=$2; shift 2 ;;
    --per-dir) K=$2; shift 2 ;;
    --workdir) W=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "scale.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
B=${DUP_BIN_DIR:-$HERE/../../target/release}
for b in dup-scan dup-delta dup-pack dup-put dup-sync dup-ls dup-get; do
  [ -x "$B/$b" ] || { echo "scale.sh: $B/$b missing (cargo build --release --bins)" >&2; exit 2; }
done
export PASSPHRASE=${PASSPHRASE:-scale-bench} TMPDIR=$W/tmp
T=$W/tree
mkdir -p "$W/tmp"
if [ "$(cat "$W/tree.spec" 2>/dev/null)" != "$N $K" ]; then
  rm -rf "$T" "$W/tree.spec"
  echo "scale.sh: making $N empty files, $K per directory, in $T" >&2
  python3 - "$T" "$N" "$K" <<'EOF'
import os, sys
root, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(root)
for i in range(n):
    d = os.path.join(root, "d%06d" % (i // k))
    if i % k == 0:
        os.mkdir(d)
    os.close(os.open(os.path.join(d, "f%07d" % i), os.O_CREAT | os.O_WRONLY, 0o644))
EOF
  echo "$N $K" > "$W/tree.spec"
fi
R=$W/repo C=$W/cache D=$W/restore
rm -rf "$R" "$C" "$D"
mkdir -p "$C"
U=file://$R
# Each process of a step reports "step process wall rss" (time -f) into $W/rss.
: > "$W/rss"
t() { local step=$1 name=$2; shift 2; /usr/bin/time -a -o "$W/rss" -f "$step $name %e %M" "$@"; }
t full dup-sync "$B/dup-sync" --archive-dir "$C" "$U"
t full dup-scan "$B/dup-scan" "$T" | t full dup-delta "$B/dup-delta" --source "$T" |
  t full dup-pack "$B/dup-pack" --archive-dir "$C" | t full dup-put "$B/dup-put" --archive-dir "$C" "$U"
t list dup-ls "$B/dup-ls" --files --table --archive-dir "$C" "$U" > "$W/list.txt"
t restore dup-get "$B/dup-get" --archive-dir "$C" "$U" "$D"
files=$(find "$D" -type f | wc -l)
listed=$(wc -l < "$W/list.txt")
awk '{ printf "%-8s %-10s %8.1f s %8.1f MiB\n", $1, $2, $3, $4 / 1024 }' "$W/rss"
echo "entries=$N per_dir=$K restored_files=$files listed_lines=$listed repo=$(du -sb "$R" | cut -f1) bytes"
[ "$files" = "$N" ] || { echo "scale.sh: the restore holds $files files, not $N" >&2; exit 1; }
