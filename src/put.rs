//! dup-put: store the archive files of a `files` stream on a backend, in
//! stream order (dup-pack sends the manifest last), keeping the local cache
//! in duplicity's form; or delete files.
//!
//! A set is published by its manifest: before storing one, every volume it
//! lists must be on the backend. If the stream breaks before its manifest,
//! the files this run stored are removed again, so no half-written set is
//! left behind.

use std::io::{self, BufRead, Read};

use flate2::Compression;
use flate2::read::GzEncoder;

use crate::cache::Cache;
use crate::dupfmt::manifest::Manifest;
use crate::dupfmt::names::{FileKind, FileName, Naming, Suffix};
use crate::error::{Error, Result};
use crate::progress::{Event, Progress};
use crate::record::{FileRole, Reader, Record, StreamKind, content_error};
use crate::spool::Spool;
use crate::storage::Storage;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub stored: u64,
    pub bytes: u64,
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

struct Put<'a> {
    storage: &'a Storage,
    cache: Option<&'a Cache>,
    naming: &'a Naming,
    progress: &'a dyn Progress,
    /// Stored by this run and not yet published by a manifest.
    unpublished: Vec<String>,
    stats: Stats,
}

/// Runs the stream; on error, removes what this run stored after the last
/// manifest it published.
pub fn run<R: BufRead>(
    input: &mut Reader<R>,
    storage: &Storage,
    cache: Option<&Cache>,
    naming: &Naming,
    progress: &dyn Progress,
) -> Result<Stats> {
    input.expect_kind(&[StreamKind::Files])?;
    let mut put = Put { storage, cache, naming, progress, unpublished: Vec::new(), stats: Stats::default() };
    let r = put.each(input);
    if let Err(e) = r {
        if !put.unpublished.is_empty() {
            log::warn!("removing the {} files this run stored for a set it did not finish", put.unpublished.len());
            for name in put.unpublished.iter().rev() {
                if let Err(d) = storage.delete(name) {
                    log::warn!("{}", d.message);
                }
            }
        }
        return Err(e);
    }
    if !put.unpublished.is_empty() {
        log::warn!(
            "{} files were stored without a manifest after them: {}",
            put.unpublished.len(),
            put.unpublished.join(" ")
        );
    }
    Ok(put.stats)
}

impl Put<'_> {
    fn each<R: BufRead>(&mut self, input: &mut Reader<R>) -> Result<()> {
        while let Some(rec) = input.next_item()? {
            let Record::File { name, role, delete } = rec else {
                return Err(Error::stream(format!("dup-put reads file records, not {}", rec.kind_name())));
            };
            if name.contains('/') || name.starts_with('.') || name.is_empty() {
                return Err(Error::stream(format!("refusing the file name '{name}'")));
            }
            let parsed = self.naming.parse(&name).ok_or_else(|| {
                Error::stream(format!("'{name}' is not the name of a duplicity archive file"))
                    .hint("dup-put stores what dup-pack produces")
            })?;
            if delete {
                self.delete(&name, &parsed)?;
            } else {
                let mut content = input.content();
                self.store(&name, role, &parsed, &mut content)?;
                content.drain()?;
            }
        }
        Ok(())
    }

    fn delete(&mut self, name: &str, f: &FileName) -> Result<()> {
        self.storage.delete(name)?;
        if let (Some(c), Some(cn)) = (self.cache, cache_name(self.naming, f)) {
            c.remove(&cn)?;
            let mut part = FileName { suffix: Suffix::None, partial: true, ..*f };
            c.remove(&self.naming.format(&part))?;
            part.partial = false;
            c.remove(&self.naming.format(&part))?;
        }
        self.stats.deleted += 1;
        self.progress.event(Event::File { name: name.into(), bytes: 0, action: "deleted".into() });
        Ok(())
    }

    fn store(&mut self, name: &str, role: FileRole, f: &FileName, content: &mut impl Read) -> Result<()> {
        if f.encrypted() {
            return Err(Error::usage(format!("{name}: storing encrypted files is not supported by this build yet")));
        }
        let n = match role {
            FileRole::Volume => {
                if !f.is_volume() {
                    return Err(Error::stream(format!("{name} is sent as a volume but is not named like one")));
                }
                self.unpublished.push(name.to_string());
                self.storage.put(name, content)?
            }
            FileRole::Signature | FileRole::Manifest => {
                let mut spool = Spool::new();
                io::copy(content, &mut spool).map_err(|e| content_error(name, e))?;
                if role == FileRole::Manifest {
                    if !f.is_manifest() {
                        return Err(Error::stream(format!("{name} is sent as a manifest but is not named like one")));
                    }
                    self.check_volumes(name, f, &mut spool)?;
                } else if !f.is_signature() {
                    return Err(Error::stream(format!("{name} is sent as a signature but is not named like one")));
                }
                if role == FileRole::Signature {
                    self.unpublished.push(name.to_string());
                }
                let n = self.storage.put(name, spool.reader().map_err(|e| Error::io(name, e))?)?;
                if let (Some(c), Some(cn)) = (self.cache, cache_name(self.naming, f)) {
                    let r = spool.reader().map_err(|e| Error::io(name, e))?;
                    if f.is_signature() && f.suffix == Suffix::None {
                        c.write(&cn, GzEncoder::new(r, Compression::new(6)))?;
                    } else {
                        c.write(&cn, r)?;
                    }
                }
                if role == FileRole::Manifest {
                    // The set is published.
                    self.unpublished.clear();
                }
                n
            }
        };
        self.stats.stored += 1;
        self.stats.bytes += n;
        self.progress.event(Event::File { name: name.into(), bytes: n, action: "stored".into() });
        Ok(())
    }

    /// Every volume the manifest lists must be on the backend already.
    fn check_volumes(&self, name: &str, f: &FileName, spool: &mut Spool) -> Result<()> {
        let mut text = Vec::new();
        spool.reader().and_then(|mut r| r.read_to_end(&mut text)).map_err(|e| Error::io(name, e))?;
        let m = Manifest::parse(&text).map_err(|e| e.context(name))?;
        let listing = self.storage.list()?;
        let kind = |n| {
            if f.kind == FileKind::FullManifest { FileKind::FullVolume(n) } else { FileKind::IncVolume(n) }
        };
        for &n in m.volumes.keys() {
            let present = listing.iter().any(|(other, _)| {
                self.naming.parse(other).is_some_and(|o| o.kind == kind(n) && o.start == f.start && o.end == f.end)
            });
            if !present {
                return Err(Error::corrupt(format!(
                    "{name} lists volume {n}, which is not on the backend; not publishing the set"
                ))
                .hint("re-run the backup; `duplicity cleanup` or dup's cleanup removes the unfinished set"));
            }
        }
        Ok(())
    }
}
