//! [`coalesce`]: a synthetic full backup of a chain, written from its
//! restore stream (dup-get --stream → delta → pack → put), as duplicity's
//! `replicate` writes a full.

use std::io::BufWriter;

use super::backup::{pack_options, run_pipeline};
use super::delete::carry_out;
use super::{ArchiveOptions, BackupOptions, BackupReport, DeleteReport, job};
use crate::cancel::Cancel;
use crate::dupfmt::time;
use crate::error::{Error, Result};
use crate::io::pipe::PipeWriter;
use crate::progress::{Event, Progress};
use crate::record::Encoding;
use crate::stage::ls::retention;
use crate::stage::{delta, get, sync};

/// Which chain [`coalesce`] makes a full of, and how the full is written.
#[derive(Debug, Clone)]
pub struct CoalesceOptions {
    pub archive: ArchiveOptions,
    /// The state to make a full of (the set at or before it); `None`: the
    /// newest set.
    pub time: Option<i64>,
    /// Then delete the chain the full was made of (other chains stay).
    /// Only for a chain's newest state: with a `time` before its end the
    /// chain's later sets would be lost, and the call is refused.
    pub drop_old: bool,
    /// Volume size in bytes.
    pub volsize: u64,
    pub compress: bool,
    /// Deflate level, 0-9.
    pub compress_level: u32,
}

impl CoalesceOptions {
    pub fn new(archive: ArchiveOptions) -> Self {
        let b = BackupOptions::new("", "");
        CoalesceOptions {
            archive,
            time: None,
            drop_old: false,
            volsize: b.volsize,
            compress: b.compress,
            compress_level: b.compress_level,
        }
    }
}

/// What [`coalesce`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoalesceReport {
    /// The time of the state that was made a full.
    pub from: i64,
    /// The new full set (`backup.time` is its time).
    pub backup: BackupReport,
    /// The old chains' deletion, when `drop_old`.
    pub dropped: Option<DeleteReport>,
}

/// Writes a new full backup holding exactly the state of a time (every
/// file as the chain restores it), so the chain's incrementals are no
/// longer needed to restore it; with `drop_old`, deletes that chain (the
/// others stay). The full is written like a backup: in the archive's keys, resumed
/// when interrupted, published by its manifest last. A damaged volume of
/// the chain stops it before the full is published.
///
/// ```no_run
/// use dup::api::{self, ArchiveOptions, Cancel, CoalesceOptions, Silent};
/// let mut o = CoalesceOptions::new(ArchiveOptions::new("file:///mnt/backup"));
/// o.drop_old = true;
/// let r = api::coalesce(&o, &Silent, &Cancel::new())?;
/// println!("full of {} written at {}", r.from, r.backup.time);
/// # Ok::<(), dup::Error>(())
/// ```
pub fn coalesce(opts: &CoalesceOptions, progress: &dyn Progress, cancel: &Cancel) -> Result<CoalesceReport> {
    job(progress, || {
        let a = opts.archive.open()?;
        let _lock = a.cache.lock_for(&format!("a coalesce of {}", opts.archive.url))?;
        sync::run(&a, progress, cancel)?;
        cancel.check()?;
        let coll = a.collection()?;
        let chain = coll.chain_at(opts.time.unwrap_or(i64::MAX))?;
        let from = match opts.time {
            Some(t) => {
                chain.sets().filter(|s| s.end_time <= t).map(|s| s.end_time).last().unwrap_or(chain.start_time())
            }
            None => chain.end_time(),
        };
        if opts.drop_old && from != chain.end_time() {
            return Err(Error::usage(format!(
                "a full of {} with drop_old would lose the chain's later sets (up to {}): \
                 coalesce its newest state, or keep the chain",
                time::to_compact(from),
                time::to_compact(chain.end_time())
            )));
        }
        let old_chain = chain.start_time();
        let newest = coll.chains.iter().map(|c| c.end_time()).max().unwrap_or(from);
        let b = BackupOptions {
            volsize: opts.volsize,
            compress: opts.compress,
            compress_level: opts.compress_level,
            ..BackupOptions::new("", opts.archive.url.clone())
        };
        let b = BackupOptions { archive: opts.archive.clone(), ..b };
        let mut popts = pack_options(&a, &b, None, Some(newest), cancel)?;
        // After every chain (a resumed full too): a full no newer than a set
        // would cover its time twice.
        if popts.time.is_none_or(|t| t <= newest) {
            popts.time = Some(time::now_after(Some(newest)));
        }
        let gopts = get::Options {
            url: opts.archive.url.clone(),
            time: Some(from),
            path: None,
            archive_dir: opts.archive.archive_dir.clone(),
            name: opts.archive.name.clone(),
            keys: opts.archive.keys.clone(),
            cancel: cancel.clone(),
        };
        let restored = |w: PipeWriter| -> Result<u64> {
            let mut out = BufWriter::with_capacity(256 * 1024, w);
            let stats = get::run(&gopts, get::Action::Stream { out: &mut out, encoding: Encoding::Cbor }, progress)?;
            match stats.error() {
                Some(e) => Err(e.context(format!("reading the chain's state of {}", time::to_compact(from)))),
                None => Ok(0),
            }
        };
        let dopts = delta::Options { cancel: cancel.clone(), ..delta::Options::default() };
        let (changes, packed, stored, warnings) = run_pipeline(&a, restored, None, &dopts, &popts, progress, cancel)?;
        let t = popts.time.ok_or_else(|| Error::other("the full's time"))?;
        progress.event(Event::Finish { stage: "coalesce".into(), items: changes.items, bytes: stored.bytes });
        let backup = BackupReport { full: true, time: t, warnings, changes, packed, stored };
        let dropped = if opts.drop_old {
            let plan = retention::plan_chain(&a.collection()?, old_chain);
            Some(carry_out(&a, plan, false, progress, cancel)?)
        } else {
            None
        };
        Ok(CoalesceReport { from, backup, dropped })
    })
}
