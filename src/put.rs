//! dup-put: store the archive files of a `files` stream on a backend, keeping
//! the local cache in duplicity's form; or delete files.
//!
//! Volumes and signatures are uploaded by a bounded pool of threads (each
//! file is spooled first, so at most `concurrency + 1` are held at once). A
//! set is published by its manifest, which is stored strictly last: only
//! once every file before it in the stream is stored, every volume it lists
//! is on the backend, and each volume this run handled has the SHA1 the
//! manifest gives for it.
//!
//! Resume: each file stored is noted with its size and SHA1 in a journal in
//! the archive's cache ([`JOURNAL`]). A volume or signature whose name is on
//! the backend with the size and SHA1 the journal gives, both equal to this
//! run's, is not sent again; so rerunning an interrupted upload (the same
//! stream, or a stream packed again byte for byte) sends only what is
//! missing. Without a cache there is no journal and everything is sent.
//!
//! Failure: if the input breaks before a set's manifest, the files this run
//! stored since the last manifest are removed again, leaving the backend as
//! this run found it (files an earlier interrupted run left, which this run
//! skipped, stay for the next resume). If the backend fails (after its
//! retries), what this run stored is kept, being journaled, for the next run
//! to resume from; `dup-ls --cleanup` selects it for removal otherwise.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use flate2::Compression;
use flate2::read::GzEncoder;
use sha1::{Digest, Sha1};

use crate::cache::Cache;
use crate::dupfmt::manifest::Manifest;
use crate::dupfmt::names::{FileKind, FileName, Naming, Suffix};
use crate::error::{Error, Result};
use crate::progress::{Event, Progress};
use crate::record::{FileRole, Reader, Record, StreamKind, content_error};
use crate::spool::Spool;
use crate::storage::Storage;

/// Uploads in flight at once, by default.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// The resume journal's name in the archive's cache: one line per file
/// stored, `SHA1 SIZE NAME`.
pub const JOURNAL: &str = "dup-put.journal";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Uploads in flight at once (at least 1).
    pub concurrency: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { concurrency: DEFAULT_CONCURRENCY }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Files sent, and their bytes.
    pub stored: u64,
    pub bytes: u64,
    /// Files already on the backend (resumed), and their bytes.
    pub skipped: u64,
    pub skipped_bytes: u64,
    pub deleted: u64,
}

/// The name a manifest or signature has in the cache: manifests plain,
/// signatures `.sigtar.gz` (FORMAT-duplicity.md §1.8).
pub fn cache_name(naming: &Naming, f: &FileName) -> Option<String> {
    let suffix = match f.kind {
        FileKind::FullManifest | FileKind::IncManifest => Suffix::None,
        FileKind::FullSig | FileKind::NewSig => Suffix::Gzip,
        _ => return None,
    };
    let mut c = *f;
    c.suffix = suffix;
    c.partial = false;
    Some(naming.format(&c))
}

/// Runs the stream with the default [`Options`].
pub fn run<R: BufRead>(
    input: &mut Reader<R>,
    storage: &Storage,
    cache: Option<&Cache>,
    naming: &Naming,
    progress: &dyn Progress,
) -> Result<Stats> {
    run_with(input, storage, cache, naming, progress, &Options::default())
}

/// Runs the stream; on error, removes or keeps what this run stored after
/// the last manifest it published (see the module's documentation).
pub fn run_with<R: BufRead>(
    input: &mut Reader<R>,
    storage: &Storage,
    cache: Option<&Cache>,
    naming: &Naming,
    progress: &dyn Progress,
    opts: &Options,
) -> Result<Stats> {
    input.expect_kind(&[StreamKind::Files])?;
    let put = Put {
        storage,
        cache,
        naming,
        progress,
        journal: OnceLock::new(),
        state: Mutex::new(State::default()),
        idle: Condvar::new(),
    };
    let mut feed =
        Feed { put: &put, remote: None, handled: HashMap::new(), backend_failed: false, plain_manifest: None };
    let (tx, rx) = sync_channel::<Job>(0);
    let rx = Mutex::new(rx);
    let result = std::thread::scope(|s| {
        for _ in 0..opts.concurrency.max(1) {
            s.spawn(|| put.work(&rx));
        }
        let r = feed.each(input, &tx).and_then(|()| put.wait_idle());
        drop(tx);
        // An input error leaves uploads in flight: let them end first.
        let idle = put.wait_idle();
        r.and(idle)
    });
    let resumable = feed.backend_failed && put.journal.get().is_some();
    let state = put.state.into_inner().unwrap_or_else(|p| p.into_inner());
    let Err(e) = result else {
        if !state.unpublished.is_empty() {
            log::warn!(
                "{} files were stored without a manifest after them: {}",
                state.unpublished.len(),
                state.unpublished.join(" ")
            );
        }
        return Ok(state.stats);
    };
    if state.unpublished.is_empty() {
        return Err(e);
    }
    if resumable || (state.worker_failed && put.journal.get().is_some()) {
        log::warn!(
            "keeping the {} files this run stored for a set it did not finish: the same backup run again resumes \
             from them (`dup-ls --cleanup URL | dup-put URL` removes them)",
            state.unpublished.len()
        );
    } else {
        log::warn!("removing the {} files this run stored for a set it did not finish", state.unpublished.len());
        for name in state.unpublished.iter().rev() {
            if let Err(d) = storage.delete(name) {
                log::warn!("{}", d.message);
            }
        }
    }
    Err(e)
}

/// What the threads share.
struct Put<'a> {
    storage: &'a Storage,
    cache: Option<&'a Cache>,
    naming: &'a Naming,
    progress: &'a dyn Progress,
    /// Set (when there is a cache) before the first upload.
    journal: OnceLock<Journal>,
    state: Mutex<State>,
    /// Signalled when no upload is in flight.
    idle: Condvar,
}

#[derive(Default)]
struct State {
    in_flight: usize,
    /// The first upload error, until the reading thread takes it.
    failed: Option<Error>,
    worker_failed: bool,
    /// Stored by this run and not yet published by a manifest.
    unpublished: Vec<String>,
    stats: Stats,
}

/// A spooled file for an upload thread.
struct Job {
    name: String,
    parsed: FileName,
    spool: Spool,
    sha1: String,
}

impl Put<'_> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An upload thread: stores jobs until the channel closes; after a
    /// failure, drops the jobs still coming.
    fn work(&self, rx: &Mutex<Receiver<Job>>) {
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
    fn wait_idle(&self) -> Result<()> {
        let mut st = self.lock();
        while st.in_flight > 0 {
            st = self.idle.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.failed.take().map_or(Ok(()), Err)
    }

    fn upload(&self, job: Job) -> Result<()> {
        let n = self.store_one(&job.name, &job.parsed, job.spool)?;
        let mut st = self.lock();
        st.unpublished.push(job.name.clone());
        st.stats.stored += 1;
        st.stats.bytes += n;
        drop(st);
        if let Some(j) = self.journal.get() {
            j.add(&job.name, n, &job.sha1)?;
        }
        self.progress.event(Event::File { name: job.name, bytes: n, action: "stored".into() });
        Ok(())
    }

    /// Stores one file on the backend, then its cache copy (manifests and
    /// signatures); returns the bytes stored.
    fn store_one(&self, name: &str, f: &FileName, mut spool: Spool) -> Result<u64> {
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
    fn cache_copy(&self, cache: &Cache, cache_name: &str, f: &FileName, spool: &mut Spool) -> Result<()> {
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
    fn delete_one(&self, name: &str, f: &FileName) -> Result<()> {
        self.storage.delete(name)?;
        if let (Some(c), Some(cn)) = (self.cache, cache_name(self.naming, f)) {
            c.remove(&cn)?;
            let mut part = FileName { suffix: Suffix::None, partial: true, ..*f };
            c.remove(&self.naming.format(&part))?;
            part.partial = false;
            c.remove(&self.naming.format(&part))?;
        }
        Ok(())
    }
}

/// The reading thread: spools each file, skips what is already stored,
/// hands the rest to the upload threads, publishes manifests.
struct Feed<'p, 'a> {
    put: &'p Put<'a>,
    /// The backend's files and sizes, listed before the first upload.
    remote: Option<HashMap<String, u64>>,
    /// SHA1 of each file stored or skipped since the last manifest.
    handled: HashMap<String, String>,
    /// The plaintext of the encrypted manifest that comes next.
    plain_manifest: Option<Vec<u8>>,
    /// A backend call of this thread failed.
    backend_failed: bool,
}

impl Feed<'_, '_> {
    fn backend<T>(&mut self, r: Result<T>) -> Result<T> {
        self.backend_failed |= r.is_err();
        r
    }

    fn each<R: BufRead>(&mut self, input: &mut Reader<R>, tx: &SyncSender<Job>) -> Result<()> {
        while let Some(rec) = input.next_item()? {
            if let Some(e) = self.put.lock().failed.take() {
                return Err(e);
            }
            let Record::File { name, role, delete } = rec else {
                return Err(Error::stream(format!("dup-put reads file records, not {}", rec.kind_name())));
            };
            if name.contains('/') || name.starts_with('.') || name.is_empty() {
                return Err(Error::stream(format!("refusing the file name '{name}'")));
            }
            let parsed = self.put.naming.parse(&name).ok_or_else(|| {
                Error::stream(format!("'{name}' is not the name of a duplicity archive file"))
                    .hint("dup-put stores what dup-pack produces")
            })?;
            if delete {
                self.put.wait_idle()?;
                let r = self.put.delete_one(&name, &parsed);
                self.backend(r)?;
                self.put.lock().stats.deleted += 1;
                self.put.progress.event(Event::File { name, bytes: 0, action: "deleted".into() });
                continue;
            }
            if role == FileRole::Cache {
                self.cache_only(&name, &parsed, &mut input.content())?;
                continue;
            }
            let named_as = match role {
                FileRole::Cache => unreachable!("handled above"),
                FileRole::Volume => parsed.is_volume(),
                FileRole::Signature => parsed.is_signature(),
                FileRole::Manifest => parsed.is_manifest(),
            };
            if !named_as {
                let role = format!("{role:?}").to_lowercase();
                return Err(Error::stream(format!("{name} is sent as a {role} but is not named like one")));
            }
            let mut sink = Hashing { spool: Spool::new(), sha1: Sha1::new() };
            io::copy(&mut input.content(), &mut sink).map_err(|e| content_error(&name, e))?;
            let (spool, sha1) = sink.finish();
            if role == FileRole::Manifest {
                self.put.wait_idle()?;
                self.publish(&name, &parsed, spool)?;
            } else {
                self.dispatch(Job { name, parsed, spool, sha1 }, tx)?;
            }
        }
        Ok(())
    }

    /// A plaintext manifest or signature for the cache only (an encrypted
    /// archive's; see [`FileRole::Cache`]).
    fn cache_only(&mut self, name: &str, f: &FileName, content: &mut impl Read) -> Result<()> {
        let expected = cache_name(self.put.naming, f);
        if expected.as_deref() != Some(name) {
            return Err(Error::stream(format!("{name} is sent for the cache but is not a cache file name")));
        }
        let mut spool = Spool::new();
        io::copy(content, &mut spool).map_err(|e| content_error(name, e))?;
        if f.is_manifest() {
            let mut text = Vec::new();
            spool.reader().and_then(|mut r| r.read_to_end(&mut text)).map_err(|e| Error::io(name, e))?;
            self.plain_manifest = Some(text);
        }
        if let Some(cache) = self.put.cache {
            cache.write(name, spool.reader().map_err(|e| Error::io(name, e))?)?;
        }
        Ok(())
    }

    /// Skips a file the backend has (per the journal), or queues its upload.
    fn dispatch(&mut self, mut job: Job, tx: &SyncSender<Job>) -> Result<()> {
        if self.remote.is_none() {
            let listing = self.put.storage.list();
            let listing: HashMap<String, u64> = self.backend(listing)?.into_iter().collect();
            if let Some(cache) = self.put.cache {
                let _ = self.put.journal.set(Journal::open(cache, &listing)?);
            }
            self.remote = Some(listing);
        }
        self.handled.insert(job.name.clone(), job.sha1.clone());
        let size = job.spool.len();
        let have = self.remote.as_ref().and_then(|r| r.get(&job.name)) == Some(&size)
            && self.put.journal.get().is_some_and(|j| j.has(&job.name, size, &job.sha1));
        if !have {
            self.put.lock().in_flight += 1;
            if tx.send(job).is_err() {
                self.put.lock().in_flight -= 1;
                return Err(Error::other("the upload threads stopped"));
            }
            return Ok(());
        }
        // Already stored by an earlier run: only the cache copy is refreshed.
        if let (Some(cache), Some(cn)) = (self.put.cache, cache_name(self.put.naming, &job.parsed)) {
            self.put.cache_copy(cache, &cn, &job.parsed, &mut job.spool)?;
        }
        let mut st = self.put.lock();
        st.stats.skipped += 1;
        st.stats.skipped_bytes += size;
        drop(st);
        log::info!("{} is already on the backend ({size} bytes, same SHA1): not sent again", job.name);
        self.put.progress.event(Event::File { name: job.name, bytes: size, action: "skipped".into() });
        Ok(())
    }

    /// Stores a manifest once the backend has every volume it lists, each
    /// volume this run handled with the listed SHA1. Volumes of the same set
    /// that it does not list (left by an earlier run) are removed first.
    fn publish(&mut self, name: &str, f: &FileName, mut spool: Spool) -> Result<()> {
        let text = if f.encrypted() {
            // Checked against its plaintext copy, sent just before it.
            self.plain_manifest.take().ok_or_else(|| {
                Error::stream(format!("{name} came without its plaintext copy for the cache"))
                    .hint("dup-put stores what dup-pack produces")
            })?
        } else {
            let mut text = Vec::new();
            spool.reader().and_then(|mut r| r.read_to_end(&mut text)).map_err(|e| Error::io(name, e))?;
            text
        };
        let m = Manifest::parse(&text).map_err(|e| e.context(name))?;
        let listing = self.put.storage.list();
        let listing = self.backend(listing)?;
        let mut set_volumes: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
        for (other, _) in &listing {
            if let Some(o) = self.put.naming.parse(other)
                && let Some(n) = o.volume()
                && o.kind.is_full() == f.kind.is_full()
                && (o.start, o.end) == (f.start, f.end)
            {
                set_volumes.entry(n).or_default().push(other);
            }
        }
        for (&n, info) in &m.volumes {
            let Some(names) = set_volumes.get(&n) else {
                return Err(Error::corrupt(format!(
                    "{name} lists volume {n}, which is not on the backend; not publishing the set"
                ))
                .hint("re-run the backup; `dup-ls --cleanup URL | dup-put URL` removes the unfinished set"));
            };
            for vol in names {
                let (Some(ours), Some(("SHA1", listed))) = (self.handled.get(*vol), info.best_hash()) else {
                    continue;
                };
                if !ours.eq_ignore_ascii_case(listed) {
                    return Err(Error::corrupt(format!(
                        "{vol} was stored with SHA1 {ours}, but {name} lists {listed}; not publishing the set"
                    ))
                    .hint("the input stream is inconsistent: pack the backup again"));
                }
            }
        }
        for (n, names) in &set_volumes {
            if !m.volumes.contains_key(n) {
                for vol in names {
                    log::info!("removing {vol}: not in {name} (left by an earlier run)");
                    let r = self.put.storage.delete(vol);
                    self.backend(r)?;
                }
            }
        }
        let stored = self.put.store_one(name, f, spool);
        let n = self.backend(stored)?;
        self.handled.clear();
        let mut st = self.put.lock();
        // The set is published.
        st.unpublished.clear();
        st.stats.stored += 1;
        st.stats.bytes += n;
        drop(st);
        self.put.progress.event(Event::File { name: name.into(), bytes: n, action: "stored".into() });
        Ok(())
    }
}

/// A spool that hashes what it is given.
struct Hashing {
    spool: Spool,
    sha1: Sha1,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.spool.write(buf)?;
        self.sha1.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Hashing {
    fn finish(self) -> (Spool, String) {
        (self.spool, self.sha1.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// What earlier runs stored on this archive's backend: name → (size, SHA1).
struct Journal {
    entries: HashMap<String, (u64, String)>,
    file: Mutex<std::fs::File>,
}

impl Journal {
    /// Reads the journal, keeping only files the backend still has with the
    /// noted size, and opens it for appending.
    fn open(cache: &Cache, listing: &HashMap<String, u64>) -> Result<Journal> {
        let path = cache.path(JOURNAL);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        let mut entries = HashMap::new();
        for line in text.lines() {
            let mut w = line.split(' ');
            if let (Some(sha1), Some(size), Some(name), None) = (w.next(), w.next(), w.next(), w.next())
                && sha1.len() == 40
                && sha1.bytes().all(|b| b.is_ascii_hexdigit())
                && let Ok(size) = size.parse::<u64>()
                && listing.get(name) == Some(&size)
            {
                entries.insert(name.to_string(), (size, sha1.to_string()));
            }
        }
        let mut kept: Vec<String> = entries.iter().map(|(n, (s, h))| format!("{h} {s} {n}\n")).collect();
        kept.sort();
        if kept.concat() != text {
            cache.write(JOURNAL, kept.concat().as_bytes())?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(path.display(), e))?;
        Ok(Journal { entries, file: Mutex::new(file) })
    }

    fn has(&self, name: &str, size: u64, sha1: &str) -> bool {
        self.entries.get(name).is_some_and(|(s, h)| *s == size && h == sha1)
    }

    /// Notes a file just stored (one write, so a killed run leaves whole
    /// lines, or a last partial one that the next run drops).
    fn add(&self, name: &str, size: u64, sha1: &str) -> Result<()> {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(format!("{sha1} {size} {name}\n").as_bytes()).map_err(|e| Error::io(JOURNAL, e))
    }
}
