//! dup-put's resume journal in the archive's cache: each file stored for a
//! set not yet published, one line `SHA1 SIZE NAME [PLAIN]` (PLAIN: an
//! encrypted file's plaintext BLAKE3; a journal of an older dup holds a
//! SHA-256 there, which matches nothing, so its files are sent again). dup-put skips what it notes and the
//! backend still has; dup-pack's `--resume` reads it to continue a set.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Mutex;

use super::Cache;
use crate::error::{Error, Result};

/// The resume journal's name in the archive's cache: one line per file
/// stored, `SHA1 SIZE NAME [PLAIN]` (PLAIN: an encrypted file's plaintext
/// BLAKE3, from its `file` record).
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
    pub fn parse(line: &str) -> Option<Journaled> {
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

    pub fn line(&self) -> String {
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

/// Files stored on the backend for sets not yet published: name → (size,
/// SHA1). The file exists only while it lists something.
pub struct Journal {
    path: std::path::PathBuf,
    entries: Mutex<HashMap<String, Journaled>>,
    /// Opened for appending at the first entry after each rewrite.
    file: Mutex<Option<std::fs::File>>,
}

impl Journal {
    /// Reads the journal, keeping only files the backend still has with the
    /// noted size.
    pub fn open(cache: &Cache, listing: &HashMap<String, u64>) -> Result<Journal> {
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

    pub fn text(&self) -> String {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut lines: Vec<String> = entries.values().map(Journaled::line).collect();
        lines.sort();
        lines.concat()
    }

    /// Replaces the file with the entries (removes it when there are none).
    pub fn rewrite(&self, cache: &Cache) -> Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        *file = None;
        let text = self.text();
        if text.is_empty() { cache.remove(JOURNAL) } else { cache.write(JOURNAL, text.as_bytes()).map(|_| ()) }
    }

    pub fn has(&self, name: &str, size: u64, sha1: &str) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(name).is_some_and(|j| j.size == size && j.sha1 == sha1)
    }

    /// Notes a file just stored, in one write: a killed run leaves whole
    /// lines, or a last partial one that the next run drops.
    pub fn add(&self, j: Journaled) -> Result<()> {
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
    pub fn forget(&self, cache: &Cache, which: impl Fn(&str) -> bool) -> Result<()> {
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
}
