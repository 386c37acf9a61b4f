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
//! Resume: each file stored for a set not yet published is noted with its
//! size and SHA1 (and an encrypted file's plaintext SHA-256) in a journal in
//! the archive's cache ([`JOURNAL`]; removed when it lists nothing). A
//! volume or signature whose name is on the backend with the size and SHA1
//! the journal gives, both equal to this run's, is not sent again; so
//! rerunning an interrupted upload on the same stream sends only what is
//! missing. A backup packed again with `dup-pack --resume` sends `stored`
//! records for what it found unchanged, which are checked against the
//! backend and the journal. Without a cache there is no journal and
//! everything is sent.
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
use crate::record::{FileRole, Reader, Record, Stored, StreamKind, content_error};
use crate::spool::Spool;
use crate::storage::Storage;

/// Uploads in flight at once, by default.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// The resume journal's name in the archive's cache: one line per file
/// stored, `SHA1 SIZE NAME [PLAIN]` (PLAIN: an encrypted file's plaintext
/// SHA-256, from its `file` record).
pub const JOURNAL: &str = "dup-put.journal";

/// A file the journal notes as stored for a set not yet published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journaled {
    pub name: String,
    pub size: u64,
    pub sha1: String,
    pub plain: Option<String>,
}

impl Journaled {
    fn parse(line: &str) -> Option<Journaled> {
        let mut w = line.split(' ');
        let (sha1, size, name, plain) = (w.next()?, w.next()?, w.next()?, w.next());
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if w.next().is_some() || !hex(sha1, 40) || name.is_empty() || plain.is_some_and(|p| !hex(p, 64)) {
            return None;
        }
        Some(Journaled {
            name: name.to_string(),
            size: size.parse().ok()?,
            sha1: sha1.to_string(),
            plain: plain.map(str::to_string),
        })
    }

    fn line(&self) -> String {
        match &self.plain {
            Some(p) => format!("{} {} {} {p}\n", self.sha1, self.size, self.name),
            None => format!("{} {} {}\n", self.sha1, self.size, self.name),
        }
    }
}

/// The files the cache's journal notes as stored for unpublished sets (for
/// dup-pack's `--resume`; dup-put checks each against the backend again).
pub fn journaled(cache: &Cache) -> Result<Vec<Journaled>> {
    let path = cache.path(JOURNAL);
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(t.lines().filter_map(Journaled::parse).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(path.display(), e)),
    }
}

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
    // The backend failed if an upload or a call of the reading thread did.
    let backend_failed = feed.backend_failed;
    let journaled = put.journal.get().is_some();
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
    if journaled && (state.worker_failed || backend_failed) {
        log::warn!(
            "keeping the {} files this run stored for a set it did not finish: the same backup run again resumes \
             from them (`dup-ls --cleanup URL | dup-put URL` removes them)",
            state.unpublished.len()
        );
    } else {
        log::warn!("removing the {} files this run stored for a set it did not finish", state.unpublished.len());
        let mut gone = Vec::new();
        for name in state.unpublished.iter().rev() {
            match storage.delete(name) {
                Ok(()) => gone.push(name.as_str()),
                Err(d) => log::warn!("{}", d.message),
            }
        }
        if let (Some(j), Some(c)) = (put.journal.get(), cache)
            && let Err(d) = j.forget(c, |n| gone.contains(&n))
        {
            log::warn!("{}", d.message);
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
    plain: Option<String>,
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
            j.add(Journaled { name: job.name.clone(), size: n, sha1: job.sha1, plain: job.plain })?;
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
            let Record::File { name, role, delete, plain, stored } = rec else {
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
            if let Some(s) = stored {
                if role == FileRole::Manifest || role == FileRole::Cache {
                    return Err(Error::stream(format!("{name}: only volumes and signatures are resumed")));
                }
                self.resumed(&name, &parsed, s)?;
                continue;
            }
            let named_as = match role {
                FileRole::Cache => {
                    self.cache_only(&name, &parsed, &mut input.content())?;
                    continue;
                }
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
                self.dispatch(Job { name, parsed, spool, sha1, plain }, tx)?;
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

    /// Lists the backend and opens the journal, once, before the first
    /// upload; refuses files of a set already published.
    fn before_storing(&mut self, name: &str, f: &FileName) -> Result<()> {
        if self.remote.is_none() {
            let listing = self.put.storage.list();
            let listing: HashMap<String, u64> = self.backend(listing)?.into_iter().collect();
            if let Some(cache) = self.put.cache {
                let _ = self.put.journal.set(Journal::open(cache, &listing)?);
            }
            self.remote = Some(listing);
        }
        let published = self.remote.as_ref().is_some_and(|r| {
            r.keys().any(|n| {
                self.put.naming.parse(n).is_some_and(|o| {
                    o.is_manifest() && o.kind.is_full() == f.kind.is_full() && (o.start, o.end) == (f.start, f.end)
                })
            })
        });
        if published {
            return Err(Error::other(format!(
                "{name}: its set is already published (its manifest is on the backend); not replacing its files"
            ))
            .hint("a set is stored once: pack a new backup (another --time) instead"));
        }
        Ok(())
    }

    /// A file dup-pack found already stored (`--resume`): checked against
    /// the backend and the journal, then taken as handled.
    fn resumed(&mut self, name: &str, f: &FileName, s: Stored) -> Result<()> {
        self.before_storing(name, f)?;
        let on_backend = self.remote.as_ref().and_then(|r| r.get(name)) == Some(&s.size);
        let journaled = self.put.journal.get().is_some_and(|j| j.has(name, s.size, &s.sha1));
        if !(on_backend && journaled) {
            return Err(Error::corrupt(format!(
                "{name}: dup-pack resumed it as stored ({} bytes, SHA1 {}), but the backend or the journal \
                 no longer has it so",
                s.size, s.sha1
            ))
            .hint(
                "dup-pack --resume and dup-put must use the same cache (--archive-dir, --name); with the same \
                 cache, running the backup again packs and sends the file again",
            ));
        }
        self.handled.insert(name.to_string(), s.sha1);
        let mut st = self.put.lock();
        st.stats.skipped += 1;
        st.stats.skipped_bytes += s.size;
        drop(st);
        log::info!("{name} is already on the backend ({} bytes, resumed): not sent again", s.size);
        self.put.progress.event(Event::File { name: name.to_string(), bytes: s.size, action: "skipped".into() });
        Ok(())
    }

    /// Skips a file the backend has (per the journal), or queues its upload.
    fn dispatch(&mut self, mut job: Job, tx: &SyncSender<Job>) -> Result<()> {
        self.before_storing(&job.name, &job.parsed)?;
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
        // Published: the journal no longer needs the set's files.
        if let (Some(j), Some(c)) = (self.put.journal.get(), self.put.cache) {
            let naming = self.put.naming;
            j.forget(c, |n| {
                naming
                    .parse(n)
                    .is_some_and(|o| o.kind.is_full() == f.kind.is_full() && (o.start, o.end) == (f.start, f.end))
            })?;
        }
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
        (self.spool, crate::dupfmt::hex(&self.sha1.finalize()))
    }
}

/// Files stored on the backend for sets not yet published: name → (size,
/// SHA1). The file exists only while it lists something.
struct Journal {
    path: std::path::PathBuf,
    entries: Mutex<HashMap<String, Journaled>>,
    /// Opened for appending at the first entry after each rewrite.
    file: Mutex<Option<std::fs::File>>,
}

impl Journal {
    /// Reads the journal, keeping only files the backend still has with the
    /// noted size.
    fn open(cache: &Cache, listing: &HashMap<String, u64>) -> Result<Journal> {
        let path = cache.path(JOURNAL);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        let mut entries = HashMap::new();
        for j in text.lines().filter_map(Journaled::parse) {
            if listing.get(&j.name) == Some(&j.size) {
                entries.insert(j.name.clone(), j);
            }
        }
        let j = Journal { path, entries: Mutex::new(entries), file: Mutex::new(None) };
        if j.text() != text {
            j.rewrite(cache)?;
        }
        Ok(j)
    }

    fn text(&self) -> String {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut lines: Vec<String> = entries.values().map(Journaled::line).collect();
        lines.sort();
        lines.concat()
    }

    /// Replaces the file with the entries (removes it when there are none).
    fn rewrite(&self, cache: &Cache) -> Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        *file = None;
        let text = self.text();
        if text.is_empty() { cache.remove(JOURNAL) } else { cache.write(JOURNAL, text.as_bytes()).map(|_| ()) }
    }

    fn has(&self, name: &str, size: u64, sha1: &str) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(name).is_some_and(|j| j.size == size && j.sha1 == sha1)
    }

    /// Notes a file just stored, in one write: a killed run leaves whole
    /// lines, or a last partial one that the next run drops.
    fn add(&self, j: Journaled) -> Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let line = j.line();
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).insert(j.name.clone(), j);
        let f = match &mut *file {
            Some(f) => f,
            None => file.insert(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .map_err(|e| Error::io(self.path.display(), e))?,
            ),
        };
        f.write_all(line.as_bytes()).map_err(|e| Error::io(self.path.display(), e))
    }

    /// Drops the entries `which` selects, rewriting the file if any.
    fn forget(&self, cache: &Cache, which: impl Fn(&str) -> bool) -> Result<()> {
        let before = self.entries.lock().unwrap_or_else(|p| p.into_inner()).len();
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).retain(|n, _| !which(n));
        if self.entries.lock().unwrap_or_else(|p| p.into_inner()).len() == before {
            return Ok(());
        }
        self.rewrite(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dupfmt::manifest::VolumeInfo;
    use crate::progress::Silent;
    use crate::record::{Encoding, Writer};

    const T: i64 = 1_700_000_000;

    struct Setup {
        _dir: tempfile::TempDir,
        storage: Storage,
        cache: Cache,
        naming: Naming,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&format!("file://{}", dir.path().join("arch").display())).unwrap();
        let cache = Cache::open(Some(&dir.path().join("cache")), Some("c"), "file:///x").unwrap();
        Setup { _dir: dir, storage, cache, naming: Naming::default() }
    }

    fn sha1(data: &[u8]) -> String {
        crate::dupfmt::hex(&Sha1::digest(data))
    }

    /// A full set of `n` volumes: (name, role, content) in dup-pack's order.
    fn set(naming: &Naming, n: u64, wrong_hash: bool) -> Vec<(String, FileRole, Vec<u8>)> {
        let mut files = Vec::new();
        let mut volumes = BTreeMap::new();
        for v in 1..=n {
            let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + v as u32) as u8).collect();
            let hash = if wrong_hash && v == 1 { "0".repeat(40) } else { sha1(&data) };
            volumes.insert(v, VolumeInfo::new(v, b"a", None, b"b", None, &hash));
            files.push((naming.name(FileKind::FullVolume(v), T, T, Suffix::Gzip, false), FileRole::Volume, data));
        }
        files.push((naming.name(FileKind::FullSig, T, T, Suffix::Gzip, false), FileRole::Signature, b"sig".to_vec()));
        let m = Manifest { hostname: Some("h".into()), localdir: Some(b"src".to_vec()), volumes, files: None };
        files.push((naming.name(FileKind::FullManifest, T, T, Suffix::None, false), FileRole::Manifest, m.to_bytes()));
        files
    }

    /// A files stream of `files`; without its end record unless `finish`.
    fn stream(files: &[(String, FileRole, Vec<u8>)], finish: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, Encoding::Cbor, StreamKind::Files, "test").unwrap();
        for (name, role, data) in files {
            w.write(&Record::File { name: name.clone(), role: *role, delete: false, plain: None, stored: None })
                .unwrap();
            w.write_content(&data[..]).unwrap();
        }
        if finish {
            w.finish().unwrap();
        }
        out
    }

    fn put(s: &Setup, bytes: &[u8], concurrency: usize) -> Result<Stats> {
        let mut r = Reader::new(bytes, "test").unwrap();
        run_with(&mut r, &s.storage, Some(&s.cache), &s.naming, &Silent, &Options { concurrency })
    }

    fn names(s: &Setup) -> Vec<String> {
        s.storage.list().unwrap().into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn stores_a_set_in_parallel_manifest_last() {
        let s = setup();
        let files = set(&s.naming, 5, false);
        let order = Mutex::new(Vec::new());
        let progress = |ev: Event| {
            if let Event::File { name, .. } = ev {
                order.lock().unwrap().push(name);
            }
        };
        let bytes = stream(&files, true);
        let mut r = Reader::new(&bytes[..], "test").unwrap();
        let st =
            run_with(&mut r, &s.storage, Some(&s.cache), &s.naming, &progress, &Options { concurrency: 3 }).unwrap();
        assert_eq!((st.stored, st.skipped), (7, 0));
        assert_eq!(st.bytes, files.iter().map(|f| f.2.len() as u64).sum::<u64>());
        let order = order.into_inner().unwrap();
        assert_eq!(order.last(), Some(&files[6].0), "the manifest comes last: {order:?}");
        assert_eq!(names(&s).len(), 7);
        assert!(!s.cache.path(JOURNAL).exists(), "nothing left unpublished");
        assert!(s.cache.path(&files[6].0).exists(), "the cache has the manifest");
    }

    #[test]
    fn resumes_without_sending_again() {
        let s = setup();
        let files = set(&s.naming, 4, false);
        // An interrupted run: two volumes stored, journaled, no manifest.
        let st = put(&s, &stream(&files[..2], true), 2).unwrap();
        assert_eq!(st.stored, 2);
        let journal = std::fs::read_to_string(s.cache.path(JOURNAL)).unwrap();
        assert_eq!(journal.lines().count(), 2, "{journal}");
        // A killed run's last, partial line is dropped.
        std::fs::write(s.cache.path(JOURNAL), format!("{journal}0123")).unwrap();
        let st = put(&s, &stream(&files, true), 4).unwrap();
        assert_eq!((st.skipped, st.stored), (2, 4), "{st:?}");
        assert_eq!(st.skipped_bytes, 400_000);
        assert_eq!(names(&s).len(), 6);
        assert!(!s.cache.path(JOURNAL).exists());
    }

    /// A resumed run's stream: the first `k` files as `stored` records
    /// (size and SHA1 as given), the rest with their content.
    fn resumed_stream(files: &[(String, FileRole, Vec<u8>)], k: usize, sha1s: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, Encoding::Cbor, StreamKind::Files, "test").unwrap();
        for (i, (name, role, data)) in files.iter().enumerate() {
            let stored = (i < k).then(|| Stored { size: data.len() as u64, sha1: sha1s[i].clone() });
            let plain = Some(format!("{i:064x}"));
            let is_stored = stored.is_some();
            w.write(&Record::File { name: name.clone(), role: *role, delete: false, plain, stored }).unwrap();
            if !is_stored {
                w.write_content(&data[..]).unwrap();
            }
        }
        w.finish().unwrap();
        out
    }

    #[test]
    fn stored_records_are_checked_and_count_as_skipped() {
        let s = setup();
        let files = set(&s.naming, 4, false);
        let sha1s: Vec<String> = files.iter().map(|f| sha1(&f.2)).collect();
        // An interrupted run: two volumes stored, with their plaintext ids.
        put(&s, &resumed_stream(&files[..2], 0, &sha1s), 2).unwrap();
        let journal = std::fs::read_to_string(s.cache.path(JOURNAL)).unwrap();
        let noted = journaled(&s.cache).unwrap();
        assert_eq!(noted.len(), 2, "{journal}");
        assert!(noted.iter().all(|j| j.plain.as_ref().is_some_and(|p| p.len() == 64)), "{journal}");
        // A claim the journal does not back (another SHA1) is refused.
        let mut wrong = sha1s.clone();
        wrong[1] = "0".repeat(40);
        let e = put(&s, &resumed_stream(&files, 2, &wrong), 2).unwrap_err();
        assert!(e.message.contains("resumed it as stored"), "{}", e.message);
        assert_eq!(names(&s).len(), 2, "nothing published: {:?}", names(&s));
        // The right claims: the two are not sent, the set is published.
        let st = put(&s, &resumed_stream(&files, 2, &sha1s), 2).unwrap();
        assert_eq!((st.skipped, st.stored), (2, 4), "{st:?}");
        assert_eq!(names(&s).len(), 6);
        assert!(!s.cache.path(JOURNAL).exists());
    }

    #[test]
    fn journal_lines() {
        let a = "a".repeat(40);
        let p = "b".repeat(64);
        let j = Journaled::parse(&format!("{a} 12 duplicity-full.x.vol1.difftar.gpg {p}")).unwrap();
        assert_eq!((j.size, j.plain.as_deref()), (12, Some(p.as_str())));
        assert_eq!(Journaled::parse(j.line().trim_end()), Some(j));
        assert!(Journaled::parse(&format!("{a} 12 name")).is_some_and(|j| j.plain.is_none()));
        assert!(Journaled::parse(&format!("{a} 12 name short")).is_none());
        assert!(Journaled::parse(&format!("{a} x name")).is_none());
        assert!(Journaled::parse(&format!("{a} 12")).is_none());
    }

    #[test]
    fn sends_again_a_volume_whose_content_changed() {
        let s = setup();
        let mut files = set(&s.naming, 2, false);
        put(&s, &stream(&files[..2], true), 2).unwrap();
        // Same name and size, other bytes: sent again.
        files[0].2[0] ^= 1;
        let st = put(&s, &stream(&files[..2], true), 2).unwrap();
        assert_eq!((st.skipped, st.stored), (1, 1), "{st:?}");
    }

    #[test]
    fn broken_input_removes_only_what_this_run_stored() {
        let s = setup();
        let files = set(&s.naming, 4, false);
        put(&s, &stream(&files[..2], true), 2).unwrap();
        // Volumes 1-2 skipped, 3 stored, then the input breaks.
        let e = put(&s, &stream(&files[..3], false), 2).unwrap_err();
        assert_eq!(e.kind, crate::Kind::Stream, "{}", e.message);
        assert_eq!(names(&s), vec![files[0].0.clone(), files[1].0.clone()]);
        let journal = std::fs::read_to_string(s.cache.path(JOURNAL)).unwrap();
        assert_eq!(journal.lines().count(), 2, "{journal}");
    }

    #[test]
    fn refuses_a_manifest_with_another_hash() {
        let s = setup();
        let files = set(&s.naming, 3, true);
        let e = put(&s, &stream(&files, true), 2).unwrap_err();
        assert_eq!(e.kind, crate::Kind::Corrupt, "{}", e.message);
        assert!(e.message.contains("lists 0000"), "{}", e.message);
        assert!(names(&s).is_empty(), "nothing published, this run's files removed: {:?}", names(&s));
    }

    #[test]
    fn does_not_replace_a_published_set() {
        let s = setup();
        let files = set(&s.naming, 2, false);
        put(&s, &stream(&files, true), 2).unwrap();
        let e = put(&s, &stream(&files, true), 2).unwrap_err();
        assert!(e.message.contains("already published"), "{}", e.message);
        assert_eq!(names(&s).len(), 4);
    }

    #[test]
    fn removes_volumes_the_manifest_does_not_list() {
        let s = setup();
        // An earlier run stored 3 volumes; the set packed again has 2.
        put(&s, &stream(&set(&s.naming, 3, false)[..3], true), 2).unwrap();
        let files = set(&s.naming, 2, false);
        let st = put(&s, &stream(&files, true), 2).unwrap();
        assert_eq!((st.skipped, st.stored), (2, 2));
        let mut want: Vec<String> = files.iter().map(|f| f.0.clone()).collect();
        want.sort();
        assert_eq!(names(&s), want);
    }
}
