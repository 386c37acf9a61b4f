//! dup-pack: cut a change stream into duplicity difftar volumes, the
//! signature tar and the manifest (FORMAT-duplicity.md §2, §3, §4), and emit
//! them as `file` records: each volume as soon as it is finished, then the
//! signature tar, then the manifest. Compression and encryption run beside
//! the packing ([`ParBlocks`]); a full volume is sealed and finishes while
//! the next one is built. With [`Resume`], an interrupted run's unfinished
//! set is continued.

use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;

use flate2::{Compression, Crc, GzBuilder};

pub use crate::crypto::DEFAULT_LEVEL;
use crate::crypto::{self, Keys};
use crate::dupfmt::hex;
use crate::dupfmt::index;
use crate::dupfmt::manifest::{self, Change, VolumeInfo};
use crate::dupfmt::names::{FileKind, FileName, Naming, Suffix};
use crate::dupfmt::tar::{self as dtar, EntryType, Meta};
use crate::error::{Error, Result, content_error};
use crate::io::cache::Cache;
use crate::io::cache::journal;
use crate::io::cache::seek::{self, Mark, SeekTable};
use crate::io::parblock::{Blocks, Deflaters, Job, ParBlocks};
use crate::io::spool::{HashingSpool, Spool};
use crate::io::storage::Storage;
use crate::joblog::note;
use crate::progress::{Event, Progress};
use crate::record::{
    Entry, FileRole, FileType, OrderCheck, PathBytes, Reader, Record, Stored, StreamHead, StreamKind, Writer,
};

/// Content is stored in pieces of this size (§3.5); keep it: duplicity's
/// resume relies on it.
pub const PIECE: usize = 65536;

pub struct Options {
    /// Volume size in bytes (duplicity: `--volsize` MiB, default 200).
    pub volsize: u64,
    /// gzip volumes and the signature tar (`--no-compression` turns it off).
    pub compress: bool,
    /// Deflate level, 0-9, of gzip and of the compression inside OpenPGP
    /// ([`DEFAULT_LEVEL`]).
    pub compress_level: u32,
    /// Time of this backup (T of a full, T2 of an incremental); `None`:
    /// now, after waiting (up to a few seconds, as duplicity does) until it
    /// is later than the end of the chain the stream extends.
    pub time: Option<i64>,
    pub naming: Naming,
    /// Manifest `Hostname`.
    pub hostname: String,
    /// Manifest `Localdir` (default: the stream's source).
    pub localdir: Option<Vec<u8>>,
    /// Encrypt everything with these keys (then nothing is gzipped).
    pub keys: Option<Keys>,
    /// Continue the unfinished set an interrupted run of this backup left.
    pub resume: Option<Resume>,
    /// For an incremental whose basis carries a passphrase check (see
    /// [`crate::record::Record::Header`]), refuse to write unless the
    /// passphrase of `keys` opens it.
    pub check_passphrase: bool,
    /// Stops the run between records ([`crate::Kind::Interrupted`]): the
    /// output ends after the volumes packed so far, without a manifest, so
    /// dup-put keeps them for the resume.
    pub cancel: crate::cancel::Cancel,
}

/// What an interrupted run of the same backup stored: dup-put's journal,
/// kept to the files the backend still has. The newest unfinished set of
/// the same kind (a full, or an incremental from the same basis) gives this
/// backup its time, and each volume or signature file packed again with
/// the same content (the same SHA1 stored; for encrypted files, whose
/// ciphertext differs on every run, the same plaintext BLAKE3) is not
/// sent again: it goes out as a `stored` record, and the manifest lists
/// the stored file's SHA1.
#[derive(Debug, Default, Clone)]
pub struct Resume {
    pub stored: Vec<Resumed>,
}

/// A file of an unfinished set: what the journal notes, and its name parsed
/// (once, by [`Resume::load`]).
#[derive(Debug, Clone)]
pub struct Resumed {
    pub noted: journal::Journaled,
    pub file: FileName,
}

impl Resume {
    /// What dup-put's journal in `cache` notes as stored and the backend
    /// still has (with the noted size). The backend is listed only when
    /// the journal notes something.
    pub fn load(storage: &Storage, cache: &Cache) -> Result<Resume> {
        let noted = journal::journaled(cache)?;
        if noted.is_empty() {
            return Ok(Resume::default());
        }
        let listing: HashMap<String, u64> = storage.list()?.into_iter().collect();
        // A set whose manifest is on the backend is published (maybe by
        // another run under the same name): not to be continued.
        let naming = Naming::default();
        let published: Vec<_> = listing.keys().filter_map(|n| naming.parse(n)).filter(|f| f.is_manifest()).collect();
        Ok(Resume {
            stored: noted
                .into_iter()
                .filter(|j| listing.get(&j.name) == Some(&j.size))
                .filter_map(|j| naming.parse(&j.name).map(|file| Resumed { noted: j, file }))
                .filter(|r| !published.iter().any(|m| m.same_set(&r.file)))
                .collect(),
        })
    }

    /// The time of the newest unfinished set a backup continues: a full
    /// (`basis` None) or an incremental from `basis`.
    pub fn time(&self, basis: Option<i64>) -> Option<i64> {
        self.stored
            .iter()
            .map(|r| &r.file)
            .filter(|f| match basis {
                None => f.kind.is_full(),
                Some(t1) => !f.kind.is_full() && f.start == t1,
            })
            .map(|f| f.end)
            .max()
    }

    /// The stored file `name` when it has this content.
    fn find(&self, name: &str, sha1: &str, plain: Option<&str>) -> Option<Stored> {
        let j = &self.stored.iter().find(|r| r.noted.name == name)?.noted;
        let same = match (plain, &j.plain) {
            (Some(ours), Some(theirs)) => ours == theirs,
            (Some(_), None) => false,
            (None, _) => j.sha1 == sha1,
        };
        same.then(|| Stored { size: j.size, sha1: j.sha1.clone() })
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub volumes: u64,
    /// Bytes of volumes as stored.
    pub volume_bytes: u64,
    pub entries: u64,
}

/// The machine's host name, as duplicity writes it in manifests.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return String::new();
    }
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Where a volume or signature file is packed: spooled and hashed.
type Sink = HashingSpool;

/// A block as a gzip member: members concatenate into what gzip readers,
/// duplicity included, read as one stream. As CPython's gzip: no name, OS
/// 255, the level asked for; the time is the backup's, so the same backup
/// packs to the same bytes (see put.rs on resuming). A compressor from
/// `z`; into `out`.
fn gzip_member(data: &[u8], mtime: u32, level: u32, z: &Deflaters, mut out: Vec<u8>) -> Vec<u8> {
    let level = level.min(9);
    out.clear();
    out.reserve(data.len() / 2 + 64);
    let xfl = match level {
        9 => 2,
        0 | 1 => 4,
        _ => 0,
    };
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0]);
    out.extend_from_slice(&mtime.to_le_bytes());
    out.extend_from_slice(&[xfl, 255]);
    if !z.deflate(level, data, true, &mut out) {
        // Cannot happen with valid parameters; flate2's own writer then.
        let mut g = GzBuilder::new().mtime(mtime).operating_system(255).write(Vec::new(), Compression::new(level));
        let _ = g.write_all(data);
        return g.finish().unwrap_or_default();
    }
    let mut crc = Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// A volume (or signature tar) being written: plain, gzip, or OpenPGP
/// (compression inside, as gpg does; never gzip first). Compressed forms are
/// built in parallel (see [`ParBlocks`]) and finish on their own thread.
enum Enc<'k> {
    Plain(Sink),
    Gzip(ParBlocks<Sink>),
    /// With the plaintext's BLAKE3 (see [`Resume`]; a quarter of SHA-256's
    /// cost, which was 6% of dup-pack's time).
    Gpg(Box<crypto::EncryptWriter<'k, Sink>>, Box<blake3::Hasher>),
}

impl<'k> Enc<'k> {
    /// `mtime`: the backup time, for gzip headers.
    fn new(compress: bool, level: u32, keys: Option<&'k Keys>, mtime: i64) -> Result<Enc<'k>> {
        if let Some(k) = keys {
            return Ok(Enc::Gpg(Box::new(crypto::encryptor_with_level(k, Sink::new(), level)?), Box::default()));
        }
        if !compress {
            return Ok(Enc::Plain(Sink::new()));
        }
        let mtime = u32::try_from(mtime).unwrap_or(0);
        let z = Deflaters::default();
        let job: Job = Arc::new(move |data: &[u8], last: bool, out: Vec<u8>| {
            // The writer's end always gets a block; an empty one adds nothing.
            if last && data.is_empty() { Vec::new() } else { gzip_member(data, mtime, level, &z, out) }
        });
        Ok(Enc::Gzip(ParBlocks::new(job, move |blocks: Blocks| {
            let mut sink = Sink::new();
            blocks.copy_to(&mut sink)?;
            // Nothing to compress (an incremental without changes): still a
            // gzip stream, as duplicity writes, not an empty file that no
            // gzip reader takes.
            if sink.spool.is_empty() {
                sink.write_all(&gzip_member(&[], mtime, level, &Deflaters::default(), Vec::new()))
                    .map_err(|e| Error::io("writing a volume", e))?;
            }
            Ok(sink)
        })))
    }

    /// Bytes stored so far (estimated for blocks still being compressed;
    /// the same for the same input on every run).
    fn stored(&mut self) -> u64 {
        match self {
            Enc::Plain(s) => s.spool.len(),
            Enc::Gzip(g) => g.estimated_size(),
            Enc::Gpg(g, _) => g.estimated_size(),
        }
    }

    /// Ends the input; compression and encryption may still be running.
    fn seal(&mut self) -> Result<()> {
        match self {
            Enc::Plain(_) => Ok(()),
            Enc::Gzip(g) => g.seal(),
            Enc::Gpg(g, _) => g.seal(),
        }
    }

    /// Whether a sealed file is complete.
    fn is_done(&self) -> bool {
        match self {
            Enc::Plain(_) => true,
            Enc::Gzip(g) => g.is_done(),
            Enc::Gpg(g, _) => g.is_done(),
        }
    }

    /// The stored bytes, and an encrypted file's plaintext BLAKE3 and layout.
    fn finish(mut self) -> Result<Packed> {
        self.seal()?;
        match self {
            Enc::Plain(sink) => Ok(Packed { sink, plain: None, layout: None }),
            Enc::Gzip(g) => Ok(Packed { sink: g.wait()?, plain: None, layout: None }),
            Enc::Gpg(g, h) => {
                let (sink, layout) = g.wait()?;
                Ok(Packed { sink, plain: Some(h.finalize().to_hex().to_string()), layout: Some(layout) })
            }
        }
    }
}

impl Write for Enc<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Enc::Plain(s) => s.write(buf),
            Enc::Gpg(g, h) => {
                let n = g.write(buf)?;
                h.update(&buf[..n]);
                Ok(n)
            }
            Enc::Gzip(g) => g.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A file packed: its bytes, and an encrypted file's plaintext BLAKE3
/// (see [`Resume`]) and layout (see [`SeekTable`]).
struct Packed {
    sink: Sink,
    plain: Option<String>,
    layout: Option<crypto::Layout>,
}

/// `plain` encrypted by `w` (an encrypting [`Enc`]).
fn encrypt(mut w: Enc, plain: &mut Spool) -> Result<Packed> {
    io::copy(&mut plain.reader().map_err(|e| Error::io("reading back", e))?, &mut w)
        .map_err(|e| content_error("encrypting", e))?;
    w.finish()
}

/// A volume whose input is complete, finishing (compression, encryption)
/// while the next one is built; published when done, and always before the
/// next.
struct Sealed<'k> {
    enc: Enc<'k>,
    number: u64,
    range: Range,
    marks: Vec<Mark>,
}

/// Where the current volume starts and ends (for its manifest block).
#[derive(Default)]
struct Range {
    start: Option<(Vec<u8>, Option<u64>)>,
    end: Option<(Vec<u8>, Option<u64>)>,
}

struct Pack<'a, W: Write> {
    out: Writer<W>,
    opts: &'a Options,
    progress: &'a dyn Progress,
    /// (T1, T2): equal for a full.
    times: (i64, i64),
    full: bool,
    suffix: Suffix,
    vol: dtar::Writer<Enc<'a>>,
    vol_number: u64,
    range: Range,
    /// Entry headers of the volume for its seek table (encrypted volumes),
    /// and the block the last one was estimated in.
    marks: Vec<Mark>,
    marked_block: Option<u64>,
    sealed: Option<Sealed<'a>>,
    sig: dtar::Writer<Enc<'a>>,
    /// The signature tar's and the manifest's encryptors (encrypted sets),
    /// made at the start: each derives the passphrase's key (tens of ms of
    /// SHA-256) on a thread of its own while the packer waits for input.
    sealers: Option<(Enc<'a>, Enc<'a>)>,
    manifest: Vec<u8>,
    /// The manifest's `Filelist` lines so far (spooled: one per changed
    /// file), and how many.
    filelist: Spool,
    listed: u64,
    stats: Stats,
    piece: Vec<u8>,
}

/// Runs the packing; returns the output writer (finished) and stats.
pub fn run<R: BufRead, W: Write>(
    input: &mut Reader<R>,
    out: Writer<W>,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<(W, Stats)> {
    input.expect_kind(&[StreamKind::Changes])?;
    let basis = input.head().basis_time;
    if opts.check_passphrase && basis.is_some() {
        check_chain_passphrase(opts, input.head())?;
    }
    let t2 = set_time(opts, basis)?;
    let localdir = opts.localdir.clone().or_else(|| input.source().map(<[u8]>::to_vec)).unwrap_or_default();
    let mut p = Pack::new(out, opts, progress, basis, t2, &localdir)?;
    progress.event(Event::Start { stage: "pack".into() });
    let mut order = OrderCheck::default();
    while let Some(rec) = input.next_item()? {
        if opts.cancel.is_cancelled() {
            p.stop()?;
            return Err(crate::cancel::interrupted());
        }
        match &rec {
            Record::Snapshot(e) | Record::Diff(e) => order.next(&e.path.0)?,
            Record::Deleted { path, .. } => order.next(&path.0)?,
            _ => {}
        }
        p.record(rec, input)?;
    }
    p.finish()
}

/// Refuses a passphrase other than the one dup-sig opened the chain with
/// (the stream's passphrase check).
fn check_chain_passphrase(opts: &Options, head: &StreamHead) -> Result<()> {
    let (Some(keys), Some(check)) = (&opts.keys, &head.passphrase_check) else { return Ok(()) };
    crypto::check_passphrase_message(keys, &check.0, "the chain's passphrase check").map_err(|e| {
        if e.kind != crate::Kind::Crypto {
            return e;
        }
        Error::new(
            crate::Kind::Crypto,
            "the passphrase is not the one the chain this incremental extends is encrypted with \
             (dup-sig opened the chain with another)",
        )
        .hint("give dup-pack the chain's passphrase, the one dup-sig read it with: one chain, one passphrase")
    })?;
    Ok(())
}

/// The set's time: the one given, or an unfinished set's (resumed), or now
/// (after the chain's end); it must come after the chain it extends.
fn set_time(opts: &Options, basis: Option<i64>) -> Result<i64> {
    let resumed = opts.resume.as_ref().and_then(|r| r.time(basis));
    if let Some(t) = resumed {
        note!(log::Level::Info, "resuming the unfinished set of {}", crate::dupfmt::time::to_compact(t));
    }
    let t2 = opts.time.or(resumed).unwrap_or_else(|| crate::dupfmt::time::now_after(basis));
    if let Some(t1) = basis
        && t1 >= t2
    {
        return Err(Error::usage(format!("the backup time {t2} is not after the end of the chain it extends ({t1})"))
            .hint("check the system clock, or wait a second and run again"));
    }
    Ok(t2)
}

impl<'a, W: Write> Pack<'a, W> {
    fn new(
        out: Writer<W>,
        opts: &'a Options,
        progress: &'a dyn Progress,
        basis: Option<i64>,
        t2: i64,
        localdir: &[u8],
    ) -> Result<Self> {
        Ok(Pack {
            out,
            opts,
            progress,
            times: (basis.unwrap_or(t2), t2),
            full: basis.is_none(),
            suffix: match (&opts.keys, opts.compress) {
                (Some(_), _) => Suffix::Gpg,
                (None, true) => Suffix::Gzip,
                (None, false) => Suffix::None,
            },
            vol: dtar::Writer::new(Enc::new(opts.compress, opts.compress_level, opts.keys.as_ref(), t2)?),
            vol_number: 1,
            range: Range::default(),
            marks: Vec::new(),
            marked_block: None,
            sealed: None,
            // Encrypted archives keep the signature tar plain until the end: the
            // cache gets it gzipped, the backend encrypted.
            sig: dtar::Writer::new(Enc::new(opts.compress && opts.keys.is_none(), opts.compress_level, None, t2)?),
            sealers: match &opts.keys {
                Some(k) => Some((
                    Enc::new(true, opts.compress_level, Some(k), 0)?,
                    Enc::new(true, opts.compress_level, Some(k), 0)?,
                )),
                None => None,
            },
            manifest: manifest::header_bytes(&opts.hostname, localdir),
            filelist: Spool::new(),
            listed: 0,
            stats: Stats::default(),
            piece: vec![0u8; PIECE],
        })
    }

    /// Packs one change record (its content read from `input`).
    fn record<R: BufRead>(&mut self, rec: Record, input: &mut Reader<R>) -> Result<()> {
        match rec {
            Record::Snapshot(e) if e.ftype == FileType::File => {
                self.content(EntryType::Snapshot, &e, &mut input.content())?;
                self.list(Change::New, &e.path.0)?;
            }
            Record::Snapshot(e) => self.special(&e)?,
            Record::Diff(e) => {
                self.content(EntryType::Diff, &e, &mut input.content())?;
                self.list(Change::Changed, &e.path.0)?;
            }
            Record::Signature(e) => self.signature(&e, &mut input.content())?,
            Record::Deleted { path, ftype } => {
                self.deleted(&path)?;
                if ftype == Some(FileType::File) {
                    self.list(Change::Deleted, &path.0)?;
                }
            }
            Record::Warning { path, message } => match path {
                Some(p) => log::debug!("upstream warning: {p}: {message}"),
                None => log::debug!("upstream warning: {message}"),
            },
            other => {
                return Err(Error::stream(format!("dup-pack reads change records, not {}", other.kind_name())));
            }
        }
        Ok(())
    }
}

impl<W: Write> Pack<'_, W> {
    fn kind(&self, volume: Option<u64>) -> FileKind {
        match (self.full, volume) {
            (true, Some(n)) => FileKind::FullVolume(n),
            (false, Some(n)) => FileKind::IncVolume(n),
            (true, None) => FileKind::FullManifest,
            (false, None) => FileKind::IncManifest,
        }
    }

    fn name(&self, kind: FileKind, suffix: Suffix) -> String {
        self.opts.naming.name(kind, self.times.0, self.times.1, suffix, false)
    }

    /// Starts a new volume when the current one has less than a piece of
    /// room left (§3.7), before an entry is written.
    fn before_entry(&mut self, index: &[u8], block: Option<u64>) -> Result<()> {
        if self.sealed.as_ref().is_some_and(|s| s.enc.is_done()) {
            self.publish()?;
        }
        let stored = self.vol.get_mut().stored();
        if self.range.start.is_some() && self.opts.volsize.saturating_sub(stored) < PIECE as u64 {
            self.seal_volume()?;
            self.vol_number += 1;
            self.vol = dtar::Writer::new(Enc::new(
                self.opts.compress,
                self.opts.compress_level,
                self.opts.keys.as_ref(),
                self.times.1,
            )?);
        }
        if self.range.start.is_none() {
            self.range.start = Some((index.to_vec(), block));
        }
        if self.opts.keys.is_some() {
            self.mark(index);
        }
        self.range.end = Some((index.to_vec(), block));
        self.stats.entries += 1;
        Ok(())
    }

    /// Keeps the entry about to be written as the volume's mark for its
    /// block, when it is the first one there. Its block is estimated as if
    /// the literal packet went on (exact but in the packet's last chunk,
    /// where it may be a few bytes off): the marks only need to be entry
    /// headers in order, the reader computes the true block of each.
    fn mark(&mut self, index: &[u8]) {
        let offset = self.vol.offset();
        let body = crypto::framing::LITERAL_HEAD.len() as u64 + offset;
        let block = crypto::framing::Framed { len: u64::MAX }.offset(body) / crate::io::parblock::BLOCK as u64;
        if self.marked_block != Some(block) {
            self.marks.push(Mark { offset, path: PathBytes(index.to_vec()) });
            self.marked_block = Some(block);
        }
    }

    /// Ends the current volume's input; it finishes while the next volume
    /// is built (the one sealed before it is published first).
    fn seal_volume(&mut self) -> Result<()> {
        self.publish()?;
        let vol = std::mem::replace(&mut self.vol, dtar::Writer::new(Enc::Plain(Sink::new())));
        let mut enc = vol.into_inner()?;
        enc.seal().map_err(|e| e.context("a volume"))?;
        let marks = std::mem::take(&mut self.marks);
        self.marked_block = None;
        self.sealed = Some(Sealed { enc, number: self.vol_number, range: std::mem::take(&mut self.range), marks });
        Ok(())
    }

    /// Waits for the sealed volume, adds it to the manifest and emits it.
    fn publish(&mut self) -> Result<()> {
        let Some(sealed) = self.sealed.take() else { return Ok(()) };
        let packed = sealed.enc.finish().map_err(|e| e.context("a volume"))?;
        let name = self.name(self.kind(Some(sealed.number)), self.suffix);
        let len = packed.sink.spool.len();
        let layout = packed.layout.clone();
        let (sha1, sent) = self.emit_packed(&name, FileRole::Volume, packed)?;
        if let Some(l) = layout.filter(|_| sent)
            && let Some(literal) = l.literal
        {
            let table = SeekTable::new(sha1.clone(), &l, literal, sealed.marks);
            let mut spool = Spool::new();
            spool.write_all(&table.to_json()).map_err(|e| Error::io("writing a seek table", e))?;
            self.emit(&seek::seek_name(&name), FileRole::Cache, spool, None)?;
        }
        let dot = (index::ROOT.to_vec(), None);
        let (start, sb) = sealed.range.start.unwrap_or_else(|| dot.clone());
        let (end, eb) = sealed.range.end.unwrap_or(dot);
        let info = VolumeInfo::new(sealed.number, &start, sb, &end, eb, &sha1);
        self.manifest.extend_from_slice(&info.to_bytes());
        self.stats.volumes += 1;
        self.stats.volume_bytes += len;
        Ok(())
    }

    /// Emits a packed volume or signature file, or, when resuming and the
    /// backend has it with the same content, a `stored` record in its
    /// place; returns the SHA1 the backend's file has, and whether these
    /// bytes were sent (not the stored file).
    fn emit_packed(&mut self, name: &str, role: FileRole, packed: Packed) -> Result<(String, bool)> {
        let Packed { sink, plain, .. } = packed;
        let (spool, digest) = sink.finish();
        let sha1 = hex(&digest);
        let len = spool.len();
        if let Some(stored) = self.opts.resume.as_ref().and_then(|r| r.find(name, &sha1, plain.as_deref())) {
            let sha1 = stored.sha1.clone();
            let record = Record::File { name: name.to_string(), role, delete: false, plain, stored: Some(stored) };
            self.out.write(&record)?;
            self.out.flush()?;
            self.progress.event(Event::File { name: name.into(), bytes: len, action: "resumed".into() });
            return Ok((sha1, false));
        }
        self.emit(name, role, spool, plain)?;
        self.progress.event(Event::File { name: name.into(), bytes: len, action: "packed".into() });
        Ok((sha1, true))
    }

    fn emit(&mut self, name: &str, role: FileRole, spool: Spool, plain: Option<String>) -> Result<()> {
        self.out.write(&Record::File { name: name.to_string(), role, delete: false, plain, stored: None })?;
        let mut r = spool.into_reader().map_err(|e| Error::io(name, e))?;
        self.out.write_content(&mut r)?;
        self.out.flush()
    }

    /// Fills `self.piece` from `r`; returns how many bytes it holds.
    fn fill(&mut self, r: &mut impl Read, what: &Entry) -> Result<usize> {
        let mut got = 0;
        while got < PIECE {
            match r.read(&mut self.piece[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(content_error(what.path.to_string(), e)),
            }
        }
        Ok(got)
    }

    /// A regular file's content or delta: one entry when under a piece,
    /// else multivol chunks ending with a short (maybe empty) one (§3.5).
    fn content(&mut self, t: EntryType, e: &Entry, r: &mut impl Read) -> Result<()> {
        let meta = Meta::from_entry(e)?;
        let mut n = self.fill(r, e)?;
        if n < PIECE {
            self.before_entry(&e.path, None)?;
            let name = dtar::volume_entry_name(t, &e.path, false, None);
            self.vol.append(&name, &meta, &self.piece[..n])?;
        } else {
            let mv = t.multivol();
            let mut k = 1u64;
            loop {
                let last = n < PIECE;
                self.before_entry(&e.path, if last { None } else { Some(k) })?;
                let name = dtar::volume_entry_name(mv, &e.path, false, Some(k));
                self.vol.append(&name, &meta, &self.piece[..n])?;
                if last {
                    break;
                }
                k += 1;
                n = self.fill(r, e)?;
            }
        }
        // No item event: dup-delta sends one per item (pack's own made a
        // front end summing both pass 100 %).
        Ok(())
    }

    /// A directory, symlink, fifo or device: in the volume and the sigtar.
    fn special(&mut self, e: &Entry) -> Result<()> {
        let meta = match Meta::from_entry(e) {
            Ok(m) => m,
            Err(err) => {
                note!(log::Level::Warn, "{}", err.message);
                return Ok(());
            }
        };
        let dir = e.ftype == FileType::Dir;
        self.before_entry(&e.path, None)?;
        self.vol.append(&dtar::volume_entry_name(EntryType::Snapshot, &e.path, dir, None), &meta, &[])?;
        self.sig.append(&dtar::sigtar_entry_name(EntryType::Snapshot, &e.path, dir), &meta, &[])
    }

    fn signature(&mut self, e: &Entry, r: &mut impl Read) -> Result<()> {
        let meta = Meta::from_entry(e)?;
        let mut spool = Spool::new();
        let n = io::copy(r, &mut spool).map_err(|x| content_error(e.path.to_string(), x))?;
        let name = dtar::sigtar_entry_name(EntryType::Signature, &e.path, false);
        let data = spool.into_reader().map_err(|x| Error::io("reading back a signature", x))?;
        self.sig.append_reader(&name, &meta, n, data)
    }

    /// Adds a `Filelist` line.
    fn list(&mut self, change: Change, path: &[u8]) -> Result<()> {
        self.listed += 1;
        self.filelist
            .write_all(&manifest::filelist_line(change, path))
            .map_err(|e| Error::io("spooling the file list", e))
    }

    fn deleted(&mut self, path: &[u8]) -> Result<()> {
        let meta = Meta::deleted();
        self.before_entry(path, None)?;
        self.vol.append(&dtar::volume_entry_name(EntryType::Deleted, path, false, None), &meta, &[])?;
        self.sig.append(&dtar::sigtar_entry_name(EntryType::Deleted, path, false), &meta, &[])
    }

    /// Ends the output after the volume sealed last (the one being packed
    /// is dropped): whole files, no manifest, the set left to resume.
    fn stop(mut self) -> Result<()> {
        self.publish()?;
        self.out.finish()?;
        Ok(())
    }

    fn finish(mut self) -> Result<(W, Stats)> {
        let sealers = self.sealers.take();
        self.seal_volume()?;
        self.publish()?;
        let sig = std::mem::replace(&mut self.sig, dtar::Writer::new(Enc::Plain(Sink::new())));
        let sig = sig.finish()?.finish().map_err(|e| e.context("the signature tar"))?;
        let sig_kind = if self.full { FileKind::FullSig } else { FileKind::NewSig };
        self.manifest.extend_from_slice(&manifest::filelist_head(self.listed));
        let mut m = Spool::new();
        m.write_all(&self.manifest).map_err(|e| Error::io("writing the manifest", e))?;
        let list = self.filelist.reader().map_err(|e| Error::io("reading the spooled file list", e));
        list.and_then(|mut r| io::copy(&mut r, &mut m).map_err(|e| Error::io("writing the manifest", e)))?;
        let man_kind = self.kind(None);
        match sealers {
            None => {
                self.emit_packed(&self.name(sig_kind, self.suffix), FileRole::Signature, sig)?;
                self.emit(&self.name(man_kind, Suffix::None), FileRole::Manifest, m, None)?;
            }
            Some((sig_enc, man_enc)) => {
                // The cache keeps plaintext (gzipped signatures): sent first,
                // as `cache` files, then the encrypted forms for the backend.
                let mut plain = sig.sink.spool;
                let mut gz = Enc::new(true, self.opts.compress_level, None, self.times.1)?;
                io::copy(&mut plain.reader().map_err(|e| Error::io("the signature tar", e))?, &mut gz)
                    .map_err(|e| Error::io("compressing the signature tar", e))?;
                self.emit(&self.name(sig_kind, Suffix::Gzip), FileRole::Cache, gz.finish()?.sink.spool, None)?;
                let sig_gpg = encrypt(sig_enc, &mut plain)?;
                self.emit_packed(&self.name(sig_kind, Suffix::Gpg), FileRole::Signature, sig_gpg)?;
                let man_gpg = encrypt(man_enc, &mut m)?;
                self.emit(&self.name(man_kind, Suffix::None), FileRole::Cache, m, None)?;
                self.emit(&self.name(man_kind, Suffix::Gpg), FileRole::Manifest, man_gpg.sink.spool, None)?;
            }
        }
        self.progress.event(Event::Finish {
            stage: "pack".into(),
            items: self.stats.entries,
            bytes: self.stats.volume_bytes,
        });
        let stats = self.stats.clone();
        Ok((self.out.finish()?, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_members_read_back_and_reused_compressors_change_nothing() {
        let text = b"a line of text, and another line of text\n".repeat(3000);
        let noise: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let z = Deflaters::default();
        for level in [0, 1, 4, 6, 9] {
            for data in [&text[..], &noise, b""] {
                let fresh = gzip_member(data, 1_700_000_000, level, &Deflaters::default(), Vec::new());
                let got = gzip_member(data, 1_700_000_000, level, &z, vec![3; 7]);
                assert!(got == fresh, "level {level}");
                let mut d = flate2::read::GzDecoder::new(&got[..]);
                let mut plain = Vec::new();
                d.read_to_end(&mut plain).unwrap();
                assert!(plain == data, "level {level}");
                let h = d.header().unwrap();
                assert_eq!((h.mtime(), h.operating_system(), h.filename()), (1_700_000_000, 255, None));
                assert_eq!(got[8], [4, 4, 0, 0, 2][[0, 1, 4, 6, 9].iter().position(|&l| l == level).unwrap()]);
            }
        }
    }

    fn noted(name: String, sha1: char, plain: Option<char>) -> Resumed {
        let file = Naming::default().parse(&name).expect("a volume's name");
        let noted = journal::Journaled {
            name,
            size: 10,
            sha1: sha1.to_string().repeat(40),
            plain: plain.map(|c| c.to_string().repeat(64)),
        };
        Resumed { noted, file }
    }

    #[test]
    fn resume_picks_the_unfinished_set_of_the_same_kind() {
        let n = Naming::default();
        let (t1, t2, t3) = (1_700_000_000, 1_700_000_100, 1_700_000_200);
        let r = Resume {
            stored: vec![
                noted(n.name(FileKind::FullVolume(1), t1, t1, Suffix::Gpg, false), 'a', Some('1')),
                noted(n.name(FileKind::IncVolume(1), t1, t2, Suffix::Gpg, false), 'b', Some('2')),
                noted(n.name(FileKind::IncVolume(1), t2, t3, Suffix::Gzip, false), 'c', None),
            ],
        };
        assert_eq!(r.time(None), Some(t1), "a full continues the unfinished full");
        assert_eq!(r.time(Some(t1)), Some(t2), "an incremental from T1 continues T1 → T2");
        assert_eq!(r.time(Some(t2)), Some(t3));
        assert_eq!(r.time(Some(t3)), None, "nothing unfinished extends T3");
        assert_eq!(Resume::default().time(None), None);
    }

    #[test]
    fn resume_matches_content_not_just_names() {
        let n = Naming::default();
        let t = 1_700_000_000;
        let (gpg, gz) = (
            n.name(FileKind::FullVolume(1), t, t, Suffix::Gpg, false),
            n.name(FileKind::FullVolume(2), t, t, Suffix::Gzip, false),
        );
        let r = Resume { stored: vec![noted(gpg.clone(), 'a', Some('1')), noted(gz.clone(), 'b', None)] };
        let (sha_a, sha_b) = ("a".repeat(40), "b".repeat(40));
        // Encrypted: the plaintext decides; the manifest gets the stored SHA1.
        let found = r.find(&gpg, &"f".repeat(40), Some(&"1".repeat(64))).unwrap();
        assert_eq!((found.size, found.sha1), (10, sha_a));
        assert!(r.find(&gpg, &"f".repeat(40), Some(&"2".repeat(64))).is_none(), "other plaintext");
        // Plain: the stored bytes decide.
        assert!(r.find(&gz, &sha_b, None).is_some());
        assert!(r.find(&gz, &"f".repeat(40), None).is_none(), "other bytes");
        // An encrypted file never matches an entry without a plaintext hash.
        let r2 = Resume { stored: vec![noted(gpg.clone(), 'a', None)] };
        assert!(r2.find(&gpg, &"a".repeat(40), Some(&"1".repeat(64))).is_none());
        assert!(r.find("duplicity-full.x.vol9.difftar.gz", &sha_b, None).is_none(), "other name");
    }
}
