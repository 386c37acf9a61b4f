//! dup-sync: make the local metadata cache agree with the backend
//! (FORMAT-duplicity.md §1.8). The remote is authoritative: manifests and
//! signatures it has and the cache lacks are copied in (manifests plain,
//! signatures as `.sigtar.gz`); cache files it no longer has are removed.

use std::collections::BTreeMap;
use std::io::{self, Read};

use flate2::Compression;
use flate2::read::GzEncoder;

use crate::archive::Archive;
use crate::cancel::Cancel;
use crate::dupfmt::manifest::Manifest;
use crate::dupfmt::names::{FileName, Naming, Suffix};
use crate::error::{Error, Result};
use crate::io::cache::{cache_file, cache_name, index, seek};
use crate::progress::{Event, Progress};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub copied: Vec<String>,
    pub removed: Vec<String>,
    /// Signatures whose index was (re)built.
    pub indexed: Vec<String>,
}

/// A metadata file's key: its name without suffix or partial marker.
fn key(naming: &Naming, f: &FileName) -> String {
    naming.format(&FileName { suffix: Suffix::None, partial: false, ..*f })
}

/// Brings `cache` into agreement with `storage`; stops at `cancel` between
/// files and within one being copied (what was copied stays: each file is
/// renamed into place whole).
pub fn run(archive: &Archive, progress: &dyn Progress, cancel: &Cancel) -> Result<Stats> {
    let (storage, cache, naming) = (&archive.storage, &archive.cache, &archive.naming);
    let mut remote: BTreeMap<String, (String, FileName)> = BTreeMap::new();
    for (name, _) in storage.list()? {
        if let Some(f) = naming.parse(&name)
            && (f.is_manifest() || f.is_signature())
            && !f.partial
        {
            remote.insert(key(naming, &f), (name, f));
        }
    }
    let mut stats = Stats::default();
    let mut local_keys = BTreeMap::new();
    // What the cache holds in the end, parsed once: kept and copied files.
    let mut cached: BTreeMap<String, FileName> = BTreeMap::new();
    for name in cache.list()? {
        let Some(f) = naming.parse(&name) else { continue };
        let k = key(naming, &f);
        let expected = cache_name(naming, &f);
        if !remote.contains_key(&k) || f.partial || expected.as_deref() != Some(name.as_str()) {
            cache.remove(&name)?;
            stats.removed.push(name);
        } else {
            local_keys.insert(k, name.clone());
            cached.insert(name, f);
        }
    }
    for (k, (name, f)) in &remote {
        if local_keys.contains_key(k) {
            continue;
        }
        let Some(cf) = cache_file(f) else { continue };
        cancel.check()?;
        let cn = naming.format(&cf);
        let r = archive.plaintext(name, storage.reader(name)?)?;
        let n = if f.is_signature() {
            // The cache always holds gzip; re-compress whatever the remote form.
            cache.write(&cn, GzEncoder::new(Checked(r, name, cancel), Compression::new(6)))?
        } else {
            cache.write(&cn, Checked(r, name, cancel))?
        };
        progress.event(Event::File { name: name.clone(), bytes: n, action: "cached".into() });
        stats.copied.push(name.clone());
        cached.insert(cn, cf);
    }
    reindex(archive, &cached, &mut stats, cancel)?;
    Ok(stats)
}

/// Removes the indexes of signatures the cache no longer holds, and
/// (re)builds those missing, damaged or made from another copy of their
/// signature (see [`index`]); a signature that cannot be indexed is only a
/// warning.
fn reindex(archive: &Archive, cached: &BTreeMap<String, FileName>, stats: &mut Stats, cancel: &Cancel) -> Result<()> {
    let (cache, naming) = (&archive.cache, &archive.naming);
    let names = cache.list()?;
    let cached_name = |n: &str| names.binary_search_by(|c| c.as_str().cmp(n)).is_ok();
    for name in &names {
        let orphan = match (index::indexed_sig(name), seek::seek_volume(name)) {
            (Some(sig), _) => !cached_name(sig),
            // A volume's table goes with its set's manifest.
            (_, Some(volume)) => naming.parse(volume).is_none_or(|f| !cached_name(&naming.format(&f.set_manifest()))),
            _ => false,
        };
        if orphan {
            cache.remove(name)?;
            stats.removed.push(name.clone());
        }
    }
    for (name, &f) in cached {
        if !f.is_signature() || index::is_sound(cache, name) {
            continue;
        }
        cancel.check()?;
        let set_manifest = f.set_manifest();
        let manifest = std::fs::File::open(cache.path(&naming.format(&set_manifest)))
            .ok()
            .and_then(|f| Manifest::read(io::BufReader::new(f), false).ok());
        index::build_for_set(cache, naming, &set_manifest, manifest.as_ref());
        if index::is_sound(cache, name) {
            stats.indexed.push(name.clone());
        }
    }
    Ok(())
}

/// Turns a decompression error into one that names the file; stops at the
/// token.
struct Checked<'a, R>(R, &'a str, &'a Cancel);

impl<R: Read> Read for Checked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.2.check().map_err(io::Error::other)?;
        self.0.read(buf).map_err(|e| match crate::error::carried(e) {
            Ok(err) => io::Error::other(err),
            Err(e) => io::Error::other(Error::corrupt(format!("{}: {e}", self.1))),
        })
    }
}
