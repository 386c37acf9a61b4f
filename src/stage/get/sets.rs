//! One backup set as a stream of entries: its volumes fetched one at a time
//! (each downloaded to a temporary file and checked against the manifest's
//! hash before it is read; in a whole restore, one the backend's manifest
//! vouches for is read by its seek table as it is fetched, its hash checked
//! at its end: see [`open_direct`]), decompressed, and parsed by a
//! [`TarStream`]; multivol chunks are joined across volume boundaries (§3.5).
//!
//! A volume that is missing, damaged or unreadable is reported and skipped,
//! together with the part of a multivol file that crossed into it; entries
//! that are not allowed (`..`, unknown prefixes, hard links, outside the
//! range the manifest gives their volume, out of order) are reported and
//! skipped. A skipped entry does not move the order cursor: one bad entry
//! never makes the honest entries after it look out of order.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};

use md5::Md5;
use sha1::{Digest, Sha1};

use super::{Reporter, VolId, show};
use crate::archive::Archive;
use crate::crypto;
use crate::dupfmt::index;
use crate::dupfmt::tar::{EntryName, EntryType, Item, parse_entry_name};
use crate::dupfmt::tarstream::TarStream;
use crate::error::{Error, Kind, Result};
use crate::io::cache::seek::SeekTable;
use crate::joblog::note;
use crate::record::{Entry, FileType, PathBytes};

/// A volume to read.
pub(crate) struct VolPlan {
    pub name: String,
    /// (hash name, lowercase hex) from the manifest.
    pub hash: Option<(String, String)>,
    /// Listed in the manifest but not on the backend.
    pub missing: bool,
    /// OpenPGP, as its name says (`.gpg`).
    pub encrypted: bool,
    /// The first and last index the manifest gives the volume; `None` for
    /// a manifest without volume blocks.
    pub range: Option<(Vec<u8>, Vec<u8>)>,
    /// `hash` comes from the backend's manifest, read through its MDC in
    /// this run, and no signature is required (see `vouching_manifest`).
    pub vouched: bool,
}

/// The entry a set holds for a path.
pub(crate) struct Head {
    /// `Snapshot`, `Diff` or `Deleted` (multivol entries as their base type).
    pub kind: EntryType,
    /// Its metadata; `path` is the full index.
    pub entry: Entry,
    /// The data's size when it is one tar entry (not multivol).
    pub size: Option<u64>,
    /// The volume it was read from.
    pub vol: VolId,
}

/// A multivol series being read: its type, path and next chunk number.
struct Series {
    kind: EntryType,
    index: Vec<u8>,
    next: u64,
}

/// What reading the next raw tar entry gave.
enum Raw {
    Item(Item),
    /// A volume could not be read (reported).
    Lost,
    End,
}

pub(crate) struct SetStream<'a> {
    archive: &'a Archive,
    volumes: VecDeque<VolPlan>,
    /// The volume being read, and its name.
    tar: Option<Volume>,
    /// An entry read ahead while ending a series; its data is still unread.
    pending: Option<Item>,
    series: Option<Series>,
    prefix: Vec<u8>,
    /// The last index handed out (entries must come in order).
    last: Option<Vec<u8>>,
    /// A volume was lost since the last entry: its multivol tail is skipped quietly.
    after_loss: bool,
    /// The current entry; `None` until [`SetStream::fill`].
    pub head: Option<Head>,
    /// The head's data is not fully read.
    in_data: bool,
    /// The current tar entry's data belongs to the head.
    data_open: bool,
    /// OpenPGP volumes are read as they are decrypted (their end checked
    /// last, see [`Reporter::volume_opened`]), not staged whole first.
    streamed: bool,
    /// The next volume, being downloaded.
    prefetch: Option<Prefetch>,
}

impl<'a> SetStream<'a> {
    pub fn new(archive: &'a Archive, volumes: Vec<VolPlan>, prefix: &[u8], streamed: bool) -> Self {
        let mut s = SetStream {
            archive,
            volumes: volumes.into(),
            tar: None,
            pending: None,
            series: None,
            prefix: prefix.to_vec(),
            last: None,
            after_loss: false,
            head: None,
            in_data: false,
            data_open: false,
            streamed,
            prefetch: None,
        };
        // The sets' first volumes are fetched side by side from the start.
        s.prefetch = s.ahead(true);
        s
    }

    /// Starts downloading the next volume of a whole restore while the
    /// current one is read. Not one that will be read straight from the
    /// backend (see [`open_direct`]): a set's first (nothing to overlap
    /// its download with), or any from a local directory.
    fn ahead(&self, first: bool) -> Option<Prefetch> {
        let v = self.volumes.front().filter(|_| self.prefix == index::ROOT)?;
        let direct =
            self.streamed && (first || self.archive.storage.is_local()) && whole_table(self.archive, v).is_some();
        if direct { None } else { Prefetch::start(self.archive, v) }
    }

    /// Reads up to the next entry within the prefix (unless there is a head).
    pub fn fill(&mut self, rep: &Reporter) {
        while self.head.is_none() {
            let item = match self.next_raw(rep) {
                Raw::End => return,
                Raw::Lost => continue,
                Raw::Item(i) => i,
            };
            let name = match parse_entry_name(&item.name) {
                Ok(n) => n,
                Err(e) => {
                    refuse(rep, &item.name, &e.message);
                    continue;
                }
            };
            if name.kind == EntryType::Signature {
                refuse(rep, &item.name, "a signature entry in a volume");
                continue;
            }
            if name.kind.is_multivol() && name.chunk != Some(1) {
                // The tail of a file whose start was lost (already reported), or
                // whose start is missing.
                if !self.after_loss && index::is_within(&name.index, &self.prefix) {
                    refuse(rep, &item.name, "a multivol chunk without the chunks before it");
                }
                continue;
            }
            self.after_loss = false;
            if let Some((start, end)) = self.tar.as_ref().and_then(|v| v.range.as_ref())
                && (index::cmp(&name.index, start).is_lt() || index::cmp(&name.index, end).is_gt())
            {
                let why = format!(
                    "outside its volume's range in the manifest ({} to {}; the volume is damaged or was not \
                     written by duplicity)",
                    show(start),
                    show(end)
                );
                refuse(rep, &item.name, &why);
                continue;
            }
            if !index::is_within(&name.index, &self.prefix) {
                if index::cmp(&name.index, &self.prefix).is_gt() {
                    // Past the prefix's range: nothing more of this set is wanted.
                    self.volumes.clear();
                    self.finish_volume(rep);
                    return;
                }
                continue;
            }
            if let Some(last) = &self.last
                && index::cmp(last, &name.index).is_ge()
            {
                refuse(rep, &item.name, "out of order (the volume is damaged or was not written by duplicity)");
                continue;
            }
            let kind = name.kind.base();
            let entry = match item.meta.to_entry(&name.index, item.size) {
                Ok(e) => e,
                Err(e) => {
                    refuse(rep, &item.name, &e.message);
                    continue;
                }
            };
            if kind == EntryType::Diff && entry.ftype != FileType::File {
                refuse(rep, &item.name, "a delta of something that is not a regular file");
                continue;
            }
            if name.kind.is_multivol() && entry.ftype != FileType::File {
                refuse(rep, &item.name, "multivol chunks of something that is not a regular file");
                continue;
            }
            let has_data = kind != EntryType::Deleted && entry.ftype == FileType::File;
            self.last = Some(name.index.clone());
            if has_data && name.kind.is_multivol() {
                self.series = Some(Series { kind: name.kind, index: name.index, next: 2 });
            }
            self.in_data = has_data;
            self.data_open = has_data;
            let vol = self.tar.as_ref().map_or(0, |v| v.id);
            self.head = Some(Head { kind, size: (!name.kind.is_multivol()).then_some(item.size), entry, vol });
        }
    }

    /// A reader of the head's data.
    pub fn content<'s>(&'s mut self, rep: &'s Reporter<'s>) -> ContentRead<'s>
    where
        'a: 's,
    {
        ContentRead { s: self, rep }
    }

    /// Skips what is left of the head's data.
    pub fn drain(&mut self, rep: &Reporter) {
        if !self.in_data {
            return;
        }
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = self.read_data(&mut buf, rep) {
            if n == 0 {
                break;
            }
        }
    }

    /// The next tar entry of the set, opening the next volume as needed.
    fn next_raw(&mut self, rep: &Reporter) -> Raw {
        if let Some(i) = self.pending.take() {
            return Raw::Item(i);
        }
        loop {
            if self.tar.is_none() {
                let Some(v) = self.volumes.pop_front() else {
                    return Raw::End;
                };
                let prefetched = self.prefetch.take();
                match open_volume(self.archive, &v, &self.prefix, rep, self.streamed, prefetched) {
                    Ok(Opened { entries: stream, checked, spill, direct }) => {
                        self.prefetch = self.ahead(false);
                        let id = rep.volume_opened(checked);
                        self.tar = Some(Volume { stream, name: v.name, range: v.range, id, spill, direct });
                    }
                    Err(e) if e.kind == Kind::Unwritable => {
                        // The staging disk is full: not the volume's fault.
                        rep.stop(e);
                        self.volumes.clear();
                        return Raw::End;
                    }
                    Err(e) => {
                        self.lost(rep, &v.name, &e);
                        return Raw::Lost;
                    }
                }
            }
            let Some(vol) = self.tar.as_mut() else { continue };
            if let Some(sp) = &vol.spill
                && rep.crowded()
                && rep.trust(&[vol.id]) == super::Trust::Pending
            {
                match sp.spill(&vol.name) {
                    Ok(()) => rep.volume_verified(vol.id),
                    Err(e) if e.kind == Kind::Unwritable => {
                        rep.stop(e);
                        self.volumes.clear();
                        return Raw::End;
                    }
                    Err(e) => {
                        let name = vol.name.clone();
                        self.lost(rep, &name, &e);
                        return Raw::Lost;
                    }
                }
            }
            match vol.stream.next_item() {
                Ok(Some(i)) => {
                    rep.touch(vol.id);
                    return Raw::Item(i);
                }
                // The tar ended; TarStream has checked what follows it
                // (gzip checksums, at most 1 MiB; an OpenPGP volume's MDC
                // and signature come with its end).
                Ok(None) => {
                    vol.ended(rep);
                    self.tar = None;
                }
                Err(e) => {
                    let name = vol.name.clone();
                    self.lost(rep, &name, &e);
                    return Raw::Lost;
                }
            }
        }
    }

    /// Reports a volume that could not be read and forgets its state. The
    /// message names the volume once: most errors begin with its name.
    fn lost(&mut self, rep: &Reporter, volume: &str, e: &Error) {
        // Damage in a volume read by its seek table shows as anything
        // (bad tar headers, say): its hash says what it is.
        let hash_err = self.tar.as_ref().and_then(|v| v.direct.as_ref()).and_then(|d| d.check().err());
        let e = hash_err.as_ref().unwrap_or(e);
        let msg = match e.message.strip_prefix(volume).and_then(|m| m.strip_prefix(": ")) {
            Some(rest) => format!("skipping the damaged volume {volume}: {rest}"),
            None if e.message.contains(volume) => format!("skipping a damaged volume: {}", e.message),
            None => format!("skipping the damaged volume {volume}: {}", e.message),
        };
        rep.problem(Kind::Corrupt, msg);
        if let Some(v) = self.tar.take() {
            rep.volume_lost(v.id);
        }
        self.series = None;
        self.after_loss = true;
    }
}

impl SetStream<'_> {
    /// Leaves the current volume; one whose end is not checked yet (read
    /// as it decrypts) is read to its end first, so what was taken from
    /// it is verified, or lost.
    fn finish_volume(&mut self, rep: &Reporter) {
        let Some(vol) = self.tar.as_mut() else { return };
        if rep.trust(&[vol.id]) == super::Trust::Pending {
            loop {
                match vol.stream.next_item() {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        vol.ended(rep);
                        break;
                    }
                    Err(e) => {
                        let name = vol.name.clone();
                        self.lost(rep, &name, &e);
                        return;
                    }
                }
            }
        }
        self.tar = None;
    }
}

/// The data of a set's current entry.
trait Data {
    fn read_data(&mut self, buf: &mut [u8], rep: &Reporter) -> io::Result<usize>;
}

impl Data for SetStream<'_> {
    /// Reads the head's data; at the end of a chunk, goes on with the next
    /// chunk of a multivol series (possibly in the next volume).
    fn read_data(&mut self, buf: &mut [u8], rep: &Reporter) -> io::Result<usize> {
        let lost = |what: String| io::Error::other(Error::corrupt(what));
        loop {
            if !self.in_data {
                return Ok(0);
            }
            if self.data_open {
                let Some(Volume { stream, name: vol, .. }) = self.tar.as_mut() else {
                    self.in_data = false;
                    return Err(lost("the volume holding it is gone".into()));
                };
                match stream.read_data(buf) {
                    Ok(0) => self.data_open = false,
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let vol = vol.clone();
                        let err = crate::error::content_error(&vol, e);
                        self.lost(rep, &vol, &err);
                        self.in_data = false;
                        self.data_open = false;
                        return Err(lost(format!("content lost with the damaged volume {vol}")));
                    }
                }
                if self.series.is_none() {
                    self.in_data = false;
                    return Ok(0);
                }
                continue;
            }
            // Between two chunks of a series.
            match self.next_raw(rep) {
                Raw::End => {
                    self.series = None;
                    self.in_data = false;
                    return Ok(0);
                }
                Raw::Lost => {
                    self.in_data = false;
                    return Err(lost("content lost with a damaged volume".into()));
                }
                Raw::Item(item) => {
                    let next = parse_entry_name(&item.name).ok();
                    let Some(s) = self.series.as_mut() else {
                        self.pending = Some(item);
                        self.in_data = false;
                        return Ok(0);
                    };
                    match next {
                        Some(EntryName { kind, index, chunk }) if kind == s.kind && index == s.index => {
                            if chunk == Some(s.next) {
                                s.next += 1;
                                self.data_open = true;
                                continue;
                            }
                            let want = s.next;
                            self.series = None;
                            self.in_data = false;
                            self.after_loss = true;
                            rep.problem(
                                Kind::Corrupt,
                                format!("{}: chunk {want} is missing from its multivol series", show(&index)),
                            );
                            return Err(lost(format!("chunk {want} is missing")));
                        }
                        _ => {
                            // The series ended; the entry is the set's next one.
                            self.pending = Some(item);
                            self.series = None;
                            self.in_data = false;
                            return Ok(0);
                        }
                    }
                }
            }
        }
    }
}

fn refuse(rep: &Reporter, name: &[u8], why: &str) {
    let why = why.strip_prefix(&format!("tar entry {}: ", PathBytes(name.to_vec()))).unwrap_or(why);
    rep.problem(Kind::Corrupt, format!("refused the archive entry {}: {why}", show(name)));
}

/// Reads the head's data of a [`SetStream`]; errors carry an [`Error`]
/// (see [`crate::error::content_error`]).
pub(crate) struct ContentRead<'s> {
    s: &'s mut (dyn Data + 's),
    rep: &'s Reporter<'s>,
}

impl ContentRead<'_> {
    /// Copies the rest of the data to `w` in whole pieces.
    pub fn copy_to(&mut self, w: &mut dyn Write) -> io::Result<u64> {
        super::copy(self, w)
    }
}

impl Read for ContentRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.s.read_data(buf, self.rep)
    }
}

/// An open volume: its entries, read by a [`TarStream`] thread.
struct Volume {
    stream: Entries,
    name: String,
    /// See [`VolPlan::range`].
    range: Option<(Vec<u8>, Vec<u8>)>,
    id: VolId,
    /// A streamed OpenPGP volume's plaintext (see [`Spill`]).
    spill: Option<Spill>,
    /// Read straight from the backend: its end check (see [`open_direct`]).
    direct: Option<EndCheck>,
}

impl Volume {
    /// The volume was read to its end, and its end checked.
    fn ended(&self, rep: &Reporter) {
        if let Some(end) = &self.direct {
            rep.fetched(&self.name, end.bytes());
        }
        rep.volume_verified(self.id);
    }
}

/// A volume opened for reading.
struct Opened {
    entries: Entries,
    /// Verified whole before anything is read from it.
    checked: bool,
    spill: Option<Spill>,
    direct: Option<EndCheck>,
}

impl Opened {
    fn checked(entries: Entries) -> Opened {
        Opened { entries, checked: true, spill: None, direct: None }
    }
}

/// The plaintext of a volume read as it decrypts, which can be switched to
/// a temporary file holding the rest (decrypted and verified at once).
#[derive(Clone)]
struct Spill(Arc<Mutex<SpillState>>);

/// The decrypting reader, and the temporary file once spilled.
type SpillState = (Box<dyn Read + Send>, Option<BufReader<File>>);

impl Read for Spill {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.0.lock().map_err(|_| io::Error::other("volume reader poisoned"))?;
        match &mut s.1 {
            Some(f) => f.read(buf),
            None => s.0.read(buf),
        }
    }
}

impl Spill {
    /// Decrypts the rest into a temporary file (its MDC and signature are
    /// checked at its end) and reads on from there.
    fn spill(&self, name: &str) -> Result<()> {
        let mut s = self.0.lock().map_err(|_| Error::other("volume reader poisoned"))?;
        if s.1.is_some() {
            return Ok(());
        }
        let mut f = crate::io::spool::temp_file().map_err(|e| Error::io("creating a temporary file", e))?;
        io::copy(&mut s.0, &mut f).map_err(|e| match crate::error::carried(e) {
            Ok(err) => err,
            Err(e) if crate::error::is_unwritable(&e) => Error::io(format!("{name}: staging its plaintext"), e),
            Err(e) => Error::corrupt(format!("{name}: {e}")),
        })?;
        f.seek(SeekFrom::Start(0)).map_err(|e| Error::io(format!("{name}: temporary copy"), e))?;
        s.1 = Some(BufReader::with_capacity(256 << 10, f));
        Ok(())
    }
}

/// A reader shared with the [`TarStream`] thread; the thread is done with
/// it once the stream has ended.
#[derive(Clone)]
struct Shared(Arc<Mutex<Box<dyn Read + Send>>>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut r = self.0.lock().map_err(|_| io::Error::other("volume reader poisoned"))?;
        r.read(buf)
    }
}

/// A volume's entries: read as the volume is, or staged (see [`open_staged`]).
enum Entries {
    Tar(TarStream),
    Staged(Staged),
}

/// The entries a volume holds at a prefix (and the first one past it),
/// their data in a temporary file.
struct Staged {
    items: VecDeque<(Item, u64, u64)>,
    data: File,
    /// Offset and end of the current entry's data.
    at: u64,
    end: u64,
}

impl Entries {
    fn next_item(&mut self) -> Result<Option<Item>> {
        match self {
            Entries::Tar(t) => t.next_item(),
            Entries::Staged(s) => Ok(s.items.pop_front().map(|(item, off, len)| {
                (s.at, s.end) = (off, off + len);
                item
            })),
        }
    }

    fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Entries::Tar(t) => t.data().read(buf),
            Entries::Staged(s) => {
                use std::os::unix::fs::FileExt;
                let want = buf.len().min((s.end - s.at) as usize);
                if want == 0 {
                    return Ok(0);
                }
                let n = s.data.read_at(&mut buf[..want], s.at)?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "staged entry data ended early"));
                }
                s.at += n as u64;
                Ok(n)
            }
        }
    }
}

/// More entries than this at a prefix in one volume: the volume's whole
/// plaintext is staged instead (the entries' metadata is held in memory).
const MAX_STAGED: usize = 4096;

/// Reads an encrypted volume for a part of the backup (`prefix`): decrypts
/// it as it is downloaded, keeps the entries at the prefix (data in a
/// temporary file) and the first entry past it, then reads the rest for
/// the checks at its end, and checks the manifest's hash. Nothing is handed
/// out before all of that passed. `None`: too many entries; stage the whole
/// volume.
///
/// The rest is decrypted (MDC, signature) unless the volume's SHA-1 in the
/// backend's manifest vouches for it ([`VolPlan::vouched`]) and no
/// signature is required: then it is only hashed, not decrypted or
/// inflated. That manifest came through its own MDC, and a ciphertext with
/// the hash it lists is the one written (a second preimage, not a
/// collision, would be needed), so the volume's MDC would tell nothing more.
fn open_staged(archive: &Archive, v: &VolPlan, prefix: &[u8], rep: &Reporter) -> Result<Option<Entries>> {
    open_staged_as(archive, v, prefix, rep, true)
}

/// [`open_staged`], with the volume's seek table when `seek`.
fn open_staged_as(
    archive: &Archive,
    v: &VolPlan,
    prefix: &[u8],
    rep: &Reporter,
    seek: bool,
) -> Result<Option<Entries>> {
    // `None`: too many entries at the prefix (the volume is read again,
    // whole).
    let hashed = Arc::new(Mutex::new((v.hash.as_ref().map(|(k, _)| Hasher::new(k)), 0u64)));
    let raw: Box<dyn Read + Send> = Box::new(HashRead { r: archive.storage.reader(&v.name)?, h: hashed.clone() });
    let raw = Shared(Arc::new(Mutex::new(raw)));
    let hash_vouches = v.vouched && v.hash.as_ref().is_some_and(|(k, _)| k.eq_ignore_ascii_case("SHA1"));
    // With the hash vouching, and a seek table for this very ciphertext,
    // only the blocks from the one before the prefix on are decrypted.
    let table = (v.hash.as_ref())
        .filter(|_| hash_vouches && seek)
        .and_then(|(_, h)| SeekTable::load(&archive.cache, &v.name, h));
    let plain = match &table {
        Some(t) => {
            let at = t.start_for(prefix);
            log::debug!("{}: its seek table starts the reading at tar offset {at}", v.name);
            match crypto::open_at(archive.keys_for(&v.name)?, &v.name, raw.clone(), t, at) {
                Ok(Some(r)) => Ok(r),
                Err(e) => Err(e),
                Ok(None) => {
                    note!(
                        log::Level::Warn,
                        "{}: its seek table in the cache was not made with its key (edited?); reading it from its start",
                        v.name
                    );
                    return open_staged_as(archive, v, prefix, rep, false);
                }
            }
        }
        None => archive.plaintext(&v.name, raw.clone()),
    };
    let staged = plain.and_then(|plain| stage_entries(v, prefix, plain, &raw, hash_vouches));
    let staged = match staged {
        // Damage is told by the hash when it can be (a seek table's reader
        // checks nothing, and any error may come from a damaged volume).
        Err(e) if table.is_some() && e.kind == Kind::Corrupt => {
            if drain(&raw).is_ok() {
                let (h, _) = std::mem::take(&mut *hashed.lock().map_err(|_| Error::corrupt("hash poisoned"))?);
                check_hash(v, h)?;
            }
            return Err(e);
        }
        Ok(None) => return Ok(None),
        other => other?,
    };
    let (h, total) = std::mem::take(&mut *hashed.lock().map_err(|_| Error::corrupt("hash poisoned"))?);
    check_hash(v, h)?;
    rep.fetched(&v.name, total);
    Ok(staged)
}

/// Reads what is left of `r` (hashed below it), keeping nothing.
fn drain(r: &Shared) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut r = r.clone();
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// [`open_staged`]'s reading: the entries at `prefix` from `plain` (data
/// into a temporary file), then the rest of the volume for its checks (the
/// rest of the ciphertext only, when its hash vouches for it).
fn stage_entries(
    v: &VolPlan,
    prefix: &[u8],
    plain: Box<dyn Read + Send>,
    raw: &Shared,
    hash_vouches: bool,
) -> Result<Option<Entries>> {
    let plain = Shared(Arc::new(Mutex::new(plain)));
    let mut tar = TarStream::new(plain.clone(), &v.name);
    let mut data = crate::io::spool::temp_file().map_err(|e| Error::io("creating a temporary file", e))?;
    let mut items = VecDeque::new();
    let mut off = 0u64;
    let staging = |e: io::Error| match crate::error::carried(e) {
        Ok(err) => err,
        Err(e) if crate::error::is_unwritable(&e) => Error::io(format!("{}: staging its entries", v.name), e),
        Err(e) => Error::corrupt(format!("{}: {e}", v.name)),
    };
    while let Some(item) = tar.next_item()? {
        let name = parse_entry_name(&item.name).ok();
        let past =
            name.as_ref().is_some_and(|n| index::cmp(&n.index, prefix).is_gt() && !index::is_within(&n.index, prefix));
        if name.as_ref().is_some_and(|n| !index::is_within(&n.index, prefix)) && !past {
            continue;
        }
        let len = if past { 0 } else { io::copy(&mut tar.data(), &mut data).map_err(staging)? };
        items.push_back((item, off, len));
        off += len;
        if past {
            break;
        }
        if items.len() > MAX_STAGED {
            return Ok(None);
        }
    }
    drop(tar);
    let rest = if hash_vouches {
        drop(plain);
        raw
    } else {
        &plain
    };
    drain(rest).map_err(staging)?;
    Ok(Some(Entries::Staged(Staged { items, data, at: 0, end: 0 })))
}

/// A hash of what was read, and its length.
type Hashed = Arc<Mutex<(Option<Hasher>, u64)>>;

/// Counts and hashes what is read through it.
struct HashRead<R> {
    r: R,
    h: Hashed,
}

impl<R: Read> Read for HashRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        let mut h = self.h.lock().map_err(|_| io::Error::other("hash poisoned"))?;
        if let Some(x) = &mut h.0 {
            x.update(&buf[..n]);
        }
        h.1 += n as u64;
        Ok(n)
    }
}

/// Checks a volume's hash against the manifest's (a warning when it has
/// none, or one of a kind not known).
fn check_hash(v: &VolPlan, hasher: Option<Hasher>) -> Result<()> {
    check_hash_of(&v.name, v.hash.as_ref(), hasher)
}

fn check_hash_of(name: &str, want: Option<&(String, String)>, hasher: Option<Hasher>) -> Result<()> {
    match (want, hasher) {
        (Some((kind, want)), Some(h)) => match h.hex() {
            Some(got) if &got == want => {}
            Some(got) => {
                return Err(Error::corrupt(format!(
                    "{name}: {kind} is {got} but the manifest says {want}: the volume is damaged"
                )));
            }
            None => note!(log::Level::Warn, "{name}: cannot check a {kind} hash; reading it unchecked"),
        },
        _ => note!(log::Level::Warn, "{name}: the manifest has no hash for it; reading it unchecked"),
    }
    Ok(())
}

/// Downloads a volume to a temporary file, checks its hash and returns its
/// tar entries, and whether the volume was verified whole: an OpenPGP
/// volume is, unless `streamed` (then its MDC and signature are checked
/// when its end is read).
fn open_volume(
    archive: &Archive,
    v: &VolPlan,
    prefix: &[u8],
    rep: &Reporter,
    streamed: bool,
    prefetched: Option<Prefetch>,
) -> Result<Opened> {
    if v.missing {
        return Err(Error::corrupt(format!("{} is listed in the manifest but missing on the backend", v.name)));
    }
    if prefix != index::ROOT
        && v.encrypted
        && let Some(staged) = open_staged(archive, v, prefix, rep)?
    {
        return Ok(Opened::checked(staged));
    }
    let mut table = whole_table(archive, v);
    let fetched = match prefetched {
        Some(p) if p.name == v.name => p.wait(),
        _ => {
            if streamed && let Some(t) = &table {
                if let Some(direct) = open_direct(archive, v, t)? {
                    return Ok(direct);
                }
                not_sealed(&v.name);
                table = None;
            }
            download(&v.name, archive.storage.reader(&v.name)?, v.hash.as_ref().map(|(k, _)| Hasher::new(k)))
        }
    };
    let (mut file, hasher, total) = fetched?;
    check_hash(v, hasher)?;
    rep.fetched(&v.name, total);
    let rewind =
        |f: &mut File| f.seek(SeekFrom::Start(0)).map_err(|e| Error::io(format!("{}: temporary copy", v.name), e));
    rewind(&mut file)?;
    // The copy's hash is checked, and the backend's manifest vouches for
    // it: the volume is what was written, and its MDC would tell nothing
    // more (see `open_staged`). With its seek table the tar is read without
    // computing it, and nothing waits for the volume's end.
    if let Some(t) = table {
        let copy = file.try_clone().map_err(|e| Error::io(format!("{}: temporary copy", v.name), e))?;
        let copy = BufReader::with_capacity(256 << 10, copy);
        if let Some(r) = crypto::open_whole(archive.keys_for(&v.name)?, &v.name, copy, &t)? {
            log::debug!("{}: read by its seek table (its hash is vouched for)", v.name);
            return Ok(Opened::checked(Entries::Tar(TarStream::with_ahead(r, &v.name, READ_AHEAD))));
        }
        not_sealed(&v.name);
        rewind(&mut file)?;
    }
    let r = BufReader::with_capacity(256 << 10, file);
    // Decrypted or gunzipped as its name says.
    let mut input = archive.plaintext(&v.name, r)?;
    if v.encrypted && !streamed {
        // Decrypted whole first: the integrity check (MDC) and the signature
        // come at the end, and nothing may be restored from a volume before
        // they pass.
        let mut plain = crate::io::spool::temp_file().map_err(|e| Error::io("creating a temporary file", e))?;
        io::copy(&mut input, &mut plain).map_err(|e| match crate::error::carried(e) {
            Ok(err) => err,
            Err(e) if crate::error::is_unwritable(&e) => Error::io(format!("{}: staging its plaintext", v.name), e),
            Err(e) => Error::corrupt(format!("{}: {e}", v.name)),
        })?;
        plain.seek(SeekFrom::Start(0)).map_err(|e| Error::io(format!("{}: temporary copy", v.name), e))?;
        input = Box::new(BufReader::with_capacity(256 << 10, plain));
    }
    if v.encrypted && streamed {
        let spill = Spill(Arc::new(Mutex::new((input, None))));
        let entries = Entries::Tar(TarStream::new(spill.clone(), &v.name));
        return Ok(Opened { entries, checked: false, spill: Some(spill), direct: None });
    }
    Ok(Opened::checked(Entries::Tar(TarStream::new(input, &v.name))))
}

/// Tar batches (128 KiB each) read ahead of the restore from a volume read
/// by its seek table: its blocks are inflated in parallel, and with one
/// batch between them the inflating, the tar reading and the writing
/// stalled each other (a whole restore of the bench's large corpus,
/// 3.26-3.64 s with one, 2.91-2.96 s with eight). Only such volumes, of
/// sets of 32 MiB or more: a chain of many sets holds a stream per set.
const READ_AHEAD: usize = 8;

/// Reads a volume whose hash is vouched for straight from the backend by
/// its seek table: no temporary copy to make and hash before the first
/// byte is used, no MDC to compute. The ciphertext is hashed as it comes
/// and checked when the plaintext ends, which is then the volume's end
/// check: what is restored from it waits for it, as from a volume read as
/// it decrypts (see `dest`). `None`: the table was not made with its key.
fn open_direct(archive: &Archive, v: &VolPlan, t: &SeekTable) -> Result<Option<Opened>> {
    let hashed: Hashed = Arc::new(Mutex::new((v.hash.as_ref().map(|(k, _)| Hasher::new(k)), 0)));
    let raw: Box<dyn Read + Send> = Box::new(HashRead { r: archive.storage.reader(&v.name)?, h: hashed.clone() });
    let raw = Shared(Arc::new(Mutex::new(raw)));
    let copy = BufReader::with_capacity(256 << 10, raw.clone());
    let Some(plain) = crypto::open_whole(archive.keys_for(&v.name)?, &v.name, copy, t)? else {
        return Ok(None);
    };
    log::debug!("{}: read by its seek table as it is fetched, its hash checked at its end", v.name);
    let end = EndCheck(Arc::new(Mutex::new(EndState {
        raw,
        hashed,
        name: v.name.clone(),
        want: v.hash.clone(),
        verdict: None,
    })));
    let spill = Spill(Arc::new(Mutex::new((Box::new(HashAtEnd { plain, end: end.clone() }), None))));
    let entries = Entries::Tar(TarStream::with_ahead(spill.clone(), &v.name, READ_AHEAD));
    Ok(Some(Opened { entries, checked: false, spill: Some(spill), direct: Some(end) }))
}

/// The end check of a volume read by [`open_direct`]: the rest of its
/// ciphertext read and its hash compared, once (its outcome is kept).
#[derive(Clone)]
struct EndCheck(Arc<Mutex<EndState>>);

struct EndState {
    raw: Shared,
    hashed: Hashed,
    name: String,
    want: Option<(String, String)>,
    verdict: Option<std::result::Result<(), String>>,
}

impl EndCheck {
    fn check(&self) -> Result<()> {
        let mut s = self.0.lock().map_err(|_| Error::other("volume check poisoned"))?;
        if s.verdict.is_none() {
            let drained = drain(&s.raw).map_err(|e| format!("{}: reading: {e}", s.name));
            let h = s.hashed.lock().map_err(|_| Error::other("hash poisoned"))?.0.take();
            s.verdict = Some(drained.and_then(|()| check_hash_of(&s.name, s.want.as_ref(), h).map_err(|e| e.message)));
        }
        match &s.verdict {
            Some(Err(m)) => Err(Error::corrupt(m.clone())),
            _ => Ok(()),
        }
    }

    /// The volume's bytes read so far.
    fn bytes(&self) -> u64 {
        self.0.lock().ok().and_then(|s| s.hashed.lock().ok().map(|h| h.1)).unwrap_or(0)
    }
}

/// The plaintext of a volume read by [`open_direct`]; its end is the
/// volume's [`EndCheck`].
struct HashAtEnd {
    plain: Box<dyn Read + Send>,
    end: EndCheck,
}

impl Read for HashAtEnd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.plain.read(buf) {
            Ok(0) if !buf.is_empty() => self.end.check().map(|()| 0).map_err(io::Error::other),
            Ok(n) => Ok(n),
            // A seek table's reader checks nothing: damage is told by the
            // hash when it can be.
            Err(e) if e.kind() != io::ErrorKind::Interrupted => {
                Err(self.end.check().err().map(io::Error::other).unwrap_or(e))
            }
            Err(e) => Err(e),
        }
    }
}

fn not_sealed(name: &str) {
    note!(
        log::Level::Warn,
        "{name}: its seek table in the cache was not made with its key (edited?); checking it by its MDC"
    );
}

/// The seek table to read a whole encrypted volume by, when its hash is
/// vouched for (see [`VolPlan::vouched`]) and nothing is signed.
fn whole_table(archive: &Archive, v: &VolPlan) -> Option<SeekTable> {
    let (kind, sha1) = v.hash.as_ref()?;
    if !v.encrypted || !v.vouched || !kind.eq_ignore_ascii_case("SHA1") {
        return None;
    }
    SeekTable::load(&archive.cache, &v.name, sha1)
}

/// A volume's temporary copy, its hash and size.
type Fetched = (File, Option<Hasher>, u64);

/// Copies a volume to a temporary file, hashing it on the way.
fn download(name: &str, mut src: impl Read, mut hasher: Option<Hasher>) -> Result<Fetched> {
    let mut file = crate::io::spool::temp_file().map_err(|e| Error::io("creating a temporary file", e))?;
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::corrupt(format!("{name}: reading: {e}"))),
        };
        if let Some(h) = &mut hasher {
            h.update(&buf[..n]);
        }
        file.write_all(&buf[..n]).map_err(|e| Error::io(format!("{name}: writing a temporary copy"), e))?;
        total += n as u64;
    }
    Ok((file, hasher, total))
}

/// The next volume of a set, downloaded by a thread of its own while the
/// current one is read (a whole restore only: one volume ahead, on disk).
pub(crate) struct Prefetch {
    name: String,
    thread: std::thread::JoinHandle<Result<Fetched>>,
}

impl Prefetch {
    /// Starts downloading `v`; `None` when it cannot start (it is then
    /// fetched when it is needed, and any error reported then).
    fn start(archive: &Archive, v: &VolPlan) -> Option<Prefetch> {
        if v.missing {
            return None;
        }
        let src = archive.storage.reader(&v.name).ok()?;
        let hasher = v.hash.as_ref().map(|(k, _)| Hasher::new(k));
        let name = v.name.clone();
        let thread =
            std::thread::Builder::new().name("dup-fetch".into()).spawn(move || download(&name, src, hasher)).ok()?;
        Some(Prefetch { name: v.name.clone(), thread })
    }

    fn wait(self) -> Result<Fetched> {
        self.thread.join().unwrap_or_else(|_| Err(Error::other(format!("{}: the download thread failed", self.name))))
    }
}

/// The hashes a manifest may name.
enum Hasher {
    Sha1(Sha1),
    Md5(Md5),
    Unknown,
}

impl Hasher {
    fn new(kind: &str) -> Hasher {
        match kind.to_ascii_uppercase().as_str() {
            "SHA1" => Hasher::Sha1(Sha1::new()),
            "MD5" => Hasher::Md5(Md5::new()),
            _ => Hasher::Unknown,
        }
    }

    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(b),
            Hasher::Md5(h) => h.update(b),
            Hasher::Unknown => {}
        }
    }

    fn hex(self) -> Option<String> {
        match self {
            Hasher::Sha1(h) => Some(crate::dupfmt::hex(&h.finalize())),
            Hasher::Md5(h) => Some(crate::dupfmt::hex(&h.finalize())),
            Hasher::Unknown => None,
        }
    }
}

/// Reads `f` from its start (used by targets on staged files).
pub(crate) fn rewind(f: &mut File) -> io::Result<()> {
    f.seek(SeekFrom::Start(0)).map(|_| ())
}
