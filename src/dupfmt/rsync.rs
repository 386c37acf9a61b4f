//! librsync signatures, deltas and patches, streamed.
//!
//! Everything here works on streams with bounded buffers, whatever the file
//! size (fast_rsync's API wants whole slices, so it is only ever given one
//! window at a time):
//!
//! * [`SigWriter`]: the librsync MD4 signature duplicity writes (magic
//!   0x72730136, strong sum 8 bytes), computed window by window with
//!   `fast_rsync::Signature::calculate`. Buffer: one window (4 MiB, or one
//!   block if blocks are larger).
//! * [`Signature`] + [`delta`]: a librsync delta of a new file against a
//!   loaded signature. The matcher is our own (librsync's algorithm, including
//!   matching the basis's short last block at the end of the new file), run
//!   over a sliding buffer of at most 8 MiB (or 4 blocks), so nothing is lost
//!   at buffer edges. The signature is held in memory up to a window of
//!   blocks, larger ones spilled and indexed a window at a time (see
//!   [`Signature`]).
//! * [`patch`]: applies any librsync delta, reading COPY ranges from the basis
//!   with seek + read in 256 KiB pieces.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use fast_rsync::SignatureOptions;

use crate::error::{Error, Kind, Result};

/// Magic of a librsync signature with the rsync rolling sum and MD4: the only
/// kind duplicity writes and the only kind [`Signature`] accepts.
pub const SIG_MAGIC_MD4: u32 = 0x7273_0136;
/// Magic of a librsync delta.
pub const DELTA_MAGIC: u32 = 0x7273_0236;
/// Strong-sum length duplicity uses (truncated MD4).
pub const STRONG_LEN: u32 = 8;
/// duplicity's default `--max-blocksize`.
pub const DEFAULT_MAX_BLOCK: u32 = 2048;

const SIG_MAGIC_BLAKE2: u32 = 0x7273_0137;
const SIG_MAGIC_RK_MD4: u32 = 0x7273_0146;
const SIG_MAGIC_RK_BLAKE2: u32 = 0x7273_0147;
const SIG_HEADER_LEN: usize = 12;
/// Largest MD4 strong sum.
const MD4_LEN: usize = 16;
/// Larger blocks are refused for deltas (the matcher buffers 4 blocks).
const MAX_BLOCK_LEN: u32 = 1 << 24;
/// Signature windows are about this size (rounded down to whole blocks).
const SIG_WINDOW: usize = 4 << 20;
/// The delta matcher's buffer grows up to this size (or 4 blocks).
const DELTA_BUF: usize = 8 << 20;
/// First size of the delta matcher's buffer (small files stay small).
const DELTA_BUF_START: usize = 64 << 10;
/// librsync cuts literal runs at this length...
const MAX_LITERAL: usize = 32 << 10;
/// ...or, against an empty signature, emits the input as it comes:
/// duplicity feeds librsync 64 KiB at a time.
const EMPTY_BASIS_LITERAL: usize = 64 << 10;
/// Most blocks hashed at once after a match.
const MAX_BATCH: usize = 256;
/// Piece size for copying literal and COPY data in the patcher.
const IO_CHUNK: usize = 256 << 10;
/// librsync's rollsum adds this to every byte.
const CHAR_OFFSET: u32 = 31;
/// Keep at most this many different blocks per weak sum in the index, so a
/// basis full of weak-sum collisions cannot make matching quadratic.
const MAX_SAME_WEAK: u32 = 64;
/// Blocks of a basis signature indexed at once: a larger signature (a file
/// over 2 GiB at duplicity's 2 KiB blocks) is spilled to a temporary file
/// and indexed a window of this many blocks at a time (~24 MiB).
const INDEX_WINDOW: usize = 1 << 20;
/// Phrase in every error about a signature kind we cannot use; see
/// [`is_unsupported_signature`].
const UNSUPPORTED: &str = "cannot be used for a delta";

/// duplicity's block length for a file of `file_size` bytes: 512 below
/// 1 024 000 bytes, else ⌊size / 1 024 000⌋ × 512 capped at `max_block`
/// (duplicity's `--max-blocksize`, default [`DEFAULT_MAX_BLOCK`]).
///
/// duplicity divides in floating point; integer division gives the same
/// result for any size below 2^53. A `max_block` of 0 (which would break
/// librsync) gives 1.
pub fn block_len(file_size: u64, max_block: u32) -> u32 {
    if file_size < 1_024_000 {
        return 512;
    }
    let len = (file_size / 1_024_000).saturating_mul(512);
    len.min(u64::from(max_block)).max(1) as u32
}

/// True if `err` says a signature is of a kind (BLAKE2, Rabin-Karp, huge
/// blocks) that [`Signature::read`] cannot use: the caller should store the
/// whole file instead of a delta.
pub fn is_unsupported_signature(err: &Error) -> bool {
    err.message.contains(UNSUPPORTED)
}

// ---------------------------------------------------------------------------
// Rolling sum

/// librsync's rollsum of `data`, as its two 16-bit halves (kept in u32s; only
/// the low 16 bits of each count).
fn rollsum(data: &[u8]) -> (u32, u32) {
    let n = data.len() as u32;
    let (mut s1, mut s2) = (0u32, 0u32);
    for (i, &b) in data.iter().enumerate() {
        s1 = s1.wrapping_add(u32::from(b));
        s2 = s2.wrapping_add(u32::from(b).wrapping_mul(n.wrapping_sub(i as u32)));
    }
    let n64 = data.len() as u64;
    s1 = s1.wrapping_add(n.wrapping_mul(CHAR_OFFSET));
    s2 = s2.wrapping_add(((n64 * (n64 + 1) / 2) as u32).wrapping_mul(CHAR_OFFSET));
    (s1, s2)
}

#[inline]
fn weak_of(s1: u32, s2: u32) -> u32 {
    (s2 << 16) | (s1 & 0xffff)
}

/// The first `strong_len` bytes of MD4(`data`) (fast_rsync's MD4, through a
/// one-block signature), and the rollsum fast_rsync computed (a cross-check).
fn strong_sum(data: &[u8], strong_len: usize) -> ([u8; MD4_LEN], u32) {
    let opts = SignatureOptions { block_size: data.len().max(1) as u32, crypto_hash_size: strong_len as u32 };
    let sig = fast_rsync::Signature::calculate(data, opts);
    let bytes = sig.serialized();
    let mut out = [0u8; MD4_LEN];
    let mut weak = 0;
    if bytes.len() >= SIG_HEADER_LEN + 4 + strong_len {
        weak = u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        out[..strong_len].copy_from_slice(&bytes[16..16 + strong_len]);
    }
    (out, weak)
}

// ---------------------------------------------------------------------------
// Signature writer

/// Streaming librsync signature (magic 0x72730136, strong sum [`STRONG_LEN`]
/// bytes of MD4), byte-identical to `rdiff -b <block_len> -S 8 -H md4 -R
/// rollsum signature`.
///
/// Feed the file with `write`/`write_all` in pieces of any size; the
/// signature goes to the inner writer window by window (windows of about
/// 4 MiB, whole blocks), so memory stays at one window whatever the file
/// size. [`finish`](SigWriter::finish) writes the last (short) window and
/// returns the inner writer; an empty input gives just the 12-byte header.
pub struct SigWriter<W: Write> {
    inner: W,
    block_len: u32,
    window: usize,
    /// Pending input, less than one window.
    buf: Vec<u8>,
    header_done: bool,
    bytes_in: u64,
}

impl<W: Write> SigWriter<W> {
    /// A signature writer for blocks of `block_len` bytes (see [`block_len`]).
    /// A `block_len` of 0 makes every write fail with `InvalidInput`.
    pub fn new(inner: W, block_len: u32) -> Self {
        Self::with_window(inner, block_len, SIG_WINDOW)
    }

    fn with_window(inner: W, block_len: u32, target: usize) -> Self {
        let bl = block_len.max(1) as usize;
        let window = (target / bl).max(1) * bl;
        SigWriter { inner, block_len, window, buf: Vec::new(), header_done: false, bytes_in: 0 }
    }

    /// The block length this signature uses.
    pub fn block_len(&self) -> u32 {
        self.block_len
    }

    /// Bytes of file content fed so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    fn check(&self) -> io::Result<()> {
        if self.block_len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "signature block length is 0"));
        }
        Ok(())
    }

    /// Writes the signature of one window (whole blocks, except at the end).
    fn emit(inner: &mut W, header_done: &mut bool, block_len: u32, data: &[u8]) -> io::Result<()> {
        let opts = SignatureOptions { block_size: block_len, crypto_hash_size: STRONG_LEN };
        let sig = fast_rsync::Signature::calculate(data, opts);
        let skip = if *header_done { SIG_HEADER_LEN } else { 0 };
        inner.write_all(&sig.serialized()[skip..])?;
        *header_done = true;
        Ok(())
    }

    /// Writes the signature of the rest of the input and returns the inner
    /// writer (not flushed).
    pub fn finish(mut self) -> io::Result<W> {
        self.check()?;
        if !self.buf.is_empty() || !self.header_done {
            Self::emit(&mut self.inner, &mut self.header_done, self.block_len, &self.buf)?;
            self.buf.clear();
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for SigWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check()?;
        let total = data.len();
        let mut data = data;
        if !self.buf.is_empty() {
            let take = (self.window - self.buf.len()).min(data.len());
            if self.buf.capacity() < self.buf.len() + take {
                // Grow by doubling, but never past one window.
                let want = (self.buf.capacity() * 2).max(self.buf.len() + take).min(self.window);
                self.buf.reserve_exact(want - self.buf.len());
            }
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.window {
                Self::emit(&mut self.inner, &mut self.header_done, self.block_len, &self.buf)?;
                self.buf.clear();
            }
        }
        // Whole windows straight from the caller's slice, without copying.
        while data.len() >= self.window {
            let (win, rest) = data.split_at(self.window);
            Self::emit(&mut self.inner, &mut self.header_done, self.block_len, win)?;
            data = rest;
        }
        if !data.is_empty() {
            if self.buf.capacity() < data.len() {
                self.buf.reserve_exact(data.len().max(DELTA_BUF_START).min(self.window));
            }
            self.buf.extend_from_slice(data);
        }
        self.bytes_in += total as u64;
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        // A partial block cannot be summed yet; only the inner writer flushes.
        self.inner.flush()
    }
}

/// A reader that copies everything it reads into a writer: feed a file to
/// [`delta`] and to a [`SigWriter`] (the new signature) in one pass.
pub struct TeeReader<R, W> {
    inner: R,
    copy: W,
}

impl<R: Read, W: Write> TeeReader<R, W> {
    pub fn new(inner: R, copy: W) -> Self {
        TeeReader { inner, copy }
    }

    /// The reader and the writer back.
    pub fn into_inner(self) -> (R, W) {
        (self.inner, self.copy)
    }
}

impl<R: Read, W: Write> Read for TeeReader<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// Signature reader and index

/// An empty slot of the index.
const EMPTY: u32 = u32::MAX;

/// A loaded librsync MD4 signature (magic 0x72730136, any strong length from
/// 1 to 16), indexed for computing deltas.
///
/// **Memory**: 4 + strong_len bytes per block (12 for duplicity's
/// signatures) plus a hash index of 12 to 24 bytes per block, for at most
/// [`INDEX_WINDOW`] blocks (~24 MiB; a 2 GiB file at duplicity's 2 KiB
/// blocks). A larger signature is spilled to an unlinked temporary file and
/// indexed a window at a time, the window following the new file's position
/// (see [`Signature::follow`]): data that moved by less than about half a
/// window (a GiB at 2 KiB blocks) is still found, data that moved further is
/// sent as literal, where librsync holds the whole signature (1.2–1.8 GiB for
/// a 100 GiB file). The new file is streamed.
pub struct Signature {
    block_len: u32,
    strong_len: usize,
    /// Blocks in the signature, and the first one `weak` and `strong` hold.
    total: u64,
    base: u64,
    /// The last block's sums (the end of the file, matched by its tail).
    last: Option<(u32, Vec<u8>)>,
    /// All the entries, when they are more than a window.
    spilled: Option<std::fs::File>,
    window: usize,
    weak: Vec<u32>,
    strong: Vec<u8>,
    /// Open addressing, linear probing, load factor at most 1/2: block
    /// numbers (their weak sums are in `weak`), or [`EMPTY`].
    table: Vec<u32>,
    shift: u32,
    /// A bit set of 16 bits per table slot: is there a block whose hash
    /// starts with these bits? Rejects most positions of unrelated data
    /// (false positives about 1 in 32 to 64) without touching the table.
    filter: Vec<u64>,
}

impl Signature {
    /// Reads and indexes a signature from `r` (to its end).
    ///
    /// Signatures of another kind (rollsum + BLAKE2 0x72730137, Rabin-Karp
    /// 0x72730146 / 0x72730147) and blocks over 16 MiB give an error for
    /// which [`is_unsupported_signature`] is true; anything else malformed
    /// (unknown magic, bad header, truncated) is `Kind::Corrupt`.
    pub fn read(r: impl Read) -> Result<Signature> {
        Self::read_windowed(r, INDEX_WINDOW)
    }

    /// [`Signature::read`], indexing at most `window` blocks at once.
    fn read_windowed(mut r: impl Read, window: usize) -> Result<Signature> {
        let mut header = [0u8; SIG_HEADER_LEN];
        let got = read_full(&mut r, &mut header).map_err(|e| Error::io("reading signature", e))?;
        if got < SIG_HEADER_LEN {
            return Err(Error::corrupt(format!("signature truncated: header is {got} of {SIG_HEADER_LEN} bytes")));
        }
        let word = |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (magic, block_len, strong_len) = (word(0), word(4), word(8));
        let kind = match magic {
            SIG_MAGIC_MD4 => None,
            SIG_MAGIC_BLAKE2 => Some("rollsum + BLAKE2"),
            SIG_MAGIC_RK_MD4 => Some("Rabin-Karp + MD4"),
            SIG_MAGIC_RK_BLAKE2 => Some("Rabin-Karp + BLAKE2"),
            _ => {
                return Err(Error::corrupt(format!("not a librsync signature (magic {magic:#010x})")));
            }
        };
        if let Some(kind) = kind {
            return Err(Error::other(format!(
                "librsync signature of kind {magic:#010x} ({kind}) {UNSUPPORTED}; only rollsum + MD4 \
                 (0x72730136) is supported"
            ))
            .hint("store the whole file instead of a delta"));
        }
        if block_len == 0 {
            return Err(Error::corrupt("signature has a block length of 0"));
        }
        if strong_len == 0 || strong_len as usize > MD4_LEN {
            return Err(Error::corrupt(format!(
                "signature has a strong-sum length of {strong_len} (MD4 allows 1 to {MD4_LEN})"
            )));
        }
        if block_len > MAX_BLOCK_LEN {
            return Err(Error::other(format!(
                "signature with {block_len}-byte blocks {UNSUPPORTED} (at most {MAX_BLOCK_LEN})"
            ))
            .hint("store the whole file instead of a delta"));
        }
        let strong_len = strong_len as usize;
        let entry = 4 + strong_len;
        let mut weak = Vec::new();
        let mut strong = Vec::new();
        let window = window.max(1);
        let mut chunk = vec![0u8; entry * 4096];
        let mut spilled = None;
        loop {
            let got = read_full(&mut r, &mut chunk).map_err(|e| Error::io("reading signature", e))?;
            whole_entries(got as u64, entry)?;
            if weak.len() + got / entry > window {
                spilled = Some(spill(&weak, &strong, strong_len, &chunk[..got], &mut r)?);
                (weak, strong) = (Vec::new(), Vec::new());
                break;
            }
            push_entries(&chunk[..got], entry, &mut weak, &mut strong);
            if got < chunk.len() {
                break;
            }
        }
        let mut sig = Signature {
            block_len,
            strong_len,
            total: weak.len() as u64,
            base: 0,
            last: None,
            spilled: None,
            window,
            weak,
            strong,
            table: Vec::new(),
            shift: 0,
            filter: Vec::new(),
        };
        if let Some(f) = spilled {
            let len = f.metadata().map_err(|e| Error::io("a spilled signature", e))?.len();
            sig.total = whole_entries(len, entry)?;
            sig.spilled = Some(f);
            // The last block's sums, as a window of one, then the first window.
            sig.load(sig.total - 1)?;
            sig.last = sig.weak.first().map(|&w| (w, sig.strong_at(0).to_vec()));
            sig.load(0)?;
        } else {
            sig.weak.shrink_to_fit();
            sig.strong.shrink_to_fit();
            sig.last = sig.weak.last().map(|&w| (w, sig.strong_at(sig.weak.len() - 1).to_vec()));
            sig.build_index();
        }
        Ok(sig)
    }

    /// Fills `buf` (whole entries) from the spilled entries, from block `first`.
    fn read_entries(&self, first: u64, buf: &mut [u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let f = self.spilled.as_ref().expect("a spilled signature");
        f.read_exact_at(buf, first * (4 + self.strong_len) as u64)
            .map_err(|e| Error::io("reading back a spilled signature", e))
    }

    /// Indexes the window of blocks from `base` (spilled signatures).
    fn load(&mut self, base: u64) -> Result<()> {
        let entry = 4 + self.strong_len;
        let n = (self.total - base).min(self.window as u64) as usize;
        self.weak.clear();
        self.strong.clear();
        self.weak.reserve_exact(n);
        self.strong.reserve_exact(n * self.strong_len);
        let mut buf = vec![0u8; 4096 * entry];
        let mut at = base;
        while at < base + n as u64 {
            let k = (base + n as u64 - at).min(4096) as usize;
            self.read_entries(at, &mut buf[..k * entry])?;
            push_entries(&buf[..k * entry], entry, &mut self.weak, &mut self.strong);
            at += k as u64;
        }
        self.base = base;
        self.build_index();
        Ok(())
    }

    /// Moves the window of a spilled signature, when the blocks up to byte
    /// `end` of the new file (the end of the data read) are past it, to be
    /// centred on the block of byte `at` (where matching is). A window holds
    /// more than twice the matcher's buffer, so everything read stays inside.
    fn follow(&mut self, at: u64, end: u64) -> Result<()> {
        if self.spilled.is_none() {
            return Ok(());
        }
        let bl = u64::from(self.block_len);
        let (at, end) = (at / bl, end / bl + 1);
        if end < self.base + self.weak.len() as u64 {
            return Ok(());
        }
        let top = self.total.saturating_sub(self.window as u64);
        let base = at.saturating_sub(self.window as u64 / 2).min(top);
        let want = (self.total - base).min(self.window as u64) as usize;
        if base != self.base || self.weak.len() < want { self.load(base) } else { Ok(()) }
    }

    fn build_index(&mut self) {
        let n = self.weak.len();
        let size = (2 * n).next_power_of_two().max(16);
        self.shift = 64 - size.trailing_zeros();
        self.table.clear();
        self.table.resize(size, EMPTY);
        self.filter.clear();
        self.filter.resize(size / 4, 0);
        let mask = size - 1;
        for i in 0..n {
            let w = self.weak[i];
            let f = self.filter_bit(w);
            self.filter[f / 64] |= 1 << (f % 64);
            let mut h = self.slot_of(w);
            let mut same = 0;
            loop {
                let s = self.table[h];
                if s == EMPTY {
                    self.table[h] = i as u32;
                    break;
                }
                if self.weak[s as usize] == w {
                    // An identical block: keep the first.
                    if self.strong_at(s as usize) == self.strong_at(i) {
                        break;
                    }
                    same += 1;
                    if same >= MAX_SAME_WEAK {
                        break;
                    }
                }
                h = (h + 1) & mask;
            }
        }
    }

    #[inline]
    fn slot_of(&self, weak: u32) -> usize {
        (u64::from(weak).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// The slot number with 4 more bits of the hash.
    #[inline]
    fn filter_bit(&self, weak: u32) -> usize {
        (u64::from(weak).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (self.shift - 4)) as usize
    }

    /// False if no block has this weak sum (true may be a false positive).
    #[inline]
    fn may_have(&self, weak: u32) -> bool {
        let f = self.filter_bit(weak);
        self.filter[f / 64] & (1 << (f % 64)) != 0
    }

    #[inline]
    fn strong_at(&self, idx: usize) -> &[u8] {
        &self.strong[idx * self.strong_len..(idx + 1) * self.strong_len]
    }

    /// Block length of the signed file.
    pub fn block_len(&self) -> u32 {
        self.block_len
    }

    /// Strong-sum length in bytes.
    pub fn strong_len(&self) -> u32 {
        self.strong_len as u32
    }

    /// Number of blocks (the signed file had between (blocks−1)×block_len+1
    /// and blocks×block_len bytes).
    pub fn blocks(&self) -> u64 {
        self.total
    }

    /// Bytes of memory this signature holds.
    pub fn memory(&self) -> usize {
        self.weak.capacity() * 4 + self.strong.capacity() + self.table.capacity() * 4 + self.filter.capacity() * 8
    }

    /// The block whose sums match `window` (whose rolling sum is `weak`);
    /// among identical blocks the first, as librsync picks.
    #[inline]
    fn find(&self, weak: u32, window: &[u8]) -> Option<u64> {
        let mut sum: Option<[u8; MD4_LEN]> = None;
        self.probe(weak, |strong| {
            let sum = sum.get_or_insert_with(|| {
                let (sum, w) = strong_sum(window, self.strong_len);
                debug_assert_eq!(w, weak, "rolling sum out of step");
                sum
            });
            strong == &sum[..self.strong_len]
        })
    }

    /// The block with sums `weak` and `strong`.
    fn find_sum(&self, weak: u32, strong: &[u8]) -> Option<u64> {
        self.probe(weak, |s| s == strong)
    }

    /// The first indexed block with this weak sum whose strong sum passes
    /// `same` (its number in the whole signature).
    #[inline]
    fn probe(&self, weak: u32, mut same: impl FnMut(&[u8]) -> bool) -> Option<u64> {
        let mask = self.table.len() - 1;
        let mut h = self.slot_of(weak);
        loop {
            let s = self.table[h];
            if s == EMPTY {
                return None;
            }
            if self.weak[s as usize] == weak && same(self.strong_at(s as usize)) {
                return Some(self.base + u64::from(s));
            }
            h = (h + 1) & mask;
        }
    }

    /// Where `tail` (the end of the new file, shorter than a block) has a
    /// suffix equal to the basis's last block: librsync's end-of-file
    /// shrinking window, which only the short last block can match.
    fn tail_match(&self, tail: &[u8]) -> Option<usize> {
        let (target, last) = self.last.as_ref()?;
        let (mut s1, mut s2) = rollsum(tail);
        let mut len = tail.len() as u32;
        for start in 0..tail.len() {
            if weak_of(s1, s2) == *target && strong_sum(&tail[start..], self.strong_len).0[..self.strong_len] == **last
            {
                return Some(start);
            }
            let old = u32::from(tail[start]) + CHAR_OFFSET;
            s1 = s1.wrapping_sub(old);
            s2 = s2.wrapping_sub(len.wrapping_mul(old));
            len -= 1;
        }
        None
    }
}

/// The number of `entry`-byte entries in `len` bytes; a partial one means
/// the signature was cut short.
fn whole_entries(len: u64, entry: usize) -> Result<u64> {
    let rest = len % entry as u64;
    if rest != 0 {
        return Err(Error::corrupt(format!("signature truncated: last block entry is {rest} of {entry} bytes")));
    }
    Ok(len / entry as u64)
}

/// Decodes whole signature entries (weak sum, then strong sum) onto `weak`
/// and `strong`.
fn push_entries(bytes: &[u8], entry: usize, weak: &mut Vec<u32>, strong: &mut Vec<u8>) {
    for e in bytes.chunks_exact(entry) {
        weak.push(u32::from_be_bytes([e[0], e[1], e[2], e[3]]));
        strong.extend_from_slice(&e[4..]);
    }
}

/// The signature entries read so far (decoded, then a `chunk` as read) and
/// the rest of `r`, in an unlinked temporary file.
fn spill(weak: &[u32], strong: &[u8], strong_len: usize, chunk: &[u8], r: &mut impl Read) -> Result<std::fs::File> {
    let f = crate::io::spool::temp_file().map_err(|e| Error::io("spilling a large signature", e))?;
    let mut w = BufWriter::with_capacity(256 << 10, f);
    let mut put = || -> io::Result<()> {
        for (i, wk) in weak.iter().enumerate() {
            w.write_all(&wk.to_be_bytes())?;
            w.write_all(&strong[i * strong_len..(i + 1) * strong_len])?;
        }
        w.write_all(chunk)
    };
    put().map_err(|e| Error::io("spilling a large signature", e))?;
    io::copy(r, &mut w).map_err(|e| Error::io("reading signature", e))?;
    w.into_inner().map_err(|e| Error::io("spilling a large signature", e.into_error()))
}

/// Reads until `buf` is full or the end of input; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

// ---------------------------------------------------------------------------
// Delta

/// What [`delta`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaStats {
    /// Bytes of the new file read.
    pub new_len: u64,
    /// Bytes of delta written.
    pub delta_len: u64,
    /// New-file bytes taken from the basis (COPY).
    pub copy_len: u64,
    /// New-file bytes sent as literals.
    pub literal_len: u64,
    pub copy_cmds: u64,
    pub literal_cmds: u64,
}

/// Writes delta commands, merging adjacent COPYs and cutting literal runs
/// into pieces of `max_lit` bytes.
struct Emitter<W: Write> {
    out: BufWriter<W>,
    copy: Option<(u64, u64)>,
    max_lit: usize,
    stats: DeltaStats,
}

impl<W: Write> Emitter<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(|e| Error::io("writing delta", e))?;
        self.stats.delta_len += bytes.len() as u64;
        Ok(())
    }

    fn literal(&mut self, data: &[u8]) -> Result<()> {
        if !data.is_empty() {
            self.flush_copy()?;
        }
        for piece in data.chunks(self.max_lit) {
            self.literal_cmd(piece)?;
        }
        Ok(())
    }

    fn literal_cmd(&mut self, data: &[u8]) -> Result<()> {
        let len = data.len() as u64;
        let mut cmd = [0u8; 9];
        let n = if len <= 64 {
            cmd[0] = len as u8;
            1
        } else {
            let w = int_width(len);
            cmd[0] = 0x41 + w.trailing_zeros() as u8;
            cmd[1..=w].copy_from_slice(&len.to_be_bytes()[8 - w..]);
            1 + w
        };
        self.put(&cmd[..n])?;
        self.put(data)?;
        self.stats.literal_len += len;
        self.stats.literal_cmds += 1;
        Ok(())
    }

    fn copy(&mut self, offset: u64, len: u64) -> Result<()> {
        match self.copy {
            Some((o, l)) if o + l == offset => self.copy = Some((o, l + len)),
            _ => {
                self.flush_copy()?;
                self.copy = Some((offset, len));
            }
        }
        Ok(())
    }

    fn flush_copy(&mut self) -> Result<()> {
        let Some((offset, len)) = self.copy.take() else {
            return Ok(());
        };
        let (ow, lw) = (int_width(offset), int_width(len));
        let mut cmd = [0u8; 17];
        cmd[0] = 0x45 + 4 * ow.trailing_zeros() as u8 + lw.trailing_zeros() as u8;
        cmd[1..=ow].copy_from_slice(&offset.to_be_bytes()[8 - ow..]);
        cmd[1 + ow..=ow + lw].copy_from_slice(&len.to_be_bytes()[8 - lw..]);
        self.put(&cmd[..1 + ow + lw])?;
        self.stats.copy_len += len;
        self.stats.copy_cmds += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<DeltaStats> {
        self.flush_copy()?;
        self.put(&[0])?;
        self.out.flush().map_err(|e| Error::io("writing delta", e))?;
        Ok(self.stats)
    }
}

/// Bytes librsync uses for an integer: 1, 2, 4 or 8.
fn int_width(v: u64) -> usize {
    match v {
        0..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xffff_ffff => 4,
        _ => 8,
    }
}

/// Writes to `out` one librsync delta (magic, commands, END) that turns the
/// file `sig` was made from into the content of `new`.
///
/// `new` is read once, through a buffer of at most 8 MiB (or 4 blocks);
/// the signature's index is bounded too (see [`Signature`]). The buffer
/// slides, so matches are found anywhere, including across buffer refills:
/// nothing is lost at buffer edges.
///
/// Up to [`INDEX_WINDOW`] basis blocks (a 2 GiB file at 2 KiB blocks), the
/// output is librsync 2.x's, byte for byte, as duplicity writes it (the
/// same matches, the first of identical basis blocks, the short last block
/// matched at the end, literal runs cut every 32 KiB, or 64 KiB when the
/// basis is empty). One known exception: a basis with more than 64 different
/// blocks sharing one rolling sum keeps only 64 of them in the index. Beyond
/// that size, matches are looked for in the window of basis blocks around
/// the new file's position, so a delta can hold more literal than
/// librsync's; it is still a librsync delta any patcher applies.
pub fn delta(sig: &mut Signature, new: impl Read, out: impl Write) -> Result<DeltaStats> {
    let max_lit = if sig.total == 0 { EMPTY_BASIS_LITERAL } else { MAX_LITERAL };
    delta_with(sig, new, out, DELTA_BUF, max_lit)
}

fn delta_with(
    sig: &mut Signature,
    mut new: impl Read,
    out: impl Write,
    max_buf: usize,
    max_lit: usize,
) -> Result<DeltaStats> {
    let mut em =
        Emitter { out: BufWriter::with_capacity(64 << 10, out), copy: None, max_lit, stats: DeltaStats::default() };
    em.put(&DELTA_MAGIC.to_be_bytes())?;
    let bl = sig.block_len as usize;
    // Room for a pending literal (< max_lit), the window and new data.
    let cap = max_buf.max(4 * bl).max(4 * max_lit);
    // A window of a spilled signature covers more than twice the buffer.
    sig.window = sig.window.max(2 * (cap / bl + MAX_BATCH + 2));
    let mut w =
        Window { buf: vec![0u8; DELTA_BUF_START.min(cap)], cap, lit: 0, pos: 0, filled: 0, eof: false, new_len: 0 };
    // The rolling sum of the window, when it is being rolled.
    let mut sum: Option<(u32, u32)> = None;
    let mut batch = 1;
    loop {
        // Rolling needs the window plus the byte after it.
        if !w.eof && w.filled - w.pos <= bl {
            w.refill(&mut new, &mut em, max_lit)?;
            continue;
        }
        if sig.total == 0 {
            // Nothing to match: all literal.
            w.pos = w.filled;
            if w.eof {
                break;
            }
            continue;
        }
        if w.filled - w.pos < bl {
            break; // end of input, less than a block left
        }
        sig.follow(w.new_len - (w.filled - w.pos) as u64, w.new_len)?;
        let (s1, s2) = match sum {
            Some(s) => s,
            None => match w.match_blocks(sig, &mut em, &mut batch)? {
                Some(s) => s,
                None => continue,
            },
        };
        sum = w.roll(sig, &mut em, s1, s2)?;
    }
    w.finish(sig, &mut em)?;
    let mut stats = em.finish()?;
    stats.new_len = w.new_len;
    Ok(stats)
}

/// The new file as [`delta_with`] reads it: `buf[lit..pos]` is the pending
/// literal, `buf[pos..pos + block]` the window being matched, `buf[..filled]`
/// the data read.
struct Window {
    buf: Vec<u8>,
    /// The most `buf` may grow to.
    cap: usize,
    lit: usize,
    pos: usize,
    filled: usize,
    eof: bool,
    new_len: u64,
}

impl Window {
    /// Reads more of `new`, first making room when less than a quarter of
    /// the buffer is free: whole `max_lit` pieces of the pending literal are
    /// emitted (so the cuts fall where librsync's do), the rest slides to
    /// the front, and the buffer doubles up to `cap`.
    fn refill<W: Write>(&mut self, new: &mut impl Read, em: &mut Emitter<W>, max_lit: usize) -> Result<()> {
        if self.buf.len() - self.filled < self.buf.len() / 4 {
            if self.pos - self.lit >= max_lit {
                let n = (self.pos - self.lit) / max_lit * max_lit;
                em.literal(&self.buf[self.lit..self.lit + n])?;
                self.lit += n;
            }
            if self.lit > 0 {
                self.buf.copy_within(self.lit..self.filled, 0);
                (self.pos, self.filled, self.lit) = (self.pos - self.lit, self.filled - self.lit, 0);
            }
            if self.buf.len() - self.filled < self.buf.len() / 4 && self.buf.len() < self.cap {
                self.buf.resize((self.buf.len() * 2).min(self.cap), 0);
            }
        }
        let n = loop {
            match new.read(&mut self.buf[self.filled..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading the new file", e)),
            }
        };
        if n == 0 {
            self.eof = true;
        }
        self.filled += n;
        self.new_len += n as u64;
        Ok(())
    }

    /// Emits the pending literal and a copy of basis block `idx`; the window
    /// moves past the matched block.
    fn matched<W: Write>(&mut self, sig: &Signature, em: &mut Emitter<W>, idx: u64) -> Result<()> {
        let bl = sig.block_len as usize;
        em.literal(&self.buf[self.lit..self.pos])?;
        em.copy(idx * u64::from(sig.block_len), bl as u64)?;
        self.pos += bl;
        self.lit = self.pos;
        Ok(())
    }

    /// At the start or after a match: checks whole blocks in a batch
    /// (fast_rsync's multi-buffer MD4) while they keep matching. The batch
    /// doubles while every block matches, and restarts at one block after a
    /// miss, so at most half the hashing is wasted. The rolling sum of the
    /// first block that did not match, if one did not.
    fn match_blocks<W: Write>(
        &mut self,
        sig: &Signature,
        em: &mut Emitter<W>,
        batch: &mut usize,
    ) -> Result<Option<(u32, u32)>> {
        let bl = sig.block_len as usize;
        let k = (*batch).min((self.filled - self.pos) / bl);
        let opts = SignatureOptions { block_size: sig.block_len, crypto_hash_size: sig.strong_len as u32 };
        let sums = fast_rsync::Signature::calculate(&self.buf[self.pos..self.pos + k * bl], opts);
        let mut matched = 0;
        let mut miss = None;
        for e in sums.serialized()[SIG_HEADER_LEN..].chunks_exact(4 + sig.strong_len) {
            let weak = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            let found = if sig.may_have(weak) { sig.find_sum(weak, &e[4..]) } else { None };
            let Some(idx) = found else {
                miss = Some((weak & 0xffff, weak >> 16));
                break;
            };
            self.matched(sig, em, idx)?;
            matched += 1;
        }
        *batch = if matched == k { (*batch * 2).min(MAX_BATCH) } else { 1 };
        Ok(miss)
    }

    /// Rolls the window a byte at a time from the sum `(s1, s2)` until a
    /// block matches (None: emitted, the window past it) or the data read
    /// ends (the sum to go on with).
    fn roll<W: Write>(
        &mut self,
        sig: &Signature,
        em: &mut Emitter<W>,
        mut s1: u32,
        mut s2: u32,
    ) -> Result<Option<(u32, u32)>> {
        let (bl, blm) = (sig.block_len as usize, sig.block_len);
        loop {
            let weak = weak_of(s1, s2);
            if sig.may_have(weak)
                && let Some(idx) = sig.find(weak, &self.buf[self.pos..self.pos + bl])
            {
                self.matched(sig, em, idx)?;
                return Ok(None);
            }
            if self.pos + bl >= self.filled {
                if self.eof {
                    self.pos += 1; // the last full window did not match
                }
                return Ok(Some((s1, s2)));
            }
            let old = u32::from(self.buf[self.pos]);
            let new_byte = u32::from(self.buf[self.pos + bl]);
            s1 = s1.wrapping_add(new_byte).wrapping_sub(old);
            s2 = s2.wrapping_add(s1).wrapping_sub(blm.wrapping_mul(old + CHAR_OFFSET));
            self.pos += 1;
        }
    }

    /// The end of the input: the short last basis block matched at the end,
    /// or the rest as literal.
    fn finish<W: Write>(&mut self, sig: &Signature, em: &mut Emitter<W>) -> Result<()> {
        let (lit, filled) = (self.lit, self.filled);
        let pos = self.pos.min(filled);
        match sig.tail_match(&self.buf[pos..filled]) {
            Some(start) => {
                em.literal(&self.buf[lit..pos + start])?;
                em.copy((sig.total - 1) * u64::from(sig.block_len), (filled - pos - start) as u64)?;
            }
            None => em.literal(&self.buf[lit..filled])?,
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Patch

/// The delta being read, with its offset for error messages.
struct DeltaIn<R> {
    r: BufReader<R>,
    at: u64,
}

impl<R: Read> DeltaIn<R> {
    fn fill(&mut self) -> Result<&[u8]> {
        loop {
            match self.r.fill_buf() {
                Ok(_) => return Ok(self.r.buffer()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading delta", e)),
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.r.consume(n);
        self.at += n as u64;
    }

    /// Reads a big-endian integer of `width` bytes.
    fn int(&mut self, width: usize, what: &str) -> Result<u64> {
        let mut v = 0u64;
        for _ in 0..width {
            let at = self.at;
            let b = *self.fill()?.first().ok_or_else(|| {
                Error::corrupt(format!("delta truncated at byte {at}, inside the {what} of a command"))
            })?;
            self.consume(1);
            v = (v << 8) | u64::from(b);
        }
        Ok(v)
    }
}

/// Applies the librsync delta `delta` to `basis`, writing the result to `out`;
/// returns the bytes written.
///
/// Implements every librsync delta command. Literal data is copied through
/// and COPY ranges are read from `basis` with seek + read in 256 KiB pieces
/// (no seek when a COPY continues where the last one ended), so memory does
/// not depend on the file size. Pass the basis unbuffered (a `File`): the
/// patcher reads in large pieces itself. A malformed delta (bad magic, unknown
/// command, COPY past the end of the basis, truncated, bytes after END) is a
/// `Kind::Corrupt` error; `out` then holds a partial result.
pub fn patch(mut basis: impl Read + Seek, delta: impl Read, out: impl Write) -> Result<u64> {
    let mut d = DeltaIn { r: BufReader::with_capacity(64 << 10, delta), at: 0 };
    let mut out = BufWriter::with_capacity(64 << 10, out);
    let werr = |e| Error::io("writing patched file", e);
    let magic = d.int(4, "magic").map_err(|e| {
        if e.kind == Kind::Corrupt {
            Error::corrupt(format!("delta truncated: {} bytes, shorter than its magic", d.at))
        } else {
            e
        }
    })?;
    if magic != u64::from(DELTA_MAGIC) {
        return Err(Error::corrupt(format!("not a librsync delta (magic {magic:#010x})")));
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut written = 0u64;
    let mut basis_at: Option<u64> = None;
    loop {
        let at = d.at;
        let cmd = d.int(1, "command byte").map_err(|e| {
            if e.kind == Kind::Corrupt {
                Error::corrupt(format!("delta truncated at byte {at}: no END command"))
            } else {
                e
            }
        })? as u8;
        match cmd {
            0x00 => break,
            0x01..=0x44 => {
                let len = if cmd <= 0x40 { u64::from(cmd) } else { d.int(1 << (cmd - 0x41), "length")? };
                let mut left = len;
                while left > 0 {
                    let chunk = d.fill()?;
                    if chunk.is_empty() {
                        return Err(Error::corrupt(format!(
                            "delta truncated: literal of {len} bytes at byte {at} ends after {} bytes",
                            len - left
                        )));
                    }
                    let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.write_all(&chunk[..n]).map_err(werr)?;
                    d.consume(n);
                    left -= n as u64;
                }
                written += len;
            }
            0x45..=0x54 => {
                let k = cmd - 0x45;
                let offset = d.int(1 << (k / 4), "offset")?;
                let len = d.int(1 << (k % 4), "length")?;
                if offset.checked_add(len).is_none_or(|end| end > i64::MAX as u64) {
                    return Err(Error::corrupt(format!(
                        "delta command at byte {at}: COPY offset {offset} length {len} is out of range"
                    )));
                }
                if len == 0 {
                    continue;
                }
                if basis_at != Some(offset) {
                    basis.seek(SeekFrom::Start(offset)).map_err(|e| Error::io("seeking in the basis file", e))?;
                }
                if buf.is_empty() {
                    buf = vec![0u8; IO_CHUNK];
                }
                let mut done = 0u64;
                while done < len {
                    let want = buf.len().min(usize::try_from(len - done).unwrap_or(usize::MAX));
                    let n = match basis.read(&mut buf[..want]) {
                        Ok(0) => {
                            return Err(Error::corrupt(format!(
                                "delta command at byte {at} copies past the end of the basis file \
                                 (COPY offset {offset} length {len}; the basis ends at byte {})",
                                offset + done
                            ))
                            .hint("the delta does not belong to this basis file"));
                        }
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(Error::io("reading the basis file", e)),
                    };
                    out.write_all(&buf[..n]).map_err(werr)?;
                    done += n as u64;
                }
                basis_at = Some(offset + len);
                written += len;
            }
            _ => {
                return Err(Error::corrupt(format!("unknown delta command {cmd:#04x} at byte {at}")));
            }
        }
    }
    let end = d.at;
    if !d.fill()?.is_empty() {
        return Err(Error::corrupt(format!("delta has trailing bytes after its END command at byte {end}")));
    }
    out.flush().map_err(werr)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::path::Path;
    use std::process::Command;

    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            mix(self.0)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
        /// Fewer than `max` random bytes.
        fn some(&mut self, max: usize) -> Vec<u8> {
            let n = self.below(max);
            self.bytes(n)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            let mut v = Vec::with_capacity(n + 8);
            while v.len() < n {
                v.extend_from_slice(&self.next().to_le_bytes());
            }
            v.truncate(n);
            v
        }
    }

    /// Pseudo-random content of positions `pos..end`, made on the fly; byte
    /// p depends only on (seed, p), so it can seek.
    struct Gen {
        seed: u64,
        pos: u64,
        end: u64,
    }

    impl Gen {
        fn new(seed: u64, start: u64, end: u64) -> Gen {
            Gen { seed: mix(seed), pos: start, end }
        }
    }

    impl Read for Gen {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = (out.len() as u64).min(self.end.saturating_sub(self.pos)) as usize;
            let mut i = 0;
            while i < n {
                let p = self.pos + i as u64;
                let word = mix(self.seed ^ (p >> 3)).to_le_bytes();
                let off = (p & 7) as usize;
                let take = (8 - off).min(n - i);
                out[i..i + take].copy_from_slice(&word[off..off + take]);
                i += take;
            }
            self.pos += n as u64;
            Ok(n)
        }
    }

    impl Seek for Gen {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.pos = match to {
                SeekFrom::Start(p) => p,
                SeekFrom::End(d) => self.end.saturating_add_signed(d),
                SeekFrom::Current(d) => self.pos.saturating_add_signed(d),
            };
            Ok(self.pos)
        }
    }

    /// A reader that returns short reads of random sizes.
    struct Pieces<'a> {
        data: &'a [u8],
        rng: Rng,
        max: usize,
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = (1 + self.rng.below(self.max)).min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Signature of `data` fed to a SigWriter in random pieces.
    fn sig_of(data: &[u8], bl: u32, window: usize, rng: &mut Rng) -> Vec<u8> {
        let mut w = SigWriter::with_window(Vec::new(), bl, window);
        let mut rest = data;
        while !rest.is_empty() {
            let n = (1 + rng.below(window * 2)).min(rest.len());
            w.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
        }
        assert_eq!(w.bytes_in(), data.len() as u64);
        w.finish().unwrap()
    }

    /// A signature larger than the index window is spilled and indexed a
    /// window at a time, following the new file: the delta still patches to
    /// the new file, data in place or moved a little is copied, and only data
    /// moved further than half a window is sent as literal.
    #[test]
    fn large_signatures_are_indexed_a_window_at_a_time() {
        let mut rng = Rng(11);
        let bl = 512usize;
        let basis: Vec<u8> = (0..4000 * bl).map(|_| rng.next() as u8).collect();
        let sig_bytes = whole_sig(&basis, bl as u32);
        // Edited in place every 300 blocks, 100 bytes inserted in the middle,
        // and the first 100 blocks again at the end (3900 blocks away).
        let mut new = basis.clone();
        for b in (0..4000).step_by(300) {
            new[b * bl + 7] ^= 0x55;
        }
        new.splice(2000 * bl..2000 * bl, (0..100).map(|i| i as u8));
        new.extend_from_slice(&basis[..100 * bl]);

        let mut windowed = Signature::read_windowed(&sig_bytes[..], 64).unwrap();
        assert!(windowed.spilled.is_some());
        assert_eq!(windowed.blocks(), 4000);
        assert_eq!(windowed.weak.len(), 64);
        let mut d = Vec::new();
        let ws = delta_with(&mut windowed, &new[..], &mut d, 0, MAX_LITERAL).unwrap();
        assert!(apply(&basis, &d).unwrap() == new, "the windowed delta patches to the new file");
        // The window grew to cover the matcher's buffer (2 x (128 KiB / 512 + 258)).
        assert_eq!(windowed.window, 2 * (4 * MAX_LITERAL / bl + MAX_BATCH + 2));
        assert!(windowed.weak.len() <= windowed.window);

        let mut whole = Signature::read(&sig_bytes[..]).unwrap();
        assert!(whole.spilled.is_none());
        let mut d2 = Vec::new();
        let hs = delta_with(&mut whole, &new[..], &mut d2, 0, MAX_LITERAL).unwrap();
        assert!(apply(&basis, &d2).unwrap() == new);
        // Edits cost a block each either way; the far move only windowed.
        let edits = (14 * bl + 100) as u64;
        assert!(hs.literal_len <= edits + 2 * bl as u64, "{hs:?}");
        assert!(
            ws.literal_len >= 100 * bl as u64 && ws.literal_len <= edits + 100 * bl as u64 + 2 * bl as u64,
            "{ws:?}"
        );

        // A spilled signature cut inside its last entry is refused.
        let cut = &sig_bytes[..sig_bytes.len() - 3];
        let e = Signature::read_windowed(cut, 64).err().expect("a truncated signature");
        assert_eq!(e.kind, Kind::Corrupt, "{}", e.message);
    }

    fn whole_sig(data: &[u8], bl: u32) -> Vec<u8> {
        let opts = SignatureOptions { block_size: bl, crypto_hash_size: STRONG_LEN };
        fast_rsync::Signature::calculate(data, opts).into_serialized()
    }

    fn make_delta(basis: &[u8], new: &[u8], bl: u32, max_buf: usize, rng: &mut Rng) -> (Vec<u8>, DeltaStats) {
        let mut sig = Signature::read(&whole_sig(basis, bl)[..]).unwrap();
        let mut out = Vec::new();
        let reader = Pieces { data: new, rng: Rng(rng.next()), max: 1 + rng.below(5000) };
        let max_lit = match max_buf {
            0 => 1 + rng.below(100),
            _ if sig.blocks() == 0 => EMPTY_BASIS_LITERAL,
            _ => MAX_LITERAL,
        };
        let stats = delta_with(&mut sig, reader, &mut out, max_buf, max_lit).unwrap();
        assert_eq!(stats.new_len, new.len() as u64);
        assert_eq!(stats.delta_len, out.len() as u64);
        assert_eq!(stats.copy_len + stats.literal_len, new.len() as u64);
        (out, stats)
    }

    fn apply(basis: &[u8], delta: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let n = patch(Cursor::new(basis), delta, &mut out)?;
        assert_eq!(n, out.len() as u64);
        Ok(out)
    }

    /// Random inserts, deletes, modifications and moved copies.
    fn edit(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(v.len() + 1);
            match rng.below(4) {
                0 => {
                    let mut ins = rng.some(700);
                    ins.push(7);
                    v.splice(at..at, ins);
                }
                1 => {
                    let end = (at + 1 + rng.below(700)).min(v.len());
                    v.drain(at..end);
                }
                2 => {
                    for _ in 0..1 + rng.below(5) {
                        if !v.is_empty() {
                            let i = rng.below(v.len());
                            v[i] ^= 1 + rng.below(255) as u8;
                        }
                    }
                }
                _ => {
                    let end = (at + rng.below(3000)).min(v.len());
                    let chunk = v[at..end].to_vec();
                    let to = rng.below(v.len() + 1);
                    v.splice(to..to, chunk);
                }
            }
        }
        v
    }

    fn have_rdiff() -> bool {
        let ok = Command::new("rdiff").arg("--version").output().is_ok();
        if !ok {
            eprintln!("note: rdiff is not installed; skipping the rdiff comparison");
        }
        ok
    }

    fn rdiff(args: &[&str], files: &[&Path]) {
        let st = Command::new("rdiff").args(args).args(files).status().unwrap();
        assert!(st.success(), "rdiff {args:?} {files:?} failed");
    }

    #[test]
    fn block_len_rule() {
        let d = DEFAULT_MAX_BLOCK;
        assert_eq!(block_len(0, d), 512);
        assert_eq!(block_len(1_023_999, d), 512);
        assert_eq!(block_len(1_024_000, d), 512);
        assert_eq!(block_len(2_047_999, d), 512);
        assert_eq!(block_len(2_048_000, d), 1024);
        assert_eq!(block_len(3_071_999, d), 1024);
        assert_eq!(block_len(3_072_000, d), 1536);
        assert_eq!(block_len(4_095_999, d), 1536);
        assert_eq!(block_len(4_096_000, d), 2048);
        assert_eq!(block_len(3_145_728, d), 1536);
        assert_eq!(block_len(u64::MAX, d), 2048);
        assert_eq!(block_len(100 << 30, 65536), 65536);
        assert_eq!(block_len(10_240_000, 8192), 5120);
        assert_eq!(block_len(10_240_000, 1024), 1024);
        assert_eq!(block_len(10_240_000, 0), 1);
    }

    #[test]
    fn sig_matches_whole_buffer_signature() {
        let mut rng = Rng(1);
        for bl in [1u32, 7, 64, 512, 2048] {
            for _ in 0..12 {
                let len = match rng.below(4) {
                    0 => rng.below(3) * bl as usize,
                    1 => rng.below(20 * bl as usize),
                    _ => rng.below(200_000),
                };
                let data = rng.bytes(len);
                let window = bl as usize * (1 + rng.below(5)) + rng.below(bl as usize);
                assert_eq!(sig_of(&data, bl, window, &mut rng), whole_sig(&data, bl), "bl {bl} len {len}");
            }
        }
    }

    #[test]
    fn sig_with_zero_block_len_fails() {
        let mut w = SigWriter::new(Vec::new(), 0);
        assert_eq!(w.write(b"x").unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert!(w.finish().is_err());
    }

    #[test]
    fn sig_matches_rdiff() {
        if !have_rdiff() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (file, sig) = (dir.path().join("f"), dir.path().join("sig"));
        let mut rng = Rng(2);
        let sizes = [0, 1, 511, 512, 513, (1 << 20) + 7, 2 * SIG_WINDOW + 123];
        for len in sizes {
            let data = rng.bytes(len);
            std::fs::write(&file, &data).unwrap();
            let mut bls = vec![512, 2048, block_len(len as u64, DEFAULT_MAX_BLOCK)];
            bls.dedup();
            for bl in bls {
                let _ = std::fs::remove_file(&sig);
                rdiff(&["-b", &bl.to_string(), "-S", "8", "-H", "md4", "-R", "rollsum", "signature"], &[&file, &sig]);
                let want = std::fs::read(&sig).unwrap();
                // Default window, fed in pieces of 64 KiB.
                let mut w = SigWriter::new(Vec::new(), bl);
                for piece in data.chunks(65536) {
                    w.write_all(piece).unwrap();
                }
                assert_eq!(w.finish().unwrap(), want, "len {len} bl {bl}");
                // Small windows, random pieces: many window boundaries.
                let window = bl as usize * 5;
                assert_eq!(sig_of(&data, bl, window, &mut rng), want, "len {len} bl {bl} small windows");
            }
        }
    }

    fn header(magic: u32, bl: u32, sl: u32) -> Vec<u8> {
        [magic, bl, sl].iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    /// The index holds block numbers only (the weak sums are looked up):
    /// at most 36 bytes a block in all with 8-byte strong sums, so a 4 GiB
    /// file's signature (2 M blocks of 2 KiB) stays under 72 MiB.
    #[test]
    fn signature_memory_per_block() {
        for n in [1000usize, 1 << 14, (1 << 14) + 1] {
            let mut bytes = header(SIG_MAGIC_MD4, 2048, 8);
            for i in 0..n as u32 {
                bytes.extend_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
                bytes.extend_from_slice(&u64::from(i).to_be_bytes());
            }
            let sig = Signature::read(&bytes[..]).unwrap();
            assert_eq!(sig.blocks(), n as u64);
            assert!(sig.memory() <= 36 * n, "{n} blocks: {} bytes", sig.memory());
        }
    }

    #[test]
    fn signature_read_checks() {
        let mut rng = Rng(3);
        let data = rng.bytes(5000);
        let sig = Signature::read(&whole_sig(&data, 512)[..]).unwrap();
        assert_eq!((sig.block_len(), sig.strong_len(), sig.blocks()), (512, 8, 10));
        assert!(sig.memory() > 0);
        let empty = Signature::read(&header(SIG_MAGIC_MD4, 2048, 8)[..]).unwrap();
        assert_eq!(empty.blocks(), 0);

        let corrupt = |bytes: &[u8]| {
            let e = Signature::read(bytes).err().expect("accepted a bad signature");
            assert_eq!(e.kind, Kind::Corrupt, "{e}");
            assert!(!is_unsupported_signature(&e));
        };
        corrupt(&[]);
        corrupt(&header(SIG_MAGIC_MD4, 512, 8)[..11]);
        corrupt(&header(0x7273_0999, 512, 8));
        corrupt(&header(DELTA_MAGIC, 512, 8));
        corrupt(&header(SIG_MAGIC_MD4, 0, 8));
        corrupt(&header(SIG_MAGIC_MD4, 512, 0));
        corrupt(&header(SIG_MAGIC_MD4, 512, 17));
        let good = whole_sig(&data, 512);
        corrupt(&good[..good.len() - 1]);
        corrupt(&good[..good.len() - 11]);

        for magic in [SIG_MAGIC_BLAKE2, SIG_MAGIC_RK_MD4, SIG_MAGIC_RK_BLAKE2] {
            let e = Signature::read(&header(magic, 512, 8)[..]).err().unwrap();
            assert!(is_unsupported_signature(&e), "{e}");
            assert!(e.message.contains(&format!("{magic:#010x}")), "{e}");
        }
        let e = Signature::read(&header(SIG_MAGIC_MD4, MAX_BLOCK_LEN + 1, 8)[..]).err().unwrap();
        assert!(is_unsupported_signature(&e), "{e}");

        // Signatures of the other kinds, as rdiff makes them.
        if !have_rdiff() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, &data).unwrap();
        for (i, (hash, roll, magic)) in [
            ("blake2", "rollsum", SIG_MAGIC_BLAKE2),
            ("md4", "rabinkarp", SIG_MAGIC_RK_MD4),
            ("blake2", "rabinkarp", SIG_MAGIC_RK_BLAKE2),
        ]
        .into_iter()
        .enumerate()
        {
            let sig = dir.path().join(format!("sig{i}"));
            rdiff(&["-S", "8", "-H", hash, "-R", roll, "signature"], &[&file, &sig]);
            let bytes = std::fs::read(&sig).unwrap();
            assert_eq!(bytes[..4], magic.to_be_bytes());
            let e = Signature::read(&bytes[..]).err().unwrap();
            assert!(is_unsupported_signature(&e), "{e}");
        }
    }

    #[test]
    fn random_signatures_do_not_panic() {
        let mut rng = Rng(12);
        let new = rng.bytes(5000);
        for _ in 0..300 {
            let mut bytes = header(SIG_MAGIC_MD4, 1 + rng.below(64) as u32, 1 + rng.below(16) as u32);
            // Few distinct weak sums, so some blocks collide.
            for _ in 0..rng.below(2000) {
                bytes.push((rng.next() % 3) as u8);
            }
            if let Ok(mut sig) = Signature::read(&bytes[..]) {
                delta(&mut sig, &new[..], io::sink()).unwrap();
            }
        }
    }

    struct Failing;

    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }

    #[test]
    fn io_errors_are_not_corruption() {
        let e = patch(Cursor::new(b""), Failing, io::sink()).unwrap_err();
        assert_eq!(e.kind, Kind::Other, "{e}");
        let mut sig = Signature::read(&whole_sig(b"abc", 512)[..]).unwrap();
        let e = delta(&mut sig, Failing, io::sink()).unwrap_err();
        assert!(e.message.contains("disk on fire"), "{e}");
        let e = Signature::read(Failing).err().unwrap();
        assert_eq!(e.kind, Kind::Other, "{e}");
    }

    #[test]
    fn delta_roundtrip() {
        let mut rng = Rng(4);
        for case in 0..150 {
            let bl = [1u32, 16, 64, 512][rng.below(4)];
            let basis = match case % 10 {
                0 => Vec::new(),
                1 => rng.some(bl as usize),
                _ => rng.some(40_000),
            };
            let new = match case % 7 {
                0 => Vec::new(),
                1 => basis.clone(),
                2 => rng.some(20_000),
                _ => edit(&mut rng, &basis),
            };
            // Tiny buffers (4 blocks) and the default one.
            let max_buf = if case % 2 == 0 { 0 } else { DELTA_BUF };
            let (d, stats) = make_delta(&basis, &new, bl, max_buf, &mut rng);
            assert_eq!(apply(&basis, &d).unwrap(), new, "case {case} bl {bl}");
            if case % 7 == 1 && !basis.is_empty() && bl >= 16 {
                assert_eq!((stats.literal_len, stats.copy_cmds), (0, 1), "case {case}: identical file");
            }
            // fast_rsync's own patcher agrees.
            let mut out = Vec::new();
            fast_rsync::apply(&basis, &d, &mut out).unwrap();
            assert_eq!(out, new, "case {case}");
        }
    }

    #[test]
    fn delta_of_identical_file_is_one_copy() {
        let mut rng = Rng(5);
        for len in [1usize, 100, 100_000, 512 * 7] {
            let data = rng.bytes(len);
            let (d, _) = make_delta(&data, &data, 512, DELTA_BUF, &mut rng);
            let mut want = DELTA_MAGIC.to_be_bytes().to_vec();
            match len {
                1..=255 => want.extend([0x45, 0, len as u8]),
                _ => {
                    let k = int_width(len as u64);
                    want.push(0x45 + k.trailing_zeros() as u8);
                    want.push(0);
                    want.extend(&(len as u64).to_be_bytes()[8 - k..]);
                }
            }
            want.push(0);
            assert_eq!(d, want, "len {len}");
        }
        // Identical basis blocks: librsync copies the first each time.
        let zeros = vec![0u8; 512 * 100 + 3];
        let (d, stats) = make_delta(&zeros, &zeros, 512, DELTA_BUF, &mut rng);
        assert_eq!((stats.copy_cmds, stats.literal_cmds), (101, 0));
        assert_eq!(d[4..7], [0x46, 0, 2]);
        assert_eq!(apply(&zeros, &d).unwrap(), zeros);
    }

    #[test]
    fn delta_matches_across_buffer_refills() {
        // A block-aligned shift by one byte, buffer of 4 blocks: every block
        // must still be found.
        let mut rng = Rng(6);
        let basis = rng.bytes(64 * 1000);
        let mut new = vec![7u8];
        new.extend_from_slice(&basis);
        let (d, stats) = make_delta(&basis, &new, 64, 0, &mut rng);
        assert_eq!(stats.literal_len, 1);
        assert_eq!(stats.copy_cmds, 1);
        assert_eq!(apply(&basis, &d).unwrap(), new);
        // Long literal runs are cut but still correct.
        let new = rng.bytes(10_000);
        let (d, stats) = make_delta(&basis, &new, 64, 0, &mut rng);
        assert!(stats.literal_cmds > 1);
        assert_eq!(apply(&basis, &d).unwrap(), new);
    }

    #[test]
    fn rdiff_interop() {
        if !have_rdiff() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let mut rng = Rng(7);
        let mut cases: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let big = rng.bytes(3 << 20);
        cases.push((big.clone(), edit(&mut rng, &big)));
        cases.push((Vec::new(), rng.bytes(5000)));
        cases.push((rng.bytes(5000), Vec::new()));
        cases.push((Vec::new(), Vec::new()));
        let small = rng.bytes(100_000);
        cases.push((small.clone(), small.clone()));
        let mut shifted = b"prefix".to_vec();
        shifted.extend_from_slice(&small);
        cases.push((small.clone(), shifted));
        for _ in 0..6 {
            let basis = rng.some(300_000);
            let new = edit(&mut rng, &basis);
            cases.push((basis, new));
        }
        for (i, (basis, new)) in cases.iter().enumerate() {
            let bl = block_len(basis.len() as u64, DEFAULT_MAX_BLOCK);
            let name = |s: &str| p(&format!("{s}{i}"));
            std::fs::write(name("old"), basis).unwrap();
            std::fs::write(name("new"), new).unwrap();
            let bls = bl.to_string();
            rdiff(&["-b", &bls, "-S", "8", "-H", "md4", "-R", "rollsum", "signature"], &[&name("old"), &name("sig")]);
            rdiff(&["delta"], &[&name("sig"), &name("new"), &name("rdelta")]);
            let rdelta = std::fs::read(name("rdelta")).unwrap();
            // rdiff's delta through our patcher.
            assert_eq!(apply(basis, &rdelta).unwrap(), *new, "case {i}: rdiff delta");
            // rdiff's signature through our delta, applied by rdiff.
            let sig_bytes = std::fs::read(name("sig")).unwrap();
            assert_eq!(sig_of(basis, bl, 4096, &mut rng), sig_bytes, "case {i}: signature");
            let mut sig = Signature::read(&sig_bytes[..]).unwrap();
            let mut ours = Vec::new();
            let stats = delta(&mut sig, &new[..], &mut ours).unwrap();
            std::fs::write(name("delta"), &ours).unwrap();
            rdiff(&["patch"], &[&name("old"), &name("delta"), &name("out")]);
            assert_eq!(std::fs::read(name("out")).unwrap(), *new, "case {i}: rdiff patch of our delta");
            assert_eq!(apply(basis, &ours).unwrap(), *new, "case {i}: our delta");
            eprintln!(
                "case {i}: basis {} new {} bl {bl}: delta ours {} rdiff {}{} (copy {} literal {})",
                basis.len(),
                new.len(),
                ours.len(),
                rdelta.len(),
                if ours == rdelta { ", same bytes" } else { "" },
                stats.copy_len,
                stats.literal_len
            );
            assert!(ours.len() <= rdelta.len() + rdelta.len() / 20 + 64, "case {i}: delta much larger than rdiff's");
        }
    }

    /// Our signatures and deltas against duplicity's own librsync binding,
    /// when duplicity's Python modules are installed.
    #[test]
    fn same_bytes_as_duplicity() {
        const SCRIPT: &str = "import sys, io\n\
            sys.path.insert(0, '/usr/lib/python3/dist-packages')\n\
            try:\n    from duplicity import librsync\nexcept ImportError:\n    sys.exit(3)\n\
            old, new, bl, sig_out, delta_out = sys.argv[1:]\n\
            sig = librsync.SigFile(open(old, 'rb'), int(bl)).read()\n\
            open(sig_out, 'wb').write(sig)\n\
            d = librsync.DeltaFile(io.BytesIO(sig), open(new, 'rb')).read()\n\
            open(delta_out, 'wb').write(d)\n";
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let mut rng = Rng(10);
        let a = rng.bytes(3000);
        let mut cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (Vec::new(), Vec::new()),
            (Vec::new(), rng.bytes(300_000)),
            (rng.bytes(100_000), rng.bytes(200_000)),
            (vec![0; 100_000], vec![0; 100_003]),
            (a.repeat(20), [&a[1000..], &a[..], &rng.bytes(100)[..], &a[..2000]].concat()),
        ];
        let big = rng.bytes(5 << 20);
        cases.push((big.clone(), edit(&mut rng, &big)));
        for _ in 0..4 {
            let basis = rng.some(200_000);
            let new = edit(&mut rng, &basis);
            cases.push((basis, new));
        }
        for (i, (basis, new)) in cases.iter().enumerate() {
            std::fs::write(p("old"), basis).unwrap();
            std::fs::write(p("new"), new).unwrap();
            let bl = block_len(basis.len() as u64, DEFAULT_MAX_BLOCK);
            let python = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
            let st = Command::new(python)
                .args(["-c", SCRIPT])
                .args([p("old"), p("new")])
                .arg(bl.to_string())
                .args([p("sig"), p("delta")])
                .status();
            match st {
                Ok(st) if st.code() == Some(3) => {
                    eprintln!("note: duplicity's Python modules are not installed; skipping");
                    return;
                }
                Ok(st) if st.success() => {}
                _ => {
                    eprintln!("note: python3 with duplicity did not run ({st:?}); skipping");
                    return;
                }
            }
            let mut w = SigWriter::new(Vec::new(), bl);
            w.write_all(basis).unwrap();
            let sig = w.finish().unwrap();
            assert!(sig == std::fs::read(p("sig")).unwrap(), "case {i}: signature differs");
            let mut ours = Vec::new();
            delta(&mut Signature::read(&sig[..]).unwrap(), &new[..], &mut ours).unwrap();
            let theirs = std::fs::read(p("delta")).unwrap();
            assert!(ours == theirs, "case {i}: delta differs ({} vs {} bytes)", ours.len(), theirs.len());
        }
    }

    #[test]
    fn patch_every_command() {
        let mut rng = Rng(8);
        let basis = rng.bytes(1000);
        let lit = rng.bytes(300);
        let mut d = DELTA_MAGIC.to_be_bytes().to_vec();
        let mut want = Vec::new();
        for len in 1..=64usize {
            d.push(len as u8);
            d.extend_from_slice(&lit[..len]);
            want.extend_from_slice(&lit[..len]);
        }
        for (i, w) in [1usize, 2, 4, 8].into_iter().enumerate() {
            let len = 3 + 70 * i;
            d.push(0x41 + i as u8);
            d.extend_from_slice(&(len as u64).to_be_bytes()[8 - w..]);
            d.extend_from_slice(&lit[..len]);
            want.extend_from_slice(&lit[..len]);
        }
        for cmd in 0x45u8..=0x54 {
            let k = cmd - 0x45;
            let (ow, lw) = (1usize << (k / 4), 1usize << (k % 4));
            let (off, len) = (10 + 37 * k as usize, 5 + 11 * k as usize);
            d.push(cmd);
            d.extend_from_slice(&(off as u64).to_be_bytes()[8 - ow..]);
            d.extend_from_slice(&(len as u64).to_be_bytes()[8 - lw..]);
            want.extend_from_slice(&basis[off..off + len]);
        }
        // A copy reaching exactly the end of the basis, a zero-length copy and
        // a zero-length literal.
        d.extend([0x46, 200, 0x03, 0x20, 0x45, 0, 0, 0x41, 0]);
        want.extend_from_slice(&basis[200..]);
        d.push(0);
        assert_eq!(apply(&basis, &d).unwrap(), want);
    }

    #[test]
    fn patch_rejects_malformed_deltas() {
        let mut rng = Rng(9);
        let basis = rng.bytes(10_000);
        let new = edit(&mut rng, &basis);
        let (good, _) = make_delta(&basis, &new, 512, DELTA_BUF, &mut rng);
        assert_eq!(apply(&basis, &good).unwrap(), new);
        let corrupt = |delta: &[u8], what: &str| {
            let e = apply(&basis, delta).err().unwrap_or_else(|| panic!("accepted: {what}"));
            assert_eq!(e.kind, Kind::Corrupt, "{what}: {e}");
            e.message
        };
        let magic = DELTA_MAGIC.to_be_bytes();
        assert!(corrupt(&[], "empty").contains("magic"));
        assert!(corrupt(&[0x72, 0x73, 0x01, 0x36, 0], "sig magic").contains("not a librsync delta"));
        for cmd in 0x55..=0xffu8 {
            let m = corrupt(&[&magic[..], &[cmd, 0, 0, 0, 0, 0]].concat(), "unknown command");
            assert!(m.contains("unknown delta command"), "{m}");
        }
        let past = [&magic[..], &[0x49, 0x27, 0x00, 0x20, 0x00]].concat(); // 9984 + 32
        assert!(corrupt(&past, "copy past end").contains("past the end"));
        let far = [&magic[..], &[0x51, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]].concat(); // offset 2^32
        assert!(corrupt(&far, "copy far past end").contains("past the end"));
        let huge = [&magic[..], &[0x51], &[0xff; 8], &[1, 0]].concat();
        assert!(corrupt(&huge, "offset out of range").contains("out of range"));
        for cut in 0..good.len() {
            corrupt(&good[..cut], "truncated");
        }
        let m = corrupt(&[&good[..], &[0]].concat(), "trailing byte");
        assert!(m.contains("trailing"), "{m}");
        // Garbage after the magic: errors or output, never a panic.
        for _ in 0..2000 {
            let mut d = magic.to_vec();
            d.extend(rng.some(40));
            let _ = apply(&basis, &d);
        }
    }

    fn vm_hwm_kib() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Runs [`memory_child`] alone in a fresh test process, so other tests'
    /// allocations do not count.
    #[test]
    fn memory_stays_flat() {
        if vm_hwm_kib().is_none() {
            eprintln!("note: no /proc/self/status VmHWM; skipping the memory check");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .args(["--exact", "dupfmt::rsync::tests::memory_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env("DUP_RSYNC_MEM_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "memory check failed");
        assert!(stdout.contains("RSYNC-MEMORY-OK"), "memory check did not run");
    }

    struct Sha1Writer(sha1::Sha1);

    impl Write for Sha1Writer {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            sha1::Digest::update(&mut self.0, b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Count(u64);

    impl Write for Count {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    #[ignore = "run by memory_stays_flat in its own process"]
    fn memory_child() {
        use sha1::Digest;
        if std::env::var_os("DUP_RSYNC_MEM_CHILD").is_none() {
            return;
        }
        let start = vm_hwm_kib().unwrap();
        let grown = |what: &str| {
            let now = vm_hwm_kib().unwrap();
            println!("{what}: VmHWM {start} -> {now} KiB");
            assert!(now - start < 32 << 10, "{what}: peak memory grew by {} KiB", now - start);
        };
        // 256 MiB through SigWriter, in 1 MiB pieces.
        const SIG_LEN: u64 = 256 << 20;
        let mut w = SigWriter::new(Count(0), 2048);
        io::copy(&mut Gen::new(1, 0, SIG_LEN), &mut w).unwrap();
        assert_eq!(w.finish().unwrap().0, 12 + SIG_LEN / 2048 * 12);
        grown("signature of 256 MiB");

        // Delta of 64 MiB (one insert, one delete, 1 MiB of new data) and its
        // patch, all streamed.
        const LEN: u64 = 64 << 20;
        let mut sig = Vec::new();
        io::copy(&mut Gen::new(1, 0, LEN), &mut SigWriter::new(&mut sig, 2048)).unwrap();
        let mut sig = Signature::read(&sig[..]).unwrap();
        let new = Gen::new(1, 0, 20 << 20)
            .chain(Gen::new(2, 0, 1000))
            .chain(Gen::new(1, (20 << 20) + 500, LEN))
            .chain(Gen::new(3, 0, 1 << 20));
        let mut want = Sha1Writer(sha1::Sha1::new());
        let mut d = Vec::new();
        let stats = delta(&mut sig, TeeReader::new(new, &mut want), &mut d).unwrap();
        assert_eq!(stats.new_len, LEN - 500 + 1000 + (1 << 20));
        assert!(stats.literal_len < (1 << 20) + 5000, "{stats:?}");
        grown("delta of 64 MiB");
        let mut got = Sha1Writer(sha1::Sha1::new());
        let n = patch(Gen::new(1, 0, LEN), &d[..], &mut got).unwrap();
        assert_eq!(n, stats.new_len);
        assert_eq!(got.0.finalize(), want.0.finalize());
        grown("patch of 64 MiB");
        println!("RSYNC-MEMORY-OK");
    }

    /// Throughput on 256 MiB (64 MiB of unrelated data). Run with
    /// `cargo test --release --lib rsync::tests::bench -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark"]
    fn bench() {
        use std::time::Instant;
        const MIB: f64 = (1 << 20) as f64;
        let report = |what: &str, bytes: usize, t: Instant| {
            let s = t.elapsed().as_secs_f64();
            println!("{what:<40} {:>8.1} MiB/s ({s:.3} s)", bytes as f64 / MIB / s);
        };
        let mut rng = Rng(11);
        // Small in debug builds, where the numbers mean little anyway.
        let len = if cfg!(debug_assertions) { 16 << 20 } else { 256 << 20 };
        let basis = rng.bytes(len);
        let bl = block_len(len as u64, DEFAULT_MAX_BLOCK);

        let t = Instant::now();
        let mut w = SigWriter::new(Vec::new(), bl);
        for piece in basis.chunks(1 << 20) {
            w.write_all(piece).unwrap();
        }
        let sig_bytes = w.finish().unwrap();
        report("signature (SigWriter)", len, t);
        let t = Instant::now();
        let mut sig = Signature::read(&sig_bytes[..]).unwrap();
        println!("Signature::read + index: {:.3} s, {} KiB", t.elapsed().as_secs_f64(), sig.memory() >> 10);

        // One modified byte and a 100-byte insert per MiB.
        let mut edited = Vec::with_capacity(len + len / 10000);
        for (i, mib) in basis.chunks(1 << 20).enumerate() {
            edited.extend_from_slice(&mib[..1000]);
            edited.extend_from_slice(&rng.bytes(100));
            edited.extend_from_slice(&mib[1000..]);
            let at = edited.len() - 5000 - i % 1000;
            edited[at] ^= 0x55;
        }
        let unrelated = rng.bytes(len / 4);
        for (what, new) in
            [("delta, identical", &basis), ("delta, small edits", &edited), ("delta, unrelated data", &unrelated)]
        {
            let t = Instant::now();
            let stats = delta(&mut sig, &new[..], Count(0)).unwrap();
            report(what, new.len(), t);
            println!("    {stats:?}");
        }
        let mut small = Vec::new();
        delta(&mut sig, &edited[..], &mut small).unwrap();
        let t = Instant::now();
        let n = patch(Cursor::new(&basis[..]), &small[..], Count(0)).unwrap();
        report("patch (small edits, in memory)", n as usize, t);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("basis"), &basis).unwrap();
        let t = Instant::now();
        let basis_file = std::fs::File::open(dir.path().join("basis")).unwrap();
        let out = std::fs::File::create(dir.path().join("out")).unwrap();
        let n = patch(basis_file, &small[..], out).unwrap();
        report("patch (small edits, file to file)", n as usize, t);

        // fast_rsync on whole slices, for comparison.
        let fsig = fast_rsync::Signature::deserialize(sig_bytes.clone()).unwrap();
        let index = fsig.index();
        for (what, new) in [("fast_rsync diff, small edits", &edited), ("fast_rsync diff, unrelated", &unrelated)] {
            let t = Instant::now();
            fast_rsync::diff(&index, new, Count(0)).unwrap();
            report(what, new.len(), t);
        }
        let t = Instant::now();
        let mut out = Vec::with_capacity(edited.len());
        fast_rsync::apply(&basis, &small, &mut out).unwrap();
        report("fast_rsync apply (small edits)", out.len(), t);
    }
}
