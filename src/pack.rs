//! dup-pack: cut a change stream into duplicity difftar volumes, the
//! signature tar and the manifest (FORMAT-duplicity.md §2, §3, §4), and emit
//! them as `file` records: each volume as soon as it is full, then the
//! signature tar, then the manifest.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{Receiver, sync_channel};

use flate2::{Compression, GzBuilder};
use sha1::{Digest, Sha1};

use crate::crypto::{self, Keys};
use crate::dupfmt::manifest::{self, Change, FileChange, VolumeInfo};
use crate::dupfmt::names::{FileKind, Naming, Suffix};
use crate::dupfmt::tar::{self as dtar, EntryType, Meta};
use crate::error::{Error, Result};
use crate::index;
use crate::progress::{Event, Progress};
use crate::record::{Entry, FileRole, FileType, Reader, Record, StreamKind, Writer, content_error};
use crate::spool::Spool;

/// Content is stored in pieces of this size (§3.5); keep it: duplicity's
/// resume relies on it.
pub const PIECE: usize = 65536;

pub struct Options {
    /// Volume size in bytes (duplicity: `--volsize` MiB, default 200).
    pub volsize: u64,
    /// gzip volumes and the signature tar (`--no-compression` turns it off).
    pub compress: bool,
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

/// Counts and hashes what is stored, into a spool.
struct Sink {
    spool: Spool,
    sha1: Sha1,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.spool.write_all(buf)?;
        self.sha1.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Uncompressed bytes per gzip member: each block is compressed on its own
/// (in parallel) and the members are concatenated, which gzip readers,
/// duplicity included, read as one stream.
const GZ_BLOCK: usize = 1 << 20;

/// The volume (or signature tar) encoder: plain, or gzip in parallel blocks.
enum Enc<'k> {
    Plain(Sink),
    Gzip(ParGz),
    /// OpenPGP (compression inside, as gpg does; never gzip first).
    Gpg(Box<crypto::EncryptWriter<'k, Sink>>),
}

struct ParGz {
    sink: Sink,
    pending: Vec<u8>,
    /// Blocks being compressed, oldest first: (uncompressed length, result).
    inflight: VecDeque<(usize, Receiver<io::Result<Vec<u8>>>)>,
    mtime: u32,
    members: u64,
    bytes_in: u64,
}

fn gzip_member(data: &[u8], mtime: u32) -> io::Result<Vec<u8>> {
    // As CPython's gzip: no name, the given time, OS 255, level 6.
    let mut g = GzBuilder::new()
        .mtime(mtime)
        .operating_system(255)
        .write(Vec::with_capacity(data.len() / 2 + 64), Compression::new(6));
    g.write_all(data)?;
    g.finish()
}

impl ParGz {
    fn max_inflight() -> usize {
        2 * rayon::current_num_threads().max(1)
    }

    fn submit(&mut self) -> io::Result<()> {
        let block = std::mem::replace(&mut self.pending, Vec::with_capacity(GZ_BLOCK));
        let (tx, rx) = sync_channel(1);
        let mtime = self.mtime;
        let n = block.len();
        rayon::spawn(move || {
            let _ = tx.send(gzip_member(&block, mtime));
        });
        self.inflight.push_back((n, rx));
        while self.inflight.len() > Self::max_inflight() {
            self.collect_oldest()?;
        }
        Ok(())
    }

    fn collect_oldest(&mut self) -> io::Result<()> {
        if let Some((n, rx)) = self.inflight.pop_front() {
            let member = rx.recv().map_err(|_| io::Error::other("a compression job failed"))??;
            self.sink.write_all(&member)?;
            self.members += 1;
            self.bytes_in += n as u64;
        }
        Ok(())
    }

    /// Stored bytes so far plus an estimate for what is still being compressed.
    fn stored(&self) -> u64 {
        let done = self.sink.spool.len();
        let waiting: usize = self.pending.len() + self.inflight.iter().map(|(n, _)| n).sum::<usize>();
        let ratio = if self.bytes_in > 0 { done as f64 / self.bytes_in as f64 } else { 1.0 };
        done + (waiting as f64 * ratio) as u64
    }

    fn finish(mut self) -> io::Result<Sink> {
        if !self.pending.is_empty() || self.members + self.inflight.len() as u64 == 0 {
            self.submit()?;
        }
        while !self.inflight.is_empty() {
            self.collect_oldest()?;
        }
        Ok(self.sink)
    }
}

impl<'k> Enc<'k> {
    fn new(compress: bool, keys: Option<&'k Keys>) -> Result<Enc<'k>> {
        let sink = Sink { spool: Spool::new(), sha1: Sha1::new() };
        if let Some(k) = keys {
            return Ok(Enc::Gpg(Box::new(crypto::encryptor(k, sink)?)));
        }
        if !compress {
            return Ok(Enc::Plain(sink));
        }
        let mtime =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0);
        Ok(Enc::Gzip(ParGz {
            sink,
            pending: Vec::with_capacity(GZ_BLOCK),
            inflight: VecDeque::new(),
            mtime,
            members: 0,
            bytes_in: 0,
        }))
    }

    /// Bytes stored so far (estimated for blocks still being compressed).
    fn stored(&self) -> u64 {
        match self {
            Enc::Plain(s) => s.spool.len(),
            Enc::Gzip(g) => g.stored(),
            Enc::Gpg(g) => g.estimated_size(),
        }
    }

    fn finish(self) -> Result<Sink> {
        match self {
            Enc::Plain(s) => Ok(s),
            Enc::Gzip(g) => g.finish().map_err(|e| Error::io("compressing", e)),
            Enc::Gpg(g) => g.finish(),
        }
    }
}

impl Write for Enc<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Enc::Plain(s) => s.write(buf),
            Enc::Gpg(g) => g.write(buf),
            Enc::Gzip(g) => {
                let n = buf.len().min(GZ_BLOCK - g.pending.len());
                g.pending.extend_from_slice(&buf[..n]);
                if g.pending.len() == GZ_BLOCK {
                    g.submit()?;
                }
                Ok(n)
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `plain` encrypted with `keys`.
fn encrypt(keys: &Keys, plain: &mut Spool) -> Result<Spool> {
    let mut w = crypto::encryptor(keys, Spool::new())?;
    io::copy(&mut plain.reader().map_err(|e| Error::io("reading back", e))?, &mut w)
        .map_err(|e| crate::record::content_error("encrypting", e))?;
    w.finish()
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
    sig: dtar::Writer<Enc<'a>>,
    manifest: Vec<u8>,
    files: Vec<FileChange>,
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
    let t2 = match opts.time {
        Some(t) => t,
        None => {
            // Set times are whole seconds, and an incremental must end after
            // the set before it.
            let mut now = crate::dupfmt::time::now();
            while let Some(t1) = basis
                && now <= t1
                && t1 - now < 5
            {
                std::thread::sleep(std::time::Duration::from_millis(200));
                now = crate::dupfmt::time::now();
            }
            now
        }
    };
    if let Some(t1) = basis
        && t1 >= t2
    {
        return Err(Error::usage(format!("the backup time {t2} is not after the end of the chain it extends ({t1})"))
            .hint("check the system clock, or wait a second and run again"));
    }
    let localdir = opts.localdir.clone().or_else(|| input.source().map(<[u8]>::to_vec)).unwrap_or_default();
    let mut p = Pack {
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
        vol: dtar::Writer::new(Enc::new(opts.compress, opts.keys.as_ref())?),
        vol_number: 1,
        range: Range::default(),
        // Encrypted archives keep the signature tar plain until the end: the
        // cache gets it gzipped, the backend encrypted.
        sig: dtar::Writer::new(Enc::new(opts.compress && opts.keys.is_none(), None)?),
        manifest: manifest::header_bytes(&opts.hostname, &localdir),
        files: Vec::new(),
        stats: Stats::default(),
        piece: vec![0u8; PIECE],
    };
    progress.event(Event::Start { stage: "pack".into() });
    let mut last: Option<Vec<u8>> = None;
    while let Some(rec) = input.next_item()? {
        let path = match &rec {
            Record::Snapshot(e) | Record::Diff(e) => Some(e.path.0.clone()),
            Record::Deleted { path, .. } => Some(path.0.clone()),
            _ => None,
        };
        if let Some(path) = path {
            if let Some(prev) = &last
                && index::cmp(prev, &path) != std::cmp::Ordering::Less
            {
                return Err(Error::stream(format!(
                    "input is not in duplicity's order: {} after {}",
                    crate::record::PathBytes(path),
                    crate::record::PathBytes(prev.clone())
                )));
            }
            last = Some(path);
        }
        match rec {
            Record::Snapshot(e) if e.ftype == FileType::File => {
                p.content(EntryType::Snapshot, &e, &mut input.content())?;
                p.files.push(FileChange { change: Change::New, path: e.path.0.clone() });
            }
            Record::Snapshot(e) => p.special(&e)?,
            Record::Diff(e) => {
                p.content(EntryType::Diff, &e, &mut input.content())?;
                p.files.push(FileChange { change: Change::Changed, path: e.path.0.clone() });
            }
            Record::Signature(e) => p.signature(&e, &mut input.content())?,
            Record::Deleted { path, ftype } => {
                p.deleted(&path)?;
                if ftype == Some(FileType::File) {
                    p.files.push(FileChange { change: Change::Deleted, path: path.0 });
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
    }
    p.finish()
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
        let stored = self.vol.get_ref().stored();
        if self.range.start.is_some() && self.opts.volsize.saturating_sub(stored) < PIECE as u64 {
            self.close_volume()?;
            self.vol_number += 1;
            self.vol = dtar::Writer::new(Enc::new(self.opts.compress, self.opts.keys.as_ref())?);
        }
        if self.range.start.is_none() {
            self.range.start = Some((index.to_vec(), block));
        }
        self.range.end = Some((index.to_vec(), block));
        self.stats.entries += 1;
        Ok(())
    }

    fn close_volume(&mut self) -> Result<()> {
        let vol = std::mem::replace(
            &mut self.vol,
            dtar::Writer::new(Enc::Plain(Sink { spool: Spool::new(), sha1: Sha1::new() })),
        );
        let enc = vol.into_inner()?;
        let mut sink = enc.finish().map_err(|e| e.context("a volume"))?;
        let sha1: String = sink.sha1.finalize_reset().iter().map(|b| format!("{b:02x}")).collect();
        let dot = (index::ROOT.to_vec(), None);
        let range = std::mem::take(&mut self.range);
        let (start, sb) = range.start.unwrap_or_else(|| dot.clone());
        let (end, eb) = range.end.unwrap_or(dot);
        let info = VolumeInfo::new(self.vol_number, &start, sb, &end, eb, &sha1);
        self.manifest.extend_from_slice(&info.to_bytes());
        let name = self.name(self.kind(Some(self.vol_number)), self.suffix);
        let len = sink.spool.len();
        self.emit(&name, FileRole::Volume, sink.spool)?;
        self.stats.volumes += 1;
        self.stats.volume_bytes += len;
        self.progress.event(Event::File { name, bytes: len, action: "packed".into() });
        Ok(())
    }

    fn emit(&mut self, name: &str, role: FileRole, spool: Spool) -> Result<()> {
        self.out.write(&Record::File { name: name.to_string(), role, delete: false })?;
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
        let mut total = n as u64;
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
                total += n as u64;
            }
        }
        self.progress.event(Event::Item { path: e.path.to_string(), bytes: total });
        Ok(())
    }

    /// A directory, symlink, fifo or device: in the volume and the sigtar.
    fn special(&mut self, e: &Entry) -> Result<()> {
        let meta = match Meta::from_entry(e) {
            Ok(m) => m,
            Err(err) => {
                log::warn!("{}", err.message);
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

    fn deleted(&mut self, path: &[u8]) -> Result<()> {
        let meta = Meta::deleted();
        self.before_entry(path, None)?;
        self.vol.append(&dtar::volume_entry_name(EntryType::Deleted, path, false, None), &meta, &[])?;
        self.sig.append(&dtar::sigtar_entry_name(EntryType::Deleted, path, false), &meta, &[])
    }

    fn finish(mut self) -> Result<(W, Stats)> {
        self.close_volume()?;
        let sig = std::mem::replace(&mut self.sig, dtar::Writer::new(Enc::new(false, None)?));
        let sink = sig.finish()?.finish().map_err(|e| e.context("the signature tar"))?;
        let sig_kind = if self.full { FileKind::FullSig } else { FileKind::NewSig };
        self.manifest.extend_from_slice(&manifest::filelist_bytes(&self.files));
        let mut m = Spool::new();
        m.write_all(&self.manifest).map_err(|e| Error::io("writing the manifest", e))?;
        let man_kind = self.kind(None);
        match &self.opts.keys {
            None => {
                self.emit(&self.name(sig_kind, self.suffix), FileRole::Signature, sink.spool)?;
                self.emit(&self.name(man_kind, Suffix::None), FileRole::Manifest, m)?;
            }
            Some(keys) => {
                // The cache keeps plaintext (gzipped signatures): sent first,
                // as `cache` files, then the encrypted forms for the backend.
                let mut plain = sink.spool;
                let mut gz = Enc::new(true, None)?;
                io::copy(&mut plain.reader().map_err(|e| Error::io("the signature tar", e))?, &mut gz)
                    .map_err(|e| Error::io("compressing the signature tar", e))?;
                self.emit(&self.name(sig_kind, Suffix::Gzip), FileRole::Cache, gz.finish()?.spool)?;
                let sig_gpg = encrypt(keys, &mut plain)?;
                self.emit(&self.name(sig_kind, Suffix::Gpg), FileRole::Signature, sig_gpg)?;
                let man_gpg = encrypt(keys, &mut m)?;
                self.emit(&self.name(man_kind, Suffix::None), FileRole::Cache, m)?;
                self.emit(&self.name(man_kind, Suffix::Gpg), FileRole::Manifest, man_gpg)?;
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
