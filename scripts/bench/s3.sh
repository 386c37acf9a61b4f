#!/usr/bin/env bash
# s3.sh — a full backup and a full restore of the small benchmark corpus over
# S3 on loopback, dup beside restic, in the same run, against one s3s-fs
# server started here (127.0.0.1, a free port, files under $WORK/s3).
#
#   scripts/bench/s3.sh [CORPUS]
#
# CORPUS defaults to $WORK/corpus, made with make-corpus.sh --size small when
# missing. WORK defaults to /tmp/dup-s3bench; DUP_BIN to the release build
# (built here when it is not given). Steps, each timed as a whole pipeline
# (wall, user+sys of every process, the largest process's peak RSS):
#   dup        dup-scan | dup-delta | dup-pack --no-encryption | dup-put  (gzip volumes)
#   dup-enc    the same with dup-pack --encrypt (PASSPHRASE; dup-pack's default)
#   dup-put -c N   dup-put alone, from a stream packed (gzip) in 20 MiB volumes in a
#              file, with --concurrency 1 and 4
#   restic     restic backup / restic restore (always encrypted)
# Every restore is checked against the corpus with manifest.py --mtime.
# REPS (default 1) runs it all again from empty buckets. Prints a Markdown
# table; the raw numbers go to $WORK/results.tsv.
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${WORK:-/tmp/dup-s3bench}
C=${1:-$WORK/corpus}
mkdir -p "$WORK"

log() { echo "s3.sh: $*" >&2; }
die() { log "$*"; exit 1; }

command -v restic >/dev/null || die "restic is not installed (apt-get install restic)"
S3S=$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")
[ -x "$S3S" ] || die "s3s-fs is not installed (scripts/test-servers start installs it)"
if [ -z "${DUP_BIN:-}" ]; then
  log "building the release binaries"
  (cd "$ROOT" && cargo build --release --bins --quiet)
  DUP_BIN=$ROOT/target/release
fi
export PATH=$DUP_BIN:$PATH
[ -d "$C" ] || "$HERE/make-corpus.sh" --size small "$C" >&2

# The server: files under $WORK/s3, one bucket per tool, emptied each rep.
rm -rf "$WORK/s3"
mkdir -p "$WORK/s3"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export AWS_ACCESS_KEY_ID=AKBENCH AWS_SECRET_ACCESS_KEY=SKBENCH0123456789
"$S3S" --host 127.0.0.1 --port "$PORT" --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" \
  "$WORK/s3" > "$WORK/s3s.log" 2>&1 &
S3PID=$!
trap 'kill $S3PID 2>/dev/null || true' EXIT
for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
export DUP_S3_ENDPOINT=http://127.0.0.1:$PORT
export PASSPHRASE=bench-passphrase RESTIC_PASSWORD=bench-passphrase
export RESTIC_CACHE_DIR=$WORK/cache-restic
RESTIC=(restic --quiet -r "s3:http://127.0.0.1:$PORT/restic")

python3 "$HERE/manifest.py" "$C" --mtime > "$WORK/corpus.manifest"
BYTES=$(du -sb "$C" | cut -f1)
echo -e "rep\ttool\tstep\twall_s\tcpu_s\tmax_rss_kib\tstored_bytes\tcheck" > "$WORK/results.tsv"

# run TOOL STEP BUCKET CHECKDIR COMMAND: times COMMAND (bash), records a row.
run() {
  local tool=$1 step=$2 bucket=$3 check=$4 cmd=$5 t
  # Warm page cache for the reads, as every tool gets it.
  tar -cf - -C "$C" . > /dev/null
  log "rep $rep: $tool $step"
  /usr/bin/time -o "$WORK/time" -f '%e %U %S %M' bash -c "set -o pipefail; $cmd" \
    > "$WORK/$tool-$step.out" 2> "$WORK/$tool-$step.err" || { cat "$WORK/$tool-$step.err" >&2; die "$tool $step failed"; }
  t=$(tail -n 1 "$WORK/time")
  local ok=-
  if [ -n "$check" ]; then
    if cmp -s "$WORK/corpus.manifest" <(python3 "$HERE/manifest.py" "$check" --mtime); then ok=exact; else ok=DIFFERS; fi
  fi
  local size=-
  [ -z "$bucket" ] || size=$(du -sb "$WORK/s3/$bucket" | cut -f1)
  read -r wall user sys rss <<< "$t"
  echo -e "$rep\t$tool\t$step\t$wall\t$(awk "BEGIN{print $user+$sys}")\t$rss\t$size\t$ok" >> "$WORK/results.tsv"
}

pipe="dup-scan $C | dup-delta | dup-pack"
for rep in $(seq "${REPS:-1}"); do
  find "$WORK/s3" -mindepth 1 -delete
  rm -rf "$WORK"/cache-* "$WORK"/restore-* "$WORK/stream"
  mkdir -p "$WORK/s3"/{dup,dupenc,put1,put4,restic}
  run dup backup dup "" "$pipe --no-encryption | dup-put --archive-dir $WORK/cache-dup s3://dup/c"
  run dup restore "" "$WORK/restore-dup" "dup-get --archive-dir $WORK/cache-dup s3://dup/c $WORK/restore-dup"
  run dup-enc backup dupenc "" "$pipe --encrypt | dup-put --archive-dir $WORK/cache-dupenc s3://dupenc/c"
  run dup-enc restore "" "$WORK/restore-dupenc" \
    "dup-get --archive-dir $WORK/cache-dupenc s3://dupenc/c $WORK/restore-dupenc"
  # dup-put alone: a stream packed in 20 MiB volumes, from a file, one upload
  # at a time and four.
  dup-scan "$C" | dup-delta | dup-pack --no-encryption --volsize 20 > "$WORK/stream"
  run dup-put "-c 1" put1 "" "dup-put --concurrency 1 --archive-dir $WORK/cache-put1 s3://put1/c < $WORK/stream"
  run dup-put "-c 4" put4 "" "dup-put --concurrency 4 --archive-dir $WORK/cache-put4 s3://put4/c < $WORK/stream"
  "${RESTIC[@]}" init > /dev/null
  run restic backup restic "" "cd $C && ${RESTIC[*]} backup ."
  run restic restore "" "$WORK/restore-restic" "${RESTIC[*]} restore latest --target $WORK/restore-restic"
done

echo "corpus: $C, $((BYTES / 1048576)) MiB, $(grep -c '^f' "$WORK/corpus.manifest") files; S3: s3s-fs on 127.0.0.1:$PORT"
echo
echo "Fastest of ${REPS:-1} reps (its CPU), largest peak RSS, stored size of the last rep:"
echo
echo "| tool | step | wall s | CPU s | peak RSS MiB | stored MiB | restore |"
echo "| --- | --- | ---: | ---: | ---: | ---: | --- |"
awk -F'\t' 'NR>1 { k=$2 "|" $3; if (!(k in w)) order[n++]=k;
    if (!(k in w) || $4 < w[k]) { w[k]=$4; c[k]=$5 } if ($6 > r[k]) r[k]=$6; s[k]=$7;
    if (!(k in ok) || $8 != "exact") ok[k]=$8 }
  END { for (i=0; i<n; i++) { k=order[i]; split(k, p, "|");
    printf "| %s | %s | %.2f | %.2f | %.0f | %s | %s |\n", p[1], p[2], w[k], c[k], r[k]/1024,
      (s[k] == "-" ? "-" : sprintf("%.1f", s[k]/1048576)), ok[k] } }' "$WORK/results.tsv"
