//! The reading thread: takes each file record, skips what is already
//! stored, hands the rest to the upload threads, and publishes each set by
//! its manifest.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, Read};
use std::sync::mpsc::SyncSender;

use super::upload::{Job, Put};
use crate::dupfmt::manifest::Manifest;
use crate::dupfmt::names::FileName;
use crate::error::{Error, Result, content_error};
use crate::io::cache::cache_name;
use crate::io::cache::journal::Journal;
use crate::io::cache::seek;
use crate::io::spool::{HashingSpool, Spool};
use crate::joblog::note;
use crate::progress::Event;
use crate::record::{FileRole, Reader, Record, Stored};

/// The reading thread: spools each file, skips what is already stored,
/// hands the rest to the upload threads, publishes manifests.
pub(super) struct Feed<'p, 'a> {
    pub(super) put: &'p Put<'a>,
    pub(super) cancel: &'p crate::cancel::Cancel,
    /// The backend's files and sizes, listed before the first upload.
    pub(super) remote: Option<HashMap<String, u64>>,
    /// The manifests in `remote`: the sets already published.
    pub(super) published: Vec<FileName>,
    /// SHA1 of each file stored or skipped since the last manifest.
    pub(super) handled: HashMap<String, String>,
    /// The plaintext of the encrypted manifest that comes next.
    pub(super) plain_manifest: Option<Spool>,
    /// A backend call of this thread failed.
    pub(super) backend_failed: bool,
    /// Size of each file stored or skipped since the last manifest.
    pub(super) sizes: HashMap<String, u64>,
    /// Set when the manifest was refused for another run's set.
    pub(super) conflict: Option<super::Conflict>,
}

impl Feed<'_, '_> {
    pub(super) fn backend<T>(&mut self, r: Result<T>) -> Result<T> {
        self.backend_failed |= r.is_err();
        r
    }

    pub(super) fn each<R: BufRead>(&mut self, input: &mut Reader<R>, tx: &SyncSender<Job>) -> Result<()> {
        while let Some(rec) = input.next_item()? {
            self.cancel.check()?;
            if let Some(e) = self.put.lock().failed.take() {
                return Err(e);
            }
            let Record::File { name, role, delete, plain, stored } = rec else {
                return Err(Error::stream(format!("dup-put reads file records, not {}", rec.kind_name())));
            };
            if name.contains('/') || name.starts_with('.') || name.is_empty() {
                return Err(Error::stream(format!("refusing the file name '{name}'")));
            }
            if role == FileRole::Cache
                && !delete
                && stored.is_none()
                && let Some(volume) = seek::seek_volume(&name)
            {
                self.seek_table(&name, volume, &mut input.content())?;
                continue;
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
            let mut sink = HashingSpool::new();
            io::copy(&mut input.content(), &mut sink).map_err(|e| content_error(&name, e))?;
            let (spool, digest) = sink.finish();
            let sha1 = crate::dupfmt::hex(&digest);
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
    pub(super) fn cache_only(&mut self, name: &str, f: &FileName, content: &mut impl Read) -> Result<()> {
        let expected = cache_name(self.put.naming, f);
        if expected.as_deref() != Some(name) {
            return Err(Error::stream(format!("{name} is sent for the cache but is not a cache file name")));
        }
        let mut spool = Spool::new();
        io::copy(content, &mut spool).map_err(|e| content_error(name, e))?;
        if let Some(cache) = self.put.cache {
            cache.write(name, spool.reader().map_err(|e| Error::io(name, e))?)?;
        }
        if f.is_manifest() {
            self.plain_manifest = Some(spool);
        }
        Ok(())
    }

    /// A volume's seek table, for the cache only (see [`seek`]).
    fn seek_table(&mut self, name: &str, volume: &str, content: &mut impl Read) -> Result<()> {
        if !self.put.naming.parse(volume).is_some_and(|f| f.is_volume()) {
            return Err(Error::stream(format!("{name} is sent as a seek table but names no volume")));
        }
        let mut spool = Spool::new();
        io::copy(content, &mut spool).map_err(|e| content_error(name, e))?;
        if let Some(cache) = self.put.cache {
            cache.write(name, spool.reader().map_err(|e| Error::io(name, e))?)?;
        }
        Ok(())
    }

    /// Lists the backend and opens the journal, once, before the first
    /// upload; refuses files of a set already published.
    pub(super) fn before_storing(&mut self, name: &str, f: &FileName) -> Result<()> {
        if self.remote.is_none() {
            let listing = self.put.storage.list();
            let listing: HashMap<String, u64> = self.backend(listing)?.into_iter().collect();
            if let Some(cache) = self.put.cache {
                let _ = self.put.journal.set(Journal::open(cache, &listing)?);
            }
            // Parsed once: every file stored is checked against them.
            self.published =
                listing.keys().filter_map(|n| self.put.naming.parse(n)).filter(|o| o.is_manifest()).collect();
            self.remote = Some(listing);
        }
        let published = self.published.iter().any(|o| o.same_set(f));
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
    pub(super) fn resumed(&mut self, name: &str, f: &FileName, s: Stored) -> Result<()> {
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
        self.sizes.insert(name.to_string(), s.size);
        let mut st = self.put.lock();
        st.stats.skipped += 1;
        st.stats.skipped_bytes += s.size;
        drop(st);
        note!(log::Level::Info, "{name} is already on the backend ({} bytes, resumed): not sent again", s.size);
        self.put.progress.event(Event::File { name: name.to_string(), bytes: s.size, action: "skipped".into() });
        Ok(())
    }

    /// Skips a file the backend has (per the journal), or queues its upload.
    pub(super) fn dispatch(&mut self, mut job: Job, tx: &SyncSender<Job>) -> Result<()> {
        self.before_storing(&job.name, &job.parsed)?;
        self.handled.insert(job.name.clone(), job.sha1.clone());
        let size = job.spool.len();
        self.sizes.insert(job.name.clone(), size);
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
        note!(log::Level::Info, "{} is already on the backend ({size} bytes, same SHA1): not sent again", job.name);
        self.put.progress.event(Event::File { name: job.name, bytes: size, action: "skipped".into() });
        Ok(())
    }

    /// Refuses to publish (`Kind::Locked`) when, since this backup's basis
    /// was read, another run (another host, or another cache) published a
    /// set of the same name or another incremental from the same basis, or
    /// replaced a file this run stored for the set (another size).
    pub(super) fn check_no_other_run(
        &mut self,
        name: &str,
        f: &FileName,
        listing: &[(&str, u64, FileName)],
    ) -> Result<()> {
        let mut found: Option<(String, bool)> = None;
        for &(other, size, o) in listing {
            if o.is_manifest() && o.same_set(f) {
                found = Some((format!("another run published {other} while this one was storing its set"), false));
                break;
            }
            if o.is_manifest() && !f.kind.is_full() && !o.kind.is_full() && o.start == f.start {
                found = Some((
                    format!(
                        "another run published {other} on the same chain since this backup's basis ({}) was read",
                        crate::dupfmt::time::to_compact(f.start)
                    ),
                    true,
                ));
            }
            if let Some(&ours) = self.sizes.get(other)
                && ours != size
                && found.is_none()
            {
                found = Some((
                    format!(
                        "{other} on the backend has {size} bytes, not the {ours} this run stored: another run is storing the same set"
                    ),
                    false,
                ));
            }
        }
        let Some((why, ours_alone)) = found else { return Ok(()) };
        self.conflict = Some(super::Conflict { set: *f, ours_alone });
        Err(Error::new(crate::Kind::Locked, format!("{why}; not publishing {name}")).hint(
            "two runs with different caches (two hosts, or two --archive-dir) backed up to this archive at once; \
             run the backup again: it starts from what was published",
        ))
    }

    /// Stores a manifest once the backend has every volume it lists, each
    /// volume this run handled with the listed SHA1. Volumes of the same set
    /// that it does not list (left by an earlier run) are removed first.
    pub(super) fn publish(&mut self, name: &str, f: &FileName, mut spool: Spool) -> Result<()> {
        let m = if f.encrypted() {
            // Checked against its plaintext copy, sent just before it.
            let mut plain = self.plain_manifest.take().ok_or_else(|| {
                Error::stream(format!("{name} came without its plaintext copy for the cache"))
                    .hint("dup-put stores what dup-pack produces")
            })?;
            read_manifest(name, &mut plain)?
        } else {
            read_manifest(name, &mut spool)?
        };
        let listing = self.put.storage.list();
        let listing = self.backend(listing)?;
        // Parsed once, for both checks.
        let parsed: Vec<(&str, u64, FileName)> =
            listing.iter().filter_map(|(n, size)| self.put.naming.parse(n).map(|o| (n.as_str(), *size, o))).collect();
        self.check_no_other_run(name, f, &parsed)?;
        let mut set_volumes: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
        for &(other, _, o) in &parsed {
            if let Some(n) = o.volume()
                && o.same_set(f)
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
                    note!(log::Level::Info, "removing {vol}: not in {name} (left by an earlier run)");
                    let r = self.put.storage.delete(vol);
                    self.backend(r)?;
                }
            }
        }
        let stored = self.put.store_one(name, f, spool);
        let n = self.backend(stored)?;
        if let Some(cache) = self.put.cache {
            crate::io::cache::index::build_for_set(cache, self.put.naming, f, Some(&m));
        }
        self.handled.clear();
        self.sizes.clear();
        // Published: the journal no longer needs the set's files.
        if let (Some(j), Some(c)) = (self.put.journal.get(), self.put.cache) {
            let naming = self.put.naming;
            j.forget(c, |n| naming.parse(n).is_some_and(|o| o.same_set(f)))?;
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

/// The volumes of a spooled manifest (its file list counted, not kept).
fn read_manifest(name: &str, spool: &mut Spool) -> Result<Manifest> {
    let r = spool.reader().map_err(|e| Error::io(name, e))?;
    Manifest::read(io::BufReader::new(r), false).map_err(|e| e.context(name))
}
