//! Block-parallel compression into an ordered writer, and block-parallel
//! decompression of what it wrote ([`ParInflate`]).
//!
//! Input is cut into 1 MiB blocks; each is compressed on the rayon pool by a
//! job of the caller's choosing (gzip members, raw deflate ending on a byte
//! boundary), and the results are written, in order, by a writer thread of
//! their own (hashing, encryption, spooling). The thread that writes the
//! input only cuts blocks, so compression, the writer and the producer all
//! run at once, and a finished file's writer can still be draining while
//! the next file is built.
//!
//! Size estimates are deterministic: they count the compressed size of the
//! blocks up to a fixed window behind the input (waiting for them when
//! needed), never whatever happened to be done, so the same input is cut
//! into the same volumes on every run and machine.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::ops::Deref;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::lock;
use crate::error::{Error, Result, content_error};

/// Uncompressed bytes per block.
pub const BLOCK: usize = 1 << 20;

/// Blocks compressed ahead of the writer (and of the size estimate).
const WINDOW: usize = 8;

/// Buffers kept for reuse: about what is in flight at once.
const POOL_MAX: usize = 2 * WINDOW + 2;

/// A compression job: a block, whether it is the last one, and an empty
/// buffer to put the output in (reused: its capacity is free to take).
pub type Job = Arc<dyn Fn(&[u8], bool, Vec<u8>) -> Vec<u8> + Send + Sync>;

/// Block buffers, input and output, passed round instead of freed: a
/// fresh megabyte is a fault per page, and freeing it (the heap gives
/// large buffers back, see [`crate::io::limit_heap`]) a TLB shootdown per
/// thread; on the bench's full backup that was a sixth of dup-pack's time.
#[derive(Clone, Default)]
struct Pool(Arc<Mutex<Vec<Vec<u8>>>>);

impl Pool {
    /// An empty buffer, reused when one is free.
    fn take(&self) -> Vec<u8> {
        lock(&self.0).pop().unwrap_or_default()
    }
    fn give(&self, mut v: Vec<u8>) {
        v.clear();
        let mut free = lock(&self.0);
        if v.capacity() > 0 && free.len() < POOL_MAX {
            free.push(v);
        }
    }
}

/// Raw deflate compressors kept for reuse, by level: making one zeroes
/// fresh pages for its tables (a fault per page), and a volume's jobs
/// would make three per block (two samples, the block).
#[derive(Default)]
pub struct Deflaters(Mutex<Vec<(u32, Compress)>>);

impl Deflaters {
    /// Runs `f` with a compressor at `level`, reset (as a new one).
    pub fn with<R>(&self, level: u32, f: impl FnOnce(&mut Compress) -> R) -> R {
        let level = level.min(9);
        let found = {
            let mut free = lock(&self.0);
            free.iter().position(|(l, _)| *l == level).map(|i| free.swap_remove(i).1)
        };
        let mut c = match found {
            Some(mut c) => {
                c.reset();
                c
            }
            None => Compress::new(Compression::new(level), false),
        };
        let r = f(&mut c);
        let mut free = lock(&self.0);
        if free.len() < POOL_MAX {
            free.push((level, c));
        }
        r
    }

    /// Appends `data` to `out` as raw deflate at `level`: ending the
    /// stream when `last`, else on a byte boundary (a sync flush), so
    /// blocks concatenate. `false`: zlib refused (not with valid
    /// parameters); `out` then holds part of it.
    pub fn deflate(&self, level: u32, data: &[u8], last: bool, out: &mut Vec<u8>) -> bool {
        let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
        self.with(level, |c| {
            loop {
                let done = c.total_in() as usize;
                let Ok(status) = c.compress_vec(&data[done..], out, flush) else { return false };
                let all_in = c.total_in() as usize == data.len();
                // Finished: the stream end, or a sync flush that left room.
                if all_in && (status == Status::StreamEnd || (!last && out.len() < out.capacity())) {
                    return true;
                }
                out.reserve(out.capacity().max(64 << 10));
            }
        })
    }
}

/// A compressed block; its buffer goes back to the pool when dropped.
pub struct Block(Vec<u8>, Pool);

impl Deref for Block {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.1.give(std::mem::take(&mut self.0));
    }
}

/// The compressed blocks, in order, as the writer thread gets them.
pub struct Blocks(Receiver<Receiver<Vec<u8>>>, Pool);

impl Iterator for Blocks {
    type Item = Result<Block>;
    fn next(&mut self) -> Option<Result<Block>> {
        let block = self.0.recv().ok()?;
        Some(block.recv().map(|b| Block(b, self.1.clone())).map_err(|_| Error::other("a compression job failed")))
    }
}

impl Blocks {
    /// Writes every block to `w`.
    pub fn copy_to(self, w: &mut impl Write) -> Result<()> {
        for b in self {
            w.write_all(&b?).map_err(|e| content_error("writing", e))?;
        }
        Ok(())
    }
}

/// A writer that compresses in parallel; see the module docs.
pub struct ParBlocks<T: Send + 'static> {
    job: Job,
    pool: Pool,
    pending: Vec<u8>,
    /// Each block's output, in order, for the writer thread.
    to_writer: Option<SyncSender<Receiver<Vec<u8>>>>,
    /// Compressed sizes not yet counted: (uncompressed length, size).
    sizes: VecDeque<(usize, Receiver<usize>)>,
    /// Uncompressed bytes taken, and those whose compressed size is counted.
    bytes_in: u64,
    known_in: u64,
    known_out: u64,
    blocks: u64,
    writer: Option<JoinHandle<Result<T>>>,
}

impl<T: Send + 'static> ParBlocks<T> {
    /// Starts `writer` on a thread of its own with the blocks to write (so
    /// its setup, such as key derivation, runs in parallel too); what it
    /// returns comes back from [`ParBlocks::wait`].
    pub fn new<F>(job: Job, writer: F) -> ParBlocks<T>
    where
        F: FnOnce(Blocks) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = sync_channel::<Receiver<Vec<u8>>>(WINDOW);
        let pool = Pool::default();
        let blocks = Blocks(rx, pool.clone());
        let writer = std::thread::spawn(move || writer(blocks));
        ParBlocks {
            job,
            pool,
            pending: Vec::with_capacity(BLOCK),
            to_writer: Some(tx),
            sizes: VecDeque::new(),
            bytes_in: 0,
            known_in: 0,
            known_out: 0,
            blocks: 0,
            writer: Some(writer),
        }
    }

    /// Uncompressed bytes written so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// The compressed size if the input ended now: the counted blocks, and
    /// the rest at their ratio (1:1 before any is counted).
    pub fn estimated_size(&self) -> u64 {
        self.estimated_size_for(self.bytes_in)
    }

    /// The same, had `total_in` bytes been written (a writer above this one
    /// may hold some back in its buffers).
    pub fn estimated_size_for(&self, total_in: u64) -> u64 {
        let ratio = if self.known_in > 0 { self.known_out as f64 / self.known_in as f64 } else { 1.0 };
        self.known_out + (total_in.saturating_sub(self.known_in) as f64 * ratio) as u64
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let next = if last { Vec::new() } else { self.pool.take() };
        let block = std::mem::replace(&mut self.pending, next);
        let (data_tx, data_rx) = sync_channel(1);
        let (size_tx, size_rx) = sync_channel(1);
        let n = block.len();
        let (job, pool) = (self.job.clone(), self.pool.clone());
        let run = move || {
            let out = job(&block, last, pool.take());
            pool.give(block);
            let _ = size_tx.send(out.len());
            let _ = data_tx.send(out);
        };
        if rayon::current_thread_index().is_some() {
            // On a pool thread: waiting for a job queued behind us could
            // deadlock the pool, so compress here.
            run();
        } else {
            rayon::spawn(run);
        }
        self.blocks += 1;
        self.sizes.push_back((n, size_rx));
        let sent = self.to_writer.as_ref().map(|tx| tx.send(data_rx).is_ok()).unwrap_or(false);
        if !sent {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the writer thread stopped"));
        }
        while self.sizes.len() > WINDOW {
            self.count_oldest()?;
        }
        Ok(())
    }

    fn count_oldest(&mut self) -> io::Result<()> {
        if let Some((n, rx)) = self.sizes.pop_front() {
            let size = rx.recv().map_err(|_| io::Error::other("a compression job failed"))?;
            self.known_in += n as u64;
            self.known_out += size as u64;
        }
        Ok(())
    }

    /// Ends the input (the last block is submitted, even when empty, so a
    /// stream format always gets its end) without waiting for the writer.
    pub fn seal(&mut self) -> Result<()> {
        if self.to_writer.is_none() {
            return Ok(());
        }
        let r = self.submit(true);
        self.to_writer = None;
        match r {
            Ok(()) => Ok(()),
            // The writer's own error says more.
            Err(_) => Err(self.join().err().unwrap_or_else(|| Error::other("the writer thread stopped"))),
        }
    }

    /// Whether the writer has finished (so [`ParBlocks::wait`] will not block).
    pub fn is_done(&self) -> bool {
        self.writer.as_ref().is_none_or(|w| w.is_finished())
    }

    /// Seals the input if not done yet, waits for the writer and returns
    /// what its sink's `finish` gave.
    pub fn wait(mut self) -> Result<T> {
        self.seal()?;
        self.join()
    }

    fn join(&mut self) -> Result<T> {
        self.to_writer = None;
        match self.writer.take() {
            Some(w) => w.join().map_err(|_| Error::other("the writer thread panicked"))?,
            None => Err(Error::other("the writer already finished")),
        }
    }
}

impl<T: Send + 'static> Write for ParBlocks<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.to_writer.is_none() {
            return Err(io::Error::other("write after the end"));
        }
        let n = buf.len().min(BLOCK - self.pending.len());
        self.pending.reserve_exact(BLOCK - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        self.bytes_in += n as u64;
        if self.pending.len() == BLOCK
            && let Err(e) = self.submit(false)
        {
            return Err(match self.join() {
                Err(err) => io::Error::other(err),
                Ok(_) => e,
            });
        }
        Ok(n)
    }
    /// Nothing to do: forcing data out would cut blocks short.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<T: Send + 'static> Drop for ParBlocks<T> {
    /// Dropped unfinished (an error elsewhere): stop the writer, ignore it.
    fn drop(&mut self) {
        self.to_writer = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Inflates a raw deflate stream made of independent blocks (each from a
/// reset compressor, as [`Deflaters::deflate`] writes them) whose
/// compressed sizes are known: up to [`WINDOW`] blocks (two per pool
/// thread) are inflated at once on the rayon pool and read in order. Every block but the last must give
/// `block` bytes, and the last must end the stream.
pub struct ParInflate<R> {
    src: R,
    sizes: VecDeque<u64>,
    block: usize,
    inflight: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    cur: Vec<u8>,
    pos: usize,
    pool: Pool,
    inflaters: Arc<Mutex<Vec<Decompress>>>,
}

impl<R: Read> ParInflate<R> {
    pub fn new(src: R, sizes: &[u64], block: u64) -> ParInflate<R> {
        ParInflate {
            src,
            sizes: sizes.iter().copied().collect(),
            block: block as usize,
            inflight: VecDeque::new(),
            cur: Vec::new(),
            pos: 0,
            pool: Pool::default(),
            inflaters: Arc::default(),
        }
    }

    /// Reads the next blocks and starts their jobs.
    fn fill(&mut self) -> io::Result<()> {
        // Enough to keep the pool busy, and no more (each is 2 MiB or so in flight).
        let ahead = (2 * rayon::current_num_threads()).clamp(2, WINDOW);
        while self.inflight.len() < ahead {
            let Some(n) = self.sizes.pop_front() else { return Ok(()) };
            let last = self.sizes.is_empty();
            let mut input = self.pool.take();
            (&mut self.src).take(n).read_to_end(&mut input)?;
            if (input.len() as u64) < n {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the compressed data is truncated"));
            }
            let (tx, rx) = sync_channel(1);
            let (pool, inflaters, block) = (self.pool.clone(), self.inflaters.clone(), self.block);
            let run = move || {
                let mut d = lock(&inflaters).pop().unwrap_or_else(|| Decompress::new(false));
                let mut out = pool.take();
                let r = inflate_block(&mut d, &input, last, block, &mut out).map(|()| out);
                lock(&inflaters).push(d);
                pool.give(input);
                let _ = tx.send(r);
            };
            if rayon::current_thread_index().is_some() {
                run();
            } else {
                rayon::spawn(run);
            }
            self.inflight.push_back(rx);
        }
        Ok(())
    }
}

/// Inflates one block into `out` (empty); see [`ParInflate`].
fn inflate_block(d: &mut Decompress, input: &[u8], last: bool, block: usize, out: &mut Vec<u8>) -> io::Result<()> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("compressed block {what}"));
    d.reset(false);
    out.reserve(if last { 64 << 10 } else { block + 1 });
    loop {
        let done = d.total_in() as usize;
        let status = d.decompress_vec(&input[done..], out, FlushDecompress::None).map_err(|e| bad(&e.to_string()))?;
        if status == Status::StreamEnd {
            if !last || (d.total_in() as usize) < input.len() {
                return Err(bad("ends the stream too early"));
            }
            return Ok(());
        }
        if d.total_in() as usize == input.len() && out.len() < out.capacity() {
            // All in, and room left: the block's output is complete.
            if last {
                return Err(bad("is cut short (the stream's end is missing)"));
            }
            if out.len() != block {
                return Err(bad("has the wrong length"));
            }
            return Ok(());
        }
        if out.len() == out.capacity() {
            if !last && out.len() > block {
                return Err(bad("has the wrong length"));
            }
            out.reserve(64 << 10);
        } else if d.total_in() as usize == done {
            return Err(bad("makes no progress"));
        }
    }
}

impl<R: Read> Read for ParInflate<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.cur.len() {
                let n = buf.len().min(self.cur.len() - self.pos);
                buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            self.fill()?;
            let Some(rx) = self.inflight.pop_front() else { return Ok(0) };
            let out = rx.recv().map_err(|_| io::Error::other("an inflate job failed"))??;
            self.pool.give(std::mem::replace(&mut self.cur, out));
            self.pos = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(blocks: Blocks) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        blocks.copy_to(&mut v)?;
        Ok(v)
    }

    /// A "compression" that keeps every other byte and marks the last block.
    fn halve(b: &[u8], last: bool, mut v: Vec<u8>) -> Vec<u8> {
        v.extend(b.iter().step_by(2));
        if last {
            v.push(b'$');
        }
        v
    }

    #[test]
    fn blocks_come_out_in_order_and_the_estimate_is_exact_when_even() {
        let input: Vec<u8> = (0..(BLOCK * 20 + 12345)).map(|i| (i % 251) as u8).collect();
        let mut p = ParBlocks::new(Arc::new(halve), collect);
        let mut estimates = Vec::new();
        for chunk in input.chunks(100_000) {
            p.write_all(chunk).unwrap();
            estimates.push(p.estimated_size());
        }
        let out = p.wait().unwrap();
        let mut want = Vec::new();
        for (i, b) in input.chunks(BLOCK).enumerate() {
            want.extend(halve(b, i == input.len() / BLOCK, Vec::new()));
        }
        assert_eq!(out, want);
        // After the window fills, the ratio is known: half.
        let last = *estimates.last().unwrap();
        assert_eq!(last, input.len() as u64 / 2);
    }

    #[test]
    fn estimates_do_not_depend_on_timing() {
        let input: Vec<u8> = (0..(BLOCK * 12)).map(|i| (i * 7 % 13) as u8).collect();
        let run = || {
            let mut p = ParBlocks::new(Arc::new(halve), collect);
            let mut e = Vec::new();
            for chunk in input.chunks(77_777) {
                p.write_all(chunk).unwrap();
                e.push(p.estimated_size());
            }
            p.wait().unwrap();
            e
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn empty_input_still_gets_a_last_block() {
        let p = ParBlocks::new(Arc::new(halve), collect);
        assert_eq!(p.wait().unwrap(), b"$");
    }

    /// Blocks as a volume's jobs write them, and their compressed sizes.
    fn deflated(input: &[u8]) -> (Vec<u8>, Vec<u64>) {
        let d = Deflaters::default();
        let (mut all, mut sizes) = (Vec::new(), Vec::new());
        let n = input.len().div_ceil(BLOCK).max(1);
        for i in 0..n {
            let block = &input[(i * BLOCK).min(input.len())..((i + 1) * BLOCK).min(input.len())];
            let mut out = Vec::new();
            assert!(d.deflate(5, block, i + 1 == n, &mut out));
            sizes.push(out.len() as u64);
            all.extend(out);
        }
        (all, sizes)
    }

    fn inflate_all(data: &[u8], sizes: &[u64]) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        ParInflate::new(data, sizes, BLOCK as u64).read_to_end(&mut v)?;
        Ok(v)
    }

    #[test]
    fn par_inflate_gives_back_what_the_blocks_hold() {
        for len in [0, 1000, BLOCK, BLOCK * 11 + 4567] {
            let input: Vec<u8> = (0..len).map(|i| (((i * 31) % 251) ^ (i >> 12)) as u8).collect();
            let (data, sizes) = deflated(&input);
            assert_eq!(inflate_all(&data, &sizes).unwrap(), input, "{len}");
        }
    }

    #[test]
    fn par_inflate_refuses_damage_truncation_and_wrong_sizes() {
        let input: Vec<u8> = (0..BLOCK * 5 + 99).map(|i| (i % 7 * (i >> 10)) as u8).collect();
        let (data, sizes) = deflated(&input);
        // Cut short.
        assert!(inflate_all(&data[..data.len() - 10], &sizes).is_err());
        // The last block's end missing (sizes that stop early).
        assert!(inflate_all(&data, &sizes[..3]).is_err());
        // Sizes that cut blocks in the wrong places.
        let mut shifted = sizes.clone();
        shifted[1] += 5;
        shifted[2] -= 5;
        assert!(inflate_all(&data, &shifted).is_err());
        // A damaged byte gives an error or different bytes, never the input.
        let mut bad = data.clone();
        bad[sizes[0] as usize + 40] ^= 0x55;
        assert!(inflate_all(&bad, &sizes).map_or(true, |v| v != input));
    }

    struct Failing;
    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_writer_error_reaches_the_producer() {
        let mut p = ParBlocks::new(Arc::new(halve), |b: Blocks| b.copy_to(&mut Failing));
        let input = vec![1u8; BLOCK * 30];
        let e = match p.write_all(&input) {
            Err(e) => e.to_string(),
            Ok(()) => p.wait().unwrap_err().message,
        };
        assert!(e.contains("disk full"), "{e}");
    }

    #[test]
    fn a_sink_that_cannot_start_is_an_error() {
        let p: ParBlocks<()> = ParBlocks::new(Arc::new(halve), |_| Err(Error::usage("no passphrase")));
        assert!(p.wait().unwrap_err().message.contains("no passphrase"));
    }
}
