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
//! size and SHA1 (and an encrypted file's plaintext BLAKE3) in a journal
//! in the archive's cache ([journal](crate::io::cache::journal); removed
//! when it lists nothing). A volume or signature whose name is on the
//! backend with the size and SHA1 the journal gives, both equal to this
//! run's, is not sent again; so rerunning an interrupted upload on the same
//! stream sends only what is missing. A backup packed again with `dup-pack
//! --resume` sends `stored` records for what it found unchanged, which are
//! checked against the backend and the journal. Without a cache there is
//! no journal and everything is sent.
//!
//! Failure: if the input breaks before a set's manifest, the files this run
//! stored since the last manifest are removed again, leaving the backend as
//! this run found it (files an earlier interrupted run left, which this run
//! skipped, stay for the next resume). If the backend fails (after its
//! retries), what this run stored is kept, being journaled, for the next run
//! to resume from; `dup-ls --cleanup` selects it for removal otherwise.

mod feed;
mod upload;

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::mpsc::sync_channel;
use std::sync::{Condvar, Mutex, OnceLock};

use self::feed::Feed;
use self::upload::{Job, Put, State};
use crate::dupfmt::names::{FileName, Naming};
use crate::error::Result;
use crate::io::cache::Cache;
use crate::io::cache::journal::Journal;
use crate::io::storage::Storage;
use crate::joblog::note;
use crate::progress::Progress;
use crate::record::{Reader, StreamKind};

/// Uploads in flight at once, by default.
pub const DEFAULT_CONCURRENCY: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Uploads in flight at once (at least 1).
    pub concurrency: usize,
    /// Stops the run between files ([`crate::Kind::Interrupted`]), keeping
    /// what it stored for the next run to resume; also once the input
    /// breaks after it was set (the stages before were cancelled too).
    pub cancel: crate::cancel::Cancel,
}

impl Default for Options {
    fn default() -> Self {
        Options { concurrency: DEFAULT_CONCURRENCY, cancel: crate::cancel::Cancel::default() }
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
    let mut feed = Feed {
        put: &put,
        remote: None,
        cancel: &opts.cancel,
        published: Vec::new(),
        handled: HashMap::new(),
        sizes: HashMap::new(),
        backend_failed: false,
        plain_manifest: None,
        conflict: None,
    };
    let (tx, rx) = sync_channel::<Job>(0);
    let rx = Mutex::new(rx);
    let result = std::thread::scope(|s| {
        for _ in 0..opts.concurrency.max(1) {
            s.spawn(crate::joblog::inherit(|| put.work(&rx)));
        }
        let r = feed.each(input, &tx).and_then(|()| put.wait_idle());
        drop(tx);
        // An input error leaves uploads in flight: let them end first.
        let idle = put.wait_idle();
        r.and(idle)
    });
    // The backend failed if an upload or a call of the reading thread did.
    let backend_failed = feed.backend_failed;
    let conflict = feed.conflict.take();
    let journaled = put.journal.get().is_some();
    let state = put.state.into_inner().unwrap_or_else(|p| p.into_inner());
    let Err(e) = result else {
        if !state.unpublished.is_empty() {
            note!(
                log::Level::Warn,
                "{} files were stored without a manifest after them: {}",
                state.unpublished.len(),
                state.unpublished.join(" ")
            );
        }
        return Ok(state.stats);
    };
    if let Some(c) = conflict {
        refused(storage, cache, naming, put.journal.get(), &c, &state.unpublished);
        return Err(e);
    }
    if state.unpublished.is_empty() {
        return Err(e);
    }
    if journaled && (state.worker_failed || backend_failed || opts.cancel.is_cancelled()) {
        note!(
            log::Level::Warn,
            "keeping the {} files this run stored for a set it did not finish: the same backup run again resumes \
             from them (`dup-ls --cleanup URL | dup-put URL` removes them)",
            state.unpublished.len()
        );
    } else {
        note!(
            log::Level::Warn,
            "removing the {} files this run stored for a set it did not finish",
            state.unpublished.len()
        );
        let mut gone = Vec::new();
        for name in state.unpublished.iter().rev() {
            match storage.delete(name) {
                Ok(()) => gone.push(name.as_str()),
                Err(d) => note!(log::Level::Warn, "{}", d.message),
            }
        }
        if let (Some(j), Some(c)) = (put.journal.get(), cache)
            && let Err(d) = j.forget(c, |n| gone.contains(&n))
        {
            note!(log::Level::Warn, "{}", d.message);
        }
    }
    Err(e)
}

/// Another run published on the same chain while this one was storing a
/// set (see `Feed::check_no_other_run`).
struct Conflict {
    /// The set this run did not publish.
    set: FileName,
    /// Its files' names are this run's alone (another set was published
    /// from the same basis): they are removed. Otherwise another run
    /// stored files of the same name, which are left to it.
    ours_alone: bool,
}

/// After a [`Conflict`]: the set's files this run stored are removed when
/// the names are its alone, else left; the journal forgets the set (it is
/// not to be resumed) and the cache loses this run's copies of its
/// manifest and signature (`dup-sync` fetches what was published).
fn refused(
    storage: &Storage,
    cache: Option<&Cache>,
    naming: &Naming,
    journal: Option<&Journal>,
    c: &Conflict,
    unpublished: &[String],
) {
    let in_set = |n: &str| naming.parse(n).is_some_and(|o| o.same_set(&c.set));
    if c.ours_alone {
        note!(
            log::Level::Warn,
            "removing the {} files this run stored for the set it did not publish",
            unpublished.len()
        );
        for name in unpublished.iter().rev() {
            if let Err(d) = storage.delete(name) {
                note!(log::Level::Warn, "{}", d.message);
            }
        }
    } else if !unpublished.is_empty() {
        note!(
            log::Level::Warn,
            "leaving the {} files this run stored under the names of the other run's set: {}",
            unpublished.len(),
            unpublished.join(" ")
        );
    }
    let Some(cache) = cache else { return };
    if let Some(j) = journal
        && let Err(d) = j.forget(cache, in_set)
    {
        note!(log::Level::Warn, "{}", d.message);
    }
    for name in cache.list().unwrap_or_default().into_iter().filter(|n| in_set(n)) {
        if let Err(d) = cache.remove(&name) {
            note!(log::Level::Warn, "{}", d.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sha1::{Digest, Sha1};

    use super::*;
    use crate::dupfmt::manifest::{Manifest, VolumeInfo};
    use crate::dupfmt::names::{FileKind, Suffix};
    use crate::io::cache::journal::{JOURNAL, journaled};
    use crate::progress::{Event, Silent};
    use crate::record::{Encoding, FileRole, Record, Stored, Writer};

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
        run_with(&mut r, &s.storage, Some(&s.cache), &s.naming, &Silent, &Options { concurrency, ..Options::default() })
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
        let st = run_with(
            &mut r,
            &s.storage,
            Some(&s.cache),
            &s.naming,
            &progress,
            &Options { concurrency: 3, ..Options::default() },
        )
        .unwrap();
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
