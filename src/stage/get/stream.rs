//! `--stream`: the restored tree as a `changes` record stream of snapshots
//! (content as chunks), in duplicity's order, so dup-delta | dup-pack |
//! dup-put can write it as a new full backup.
//!
//! A file's size goes in its record before its content, so content is
//! staged first: in memory up to [`MEMORY_STAGE`], else in a temporary
//! file. When anything was skipped, the stream gets no `end` record, so
//! whatever reads it fails instead of storing an incomplete tree.

use std::io::{Read, Write};

use super::{Content, Reporter, Target};
use crate::error::{Error, Result, content_error};
use crate::record::{Encoding, Entry, FileType, PathBytes, Record, StreamHead, StreamKind, Writer};

/// Largest single-entry content staged in memory.
const MEMORY_STAGE: u64 = 1 << 20;

pub(crate) struct StreamTarget<'a> {
    w: Option<Writer<&'a mut dyn Write>>,
}

impl<'a> StreamTarget<'a> {
    pub fn new(out: &'a mut dyn Write, encoding: Encoding, localdir: Option<Vec<u8>>) -> Result<Self> {
        let head = StreamHead {
            stream: StreamKind::Changes,
            producer: "dup-get".into(),
            source: localdir.map(PathBytes),
            basis_time: None,
            passphrase_check: None,
        };
        Ok(StreamTarget { w: Some(Writer::with_head(out, encoding, head)?) })
    }
}

/// Staged content.
enum Staged {
    Mem(Vec<u8>),
    File(std::fs::File),
}

fn stage(c: &mut Content) -> Result<(Staged, u64)> {
    if c.diffs.is_empty()
        && let Some(n) = c.base_size.filter(|&n| n <= MEMORY_STAGE)
    {
        let mut v = Vec::with_capacity(n as usize);
        (&mut c.base).take(MEMORY_STAGE + 1).read_to_end(&mut v).map_err(|e| content_error("reading the backup", e))?;
        let len = v.len() as u64;
        return Ok((Staged::Mem(v), len));
    }
    let temp = || crate::io::spool::temp_file().map_err(|e| Error::io("creating a temporary file", e));
    let (mut f, n) = c.apply(temp, |f| f, drop)?;
    super::sets::rewind(&mut f).map_err(|e| Error::io("reading a temporary file", e))?;
    Ok((Staged::File(f), n))
}

impl Target for StreamTarget<'_> {
    fn item(&mut self, mut entry: Entry, content: Option<Content<'_>>, rep: &Reporter) -> Result<()> {
        let Some(w) = self.w.as_mut() else { return Ok(()) };
        if entry.ftype != FileType::File {
            w.write(&Record::Snapshot(entry.clone()))?;
            rep.item(&entry.path, 0);
            return Ok(());
        }
        let staged =
            content.ok_or_else(|| Error::other("a regular file without content")).and_then(|mut c| stage(&mut c));
        let (data, size) = match staged {
            Ok(s) => s,
            Err(e) => {
                rep.item_problem(&entry.path, &e);
                return w.write(&Record::Warning {
                    path: Some(entry.path.clone()),
                    message: format!("not restored: {}", e.message),
                });
            }
        };
        entry.size = size;
        w.write(&Record::Snapshot(entry.clone()))?;
        let mut r: Box<dyn Read> = match data {
            Staged::Mem(v) => Box::new(std::io::Cursor::new(v)),
            Staged::File(f) => Box::new(f),
        };
        // Not `write_content`: its errors lose the kind (a closed stdout must stay one).
        let mut cw = w.content();
        super::copy(&mut r, &mut cw).map_err(|e| content_error("writing the stream", e))?;
        cw.finish()?;
        rep.item(&entry.path, size);
        Ok(())
    }

    fn finish(&mut self, rep: &Reporter) -> Result<()> {
        let Some(mut w) = self.w.take() else { return Ok(()) };
        if rep.problem_count() == 0 {
            w.finish()?;
        } else {
            w.flush()?;
        }
        Ok(())
    }
}
