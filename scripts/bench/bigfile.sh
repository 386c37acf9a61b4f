#!/usr/bin/env bash
# bigfile.sh — memory for one big file (issue 13): a SIZE-GiB file (AES-CTR
# keystream, incompressible) through a full backup (dup-scan | dup-delta |
# dup-pack | dup-put, encrypted), an incremental after 16 MiB of it were
# rewritten in the middle (dup-sig's basis, a windowed delta), a restore and a
# restore of the one path, with the peak RSS of every process of every step.
#
#   bigfile.sh [--gib N] [--workdir DIR]
#
# N defaults to 4. Binaries come from DUP_BIN_DIR (default: the crate's
# target/release). Prints one line per process:
#   step  process  wall_s  peak_rss_MiB
# and checks both restores against the source with cmp. Needs about 4 x N GiB
# of disk in WORKDIR (default /var/tmp/dup-bigfile), removed at the end.
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
G=4
W=/var/tmp/dup-bigfile
while [ $# -gt 0 ]; do
  case $1 in
    --gib) G=$2; shift 2 ;;
    --workdir) W=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "bigfile.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
B=${DUP_BIN_DIR:-$HERE/../../target/release}
for b in dup-scan dup-sig dup-delta dup-pack dup-put dup-sync dup-get; do
  [ -x "$B/$b" ] || { echo "bigfile.sh: $B/$b missing (cargo build --release --bins)" >&2; exit 2; }
done
export PASSPHRASE=${PASSPHRASE:-bigfile-bench} TMPDIR=$W/tmp
rm -rf "$W"
mkdir -p "$W/tmp" "$W/src" "$W/cache"
trap 'rm -rf "$W"' EXIT
S=$W/src R=$W/repo C=$W/cache U=file://$W/repo
keystream() { # keystream KEYHEX MIB: that many MiB of AES-256-CTR keystream
  head -c "$(($2 << 20))" /dev/zero | openssl enc -aes-256-ctr -nosalt -K "$1" -iv 00000000000000000000000000000000
}
echo "bigfile.sh: writing a $G GiB file" >&2
keystream 0101010101010101010101010101010101010101010101010101010101010101 $((G << 10)) > "$S/big.bin"
: > "$W/rss"
t() { local step=$1 name=$2; shift 2; /usr/bin/time -a -o "$W/rss" -f "$step $name %e %M" "$@"; }
t full dup-scan "$B/dup-scan" "$S" | t full dup-delta "$B/dup-delta" --source "$S" |
  t full dup-pack "$B/dup-pack" --archive-dir "$C" | t full dup-put "$B/dup-put" --archive-dir "$C" "$U"
# 16 MiB rewritten in the middle; a later mtime.
keystream 0202020202020202020202020202020202020202020202020202020202020202 16 |
  dd of="$S/big.bin" bs=1M seek=$((G << 9)) conv=notrunc status=none
touch -d '+1 hour' "$S/big.bin"
sleep 1
mkfifo "$W/basis"
t incr dup-sig "$B/dup-sig" --archive "$U" --archive-dir "$C" > "$W/basis" &
sig=$!
t incr dup-scan "$B/dup-scan" "$S" | t incr dup-delta "$B/dup-delta" --source "$S" --basis "$W/basis" |
  t incr dup-pack "$B/dup-pack" --archive-dir "$C" | t incr dup-put "$B/dup-put" --archive-dir "$C" "$U"
wait "$sig"
t restore dup-get "$B/dup-get" --archive-dir "$C" "$U" "$W/restore"
cmp "$S/big.bin" "$W/restore/big.bin"
rm -rf "$W/restore"
t restore1 dup-get "$B/dup-get" --archive-dir "$C" --path big.bin "$U" "$W/one"
cmp "$S/big.bin" "$W/one"
awk '{ printf "%-8s %-10s %8.1f s %8.1f MiB\n", $1, $2, $3, $4 / 1024 }' "$W/rss"
echo "file=$G GiB repo=$(du -sb "$R" | cut -f1) bytes volumes=$(ls "$R" | grep -c '\.vol') restores: cmp ok"
