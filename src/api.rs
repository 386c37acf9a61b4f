//! The operations a backup front end needs, as functions over typed options
//! returning typed results, reporting through a [`Progress`] callback. They
//! run the same stages as the binaries (scan, sig, delta, pack, put), in
//! threads joined by in-process pipes. Nothing here is global: each call opens
//! its own backend and cache, so several jobs can run at once in one process.

use std::io::{BufReader, BufWriter};
use std::path::PathBuf;

use crate::archive::Archive;
use crate::dupfmt::names::Naming;
use crate::dupfmt::rsync;
use crate::dupfmt::time;
use crate::error::{Error, Kind, Result};
use crate::io::pipe::{PipeReader, PipeWriter, pipe};
use crate::progress::{Event, Progress};
use crate::record::{Encoding, Entry, Reader, SetInfo, StreamKind, Writer};
use crate::stage::ls::status;
use crate::stage::scan::select::{Opt, Selection};
use crate::stage::scan::{self, Source};
use crate::stage::sig::SigState;
use crate::stage::{delta, pack, put, sync};

/// Where an archive is and where its cache lives.
#[derive(Debug, Clone, Default)]
pub struct ArchiveOptions {
    /// Backend URL, as duplicity takes it (`file:///path`).
    pub url: String,
    /// Directory of the metadata caches (default `$XDG_CACHE_HOME/dup`).
    pub archive_dir: Option<PathBuf>,
    /// This archive's cache name (default: MD5 of the URL).
    pub name: Option<String>,
    /// Keys to read an encrypted archive with.
    pub keys: Option<crate::crypto::Keys>,
}

impl ArchiveOptions {
    pub fn new(url: impl Into<String>) -> Self {
        ArchiveOptions { url: url.into(), ..Default::default() }
    }

    fn open(&self) -> Result<Archive> {
        Ok(Archive::open(&self.url, self.archive_dir.as_deref(), self.name.as_deref())?.with_keys(self.keys.clone()))
    }
}

/// Full, incremental, or whichever applies (full when there is no chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackupMode {
    #[default]
    Auto,
    Full,
    Incremental,
}

#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The directory to back up.
    pub source: PathBuf,
    pub archive: ArchiveOptions,
    /// duplicity's selection options, in order (first match wins).
    pub selection: Vec<Opt>,
    pub mode: BackupMode,
    /// Volume size in bytes.
    pub volsize: u64,
    pub compress: bool,
    /// Deflate level, 0-9 (gzip, or inside OpenPGP).
    pub compress_level: u32,
    pub max_block: u32,
    /// OpenPGP keys to encrypt (and sign) with; `None` writes an unencrypted
    /// archive (duplicity's `--no-encryption`).
    pub keys: Option<crate::crypto::Keys>,
    /// For an incremental on a chain encrypted with a passphrase, refuse
    /// (`Kind::Crypto`) unless the passphrase of `keys` opens the chain, so
    /// a chain never mixes passphrases (default true).
    pub check_passphrase: bool,
}

impl BackupOptions {
    /// A backup of `source` to `url` with duplicity's defaults.
    pub fn new(source: impl Into<PathBuf>, url: impl Into<String>) -> Self {
        BackupOptions {
            source: source.into(),
            archive: ArchiveOptions::new(url),
            selection: Vec::new(),
            mode: BackupMode::Auto,
            volsize: 200 << 20,
            compress: true,
            compress_level: pack::DEFAULT_LEVEL,
            max_block: rsync::DEFAULT_MAX_BLOCK,
            keys: None,
            check_passphrase: true,
        }
    }
}

/// What a backup did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// True for a full backup, false for an incremental.
    pub full: bool,
    /// The set's time.
    pub time: i64,
    /// Items that could not be read and were left out (the backup is partial).
    pub warnings: u64,
    pub changes: delta::Stats,
    pub packed: pack::Stats,
    pub stored: put::Stats,
}

fn reader(p: PipeReader, name: &str) -> Result<Reader<BufReader<PipeReader>>> {
    Reader::new(BufReader::with_capacity(256 * 1024, p), name)
}

/// The error that explains a failed pipeline: the first stage's own error,
/// not the broken streams it left downstream or the closed pipes upstream.
fn root_cause(errors: Vec<Error>) -> Error {
    let is_echo = |e: &Error| matches!(e.kind, Kind::Stream | Kind::StdoutClosed);
    let mut errors = errors;
    match errors.iter().position(|e| !is_echo(e)) {
        Some(i) => errors.swap_remove(i),
        None => errors.swap_remove(0),
    }
}

/// Backs up a directory: syncs the cache, then scan → (sig) → delta → pack →
/// put, the basis being the archive's signature state for an incremental.
pub fn backup(opts: &BackupOptions, progress: &dyn Progress) -> Result<BackupReport> {
    let a = opts.archive.open()?;
    let _lock = a.cache.lock_for(&format!("a backup of {} to {}", opts.source.display(), opts.archive.url))?;
    sync::run(&a, progress)?;
    let coll = a.collection()?;
    let start = coll.primary_chain().map(|c| c.start_time());
    let full = next_is_full(opts.mode, start, None, &opts.archive.url)?;
    if !full
        && opts.check_passphrase
        && let Some(keys) = opts.keys.as_ref().filter(|k| k.is_symmetric())
    {
        a.check_passphrase(&coll, keys)?;
    }
    let basis_state = if full { None } else { Some(SigState::at(&coll, None, &a)?) };
    // An unfinished set of this kind, left by an interrupted run, is
    // continued (its time; volumes packed again unchanged are not sent).
    let resume = pack::Resume::load(&a.storage, &a.cache)?;
    let basis_end = basis_state.as_ref().map(|s| s.end_time);
    let now = resume.time(basis_end).unwrap_or_else(|| time::now_after(basis_end));
    let src = Source::open(opts.source.as_os_str().as_encoded_bytes())?;
    let sel = Selection::new(&src.root(), &opts.selection, false)?;
    let popts = pack::Options {
        volsize: opts.volsize,
        compress: opts.compress,
        compress_level: opts.compress_level,
        time: Some(now),
        naming: Naming::default(),
        hostname: pack::hostname(),
        localdir: None,
        keys: opts.keys.clone(),
        resume: Some(resume),
        // Checked above, against the chain itself.
        check_passphrase: false,
    };
    let dopts = delta::Options { source: Some(opts.source.clone()), max_block: opts.max_block, signatures_only: false };
    let (changes, packed, stored, warnings) = run_pipeline(&a, &src, &sel, basis_state, &dopts, &popts, progress)?;
    progress.event(Event::Finish { stage: "backup".into(), items: changes.files_read, bytes: stored.bytes });
    Ok(BackupReport { full, time: now, warnings, changes, packed, stored })
}

/// Whether the next backup of the archive at `url` is a full one, for the
/// API and dup-sig alike: always for `Full`; when the newest chain began
/// (`chain_start`) before `full_if_older_than`; for `Auto` when there is no
/// chain. `Incremental` without a chain is an error (exit 10).
pub fn next_is_full(
    mode: BackupMode,
    chain_start: Option<i64>,
    full_if_older_than: Option<i64>,
    url: &str,
) -> Result<bool> {
    match (mode, chain_start) {
        (BackupMode::Full, _) => Ok(true),
        (_, Some(start)) => {
            let old = full_if_older_than.is_some_and(|limit| start < limit);
            if old {
                log::info!("the newest full backup is older than the limit: the next backup is a full");
            }
            Ok(old)
        }
        (BackupMode::Auto, None) => {
            log::info!("no backup chain at {url}: the next backup is a full");
            Ok(true)
        }
        (BackupMode::Incremental, None) => {
            Err(Error::new(Kind::NoBackup, format!("no backup chain at {url}")).hint("run a full backup first"))
        }
    }
}

/// The backup's stages, each in a thread joined by pipes: scan → (sig,
/// for an incremental: `basis_state`) → delta → pack → put. What delta,
/// pack and put did, and the number of warnings; else the error that
/// explains the failure.
fn run_pipeline(
    a: &Archive,
    src: &Source,
    sel: &Selection,
    mut basis_state: Option<SigState>,
    dopts: &delta::Options,
    popts: &pack::Options,
    progress: &dyn Progress,
) -> Result<(delta::Stats, pack::Stats, put::Stats, u64)> {
    let full = basis_state.is_none();
    let (r_entries, w_entries) = pipe();
    let (r_changes, w_changes) = pipe();
    let (r_files, w_files) = pipe();
    let (r_basis, w_basis) = pipe();
    std::thread::scope(|s| {
        let scan_t = s.spawn(move || scan_stage(src, sel, w_entries));
        let sig_t = s.spawn(move || -> Result<()> {
            let Some(state) = basis_state.as_mut() else {
                return Ok(());
            };
            let mut out = Writer::with_head(BufWriter::new(w_basis), Encoding::Cbor, state.head())?;
            state.write_stream(&mut out)?;
            out.finish()?;
            Ok(())
        });
        let delta_t = s.spawn(move || -> Result<delta::Stats> {
            let mut input = reader(r_entries, "dup-scan")?;
            let mut basis = if full { None } else { Some(reader(r_basis, "dup-sig")?) };
            let head = delta::output_head(input.head(), basis.as_ref().map(|b| b.head()));
            let out = Writer::with_head(BufWriter::new(w_changes), Encoding::Cbor, head)?;
            Ok(delta::run(&mut input, basis.as_mut(), out, dopts, progress)?.1)
        });
        let pack_t = s.spawn(move || -> Result<pack::Stats> {
            let mut input = reader(r_changes, "dup-delta")?;
            let out = Writer::new(BufWriter::new(w_files), Encoding::Cbor, StreamKind::Files, "dup-pack")?;
            Ok(pack::run(&mut input, out, popts, progress)?.1)
        });
        let stored = reader(r_files, "dup-pack")
            .and_then(|mut r| put::run(&mut r, &a.storage, Some(&a.cache), &a.naming, progress));
        let scanned = joined(scan_t.join(), "the scan panicked");
        let sig = joined(sig_t.join(), "a backup stage panicked");
        let changes = joined(delta_t.join(), "the delta stage panicked");
        let packed = joined(pack_t.join(), "the pack stage panicked");
        match (scanned, sig, changes, packed, stored) {
            (Ok(sum), Ok(()), Ok(changes), Ok(packed), Ok(stored)) => {
                let warnings = sum.warnings + changes.warnings;
                Ok((changes, packed, stored, warnings))
            }
            (a, b, c, d, e) => {
                Err(root_cause([a.err(), b.err(), c.err(), d.err(), e.err()].into_iter().flatten().collect()))
            }
        }
    })
}

/// The scan of `src` as an entries stream into `w`.
fn scan_stage(src: &Source, sel: &Selection, w: PipeWriter) -> Result<scan::Summary> {
    let mut out =
        Writer::with_source(BufWriter::new(w), Encoding::Cbor, StreamKind::Entries, "dup-scan", Some(src.name()))?;
    let sum = scan::walk(src, sel, |rec| out.write(rec))?;
    out.finish()?;
    Ok(sum)
}

/// A stage thread's result; its panic as an error saying `panicked`.
fn joined<T>(r: std::thread::Result<Result<T>>, panicked: &str) -> Result<T> {
    r.unwrap_or_else(|_| Err(Error::other(panicked)))
}

/// The archive's backup sets (collection status), chains oldest first.
pub fn snapshots(archive: &ArchiveOptions) -> Result<Vec<SetInfo>> {
    let a = archive.open()?;
    Ok(status::sets(&a.collection()?))
}

/// Calls `each` for every file present at `t` (None: the latest), in
/// duplicity's order, from the signatures alone (no volume is read). The
/// cache is brought up to date first.
pub fn files_at(archive: &ArchiveOptions, t: Option<i64>, mut each: impl FnMut(Entry) -> Result<()>) -> Result<()> {
    let a = archive.open()?;
    // A job changing the archive (a backup) keeps the cache up to date
    // itself: then the listing reads the cache as it is.
    match a.cache.lock_for(&format!("a listing of {}", archive.url)) {
        Ok(_lock) => {
            sync::run(&a, &crate::progress::Silent)?;
        }
        Err(e) if e.kind == Kind::Locked => log::info!("{}: listing from the cache as it is", e.message),
        Err(e) => return Err(e),
    }
    let coll = a.collection()?;
    let mut state = SigState::at(&coll, t, &a)?;
    while let Some(e) = state.next()? {
        each(e)?;
    }
    Ok(())
}

/// Tests that the archive's backend answers: lists, writes, reads back and
/// deletes a probe file, without retries and within seconds; a missing
/// archive directory is not found and is not created. Says what went wrong
/// (unreachable, authentication refused, permission denied, not found)
/// instead of failing.
pub fn test_connection(archive: &ArchiveOptions) -> Result<crate::io::storage::Check> {
    crate::archive::test_connection(&archive.url)
}
