//! An in-process pipe between threads (the library runs a pipeline's
//! stages in threads): bounded, so a fast producer waits for the consumer,
//! and without OS pipes, so no SIGPIPE can reach a host program. Writing
//! after the reader is gone is a `BrokenPipe` error; the reader sees end of
//! input once the writer is dropped.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Bytes per message; memory is bounded by `DEPTH` of these.
const PIECE: usize = 256 * 1024;
const DEPTH: usize = 4;

pub struct PipeWriter {
    tx: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

pub struct PipeReader {
    rx: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

/// A new pipe.
pub fn pipe() -> (PipeReader, PipeWriter) {
    let (tx, rx) = sync_channel(DEPTH);
    (PipeReader { rx, buf: Vec::new(), pos: 0 }, PipeWriter { tx, buf: Vec::with_capacity(PIECE) })
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(PIECE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == PIECE {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE));
        self.tx.send(piece).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reading stage stopped"))
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_bytes_and_reports_a_gone_reader() {
        let (mut r, mut w) = pipe();
        let t = std::thread::spawn(move || {
            for i in 0..1000u32 {
                w.write_all(&i.to_le_bytes().repeat(300)).unwrap();
            }
        });
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        t.join().unwrap();
        assert_eq!(all.len(), 1000 * 1200);
        assert_eq!(&all[1200..1204], &1u32.to_le_bytes());

        let (r, mut w) = pipe();
        drop(r);
        let mut err = None;
        for _ in 0..(DEPTH + 2) {
            if let Err(e) = w.write_all(&vec![0u8; PIECE]) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err.unwrap().kind(), io::ErrorKind::BrokenPipe);
    }
}
