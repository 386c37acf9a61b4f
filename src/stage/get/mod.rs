//! dup-get's library side (FORMAT-duplicity.md §6.5, §6.8): the backup at a
//! time, or one path of it, restored into a directory, compared with a local
//! tree, or written as a record stream.
//!
//! The chain's sets are read as parallel entry streams ([`SetStream`]), each
//! fetching only the volumes the path needs, verifying every volume's hash
//! before use and joining multivol chunks across volume boundaries. The
//! streams are merged by index: for each path the last snapshot (or deletion)
//! is the base and every later delta is patched onto it, streaming, with the
//! newest entry's metadata. Nothing holds a whole file in memory.
//!
//! A damaged or missing volume, and an entry that would write outside the
//! destination, are reported as [`Problem`]s and skipped; everything else is
//! still restored. [`Stats::error`] turns the problems into the run's error.

mod dest;
mod sets;
mod stream;
mod verify;
mod writer;

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::archive::Archive;
use crate::dupfmt::collection::{BackupSet, Collection};
use crate::dupfmt::index;
use crate::dupfmt::manifest::Manifest;
use crate::dupfmt::names::{FileKind, FileName, Suffix};
use crate::dupfmt::rsync;
use crate::dupfmt::tar::EntryType;
use crate::error::{Error, Kind, Result, content_error};
use crate::io::cache::seek::SeekTable;
use crate::joblog::note;
use crate::progress::{Event, Progress};
use crate::record::{Encoding, Entry, FileType, PathBytes};
use crate::stage::ls::files::Files;

pub use verify::Difference;

use sets::{SetStream, VolPlan};

/// What to restore.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Archive URL (`file:///path`).
    pub url: String,
    /// The time to restore (Unix seconds); `None` is now.
    pub time: Option<i64>,
    /// Only this path (relative to the backup root; a file or a directory).
    /// It becomes the restored root: the destination is that item itself.
    pub path: Option<Vec<u8>>,
    /// Directory of the local metadata caches (see [`crate::io::cache::Cache::open`]).
    pub archive_dir: Option<PathBuf>,
    /// Name of this archive's cache (default: the MD5 of the URL).
    pub name: Option<String>,
    /// Keys to decrypt an encrypted archive with.
    pub keys: Option<crate::crypto::Keys>,
    /// Stops the run between items ([`Kind::Interrupted`]).
    pub cancel: crate::cancel::Cancel,
}

/// What to do with the restored tree.
pub enum Action<'a> {
    /// Write it to `dest` (a directory; or the file itself when `path` is a
    /// non-directory). `dest` must be absent or empty unless `force`.
    Restore {
        dest: PathBuf,
        force: bool,
        /// Use the stored numeric ids, not those of the stored user and
        /// group names (ownership is restored only when running as root).
        numeric_owner: bool,
    },
    /// Compare it with the local tree `src`; each difference goes to `report`.
    Verify { src: PathBuf, compare_data: bool, report: &'a mut dyn FnMut(&Difference) },
    /// Write it as a `changes` record stream of snapshots (content included).
    Stream { out: &'a mut dyn Write, encoding: Encoding },
}

/// Something that was skipped; the run went on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// [`Kind::Corrupt`] for damaged or missing volumes and refused entries.
    pub kind: Kind,
    pub message: String,
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// The time restored.
    pub time: i64,
    /// Sets of the chain that were read.
    pub sets: usize,
    /// Volumes fetched, and their stored bytes.
    pub volumes: u64,
    pub volume_bytes: u64,
    /// Items restored, compared or written to the stream, and their content bytes.
    pub items: u64,
    pub bytes: u64,
    /// Items that differ (verify).
    pub differences: u64,
    /// The first [`MAX_PROBLEMS`] problems, in the order they happened.
    pub problems: Vec<Problem>,
    /// All problems, including those not kept.
    pub problem_count: u64,
}

/// Problems kept in [`Stats::problems`].
pub const MAX_PROBLEMS: usize = 1000;

impl Stats {
    /// The error the problems add up to: [`Kind::Corrupt`] when a volume was
    /// damaged or missing or an entry was refused, else [`Kind::Other`];
    /// `None` when there were none.
    pub fn error(&self) -> Option<Error> {
        if self.problem_count == 0 {
            return None;
        }
        let kind = if self.problems.iter().any(|p| p.kind == Kind::Corrupt) { Kind::Corrupt } else { Kind::Other };
        let first = self.problems.first().map(|p| p.message.as_str()).unwrap_or("");
        let msg = match self.problem_count {
            1 => format!("1 problem: {first}"),
            n => format!("{n} problems, the first: {first}"),
        };
        let hint = if kind == Kind::Corrupt {
            "everything else was done; the messages above name the damaged volumes and refused entries"
        } else {
            "everything else was done; the messages above say what failed"
        };
        Some(Error::new(kind, msg).hint(hint))
    }
}

/// Collects problems and reports progress (single-threaded).
pub(crate) struct Reporter<'a> {
    progress: &'a dyn Progress,
    stats: RefCell<Stats>,
    /// An error that ends the run where it cannot be returned (a volume
    /// that cannot be staged on a full disk); the merge loop returns it.
    stop: RefCell<Option<Error>>,
    /// Volumes read as they are decrypted, and what the current item read.
    vols: RefCell<Vols>,
}

/// A volume opened by a [`SetStream`] (numbered in the order opened).
pub(crate) type VolId = u64;

/// Whether what was read from some volumes may be used yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trust {
    /// Every volume was verified whole (hash, MDC, signature).
    Verified,
    /// One is still being read: its end (MDC, signature) is unchecked.
    Pending,
    /// One turned out damaged: nothing read from it may be used.
    Lost,
}

/// Volumes whose plaintext is used before their end is checked (OpenPGP
/// volumes restored into a directory: see [`dest`]), and the volumes the
/// current item was read from.
#[derive(Default)]
struct Vols {
    next: VolId,
    /// Volumes not verified yet, and those lost; the others are verified.
    pending: std::collections::HashSet<VolId>,
    lost: std::collections::HashSet<VolId>,
    /// Bumped whenever a volume is verified or lost.
    generation: u64,
    touched: Vec<VolId>,
    /// Items waiting for their volumes (see [`MAX_WAITING`]).
    waiting: usize,
}

/// Items that may wait for their volume's end (~150 B each); with more, the rest of the
/// volume is decrypted into a temporary file and verified at once, so
/// memory stays flat however many entries a volume holds.
pub(crate) const MAX_WAITING: usize = 100_000;

impl Reporter<'_> {
    /// Ends the run with `e` (the first one given) at the next item.
    pub(crate) fn stop(&self, e: Error) {
        self.stop.borrow_mut().get_or_insert(e);
    }

    fn take_stop(&self) -> Option<Error> {
        self.stop.borrow_mut().take()
    }

    pub(crate) fn problem(&self, kind: Kind, message: String) {
        // The warning event is the message (the binaries show it on stderr and log it).
        self.progress.event(Event::Warning { path: None, message: message.clone() });
        let mut s = self.stats.borrow_mut();
        s.problem_count += 1;
        if s.problems.len() < MAX_PROBLEMS {
            s.problems.push(Problem { kind, message });
        }
    }

    /// An item failed: `what` happened to `path`.
    pub(crate) fn item_problem(&self, path: &[u8], e: &Error) {
        self.problem(e.kind, format!("{}: {}", show(path), e.message));
    }

    pub(crate) fn fetched(&self, name: &str, bytes: u64) {
        self.progress.event(Event::File { name: name.to_string(), bytes, action: "fetched".into() });
        let mut s = self.stats.borrow_mut();
        s.volumes += 1;
        s.volume_bytes += bytes;
    }

    pub(crate) fn item(&self, path: &[u8], bytes: u64) {
        self.progress.event(Event::Item { path: show(path), bytes });
        let mut s = self.stats.borrow_mut();
        s.items += 1;
        s.bytes += bytes;
    }

    pub(crate) fn difference(&self) {
        self.stats.borrow_mut().differences += 1;
    }

    fn problem_count(&self) -> u64 {
        self.stats.borrow().problem_count
    }

    /// A new volume; `checked`: verified whole before anything is read
    /// from it (else its end is checked as it is read).
    pub(crate) fn volume_opened(&self, checked: bool) -> VolId {
        let mut v = self.vols.borrow_mut();
        v.next += 1;
        let id = v.next;
        if !checked {
            v.pending.insert(id);
        }
        id
    }

    /// The volume was read to its end, and its end checked.
    pub(crate) fn volume_verified(&self, id: VolId) {
        let mut v = self.vols.borrow_mut();
        if v.pending.remove(&id) {
            v.generation += 1;
        }
    }

    /// The volume is damaged: what was read from it is not used.
    pub(crate) fn volume_lost(&self, id: VolId) {
        let mut v = self.vols.borrow_mut();
        v.pending.remove(&id);
        v.lost.insert(id);
        v.generation += 1;
    }

    /// The current item is read from these volumes (and any touched later).
    fn begin_item(&self, heads: impl Iterator<Item = VolId>) {
        let mut v = self.vols.borrow_mut();
        v.touched.clear();
        v.touched.extend(heads);
    }

    /// The current item also read from `id`.
    pub(crate) fn touch(&self, id: VolId) {
        let mut v = self.vols.borrow_mut();
        if !v.touched.contains(&id) {
            v.touched.push(id);
        }
    }

    /// The volumes the current item was read from, if any is not verified.
    pub(crate) fn unverified_deps(&self) -> Vec<VolId> {
        let v = self.vols.borrow();
        if v.touched.iter().any(|id| v.pending.contains(id) || v.lost.contains(id)) {
            v.touched.clone()
        } else {
            Vec::new()
        }
    }

    /// What the volumes `deps` are now.
    pub(crate) fn trust(&self, deps: &[VolId]) -> Trust {
        let v = self.vols.borrow();
        if deps.iter().any(|id| v.lost.contains(id)) {
            Trust::Lost
        } else if deps.iter().any(|id| v.pending.contains(id)) {
            Trust::Pending
        } else {
            Trust::Verified
        }
    }

    /// How many items wait for their volumes (the restore's target says).
    pub(crate) fn set_waiting(&self, n: usize) {
        self.vols.borrow_mut().waiting = n;
    }

    /// Too many items wait: the volume being read should be verified now.
    pub(crate) fn crowded(&self) -> bool {
        self.vols.borrow().waiting > MAX_WAITING
    }

    /// Changes whenever a volume is verified or lost.
    pub(crate) fn generation(&self) -> u64 {
        self.vols.borrow().generation
    }
}

/// A path for messages (`.` for the root, `\xNN` for bytes that are not UTF-8).
pub(crate) fn show(path: &[u8]) -> String {
    PathBytes(path.to_vec()).to_string()
}

/// The content of a regular file: the base version's bytes, then the deltas
/// to apply to it, oldest first.
pub(crate) struct Content<'a> {
    pub base: sets::ContentRead<'a>,
    /// The base's size when it is known before reading it (one tar entry).
    pub base_size: Option<u64>,
    pub diffs: Vec<sets::ContentRead<'a>>,
}

impl Content<'_> {
    /// Writes the final version into files made by `create` (one per step:
    /// the base, then each patch using the previous step as its basis);
    /// `discard` gets each step's file once it is no longer needed, and all
    /// of them on error. Returns the last file and its size.
    pub(crate) fn apply<T>(
        &mut self,
        mut create: impl FnMut() -> Result<T>,
        file: impl Fn(&T) -> &File,
        mut discard: impl FnMut(T),
    ) -> Result<(T, u64)> {
        let cur = create()?;
        let mut size = match self.base.copy_to(&mut file(&cur)) {
            Ok(n) => n,
            Err(e) => {
                discard(cur);
                return Err(content_error("writing the restored file", e));
            }
        };
        let mut cur = cur;
        for d in &mut self.diffs {
            let next = match create() {
                Ok(n) => n,
                Err(e) => {
                    discard(cur);
                    return Err(e);
                }
            };
            match rsync::patch(file(&cur), &mut *d, file(&next)) {
                Ok(n) => {
                    discard(cur);
                    cur = next;
                    size = n;
                }
                Err(e) => {
                    discard(cur);
                    discard(next);
                    return Err(e.context("applying a delta"));
                }
            }
        }
        Ok((cur, size))
    }
}

/// Where restored items go: a directory, a comparison, a record stream.
pub(crate) trait Target {
    /// One item of the restored tree, in duplicity's order; `entry.path` is
    /// relative to the restored root (`.` is the root). Failures of the item
    /// are reported through `rep`; an `Err` ends the run.
    fn item(&mut self, entry: Entry, content: Option<Content<'_>>, rep: &Reporter) -> Result<()>;
    /// After the last item.
    fn finish(&mut self, rep: &Reporter) -> Result<()>;
}

/// Restores, verifies or streams the backup at `opts.time`; see [`Action`].
/// Problems that let the run go on (damaged volumes, refused entries,
/// items that could not be written) are in the returned [`Stats`]; see
/// [`Stats::error`]. Errors that stop it early are returned as `Err`.
pub fn run(opts: &Options, action: Action<'_>, progress: &dyn Progress) -> Result<Stats> {
    let t = opts.time.unwrap_or_else(crate::dupfmt::time::now);
    let prefix = match &opts.path {
        Some(p) => index::normalize(p)
            .ok_or_else(|| Error::usage(format!("--path {}: a path with '..' is never in a backup", show(p))))?,
        None => index::ROOT.to_vec(),
    };
    let archive =
        Archive::open(&opts.url, opts.archive_dir.as_deref(), opts.name.as_deref())?.with_keys(opts.keys.clone());
    let coll = archive.collection()?;
    for w in &coll.warnings {
        note!(log::Level::Info, "{w}");
    }
    let chain = coll.chain_at(t).map_err(|e| match e.kind {
        Kind::NoBackup => e
            .context(opts.url.as_str())
            .hint("check the URL (and --name/--archive-dir); dup-ls URL lists what it holds"),
        _ => e,
    })?;
    if t < chain.start_time() {
        // Before the first backup: the oldest is restored, as duplicity does, but not without a word.
        let msg = format!(
            "no backup chain for the requested time {}; restoring the oldest, starting at {}",
            crate::dupfmt::time::to_compact(t),
            crate::dupfmt::time::to_compact(chain.start_time())
        );
        progress.event(Event::Warning { path: None, message: msg });
    }
    let sets = chain.sets_at(t);
    let mut plans = Vec::new();
    for set in &sets {
        plans.push(plan_set(&archive, set, &prefix)?);
    }

    let (stage, doing) = match &action {
        Action::Restore { dest, .. } => ("restore", format!("restoring into {}", dest.display())),
        Action::Verify { src, .. } => ("verify", format!("comparing with {}", src.display())),
        Action::Stream { .. } => ("stream", "writing the stream".to_string()),
    };
    // A wrong passphrase or a missing secret key is found before anything is
    // written (and is exit 12, not a damaged volume). A damaged volume is
    // reported when it is read: the next one is tried here.
    for v in plans.iter().flat_map(|p| &p.volumes).filter(|v| !v.missing && v.encrypted) {
        match crate::crypto::check_decryptable(archive.keys_for(&v.name)?, &v.name, archive.storage.reader(&v.name)?) {
            Ok(()) => break,
            Err(e) if e.kind == Kind::Corrupt => log::debug!("{}", e.message),
            Err(e) => return Err(e),
        }
    }
    // Restored files wait under temporary names until their volumes are
    // verified (dest.rs), so OpenPGP volumes are read as they decrypt;
    // compared or streamed content is never unverified.
    let streamed = matches!(action, Action::Restore { .. });
    let mut target: Box<dyn Target + '_> = match action {
        Action::Restore { dest, force, numeric_owner } => Box::new(dest::DirTarget::new(dest, force, numeric_owner)?),
        Action::Verify { src, compare_data, report } => Box::new(verify::VerifyTarget::new(src, compare_data, report)),
        Action::Stream { out, encoding } => {
            let localdir = plans.last().and_then(|p| p.localdir.clone());
            Box::new(stream::StreamTarget::new(out, encoding, localdir)?)
        }
    };

    let rep = Reporter {
        progress,
        stats: RefCell::new(Stats { time: t, sets: sets.len(), ..Stats::default() }),
        stop: RefCell::new(None),
        vols: RefCell::new(Vols::default()),
    };
    progress.event(Event::Start { stage: stage.into() });
    for name in plans.iter().flat_map(|p| &p.unlisted) {
        rep.problem(
            Kind::Corrupt,
            format!("{name} is on the backend but not in its set's manifest (no hash to check it by); not read"),
        );
    }
    let mut streams: Vec<SetStream> =
        plans.into_iter().map(|p| SetStream::new(&archive, p.volumes, &prefix, streamed)).collect();
    // The total, counted alongside from the cache's indexes, gives a front
    // end its percent and time left.
    let done = AtomicBool::new(false);
    let found = std::thread::scope(|s| {
        if stage != "stream" {
            s.spawn(crate::joblog::inherit(|| send_total(&coll, t, &archive, &prefix, stage, progress, &done)));
        }
        let r = merge(&mut streams, target.as_mut(), &rep, &prefix, &opts.cancel);
        done.store(true, Ordering::Relaxed);
        r
    })
    .map_err(|e| stopped(e, &rep, &doing))?;
    drop(streams);
    target.finish(&rep).map_err(|e| stopped(e, &rep, &doing))?;
    let stats = rep.stats.into_inner();
    progress.event(Event::Finish { stage: stage.into(), items: stats.items, bytes: stats.bytes });
    if !found && stats.problem_count == 0 {
        return Err(Error::new(
            Kind::NoBackup,
            format!("{} is not in the backup of {}", show(&prefix), crate::dupfmt::time::to_compact(t)),
        )
        .hint("paths are relative to the backup root; dup-ls URL --time T lists the files of a time"));
    }
    Ok(stats)
}

/// An error that ended the run; a full or read-only file system
/// ([`Kind::Unwritable`]) is said once, with what was done before it.
fn stopped(e: Error, rep: &Reporter, doing: &str) -> Error {
    if e.kind != Kind::Unwritable {
        return e;
    }
    let s = rep.stats.borrow();
    let done = if doing.starts_with("restoring") { "restored" } else { "done" };
    let items = if s.items == 1 { "1 item".to_string() } else { format!("{} items", s.items) };
    let bytes = crate::progress::human_bytes(s.bytes);
    Error::new(Kind::Unwritable, format!("{doing} stopped: {}; {items} ({bytes}) {done} before it", e.message)).hint(
        "make room, or choose a writable place (volumes are staged in $TMPDIR, /tmp by default), then run again; \
         --force restores over what is there",
    )
}

/// One set as read: its volumes (in order) and the manifest's `Localdir`.
struct SetPlan {
    volumes: Vec<VolPlan>,
    localdir: Option<Vec<u8>>,
    /// Volumes on the backend that the manifest does not list (not read).
    unlisted: Vec<String>,
}

/// Sends the `total` of a restore or verify: the items under `prefix` at
/// `t`, when the cache's indexes list them (nothing when they do not, or
/// the job ends first); their bytes are not known (signatures hold no sizes).
fn send_total(
    coll: &Collection,
    t: i64,
    archive: &Archive,
    prefix: &[u8],
    stage: &str,
    progress: &dyn Progress,
    done: &AtomicBool,
) {
    let Some(mut files) = Files::indexed_at(coll, t, archive) else { return };
    let (mut items, mut inside) = (0u64, false);
    loop {
        if done.load(Ordering::Relaxed) {
            return;
        }
        let Ok(next) = files.next() else { return };
        let Some(e) = next else { break };
        if index::is_within(&e.path.0, prefix) {
            inside = true;
            items += 1;
        } else if inside {
            // The tree is in order: what lies under a path is together.
            break;
        }
    }
    progress.event(Event::Total { stage: stage.into(), files: items, bytes: None });
}

/// Reads a set's manifest (the cached copy when there is a good one) and
/// chooses the volumes that may hold `prefix`.
fn plan_set(archive: &Archive, set: &BackupSet, prefix: &[u8]) -> Result<SetPlan> {
    let naming = &archive.naming;
    let mut manifest = load_manifest(archive, set, false)?;
    // Asked only when the manifest has volume blocks to choose from.
    let absent =
        !manifest.volumes.is_empty() && prefix != index::ROOT && !set.partial && indexed_absent(archive, set, prefix);
    let choose = |m: &Manifest| -> Vec<u64> {
        if m.volumes.is_empty() {
            // An old or odd manifest without volume blocks: read every volume, unchecked.
            set.volumes.keys().copied().collect()
        } else if absent {
            // The cache's index of its signature says the set has nothing there.
            Vec::new()
        } else {
            m.volumes_for(prefix)
        }
    };
    let mut numbers = choose(&manifest);
    // Only for a set with something to read: each backend manifest costs a
    // download and a key derivation.
    let mut vouched = false;
    if !numbers.is_empty()
        && let Some(m) = vouching_manifest(archive, set, prefix)
    {
        (manifest, vouched) = (m, true);
        numbers = choose(&manifest);
    }
    let mut volumes = Vec::new();
    for n in numbers {
        let info = manifest.volumes.get(&n);
        let hash = info.and_then(|v| v.best_hash()).map(|(k, v)| (k.to_string(), v.to_ascii_lowercase()));
        let range = info.map(|v| (v.start.clone(), v.end.clone()));
        match set.volumes.get(&n) {
            Some(name) => {
                let encrypted = naming.parse(name).is_some_and(|f| f.encrypted());
                volumes.push(VolPlan { name: name.clone(), hash, missing: false, encrypted, range, vouched });
            }
            None => {
                let kind = if set.kind == crate::dupfmt::collection::SetKind::Full {
                    FileKind::FullVolume(n)
                } else {
                    FileKind::IncVolume(n)
                };
                let name = naming.name(kind, set.start_time, set.end_time, set.suffix(), false);
                volumes.push(VolPlan { name, hash, missing: true, encrypted: set.encrypted, range, vouched });
            }
        }
    }
    let unlisted = if manifest.volumes.is_empty() {
        Vec::new()
    } else {
        set.volumes.iter().filter(|(n, _)| !manifest.volumes.contains_key(n)).map(|(_, name)| name.clone()).collect()
    };
    Ok(SetPlan { volumes, localdir: manifest.localdir, unlisted })
}

/// Whether the cache's index of the set's signature (when there is a
/// sound one) says the set holds no entry at `prefix` or under it: its
/// volumes then have none either, and need not be fetched.
fn indexed_absent(archive: &Archive, set: &BackupSet, prefix: &[u8]) -> bool {
    use crate::io::cache::index::{Index, Unusable, sig_of_set};
    let kind = if set.kind == crate::dupfmt::collection::SetKind::Full {
        FileKind::FullManifest
    } else {
        FileKind::IncManifest
    };
    let mut f = FileName::new(kind, set.start_time, set.end_time, Suffix::None);
    f.short = archive.naming.options().short;
    let sig = sig_of_set(&archive.naming, &f);
    let holds = match Index::open(&archive.cache, &sig) {
        Ok(ix) => ix.holds(prefix).map_err(|e| e.message),
        Err(Unusable::Missing) => return false,
        Err(Unusable::Damaged(m)) => Err(m),
    };
    match holds {
        Ok(h) => !h,
        Err(m) => {
            note!(
                log::Level::Warn,
                "{m}; reading the set's volumes that may hold {} (dup-sync rebuilds it)",
                show(prefix)
            );
            false
        }
    }
}

/// The plaintext a whole restore reads by seek tables for the backend's
/// manifest to be worth fetching: its key derivation (~70 ms here) costs
/// what the MDC's SHA-1 with collision detection does on ~25 MB.
const VOUCH_WHOLE: u64 = 32 << 20;

/// For an encrypted set: the backend's manifest, read through its
/// integrity check, whose volume hashes can then vouch for the volumes
/// (see [`sets::VolPlan::vouched`]); the cache's plain copy cannot. `None`
/// when it does not apply or cannot be read (the volumes are then checked
/// by their own MDC). A whole restore gains only with the volumes' seek
/// tables (read without the MDC), so it asks only when the cache's tables
/// say the set holds [`VOUCH_WHOLE`] or more.
fn vouching_manifest(archive: &Archive, set: &BackupSet, prefix: &[u8]) -> Option<Manifest> {
    let name = set.manifest.as_deref()?;
    let sealed = archive.naming.parse(name).is_some_and(|f| f.encrypted());
    if set.partial || !sealed || archive.keys.as_ref().is_none_or(|k| k.signs()) {
        return None;
    }
    let tabled = || set.volumes.values().filter_map(|v| SeekTable::stated_size(&archive.cache, v)).sum::<u64>();
    if prefix == index::ROOT && tabled() < VOUCH_WHOLE {
        return None;
    }
    backend_manifest(archive, name, false)
        .inspect_err(|e| note!(log::Level::Info, "{}; checking the volumes by their own MDC", e.message))
        .ok()
}

/// The manifest of a set: the cache's copy, else the backend's; the file
/// list is kept only when `files` (see [`Manifest::read`]).
pub(crate) fn load_manifest(archive: &Archive, set: &BackupSet, files: bool) -> Result<Manifest> {
    if let Some(local) = &set.local_manifest {
        let read = archive.cache.open_file(local).and_then(|f| {
            Manifest::read(io::BufReader::new(f), files).map_err(|e| e.context(format!("the cached {local}")))
        });
        match read {
            Ok(m) => return Ok(m),
            Err(e) if set.partial => return Err(e),
            Err(e) => note!(log::Level::Warn, "{}; reading the backend's copy", e.message),
        }
    }
    let name = set.manifest.as_deref().ok_or_else(|| Error::corrupt("a backup set without a manifest"))?;
    backend_manifest(archive, name, files)
}

/// The backend's copy of a manifest, decrypted (and checked) as its name says.
fn backend_manifest(archive: &Archive, name: &str, files: bool) -> Result<Manifest> {
    let plain = archive.plaintext(name, archive.storage.reader(name)?)?;
    let mut r = io::BufReader::new(plain);
    let m = Manifest::read(&mut r, files);
    // Read to its end: an OpenPGP manifest's MDC and signature come last,
    // and their failure is the one to report.
    io::copy(&mut r, &mut io::sink())
        .map_err(|e| crate::error::carried(e).unwrap_or_else(|e| Error::corrupt(format!("{name}: reading: {e}"))))?;
    m.map_err(|e| e.context(name))
}

/// `index` relative to `prefix` (which it lies within).
fn relative(index: &[u8], prefix: &[u8]) -> Vec<u8> {
    let skip = index::components(prefix).count();
    let rest: Vec<&[u8]> = index::components(index).skip(skip).collect();
    if rest.is_empty() { index::ROOT.to_vec() } else { rest.join(&b'/') }
}

/// Merges the sets' streams by index and hands each item to `target`.
/// Returns whether any item was present at the time.
fn merge(
    streams: &mut [SetStream],
    target: &mut dyn Target,
    rep: &Reporter,
    prefix: &[u8],
    cancel: &crate::cancel::Cancel,
) -> Result<bool> {
    let mut found = false;
    loop {
        cancel.check()?;
        for s in streams.iter_mut() {
            s.fill(rep);
        }
        if let Some(e) = rep.take_stop() {
            return Err(e);
        }
        let Some(x) = streams
            .iter()
            .filter_map(|s| s.head.as_ref().map(|h| &h.entry.path.0))
            .min_by(|a, b| index::cmp(a, b))
            .cloned()
        else {
            return Ok(found);
        };
        let group: Vec<usize> = (0..streams.len())
            .filter(|&i| streams[i].head.as_ref().is_some_and(|h| index::cmp(&h.entry.path, &x).is_eq()))
            .collect();
        let r = resolve(streams, &group, target, rep, prefix);
        for &i in &group {
            streams[i].drain(rep);
            streams[i].head = None;
        }
        if let Some(e) = rep.take_stop() {
            return Err(e);
        }
        if r? {
            found = true;
        }
    }
}

/// Works out one path from its entries in `group` (oldest set first) and
/// hands the result to `target`. Returns whether the item is present.
fn resolve(
    streams: &mut [SetStream],
    group: &[usize],
    target: &mut dyn Target,
    rep: &Reporter,
    prefix: &[u8],
) -> Result<bool> {
    let head = |i: usize| streams[i].head.as_ref().expect("grouped streams have a head");
    let path = head(group[0]).entry.path.0.clone();
    let Some(j) = group.iter().rposition(|&i| head(i).kind != EntryType::Diff) else {
        rep.problem(
            Kind::Corrupt,
            format!(
                "{}: not restored: only deltas remain, the version they apply to is missing \
                 (was it in a damaged volume?)",
                show(&path)
            ),
        );
        return Ok(false);
    };
    let base = head(group[j]);
    let newest = head(*group.last().expect("a group is never empty"));
    let has_diffs = j + 1 < group.len();
    if base.kind == EntryType::Deleted {
        if has_diffs {
            rep.problem(Kind::Corrupt, format!("{}: not restored: a delta follows its deletion", show(&path)));
        }
        return Ok(false);
    }
    if has_diffs && base.entry.ftype != FileType::File {
        rep.problem(
            Kind::Corrupt,
            format!("{}: not restored: a delta follows a {} snapshot", show(&path), base.entry.ftype.name()),
        );
        return Ok(false);
    }
    let mut entry = newest.entry.clone();
    entry.ftype = base.entry.ftype;
    entry.path = PathBytes(relative(&path, prefix));
    let base_size = base.size;
    rep.begin_item(group.iter().map(|&i| head(i).vol));
    let content = if entry.ftype == FileType::File {
        let members = &group[j..];
        let mut readers =
            streams.iter_mut().enumerate().filter(|(i, _)| members.contains(i)).map(|(_, s)| s.content(rep));
        let base = readers.next().expect("the base is a member");
        Some(Content { base, base_size, diffs: readers.collect() })
    } else {
        None
    };
    target.item(entry, content, rep)?;
    Ok(true)
}

/// Copies `r` to `w` in whole pieces; used for content. The buffer starts
/// small and grows while reads fill it: most files are small, and a
/// buffer of 256 KiB each is a mapping made and unmapped per file.
pub(crate) fn copy(r: &mut dyn Read, w: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 16 << 10];
    let mut n = 0u64;
    loop {
        let got = match r.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..got])?;
        n += got as u64;
        if got == buf.len() && buf.len() < 256 << 10 {
            buf.resize(buf.len() * 4, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative(b"a/b/c", b"a"), b"b/c");
        assert_eq!(relative(b"a", b"a"), b".");
        assert_eq!(relative(b"a/b", b"."), b"a/b");
        assert_eq!(relative(b".", b"."), b".");
    }

    #[test]
    fn stats_error_kinds() {
        let mut s = Stats::default();
        assert!(s.error().is_none());
        s.problem_count = 2;
        s.problems.push(Problem { kind: Kind::Other, message: "x: permission denied".into() });
        assert_eq!(s.error().unwrap().kind, Kind::Other);
        s.problems.push(Problem { kind: Kind::Corrupt, message: "vol2: SHA1 mismatch".into() });
        let e = s.error().unwrap();
        assert_eq!(e.kind, Kind::Corrupt);
        assert!(e.message.contains("2 problems"), "{}", e.message);
    }
}
