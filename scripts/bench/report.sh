#!/usr/bin/env bash
# report.sh RUN_DIR — render an anchors.sh run (results.tsv, corpus.txt, logs/) as Markdown.
set -uo pipefail
export LC_ALL=C
RUN=${1:?usage: report.sh RUN_DIR}
TSV=$RUN/results.tsv
ver() { command -v "$1" >/dev/null && "$@" 2>&1 | head -1 || echo "$1: not installed"; }

TOOLS_RUN=$(cat "$RUN/tools.txt" 2>/dev/null || awk -F'\t' 'NR>1 && $2!="floor"{print $2}' "$TSV" | sort -u | tr '\n' ' ')
has_tool() { case " $TOOLS_RUN " in *" $1 "*) return 0 ;; esac; return 1; }
# dup-pack's default deflate level, as the snapshot's --help says.
DUP_LEVEL=$("$RUN/dup-bin/dup-pack" --help 2>/dev/null | sed -n 's/.*OpenPGP (default \([0-9]\)).*/\1/p' | head -1)
echo "# Backup tool anchors$(has_tool dup && echo ' and dup')"
echo
echo "Run \`$(basename "$RUN")\` of \`$(cat "$RUN/args.txt" 2>/dev/null || echo anchors.sh)\`; raw data: \`results.tsv\` (copied next to this report as \`.tsv\`) and \`logs/\` (each step's command, stdout, stderr, time -v) in that run dir."
echo
if has_tool dup; then
  echo "> **dup runs encrypted** (its default, as duplicity's: OpenPGP volumes with PASSPHRASE, deflate level ${DUP_LEVEL:-?} inside, its default), as duplicity, restic and borg do.$(has_tool dup-noenc && echo ' **dup-noenc** is dup with `dup-pack --no-encryption` (gzip volumes), the like-for-like row for duplicity-noenc.')"
  echo
fi
echo "## Machine and method"
echo
echo "- $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/{print $2}') GiB RAM, kernel $(uname -r), $(. /etc/os-release; echo "$PRETTY_NAME")"
echo "- Repos, caches, corpus, restores: all on the same local ext4 (\`/tmp\`, virtio disk)."
echo "- Each step runs under \`/usr/bin/time -v\`; with --reps N the whole sequence (floor, then per tool full → mutate → incr → list → restore → restore1) is repeated N times and the tables give min / median / max wall; CPU s and other CPU s are from the fastest rep. Page cache is **warm**: everything the step reads (corpus, repo, tool cache) is read once just before it (\`tar -cf - ... | cat >/dev/null\`); \`sync\` runs after each step, untimed. Restores are timed without a final sync."
echo "- The machine can be shared with other work: before each step the script waits until other processes use < 0.15 CPU (up to QUIET_MAX_S, default 20 s); **other CPU s** = CPU time used by other processes during the step (from /proc/stat), a contamination indicator (2 cores in all)."
echo "- CPU s = user + sys of the whole process tree. Peak RSS = ru_maxrss reported by time -v: the biggest single process of the step (e.g. duplicity's python vs its gpg child), not a sum."
echo "- repo = apparent size (\`du -sb\`) of the repository after the step (median over reps); Δrepo = growth of the repo during the step; local cache = the tool's client-side state after the step (duplicity --archive-dir, restic --cache-dir, borg BORG_BASE_DIR). MiB = 2^20 bytes; MiB/s = corpus bytes / wall."
echo
echo "## Versions"
echo
echo "| component | version |"
echo "| --- | --- |"
echo "| duplicity | $(ver duplicity --version) (python $(python3 -c 'import platform; print(platform.python_version())'), Debian $(dpkg-query -W -f='${Version}' duplicity 2>/dev/null)) |"
echo "| restic | $(ver restic version) |"
echo "| borgbackup | $(ver borg --version) (Debian $(dpkg-query -W -f='${Version}' borgbackup 2>/dev/null)) |"
echo "| gpg | $(ver gpg --version), $(gpg --version | grep -m1 libgcrypt) |"
echo "| librsync (rdiff) | $(ver rdiff --version) |"
echo "| tar / gzip / pigz | $(ver tar --version) / $(ver gzip --version) / $(ver pigz --version) |"
echo "| openssl | $(ver openssl version) |"
if [ -f "$RUN/dup-version.txt" ]; then
  echo "| dup | $(sed -n 's/^git: //p' "$RUN/dup-version.txt") ($(sed -n 's/^uncommitted changes: //p' "$RUN/dup-version.txt")); release build, $(sed -n 's/^rustc: //p' "$RUN/dup-version.txt") |"
fi
echo
echo "## Corpus"
echo
echo '`make-corpus.sh --size large|small DIR`; change set `mutate.sh DIR`; ids are sha256 prefixes of the content manifest (`manifest.py`, no mtimes).'
echo
echo
echo "large (~1 GiB, 50.5k files; median file 4.2 KB, p90 6.5 KB, p99 148 KB): \`doc/\` = /usr/share/doc (text, many small .gz, symlinks), \`python3.11/\` and \`python3/\` = /usr/lib/python3* without __pycache__, \`perl/\` = /usr/share/perl, \`rustdoc/{core,alloc}\` = rust $(rustc --version 2>/dev/null | cut -d' ' -f2) html docs (41k files, many < 1 KB), \`rustlib/\` = the toolchain's x86_64 rlib/rmeta/.so/.a (1-60 MB binaries), \`big/app.log\` = 200 MiB synthetic access log (seeded, gzip -6 ratio ~5.8, no repeated blocks), \`big/random.bin\` = 200 MiB AES-256-CTR keystream (fixed key, incompressible). small (~186 MiB, 10.1k files): every 5th file of the same sources, all directories, big files 2 x 40 MiB."
echo
echo '```'
cat "$RUN/corpus.txt"
for f in "$RUN"/mutate-*.txt; do [ -f "$f" ] && echo "$(basename "$f" .txt): $(cat "$f")"; done
echo '```'

python3 "$(dirname "$0")/report_tables.py" "$TSV"

echo
echo "## Exact commands (last corpus run; \`$(dirname "$RUN")/corpus\` is the backed-up tree, the same path for every tool)"
echo
echo "Encryption: duplicity symmetric gpg (PASSPHRASE env), restic password (RESTIC_PASSWORD env, repo format from \`restic init\` default), borg \`repokey-blake2\` (BORG_PASSPHRASE env). dup: OpenPGP symmetric (PASSPHRASE env; SKESK v4 + SEIPD/MDC, AES-256, deflate level ${DUP_LEVEL:-?} inside, its default). **None** for duplicity-noenc (\`--no-encryption\`) and dup-noenc (\`dup-pack --no-encryption\`). Env: GNUPGHOME, BORG_BASE_DIR, TMPDIR under the workdir. dup's binaries run from a copy in the run dir (\`\$DUPB\`, first on PATH inside the step)."
echo
echo '```'
last=$(awk -F'\t' 'NR>1{print $1}' "$TSV" | tail -1)
for f in "$RUN"/logs/"$last".*.r1.cmd; do
  n=$(basename "$f" .r1.cmd); n=${n#"$last".}
  printf '%-44s %s\n' "$n:" "$(cat "$f")"
done
echo '```'
for f in "$RUN"/logs/*.gpg-packets*.txt; do
  [ -f "$f" ] || continue
  echo
  echo "gpg packets of duplicity's first volume ($(basename "$f")):"
  echo
  echo '```'
  grep -E 'symkey enc packet|compressed packet|encrypted data packet|aead' "$f" | sort -u
  echo '```'
  echo
  echo "(OpenPGP ids: cipher 9 = AES-256, 7 = AES-128; compression algo 1 = ZIP/deflate, 2 = ZLIB; s2k 3 = iterated+salted, hash 2 = SHA-1, 8 = SHA-256.)"
  break
done
if [ -f "$RUN/dup-version.txt" ]; then
  echo
  echo "dup binaries measured (sha256 prefixes):"
  echo
  echo '```'
  cat "$RUN/dup-version.txt"
  echo '```'
fi
for f in "$RUN"/logs/*.restic.init*.log; do
  [ -f "$f" ] || continue
  echo
  echo "restic repo config: \`$(tr -d '\n ' < "$f" | grep -o '"version":[0-9]*' | head -1)\`"
  break
done

cat <<'NOTES'

## Caveats (method)

- Warm page cache; each step timed once per rep, compare the **min** column first (least disturbed), the spread shows the noise. The VM disk write path is host-cached (see the `dd ... fsync` floor row), so these numbers are CPU-bound, not disk-bound; restores are timed without a final `sync`, backups include whatever fsyncs the tool does itself (restic and borg fsync repo files, duplicity does not).
- The filesystem is mounted with `discard`: deleting a 1 GiB tree takes minutes here. Deletions are untimed, and a `sync` runs before each warm-up so pending writeback/discard does not leak into the next step.
- Tools differ in what "encrypted backup" costs: duplicity = tar + librsync signatures + gpg (AES-256-CFB, MDC, gpg's default ZIP level-6 compression, also applied to incompressible data); restic = content-defined chunks, zstd (auto), AES-256-CTR + Poly1305; borg = content-defined chunks, lz4 (1.2 default), AES-256-CTR + keyed BLAKE2b-256 MAC and chunk ids (repokey-blake2). So repo sizes mostly reflect compression, not dedup (the corpus has almost no duplicate content).
- duplicity's list/incremental use its local archive dir (plain signatures + manifests; the "local cache" column); without it both must fetch and decrypt the remote signature files first.
- `restore1` for restic/borg loads the snapshot's tree metadata; for duplicity it decrypts/decompresses the volume(s) holding the file in the full and in the incremental.
- restic and borg choose random chunker parameters per repository, so their repo sizes and especially Δrepo vary between reps (shown as a range); duplicity's are reproducible.
- This machine was shared with other work during the run (bursty cargo/rclone/ssh load): hence the quiet-wait and the "other CPU s" column; rows where it is large relative to wall are disturbed.
- Peak RSS is the largest single process, not the sum of a pipeline or of duplicity + its gpg children.
- dup is a pipeline of separate processes (dup-scan | dup-delta | dup-pack | dup-put, with dup-sig feeding the incremental's basis): its CPU s is the sum over all of them, its peak RSS the largest one, and its wall time benefits from the stages running in parallel on the 2 cores. Every dup step begins with `dup-sync` (cache vs backend), as duplicity does for each command. dup is encrypted like duplicity; dup-noenc and duplicity-noenc are the unencrypted pair.
NOTES

cat <<'RERUN'

## Rerun / use as a yardstick

- `bash anchors.sh --size both --reps 3` (about 25 min on this machine, then several minutes to delete ~23 GiB of trash: the fs has `discard`); `--size small --reps 1` takes ~3 min. Corpora are cached in the workdir (`--regen` to rebuild; the corpus id must match the one above for comparable numbers).
- dup beside the anchors (ratios are only meaningful within one run): `cargo build --release --bins && scripts/bench/anchors.sh --size small --reps 3 --tools "duplicity duplicity-noenc restic borg dup dup-noenc" --workdir /tmp/dupbench --out scripts/bench-results/RESULTS-small.md`.
- A duplicity-CLI-compatible tool: `DUPLICITY_BIN=/path/to/tool DUPLICITY_LABEL=newtool bash anchors.sh --tools duplicity --no-floor --out /tmp/new.md`, then `compare.sh RESULTS-anchors.tsv /tmp/new.tsv` (after renaming the tool column, see compare.sh).
RERUN
