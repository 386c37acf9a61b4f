//! The combined signature state of an archive at a time (FORMAT-duplicity.md
//! §4.4): the full signature tar and the chain's new-signature tars merged by
//! path, the newest entry winning and `deleted/` removing the path. It is the
//! basis of an incremental (dup-sig) and the file list at a time (dup-ls).

use std::io::Read;

use flate2::read::MultiGzDecoder;

use crate::archive::Archive;
use crate::dupfmt::collection::{Collection, SigChain};
use crate::dupfmt::index;
use crate::dupfmt::tar::{EntryType, Item, parse_entry_name};
use crate::dupfmt::tarstream::{EntryData, TarStream};
use crate::error::{Error, Kind, Result};
use crate::joblog::note;
use crate::record::{Entry, FileType};

/// One signature tar being merged.
struct Source {
    stream: TarStream,
    head: Option<(EntryType, Entry)>,
}

impl Source {
    fn advance(&mut self) -> Result<()> {
        self.head = match self.stream.next_item()? {
            None => None,
            Some(item) => Some(decode(&item)?),
        };
        Ok(())
    }
}

/// One signature-tar entry as the merge reads it: its type and entry.
#[doc(hidden)] // public for the fuzz targets (crate::fuzzing)
pub fn decode(item: &Item) -> Result<(EntryType, Entry)> {
    let name = parse_entry_name(&item.name)?;
    let mut e = item.meta.to_entry(&name.index, item.size)?;
    match name.kind {
        EntryType::Signature | EntryType::Snapshot | EntryType::Deleted => {}
        other => {
            return Err(Error::new(
                Kind::Corrupt,
                format!("{} entry {} in a signature file", other.prefix(), crate::record::PathBytes(item.name.clone())),
            ));
        }
    }
    if name.kind == EntryType::Signature {
        // A signature tar records the signature's length, not the file's size.
        e.ftype = FileType::File;
        e.size = 0;
    }
    Ok((name.kind, e))
}

/// The merged state; yields items in duplicity's order.
pub struct SigState {
    sources: Vec<Source>,
    /// The source whose data belongs to the last item returned.
    current: Option<usize>,
    /// End time of the newest set merged (the T1 of the next incremental).
    pub end_time: i64,
}

/// A signature tar as a plain byte stream, from the cache when the chain
/// is local (always gzip there), else from the backend (decrypted or
/// gunzipped as its name says).
fn open_file(archive: &Archive, local: bool, name: &str) -> Result<TarStream> {
    let plain: Box<dyn Read + Send> = if local {
        Box::new(MultiGzDecoder::new(archive.cache.open_file(name)?))
    } else {
        archive.plaintext(name, archive.storage.reader(name)?)?
    };
    Ok(TarStream::new(plain, name))
}

impl SigState {
    /// Opens the state of `chain` at `t` (None: its end).
    pub fn open(chain: &SigChain, t: Option<i64>, archive: &Archive) -> Result<SigState> {
        let mut sources = Vec::new();
        let mut end_time = chain.full.end_time;
        for s in std::iter::once(&chain.full).chain(chain.incs.iter().filter(|s| t.is_none_or(|t| s.end_time <= t))) {
            let mut src = Source { stream: open_file(archive, chain.local, &s.name)?, head: None };
            src.advance()?;
            sources.push(src);
            end_time = s.end_time;
        }
        Ok(SigState { sources, current: None, end_time })
    }

    /// Opens the state of the archive at `t` (None: the end of the newest
    /// chain, as published: signatures of a set whose manifest is not on
    /// the backend, one being stored by another run, are not part of it).
    pub fn at(coll: &Collection, t: Option<i64>, archive: &Archive) -> Result<SigState> {
        let t = t.or_else(|| coll.primary_chain().map(|c| c.end_time()));
        let (chain, warning) = coll.sig_chain_at(t.unwrap_or(i64::MAX))?;
        if let Some(w) = warning {
            note!(log::Level::Warn, "{w}");
        }
        Self::open(chain, t, archive)
    }

    /// The next item present at the time; a `File` item has signature data
    /// ([`SigState::data`]).
    // A fallible iterator: Iterator's `next` cannot return errors.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Entry>> {
        loop {
            if let Some(i) = self.current.take() {
                self.sources[i].advance()?;
            }
            // The smallest path among the heads; the newest source holding it wins.
            let mut best: Option<usize> = None;
            for (i, s) in self.sources.iter().enumerate() {
                let Some((_, e)) = &s.head else { continue };
                best = match best {
                    Some(b) => {
                        let be = &self.sources[b].head.as_ref().expect("best has a head").1;
                        if index::cmp(&e.path, &be.path).is_le() { Some(i) } else { Some(b) }
                    }
                    None => Some(i),
                };
            }
            let Some(win) = best else { return Ok(None) };
            let path = self.sources[win].head.as_ref().expect("winner has a head").1.path.clone();
            for i in 0..self.sources.len() {
                if i != win && self.sources[i].head.as_ref().is_some_and(|(_, e)| e.path == path) {
                    self.sources[i].advance()?;
                }
            }
            let (kind, entry) = self.sources[win].head.clone().expect("winner has a head");
            self.current = Some(win);
            if kind == EntryType::Deleted {
                continue;
            }
            return Ok(Some(entry));
        }
    }

    /// Writes the whole state as a signature stream: `signature` records
    /// with their data for regular files, `snapshot` records otherwise.
    pub fn write_stream<W: std::io::Write>(&mut self, out: &mut crate::record::Writer<W>) -> Result<()> {
        use crate::record::Record;
        while let Some(e) = self.next()? {
            match self.data() {
                Some(mut data) if e.ftype == FileType::File => {
                    out.write(&Record::Signature(e))?;
                    out.write_content(&mut data)?;
                }
                _ => out.write(&Record::Snapshot(e))?,
            }
        }
        Ok(())
    }

    /// The header of the stream [`SigState::write_stream`] writes.
    pub fn head(&self) -> crate::record::StreamHead {
        crate::record::StreamHead {
            stream: crate::record::StreamKind::Signatures,
            producer: "dup-sig".into(),
            source: None,
            basis_time: Some(self.end_time),
            passphrase_check: None,
        }
    }

    /// The signature data of the last regular file returned by `next`.
    pub fn data(&mut self) -> Option<EntryData<'_>> {
        let i = self.current?;
        Some(self.sources[i].stream.data())
    }
}
