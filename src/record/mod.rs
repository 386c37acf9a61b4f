//! The record stream: one versioned enum of record kinds, written as a CBOR
//! sequence (RFC 8742) between programs or as JSON Lines for people, read
//! back from either (detected from the first byte).
//!
//! A stream is: one `header`, any records, one `end`. Records that carry
//! bytes (file content, deltas, signatures, archive files) are followed by
//! `chunk` records of at most [`CHUNK_SIZE`] bytes, the last one flagged
//! `last`. The `end` record lets a reader tell a finished stream from one
//! whose producer died between two records.

use std::fmt;
use std::io::{self, BufRead, Read, Write};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Kind, Result, content_error};

/// Version of the record schema written by this build.
pub const VERSION: u32 = 1;
/// Largest content chunk a writer produces.
pub const CHUNK_SIZE: usize = 64 * 1024;
/// Largest single record a reader accepts (bounds memory on hostile input).
pub const MAX_RECORD: u64 = 4 * 1024 * 1024;

mod bytes;
pub use bytes::{Bytes, PathBytes};
pub use bytes::{escape as bytes_escape, unescape as bytes_unescape};

/// What a stream carries; written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// `entry` records of a local tree (dup-scan).
    Entries,
    /// `signature`/`snapshot`/`deleted` records: a signature state (dup-sig).
    Signatures,
    /// `snapshot`/`diff`/`deleted` records with content (dup-delta, dup-get --stream).
    Changes,
    /// `file` records: archive files to store or delete (dup-pack, dup-ls selections).
    Files,
    /// Listing records (dup-ls).
    Listing,
}

/// Type of a tree item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    File,
    Dir,
    Symlink,
    Fifo,
    Char,
    Block,
    Socket,
}

impl FileType {
    /// Its name in the streams (`file`, `dir`, ...).
    pub fn name(self) -> &'static str {
        crate::names::variant_name(&self)
    }
}

/// A tree item's metadata: everything duplicity stores, plus what lets hard
/// links be recognised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Index relative to the backup root (`.` is the root).
    pub path: PathBytes,
    #[serde(rename = "type")]
    pub ftype: FileType,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// User and group names ("" when unknown).
    #[serde(default)]
    pub uname: String,
    #[serde(default)]
    pub gname: String,
    /// Modification time, whole seconds since the epoch.
    pub mtime: i64,
    /// Size in bytes (regular files; 0 otherwise).
    #[serde(default)]
    pub size: u64,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PathBytes>,
    /// Device numbers (char and block devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devmajor: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devminor: Option<u32>,
    /// Device and inode of the item, and its link count (0 when unknown).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dev: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ino: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nlink: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Entry {
    /// A bare entry of the given type; other fields zero.
    pub fn new(path: impl Into<Vec<u8>>, ftype: FileType) -> Self {
        Entry {
            path: PathBytes(path.into()),
            ftype,
            mode: 0,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            mtime: 0,
            size: 0,
            target: None,
            devmajor: None,
            devminor: None,
            dev: 0,
            ino: 0,
            nlink: 0,
        }
    }
}

/// Role of an archive file in a `file` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileRole {
    Volume,
    Signature,
    Manifest,
    /// A plaintext manifest or signature for the local cache only (sent
    /// before its encrypted form, which the cache cannot be filled from
    /// when only the public key is at hand).
    Cache,
}

/// An archive file as an earlier, interrupted run stored it (see dup-put's
/// resume journal): its size and SHA1 on the backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub size: u64,
    pub sha1: String,
}

/// Whether a set is a full or an incremental.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetType {
    Full,
    Inc,
}

/// Where a set stands in its archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetStatus {
    /// In the newest chain with matching signatures: the one backups extend.
    Primary,
    /// In an older chain.
    Secondary,
    /// Complete, but no chain takes it.
    Orphaned,
    /// No manifest: an unfinished backup.
    Incomplete,
}

/// A backup set as listed by dup-ls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetInfo {
    #[serde(rename = "type")]
    pub set_type: SetType,
    /// Start time (the previous set's end for an incremental; the set's time for a full).
    pub start: i64,
    /// The set's time.
    pub end: i64,
    pub volumes: u64,
    pub status: SetStatus,
    /// Number of the chain (1 = oldest) for sets in a chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<u64>,
    #[serde(default)]
    pub encrypted: bool,
    #[serde(default)]
    pub compressed: bool,
    /// The set's files on the backend.
    #[serde(default)]
    pub files: Vec<String>,
}

/// One record. The JSON form is `{"kind": "...", ...fields}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// Opens every stream. `source` is the local directory the records
    /// describe, as given by the user (it becomes the manifest's `Localdir`).
    Header {
        stream: StreamKind,
        version: u32,
        producer: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<PathBytes>,
        /// End time of the archive state the stream is relative to (set by
        /// dup-sig, carried by dup-delta): the T1 of the next incremental.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        basis_time: Option<i64>,
        /// A small message encrypted with the passphrase of the chain the
        /// basis belongs to (set by dup-sig once that passphrase opened the
        /// chain, carried by dup-delta): dup-pack checks that its own
        /// passphrase opens it, so an incremental never mixes passphrases.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase_check: Option<Bytes>,
    },
    /// A local tree item (dup-scan), or a file present at a time (dup-ls --files).
    Entry(Entry),
    /// Something was skipped; the stream goes on.
    Warning {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<PathBytes>,
        message: String,
    },
    /// What the rest of an entry stream holds in all (dup-scan --total,
    /// from a count of the tree made alongside the walk): `files` entries,
    /// `bytes` of regular files. For progress only; it may come anywhere
    /// after the header, or not at all.
    Total { files: u64, bytes: u64 },
    /// A complete item; a regular file's content follows as chunks.
    Snapshot(Entry),
    /// A regular file stored as a librsync delta, which follows as chunks.
    Diff(Entry),
    /// A regular file's librsync signature, which follows as chunks.
    Signature(Entry),
    /// The path no longer exists; `type` is what it was, when known.
    Deleted {
        path: PathBytes,
        #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
        ftype: Option<FileType>,
    },
    /// A piece of the bytes of the record before it.
    Chunk { data: Bytes, last: bool },
    /// An archive file (volume, signature tar, manifest) to store; its bytes
    /// follow as chunks. With `delete`, the named file is to be removed;
    /// with `stored`, it is already on the backend (a resumed backup); no
    /// chunks follow either.
    File {
        name: String,
        role: FileRole,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        delete: bool,
        /// An encrypted file's plaintext BLAKE3 (hex): what a resumed
        /// backup compares, the ciphertext differing on every run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plain: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stored: Option<Stored>,
    },
    /// A backup set of an archive (dup-ls URL).
    Set(SetInfo),
    /// The answer of a connection test (dup-ls URL --check).
    Check(crate::io::storage::Check),
    /// Closes every stream; `records` counts the records before it, header included.
    End { records: u64 },
}

impl Record {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Record::Header { .. } => "header",
            Record::Entry(_) => "entry",
            Record::Warning { .. } => "warning",
            Record::Total { .. } => "total",
            Record::Snapshot(_) => "snapshot",
            Record::Diff(_) => "diff",
            Record::Signature(_) => "signature",
            Record::Deleted { .. } => "deleted",
            Record::Chunk { .. } => "chunk",
            Record::File { .. } => "file",
            Record::Set(_) => "set",
            Record::Check(_) => "check",
            Record::End { .. } => "end",
        }
    }

    /// True when chunk records follow this one.
    pub fn has_content(&self) -> bool {
        match self {
            Record::Snapshot(e) => e.ftype == FileType::File,
            Record::Diff(_) | Record::Signature(_) => true,
            Record::File { delete, stored, .. } => !delete && stored.is_none(),
            _ => false,
        }
    }
}

/// The fields of a stream's header (the version is always [`VERSION`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamHead {
    pub stream: StreamKind,
    pub producer: String,
    pub source: Option<PathBytes>,
    pub basis_time: Option<i64>,
    pub passphrase_check: Option<Bytes>,
}

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Cbor,
    Json,
}

impl Encoding {
    /// JSON when asked for, or when stdout is a terminal; CBOR otherwise.
    pub fn for_stdout(json: bool) -> Self {
        use std::io::IsTerminal;
        if json || io::stdout().is_terminal() { Encoding::Json } else { Encoding::Cbor }
    }
}

/// Writes a record stream: the header on creation, `end` on [`Writer::finish`].
pub struct Writer<W: Write> {
    out: W,
    enc: Encoding,
    count: u64,
    buf: Vec<u8>,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, enc: Encoding, stream: StreamKind, producer: &str) -> Result<Self> {
        Self::with_source(out, enc, stream, producer, None)
    }

    /// Like [`Writer::new`], naming the local directory the stream describes.
    pub fn with_source(
        out: W,
        enc: Encoding,
        stream: StreamKind,
        producer: &str,
        source: Option<&[u8]>,
    ) -> Result<Self> {
        let head = StreamHead {
            stream,
            producer: producer.to_string(),
            source: source.map(|s| PathBytes(s.to_vec())),
            basis_time: None,
            passphrase_check: None,
        };
        Self::with_head(out, enc, head)
    }

    /// Opens a stream with every header field given.
    pub fn with_head(out: W, enc: Encoding, head: StreamHead) -> Result<Self> {
        let mut w = Writer { out, enc, count: 0, buf: Vec::with_capacity(CHUNK_SIZE + 64) };
        w.write(&Record::Header {
            stream: head.stream,
            version: VERSION,
            producer: head.producer,
            source: head.source,
            basis_time: head.basis_time,
            passphrase_check: head.passphrase_check,
        })?;
        Ok(w)
    }

    pub fn write(&mut self, rec: &Record) -> Result<()> {
        self.buf.clear();
        match self.enc {
            Encoding::Cbor => ciborium::into_writer(rec, &mut self.buf)
                .map_err(|e| Error::other(format!("encoding a {} record: {e}", rec.kind_name())))?,
            Encoding::Json => {
                serde_json::to_writer(&mut self.buf, rec)
                    .map_err(|e| Error::other(format!("encoding a {} record: {e}", rec.kind_name())))?;
                self.buf.push(b'\n');
            }
        }
        self.out.write_all(&self.buf).map_err(|e| Error::io("writing to standard output", e))?;
        self.count += 1;
        Ok(())
    }

    /// Writes `data` as chunk records (at least one, the last flagged).
    pub fn write_content(&mut self, mut data: impl Read) -> Result<u64> {
        let mut w = self.content();
        let n = io::copy(&mut data, &mut w).map_err(|e| content_error("content", e))?;
        w.finish()?;
        Ok(n)
    }

    /// A `Write` that turns what is written into chunk records; call
    /// [`ContentWriter::finish`] to write the last chunk.
    pub fn content(&mut self) -> ContentWriter<'_, W> {
        ContentWriter { w: self, pending: Vec::with_capacity(CHUNK_SIZE) }
    }

    /// Writes the `end` record and flushes.
    pub fn finish(mut self) -> Result<W> {
        let n = self.count;
        self.write(&Record::End { records: n })?;
        self.out.flush().map_err(|e| Error::io("writing to standard output", e))?;
        Ok(self.out)
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io("writing to standard output", e))
    }
}

/// See [`Writer::content`].
pub struct ContentWriter<'a, W: Write> {
    w: &'a mut Writer<W>,
    pending: Vec<u8>,
}

impl<W: Write> ContentWriter<'_, W> {
    fn emit(&mut self, last: bool) -> Result<()> {
        let data = Bytes(std::mem::take(&mut self.pending));
        let rec = Record::Chunk { data, last };
        let r = self.w.write(&rec);
        if let Record::Chunk { data, .. } = rec {
            self.pending = data.0;
            self.pending.clear();
        }
        r
    }

    pub fn finish(mut self) -> Result<()> {
        self.emit(true)
    }
}

impl<W: Write> Write for ContentWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pending.len() == CHUNK_SIZE {
            self.emit(false).map_err(io::Error::other)?;
        }
        let n = buf.len().min(CHUNK_SIZE - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counts bytes read and refuses records larger than [`MAX_RECORD`].
struct Counting<R> {
    inner: R,
    offset: u64,
    record_start: u64,
}

impl<R: BufRead> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = (self.record_start + MAX_RECORD).saturating_sub(self.offset);
        if room == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "record larger than the 4 MiB limit"));
        }
        let max = buf.len().min(room as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        self.offset += n as u64;
        self.inner.consume(n)
    }
}

/// Reads a record stream in either encoding.
pub struct Reader<R: BufRead> {
    src: Counting<R>,
    enc: Encoding,
    /// Number of the next record (the header is record 1).
    number: u64,
    head: StreamHead,
    ended: bool,
    line: Vec<u8>,
    name: String,
}

/// Where a stream broke.
#[derive(Debug)]
pub struct Position {
    pub record: u64,
    pub offset: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {} (byte offset {})", self.record, self.offset)
    }
}

impl<R: BufRead> Reader<R> {
    /// Opens a stream and reads its header. `name` says where it comes from
    /// in error messages ("standard input").
    pub fn new(mut src: R, name: &str) -> Result<Self> {
        let first = src.fill_buf().map_err(|e| Error::io(name, e))?;
        let enc = match first.first() {
            None => {
                return Err(Error::stream(format!("{name}: empty input, expected a dup record stream"))
                    .hint("feed the output of a dup-* command"));
            }
            Some(b'{') => Encoding::Json,
            Some(0xa0..=0xbf) => Encoding::Cbor,
            Some(b) => {
                return Err(Error::stream(format!(
                    "{name}: not a dup record stream (first byte 0x{b:02x}; expected a CBOR map or '{{')"
                ))
                .hint("feed the output of a dup-* command"));
            }
        };
        let mut r = Reader {
            src: Counting { inner: src, offset: 0, record_start: 0 },
            enc,
            number: 1,
            // Replaced by the header read below.
            head: StreamHead {
                stream: StreamKind::Entries,
                producer: String::new(),
                source: None,
                basis_time: None,
                passphrase_check: None,
            },
            ended: false,
            line: Vec::new(),
            name: name.to_string(),
        };
        match r.read_raw()? {
            Some(Record::Header { stream, version, producer, source, basis_time, passphrase_check }) => {
                if version > VERSION {
                    return Err(Error::stream(format!(
                        "{name}: stream version {version} (from {producer}) is newer than this dup reads ({VERSION})"
                    ))
                    .hint("use the same dup version on both ends of the pipe"));
                }
                r.head = StreamHead { stream, producer, source, basis_time, passphrase_check };
            }
            Some(other) => {
                return Err(r.error_at(1, format!("expected a header record, found {}", other.kind_name())));
            }
            None => {
                return Err(r.error_at(1, "expected a header record, found the end of input".into()));
            }
        }
        Ok(r)
    }

    /// The stream's header (read by [`Reader::new`]).
    pub fn head(&self) -> &StreamHead {
        &self.head
    }

    pub fn encoding(&self) -> Encoding {
        self.enc
    }

    pub fn stream_kind(&self) -> StreamKind {
        self.head().stream
    }

    pub fn producer(&self) -> &str {
        &self.head().producer
    }

    /// The local directory the stream describes, if its producer named one.
    pub fn source(&self) -> Option<&[u8]> {
        self.head().source.as_deref()
    }

    /// Fails unless the stream is of one of the given kinds.
    pub fn expect_kind(&self, kinds: &[StreamKind]) -> Result<()> {
        let k = self.stream_kind();
        if kinds.contains(&k) {
            return Ok(());
        }
        Err(Error::stream(format!(
            "{}: a stream of {k:?} records (from {}) cannot be read here; expected {kinds:?}",
            self.name,
            self.producer()
        ))
        .hint("check the order of the commands in the pipeline"))
    }

    fn error_at(&self, record: u64, msg: String) -> Error {
        let pos = Position { record, offset: self.src.record_start };
        Error::stream(format!("{}: {pos}: {msg}", self.name))
    }

    /// Next record; `None` after the `end` record. Input that stops before
    /// `end` is an error.
    // A fallible iterator: Iterator's `next` cannot return errors.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Record>> {
        if self.ended {
            return Ok(None);
        }
        match self.read_raw()? {
            Some(Record::End { records }) => {
                // `number` has moved past the end record itself.
                let read = self.number - 2;
                if records != read {
                    return Err(self.error_at(
                        self.number - 1,
                        format!("end record counts {records} records but {read} were read"),
                    ));
                }
                self.ended = true;
                Ok(None)
            }
            Some(Record::Header { .. }) => Err(self.error_at(self.number - 1, "a second header record".into())),
            Some(r) => Ok(Some(r)),
            None => Err(self.error_at(
                self.number,
                "input ended without an end record (the producing command probably failed)".into(),
            )),
        }
    }

    /// Next record, which must not be a chunk (content must have been consumed).
    pub fn next_item(&mut self) -> Result<Option<Record>> {
        match self.next()? {
            Some(Record::Chunk { .. }) => {
                Err(self.error_at(self.number - 1, "a chunk record where none was expected".into()))
            }
            r => Ok(r),
        }
    }

    /// A reader over the chunk records that follow a record with content.
    pub fn content(&mut self) -> ContentReader<'_, R> {
        ContentReader { r: self, buf: Vec::new(), pos: 0, done: false }
    }

    /// Skips the content that follows a record (if any).
    pub fn skip_content(&mut self, rec: &Record) -> Result<()> {
        if rec.has_content() {
            let mut c = self.content();
            io::copy(&mut c, &mut io::sink()).map_err(io_to_stream)?;
        }
        Ok(())
    }

    fn read_raw(&mut self) -> Result<Option<Record>> {
        self.src.record_start = self.src.offset;
        let n = self.number;
        match self.enc {
            Encoding::Cbor => {
                let at_eof = self.src.inner.fill_buf().map_err(|e| Error::io(&self.name, e))?.is_empty();
                if at_eof {
                    return Ok(None);
                }
                match ciborium::from_reader::<Record, _>(&mut self.src) {
                    Ok(r) => {
                        self.number += 1;
                        Ok(Some(r))
                    }
                    Err(e) => Err(self.error_at(n, cbor_message(e))),
                }
            }
            Encoding::Json => loop {
                self.line.clear();
                let got = (&mut self.src)
                    .take(MAX_RECORD)
                    .read_until(b'\n', &mut self.line)
                    .map_err(|e| self.error_at(n, e.to_string()))?;
                if got == 0 {
                    return Ok(None);
                }
                if self.line.last() != Some(&b'\n') && got as u64 >= MAX_RECORD {
                    return Err(self.error_at(n, "JSON line longer than the 4 MiB limit".into()));
                }
                if self.line.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                return match serde_json::from_slice::<Record>(&self.line) {
                    Ok(r) => {
                        self.number += 1;
                        Ok(Some(r))
                    }
                    Err(e) => Err(self.error_at(n, format!("not a valid record: {e}"))),
                };
            },
        }
    }
}

fn cbor_message(e: ciborium::de::Error<io::Error>) -> String {
    use ciborium::de::Error as E;
    match e {
        E::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => "input ends inside a record (truncated stream)".into(),
        E::Io(e) => e.to_string(),
        E::Syntax(off) => format!("malformed CBOR {off} bytes into the record"),
        E::Semantic(_, msg) => format!("not a valid record: {msg}"),
        E::RecursionLimitExceeded => "CBOR nested too deeply".into(),
    }
}

fn io_to_stream(e: io::Error) -> Error {
    crate::error::carried(e).unwrap_or_else(|e| Error::stream(format!("reading content: {e}")))
}

/// See [`Reader::content`]. Errors carry an [`Error`] (see [`crate::error::content_error`]).
pub struct ContentReader<'a, R: BufRead> {
    r: &'a mut Reader<R>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: BufRead> Read for ContentReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            match self.r.next().map_err(io::Error::other)? {
                Some(Record::Chunk { data, last }) => {
                    self.buf = data.0;
                    self.pos = 0;
                    self.done = last;
                }
                Some(other) => {
                    let e = self
                        .r
                        .error_at(self.r.number - 1, format!("expected a chunk record, found {}", other.kind_name()));
                    return Err(io::Error::other(e));
                }
                None => {
                    return Err(io::Error::other(Error::new(Kind::Stream, "stream ended inside content")));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl<R: BufRead> ContentReader<'_, R> {
    /// Reads the rest of the content to its end (so the stream is positioned
    /// after it).
    pub fn drain(&mut self) -> Result<()> {
        io::copy(self, &mut io::sink()).map_err(io_to_stream)?;
        Ok(())
    }
}

/// Checks that a stream's paths come in duplicity's order (each after the
/// one before), as dup-delta and dup-pack read them.
#[derive(Default)]
pub struct OrderCheck {
    last: Option<Vec<u8>>,
}

impl OrderCheck {
    /// Takes the next path; an error when it is not after the last one.
    pub fn next(&mut self, path: &[u8]) -> Result<()> {
        if let Some(prev) = &self.last
            && crate::dupfmt::index::cmp(prev, path) != std::cmp::Ordering::Less
        {
            return Err(Error::stream(format!(
                "input is not in duplicity's order: {} after {}",
                PathBytes(path.to_vec()),
                PathBytes(prev.clone())
            )));
        }
        let last = self.last.get_or_insert_with(Vec::new);
        last.clear();
        last.extend_from_slice(path);
        Ok(())
    }
}
