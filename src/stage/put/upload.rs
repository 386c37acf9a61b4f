//! The upload threads: each stores a spooled file on the backend, then its
//! cache copy, and notes it in the journal.

use std::sync::mpsc::Receiver;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use flate2::Compression;
use flate2::read::GzEncoder;

use super::Stats;
use crate::dupfmt::names::{FileName, Naming, Suffix};
use crate::error::{Error, Result};
use crate::io::cache::journal::{Journal, Journaled};
use crate::io::cache::{Cache, cache_name};
use crate::io::spool::Spool;
use crate::io::storage::Storage;
use crate::progress::{Event, Progress};

/// What the threads share.
pub(super) struct Put<'a> {
    pub(super) storage: &'a Storage,
    pub(super) cache: Option<&'a Cache>,
    pub(super) naming: &'a Naming,
    pub(super) progress: &'a dyn Progress,
    /// Set (when there is a cache) before the first upload.
    pub(super) journal: OnceLock<Journal>,
    pub(super) state: Mutex<State>,
    /// Signalled when no upload is in flight.
    pub(super) idle: Condvar,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) in_flight: usize,
    /// The first upload error, until the reading thread takes it.
    pub(super) failed: Option<Error>,
    pub(super) worker_failed: bool,
    /// Stored by this run and not yet published by a manifest.
    pub(super) unpublished: Vec<String>,
    pub(super) stats: Stats,
}

/// A spooled file for an upload thread.
pub(super) struct Job {
    pub(super) name: String,
    pub(super) parsed: FileName,
    pub(super) spool: Spool,
    pub(super) sha1: String,
    pub(super) plain: Option<String>,
}

impl Put<'_> {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An upload thread: stores jobs until the channel closes; after a
    /// failure, drops the jobs still coming.
    pub(super) fn work(&self, rx: &Mutex<Receiver<Job>>) {
        loop {
            let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                Ok(j) => j,
                Err(_) => return,
            };
            let failed = self.lock().worker_failed;
            let r = if failed { Ok(()) } else { self.upload(job) };
            let mut st = self.lock();
            if let Err(e) = r {
                st.worker_failed = true;
                if st.failed.is_none() {
                    st.failed = Some(e);
                }
            }
            st.in_flight -= 1;
            if st.in_flight == 0 {
                self.idle.notify_all();
            }
        }
    }

    /// Waits until no upload is in flight; returns the first upload error.
    pub(super) fn wait_idle(&self) -> Result<()> {
        let mut st = self.lock();
        while st.in_flight > 0 {
            st = self.idle.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.failed.take().map_or(Ok(()), Err)
    }

    pub(super) fn upload(&self, job: Job) -> Result<()> {
        let n = self.store_one(&job.name, &job.parsed, job.spool)?;
        let mut st = self.lock();
        st.unpublished.push(job.name.clone());
        st.stats.stored += 1;
        st.stats.bytes += n;
        drop(st);
        if let Some(j) = self.journal.get() {
            j.add(Journaled { name: job.name.clone(), size: n, sha1: job.sha1, plain: job.plain })?;
        }
        self.progress.event(Event::File { name: job.name, bytes: n, action: "stored".into() });
        Ok(())
    }

    /// Stores one file on the backend, then its cache copy (manifests and
    /// signatures); returns the bytes stored.
    pub(super) fn store_one(&self, name: &str, f: &FileName, mut spool: Spool) -> Result<u64> {
        match (self.cache, cache_name(self.naming, f)) {
            (Some(cache), Some(cn)) => {
                let n = self.storage.put(name, spool.reader().map_err(|e| Error::io(name, e))?)?;
                self.cache_copy(cache, &cn, f, &mut spool)?;
                Ok(n)
            }
            _ => self.storage.put_spool(name, spool),
        }
    }

    /// Writes the cache's copy of a manifest or signature.
    pub(super) fn cache_copy(&self, cache: &Cache, cache_name: &str, f: &FileName, spool: &mut Spool) -> Result<()> {
        if f.encrypted() {
            // Its plaintext copy came as a `cache` file.
            return Ok(());
        }
        let r = spool.reader().map_err(|e| Error::io(cache_name, e))?;
        if f.is_signature() && f.suffix == Suffix::None {
            cache.write(cache_name, GzEncoder::new(r, Compression::new(6)))?;
        } else {
            cache.write(cache_name, r)?;
        }
        Ok(())
    }

    /// Deletes one file from the backend, and its copies from the cache.
    pub(super) fn delete_one(&self, name: &str, f: &FileName) -> Result<()> {
        self.storage.delete(name)?;
        if let Some(c) = self.cache.filter(|_| f.is_volume()) {
            c.remove(&crate::io::cache::seek::seek_name(name))?;
        }
        if let (Some(c), Some(cn)) = (self.cache, cache_name(self.naming, f)) {
            c.remove(&cn)?;
            if f.is_signature() {
                c.remove(&crate::io::cache::index::index_name(&cn))?;
            }
            let mut part = FileName { suffix: Suffix::None, partial: true, ..*f };
            c.remove(&self.naming.format(&part))?;
            part.partial = false;
            c.remove(&self.naming.format(&part))?;
        }
        Ok(())
    }
}
