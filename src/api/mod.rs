//! **The** library surface for front ends (a GUI, a Python binding): each
//! verb a function over owned, typed options returning a typed result,
//! reporting through a [`Progress`] sink and stopping at a [`Cancel`] token.
//!
//! | verb | what |
//! |---|---|
//! | [`backup`] | full, incremental or whichever applies; resumes an interrupted set |
//! | [`snapshots`] | the archive's sets: chains, times, volumes, sizes, encryption |
//! | [`files_at`] | the files of a time, the whole tree or one directory |
//! | [`changes`], [`file_history`] | what a set changed; the sets that changed a path |
//! | [`restore`] | all or one path, at a time |
//! | [`verify`] | compare a backup with a local tree |
//! | [`delete`] | duplicity's remove-older-than, remove-all-but-n-full, remove-all-inc-of-but-n-full, cleanup; dry run |
//! | [`coalesce`] | a synthetic full of the newest chain, optionally dropping the old chain |
//! | [`test_connection`] | whether the backend answers, and holds a backup |
//!
//! Nothing here is global: each call opens its own backend and cache, so
//! jobs on different archives run at once in one process; a second job on
//! an archive a job of this process is changing gets [`Kind::Locked`].
//!
//! Threads and async: each call runs its job on a thread of its own
//! (outside any tokio runtime: the backends block on one of their own) and
//! blocks until it is done; from async code run it with
//! `tokio::task::spawn_blocking` so as not to hold a worker thread. The
//! progress sink is called from the job's threads and from the calling one.
//!
//! Log: what a job has to say besides progress (backend retries, a resumed
//! set, a volume read unchecked, a file stored whole) reaches its progress
//! sink as [`Event::Log`], and the `log` crate's logger too; messages of
//! two jobs in one process do not mix.
//!
//! ```no_run
//! use dup::api::{self, BackupOptions, Cancel, FilesOptions};
//! use dup::progress::Silent;
//!
//! let opts = BackupOptions::new("/home/me", "file:///mnt/backup");
//! let report = api::backup(&opts, &Silent, &Cancel::new())?;
//! println!("{} set of {}", if report.full { "full" } else { "incremental" }, report.time);
//! for s in api::snapshots(&opts.archive, &Silent, &Cancel::new())? {
//!     println!("{} {} volumes", s.info.end, s.info.volumes);
//! }
//! let files = FilesOptions { dir: Some(b"Documents".to_vec()), ..FilesOptions::new(opts.archive.clone()) };
//! api::files_at(&files, &Silent, &Cancel::new(), |e| {
//!     println!("{}", e.path);
//!     Ok(())
//! })?;
//! # Ok::<(), dup::Error>(())
//! ```

mod backup;
mod browse;
mod coalesce;
mod delete;
mod restore;

use std::path::PathBuf;

pub use self::backup::{BackupMode, BackupOptions, BackupReport, backup, next_is_full};
pub use self::browse::{
    Change, ChangeKind, ChangesOptions, FilesOptions, HistoryOptions, Snapshot, changes, file_history, files_at,
    snapshots,
};
pub use self::coalesce::{CoalesceOptions, CoalesceReport, coalesce};
pub use self::delete::{DeleteOptions, DeleteReport, Policy, delete};
pub use self::restore::{Difference, RestoreOptions, RestoreReport, VerifyOptions, VerifyReport, restore, verify};
pub use crate::cancel::Cancel;
pub use crate::crypto::Keys;
pub use crate::error::{Error, Kind, Result};
pub use crate::io::storage::{Check, CheckStatus};
pub use crate::progress::{Event, Progress, Silent};
pub use crate::record::{Entry, FileType, PathBytes, SetInfo, SetStatus, SetType};
/// What a backup's stages did: files new, changed, deleted and read
/// ([`BackupReport::changes`]); volumes packed ([`BackupReport::packed`]);
/// files stored and resumed ([`BackupReport::stored`]).
pub use crate::stage::{delta::Stats as ChangeStats, pack::Stats as PackStats, put::Stats as StoreStats};

use crate::archive::Archive;

/// Where an archive is, where its cache lives, and its keys.
#[derive(Debug, Clone, Default)]
pub struct ArchiveOptions {
    /// Backend URL, as duplicity takes it (`file:///path`, `s3://bucket/prefix`...).
    pub url: String,
    /// Directory of the metadata caches (default `$XDG_CACHE_HOME/dup`).
    pub archive_dir: Option<PathBuf>,
    /// This archive's cache name (default: MD5 of the URL).
    pub name: Option<String>,
    /// The archive's keys, for writing and reading alike: a passphrase
    /// ([`Keys::with_passphrase`]) or public keys. `None`: not encrypted.
    pub keys: Option<Keys>,
}

impl ArchiveOptions {
    pub fn new(url: impl Into<String>) -> Self {
        ArchiveOptions { url: url.into(), ..Default::default() }
    }

    fn open(&self) -> Result<Archive> {
        Ok(Archive::open(&self.url, self.archive_dir.as_deref(), self.name.as_deref())?.with_keys(self.keys.clone()))
    }
}

/// Tests that the archive's backend answers: lists, writes, reads back and
/// deletes a probe file, without retries and within seconds; a missing
/// archive directory is not found and is not created. Says what went wrong
/// ([`Check::status`]: unreachable, authentication refused, permission
/// denied, not found) instead of failing.
///
/// ```no_run
/// use dup::api::{self, ArchiveOptions, Cancel, Silent};
/// let c = api::test_connection(&ArchiveOptions::new("s3://bucket/prefix"), &Silent, &Cancel::new())?;
/// println!("{}: {}", c.status.as_str(), c.message);
/// # Ok::<(), dup::Error>(())
/// ```
pub fn test_connection(archive: &ArchiveOptions, progress: &dyn Progress, cancel: &Cancel) -> Result<Check> {
    job(progress, || {
        cancel.check()?;
        crate::archive::test_connection(&archive.url)
    })
}

/// Runs a verb as a job ([`crate::joblog::run`]): on a thread of its own,
/// outside any tokio runtime (the backends block on their own), its
/// messages passed to `progress` as `log` events.
fn job<T: Send>(progress: &dyn Progress, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    crate::joblog::run(progress, f).unwrap_or_else(|_| Err(Error::other("the job panicked")))
}
