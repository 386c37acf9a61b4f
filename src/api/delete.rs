//! [`delete`]: duplicity's retention commands, planned as dup-ls plans them
//! ([`crate::stage::ls::retention`]) and carried out as dup-put does.

use super::{ArchiveOptions, job};
use crate::archive::Archive;
use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::joblog::note;
use crate::progress::Progress;
use crate::record::{Encoding, Reader, Record, StreamKind, Writer};
use crate::stage::ls::retention;
use crate::stage::{put, sync};

pub use crate::stage::ls::retention::Policy;

/// What [`delete`] removes.
#[derive(Debug, Clone)]
pub struct DeleteOptions {
    pub archive: ArchiveOptions,
    pub policy: Policy,
    /// Only say what would go (duplicity without `--force`).
    pub dry_run: bool,
}

/// What [`delete`] removed (or, for a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteReport {
    /// The backend's files, in the order they go (each set's manifest
    /// first, so an interruption leaves no set that looks whole).
    pub files: Vec<String>,
    /// What was kept and why, or that there was nothing to delete.
    pub notes: Vec<String>,
    /// Files deleted (0 for a dry run).
    pub deleted: u64,
}

/// Deletes old backups as duplicity's `remove-older-than`,
/// `remove-all-but-n-full`, `remove-all-inc-of-but-n-full` and `cleanup` do
/// (never the newest chain, never a set a kept set depends on), from the
/// backend and the cache. The cache is brought up to date first.
///
/// ```no_run
/// use dup::api::{self, ArchiveOptions, Cancel, DeleteOptions, Policy, Silent};
/// let mut o = DeleteOptions::new(ArchiveOptions::new("file:///mnt/backup"), Policy::AllButNFull(2));
/// o.dry_run = true;
/// let plan = api::delete(&o, &Silent, &Cancel::new())?;
/// println!("would delete {:?}", plan.files);
/// # Ok::<(), dup::Error>(())
/// ```
pub fn delete(opts: &DeleteOptions, progress: &dyn Progress, cancel: &Cancel) -> Result<DeleteReport> {
    if matches!(opts.policy, Policy::AllButNFull(0) | Policy::AllIncOfButNFull(0)) {
        return Err(Error::usage("remove-all-but-n-full and remove-all-inc-of-but-n-full: N must be at least 1"));
    }
    job(progress, || {
        let a = opts.archive.open()?;
        let _lock = a.cache.lock_for(&format!("a deletion in {}", opts.archive.url))?;
        sync::run(&a, progress, cancel)?;
        cancel.check()?;
        delete_here(&a, opts.policy, opts.dry_run, progress, cancel)
    })
}

/// The deletions `policy` calls for in `a` (locked, its cache up to date),
/// carried out unless `dry_run`.
pub(super) fn delete_here(
    a: &Archive,
    policy: Policy,
    dry_run: bool,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<DeleteReport> {
    carry_out(a, retention::plan(&a.collection()?, policy), dry_run, progress, cancel)
}

/// Carries out a deletion plan (unless `dry_run`) in `a`, locked.
pub(super) fn carry_out(
    a: &Archive,
    plan: retention::Plan,
    dry_run: bool,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<DeleteReport> {
    for n in &plan.notes {
        note!(log::Level::Info, "{n}");
    }
    let files: Vec<String> = plan
        .deletes
        .iter()
        .filter_map(|r| match r {
            Record::File { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    let mut report = DeleteReport { files, notes: plan.notes, deleted: 0 };
    if dry_run || plan.deletes.is_empty() {
        return Ok(report);
    }
    // The plan as the files stream dup-ls hands dup-put (names only: small).
    let mut stream = Vec::new();
    let mut w = Writer::new(&mut stream, Encoding::Cbor, StreamKind::Files, "dup-ls")?;
    for r in &plan.deletes {
        w.write(r)?;
    }
    w.finish()?;
    let mut input = Reader::new(&stream[..], "the deletion plan")?;
    let popts = put::Options { cancel: cancel.clone(), ..put::Options::default() };
    let stats = put::run_with(&mut input, &a.storage, Some(&a.cache), &a.naming, progress, &popts)?;
    report.deleted = stats.deleted;
    Ok(report)
}

impl DeleteOptions {
    pub fn new(archive: ArchiveOptions, policy: Policy) -> Self {
        DeleteOptions { archive, policy, dry_run: false }
    }
}
