//! Tar as duplicity writes it (FORMAT-duplicity.md §3): a streaming writer
//! whose headers are byte-identical to CPython 3.11 `tarfile` in pax format
//! (§3.2), the entry-name conventions of volumes and signature tars (§3.3),
//! and reading helpers over the `tar` crate that accept pax, ustar and GNU
//! archives, stop at the first zero block and accept a missing end marker.

use std::io::{self, Read, Write};

use crate::dupfmt::index;
use crate::error::{Error, Kind, Result};
use crate::record::{Entry, FileType, PathBytes};

/// Size of a tar block.
pub const BLOCK: usize = 512;
/// Size of a tar record: a closed archive is padded to a multiple of this.
pub const RECORD: u64 = 10_240;

/// Type flags.
pub const REGULAR: u8 = b'0';
pub const HARDLINK: u8 = b'1';
pub const SYMLINK: u8 = b'2';
pub const CHAR: u8 = b'3';
pub const BLOCKDEV: u8 = b'4';
pub const DIR: u8 = b'5';
pub const FIFO: u8 = b'6';
const PAX: u8 = b'x';

/// The header metadata of one tar entry (everything but name and size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub typeflag: u8,
    /// Permission bits (`& 0o7777` when written).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds; written as 0 when negative (as duplicity does).
    pub mtime: i64,
    pub uname: String,
    pub gname: String,
    /// Symlink target.
    pub linkname: Vec<u8>,
    /// Written for char/block devices only.
    pub devmajor: u32,
    pub devminor: u32,
}

impl Meta {
    /// The metadata of a tree item. Sockets are not stored (`Err`).
    pub fn from_entry(e: &Entry) -> Result<Meta> {
        let typeflag = match e.ftype {
            FileType::File => REGULAR,
            FileType::Dir => DIR,
            FileType::Symlink => SYMLINK,
            FileType::Fifo => FIFO,
            FileType::Char => CHAR,
            FileType::Block => BLOCKDEV,
            FileType::Socket => return Err(Error::other(format!("{}: sockets are not backed up", e.path))),
        };
        Ok(Meta {
            typeflag,
            mode: e.mode & 0o7777,
            uid: u64::from(e.uid),
            gid: u64::from(e.gid),
            mtime: e.mtime,
            uname: e.uname.clone(),
            gname: e.gname.clone(),
            linkname: e.target.as_ref().map(|t| t.0.clone()).unwrap_or_default(),
            devmajor: e.devmajor.unwrap_or(0),
            devminor: e.devminor.unwrap_or(0),
        })
    }

    /// The header of a `deleted/` entry: a regular file with everything zero.
    pub fn deleted() -> Meta {
        Meta {
            typeflag: REGULAR,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            uname: String::new(),
            gname: String::new(),
            linkname: Vec::new(),
            devmajor: 0,
            devminor: 0,
        }
    }

    /// The tree item this header describes, at `index`, with `size` (the
    /// entry's data size for regular files). Hard links and unknown types
    /// are refused, as duplicity does.
    pub fn to_entry(&self, index: &[u8], size: u64) -> Result<Entry> {
        let ftype = match self.typeflag {
            REGULAR | b'\0' | b'7' => FileType::File,
            DIR => FileType::Dir,
            SYMLINK => FileType::Symlink,
            FIFO => FileType::Fifo,
            CHAR => FileType::Char,
            BLOCKDEV => FileType::Block,
            HARDLINK => return Err(corrupt(index, "hard links are not supported in duplicity archives")),
            t => return Err(corrupt(index, &format!("unknown tar entry type {:?}", t as char))),
        };
        let id = |v: u64, what: &str| u32::try_from(v).map_err(|_| corrupt(index, &format!("{what} {v} too large")));
        let mut e = Entry::new(index.to_vec(), ftype);
        e.mode = self.mode & 0o7777;
        e.uid = id(self.uid, "uid")?;
        e.gid = id(self.gid, "gid")?;
        e.uname = self.uname.clone();
        e.gname = self.gname.clone();
        e.mtime = self.mtime;
        match ftype {
            FileType::File => e.size = size,
            FileType::Symlink => e.target = Some(PathBytes(self.linkname.clone())),
            FileType::Char | FileType::Block => {
                e.devmajor = Some(self.devmajor);
                e.devminor = Some(self.devminor);
            }
            _ => {}
        }
        Ok(e)
    }
}

fn corrupt(index: &[u8], what: &str) -> Error {
    Error::new(Kind::Corrupt, format!("{}: {what}", PathBytes(index.to_vec())))
}

// ---------------------------------------------------------------------------
// Header encoding (CPython 3.11 tarfile, PAX_FORMAT).

/// A text field: ASCII kept, every non-ASCII character (a valid UTF-8
/// sequence, or an invalid byte) becomes `?`; truncated; NUL-padded.
fn put_text(field: &mut [u8], value: &[u8]) {
    let mut ascii = Vec::with_capacity(value.len());
    for chunk in value.utf8_chunks() {
        ascii.extend(chunk.valid().chars().map(|c| if c.is_ascii() { c as u8 } else { b'?' }));
        ascii.extend(std::iter::repeat_n(b'?', chunk.invalid().len()));
    }
    let n = ascii.len().min(field.len());
    field[..n].copy_from_slice(&ascii[..n]);
}

/// A numeric field: zero-padded octal of `len - 1` digits and a NUL.
fn put_octal(field: &mut [u8], v: u64) {
    let digits = format!("{v:0w$o}", w = field.len() - 1);
    let d = digits.as_bytes();
    let n = d.len().min(field.len() - 1);
    field[..n].copy_from_slice(&d[d.len() - n..]);
}

/// One ustar block, as `tarfile._create_header(info, USTAR_FORMAT, "ascii", "replace")`.
#[allow(clippy::too_many_arguments)]
fn ustar_block(
    name: &[u8],
    typeflag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    linkname: &[u8],
    uname: &[u8],
    gname: &[u8],
    dev: Option<(u32, u32)>,
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    put_text(&mut h[0..100], name);
    put_octal(&mut h[100..108], u64::from(mode & 0o7777));
    put_octal(&mut h[108..116], uid);
    put_octal(&mut h[116..124], gid);
    put_octal(&mut h[124..136], size);
    put_octal(&mut h[136..148], mtime);
    h[148..156].copy_from_slice(b"        ");
    h[156] = typeflag;
    put_text(&mut h[157..257], linkname);
    h[257..265].copy_from_slice(b"ustar\x0000");
    put_text(&mut h[265..297], uname);
    put_text(&mut h[297..329], gname);
    if let Some((major, minor)) = dev {
        put_octal(&mut h[329..337], u64::from(major));
        put_octal(&mut h[337..345], u64::from(minor));
    }
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

/// The pax records `"<len> <key>=<value>\n"`; `hdrcharset=BINARY` first when
/// a value is not UTF-8.
fn pax_records(records: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    if records.iter().any(|(_, v)| std::str::from_utf8(v).is_err()) {
        out.extend_from_slice(b"21 hdrcharset=BINARY\n");
    }
    for (key, value) in records {
        let l = key.len() + value.len() + 3;
        // The length counts its own digits: iterate to the fixed point.
        let mut p = 0usize;
        let n = loop {
            let n = l + p.to_string().len();
            if n == p {
                break n;
            }
            p = n;
        };
        out.extend_from_slice(format!("{n} {key}=").as_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// The header blocks of one entry: a pax `x` header with its records when
/// needed, then the ustar block. A directory name gets a trailing `/`.
/// `size` is the number of data bytes that will follow.
pub fn header_bytes(name: &[u8], meta: &Meta, size: u64) -> Result<Vec<u8>> {
    let mut name = name.to_vec();
    if meta.typeflag == DIR && !name.ends_with(b"/") {
        name.push(b'/');
    }
    let dev = matches!(meta.typeflag, CHAR | BLOCKDEV).then_some((meta.devmajor, meta.devminor));
    if let Some((major, minor)) = dev
        && (u64::from(major) >= 1 << 21 || u64::from(minor) >= 1 << 21)
    {
        return Err(Error::other(format!("{}: device number too large for tar", PathBytes(name))));
    }
    let mtime = meta.mtime.max(0) as u64;
    let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
    let text_needs_pax = |v: &[u8], max: usize| !v.is_ascii() || v.len() > max;
    if text_needs_pax(&name, 100) {
        pax.push(("path", name.clone()));
    }
    if text_needs_pax(&meta.linkname, 100) {
        pax.push(("linkpath", meta.linkname.clone()));
    }
    if text_needs_pax(meta.uname.as_bytes(), 32) {
        pax.push(("uname", meta.uname.as_bytes().to_vec()));
    }
    if text_needs_pax(meta.gname.as_bytes(), 32) {
        pax.push(("gname", meta.gname.as_bytes().to_vec()));
    }
    // Numbers that do not fit the field go to pax; the field becomes 0.
    let mut num = |key: &'static str, v: u64, limit: u64| {
        if v >= limit {
            pax.push((key, v.to_string().into_bytes()));
            0
        } else {
            v
        }
    };
    let uid = num("uid", meta.uid, 1 << 21);
    let gid = num("gid", meta.gid, 1 << 21);
    let field_size = num("size", size, 1 << 33);
    let mtime = num("mtime", mtime, 1 << 33);

    let mut out = Vec::with_capacity(3 * BLOCK);
    if !pax.is_empty() {
        let records = pax_records(&pax);
        out.extend_from_slice(&ustar_block(
            b"././@PaxHeader",
            PAX,
            0,
            0,
            0,
            records.len() as u64,
            0,
            b"",
            b"",
            b"",
            None,
        ));
        out.extend_from_slice(&records);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }
    out.extend_from_slice(&ustar_block(
        &name,
        meta.typeflag,
        meta.mode,
        uid,
        gid,
        field_size,
        mtime,
        &meta.linkname,
        meta.uname.as_bytes(),
        meta.gname.as_bytes(),
        dev,
    ));
    Ok(out)
}

/// A streaming tar writer. For each entry: [`Writer::begin`] with the size,
/// exactly that many bytes through [`Writer::write_data`] (or `io::Write`),
/// then [`Writer::end_entry`], which pads to 512. Volumes end with
/// [`Writer::into_inner`] (no end marker, as duplicity's volumes); signature
/// tars with [`Writer::finish`] (two zero blocks, padded to 10240).
pub struct Writer<W: Write> {
    out: W,
    offset: u64,
    /// Data bytes still expected for the open entry (None: no open entry).
    remaining: Option<u64>,
    entry_size: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Writer { out, offset: 0, remaining: None, entry_size: 0 }
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b).map_err(|e| Error::io("writing tar", e))?;
        self.offset += b.len() as u64;
        Ok(())
    }

    /// Writes the header(s) of an entry whose data is `size` bytes.
    pub fn begin(&mut self, name: &[u8], meta: &Meta, size: u64) -> Result<()> {
        if self.remaining.is_some() {
            return Err(Error::other("tar writer: previous entry not ended"));
        }
        let h = header_bytes(name, meta, size)?;
        self.put(&h)?;
        self.remaining = Some(size);
        self.entry_size = size;
        Ok(())
    }

    /// Writes data of the open entry; more than announced is an error.
    pub fn write_data(&mut self, buf: &[u8]) -> Result<()> {
        match self.remaining {
            Some(r) if buf.len() as u64 <= r => {
                self.put(buf)?;
                self.remaining = Some(r - buf.len() as u64);
                Ok(())
            }
            Some(_) => Err(Error::other("tar writer: more data than the entry's size")),
            None => Err(Error::other("tar writer: data outside an entry")),
        }
    }

    /// Closes the open entry (all its data must have been written) and pads it.
    pub fn end_entry(&mut self) -> Result<()> {
        match self.remaining {
            Some(0) => {
                self.remaining = None;
                let pad = (BLOCK - (self.entry_size % BLOCK as u64) as usize) % BLOCK;
                self.put(&[0u8; BLOCK][..pad])
            }
            Some(r) => Err(Error::other(format!("tar writer: entry ended {r} bytes short"))),
            None => Err(Error::other("tar writer: no open entry")),
        }
    }

    /// A whole entry from a byte slice.
    pub fn append(&mut self, name: &[u8], meta: &Meta, data: &[u8]) -> Result<()> {
        self.begin(name, meta, data.len() as u64)?;
        self.write_data(data)?;
        self.end_entry()
    }

    /// A whole entry of `size` bytes read from `data` (which must hold that many).
    pub fn append_reader(&mut self, name: &[u8], meta: &Meta, size: u64, data: impl Read) -> Result<()> {
        self.begin(name, meta, size)?;
        let n = io::copy(&mut data.take(size), self).map_err(io_error)?;
        if n != size {
            return Err(Error::other(format!("tar writer: {} bytes of data, {size} announced", n)));
        }
        self.end_entry()
    }

    /// Flushes and returns the output without an end-of-archive marker (volumes).
    pub fn into_inner(mut self) -> Result<W> {
        if self.remaining.is_some() {
            return Err(Error::other("tar writer: entry not ended"));
        }
        self.out.flush().map_err(|e| Error::io("writing tar", e))?;
        Ok(self.out)
    }

    /// Writes the end of the archive (two zero blocks, then zeros up to a
    /// multiple of 10240 bytes) and returns the output (signature tars).
    pub fn finish(mut self) -> Result<W> {
        if self.remaining.is_some() {
            return Err(Error::other("tar writer: entry not ended"));
        }
        self.put(&[0u8; 2 * BLOCK])?;
        let pad = (RECORD - self.offset % RECORD) % RECORD;
        self.put(&vec![0u8; pad as usize])?;
        self.out.flush().map_err(|e| Error::io("writing tar", e))?;
        Ok(self.out)
    }
}

fn io_error(e: io::Error) -> Error {
    crate::error::carried(e).unwrap_or_else(|e| Error::io("writing tar", e))
}

impl<W: Write> Write for Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_data(buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

// ---------------------------------------------------------------------------
// Entry names (§3.3).

/// The type prefix of an entry name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryType {
    /// `snapshot/`: a complete item.
    Snapshot,
    /// `diff/`: a librsync delta.
    Diff,
    /// `deleted/`: the path no longer exists.
    Deleted,
    /// `signature/` (signature tars): a librsync signature.
    Signature,
    /// `multivol_snapshot/<path>/<k>`: chunk k of a snapshot's content.
    MultivolSnapshot,
    /// `multivol_diff/<path>/<k>`: chunk k of a delta.
    MultivolDiff,
}

impl EntryType {
    /// The prefix without its `/`.
    pub fn prefix(self) -> &'static str {
        match self {
            EntryType::Snapshot => "snapshot",
            EntryType::Diff => "diff",
            EntryType::Deleted => "deleted",
            EntryType::Signature => "signature",
            EntryType::MultivolSnapshot => "multivol_snapshot",
            EntryType::MultivolDiff => "multivol_diff",
        }
    }

    pub fn is_multivol(self) -> bool {
        matches!(self, EntryType::MultivolSnapshot | EntryType::MultivolDiff)
    }

    /// The multivol type of a snapshot or diff (the type itself otherwise).
    pub fn multivol(self) -> EntryType {
        match self {
            EntryType::Snapshot => EntryType::MultivolSnapshot,
            EntryType::Diff => EntryType::MultivolDiff,
            t => t,
        }
    }

    /// The plain type of a multivol type (the type itself otherwise).
    pub fn base(self) -> EntryType {
        match self {
            EntryType::MultivolSnapshot => EntryType::Snapshot,
            EntryType::MultivolDiff => EntryType::Diff,
            t => t,
        }
    }
}

/// The text of an index in a name (`root` for the root).
fn path_part<'a>(index: &'a [u8], root: &'a [u8]) -> &'a [u8] {
    if index::components(index).next().is_none() { root } else { index }
}

/// The name of an entry in a volume: the root is `snapshot/./`,
/// directories end in `/` (not `deleted/` ones), chunks are
/// `multivol_…/<path>/<k>` (give `chunk` with a multivol type).
pub fn volume_entry_name(t: EntryType, index: &[u8], is_dir: bool, chunk: Option<u64>) -> Vec<u8> {
    let mut name = format!("{}/", t.prefix()).into_bytes();
    name.extend_from_slice(path_part(index, b"."));
    if let (true, Some(k)) = (t.is_multivol(), chunk) {
        name.extend_from_slice(format!("/{k}").as_bytes());
    } else if is_dir && t != EntryType::Deleted && !name.ends_with(b"/") {
        name.push(b'/');
    }
    name
}

/// The name of an entry in a signature tar: the root is `snapshot/`,
/// directories end in `/`.
pub fn sigtar_entry_name(t: EntryType, index: &[u8], is_dir: bool) -> Vec<u8> {
    let mut name = format!("{}/", t.prefix()).into_bytes();
    name.extend_from_slice(path_part(index, b""));
    if is_dir && t != EntryType::Deleted && !name.ends_with(b"/") {
        name.push(b'/');
    }
    name
}

/// A parsed entry name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryName {
    pub kind: EntryType,
    /// Normalised index (`.` for the root).
    pub index: Vec<u8>,
    /// Chunk number of multivol entries.
    pub chunk: Option<u64>,
}

/// Parses an entry name of a volume or signature tar. Names with a `..`
/// component or of no known type are [`Kind::Corrupt`] errors.
pub fn parse_entry_name(name: &[u8]) -> Result<EntryName> {
    let bad = |what: &str| Error::new(Kind::Corrupt, format!("tar entry {}: {what}", PathBytes(name.to_vec())));
    const TYPES: [EntryType; 6] = [
        EntryType::Snapshot,
        EntryType::Diff,
        EntryType::Deleted,
        EntryType::Signature,
        EntryType::MultivolDiff,
        EntryType::MultivolSnapshot,
    ];
    let (kind, rest) = TYPES
        .iter()
        .find_map(|&t| name.strip_prefix(t.prefix().as_bytes())?.strip_prefix(b"/").map(|r| (t, r)))
        .ok_or_else(|| bad("unrecognised entry type"))?;
    let (path, chunk) = if kind.is_multivol() {
        let slash = rest.iter().rposition(|&b| b == b'/').ok_or_else(|| bad("multivol entry without chunk number"))?;
        let digits = &rest[slash + 1..];
        let k = (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| bad("multivol entry without chunk number"))?;
        (&rest[..slash], Some(k))
    } else {
        (rest, None)
    };
    let index = index::normalize(path).ok_or_else(|| bad("path with a '..' component refused"))?;
    Ok(EntryName { kind, index, chunk })
}

// ---------------------------------------------------------------------------
// Reading.

/// One entry's header as read: its name (pax/GNU long names applied, raw
/// bytes), metadata and data size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub name: Vec<u8>,
    pub meta: Meta,
    pub size: u64,
}

/// A `tar::Archive` over `r`, reading as duplicity does (stops at the first
/// zero block; end of input between entries ends the archive).
pub fn archive<R: Read>(r: R) -> tar::Archive<R> {
    tar::Archive::new(r)
}

/// The entries of an archive, as `(Item, Data)`. Read an entry's data
/// before asking for the next item (unread data is skipped).
pub struct Entries<'a, R: Read> {
    inner: tar::Entries<'a, R>,
    done: bool,
}

/// Iterates over the entries of `archive` (which must not have been read yet).
pub fn entries<R: Read>(archive: &mut tar::Archive<R>) -> Result<Entries<'_, R>> {
    let inner = archive.entries().map_err(read_error)?;
    Ok(Entries { inner, done: false })
}

impl<'a, R: Read> Iterator for Entries<'a, R> {
    type Item = Result<(Item, Data<'a, R>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = match self.inner.next()? {
            Ok(mut e) => item_of(&mut e).map(|i| {
                let remaining = i.size;
                (i, Data { inner: e, remaining })
            }),
            Err(e) => Err(read_error(e)),
        };
        self.done = r.is_err();
        Some(r)
    }
}

/// An entry's data; reading past the end of input before `size` bytes is
/// an `UnexpectedEof` error.
pub struct Data<'a, R: Read> {
    inner: tar::Entry<'a, R>,
    remaining: u64,
}

impl<'a, R: Read> Data<'a, R> {
    /// The underlying `tar` crate entry.
    pub fn entry(&self) -> &tar::Entry<'a, R> {
        &self.inner
    }
}

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "tar entry data truncated"));
        }
        self.remaining = self.remaining.saturating_sub(n as u64);
        Ok(n)
    }
}

/// Calls `f` for every entry of the tar read from `r`.
pub fn for_each_entry<R: Read>(r: R, mut f: impl FnMut(Item, &mut dyn Read) -> Result<()>) -> Result<()> {
    let mut ar = archive(HeaderGuard::new(r));
    for item in entries(&mut ar)? {
        let (item, mut data) = item?;
        f(item, &mut data)?;
    }
    Ok(())
}

/// The largest extension header (pax `x`/`g`, GNU long name `L`/`K`)
/// accepted: the `tar` crate reads them whole into memory.
pub const MAX_EXTENSION: u64 = 1 << 20;

/// Passes a tar stream through, looking at each header as it goes by: an
/// extension header declaring more than [`MAX_EXTENSION`] bytes is an
/// `InvalidData` error before any of it is read (a gzip bomb of zeros
/// there would otherwise be held whole in memory).
pub struct HeaderGuard<R> {
    inner: R,
    /// Bytes passed on so far.
    pos: u64,
    /// Where the next header (or GNU sparse extension block) starts.
    next: u64,
    /// The block at `next`, read ahead and checked, and how much of it was passed on.
    block: [u8; BLOCK],
    block_len: usize,
    block_done: usize,
    /// The block at `next` is a GNU sparse extension block; the sparse
    /// entry's data (its size) follows the last one.
    sparse_ext: bool,
    sparse_data: u64,
    /// Not a tar we can follow any more (an unreadable size): passed through.
    off: bool,
}

impl<R: Read> HeaderGuard<R> {
    pub fn new(inner: R) -> Self {
        HeaderGuard {
            inner,
            pos: 0,
            next: 0,
            block: [0; BLOCK],
            block_len: 0,
            block_done: 0,
            sparse_ext: false,
            sparse_data: 0,
            off: false,
        }
    }

    /// Reads the block at `next` and works out where the one after it starts.
    fn load_block(&mut self) -> io::Result<()> {
        self.block_len = 0;
        self.block_done = 0;
        while self.block_len < BLOCK {
            match self.inner.read(&mut self.block[self.block_len..]) {
                Ok(0) => break,
                Ok(n) => self.block_len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.block_len < BLOCK {
            return Ok(()); // end of input: the tar crate says what that means
        }
        let b = &self.block;
        if self.sparse_ext {
            self.sparse_ext = b[504] != 0;
            self.next += BLOCK as u64;
            if !self.sparse_ext {
                self.next = self.next.saturating_add(self.sparse_data);
            }
            return Ok(());
        }
        if b.iter().all(|&x| x == 0) {
            self.next += BLOCK as u64;
            return Ok(());
        }
        let Some(size) = numeric(&b[124..136]) else {
            self.off = true;
            return Ok(());
        };
        let flag = b[156];
        if matches!(flag, b'x' | b'g' | b'L' | b'K') && size > MAX_EXTENSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "an extension header ('{}') of {size} bytes, more than the {MAX_EXTENSION} accepted",
                    flag as char
                ),
            ));
        }
        let data = size.div_ceil(512).saturating_mul(512);
        self.sparse_ext = flag == b'S' && b[482] != 0;
        self.sparse_data = data;
        // A sparse entry's extension blocks come first, its data after them.
        self.next = self.next.saturating_add(BLOCK as u64).saturating_add(if self.sparse_ext { 0 } else { data });
        Ok(())
    }
}

/// A header's numeric field: octal text, or base-256 (high bit set).
fn numeric(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(f[0] & 0x7f);
        for &x in &f[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(x))?;
        }
        return Some(v);
    }
    let t: Vec<u8> = f.iter().copied().take_while(|&c| c != 0).filter(|&c| c != b' ').collect();
    if t.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&t).ok()?, 8).ok()
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.off {
            return self.inner.read(buf);
        }
        if self.pos == self.next && self.block_done == self.block_len {
            self.load_block()?;
            if self.block_len == 0 {
                return Ok(0);
            }
        }
        if self.block_done < self.block_len {
            let n = buf.len().min(self.block_len - self.block_done);
            buf[..n].copy_from_slice(&self.block[self.block_done..self.block_done + n]);
            self.block_done += n;
            self.pos += n as u64;
            if self.block_done == self.block_len && self.block_len < BLOCK {
                self.off = true; // a short last block: nothing more to look at
            }
            return Ok(n);
        }
        // Data up to the next header.
        let room = (self.next - self.pos).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..room])?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn read_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::Other
        | io::ErrorKind::InvalidData
        | io::ErrorKind::InvalidInput
        | io::ErrorKind::UnexpectedEof => Error::new(Kind::Corrupt, format!("reading tar: {e}")),
        _ => Error::io("reading tar", e),
    }
}

fn item_of<R: Read>(e: &mut tar::Entry<'_, R>) -> Result<Item> {
    let name = e.path_bytes().into_owned();
    let linkname = e.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
    let size = e.size();
    let h = e.header();
    let bad = |what: &str| Error::new(Kind::Corrupt, format!("tar entry {}: {what}", PathBytes(name.clone())));
    let mut typeflag = h.entry_type().as_byte();
    if typeflag == b'\0' && name.ends_with(b"/") {
        typeflag = DIR; // old-style directory, as tarfile reads it
    }
    let mode = h.mode().map_err(|_| bad("bad mode field"))? & 0o7777;
    let uid = h.uid().map_err(|_| bad("bad uid field"))?;
    let gid = h.gid().map_err(|_| bad("bad gid field"))?;
    let mut mtime = h.mtime().map_err(|_| bad("bad mtime field"))? as i64;
    let mut uname = h.username_bytes().map(|u| String::from_utf8_lossy(u).into_owned()).unwrap_or_default();
    let mut gname = h.groupname_bytes().map(|g| String::from_utf8_lossy(g).into_owned()).unwrap_or_default();
    let (mut devmajor, mut devminor) = (0, 0);
    if matches!(typeflag, CHAR | BLOCKDEV) {
        devmajor = h.device_major().map_err(|_| bad("bad device field"))?.unwrap_or(0);
        devminor = h.device_minor().map_err(|_| bad("bad device field"))?.unwrap_or(0);
    }
    if let Some(pax) = e.pax_extensions().map_err(read_error)? {
        for ext in pax {
            let ext = ext.map_err(read_error)?;
            let value = ext.value_bytes();
            match ext.key_bytes() {
                b"mtime" => {
                    let s = std::str::from_utf8(value).ok();
                    let whole = s.map(|s| s.split('.').next().unwrap_or(s));
                    mtime = whole.and_then(|w| w.parse().ok()).ok_or_else(|| bad("bad pax mtime"))?;
                }
                b"uname" => uname = String::from_utf8_lossy(value).into_owned(),
                b"gname" => gname = String::from_utf8_lossy(value).into_owned(),
                _ => {}
            }
        }
    }
    let meta = Meta { typeflag, mode, uid, gid, mtime, uname, gname, linkname, devmajor, devminor };
    Ok(Item { name, meta, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_guard_passes_tars_and_stops_big_extensions() {
        let t = sample_tar();
        for step in [1, 7, 512, 100_000] {
            let mut g = HeaderGuard::new(&t[..]);
            let mut out = Vec::new();
            let mut buf = vec![0u8; step];
            loop {
                let n = g.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert!(out == t, "read in pieces of {step}");
        }
        for (flag, size, bad) in [(b'x', b"00010000000\0", true), (b'L', b"00004000000\0", false)] {
            let mut h = [0u8; BLOCK];
            h[..4].copy_from_slice(b"name");
            h[124..136].copy_from_slice(size);
            h[156] = flag;
            let r = HeaderGuard::new(&h[..]).read_to_end(&mut Vec::new());
            assert_eq!(r.is_err(), bad, "{}", flag as char);
        }
    }

    fn meta(typeflag: u8, mode: u32) -> Meta {
        Meta {
            typeflag,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_704_164_645,
            uname: "root".into(),
            gname: "root".into(),
            linkname: Vec::new(),
            devmajor: 0,
            devminor: 0,
        }
    }

    /// The header of `snapshot/a.txt` shown in §3.2.
    #[test]
    fn spec_header_example() {
        let h = header_bytes(b"snapshot/a.txt", &meta(REGULAR, 0o640), 12).unwrap();
        assert_eq!(h.len(), 512);
        assert_eq!(&h[0..14], b"snapshot/a.txt");
        assert_eq!(&h[100..156], b"0000640\x000000000\x000000000\x0000000000014\x0014544676445\x00012446\x00 ");
        assert_eq!(&h[156..157], b"0");
        assert_eq!(&h[257..269], b"ustar\x0000root");
        assert!(h[329..345].iter().all(|&b| b == 0));
    }

    /// The pax header of the non-UTF-8 name shown in §3.2.
    #[test]
    fn spec_pax_example() {
        let mut m = meta(REGULAR, 0o644);
        m.mtime = 1_704_164_645;
        let h = header_bytes(b"snapshot/caf\xe9.txt", &m, 24).unwrap();
        assert_eq!(h.len(), 3 * 512);
        assert_eq!(&h[0..14], b"././@PaxHeader");
        assert_eq!(&h[124..136], b"00000000057\x00");
        assert_eq!(&h[148..157], b"010217\x00 x");
        assert_eq!(&h[512..559], b"21 hdrcharset=BINARY\n26 path=snapshot/caf\xe9.txt\n");
        assert_eq!(&h[1024..1041], b"snapshot/caf?.txt");
    }

    #[test]
    fn text_fields() {
        let mut f = [0u8; 12];
        put_text(&mut f, "ü\u{1F600}x\u{ff}".as_bytes());
        assert_eq!(&f, b"??x?\0\0\0\0\0\0\0\0");
        let mut f = [0u8; 6];
        put_text(&mut f, b"\xe2\x82a\xed\xa0\x80bcdef");
        assert_eq!(&f, b"??a???");
    }

    #[test]
    fn pax_length_rule() {
        // 9 + 1 + 90 + ... : lengths around the digit-count boundaries.
        for len in [0usize, 1, 5, 90, 91, 92, 93, 94, 95, 100, 990, 994, 995, 996, 997, 1000] {
            let rec = pax_records(&[("path", vec![b'a'; len])]);
            let sp = rec.iter().position(|&b| b == b' ').unwrap();
            let n: usize = std::str::from_utf8(&rec[..sp]).unwrap().parse().unwrap();
            assert_eq!(n, rec.len(), "value length {len}");
        }
    }

    #[test]
    fn writer_framing() {
        let mut w = Writer::new(Vec::new());
        w.append(b"snapshot/a", &meta(REGULAR, 0o644), b"x").unwrap();
        assert_eq!(w.offset(), 1024);
        w.begin(b"snapshot/b", &meta(REGULAR, 0o644), 3).unwrap();
        assert!(w.write_data(b"abcd").is_err());
        assert!(w.end_entry().is_err(), "short entry");
        w.write_data(b"abc").unwrap();
        assert!(w.begin(b"x", &meta(REGULAR, 0), 0).is_err(), "still open");
        w.end_entry().unwrap();
        w.append_reader(b"snapshot/c", &meta(REGULAR, 0o644), 512, &[7u8; 600][..]).unwrap();
        assert!(w.append_reader(b"snapshot/d", &meta(REGULAR, 0o644), 5, &b"abc"[..]).is_err());
        let mut w = Writer::new(Vec::new());
        w.append(b"snapshot/", &meta(DIR, 0o755), b"").unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len(), 10_240);
        assert_eq!(&out[0..10], b"snapshot/\0");
        let empty = Writer::new(Vec::new()).finish().unwrap();
        assert_eq!(empty, vec![0u8; 10_240], "an empty new-sig");
    }

    #[test]
    fn names() {
        use EntryType::*;
        assert_eq!(volume_entry_name(Snapshot, b".", true, None), b"snapshot/./");
        assert_eq!(sigtar_entry_name(Snapshot, b".", true), b"snapshot/");
        assert_eq!(volume_entry_name(Snapshot, b"dir1", true, None), b"snapshot/dir1/");
        assert_eq!(sigtar_entry_name(Snapshot, b"dir1", true), b"snapshot/dir1/");
        assert_eq!(volume_entry_name(Deleted, b"dir1/nested", true, None), b"deleted/dir1/nested");
        assert_eq!(volume_entry_name(Diff, b"a.txt", false, None), b"diff/a.txt");
        assert_eq!(volume_entry_name(MultivolSnapshot, b"big.bin", false, Some(49)), b"multivol_snapshot/big.bin/49");
        assert_eq!(sigtar_entry_name(Signature, b"caf\xe9.txt", false), b"signature/caf\xe9.txt");

        let p = |n: &[u8]| parse_entry_name(n).unwrap();
        assert_eq!(p(b"snapshot/./"), EntryName { kind: Snapshot, index: b".".to_vec(), chunk: None });
        assert_eq!(p(b"snapshot/"), EntryName { kind: Snapshot, index: b".".to_vec(), chunk: None });
        assert_eq!(p(b"snapshot/."), EntryName { kind: Snapshot, index: b".".to_vec(), chunk: None });
        assert_eq!(p(b"snapshot/dir1/"), EntryName { kind: Snapshot, index: b"dir1".to_vec(), chunk: None });
        assert_eq!(p(b"deleted/dir1/nested").index, b"dir1/nested");
        assert_eq!(
            p(b"signature/caf\xe9.txt"),
            EntryName { kind: Signature, index: b"caf\xe9.txt".to_vec(), chunk: None }
        );
        assert_eq!(
            p(b"multivol_diff/big.bin/4"),
            EntryName { kind: MultivolDiff, index: b"big.bin".to_vec(), chunk: Some(4) }
        );
        assert_eq!(p(b"multivol_snapshot/a/b/12").index, b"a/b");
        for bad in [
            &b"snapshot/../etc/passwd"[..],
            b"diff/a/../../x",
            b"multivol_diff/../x/1",
            b"foo/bar",
            b"snapshots/x",
            b"multivol_diff/big.bin",
            b"multivol_diff/big.bin/",
            b"multivol_diff/big.bin/x1",
            b"multivol_diff/big/99999999999999999999999",
        ] {
            let e = parse_entry_name(bad).unwrap_err();
            assert_eq!(e.kind, Kind::Corrupt, "{bad:?}");
        }
        for (t, idx, dir, k) in [
            (Snapshot, &b"a b/c"[..], false, None),
            (MultivolDiff, b"x/y", false, Some(3)),
            (Snapshot, b".", true, None),
        ] {
            let n = parse_entry_name(&volume_entry_name(t, idx, dir, k)).unwrap();
            assert_eq!((n.kind, n.index.as_slice(), n.chunk), (t, idx, k));
        }
    }

    #[test]
    fn entry_meta_round_trip() {
        let mut e = Entry::new(b"dev".to_vec(), FileType::Char);
        (e.mode, e.uid, e.gid, e.mtime, e.devmajor, e.devminor) = (0o100644, 5, 6, 7, Some(1), Some(3));
        let m = Meta::from_entry(&e).unwrap();
        assert_eq!((m.typeflag, m.mode), (CHAR, 0o644));
        let back = m.to_entry(b"dev", 0).unwrap();
        assert_eq!(back.mode, 0o644);
        assert_eq!((back.devmajor, back.devminor), (Some(1), Some(3)));
        assert!(Meta::from_entry(&Entry::new(b"s".to_vec(), FileType::Socket)).is_err());
        let mut hl = Meta::deleted();
        hl.typeflag = HARDLINK;
        assert_eq!(hl.to_entry(b"x", 0).unwrap_err().kind, Kind::Corrupt);
        let mut big = Meta::deleted();
        big.uid = 1 << 40;
        assert!(big.to_entry(b"x", 0).is_err());
    }

    fn sample_tar() -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.append(b"snapshot/.", &meta(DIR, 0o755), b"").unwrap();
        let mut m = meta(REGULAR, 0o600);
        m.uid = 3_000_000;
        m.uname = "jösé".into();
        m.mtime = -5;
        w.append(b"snapshot/caf\xe9.txt", &m, b"hello").unwrap();
        let mut l = meta(SYMLINK, 0o777);
        l.linkname = vec![b'x'; 150];
        w.append(&[b'd'; 150], &l, b"").unwrap();
        w.into_inner().unwrap()
    }

    #[test]
    fn read_back() {
        let tar = sample_tar();
        let mut got = Vec::new();
        for_each_entry(&tar[..], |item, data| {
            let mut d = Vec::new();
            data.read_to_end(&mut d).unwrap();
            got.push((item, d));
            Ok(())
        })
        .unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0.name, b"snapshot/./");
        assert_eq!(got[0].0.meta.typeflag, DIR);
        let (f, d) = &got[1];
        assert_eq!(f.name, b"snapshot/caf\xe9.txt");
        assert_eq!((f.meta.uid, f.meta.uname.as_str(), f.meta.mtime, f.size), (3_000_000, "jösé", 0, 5));
        assert_eq!(d, b"hello");
        assert_eq!(got[2].0.name, vec![b'd'; 150]);
        assert_eq!(got[2].0.meta.linkname, vec![b'x'; 150]);

        // Stops at the first zero block, whatever follows.
        let mut t = tar.clone();
        t.extend_from_slice(&[0u8; 512]);
        t.extend_from_slice(&tar);
        let mut n = 0;
        for_each_entry(&t[..], |_, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 3);
        // An empty tar.
        for_each_entry(&b""[..], |_, _| Err(Error::other("no entries expected"))).unwrap();
        // Truncated or damaged: errors, not panics.
        for cut in [100, 600, 1500, tar.len() - 1] {
            let r = for_each_entry(&tar[..cut], |_, data| {
                io::copy(data, &mut io::sink()).map_err(|e| Error::new(Kind::Corrupt, e.to_string()))?;
                Ok(())
            });
            assert!(r.is_err(), "cut at {cut}");
        }
        let mut bad = tar.clone();
        bad[10] ^= 1;
        assert_eq!(for_each_entry(&bad[..], |_, _| Ok(())).unwrap_err().kind, Kind::Corrupt);
    }

    /// Writes the same entries with CPython's tarfile (PAX_FORMAT, as
    /// duplicity does) and with [`Writer`], and compares the bytes.
    #[test]
    fn byte_identical_to_python_tarfile() {
        const SCRIPT: &str = r#"
import io, json, sys, tarfile
buf = io.BytesIO()
tf = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")
for e in json.load(sys.stdin):
    dec = lambda h: bytes.fromhex(h).decode("utf-8", "surrogateescape")
    ti = tarfile.TarInfo(dec(e["name"]))
    ti.type = e["type"].encode()
    ti.mode, ti.uid, ti.gid, ti.mtime = e["mode"], e["uid"], e["gid"], e["mtime"]
    ti.uname, ti.gname, ti.linkname = e["uname"], e["gname"], dec(e["linkname"])
    ti.devmajor, ti.devminor = e["devmajor"], e["devminor"]
    data = bytes.fromhex(e["data"])
    ti.size = len(data)
    tf.addfile(ti, io.BytesIO(data) if data else None)
tf.close()
sys.stdout.buffer.write(buf.getvalue())
"#;
        let probe = std::process::Command::new("python3").arg("--version").output();
        if probe.map(|o| !o.status.success()).unwrap_or(true) {
            eprintln!("python3 not found: skipping the tarfile comparison");
            return;
        }

        let m = |typeflag: u8, mode: u32, f: &dyn Fn(&mut Meta)| {
            let mut x = meta(typeflag, mode);
            f(&mut x);
            x
        };
        let long_name = format!("snapshot/{}/{}", "d".repeat(60), "f".repeat(80)).into_bytes();
        let entries: Vec<(Vec<u8>, Meta, Vec<u8>)> = vec![
            (b"snapshot/.".to_vec(), m(DIR, 0o755, &|_| {}), vec![]),
            (b"snapshot/a.txt".to_vec(), m(REGULAR, 0o640, &|_| {}), b"hello world\n".to_vec()),
            (b"snapshot/caf\xe9.txt".to_vec(), m(REGULAR, 0o644, &|_| {}), b"latin-1 name".to_vec()),
            ("snapshot/ünïcödé.txt".as_bytes().to_vec(), m(REGULAR, 0o644, &|_| {}), vec![b'u'; 512]),
            (long_name.clone(), m(REGULAR, 0o600, &|_| {}), vec![b'l'; 513]),
            (vec![b'x'; 100], m(REGULAR, 0o600, &|_| {}), vec![]),
            (
                b"snapshot/link".to_vec(),
                m(SYMLINK, 0o777, &|x| x.linkname = format!("/{}", "t".repeat(130)).into_bytes()),
                vec![],
            ),
            (b"snapshot/\xffdir".to_vec(), m(DIR, 0o700, &|x| x.linkname = b"ignored \xfe target".to_vec()), vec![]),
            (b"snapshot/chardev".to_vec(), m(CHAR, 0o644, &|x| (x.devmajor, x.devminor) = (1, 3)), vec![]),
            (
                b"snapshot/blockdev".to_vec(),
                m(BLOCKDEV, 0o660, &|x| (x.devmajor, x.devminor) = (259, 1_048_575)),
                vec![],
            ),
            (b"snapshot/fifo".to_vec(), m(FIFO, 0o644, &|_| {}), vec![]),
            (
                b"snapshot/foreign".to_vec(),
                m(REGULAR, 0o4755, &|x| {
                    (x.uid, x.gid) = (3_000_000, 2_097_151);
                    (x.uname, x.gname) = (String::new(), String::new());
                }),
                b"setuid".to_vec(),
            ),
            (
                b"snapshot/owners".to_vec(),
                m(REGULAR, 0o644, &|x| {
                    x.uname = "jösé".into();
                    x.gname = "g".repeat(33);
                    x.mtime = 8_589_934_592;
                }),
                vec![],
            ),
            (b"deleted/dir1/nested".to_vec(), Meta::deleted(), vec![]),
            (
                b"multivol_snapshot/big.bin/1".to_vec(),
                m(REGULAR, 0o644, &|x| x.mtime = 0),
                (0..1000u32).map(|i| i as u8).collect(),
            ),
        ];

        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let json: Vec<serde_json::Value> = entries
            .iter()
            .map(|(name, x, data)| {
                serde_json::json!({
                    "name": hex(name), "type": (x.typeflag as char).to_string(), "mode": x.mode,
                    "uid": x.uid, "gid": x.gid, "mtime": x.mtime, "uname": x.uname, "gname": x.gname,
                    "linkname": hex(&x.linkname), "devmajor": x.devmajor, "devminor": x.devminor,
                    "data": hex(data),
                })
            })
            .collect();
        let mut child = std::process::Command::new("python3")
            .args(["-c", SCRIPT])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(serde_json::to_string(&json).unwrap().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "python failed");
        let want = out.stdout;

        let mut w = Writer::new(Vec::new());
        for (name, x, data) in &entries {
            w.append(name, x, data).unwrap();
        }
        let got = w.finish().unwrap();
        assert_eq!(got.len(), want.len());
        for (i, (a, b)) in got.chunks(512).zip(want.chunks(512)).enumerate() {
            assert_eq!(
                a,
                b,
                "block {i} differs:\n ours {:?}\n python {:?}",
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b)
            );
        }

        // Our reader gets everything back.
        let mut i = 0;
        for_each_entry(&got[..], |item, data| {
            let (name, x, content) = &entries[i];
            let mut want_name = name.clone();
            if x.typeflag == DIR {
                want_name.push(b'/');
            }
            assert_eq!(item.name, want_name);
            let mut want_meta = x.clone();
            want_meta.mode &= 0o7777;
            if !matches!(x.typeflag, CHAR | BLOCKDEV) {
                (want_meta.devmajor, want_meta.devminor) = (0, 0);
            }
            if x.typeflag != SYMLINK {
                want_meta.linkname = item.meta.linkname.clone();
            }
            assert_eq!(item.meta, want_meta, "{}", String::from_utf8_lossy(name));
            let mut d = Vec::new();
            data.read_to_end(&mut d).map_err(|e| Error::other(e.to_string()))?;
            assert_eq!(&d, content);
            i += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(i, entries.len());
    }

    /// GNU long names (`././@LongLink`), as duplicity on old Pythons wrote.
    #[test]
    fn reads_gnu_format() {
        const SCRIPT: &str = r#"
import io, sys, tarfile
buf = io.BytesIO()
tf = tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape")
ti = tarfile.TarInfo(("snapshot/" + "n" * 120 + "/caf").encode().decode() + b"\xe9".decode("utf-8", "surrogateescape"))
ti.size, ti.mtime, ti.uid = 3, 1704164645, 5
tf.addfile(ti, io.BytesIO(b"abc"))
ti = tarfile.TarInfo("snapshot/l")
ti.type, ti.linkname = tarfile.SYMTYPE, "/" + "t" * 150
tf.addfile(ti)
sys.stdout.buffer.write(buf.getvalue())  # not closed: no end marker
"#;
        let Ok(out) = std::process::Command::new("python3").args(["-c", SCRIPT]).output() else {
            eprintln!("python3 not found: skipping the GNU tar test");
            return;
        };
        assert!(out.status.success());
        let mut items = Vec::new();
        for_each_entry(&out.stdout[..], |item, _| {
            items.push(item);
            Ok(())
        })
        .unwrap();
        assert_eq!(items.len(), 2);
        let mut want = format!("snapshot/{}/caf", "n".repeat(120)).into_bytes();
        want.push(0xe9);
        assert_eq!(items[0].name, want);
        assert_eq!((items[0].size, items[0].meta.mtime, items[0].meta.uid), (3, 1_704_164_645, 5));
        assert_eq!(items[1].meta.linkname, format!("/{}", "t".repeat(150)).into_bytes());
        assert_eq!(parse_entry_name(&items[0].name).unwrap().index, want[9..].to_vec());
    }
}
