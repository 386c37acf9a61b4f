#!/usr/bin/env bash
# anchors.sh — time existing backup tools (and the physical floor) on the same corpus and change set.
#
#   anchors.sh [--size small|large|both] [--tools "duplicity restic borg dup"] [--reps N]
#              [--no-floor] [--cold] [--regen] [--workdir /tmp/bench] [--out FILE]
#
# Tools: duplicity, restic, borg (encrypted), duplicity-noenc (duplicity --no-encryption),
# dup (this crate's binaries as pipelines, encrypted: OpenPGP with PASSPHRASE, its
# default), dup-noenc (the same with dup-pack --no-encryption: gzip volumes).
# dup's binaries are copied from DUP_BIN_DIR (default: the crate's
# target/release; build them first with `cargo build --release --bins`) into the run dir
# at the start, so a rebuild during the run does not change what is measured.
#
# For each tool, encryption on (except duplicity-noenc and dup-noenc), repository on the local
# filesystem under the workdir:
#   init (untimed) -> full backup -> mutate.sh (untimed) -> incremental backup
#   -> list latest snapshot -> restore all to a fresh dir (verified against the live
#   corpus with manifest.py: type, mode, owner, size, sha256, symlink target, file mtime)
#   -> restore one file from the middle of the tree (verified with cmp).
# Every tool backs up the same path ($WORKDIR/corpus), reset from the pristine corpus
# before each tool, so all see byte-identical v0 and (deterministic mutate) v1 trees.
# Each timed step: /usr/bin/time -v once; wall, user+sys CPU, peak RSS (ru_maxrss: the
# largest single process of the step, not a sum). Caches: by default everything the
# step reads (corpus, repo, tool cache) is read once right before it (warm page cache);
# with --cold the page cache is dropped instead (needs root). `sync` runs after each
# step, untimed, so no step pays for the previous one's writeback.
# The machine may be shared: before each step the script waits (up to QUIET_MAX_S, default
# 20 s) until other processes use < 0.15 CPU, and it records how much CPU other processes
# used during the step (/proc/stat busy time minus the step's own CPU). With --reps N
# (default 3) the whole sequence is repeated N times; the report gives min/median/max wall.
#
# Only figures from one invocation are comparable (the machine is shared and drifts):
# put every tool to compare in the same --tools list.
# A duplicity-CLI-compatible tool can be run through the duplicity adapter:
#   DUPLICITY_BIN=/path/to/newtool DUPLICITY_LABEL=newtool anchors.sh --tools duplicity
# Other tools: add t_<name>_{init,full,incr,list,restore,restore1} functions below.
#
# Output: $WORKDIR/run-<time>/ (results.tsv, logs/ with each step's command, stdout,
# stderr and time -v), and a Markdown report (default: ../bench-results/RESULTS.md, with
# the raw table next to it as RESULTS.tsv).
set -uo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)

W=/tmp/bench
SIZES=large
TOOLS="duplicity restic borg dup"
DO_FLOOR=1
COLD=0
REGEN=0
OUT=$HERE/../bench-results/RESULTS.md
ARGS_TEXT="anchors.sh $*"
REPS=3
QUIET_MAX_S=${QUIET_MAX_S:-20}
while [ $# -gt 0 ]; do
  case "$1" in
    --size) SIZES=$2; shift 2 ;;
    --tools) TOOLS=$2; shift 2 ;;
    --no-floor) DO_FLOOR=0; shift ;;
    --cold) COLD=1; shift ;;
    --regen) REGEN=1; shift ;;
    --workdir) W=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    -h|--help) sed -n '2,39p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$SIZES" = both ] && SIZES="small large"
W=${W%/}

PASS=${BENCH_PASSPHRASE:-anchors-bench-passphrase}
export PASSPHRASE=$PASS RESTIC_PASSWORD=$PASS BORG_PASSPHRASE=$PASS
export GNUPGHOME=$W/gnupg
export BORG_BASE_DIR=$W/borg-base
export TMPDIR=$W/tmp
DUP_BIN=${DUPLICITY_BIN:-duplicity}
DUP_LABEL=${DUPLICITY_LABEL:-duplicity}
mkdir -p "$W" "$TMPDIR"
mkdir -p -m 700 "$GNUPGHOME"
printf '%s' "$PASS" > "$W/passphrase"; chmod 600 "$W/passphrase"
C=$W/corpus
RUN=$W/run-$(date -u +%Y%m%dT%H%M%SZ)
LOGS=$RUN/logs
mkdir -p "$LOGS"
TSV=$RUN/results.tsv
echo "$ARGS_TEXT" > "$RUN/args.txt"
echo "$TOOLS" > "$RUN/tools.txt"
printf 'size\ttool\tstep\twall_s\tcpu_s\trss_kib\tin_bytes\tout_bytes\tdelta_bytes\tcache_bytes\tcheck\trc\trep\tother_cpu_s\tquiet_wait_s\n' > "$TSV"
REP=1
TRASH=$W/trash
mkdir -p "$TRASH"
trash() { # move paths out of the way; deleted at the very end (ext4 `discard` makes rm slow)
  local p
  for p in "$@"; do [ -e "$p" ] && mv "$p" "$TRASH/$(date +%s%N)-$(basename "$p")"; done
  return 0
}
busy_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9; exit}' /proc/stat; }
wait_quiet() { # until other processes use < 0.15 CPU over 1 s, at most QUIET_MAX_S
  local t0=$SECONDS a b
  while :; do
    a=$(busy_jiffies); sleep 1; b=$(busy_jiffies)
    [ $((b - a)) -lt 15 ] && break
    [ $((SECONDS - t0)) -ge "$QUIET_MAX_S" ] && { log "  machine still busy after ${QUIET_MAX_S}s, measuring anyway"; break; }
  done
  M_QWAIT=$((SECONDS - t0))
}
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

bytes_of() { # apparent size in bytes of existing paths (0 if none)
  local t=0 p
  for p in "$@"; do [ -e "$p" ] && t=$((t + $(du -sb "$p" | cut -f1))); done
  echo "$t"
}

WARM=()
prep_cache() {
  # flush first: the fs is mounted with `discard`, and the untimed copies/deletions
  # between steps must not leave writeback or discards pending into a timed step
  sync
  if [ "$COLD" = 1 ]; then
    echo 3 > /proc/sys/vm/drop_caches
  else
    local p have=()
    for p in "${WARM[@]}"; do [ -e "$p" ] && have+=("$p"); done
    [ ${#have[@]} -gt 0 ] && tar -cf - "${have[@]}" 2>/dev/null | cat > /dev/null
  fi
  return 0
}

# measure SIZE TOOL STEP CMD... -> M_WALL M_CPU M_RSS M_RC, files $LOGS/SIZE.TOOL.STEP.{cmd,out,err,time}
measure() {
  local size=$1 tool=$2 step=$3; shift 3
  M_BASE=$LOGS/$size.$tool.$step.r$REP
  prep_cache
  local a q=()
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then q+=("$a"); else q+=("'${a//\'/\'\\\'\'}'"); fi
  done
  echo "${q[*]}" > "$M_BASE.cmd"
  wait_quiet
  log "$size $tool $step (rep $REP) ..."
  local j0 j1
  j0=$(busy_jiffies)
  /usr/bin/time -v -o "$M_BASE.time" "$@" > "$M_BASE.out" 2> "$M_BASE.err"
  M_RC=$?
  j1=$(busy_jiffies)
  sync
  M_WALL=$(awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; printf "%.2f", s}' "$M_BASE.time")
  M_CPU=$(awk -F': ' '/User time/{u=$2} /System time/{s=$2} END{printf "%.2f", u+s}' "$M_BASE.time")
  M_RSS=$(awk -F': ' '/Maximum resident set size/{print $2}' "$M_BASE.time")
  [ "$M_RC" = 0 ] || log "  FAILED rc=$M_RC: see $M_BASE.err"
  M_OTHER=$(awk -v j=$((j1 - j0)) -v c="$M_CPU" 'BEGIN{o=j/100-c; if (o<0) o=0; printf "%.2f", o}')
  log "  wall=${M_WALL}s cpu=${M_CPU}s rss=${M_RSS}KiB other_cpu=${M_OTHER}s quiet_wait=${M_QWAIT}s"
}

rec() { # rec SIZE TOOL STEP IN OUT DELTA CACHE CHECK
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$M_WALL" "$M_CPU" "$M_RSS" \
    "$4" "$5" "$6" "$7" "$8" "$M_RC" "$REP" "$M_OTHER" "$M_QWAIT" >> "$TSV"
}

# ---------------------------------------------------------------- tool adapters
# Globals set by run_tool: S (size), R (repo), K (tool cache dir), RD / RD1 (restore dirs),
# REL (single file, relative to the corpus root). restore/restore1 set RROOT / RFILE.

DUPO=()
t_duplicity_init() { DUPO=(--archive-dir "$K" --name bench); K_PATHS=("$K"); }
t_duplicity_full() { measure "$S" "$DUP_LABEL" full "$DUP_BIN" full "${DUPO[@]}" "$C" "file://$R"; }
t_duplicity_incr() { measure "$S" "$DUP_LABEL" incr "$DUP_BIN" incremental "${DUPO[@]}" "$C" "file://$R"; }
t_duplicity_list() { measure "$S" "$DUP_LABEL" list "$DUP_BIN" list-current-files "${DUPO[@]}" "file://$R"; }
t_duplicity_restore() { RROOT=$RD; measure "$S" "$DUP_LABEL" restore "$DUP_BIN" restore "${DUPO[@]}" "file://$R" "$RD"; }
t_duplicity_restore1() {
  mkdir -p "$RD1"; RFILE=$RD1/one
  measure "$S" "$DUP_LABEL" restore1 "$DUP_BIN" restore "${DUPO[@]}" --file-to-restore "$REL" "file://$R" "$RFILE"
}

RESTIC=()
t_restic_init() {
  RESTIC=(restic -r "$R" --cache-dir "$K"); K_PATHS=("$K")
  "${RESTIC[@]}" init > "$LOGS/$S.restic.init.r$REP.log" 2>&1 || log "restic init failed"
  "${RESTIC[@]}" cat config >> "$LOGS/$S.restic.init.r$REP.log" 2>&1
}
t_restic_full() { measure "$S" restic full "${RESTIC[@]}" backup --host bench "$C"; }
t_restic_incr() { measure "$S" restic incr "${RESTIC[@]}" backup --host bench "$C"; }
t_restic_list() { measure "$S" restic list "${RESTIC[@]}" ls latest; }
t_restic_restore() { RROOT=$RD$C; measure "$S" restic restore "${RESTIC[@]}" restore latest --target "$RD"; }
t_restic_restore1() {
  RFILE=$RD1$C/$REL
  measure "$S" restic restore1 "${RESTIC[@]}" restore latest --target "$RD1" --include "$C/$REL"
}

t_borg_init() {
  K_PATHS=("$BORG_BASE_DIR")
  borg init --encryption=repokey-blake2 "$R" > "$LOGS/$S.borg.init.r$REP.log" 2>&1 || log "borg init failed"
}
t_borg_full() { measure "$S" borg full borg create --stats "$R::full" "$C"; }
t_borg_incr() { measure "$S" borg incr borg create --stats "$R::incr" "$C"; }
t_borg_list() { measure "$S" borg list borg list "$R::incr"; }
t_borg_restore() { mkdir -p "$RD"; RROOT=$RD$C; measure "$S" borg restore env -C "$RD" borg extract "$R::incr"; }
t_borg_restore1() {
  mkdir -p "$RD1"; RFILE=$RD1$C/$REL
  measure "$S" borg restore1 env -C "$RD1" borg extract "$R::incr" "${C#/}/$REL"
}

# duplicity --no-encryption: the like-for-like row for dup (run with dup-pack --no-encryption);
# duplicity then writes .difftar.gz volumes (gzip) and plain signatures/manifests.
DUPN=()
t_duplicity-noenc_init() { DUPN=(--no-encryption --archive-dir "$K" --name bench); K_PATHS=("$K"); }
t_duplicity-noenc_full() { measure "$S" duplicity-noenc full duplicity full "${DUPN[@]}" "$C" "file://$R"; }
t_duplicity-noenc_incr() { measure "$S" duplicity-noenc incr duplicity incremental "${DUPN[@]}" "$C" "file://$R"; }
t_duplicity-noenc_list() { measure "$S" duplicity-noenc list duplicity list-current-files "${DUPN[@]}" "file://$R"; }
t_duplicity-noenc_restore() { RROOT=$RD; measure "$S" duplicity-noenc restore duplicity restore "${DUPN[@]}" "file://$R" "$RD"; }
t_duplicity-noenc_restore1() {
  mkdir -p "$RD1"; RFILE=$RD1/one
  measure "$S" duplicity-noenc restore1 duplicity restore "${DUPN[@]}" --file-to-restore "$REL" "file://$R" "$RFILE"
}

# dup: the crate's binaries as Unix pipelines, exactly what a user would type (see the
# scripts/duplicity wrapper for the same pipelines behind duplicity's commands).
# Every step starts with dup-sync (bring the local cache in line with the backend), as
# the wrapper does and as duplicity does for each command. The binaries run from the
# snapshot $DUPB (see dup_snapshot), which is first on PATH inside these commands.
# dup-delta gets --source explicitly (the entry stream may name its source directory too).
# The incremental's basis comes from dup-sig through a named pipe, started by the step's
# own shell and waited for, so its CPU and RSS count in the step (a <(...) would be a
# child of dup-delta, never reaped by it, and its rusage would be lost).
DUPB=
dup_snapshot() { # copy the dup binaries into the run dir; record what they were built from
  local src=${DUP_BIN_DIR:-$HERE/../../target/release} b repo
  DUPB=$RUN/dup-bin
  mkdir -p "$DUPB"
  for b in dup-scan dup-sig dup-delta dup-pack dup-put dup-sync dup-ls dup-get; do
    [ -x "$src/$b" ] || { log "dup: $src/$b missing (cargo build --release --bins)"; exit 1; }
    cp "$src/$b" "$DUPB/$b"
  done
  repo=$(cd "$src" && git rev-parse --show-toplevel 2>/dev/null || true)
  {
    echo "binaries: $src (copied to $DUPB)"
    if [ -n "$repo" ]; then
      echo "git: $(git -C "$repo" rev-parse --short HEAD) $(git -C "$repo" log -1 --format=%s | cut -c1-70)"
      echo "uncommitted changes: $(git -C "$repo" status --porcelain --untracked-files=no | wc -l) tracked files modified"
    elif [ -f "$src/../dup-version.txt" ]; then # a previous run's snapshot: same build
      grep -E '^(git|uncommitted changes):' "$src/../dup-version.txt"
    fi
    (cd "$DUPB" && sha256sum dup-* | cut -c1-16,65-)
    echo "rustc: $(rustc --version 2>/dev/null)"
  } > "$RUN/dup-version.txt"
}
# dup runs encrypted (its default, as duplicity's: PASSPHRASE, OpenPGP volumes); dup-noenc
# is the same with dup-pack --no-encryption, the like-for-like row for duplicity-noenc.
# $1 of each _dup_* function: the tool's label; $2: dup-pack's encryption option.
DUP_SH='set -o pipefail; PATH=$DUPB:$PATH'
_dup_init() { K_PATHS=("$K"); DUPU=file://$R; }
_dup_full() {
  measure "$S" "$1" full env DUPB="$DUPB" bash -c "$DUP_SH"'
dup-sync --archive-dir "$2" "$3" &&
dup-scan "$1" | dup-delta --source "$1" | dup-pack $4 --resume "$3" --archive-dir "$2" |
  dup-put --archive-dir "$2" "$3"' _ "$C" "$K" "$DUPU" "$2"
}
_dup_incr() {
  local check=--check-passphrase; [ -n "$2" ] && check=
  measure "$S" "$1" incr env DUPB="$DUPB" bash -c "$DUP_SH"'
dup-sync --archive-dir "$2" "$3" || exit
t=$(mktemp -d) && mkfifo "$t/basis" || exit
dup-sig $5 --archive "$3" --archive-dir "$2" > "$t/basis" & sig=$!
dup-scan "$1" | dup-delta --source "$1" --basis "$t/basis" | dup-pack $4 --resume "$3" --archive-dir "$2" |
  dup-put --archive-dir "$2" "$3"; rc=$?
[ $rc = 0 ] || kill $sig 2>/dev/null
wait $sig; s=$?; rm -rf "$t"; [ $rc = 0 ] && rc=$s; exit $rc' _ "$C" "$K" "$DUPU" "$2" "$check"
}
_dup_list() {
  measure "$S" "$1" list env DUPB="$DUPB" bash -c "$DUP_SH"'
dup-sync --archive-dir "$1" "$2" && dup-ls --files --table --archive-dir "$1" "$2"' _ "$K" "$DUPU"
}
_dup_restore() {
  RROOT=$RD
  measure "$S" "$1" restore env DUPB="$DUPB" bash -c "$DUP_SH"'
dup-sync --archive-dir "$1" "$2" && dup-get --archive-dir "$1" "$2" "$3"' _ "$K" "$DUPU" "$RD"
}
_dup_restore1() {
  mkdir -p "$RD1"; RFILE=$RD1/one
  measure "$S" "$1" restore1 env DUPB="$DUPB" bash -c "$DUP_SH"'
dup-sync --archive-dir "$1" "$2" && dup-get --archive-dir "$1" --path "$4" "$2" "$3"' _ "$K" "$DUPU" "$RFILE" "$REL"
}
for step in init full incr list restore restore1; do
  eval "t_dup_$step() { _dup_$step dup ''; }"
  eval "t_dup-noenc_$step() { _dup_$step dup-noenc --no-encryption; }"
done

# ---------------------------------------------------------------- per size
prep_size() { # make/verify the pristine corpus, the v1 reference, and pick REL
  local size=$1 P=$W/pristine-$1
  if [ "$REGEN" = 1 ] || [ ! -f "$P.manifest" ] || [ ! -d "$P" ]; then
    "$HERE/make-corpus.sh" --size "$size" --force "$P" | tee "$LOGS/$size.make-corpus.log" >&2
  fi
  ID0=$(sha256sum < "$P.manifest" | cut -c1-16)
  V0_FILES=$(awk -F'\t' '$1=="f"' "$P.manifest" | wc -l)
  V0_BYTES=$(awk -F'\t' '$1=="f"{s+=$4} END{printf "%d", s}' "$P.manifest")
  # v1 reference: mutate a copy once
  trash "$C"; cp -a "$P" "$C"
  "$HERE/mutate.sh" "$C" > "$LOGS/$size.mutate.log" 2>&1 || { log "mutate failed"; exit 1; }
  python3 "$HERE/manifest.py" "$C" > "$W/v1-$size.manifest"
  ID1=$(sha256sum < "$W/v1-$size.manifest" | cut -c1-16)
  V1_FILES=$(awk -F'\t' '$1=="f"' "$W/v1-$size.manifest" | wc -l)
  V1_BYTES=$(awk -F'\t' '$1=="f"{s+=$4} END{printf "%d", s}' "$W/v1-$size.manifest")
  # single file to restore: middle of the sorted v1 file list (outside big/ and new-files/),
  # first one from there whose name needs no quoting or glob escaping
  REL=$(awk -F'\t' '$1=="f" && $6 !~ /^(big|new-files)\// {print $6}' "$W/v1-$size.manifest" \
        | awk '{a[NR]=$0} END{for(i=int(NR/2); i<=NR; i++) if (a[i] ~ /^[A-Za-z0-9._\/+-]+$/) {print a[i]; exit}}')
  REL_SIZE=$(stat -c %s "$C/$REL")
  echo "$size id_v0=$ID0 files_v0=$V0_FILES bytes_v0=$V0_BYTES id_v1=$ID1 files_v1=$V1_FILES bytes_v1=$V1_BYTES rel=$REL rel_size=$REL_SIZE" \
    >> "$RUN/corpus.txt"
  cp "$LOGS/$size.mutate.log" "$RUN/mutate-$size.txt"
}

floor_size() {
  local size=$1 P=$W/pristine-$1 F=$W/floor
  S=$size
  trash "$F"; mkdir -p "$F"
  local GPGC=(gpg --batch --pinentry-mode loopback --passphrase-file "$W/passphrase" --symmetric)
  WARM=("$P")
  # floor ID "display name" CMD...   (output size = the number the command prints, if any)
  floor() {
    local id=$1 name=$2; shift 2
    measure "$size" floor "$id" "$@"
    rec "$size" floor "$name" "$V0_BYTES" "$(tr -dc 0-9 < "$M_BASE.out")" "" "" ""
  }
  floor read "tar -cf - DIR | cat >/dev/null" bash -c 'tar -cf - "$1" | cat > /dev/null' _ "$P"
  floor gzip1 "tar -cf - DIR | gzip -1" bash -c 'tar -cf - "$1" | gzip -1 | wc -c' _ "$P"
  if command -v pigz > /dev/null; then
    floor pigz1 "tar -cf - DIR | pigz -1" bash -c 'tar -cf - "$1" | pigz -1 | wc -c' _ "$P"
  fi
  floor gzip6-gpg "tar -cf - DIR | gzip -6 | gpg -c --compress-algo none" \
    bash -c 'tar -cf - "$1" | gzip -6 | "${@:2}" --compress-algo none -o - | wc -c' _ "$P" "${GPGC[@]}"
  floor gpg-zlib "tar -cf - DIR | gpg -c --force-mdc (gpg default zlib; duplicity's pipeline)" \
    bash -c 'tar -cf - "$1" | "${@:2}" --force-mdc -o - | wc -c' _ "$P" "${GPGC[@]}"
  # librsync as duplicity calls it for a big file: MD4, 8-byte strong sum, block 2048
  local BIG0=$P/big/random.bin BIG1=$C/big/random.bin bsz
  bsz=$(stat -c %s "$BIG0")
  WARM=("$BIG0" "$BIG1")
  measure "$size" floor rdiff-sig rdiff -H md4 -S 8 -b 2048 signature "$BIG0" "$F/sig"
  rec "$size" floor "rdiff signature big/random.bin (md4, -S 8, -b 2048)" "$bsz" "$(stat -c %s "$F/sig")" "" "" ""
  WARM=("$BIG1" "$F/sig")
  measure "$size" floor rdiff-delta rdiff delta "$F/sig" "$BIG1" "$F/delta"
  rec "$size" floor "rdiff delta big/random.bin (after mutate)" "$bsz" "$(stat -c %s "$F/delta")" "" "" ""
  WARM=()
  measure "$size" floor dd-write dd if=/dev/zero of="$F/ddtest" bs=1M count=$((V0_BYTES / 1048576)) conv=fsync
  rec "$size" floor "dd write corpus-size file + fsync" "$V0_BYTES" "" "" "" ""
  trash "$F"
}

run_tool() { # run_tool SIZE TOOL
  S=$1; local tool=$2 label=$2 P=$W/pristine-$1
  [ "$tool" = duplicity ] && label=$DUP_LABEL
  declare -F "t_${tool}_full" > /dev/null || { log "unknown tool $tool"; return; }
  R=$W/repo-$label; K=$W/cache-$label; RD=$W/restore-$label; RD1=$W/restore1-$label
  [ "$tool" = borg ] && K=$BORG_BASE_DIR
  trash "$R" "$K" "$RD" "$RD1" "$C"
  log "$S $label: copying pristine corpus"
  cp -a "$P" "$C"
  K_PATHS=()
  "t_${tool}_init"
  local r0 r1 r2 k
  r0=$(bytes_of "$R")
  WARM=("$C" "$R" "${K_PATHS[@]}")
  "t_${tool}_full"
  r1=$(bytes_of "$R"); k=$(bytes_of "${K_PATHS[@]}")
  rec "$S" "$label" full "$V0_BYTES" "$r1" "$((r1 - r0))" "$k" ""
  [ "$tool" = duplicity ] && gpg_params "$R" > "$LOGS/$S.$label.gpg-packets.r$REP.txt" 2>&1

  "$HERE/mutate.sh" "$C" > "$LOGS/$S.$label.mutate.r$REP.log" 2>&1
  local chk=""
  cmp -s <(python3 "$HERE/manifest.py" "$C") "$W/v1-$S.manifest" || chk="MUTATION DIFFERS FROM REFERENCE"
  python3 "$HERE/manifest.py" "$C" --mtime > "$W/v1-live.manifest"

  WARM=("$C" "$R" "${K_PATHS[@]}")
  "t_${tool}_incr"
  r2=$(bytes_of "$R"); k=$(bytes_of "${K_PATHS[@]}")
  rec "$S" "$label" incr "" "$r2" "$((r2 - r1))" "$k" "$chk"

  WARM=("$R" "${K_PATHS[@]}")
  "t_${tool}_list"
  rec "$S" "$label" list "" "$r2" "" "" "$(wc -l < "$M_BASE.out") lines"

  WARM=("$R" "${K_PATHS[@]}")
  "t_${tool}_restore"
  local verdict
  if [ -d "$RROOT" ] && python3 "$HERE/manifest.py" "$RROOT" --mtime > "$W/restored.manifest"; then
    if cmp -s "$W/restored.manifest" "$W/v1-live.manifest"; then verdict="exact"
    else
      diff "$W/v1-live.manifest" "$W/restored.manifest" > "$LOGS/$S.$label.restore.r$REP.diff"
      verdict="DIFFERS: $(grep -c '^[<>]' "$LOGS/$S.$label.restore.r$REP.diff") lines, see logs"
    fi
  else verdict="NO RESTORE"; fi
  rec "$S" "$label" restore "$V1_BYTES" "" "" "" "$verdict"
  trash "$RD"

  WARM=("$R" "${K_PATHS[@]}")
  "t_${tool}_restore1"
  if cmp -s "$RFILE" "$C/$REL"; then verdict="cmp ok"; else verdict="MISMATCH"; fi
  rec "$S" "$label" restore1 "$REL_SIZE" "" "" "" "$verdict"
  trash "$RD1"
}

gpg_params() { # cipher and compression duplicity's gpg used, from the first volume's packets
  local v
  v=$(ls "$1"/duplicity-full.*.vol1.difftar.gpg 2>/dev/null | head -1)
  [ -n "$v" ] || return 0
  head -c 65536 "$v" | gpg --batch --pinentry-mode loopback --passphrase-file "$W/passphrase" --list-packets 2>&1 | head -20
}

# ---------------------------------------------------------------- main
case " $TOOLS " in *" dup "*|*" dup-noenc "*) dup_snapshot ;; esac
for size in $SIZES; do
  log "=== corpus $size"
  REP=1
  prep_size "$size"
  for REP in $(seq 1 "$REPS"); do
    [ "$DO_FLOOR" = 1 ] && floor_size "$size"
    for t in $TOOLS; do run_tool "$size" "$t"; done
  done
done
trash "$C" "$W/restored.manifest" "$W/v1-live.manifest"
gpgconf --kill gpg-agent 2>/dev/null || true

mkdir -p "$(dirname "$OUT")"
"$HERE/report.sh" "$RUN" > "$OUT"
cp "$TSV" "${OUT%.md}.tsv"
sed -n '/^## Results/,/^## Exact/p' "$OUT" | sed '$d'
log "report: $OUT (and ${OUT%.md}.tsv)   raw: $RUN"
log "emptying $TRASH (slow on this fs)"
rm -rf "$TRASH"
