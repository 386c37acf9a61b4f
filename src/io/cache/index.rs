//! The per-set file index in the cache: what a set's signature holds (each
//! path's entry type and metadata, in duplicity's order), with the volume
//! of the set that holds the entry, in a compact binary file read without
//! decompressing or parsing the signature tar (`dup-ls --files`,
//! `dup-get --path`).
//!
//! One file per cached signature, `dup-index.<signature's cache name>.idx`
//! (duplicity, sharing the cache, does not take it for one of its files).
//! Layout, integers little-endian:
//!
//! - header: `DUPINDEX`, version byte, the cached signature's size (u64)
//!   and modification time in ns (i64): an index whose signature is not
//!   that file any more is stale;
//! - blocks: payload length (u32), CRC-32 of the payload (u32), payload:
//!   records, the first with its whole path, the others sharing a prefix
//!   with the path before them (paths in duplicity's order, strictly
//!   increasing); a block ends after the record that passes [`BLOCK`] bytes;
//! - table: the number of blocks, then for each its offset and first path
//!   (varints and bytes);
//! - footer: the table's offset (u64), the number of entries (u64), the
//!   CRC-32 of header and table (u32), `DIXE`.
//!
//! A record: shared prefix length, suffix length, suffix; entry type (0
//! snapshot, 1 signature, 2 deleted); a flags byte (file type in the low
//! three bits; 8: same user name as the record before, 16: same group
//! name, 32: has a link target, 64: has device numbers); mode, uid, gid
//! (varints); user and group names unless the same; mtime (zigzag varint);
//! size; target; device numbers; volume number (0: unknown). Memory stays
//! flat: writing holds one block, reading one block and the table.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;

use flate2::Crc;

use super::Cache;
use crate::dupfmt::index;
use crate::dupfmt::manifest::Manifest;
use crate::dupfmt::names::{FileKind, FileName, Naming, Suffix};
use crate::dupfmt::tar::EntryType;
use crate::error::{Error, Kind, Result};
use crate::joblog::note;
use crate::record::{Entry, FileType, PathBytes};

const MAGIC: &[u8; 8] = b"DUPINDEX";
const END_MAGIC: &[u8; 4] = b"DIXE";
const VERSION: u8 = 1;
const HEADER_LEN: u64 = 8 + 1 + 8 + 8;
const FOOTER_LEN: u64 = 8 + 8 + 4 + 4;
/// A block is closed once its payload passes this many bytes.
const BLOCK: usize = 64 << 10;
/// Larger blocks or tables are refused as damage.
const MAX_BLOCK: u32 = 16 << 20;

/// The index's name for a cached signature.
pub fn index_name(sig_cache_name: &str) -> String {
    format!("dup-index.{sig_cache_name}.idx")
}

/// The cached signature an index file is for, if `name` is an index's.
pub fn indexed_sig(name: &str) -> Option<&str> {
    name.strip_prefix("dup-index.")?.strip_suffix(".idx")
}

/// One entry of a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// `Snapshot`, `Signature` or `Deleted`.
    pub kind: EntryType,
    pub entry: Entry,
    /// The set's volume holding the entry (its first, for a multivol file); 0: unknown.
    pub volume: u64,
}

/// The stamp of the cached signature: its size and mtime (ns).
fn stamp(cache: &Cache, sig: &str) -> Result<(u64, i64)> {
    let p = cache.path(sig);
    let m = std::fs::metadata(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
    Ok((m.len(), m.mtime().saturating_mul(1_000_000_000).saturating_add(m.mtime_nsec())))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn ftype_code(t: FileType) -> u8 {
    match t {
        FileType::File => 0,
        FileType::Dir => 1,
        FileType::Symlink => 2,
        FileType::Fifo => 3,
        FileType::Char => 4,
        FileType::Block => 5,
        FileType::Socket => 6,
    }
}

fn ftype_of(c: u8) -> Option<FileType> {
    Some(match c {
        0 => FileType::File,
        1 => FileType::Dir,
        2 => FileType::Symlink,
        3 => FileType::Fifo,
        4 => FileType::Char,
        5 => FileType::Block,
        6 => FileType::Socket,
        _ => return None,
    })
}

/// Writes an index, streaming; entries must come in duplicity's order.
pub struct Writer<W: Write> {
    w: W,
    offset: u64,
    block: Vec<u8>,
    /// Offset and first path of each block written.
    table: Vec<u8>,
    blocks: u64,
    count: u64,
    prev: Vec<u8>,
    prev_uname: String,
    prev_gname: String,
    head_crc: Crc,
}

impl<W: Write> Writer<W> {
    /// Starts an index for a signature of the given stamp.
    fn new(mut w: W, stamp: (u64, i64)) -> io::Result<Self> {
        let mut head = MAGIC.to_vec();
        head.push(VERSION);
        head.extend_from_slice(&stamp.0.to_le_bytes());
        head.extend_from_slice(&stamp.1.to_le_bytes());
        w.write_all(&head)?;
        let mut head_crc = Crc::new();
        head_crc.update(&head);
        Ok(Writer {
            w,
            offset: HEADER_LEN,
            block: Vec::with_capacity(BLOCK + 4096),
            table: Vec::new(),
            blocks: 0,
            count: 0,
            prev: Vec::new(),
            prev_uname: String::new(),
            prev_gname: String::new(),
            head_crc,
        })
    }

    /// Adds an entry; refuses one that is not after the one before.
    pub fn add(&mut self, e: &IndexEntry) -> Result<()> {
        let path = &e.entry.path.0;
        if self.count > 0 && index::cmp(&self.prev, path) != Ordering::Less {
            return Err(Error::corrupt(format!("{}: out of order in the signature", e.entry.path)));
        }
        let first = self.block.is_empty();
        if first {
            put_varint(&mut self.table, self.offset);
            put_bytes(&mut self.table, path);
            self.blocks += 1;
        }
        let shared = if first { 0 } else { self.prev.iter().zip(path).take_while(|(a, b)| a == b).count() };
        put_varint(&mut self.block, shared as u64);
        put_bytes(&mut self.block, &path[shared..]);
        let en = &e.entry;
        self.block.push(match e.kind {
            EntryType::Signature => 1,
            EntryType::Deleted => 2,
            _ => 0,
        });
        let same_u = !first && en.uname == self.prev_uname;
        let same_g = !first && en.gname == self.prev_gname;
        let dev = en.devmajor.is_some() || en.devminor.is_some();
        let flags = ftype_code(en.ftype)
            | if same_u { 8 } else { 0 }
            | if same_g { 16 } else { 0 }
            | if en.target.is_some() { 32 } else { 0 }
            | if dev { 64 } else { 0 };
        self.block.push(flags);
        put_varint(&mut self.block, en.mode as u64);
        put_varint(&mut self.block, en.uid as u64);
        put_varint(&mut self.block, en.gid as u64);
        if !same_u {
            put_bytes(&mut self.block, en.uname.as_bytes());
            self.prev_uname.clone_from(&en.uname);
        }
        if !same_g {
            put_bytes(&mut self.block, en.gname.as_bytes());
            self.prev_gname.clone_from(&en.gname);
        }
        put_varint(&mut self.block, ((en.mtime << 1) ^ (en.mtime >> 63)) as u64);
        put_varint(&mut self.block, en.size);
        if let Some(t) = &en.target {
            put_bytes(&mut self.block, &t.0);
        }
        if dev {
            put_varint(&mut self.block, en.devmajor.unwrap_or(0) as u64);
            put_varint(&mut self.block, en.devminor.unwrap_or(0) as u64);
        }
        put_varint(&mut self.block, e.volume);
        self.prev.clone_from(path);
        self.count += 1;
        if self.block.len() >= BLOCK {
            self.flush_block().map_err(|e| Error::io("writing the index", e))?;
        }
        Ok(())
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let mut crc = Crc::new();
        crc.update(&self.block);
        self.w.write_all(&(self.block.len() as u32).to_le_bytes())?;
        self.w.write_all(&crc.sum().to_le_bytes())?;
        self.w.write_all(&self.block)?;
        self.offset += 8 + self.block.len() as u64;
        self.block.clear();
        Ok(())
    }

    /// Writes the last block, the table and the footer.
    fn finish(mut self) -> io::Result<W> {
        self.flush_block()?;
        let mut table = Vec::new();
        put_varint(&mut table, self.blocks);
        table.extend_from_slice(&self.table);
        self.head_crc.update(&table);
        self.w.write_all(&table)?;
        self.w.write_all(&self.offset.to_le_bytes())?;
        self.w.write_all(&self.count.to_le_bytes())?;
        self.w.write_all(&self.head_crc.sum().to_le_bytes())?;
        self.w.write_all(END_MAGIC)?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// Builds the index of the cached signature `sig` (gzip'd, as the cache
/// holds it), with volume numbers from `manifest` when given.
pub fn build(cache: &Cache, sig: &str, manifest: Option<&Manifest>) -> Result<u64> {
    let stamp = stamp(cache, sig)?;
    let file = cache.open_file(sig)?;
    let mut tar = crate::dupfmt::tarstream::TarStream::new(flate2::read::MultiGzDecoder::new(file), sig);
    let vols: Vec<_> = manifest.map(|m| m.volumes.values().collect()).unwrap_or_default();
    let mut cur = 0usize;
    let mut count = 0u64;
    cache.write_with(&index_name(sig), |f| {
        let mut w = Writer::new(BufWriter::with_capacity(256 << 10, f), stamp)
            .map_err(|e| Error::io(format!("writing the index of {sig}"), e))?;
        while let Some(item) = tar.next_item().map_err(|e| e.context(sig))? {
            let (kind, entry) = crate::stage::sig::decode(&item).map_err(|e| e.context(sig))?;
            let p = &entry.path.0;
            while cur < vols.len() && index::cmp(p, &vols[cur].end).is_gt() {
                cur += 1;
            }
            let volume = match vols.get(cur) {
                Some(v) if index::cmp(p, &v.start).is_ge() => v.number,
                _ => 0,
            };
            w.add(&IndexEntry { kind, entry, volume })?;
            count += 1;
        }
        let b = w.finish().map_err(|e| Error::io(format!("writing the index of {sig}"), e))?;
        b.into_inner().map_err(|e| Error::io(format!("writing the index of {sig}"), e.into_error()))?;
        Ok(())
    })?;
    Ok(count)
}

/// The cache name of the signature of the set a manifest or volume name
/// `f` belongs to.
pub fn sig_of_set(naming: &Naming, f: &FileName) -> String {
    let kind = if f.kind.is_full() { FileKind::FullSig } else { FileKind::NewSig };
    naming.format(&FileName { kind, suffix: Suffix::Gzip, partial: false, ..*f })
}

/// Builds the index of the set whose manifest is `f` (after it is
/// published or cached), from the cached signature, with the volumes of
/// `manifest`. A failure is only a warning: listings read the signature.
pub fn build_for_set(cache: &Cache, naming: &Naming, f: &FileName, manifest: Option<&Manifest>) {
    let sig = sig_of_set(naming, f);
    if !cache.path(&sig).exists() {
        return;
    }
    if let Err(e) = build(cache, &sig, manifest) {
        note!(log::Level::Warn, "not indexing {sig} in the cache: {}", e.message);
        let _ = cache.remove(&index_name(&sig));
    }
}

/// Whether the index of `sig` is there, made from the signature the cache
/// holds now, and sound (every checksum is read).
pub fn is_sound(cache: &Cache, sig: &str) -> bool {
    Index::open(cache, sig).is_ok_and(|mut ix| ix.verify().is_ok())
}

fn head_matches(head: &[u8; HEADER_LEN as usize], st: (u64, i64)) -> bool {
    &head[..8] == MAGIC && head[8] == VERSION && head[9..17] == st.0.to_le_bytes() && head[17..25] == st.1.to_le_bytes()
}

/// Why an index cannot be used.
#[derive(Debug)]
pub enum Unusable {
    /// There is none, or it was made from another signature file.
    Missing,
    /// It is there but damaged (a message saying how).
    Damaged(String),
}

fn damaged(sig: &str, what: impl std::fmt::Display) -> Unusable {
    Unusable::Damaged(format!("the cache's index of {sig} is damaged ({what})"))
}

/// An open, checked index.
pub struct Index {
    file: BufReader<File>,
    sig: String,
    /// (offset, first path) of each block.
    table: Vec<(u64, Vec<u8>)>,
    table_offset: u64,
    count: u64,
}

fn get_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn get_bytes<'b>(b: &'b [u8], pos: &mut usize) -> Option<&'b [u8]> {
    let n = get_varint(b, pos)? as usize;
    let s = b.get(*pos..pos.checked_add(n)?)?;
    *pos += n;
    Some(s)
}

impl Index {
    /// Opens the index of the cached signature `sig`: checks its header
    /// against the signature, and its table's checksum.
    pub fn open(cache: &Cache, sig: &str) -> std::result::Result<Index, Unusable> {
        let st = stamp(cache, sig).map_err(|_| Unusable::Missing)?;
        let mut f = cache.open_file(&index_name(sig)).map_err(|_| Unusable::Missing)?;
        let io = |e: io::Error| damaged(sig, e);
        let mut head = [0u8; HEADER_LEN as usize];
        f.read_exact(&mut head).map_err(io)?;
        if &head[..8] != MAGIC {
            return Err(damaged(sig, "not an index"));
        }
        if !head_matches(&head, st) {
            return Err(Unusable::Missing);
        }
        let len = f.seek(SeekFrom::End(0)).map_err(io)?;
        if len < HEADER_LEN + FOOTER_LEN {
            return Err(damaged(sig, "too short"));
        }
        f.seek(SeekFrom::Start(len - FOOTER_LEN)).map_err(io)?;
        let mut foot = [0u8; FOOTER_LEN as usize];
        f.read_exact(&mut foot).map_err(io)?;
        let u64_at = |i: usize| u64::from_le_bytes(foot[i..i + 8].try_into().expect("8 bytes"));
        let (table_offset, count) = (u64_at(0), u64_at(8));
        let crc = u32::from_le_bytes(foot[16..20].try_into().expect("4 bytes"));
        if &foot[20..] != END_MAGIC {
            return Err(damaged(sig, "no end marker"));
        }
        let table_len = (len - FOOTER_LEN).checked_sub(table_offset).filter(|&n| n <= MAX_BLOCK as u64 * 16);
        let Some(table_len) = table_len.filter(|_| table_offset >= HEADER_LEN) else {
            return Err(damaged(sig, "bad table offset"));
        };
        let mut table = vec![0u8; table_len as usize];
        f.seek(SeekFrom::Start(table_offset)).map_err(io)?;
        f.read_exact(&mut table).map_err(io)?;
        let mut c = Crc::new();
        c.update(&head);
        c.update(&table);
        if c.sum() != crc {
            return Err(damaged(sig, "checksum mismatch in its table"));
        }
        let mut pos = 0;
        let n = get_varint(&table, &mut pos).ok_or_else(|| damaged(sig, "bad table"))?;
        let mut blocks = Vec::new();
        for _ in 0..n {
            let off = get_varint(&table, &mut pos);
            let first = get_bytes(&table, &mut pos);
            match (off, first) {
                (Some(o), Some(p)) if o >= HEADER_LEN && o < table_offset => blocks.push((o, p.to_vec())),
                _ => return Err(damaged(sig, "bad table")),
            }
        }
        Ok(Index {
            file: BufReader::with_capacity(128 << 10, f),
            sig: sig.to_string(),
            table: blocks,
            table_offset,
            count,
        })
    }

    /// The number of entries.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Reads every block once and checks its checksum (before a listing
    /// that cannot go back once it has begun).
    pub fn verify(&mut self) -> std::result::Result<(), Unusable> {
        let mut c = self.cursor(0).map_err(|e| Unusable::Damaged(e.message))?;
        let mut n = 0u64;
        while c.next_block(&mut self.file).map_err(|e| Unusable::Damaged(e.message))? {
            n += c.count_block().map_err(|e| Unusable::Damaged(e.message))?;
        }
        if n != self.count {
            return Err(damaged(&self.sig, format!("{n} entries, the footer says {}", self.count)));
        }
        Ok(())
    }

    fn cursor(&mut self, block: usize) -> Result<Cursor> {
        let off = self.table.get(block).map(|b| b.0).unwrap_or(self.table_offset);
        self.file.seek(SeekFrom::Start(off)).map_err(|e| Error::io(format!("reading the index of {}", self.sig), e))?;
        Ok(Cursor {
            sig: self.sig.clone(),
            pos: off,
            end: self.table_offset,
            block: Vec::new(),
            at: 0,
            prev: Vec::new(),
            uname: String::new(),
            gname: String::new(),
        })
    }

    /// All entries, in order.
    pub fn entries(mut self) -> Result<Entries> {
        let cursor = self.cursor(0)?;
        Ok(Entries { file: self.file, cursor })
    }

    /// Hands `f` the entries at `prefix` and under it, in order, while it
    /// returns true; only the blocks from the one holding `prefix` are read.
    pub fn within(mut self, prefix: &[u8], mut f: impl FnMut(IndexEntry) -> bool) -> Result<()> {
        // The last block starting at or before the prefix.
        let b = self.table.partition_point(|(_, first)| index::cmp(first, prefix).is_le());
        let cursor = self.cursor(b.saturating_sub(1))?;
        let mut it = Entries { file: self.file, cursor };
        while let Some(e) = it.next()? {
            if index::is_within(&e.entry.path.0, prefix) {
                if !f(e) {
                    break;
                }
            } else if index::cmp(&e.entry.path.0, prefix).is_gt() {
                break;
            }
        }
        Ok(())
    }

    /// Whether the set has an entry at `prefix` or under it.
    pub fn holds(self, prefix: &[u8]) -> Result<bool> {
        let mut found = false;
        self.within(prefix, |_| {
            found = true;
            false
        })?;
        Ok(found)
    }
}

/// Reading position in an index.
struct Cursor {
    sig: String,
    pos: u64,
    end: u64,
    block: Vec<u8>,
    at: usize,
    prev: Vec<u8>,
    uname: String,
    gname: String,
}

impl Cursor {
    fn bad(&self, what: &str) -> Error {
        Error::new(Kind::Corrupt, format!("the cache's index of {} is damaged ({what})", self.sig))
            .hint("run dup-sync to rebuild it, or delete it")
    }

    /// Loads the next block and checks it; false at the end.
    fn next_block(&mut self, f: &mut BufReader<File>) -> Result<bool> {
        if self.pos >= self.end {
            return Ok(false);
        }
        let mut head = [0u8; 8];
        f.read_exact(&mut head).map_err(|e| self.bad(&e.to_string()))?;
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len > MAX_BLOCK || self.pos + 8 + len as u64 > self.end {
            return Err(self.bad("bad block length"));
        }
        self.block.resize(len as usize, 0);
        f.read_exact(&mut self.block).map_err(|e| self.bad(&e.to_string()))?;
        let mut c = Crc::new();
        c.update(&self.block);
        if c.sum() != crc {
            return Err(self.bad("checksum mismatch"));
        }
        self.pos += 8 + len as u64;
        self.at = 0;
        self.prev.clear();
        Ok(true)
    }

    /// Counts the records of the loaded block (decoding them).
    fn count_block(&mut self) -> Result<u64> {
        let mut n = 0;
        while self.at < self.block.len() {
            self.record()?;
            n += 1;
        }
        Ok(n)
    }

    /// Decodes the next record of the loaded block.
    fn record(&mut self) -> Result<IndexEntry> {
        let first = self.at == 0;
        let b = &self.block;
        let mut pos = self.at;
        let mut rec = || -> Option<IndexEntry> {
            let shared = get_varint(b, &mut pos)? as usize;
            let suffix = get_bytes(b, &mut pos)?;
            if shared > self.prev.len() || (first && shared != 0) {
                return None;
            }
            let mut path = self.prev[..shared].to_vec();
            path.extend_from_slice(suffix);
            if !first && index::cmp(&self.prev, &path) != Ordering::Less {
                return None;
            }
            let kind = match *b.get(pos)? {
                0 => EntryType::Snapshot,
                1 => EntryType::Signature,
                2 => EntryType::Deleted,
                _ => return None,
            };
            let flags = *b.get(pos + 1)?;
            pos += 2;
            let mut e = Entry::new(path, ftype_of(flags & 7)?);
            e.mode = u32::try_from(get_varint(b, &mut pos)?).ok()?;
            e.uid = u32::try_from(get_varint(b, &mut pos)?).ok()?;
            e.gid = u32::try_from(get_varint(b, &mut pos)?).ok()?;
            let text = |s: &[u8]| String::from_utf8(s.to_vec()).ok();
            e.uname = if flags & 8 != 0 && !first { self.uname.clone() } else { text(get_bytes(b, &mut pos)?)? };
            e.gname = if flags & 16 != 0 && !first { self.gname.clone() } else { text(get_bytes(b, &mut pos)?)? };
            let z = get_varint(b, &mut pos)?;
            e.mtime = ((z >> 1) as i64) ^ -((z & 1) as i64);
            e.size = get_varint(b, &mut pos)?;
            if flags & 32 != 0 {
                e.target = Some(PathBytes(get_bytes(b, &mut pos)?.to_vec()));
            }
            if flags & 64 != 0 {
                e.devmajor = Some(u32::try_from(get_varint(b, &mut pos)?).ok()?);
                e.devminor = Some(u32::try_from(get_varint(b, &mut pos)?).ok()?);
            }
            let volume = get_varint(b, &mut pos)?;
            Some(IndexEntry { kind, entry: e, volume })
        };
        let r = rec().ok_or_else(|| self.bad("bad record"))?;
        self.at = pos;
        self.prev.clone_from(&r.entry.path.0);
        self.uname.clone_from(&r.entry.uname);
        self.gname.clone_from(&r.entry.gname);
        Ok(r)
    }
}

/// An index's entries, in order.
pub struct Entries {
    file: BufReader<File>,
    cursor: Cursor,
}

impl Entries {
    // A fallible iterator: Iterator's `next` cannot return errors.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<IndexEntry>> {
        while self.cursor.at >= self.cursor.block.len() {
            if !self.cursor.next_block(&mut self.file)? {
                return Ok(None);
            }
        }
        self.cursor.record().map(Some)
    }
}

/// Opens and checks the indexes of a chain's cached signatures (full
/// first); `Err` when any cannot be used.
pub fn open_chain<'s>(
    cache: &Cache,
    sigs: impl IntoIterator<Item = &'s str>,
) -> std::result::Result<Vec<Index>, Unusable> {
    let mut out = Vec::new();
    for s in sigs {
        let mut ix = Index::open(cache, s)?;
        ix.verify()?;
        out.push(ix);
    }
    Ok(out)
}

/// The merged state of a chain's indexes: the newest entry of each path
/// wins and deletions remove it, as [`crate::stage::sig::SigState`] does.
pub struct IndexState {
    sources: Vec<(Entries, Option<IndexEntry>)>,
}

impl IndexState {
    pub fn new(indexes: Vec<Index>) -> Result<IndexState> {
        let mut sources = Vec::new();
        for ix in indexes {
            let mut it = ix.entries()?;
            let head = it.next()?;
            sources.push((it, head));
        }
        Ok(IndexState { sources })
    }

    // A fallible iterator: Iterator's `next` cannot return errors.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Entry>> {
        loop {
            let mut best: Option<usize> = None;
            for (i, (_, h)) in self.sources.iter().enumerate() {
                let Some(e) = h else { continue };
                best = match best {
                    Some(b) => {
                        let be = self.sources[b].1.as_ref().expect("best has a head");
                        if index::cmp(&e.entry.path, &be.entry.path).is_le() { Some(i) } else { Some(b) }
                    }
                    None => Some(i),
                };
            }
            let Some(win) = best else { return Ok(None) };
            let path = self.sources[win].1.as_ref().expect("the winner has a head").entry.path.clone();
            let mut won = None;
            for i in 0..self.sources.len() {
                if self.sources[i].1.as_ref().is_some_and(|h| h.entry.path == path) {
                    let next = self.sources[i].0.next()?;
                    let old = std::mem::replace(&mut self.sources[i].1, next);
                    if i == win {
                        won = old;
                    }
                }
            }
            let won = won.expect("the winner had a head");
            if won.kind != EntryType::Deleted {
                return Ok(Some(won.entry));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, i: u64) -> IndexEntry {
        let mut e =
            Entry::new(path.as_bytes().to_vec(), if i.is_multiple_of(3) { FileType::Dir } else { FileType::File });
        e.mode = 0o644 + (i as u32 % 2);
        e.uname = if i.is_multiple_of(5) { "root".into() } else { "user".into() };
        e.gname = "staff".into();
        e.mtime = 1_700_000_000 - i as i64 * 1000;
        e.uid = 1000;
        e.gid = 50;
        if i.is_multiple_of(7) {
            e.ftype = FileType::Symlink;
            e.target = Some(PathBytes(b"../t".to_vec()));
        }
        if i.is_multiple_of(11) {
            e.ftype = FileType::Char;
            e.devmajor = Some(4);
            e.devminor = Some(i as u32);
        }
        IndexEntry {
            kind: if i.is_multiple_of(13) { EntryType::Deleted } else { EntryType::Snapshot },
            entry: e,
            volume: i / 1000,
        }
    }

    #[test]
    fn round_trip_over_many_blocks_and_lookup() {
        let base = std::env::temp_dir().join(format!("dup-index-test-{}", std::process::id()));
        let cache = Cache::open(Some(&base), Some("n"), "file:///x").unwrap();
        cache.write("sig", &b"x"[..]).unwrap();
        let mut paths: Vec<String> = (0..20_000).map(|i| format!("d{}/f{:05}", i / 300, i)).collect();
        paths.sort_by(|a, b| index::cmp(a.as_bytes(), b.as_bytes()));
        let entries: Vec<IndexEntry> = paths.iter().enumerate().map(|(i, p)| entry(p, i as u64)).collect();
        cache
            .write_with(&index_name("sig"), |f| {
                let mut w = Writer::new(f, stamp(&cache, "sig").unwrap()).unwrap();
                for e in &entries {
                    w.add(e).unwrap();
                }
                w.finish().unwrap();
                Ok(())
            })
            .unwrap();
        assert!(is_sound(&cache, "sig"));
        let mut ix = Index::open(&cache, "sig").unwrap();
        assert!(ix.table.len() > 5, "several blocks");
        ix.verify().unwrap();
        let mut it = ix.entries().unwrap();
        for e in &entries {
            assert_eq!(it.next().unwrap().as_ref(), Some(e));
        }
        assert!(it.next().unwrap().is_none());
        let mut got = Vec::new();
        Index::open(&cache, "sig")
            .unwrap()
            .within(b"d33", |e| {
                got.push(e);
                true
            })
            .unwrap();
        let want: Vec<_> = entries.iter().filter(|e| index::is_within(&e.entry.path.0, b"d33")).cloned().collect();
        assert_eq!(got, want);
        assert_eq!(got.len(), 300);
        let mut one = Vec::new();
        Index::open(&cache, "sig")
            .unwrap()
            .within(paths[12345].as_bytes(), |e| {
                one.push(e);
                true
            })
            .unwrap();
        assert_eq!(one, vec![entries[12345].clone()]);
        assert!(Index::open(&cache, "sig").unwrap().holds(b"d33").unwrap());
        assert!(!Index::open(&cache, "sig").unwrap().holds(b"d33/nothing").unwrap());
        assert!(!Index::open(&cache, "sig").unwrap().holds(b"e").unwrap());

        // One flipped byte in a block: found by verify.
        let p = cache.path(&index_name("sig"));
        let mut data = std::fs::read(&p).unwrap();
        data[HEADER_LEN as usize + 5000] ^= 1;
        std::fs::write(&p, &data).unwrap();
        // Rewriting the file kept the signature's stamp: only the content is wrong.
        let mut ix = Index::open(&cache, "sig").unwrap();
        assert!(matches!(ix.verify(), Err(Unusable::Damaged(_))));
        assert!(!is_sound(&cache, "sig"));
        // Another signature file: stale, not damaged.
        cache.write("sig", &b"xy"[..]).unwrap();
        assert!(!is_sound(&cache, "sig"));
        assert!(matches!(Index::open(&cache, "sig"), Err(Unusable::Missing)));
        let _ = std::fs::remove_dir_all(base);
    }
}
