//! Seek tables: where each block of an encrypted volume written by dup-pack
//! lies inside it, so that one path can be restored by decrypting and
//! inflating only the megabytes that hold it (`crypto::seek`).
//!
//! One JSON file per volume in the cache, `dup-seek.<volume name>` (no
//! name duplicity takes for one of its own), written by dup-put as dup-pack
//! sends it (a `cache` file). It describes the plaintext layout of the
//! volume whose SHA-1 it names, and is used only for that ciphertext, only
//! when the backend's manifest vouches for the ciphertext's hash (read
//! through its MDC in the same run), and never for a signed archive: a
//! wrong or edited table can make the restore fail, never hand out bytes
//! that were not in the volume. Volumes written by duplicity, by an older
//! dup, or on another machine have no table and are read from the start.

use std::io::Read;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::Cache;
use crate::error::{Error, Result};
use crate::record::PathBytes;

const PREFIX: &str = "dup-seek.";
const VERSION: u32 = 1;
/// Larger tables are refused as damage (a 200 MiB volume's is ~20 KiB).
const MAX_LEN: u64 = 16 << 20;

/// The table's cache name for a volume.
pub fn seek_name(volume: &str) -> String {
    format!("{PREFIX}{volume}")
}

/// The volume a cache file is the seek table of, if it is one.
pub fn seek_volume(name: &str) -> Option<&str> {
    name.strip_prefix(PREFIX)
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
        let parsed: std::result::Result<SeekTable, _> = serde_json::from_reader(f.take(MAX_LEN));
        let t = match parsed {
            Ok(t) => t,
            Err(e) => {
                log::warn!("{}: unreadable ({e}); reading {volume} from its start", seek_name(volume));
                return None;
            }
        };
        if !t.sha1.eq_ignore_ascii_case(sha1) {
            log::debug!("{}: for another copy of {volume}", seek_name(volume));
            return None;
        }
        if let Err(e) = t.check() {
            log::warn!("{}: {}; reading {volume} from its start", seek_name(volume), e.message);
            return None;
        }
        Some(t)
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
