//! dup-delta: join the current tree with a basis signature state and emit
//! what changed, with its data (FORMAT-duplicity.md §3.8).
//!
//! Input: `entry` records from dup-scan (content read from the source
//! directory), or `snapshot` records with content (dup-get --stream, for a
//! synthetic full). Basis: a signature stream from dup-sig (none for a full
//! backup). Both are in duplicity's order, so they are merge-joined without
//! holding either. Output, per path: nothing when unchanged; else
//! `snapshot` (+content) or `diff` (+delta), then for a regular file its new
//! `signature` (+signature); `deleted` for paths only in the basis. Each
//! changed file is read once, feeding content (or delta) and signature.

use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::dupfmt::index;
use crate::dupfmt::rsync::{self, SigWriter, TeeReader};
use crate::error::{Context as _, Error, Result};
use crate::io::spool::Spool;
use crate::joblog::note;
use crate::progress::{Event, Progress};
use crate::record::{Entry, FileType, OrderCheck, Reader, Record, StreamHead, StreamKind, Writer};

pub struct Options {
    /// Where the entries' files are read from (default: the stream's source).
    pub source: Option<PathBuf>,
    /// duplicity's `--max-blocksize`.
    pub max_block: u32,
    /// Emit only the signature state (no content, no deltas): dup-sig of
    /// local files.
    pub signatures_only: bool,
    /// Stops the run between files ([`crate::Kind::Interrupted`]).
    pub cancel: crate::cancel::Cancel,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            source: None,
            max_block: rsync::DEFAULT_MAX_BLOCK,
            signatures_only: false,
            cancel: crate::cancel::Cancel::default(),
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Items walked (every type, read or not).
    pub items: u64,
    pub new: u64,
    pub changed: u64,
    pub deleted: u64,
    pub unchanged: u64,
    /// Regular files opened and read.
    pub files_read: u64,
    pub bytes_read: u64,
    /// Bytes of content and deltas written.
    pub bytes_out: u64,
    /// Items skipped because they could not be read.
    pub warnings: u64,
}

impl Stats {
    /// duplicity's statistics as far as the delta knows them.
    pub fn summary(&self, elapsed_seconds: u64) -> crate::progress::Summary {
        crate::progress::Summary {
            stage: "delta".into(),
            source_files: Some(self.new + self.changed + self.unchanged),
            new_files: Some(self.new),
            changed_files: Some(self.changed),
            deleted_files: Some(self.deleted),
            bytes_read: Some(self.bytes_read),
            bytes_stored: None,
            errors: self.warnings,
            elapsed_seconds,
        }
    }
}

/// The output stream's header for an input and an optional basis.
pub fn output_head(input: &StreamHead, basis: Option<&StreamHead>) -> StreamHead {
    StreamHead {
        stream: StreamKind::Changes,
        producer: "dup-delta".into(),
        source: input.source.clone(),
        basis_time: basis.and_then(|b| b.basis_time),
        passphrase_check: basis.and_then(|b| b.passphrase_check.clone()),
    }
}

/// One basis item: its record and, for a regular file, its signature (read
/// only when a delta needs it, else skipped).
struct Basis<'a, R: BufRead> {
    reader: Option<&'a mut Reader<R>>,
    head: Option<Record>,
}

impl<'a, R: BufRead> Basis<'a, R> {
    fn new(reader: Option<&'a mut Reader<R>>) -> Result<Self> {
        let mut b = Basis { reader, head: None };
        b.advance()?;
        Ok(b)
    }

    fn advance(&mut self) -> Result<()> {
        self.head = match &mut self.reader {
            Some(r) => loop {
                match r.next_item()? {
                    // A combined view has no deletions; tolerate them.
                    Some(Record::Deleted { .. }) | Some(Record::Warning { .. }) => continue,
                    other => break other,
                }
            },
            None => None,
        };
        Ok(())
    }

    fn path(&self) -> Option<&[u8]> {
        match &self.head {
            Some(Record::Signature(e)) | Some(Record::Snapshot(e)) | Some(Record::Entry(e)) => Some(&e.path),
            _ => None,
        }
    }

    /// Drops the current item (skipping its signature) and moves on.
    fn skip(&mut self) -> Result<()> {
        if let (Some(r), Some(rec)) = (&mut self.reader, &self.head) {
            r.skip_content(rec)?;
        }
        self.advance()
    }
}

/// True when duplicity would store nothing for `cur` given its basis entry.
pub fn unchanged(old: &Entry, cur: &Entry) -> bool {
    if old.ftype != cur.ftype {
        return false;
    }
    let owner = || {
        let uid = (!old.uname.is_empty() && old.uname == cur.uname) || old.uid == cur.uid;
        let gid = (!old.gname.is_empty() && old.gname == cur.gname) || old.gid == cur.gid;
        uid && gid
    };
    match cur.ftype {
        FileType::Symlink => old.target == cur.target,
        FileType::Char | FileType::Block => {
            old.mode == cur.mode && owner() && old.devmajor == cur.devmajor && old.devminor == cur.devminor
        }
        FileType::File | FileType::Dir | FileType::Fifo | FileType::Socket => {
            old.mode == cur.mode && owner() && old.mtime == cur.mtime
        }
    }
}

struct Run<'p, W: Write> {
    out: Writer<W>,
    source: Option<PathBuf>,
    max_block: u32,
    signatures_only: bool,
    stats: Stats,
    progress: &'p dyn Progress,
}

/// Runs the join; returns the output writer (finished) and what was done.
pub fn run<R: BufRead, B: BufRead, W: Write>(
    input: &mut Reader<R>,
    basis: Option<&mut Reader<B>>,
    out: Writer<W>,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<(W, Stats)> {
    input.expect_kind(&[StreamKind::Entries, StreamKind::Changes])?;
    if let Some(b) = &basis {
        b.expect_kind(&[StreamKind::Signatures])?;
    }
    let source = opts.source.clone().or_else(|| input.source().map(|s| PathBuf::from(std::ffi::OsStr::from_bytes(s))));
    let mut basis = Basis::new(basis)?;
    let mut run = Run {
        out,
        source,
        max_block: opts.max_block,
        signatures_only: opts.signatures_only,
        stats: Stats::default(),
        progress,
    };
    progress.event(Event::Start { stage: "delta".into() });
    let mut order = OrderCheck::default();
    while let Some(rec) = input.next_item()? {
        opts.cancel.check()?;
        let (entry, from_stream) = match rec {
            Record::Entry(e) => (e, false),
            Record::Snapshot(e) => (e, true),
            Record::Warning { path, message } => {
                run.out.write(&Record::Warning { path, message })?;
                continue;
            }
            Record::Total { files, bytes } => {
                progress.event(Event::Total { stage: "delta".into(), files, bytes: Some(bytes) });
                continue;
            }
            other => {
                return Err(Error::stream(format!(
                    "dup-delta reads entry or snapshot records, not {}",
                    other.kind_name()
                )));
            }
        };
        order.next(&entry.path.0).map_err(|e| e.hint("feed dup-delta the output of dup-scan or dup-get --stream"))?;
        let content = if from_stream { Some(&mut *input) } else { None };
        // Every item counts for progress, read or not (as dup-scan --total counts them).
        let item = Event::Item {
            path: entry.path.to_string(),
            bytes: if entry.ftype == FileType::File { entry.size } else { 0 },
        };
        run.join(&mut basis, entry, content)?;
        progress.event(item);
        run.stats.items += 1;
    }
    while basis.head.is_some() {
        run.deleted(&basis.head)?;
        basis.skip()?;
    }
    let stats = run.stats.clone();
    progress.event(Event::Finish { stage: "delta".into(), items: stats.items, bytes: stats.bytes_read });
    Ok((run.out.finish()?, stats))
}

/// Opens a regular file without following a symlink swapped in since the scan.
fn open_file(path: &Path) -> io::Result<File> {
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    let m = f.metadata()?;
    if !m.file_type().is_file() {
        return Err(io::Error::other("no longer a regular file"));
    }
    Ok(f)
}

impl<W: Write> Run<'_, W> {
    /// Joins one entry of the new tree with the basis: basis items before
    /// it are deleted; an unchanged item is passed over, a changed file
    /// diffed against its basis signature, anything else stored whole.
    /// `content` is the stream holding the entry's content, if it has any.
    fn join<R: BufRead, B: BufRead>(
        &mut self,
        basis: &mut Basis<'_, B>,
        entry: Entry,
        content: Option<&mut Reader<R>>,
    ) -> Result<()> {
        // Basis items before this path are gone.
        while let Some(p) = basis.path() {
            if index::cmp(p, &entry.path) != std::cmp::Ordering::Less {
                break;
            }
            self.deleted(&basis.head)?;
            basis.skip()?;
        }
        let same = basis.path().is_some_and(|p| index::cmp(p, &entry.path).is_eq());
        if !same {
            return self.snapshot(entry, content);
        }
        let old = match &basis.head {
            Some(Record::Signature(e)) | Some(Record::Snapshot(e)) | Some(Record::Entry(e)) => e.clone(),
            _ => unreachable!("basis.path() is Some only for these"),
        };
        if unchanged(&old, &entry) {
            self.stats.unchanged += 1;
            basis.skip()?;
            if let Some(r) = content
                && entry.ftype == FileType::File
            {
                r.content().drain()?;
            }
            return Ok(());
        }
        if entry.ftype == FileType::File && matches!(basis.head, Some(Record::Signature(_))) {
            let r = basis.reader.as_deref_mut().expect("a basis head comes from a reader");
            let sig = rsync::Signature::read(r.content());
            basis.advance()?;
            match sig {
                Ok(mut sig) => self.diff(entry, &mut sig, content),
                Err(e) if rsync::is_unsupported_signature(&e) => {
                    note!(log::Level::Info, "{}: {}; storing the whole file", entry.path, e.message);
                    self.snapshot(entry, content)
                }
                Err(e) => Err(e.context(format!("the basis signature of {}", entry.path))),
            }
        } else {
            basis.skip()?;
            self.snapshot(entry, content)
        }
    }

    fn deleted(&mut self, rec: &Option<Record>) -> Result<()> {
        let (path, ftype) = match rec {
            Some(Record::Signature(e)) | Some(Record::Snapshot(e)) | Some(Record::Entry(e)) => {
                (e.path.clone(), e.ftype)
            }
            _ => return Ok(()),
        };
        if &path[..] == index::ROOT {
            return Ok(());
        }
        self.stats.deleted += 1;
        self.out.write(&Record::Deleted { path, ftype: Some(ftype) })
    }

    fn file_path(&self, e: &Entry) -> Result<PathBuf> {
        let root = self.source.as_ref().ok_or_else(|| {
            Error::usage("the entry stream does not name its source directory").hint("pass --source DIR")
        })?;
        if &e.path[..] == index::ROOT {
            return Ok(root.clone());
        }
        Ok(root.join(std::ffi::OsStr::from_bytes(&e.path)))
    }

    fn warn(&mut self, e: &Entry, msg: String) -> Result<()> {
        self.stats.warnings += 1;
        self.progress.event(Event::Warning { path: Some(e.path.to_string()), message: msg.clone() });
        self.out.write(&Record::Warning { path: Some(e.path.clone()), message: msg })
    }

    /// The item stored whole; for a regular file, then its signature.
    fn snapshot<R: BufRead>(&mut self, mut e: Entry, stream: Option<&mut Reader<R>>) -> Result<()> {
        if e.ftype != FileType::File {
            // Only regular files carry content (Record::has_content).
            self.stats.new += 1;
            return self.out.write(&Record::Snapshot(e));
        }
        let (source, size): (Box<dyn Read + '_>, u64) = match stream {
            Some(r) => (Box::new(r.content()), e.size),
            None => match open_file(&self.file_path(&e)?) {
                Ok(f) => {
                    self.stats.files_read += 1;
                    let size = f.metadata().map(|m| m.len()).unwrap_or(e.size);
                    (Box::new(f), size)
                }
                Err(err) => return self.warn(&e, format!("cannot read: {err}")),
            },
        };
        let mut sig = Spool::new();
        let mut tee = TeeReader::new(source, SigWriter::new(&mut sig, rsync::block_len(size, self.max_block)));
        let copied = if self.signatures_only {
            io::copy(&mut tee, &mut io::sink())
        } else {
            self.out.write(&Record::Snapshot(e.clone()))?;
            let mut cw = self.out.content();
            let copied = io::copy(&mut tee, &mut cw);
            cw.finish()?;
            copied
        };
        let sw = tee.into_inner().1;
        e.size = sw.bytes_in();
        sw.finish().map_err(|x| Error::io("writing a signature", x))?;
        if let Err(err) = copied {
            match crate::error::carried(err) {
                // A broken input stream or a closed output: stop.
                Ok(stop) => return Err(stop),
                // A file that fails part-way: what was read is stored, and said so.
                Err(err) => self.warn(&e, format!("read error after {} bytes, stored only those: {err}", e.size))?,
            }
        }
        self.stats.new += 1;
        self.stats.bytes_read += e.size;
        if !self.signatures_only {
            self.stats.bytes_out += e.size;
        }
        self.signature(e, sig)
    }

    /// A regular file stored as a delta against its old signature, then its
    /// new signature.
    fn diff<R: BufRead>(
        &mut self,
        mut e: Entry,
        sig: &mut rsync::Signature,
        stream: Option<&mut Reader<R>>,
    ) -> Result<()> {
        let source: Box<dyn Read + '_> = match stream {
            Some(r) => Box::new(r.content()),
            None => match open_file(&self.file_path(&e)?) {
                Ok(f) => {
                    self.stats.files_read += 1;
                    Box::new(f)
                }
                Err(err) => return self.warn(&e, format!("cannot read: {err}")),
            },
        };
        let mut newsig = Spool::new();
        let sw = SigWriter::new(&mut newsig, rsync::block_len(e.size, self.max_block));
        self.out.write(&Record::Diff(e.clone()))?;
        let mut tee = TeeReader::new(source, sw);
        let mut cw = self.out.content();
        let stats = rsync::delta(sig, &mut tee, &mut cw).context(format!("computing the delta of {}", e.path))?;
        cw.finish()?;
        tee.into_inner().1.finish().map_err(|x| Error::io("writing a signature", x))?;
        e.size = stats.new_len;
        self.stats.changed += 1;
        self.stats.bytes_read += stats.new_len;
        self.stats.bytes_out += stats.delta_len;
        self.signature(e, newsig)
    }

    /// The new signature of a regular file just stored.
    fn signature(&mut self, e: Entry, sig: Spool) -> Result<()> {
        self.out.write(&Record::Signature(e))?;
        let mut r = sig.into_reader().map_err(|x| Error::io("reading back a signature", x))?;
        self.out.write_content(&mut r)?;
        Ok(())
    }
}
