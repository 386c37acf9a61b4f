//! A write-then-read buffer that keeps small contents in memory and moves
//! larger ones to an unlinked temporary file, so staging a volume or a
//! signature never holds more than a bounded amount in memory.

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};

use sha1::{Digest, Sha1};

/// Bytes kept in memory before spilling to disk.
pub const MEMORY_LIMIT: usize = 1 << 20;

pub struct Spool {
    mem: Vec<u8>,
    file: Option<File>,
    len: u64,
}

impl Default for Spool {
    fn default() -> Self {
        Self::new()
    }
}

impl Spool {
    pub fn new() -> Spool {
        Spool { mem: Vec::new(), file: None, len: 0 }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Everything written so far, from the start; can be called again.
    pub fn reader(&mut self) -> io::Result<Box<dyn Read + '_>> {
        match &mut self.file {
            Some(f) => {
                f.seek(SeekFrom::Start(0))?;
                Ok(Box::new(io::BufReader::with_capacity(256 * 1024, f.try_clone()?)))
            }
            None => Ok(Box::new(&self.mem[..])),
        }
    }

    /// Everything written, from the start.
    pub fn into_reader(self) -> io::Result<SpoolReader> {
        match self.file {
            Some(mut f) => {
                f.flush()?;
                f.seek(SeekFrom::Start(0))?;
                Ok(SpoolReader::File(io::BufReader::with_capacity(256 * 1024, f)))
            }
            None => Ok(SpoolReader::Mem(Cursor::new(self.mem))),
        }
    }
}

/// An anonymous temporary file in `$TMPDIR` (unlinked at once).
pub fn temp_file() -> io::Result<File> {
    let dir = std::env::temp_dir();
    for attempt in 0..100u32 {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let p = dir.join(format!(".dup-spool.{}.{nanos}.{attempt}", std::process::id()));
        match std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&p) {
            Ok(f) => {
                std::fs::remove_file(&p)?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(io::Error::new(e.kind(), format!("creating a temporary file in {}: {e}", dir.display())));
            }
        }
    }
    Err(io::Error::other("could not create a temporary file"))
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() && self.mem.len() + buf.len() > MEMORY_LIMIT {
            let mut f = temp_file()?;
            f.write_all(&self.mem)?;
            self.mem = Vec::new();
            self.file = Some(f);
        }
        match &mut self.file {
            Some(f) => f.write_all(buf)?,
            None => self.mem.extend_from_slice(buf),
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub enum SpoolReader {
    Mem(Cursor<Vec<u8>>),
    File(io::BufReader<File>),
}

impl Read for SpoolReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SpoolReader::Mem(c) => c.read(buf),
            SpoolReader::File(f) => f.read(buf),
        }
    }
}

/// A spool that also hashes what is written to it: the SHA1 a stored
/// file is known by (manifests, the journal, resuming).
#[derive(Default)]
pub struct HashingSpool {
    pub spool: Spool,
    sha1: Sha1,
}

impl HashingSpool {
    pub fn new() -> HashingSpool {
        HashingSpool::default()
    }

    /// The spool and the SHA1 of its content.
    pub fn finish(self) -> (Spool, [u8; 20]) {
        (self.spool, self.sha1.finalize().into())
    }
}

impl Write for HashingSpool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.spool.write(buf)?;
        self.sha1.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large() {
        for n in [0usize, 10, MEMORY_LIMIT + 12345] {
            let data: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
            let mut s = Spool::new();
            for piece in data.chunks(4000) {
                s.write_all(piece).unwrap();
            }
            assert_eq!(s.len(), n as u64);
            let spilled = s.file.is_some();
            assert_eq!(spilled, n > MEMORY_LIMIT);
            for _ in 0..2 {
                let mut back = Vec::new();
                s.reader().unwrap().read_to_end(&mut back).unwrap();
                assert_eq!(back, data);
            }
            let mut back = Vec::new();
            s.into_reader().unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data);
        }
    }
}
