//! Block-parallel compression into an ordered writer.
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
use std::io::{self, Write};
use std::ops::Deref;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

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
