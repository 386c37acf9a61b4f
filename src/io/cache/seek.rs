//! Seek tables: where each block of an encrypted volume written by dup-pack
//! lies inside it, so that one path can be restored by decrypting and
//! inflating only the megabytes that hold it (`crypto::seek`).
//!
//! One JSON file per volume in the cache, `dup-seek.<volume name>.json` (no
//! name duplicity takes for one of its own), written by dup-put as dup-pack
//! sends it (a `cache` file). It describes the plaintext layout of the
//! volume whose SHA-1 it names, and is used only for that ciphertext, only
//! when the backend's manifest vouches for the ciphertext's hash (read
//! through its MDC in the same run), and never for a signed archive: a
//! wrong or edited table can make the restore fail, never hand out bytes
//! that were not in the volume. Volumes written by duplicity, by an older
//! dup, or on another machine have no table and are read from the start.

use std::io::{BufReader, Read};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::Cache;
use crate::error::{Error, Result};
use crate::joblog::note;
use crate::record::PathBytes;

const PREFIX: &str = "dup-seek.";
const SUFFIX: &str = ".json";
const VERSION: u32 = 1;
/// Larger tables are refused as damage (a 200 MiB volume's is ~20 KiB).
const MAX_LEN: u64 = 16 << 20;

/// The table's cache name for a volume.
pub fn seek_name(volume: &str) -> String {
    format!("{PREFIX}{volume}{SUFFIX}")
}

/// The volume a cache file is the seek table of, if it is one.
pub fn seek_volume(name: &str) -> Option<&str> {
    name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)
}

/// An entry header and where it starts in the volume's tar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub offset: u64,
    pub path: PathBytes,
}

/// One volume's layout (see `crypto::framing` and `crypto::seek`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeekTable {
    pub version: u32,
    /// The encrypted volume's SHA-1 (hex), as its manifest lists it.
    pub sha1: String,
    /// Literal-packet bytes per compressed block, and body bytes per chunk.
    pub block: u64,
    pub chunk: u64,
    /// The literal and compressed packets' body lengths.
    pub literal: u64,
    pub compressed: u64,
    /// The deflate size of each block.
    pub sizes: Vec<u64>,
    /// About one entry header per block, in the tar's order.
    pub marks: Vec<Mark>,
    /// HMAC-SHA256 (hex) of the fields above under a key derived from the
    /// volume's session key (`crypto::seek::table_key`).
    pub mac: String,
}

impl SeekTable {
    /// The table of a volume written with `layout`, sealed with its key.
    pub fn new(sha1: String, layout: &crate::crypto::Layout, literal: u64, marks: Vec<Mark>) -> SeekTable {
        let mut t = SeekTable {
            version: VERSION,
            sha1,
            block: crate::io::parblock::BLOCK as u64,
            chunk: crate::crypto::framing::CHUNK,
            literal,
            compressed: layout.compressed,
            sizes: layout.sizes.clone(),
            marks,
            mac: String::new(),
        };
        t.mac = crate::dupfmt::hex(&t.mac_with(&layout.table_key).finalize().into_bytes());
        t
    }

    /// The MAC over every field but `mac`, each at a fixed width or with
    /// its length.
    fn mac_with(&self, key: &[u8; 32]) -> Hmac<Sha256> {
        // A 32-byte key is always accepted.
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
        let mut put = |b: &[u8]| {
            m.update(&(b.len() as u64).to_le_bytes());
            m.update(b);
        };
        put(&self.version.to_le_bytes());
        put(self.sha1.as_bytes());
        for n in [self.block, self.chunk, self.literal, self.compressed] {
            put(&n.to_le_bytes());
        }
        put(&(self.sizes.len() as u64).to_le_bytes());
        for n in &self.sizes {
            put(&n.to_le_bytes());
        }
        put(&(self.marks.len() as u64).to_le_bytes());
        for mk in &self.marks {
            put(&mk.offset.to_le_bytes());
            put(&mk.path.0);
        }
        m
    }

    /// Whether the table was sealed with `key`.
    pub fn is_sealed_with(&self, key: &[u8; 32]) -> bool {
        let Some(mac) = crate::dupfmt::unhex(&self.mac) else { return false };
        self.mac_with(key).verify_slice(&mac).is_ok()
    }

    /// The table as stored.
    pub fn to_json(&self) -> Vec<u8> {
        // Plain data: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The volume's table, when the cache has a sound one for the
    /// ciphertext with this SHA-1; anything else is `None` (a damaged table
    /// is logged, and the volume read from its start).
    pub fn load(cache: &Cache, volume: &str, sha1: &str) -> Option<SeekTable> {
        let f = cache.open_file(&seek_name(volume)).ok()?;
        let parsed: std::result::Result<SeekTable, _> = serde_json::from_reader(BufReader::new(f.take(MAX_LEN)));
        let t = match parsed {
            Ok(t) => t,
            Err(e) => {
                note!(log::Level::Warn, "{}: unreadable ({e}); reading {volume} from its start", seek_name(volume));
                return None;
            }
        };
        if !t.sha1.eq_ignore_ascii_case(sha1) {
            log::debug!("{}: for another copy of {volume}", seek_name(volume));
            return None;
        }
        if let Err(e) = t.check() {
            note!(log::Level::Warn, "{}: {}; reading {volume} from its start", seek_name(volume), e.message);
            return None;
        }
        Some(t)
    }

    /// The plaintext bytes the cache's table of `volume` says the volume
    /// holds, unchecked: enough to weigh whether reading by tables is worth
    /// a manifest's key derivation, nothing to read by.
    pub fn stated_size(cache: &Cache, volume: &str) -> Option<u64> {
        #[derive(Deserialize)]
        struct Stated {
            literal: u64,
        }
        let f = cache.open_file(&seek_name(volume)).ok()?;
        serde_json::from_reader::<_, Stated>(BufReader::new(f.take(MAX_LEN))).ok().map(|s| s.literal)
    }

    /// What the reader relies on: the framing it knows, sizes adding up,
    /// marks in order.
    fn check(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::corrupt(format!("not a table this version reads ({what})")));
        if self.version != VERSION || self.block != crate::io::parblock::BLOCK as u64 {
            return bad("version");
        }
        if self.chunk != crate::crypto::framing::CHUNK {
            return bad("chunk size");
        }
        let sum = self.sizes.iter().try_fold(1u64, |a, &s| a.checked_add(s));
        if sum != Some(self.compressed) || self.literal < crate::crypto::framing::LITERAL_HEAD.len() as u64 {
            return bad("sizes");
        }
        let inner = crate::crypto::framing::Framed { len: self.literal }.end();
        if (self.sizes.len() as u64) < inner.div_ceil(self.block) {
            return bad("blocks");
        }
        let tar = self.literal - crate::crypto::framing::LITERAL_HEAD.len() as u64;
        let ordered = self
            .marks
            .windows(2)
            .all(|w| w[0].offset < w[1].offset && crate::dupfmt::index::cmp(&w[0].path.0, &w[1].path.0).is_le());
        if !ordered || self.marks.iter().any(|m| m.offset >= tar) {
            return bad("marks");
        }
        Ok(())
    }

    /// The mark to start reading at for the paths within `prefix`: the last
    /// one before it (every header before that mark is of a path before
    /// it), or the tar's start.
    pub fn start_for(&self, prefix: &[u8]) -> u64 {
        let before = self.marks.partition_point(|m| crate::dupfmt::index::cmp(&m.path.0, prefix).is_lt());
        if before == 0 { 0 } else { self.marks[before - 1].offset }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(key: &[u8; 32]) -> SeekTable {
        let layout = crate::crypto::Layout {
            literal: None,
            compressed: 1 + 900 + 800 + 100,
            sizes: vec![900, 800, 100],
            table_key: *key,
        };
        let marks = [(0, "."), (1 << 20, "b/x"), (2 << 20, "c")]
            .iter()
            .map(|&(offset, p)| Mark { offset, path: PathBytes(p.as_bytes().to_vec()) })
            .collect();
        SeekTable::new("ab".repeat(20), &layout, (2 << 20) + 5000, marks)
    }

    #[test]
    fn starts_at_the_last_mark_before_the_path() {
        let t = table(&[1; 32]);
        assert!(t.check().is_ok());
        assert_eq!(t.start_for(b"a"), 0);
        // The mark of the path itself is not before it (a multivol file's
        // later chunks are marked with its path).
        assert_eq!(t.start_for(b"b/x"), 0);
        assert_eq!(t.start_for(b"b/y"), 1 << 20);
        assert_eq!(t.start_for(b"b"), 0);
        assert_eq!(t.start_for(b"d"), 2 << 20);
        assert_eq!(t.start_for(b"."), 0);
    }

    #[test]
    fn the_mac_covers_every_field() {
        let key = [7; 32];
        let t = table(&key);
        assert!(t.is_sealed_with(&key));
        assert!(!t.is_sealed_with(&[8; 32]));
        let round: SeekTable = serde_json::from_slice(&t.to_json()).unwrap();
        assert!(round.is_sealed_with(&key), "the stored form keeps the MAC");
        let edits: [&dyn Fn(&mut SeekTable); 6] = [
            &|t| t.marks[1].offset += 512,
            &|t| t.marks[2].path = PathBytes(b"d".to_vec()),
            &|t| t.sizes[0] += 1,
            &|t| t.literal += 1,
            &|t| t.sha1 = "cd".repeat(20),
            &|t| t.marks.pop().map(|_| ()).unwrap_or(()),
        ];
        for edit in edits {
            let mut e = t.clone();
            edit(&mut e);
            assert!(!e.is_sealed_with(&key), "{e:?}");
        }
    }

    #[test]
    fn inconsistent_tables_are_refused() {
        let key = [1; 32];
        let mut t = table(&key);
        t.compressed += 1;
        assert!(t.check().is_err(), "sizes must add up");
        let mut t = table(&key);
        t.marks.swap(1, 2);
        assert!(t.check().is_err(), "marks in order");
        let mut t = table(&key);
        t.sizes.pop();
        t.compressed -= 100;
        assert!(t.check().is_err(), "a size for every block");
    }
}
