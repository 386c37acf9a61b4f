//! [`restore`] and [`verify`]: dup-get's work ([`crate::stage::get`]).

use std::path::PathBuf;

use super::{ArchiveOptions, job};
use crate::cancel::Cancel;
use crate::error::Result;
use crate::progress::Progress;
use crate::stage::get;

pub use crate::stage::get::Difference;

/// What [`restore`] writes where.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub archive: ArchiveOptions,
    /// The time to restore (a set's time, or any time: the set at or before
    /// it); `None`: the newest.
    pub time: Option<i64>,
    /// Only this path (relative to the backup root; a file or a directory);
    /// `None`: everything.
    pub path: Option<Vec<u8>>,
    /// Where to: a directory, or the file itself when `path` is a file. It
    /// must be absent or empty unless `force`.
    pub dest: PathBuf,
    /// Restore over what is at `dest`.
    pub force: bool,
    /// Use the stored numeric user and group ids, not those of the names.
    pub numeric_owner: bool,
}

/// What a restore or a verify did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The time restored (the one asked for, or now).
    pub time: i64,
    /// Sets of the chain that were read.
    pub sets: usize,
    /// Volumes fetched, and their stored bytes.
    pub volumes: u64,
    pub volume_bytes: u64,
    /// Items restored (or compared), and their content bytes.
    pub items: u64,
    pub bytes: u64,
}

impl From<&get::Stats> for RestoreReport {
    fn from(s: &get::Stats) -> Self {
        RestoreReport {
            time: s.time,
            sets: s.sets,
            volumes: s.volumes,
            volume_bytes: s.volume_bytes,
            items: s.items,
            bytes: s.bytes,
        }
    }
}

fn get_options(archive: &ArchiveOptions, time: Option<i64>, path: Option<Vec<u8>>, cancel: &Cancel) -> get::Options {
    get::Options {
        url: archive.url.clone(),
        time,
        path,
        archive_dir: archive.archive_dir.clone(),
        name: archive.name.clone(),
        keys: archive.keys.clone(),
        cancel: cancel.clone(),
    }
}

/// Restores the backup of a time, or one path of it. Every volume's hash is
/// checked before use. Anything skipped (a damaged or missing volume, an
/// item that could not be written) makes it an error ([`Kind::Corrupt`]
/// for damage) after everything else was restored; a path not in the
/// backup is [`Kind::NoBackup`].
///
/// [`Kind::Corrupt`]: crate::Kind::Corrupt
/// [`Kind::NoBackup`]: crate::Kind::NoBackup
///
/// ```no_run
/// use dup::api::{self, ArchiveOptions, Cancel, RestoreOptions, Silent};
/// let o = RestoreOptions {
///     archive: ArchiveOptions::new("file:///mnt/backup"),
///     path: Some(b"Documents/notes.txt".to_vec()),
///     dest: "/tmp/notes.txt".into(),
///     ..Default::default()
/// };
/// let r = api::restore(&o, &Silent, &Cancel::new())?;
/// println!("{} items, {} bytes", r.items, r.bytes);
/// # Ok::<(), dup::Error>(())
/// ```
pub fn restore(opts: &RestoreOptions, progress: &dyn Progress, cancel: &Cancel) -> Result<RestoreReport> {
    job(progress, || {
        let action =
            get::Action::Restore { dest: opts.dest.clone(), force: opts.force, numeric_owner: opts.numeric_owner };
        let stats = get::run(&get_options(&opts.archive, opts.time, opts.path.clone(), cancel), action, progress)?;
        match stats.error() {
            Some(e) => Err(e),
            None => Ok(RestoreReport::from(&stats)),
        }
    })
}

/// What [`verify`] compares.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub archive: ArchiveOptions,
    /// `None`: the newest.
    pub time: Option<i64>,
    /// Only this path of the backup (compared with `source` itself).
    pub path: Option<Vec<u8>>,
    /// The local tree to compare with.
    pub source: PathBuf,
    /// Compare contents too, not only metadata (duplicity's `--compare-data`).
    pub compare_data: bool,
}

/// What a verify found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub read: RestoreReport,
    /// How the backup differs from the local tree: the first
    /// [`get::MAX_PROBLEMS`] differences.
    pub differences: Vec<Difference>,
    /// All differences, including those not kept.
    pub difference_count: u64,
}

/// Compares the backup of a time with a local tree: reads every volume
/// needed (checking its hash), and lists each item that differs. Damage is
/// an error, as for [`restore`]; differences are not.
///
/// ```no_run
/// use dup::api::{self, ArchiveOptions, Cancel, Silent, VerifyOptions};
/// let o = VerifyOptions { archive: ArchiveOptions::new("file:///mnt/backup"), source: "/home/me".into(), ..Default::default() };
/// let r = api::verify(&o, &Silent, &Cancel::new())?;
/// println!("{} of {} items differ", r.difference_count, r.read.items);
/// # Ok::<(), dup::Error>(())
/// ```
pub fn verify(opts: &VerifyOptions, progress: &dyn Progress, cancel: &Cancel) -> Result<VerifyReport> {
    job(progress, || {
        let mut differences = Vec::new();
        let mut report = |d: &Difference| {
            if differences.len() < get::MAX_PROBLEMS {
                differences.push(d.clone());
            }
        };
        let action =
            get::Action::Verify { src: opts.source.clone(), compare_data: opts.compare_data, report: &mut report };
        let stats = get::run(&get_options(&opts.archive, opts.time, opts.path.clone(), cancel), action, progress)?;
        if let Some(e) = stats.error() {
            return Err(e);
        }
        Ok(VerifyReport { read: RestoreReport::from(&stats), differences, difference_count: stats.differences })
    })
}
