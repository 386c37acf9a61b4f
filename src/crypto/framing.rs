//! The packet framing dup writes inside its encrypted files, and the
//! arithmetic that finds a byte in it.
//!
//! The compressed packet and, when nothing is signed, the literal packet are
//! written with fixed partial body chunks of [`CHUNK`] bytes: one length
//! byte before each chunk, a definite length before the last one (1 to
//! [`CHUNK`] bytes; an empty body is one definite length of 0). Any OpenPGP
//! reader takes that (gpg writes partial lengths too); what it buys is that
//! where a body byte lies in the packet depends only on the body's length,
//! so a reader can start in the middle of a volume (see `seek.rs`).

use std::io::{self, Read, Write};

/// Body bytes per partial chunk (2^16: one byte in 65 536 is framing).
const CHUNK_LOG2: u8 = 16;
pub const CHUNK: u64 = 1 << CHUNK_LOG2;

/// The new-format packet tags written here.
pub const TAG_COMPRESSED: u8 = 8;
pub const TAG_LITERAL: u8 = 11;
pub const TAG_SEIP: u8 = 18;
pub const TAG_MDC: u8 = 19;

/// A literal packet's body before the data: binary, no file name, date 0
/// (as Sequoia's literal writer writes it).
pub const LITERAL_HEAD: [u8; 6] = [b'b', 0, 0, 0, 0, 0];

/// A definite new-format length.
fn definite(len: u64) -> Vec<u8> {
    match len {
        0..192 => vec![len as u8],
        192..8384 => {
            let l = len - 192;
            vec![(l >> 8) as u8 + 192, l as u8]
        }
        _ => {
            let mut v = vec![0xff];
            v.extend_from_slice(&(len as u32).to_be_bytes());
            v
        }
    }
}

/// Writes one packet whose length is not known in advance.
pub struct PacketWriter<W: Write> {
    w: W,
    buf: Vec<u8>,
}

impl<W: Write> PacketWriter<W> {
    /// Starts a packet with this tag (the header byte is written now).
    pub fn new(mut w: W, tag: u8) -> io::Result<Self> {
        w.write_all(&[0xc0 | tag])?;
        Ok(PacketWriter { w, buf: Vec::with_capacity(CHUNK as usize) })
    }

    /// Ends the packet (its last chunk); returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.w.write_all(&definite(self.buf.len() as u64))?;
        self.w.write_all(&self.buf)?;
        Ok(self.w)
    }

    fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        self.w.write_all(&[0xe0 | CHUNK_LOG2])?;
        self.w.write_all(data)
    }
}

impl<W: Write> Write for PacketWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        let chunk = CHUNK as usize;
        // A chunk goes out only once a byte after it is known: the last one
        // needs a definite length.
        if self.buf.len() + data.len() <= chunk {
            self.buf.extend_from_slice(data);
            return Ok(n);
        }
        let fill = chunk - self.buf.len();
        self.buf.extend_from_slice(&data[..fill]);
        data = &data[fill..];
        let full = std::mem::take(&mut self.buf);
        self.chunk(&full)?;
        self.buf = full;
        self.buf.clear();
        while data.len() > chunk {
            self.chunk(&data[..chunk])?;
            data = &data[chunk..];
        }
        self.buf.extend_from_slice(data);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The shape of a packet written by [`PacketWriter`] with a body of `len`
/// bytes.
#[derive(Debug, Clone, Copy)]
pub struct Framed {
    pub len: u64,
}

impl Framed {
    /// Partial chunks before the last one.
    fn partial(self) -> u64 {
        if self.len == 0 { 0 } else { (self.len - 1) / CHUNK }
    }

    /// The last chunk's length.
    fn last(self) -> u64 {
        self.len - self.partial() * CHUNK
    }

    /// Where body byte `b` lies, counted from the packet's header byte.
    pub fn offset(self, b: u64) -> u64 {
        let j = b / CHUNK;
        let headers = if j < self.partial() { j + 1 } else { self.partial() + definite(self.last()).len() as u64 };
        1 + headers + b
    }

    /// The whole packet's length, header byte included.
    pub fn end(self) -> u64 {
        if self.len == 0 { 2 } else { self.offset(self.len - 1) + 1 }
    }

    /// The chunk header expected at body offset `b` (a multiple of
    /// [`CHUNK`] below the length).
    fn header_at(self, b: u64) -> Vec<u8> {
        if b / CHUNK < self.partial() { vec![0xe0 | CHUNK_LOG2] } else { definite(self.last()) }
    }
}

/// Reads a framed packet's body from body offset `at`, given a reader
/// positioned on that byte (past any header before it): chunk headers are
/// checked and dropped, and the body's end is the end.
pub struct Unframe<R> {
    r: R,
    shape: Framed,
    at: u64,
    /// A chunk ended: its successor's header comes next.
    header_due: bool,
}

impl<R: Read> Unframe<R> {
    pub fn new(r: R, shape: Framed, at: u64) -> Self {
        Unframe { r, shape, at, header_due: false }
    }
}

impl<R: Read> Read for Unframe<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.shape.len || buf.is_empty() {
            return Ok(0);
        }
        if self.header_due {
            self.header_due = false;
            let want = self.shape.header_at(self.at);
            let mut got = vec![0u8; want.len()];
            self.r.read_exact(&mut got)?;
            if got != want {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a packet's chunk header is not where its table puts it (body offset {})", self.at),
                ));
            }
        }
        let room = (CHUNK - self.at % CHUNK).min(self.shape.len - self.at);
        let want = buf.len().min(room as usize);
        let n = self.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "a packet ends before its length"));
        }
        self.at += n as u64;
        self.header_due = self.at.is_multiple_of(CHUNK);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte of packets of many lengths is where `offset` says, and
    /// reading from any offset gives the rest of the body.
    #[test]
    fn offsets_match_what_is_written() {
        let c = CHUNK as usize;
        for len in [0, 1, 191, 192, 8383, 8384, c - 1, c, c + 1, 2 * c, 2 * c + 7, 3 * c + 200] {
            let body: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            // Written in uneven pieces.
            let mut w = PacketWriter::new(Vec::new(), TAG_LITERAL).unwrap();
            for piece in body.chunks(c / 3 + 5) {
                w.write_all(piece).unwrap();
            }
            let out = w.finish().unwrap();
            let shape = Framed { len: len as u64 };
            assert_eq!(out.len() as u64, shape.end(), "length {len}");
            for b in [0, 1, len / 2, len.saturating_sub(1), c.min(len), (c + 3).min(len)] {
                if b >= len {
                    continue;
                }
                let at = shape.offset(b as u64) as usize;
                assert_eq!(out[at], body[b], "length {len}, byte {b}");
                let mut rest = Vec::new();
                Unframe::new(&out[at..], shape, b as u64).read_to_end(&mut rest).unwrap();
                assert!(rest == body[b..], "length {len}, from {b}");
            }
            // Sequoia reads it back (as a literal packet).
            use sequoia_openpgp::parse::Parse;
            let mut w = PacketWriter::new(Vec::new(), TAG_LITERAL).unwrap();
            w.write_all(&LITERAL_HEAD).unwrap();
            w.write_all(&body).unwrap();
            let lit = match sequoia_openpgp::Packet::from_bytes(&w.finish().unwrap()).unwrap() {
                sequoia_openpgp::Packet::Literal(l) => l.body().to_vec(),
                other => panic!("not a literal packet: {other:?}"),
            };
            assert!(lit == body, "length {len}: sequoia reads it");
        }
    }

    #[test]
    fn a_misplaced_header_is_an_error() {
        let body = vec![5u8; CHUNK as usize + 10];
        let mut w = PacketWriter::new(Vec::new(), TAG_LITERAL).unwrap();
        w.write_all(&body).unwrap();
        let out = w.finish().unwrap();
        let shape = Framed { len: body.len() as u64 };
        // Told the body is longer than written: the last header is wrong.
        let wrong = Framed { len: body.len() as u64 + 1000 };
        let at = shape.offset(10) as usize;
        let mut rest = Vec::new();
        assert!(Unframe::new(&out[at..], wrong, 10).read_to_end(&mut rest).is_err());
    }
}
