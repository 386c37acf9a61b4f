//! [`backup`]: the same stages as the binaries (scan, sig, delta, pack,
//! put), in threads joined by in-process pipes.

use std::io::{BufReader, BufWriter};
use std::path::PathBuf;

use super::{ArchiveOptions, job};
use crate::archive::Archive;
use crate::cancel::Cancel;
use crate::dupfmt::names::Naming;
use crate::dupfmt::rsync;
use crate::dupfmt::time;
use crate::error::{Error, Kind, Result};
use crate::io::pipe::{PipeReader, PipeWriter, pipe};
use crate::joblog::{inherit, note};
use crate::progress::{Event, Meter, Progress};
use crate::record::{Encoding, Reader, StreamKind, Writer};
use crate::stage::scan::select::{Opt, Selection};
use crate::stage::scan::{self, Source};
use crate::stage::sig::SigState;
use crate::stage::{delta, pack, put, sync};

/// Full, incremental, or whichever applies (full when there is no chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackupMode {
    #[default]
    Auto,
    Full,
    Incremental,
}

/// A backup of `source` to `archive` (whose keys, if any, encrypt it).
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The directory to back up.
    pub source: PathBuf,
    pub archive: ArchiveOptions,
    /// duplicity's selection options, in order (first match wins).
    pub selection: Vec<Opt>,
    pub mode: BackupMode,
    /// A full instead of an incremental when the newest chain began before
    /// this time (Unix seconds; duplicity's `--full-if-older-than`).
    pub full_if_older_than: Option<i64>,
    /// Volume size in bytes.
    pub volsize: u64,
    pub compress: bool,
    /// Deflate level, 0-9 (gzip, or inside OpenPGP).
    pub compress_level: u32,
    pub max_block: u32,
    /// For an incremental on a chain encrypted with a passphrase, refuse
    /// (`Kind::Crypto`) unless the passphrase of `archive.keys` opens the chain, so
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
            full_if_older_than: None,
            volsize: 200 << 20,
            compress: true,
            compress_level: pack::DEFAULT_LEVEL,
            max_block: rsync::DEFAULT_MAX_BLOCK,
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
/// An unfinished set an interrupted run left (cancelled, killed, a backend
/// failure) is resumed: its time is taken and the volumes already stored
/// are not sent again ([`put::Stats::skipped`]).
///
/// Cancelled, it stops at the next file or volume, keeps what it stored
/// for the next call to resume, and returns [`Kind::Interrupted`]. Another
/// job of this process on the same archive: [`Kind::Locked`].
///
/// ```no_run
/// use dup::api::{self, BackupMode, BackupOptions, Cancel, Event, Keys};
/// let mut o = BackupOptions::new("/home/me", "file:///mnt/backup");
/// o.archive.keys = Some(Keys::with_passphrase(b"secret".to_vec()));
/// o.mode = BackupMode::Auto;
/// let cancel = Cancel::new(); // cancel.cancel() from another thread stops it
/// let r = api::backup(&o, &|e: Event| eprintln!("{e:?}"), &cancel)?;
/// println!("{} files changed, {} volumes resumed", r.changes.changed, r.stored.skipped);
/// # Ok::<(), dup::Error>(())
/// ```
pub fn backup(opts: &BackupOptions, progress: &dyn Progress, cancel: &Cancel) -> Result<BackupReport> {
    job(progress, || backup_here(opts, progress, cancel))
}

fn backup_here(opts: &BackupOptions, caller: &dyn Progress, cancel: &Cancel) -> Result<BackupReport> {
    let started = std::time::Instant::now();
    // The caller sees `progress` events (done/total, percent, ETA) instead
    // of one `item` per file: the scan counts the tree alongside its walk.
    let meter = Meter::new(|ev: Event| caller.event(ev));
    let progress: &dyn Progress = &meter;
    let a = opts.archive.open()?;
    let _lock = a.cache.lock_for(&format!("a backup of {} to {}", opts.source.display(), opts.archive.url))?;
    sync::run(&a, progress, cancel)?;
    cancel.check()?;
    let coll = a.collection()?;
    let start = coll.primary_chain().map(|c| c.start_time());
    let full = next_is_full(opts.mode, start, opts.full_if_older_than, &opts.archive.url)?;
    if !full
        && opts.check_passphrase
        && let Some(keys) = opts.archive.keys.as_ref().filter(|k| k.is_symmetric())
    {
        a.check_passphrase(&coll, keys)?;
    }
    let basis_state = if full { None } else { Some(SigState::at(&coll, None, &a)?) };
    let basis_end = basis_state.as_ref().map(|s| s.end_time);
    let newest = coll.chains.iter().map(|c| c.end_time()).max();
    let popts = pack_options(&a, opts, basis_end, newest, cancel)?;
    let now = popts.time.unwrap_or_default();
    let src = Source::open(opts.source.as_os_str().as_encoded_bytes())?;
    let sel = Selection::new(&src.root(), &opts.selection, false)?;
    let dopts = delta::Options {
        source: Some(opts.source.clone()),
        max_block: opts.max_block,
        signatures_only: false,
        cancel: cancel.clone(),
    };
    let scan = |w: PipeWriter| scan_stage(&src, &sel, w, cancel);
    let (changes, packed, stored, warnings) = run_pipeline(&a, scan, basis_state, &dopts, &popts, progress, cancel)?;
    progress.event(Event::Finish { stage: "backup".into(), items: changes.items, bytes: stored.bytes });
    let mut summary = changes.summary(started.elapsed().as_secs());
    summary.stage = "backup".into();
    summary.bytes_stored = Some(stored.bytes);
    progress.event(Event::Summary(summary));
    Ok(BackupReport { full, time: now, warnings, changes, packed, stored })
}

/// dup-pack's options for a set of `opts` extending the chain that ends
/// at `basis_end` (None: a full): the time of an unfinished set of this
/// kind, left by an interrupted run, is taken and the set continued
/// (volumes packed again unchanged are not sent); else now, once the clock
/// has passed `newest`, the end of the archive's newest chain (a full in
/// the second of another set would take its names).
pub(super) fn pack_options(
    a: &Archive,
    opts: &BackupOptions,
    basis_end: Option<i64>,
    newest: Option<i64>,
    cancel: &Cancel,
) -> Result<pack::Options> {
    let resume = pack::Resume::load(&a.storage, &a.cache)?;
    let now = resume.time(basis_end).unwrap_or_else(|| time::now_after(newest.max(basis_end)));
    Ok(pack::Options {
        volsize: opts.volsize,
        compress: opts.compress,
        compress_level: opts.compress_level,
        time: Some(now),
        naming: Naming::default(),
        hostname: pack::hostname(),
        localdir: None,
        keys: opts.archive.keys.clone(),
        resume: Some(resume),
        // Checked before, against the chain itself.
        check_passphrase: false,
        cancel: cancel.clone(),
    })
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
                note!(log::Level::Info, "the newest full backup is older than the limit: the next backup is a full");
            }
            Ok(old)
        }
        (BackupMode::Auto, None) => {
            note!(log::Level::Info, "no backup chain at {url}: the next backup is a full");
            Ok(true)
        }
        (BackupMode::Incremental, None) => {
            Err(Error::new(Kind::NoBackup, format!("no backup chain at {url}")).hint("run a full backup first"))
        }
    }
}

/// The backup's stages, each in a thread joined by pipes: `source` (the
/// scan, or a restore stream) → (sig, for an incremental: `basis_state`) →
/// delta → pack → put. What delta, pack and put did, and the number of
/// warnings; else the error that explains the failure.
pub(super) fn run_pipeline(
    a: &Archive,
    source: impl FnOnce(PipeWriter) -> Result<u64> + Send,
    mut basis_state: Option<SigState>,
    dopts: &delta::Options,
    popts: &pack::Options,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<(delta::Stats, pack::Stats, put::Stats, u64)> {
    let full = basis_state.is_none();
    let (r_entries, w_entries) = pipe();
    let (r_changes, w_changes) = pipe();
    let (r_files, w_files) = pipe();
    let (r_basis, w_basis) = pipe();
    std::thread::scope(|s| {
        let scan_t = s.spawn(inherit(move || source(w_entries)));
        let sig_t = s.spawn(inherit(move || -> Result<()> {
            let Some(state) = basis_state.as_mut() else {
                return Ok(());
            };
            let mut out = Writer::with_head(BufWriter::new(w_basis), Encoding::Cbor, state.head())?;
            state.write_stream(&mut out)?;
            out.finish()?;
            Ok(())
        }));
        let delta_t = s.spawn(inherit(move || -> Result<delta::Stats> {
            let mut input = reader(r_entries, "dup-scan")?;
            let mut basis = if full { None } else { Some(reader(r_basis, "dup-sig")?) };
            let head = delta::output_head(input.head(), basis.as_ref().map(|b| b.head()));
            let out = Writer::with_head(BufWriter::new(w_changes), Encoding::Cbor, head)?;
            Ok(delta::run(&mut input, basis.as_mut(), out, dopts, progress)?.1)
        }));
        let pack_t = s.spawn(inherit(move || -> Result<pack::Stats> {
            let mut input = reader(r_changes, "dup-delta")?;
            let out = Writer::new(BufWriter::new(w_files), Encoding::Cbor, StreamKind::Files, "dup-pack")?;
            Ok(pack::run(&mut input, out, popts, progress)?.1)
        }));
        let popts = put::Options { cancel: cancel.clone(), ..put::Options::default() };
        let stored = reader(r_files, "dup-pack")
            .and_then(|mut r| put::run_with(&mut r, &a.storage, Some(&a.cache), &a.naming, progress, &popts));
        let scanned = joined(scan_t.join(), "the scan panicked");
        let sig = joined(sig_t.join(), "a backup stage panicked");
        let changes = joined(delta_t.join(), "the delta stage panicked");
        let packed = joined(pack_t.join(), "the pack stage panicked");
        match (scanned, sig, changes, packed, stored) {
            (Ok(warnings), Ok(()), Ok(changes), Ok(packed), Ok(stored)) => {
                let warnings = warnings + changes.warnings;
                Ok((changes, packed, stored, warnings))
            }
            (a, b, c, d, e) => {
                let errors: Vec<Error> = [a.err(), b.err(), c.err(), d.err(), e.err()].into_iter().flatten().collect();
                if cancel.is_cancelled() {
                    return Err(crate::cancel::interrupted());
                }
                Err(root_cause(errors))
            }
        }
    })
}

/// The scan of `src` as an entries stream into `w`; its number of warnings.
fn scan_stage(src: &Source, sel: &Selection, w: PipeWriter, cancel: &Cancel) -> Result<u64> {
    let mut out =
        Writer::with_source(BufWriter::new(w), Encoding::Cbor, StreamKind::Entries, "dup-scan", Some(src.name()))?;
    let sum = scan::walk_counted(src, sel, |rec| {
        cancel.check()?;
        out.write(rec)
    })?;
    out.finish()?;
    Ok(sum.warnings)
}

/// A stage thread's result; its panic as an error saying `panicked`.
fn joined<T>(r: std::thread::Result<Result<T>>, panicked: &str) -> Result<T> {
    r.unwrap_or_else(|_| Err(Error::other(panicked)))
}
