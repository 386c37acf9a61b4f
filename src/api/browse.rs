//! Looking at an archive without restoring: its sets ([`snapshots`]), the
//! files of a time ([`files_at`]), what a set changed ([`changes`]) and
//! when a path changed ([`file_history`]).

use std::collections::HashMap;

use super::{ArchiveOptions, job};
use crate::archive::Archive;
use crate::cancel::Cancel;
use crate::dupfmt::collection::BackupSet;
use crate::dupfmt::index;
use crate::dupfmt::manifest;
use crate::error::{Error, Kind, Result};
use crate::joblog::note;
use crate::progress::Progress;
use crate::record::{Entry, PathBytes, SetInfo};
use crate::stage::ls::files::Files;
use crate::stage::ls::status;
use crate::stage::{get, sync};

/// One backup set: its place in the archive (chain, status, times,
/// volumes, encryption, files) and the bytes it takes on the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// As `dup-ls` lists it; `info.end` is the set's time, the one to pass
    /// to [`files_at`], [`restore`](super::restore) and [`changes`].
    pub info: SetInfo,
    /// The bytes of `info.files` on the backend (manifest and volumes; the
    /// signatures belong to the signature chain).
    pub size: u64,
}

/// The archive's backup sets (collection status): chains oldest first, each
/// full then its incrementals; then orphaned and incomplete sets.
///
/// ```no_run
/// use dup::api::{self, ArchiveOptions, Cancel, Silent};
/// for s in api::snapshots(&ArchiveOptions::new("file:///mnt/backup"), &Silent, &Cancel::new())? {
///     println!("{:?} {} {} bytes encrypted={}", s.info.set_type, s.info.end, s.size, s.info.encrypted);
/// }
/// # Ok::<(), dup::Error>(())
/// ```
pub fn snapshots(archive: &ArchiveOptions, progress: &dyn Progress, cancel: &Cancel) -> Result<Vec<Snapshot>> {
    job(progress, || {
        cancel.check()?;
        let a = archive.open()?;
        let listing = a.storage.list()?;
        let sizes: HashMap<&str, u64> = listing.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        let remote: Vec<String> = listing.iter().map(|(n, _)| n.clone()).collect();
        let coll = crate::dupfmt::collection::Collection::build(&remote, &a.cache.list()?, &a.naming)?;
        Ok(status::sets(&coll)
            .into_iter()
            .map(|info| {
                let size = info.files.iter().filter_map(|f| sizes.get(f.as_str())).sum();
                Snapshot { info, size }
            })
            .collect())
    })
}

/// Which files [`files_at`] lists.
#[derive(Debug, Clone, Default)]
pub struct FilesOptions {
    pub archive: ArchiveOptions,
    /// The time (a set's time, or any time: the set at or before it); `None`: the newest.
    pub time: Option<i64>,
    /// Only the items directly in this directory (relative to the backup
    /// root, `b"."` for the root); `None`: the whole tree.
    pub dir: Option<Vec<u8>>,
}

impl FilesOptions {
    pub fn new(archive: ArchiveOptions) -> Self {
        FilesOptions { archive, ..Default::default() }
    }
}

/// Calls `each` for every item present at the time (the whole tree, or
/// one directory's items), in duplicity's order, from the cache's index
/// or the signatures (no volume is read); returns how many. Entries carry
/// type, mode, owner, mtime and link target; not the size of a file
/// (`size` is 0: duplicity's signatures do not keep it). The cache is
/// brought up to date first, unless a backup of this process is writing
/// the archive (then the cache is read as it is).
///
/// ```no_run
/// use dup::api::{self, ArchiveOptions, Cancel, FilesOptions, Silent};
/// let mut o = FilesOptions::new(ArchiveOptions::new("file:///mnt/backup"));
/// o.dir = Some(b"Documents".to_vec());
/// api::files_at(&o, &Silent, &Cancel::new(), |e| {
///     println!("{:?} {} {} bytes", e.ftype, e.path, e.size);
///     Ok(())
/// })?;
/// # Ok::<(), dup::Error>(())
/// ```
pub fn files_at(
    opts: &FilesOptions,
    progress: &dyn Progress,
    cancel: &Cancel,
    mut each: impl FnMut(Entry) -> Result<()> + Send,
) -> Result<u64> {
    job(progress, || {
        let a = opts.archive.open()?;
        synced(&a, &opts.archive.url, progress, cancel)?;
        let coll = a.collection()?;
        let mut files = Files::at(&coll, opts.time, &a)?;
        let dir = match &opts.dir {
            Some(d) => Some(index::normalize(d).ok_or_else(|| {
                Error::usage(format!("{}: a path with '..' is never in a backup", PathBytes(d.clone())))
            })?),
            None => None,
        };
        let (mut n, mut inside) = (0, false);
        while let Some(e) = files.next()? {
            cancel.check()?;
            if let Some(d) = &dir {
                if !within(&e.path.0, d) {
                    // The tree is in order: a directory's items are together.
                    if inside {
                        break;
                    }
                    continue;
                }
                inside = true;
                if !is_child(&e.path.0, d) {
                    continue;
                }
            }
            n += 1;
            each(e)?;
        }
        if let Some(d) = dir.filter(|_| !inside) {
            return Err(Error::new(Kind::NoBackup, format!("{} is not in the backup", PathBytes(d))));
        }
        Ok(n)
    })
}

/// Whether `path` is `dir` or lies in it.
fn within(path: &[u8], dir: &[u8]) -> bool {
    dir == index::ROOT || path == dir || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
}

/// Whether `path` is directly in `dir`.
fn is_child(path: &[u8], dir: &[u8]) -> bool {
    if path == index::ROOT || path == dir {
        return false;
    }
    let rest = if dir == index::ROOT { path } else { &path[dir.len() + 1..] };
    !rest.contains(&b'/')
}

/// Brings the cache up to date, unless a job of this process that changes
/// the archive holds it (a backup keeps the cache up to date itself).
fn synced(a: &Archive, url: &str, progress: &dyn Progress, cancel: &Cancel) -> Result<()> {
    match a.cache.lock_for(&format!("a listing of {url}")) {
        Ok(_lock) => {
            sync::run(a, progress, cancel)?;
        }
        Err(e) if e.kind == Kind::Locked => note!(log::Level::Info, "{}: listing from the cache as it is", e.message),
        Err(e) => return Err(e),
    }
    Ok(())
}

/// How a regular file changed in a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// New in the set (or the set is a full).
    New,
    Changed,
    Deleted,
}

/// A regular file a set added, changed or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: PathBytes,
    pub kind: ChangeKind,
    /// The set's time.
    pub time: i64,
}

/// Which set [`changes`] lists.
#[derive(Debug, Clone, Default)]
pub struct ChangesOptions {
    pub archive: ArchiveOptions,
    /// The set's time (the newest set at or before it); `None`: the newest set.
    pub time: Option<i64>,
}

/// What one set added, changed and deleted (regular files, as duplicity's
/// `--show-changes-in-set` lists them), from the set's manifest.
///
/// ```no_run
/// use dup::api::{self, ArchiveOptions, Cancel, ChangesOptions, Silent};
/// let o = ChangesOptions { archive: ArchiveOptions::new("file:///mnt/backup"), time: None };
/// for c in api::changes(&o, &Silent, &Cancel::new())? {
///     println!("{:?} {}", c.kind, c.path);
/// }
/// # Ok::<(), dup::Error>(())
/// ```
pub fn changes(opts: &ChangesOptions, progress: &dyn Progress, cancel: &Cancel) -> Result<Vec<Change>> {
    job(progress, || {
        let a = opts.archive.open()?;
        let coll = a.collection()?;
        let t = opts.time.unwrap_or(i64::MAX);
        let chain = coll.chain_at(t)?;
        let set = chain
            .sets()
            .filter(|s| s.end_time <= t)
            .last()
            .ok_or_else(|| Error::new(Kind::NoBackup, format!("no backup set at or before {t}")))?;
        cancel.check()?;
        set_changes(&a, set)
    })
}

/// Which path [`file_history`] follows.
#[derive(Debug, Clone, Default)]
pub struct HistoryOptions {
    pub archive: ArchiveOptions,
    /// The path, relative to the backup root.
    pub path: Vec<u8>,
}

/// The sets of every chain, oldest first, that stored or deleted `path` (a
/// regular file), as duplicity's `--file-changed` lists them; empty when
/// none did.
///
/// ```no_run
/// use dup::api::{self, ArchiveOptions, Cancel, HistoryOptions, Silent};
/// let o = HistoryOptions { archive: ArchiveOptions::new("file:///mnt/backup"), path: b"notes.txt".to_vec() };
/// for c in api::file_history(&o, &Silent, &Cancel::new())? {
///     println!("{} {:?}", c.time, c.kind);
/// }
/// # Ok::<(), dup::Error>(())
/// ```
pub fn file_history(opts: &HistoryOptions, progress: &dyn Progress, cancel: &Cancel) -> Result<Vec<Change>> {
    job(progress, || {
        let path = index::normalize(&opts.path).ok_or_else(|| {
            Error::usage(format!("{}: a path with '..' is never in a backup", PathBytes(opts.path.clone())))
        })?;
        let a = opts.archive.open()?;
        let coll = a.collection()?;
        let mut out = Vec::new();
        for set in coll.chains.iter().flat_map(|c| c.sets()) {
            cancel.check()?;
            out.extend(set_changes(&a, set)?.into_iter().filter(|c| c.path.0 == path));
        }
        Ok(out)
    })
}

/// The `Filelist` of a set's manifest as changes.
fn set_changes(a: &Archive, set: &BackupSet) -> Result<Vec<Change>> {
    let m = get::load_manifest(a, set, true)?;
    let files = m.files.ok_or_else(|| {
        Error::new(Kind::NoBackup, format!("the manifest of the set of {} has no file list", set.end_time))
            .hint("sets written before duplicity 0.8 do not list their changes")
    })?;
    Ok(files
        .into_iter()
        .map(|f| Change {
            path: PathBytes(f.path),
            kind: match f.change {
                manifest::Change::New => ChangeKind::New,
                manifest::Change::Changed => ChangeKind::Changed,
                manifest::Change::Deleted => ChangeKind::Deleted,
            },
            time: set.end_time,
        })
        .collect())
}
