//! An owned, forward-only view of a tar stream, for merging several at once
//! (signature chains, restore chains): a reader thread parses the tar with
//! [`super::tar::for_each_entry`] and hands entries and their data over a
//! bounded channel in batches (one hand-over per [`BATCH`] bytes or
//! [`BATCH_MSGS`] messages, not three per entry: most entries are small,
//! and a thread wake-up each cost more than the entry), so memory stays at
//! three batches per stream (more when asked to read further ahead).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::tar::{Item, for_each_entry};
use crate::error::{Error, Kind, Result};

const PIECE: usize = 64 * 1024;
/// A batch is handed over once it holds this much data...
const BATCH: usize = 128 * 1024;
/// ...or this many messages.
const BATCH_MSGS: usize = 512;

enum Msg {
    Item(Item),
    Data(Vec<u8>),
    EndData,
    Failed(Error),
}

/// Entries of one tar stream, read ahead by a thread.
pub struct TarStream {
    rx: Receiver<Vec<Msg>>,
    /// The rest of the batch being read.
    batch: VecDeque<Msg>,
    thread: Option<JoinHandle<()>>,
    /// Data of the current entry not yet consumed.
    in_data: bool,
    buf: Vec<u8>,
    pos: usize,
    name: String,
}

impl TarStream {
    /// Starts reading `r` (a decompressed tar); `name` labels errors.
    pub fn new(r: impl Read + Send + 'static, name: &str) -> TarStream {
        Self::with_ahead(r, name, 1)
    }

    /// [`TarStream::new`], reading up to `ahead` batches ahead of the
    /// consumer (more memory, fewer stalls when both sides are busy).
    pub fn with_ahead(r: impl Read + Send + 'static, name: &str, ahead: usize) -> TarStream {
        let (tx, rx) = sync_channel(ahead.max(1));
        let label = name.to_string();
        let thread = std::thread::Builder::new()
            .name("dup-tar".into())
            .spawn(move || feed(r, &mut Batcher { tx, batch: Vec::new(), bytes: 0 }, &label))
            .ok();
        TarStream {
            rx,
            batch: VecDeque::new(),
            thread,
            in_data: false,
            buf: Vec::new(),
            pos: 0,
            name: name.to_string(),
        }
    }

    /// The next message; `None` once the thread is gone.
    fn recv(&mut self) -> Option<Msg> {
        if self.batch.is_empty() {
            self.batch = self.rx.recv().ok()?.into();
        }
        self.batch.pop_front()
    }

    /// The next entry's header; the data of the previous one is skipped.
    /// `None` at the end of the archive.
    pub fn next_item(&mut self) -> Result<Option<Item>> {
        if self.in_data {
            io::copy(&mut self.data(), &mut io::sink()).map_err(|e| stream_error(&self.name, e))?;
        }
        match self.recv() {
            Some(Msg::Item(i)) => {
                self.in_data = true;
                self.buf.clear();
                self.pos = 0;
                Ok(Some(i))
            }
            Some(Msg::Failed(e)) => Err(e),
            Some(Msg::Data(_)) | Some(Msg::EndData) => {
                Err(Error::new(Kind::Corrupt, format!("{}: tar reader out of step", self.name)))
            }
            None => Ok(None),
        }
    }

    /// The current entry's data.
    pub fn data(&mut self) -> EntryData<'_> {
        EntryData { s: self }
    }
}

impl Drop for TarStream {
    fn drop(&mut self) {
        // Dropping the receiver makes the feeder's next send fail, so it ends.
        let (_, rx) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, rx));
        self.batch.clear();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one entry's data (see [`TarStream::data`]).
pub struct EntryData<'a> {
    s: &'a mut TarStream,
}

impl Read for EntryData<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let s = &mut *self.s;
        while s.pos == s.buf.len() {
            if !s.in_data {
                return Ok(0);
            }
            match s.recv() {
                Some(Msg::Data(d)) => {
                    s.buf = d;
                    s.pos = 0;
                }
                Some(Msg::EndData) => {
                    s.in_data = false;
                    return Ok(0);
                }
                Some(Msg::Failed(e)) => {
                    s.in_data = false;
                    return Err(io::Error::other(e));
                }
                Some(Msg::Item(_)) | None => {
                    s.in_data = false;
                    return Err(io::Error::other(Error::new(
                        Kind::Corrupt,
                        format!("{}: tar entry data ended early", s.name),
                    )));
                }
            }
        }
        let n = out.len().min(s.buf.len() - s.pos);
        out[..n].copy_from_slice(&s.buf[s.pos..s.pos + n]);
        s.pos += n;
        Ok(n)
    }
}

fn stream_error(name: &str, e: io::Error) -> Error {
    crate::error::carried(e).unwrap_or_else(|e| Error::new(Kind::Corrupt, format!("{name}: {e}")))
}

/// The feeder's side of the channel: messages gathered into batches.
struct Batcher {
    tx: SyncSender<Vec<Msg>>,
    batch: Vec<Msg>,
    bytes: usize,
}

impl Batcher {
    fn send(&mut self, m: Msg) -> Result<()> {
        if let Msg::Data(d) = &m {
            self.bytes += d.len();
        }
        self.batch.push(m);
        if self.bytes >= BATCH || self.batch.len() >= BATCH_MSGS { self.flush() } else { Ok(()) }
    }

    fn flush(&mut self) -> Result<()> {
        self.bytes = 0;
        if self.batch.is_empty() {
            return Ok(());
        }
        self.tx.send(std::mem::take(&mut self.batch)).map_err(|_| Error::other(GONE))
    }
}

const GONE: &str = "receiver gone";

/// Thread body: parse, send; stop quietly when the receiver is gone.
fn feed(mut r: impl Read, tx: &mut Batcher, name: &str) {
    let mut piece = vec![0u8; PIECE];
    let result = for_each_entry(&mut r, |item, data| {
        tx.send(Msg::Item(item))?;
        loop {
            let mut got = 0;
            while got < PIECE {
                match data.read(&mut piece[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(stream_error(name, e)),
                }
            }
            if got == 0 {
                break;
            }
            tx.send(Msg::Data(piece[..got].to_vec()))?;
            if got < PIECE {
                break;
            }
        }
        tx.send(Msg::EndData)
    })
    .and_then(|()| check_rest(r, name));
    match result {
        Err(e) if e.message == GONE => return,
        Err(e) => {
            let e = if e.message.starts_with(name) { e } else { e.context(name) };
            tx.batch.push(Msg::Failed(e));
        }
        Ok(()) => {}
    }
    let _ = tx.flush();
}

/// What follows the tar's end is read, up to [`MAX_REST`], so that a
/// damaged gzip stream (its CRC comes last) is noticed: damage in a
/// signature's data would otherwise pass as different checksums.
fn check_rest(r: impl Read, name: &str) -> Result<()> {
    let n = io::copy(&mut r.take(MAX_REST + 1), &mut io::sink())
        .map_err(|e| Error::new(Kind::Corrupt, format!("{name}: after the end of its tar: {e}")))?;
    if n > MAX_REST {
        return Err(Error::new(
            Kind::Corrupt,
            format!(
                "{name}: more than {} KiB follow the end of its tar (a tar ends with at most 10 KiB of padding); \
                 the rest was not read",
                MAX_REST >> 10
            ),
        ));
    }
    Ok(())
}

/// The most read after a tar's end (its padding; more is damage or a bomb).
const MAX_REST: u64 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dupfmt::tar::{Meta, Writer};

    fn sample(n: usize) -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        for i in 0..n {
            let data: Vec<u8> = (0..(i * 40_000)).map(|x| (x % 251) as u8).collect();
            w.append(format!("snapshot/f{i}").as_bytes(), &Meta::deleted(), &data).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn reads_items_and_data_and_skips() {
        let tar = sample(4);
        let mut s = TarStream::new(io::Cursor::new(tar.clone()), "t");
        let a = s.next_item().unwrap().unwrap();
        assert_eq!(a.name, b"snapshot/f0");
        let b = s.next_item().unwrap().unwrap();
        assert_eq!(b.size, 40_000);
        let mut d = Vec::new();
        s.data().read_to_end(&mut d).unwrap();
        assert_eq!(d.len(), 40_000);
        assert_eq!(s.next_item().unwrap().unwrap().name, b"snapshot/f2"); // data not read: skipped
        assert_eq!(s.next_item().unwrap().unwrap().size, 120_000);
        assert!(s.next_item().unwrap().is_none());
        // Dropped half-way: the thread ends.
        let mut s = TarStream::new(io::Cursor::new(tar), "t");
        s.next_item().unwrap();
        drop(s);
    }

    /// Many small entries and large ones cross batch boundaries in every way:
    /// each entry's data arrives whole and in order.
    #[test]
    fn entries_across_batches_keep_their_data() {
        let mut w = Writer::new(Vec::new());
        let body = |i: usize| -> Vec<u8> {
            let n = if i.is_multiple_of(97) { 300_000 + i } else { i % 3000 };
            (0..n).map(|x| ((x + i) % 253) as u8).collect()
        };
        for i in 0..2000 {
            w.append(format!("snapshot/f{i:05}").as_bytes(), &Meta::deleted(), &body(i)).unwrap();
        }
        let mut s = TarStream::new(io::Cursor::new(w.finish().unwrap()), "t");
        for i in 0..2000 {
            let item = s.next_item().unwrap().unwrap();
            assert_eq!(item.name, format!("snapshot/f{i:05}").as_bytes());
            if i % 5 == 4 {
                continue; // skipped unread
            }
            let mut d = Vec::new();
            s.data().read_to_end(&mut d).unwrap();
            assert!(d == body(i), "entry {i}");
        }
        assert!(s.next_item().unwrap().is_none());
    }

    /// A gzip'd tar whose CRC is wrong: the damage is found although the
    /// tar's entries all read (a damaged signature used to pass, exit 0).
    #[test]
    fn a_wrong_gzip_crc_after_the_tar_is_corrupt() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&sample(3)).unwrap();
        let mut data = gz.finish().unwrap();
        let n = data.len();
        data[n - 8] ^= 0xff; // the CRC32
        let mut s = TarStream::new(flate2::read::MultiGzDecoder::new(io::Cursor::new(data)), "sig");
        let mut got = Vec::new();
        let end = loop {
            match s.next_item() {
                Ok(Some(i)) => got.push(i.name),
                other => break other,
            }
        };
        assert_eq!(got.len(), 3);
        let e = end.expect_err("the damage is reported");
        assert_eq!(e.kind, Kind::Corrupt);
        assert!(e.message.contains("sig"), "{}", e.message);
    }

    #[test]
    fn truncated_is_corrupt() {
        let tar = sample(3);
        let mut s = TarStream::new(io::Cursor::new(tar[..1500 + 40_000].to_vec()), "vol9");
        let mut err = None;
        for _ in 0..4 {
            match s.next_item() {
                Ok(Some(_)) => {
                    if let Err(e) = s.data().read_to_end(&mut Vec::new()) {
                        err = Some(stream_error("vol9", e));
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let e = err.expect("a truncated tar is an error");
        assert_eq!(e.kind, Kind::Corrupt);
        assert!(e.message.contains("vol9"), "{}", e.message);
    }
}
