//! Small files written on threads of their own, so a restore of many
//! files is not one thread's system calls.
//!
//! The restore's thread reads a small file's content (at most
//! [`SMALL`]) and hands it over with the file's temporary name, metadata
//! and, when its volumes are verified, the final name to rename it to. A
//! writer thread creates the file (`O_CREAT | O_EXCL | O_NOFOLLOW` in its
//! open directory), writes it, sets its owner, mode and time, and renames
//! it into place when asked; it also renames files that waited for their
//! volumes once those are verified. What it did comes back as a [`Done`], which
//! the restore's thread counts or reports. Jobs go over in batches of up to
//! [`BATCH`] (one thread woken per batch), or at once when the threads have
//! nothing else to do. Whatever depends on the files
//! being there (a directory's metadata, committing what waited for its
//! volumes, removing what a damaged volume gave) waits for the jobs
//! first ([`Writers::wait`]).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

/// The largest content handed to a writer thread; bigger files are
/// written by the restore's thread as they are read.
pub(super) const SMALL: u64 = 256 << 10;

/// Batches queued for the threads.
const QUEUE: usize = 4;

/// Jobs handed over at once (a thread woken per batch, not per file), or
/// fewer holding this much content.
const BATCH: usize = 16;
const BATCH_BYTES: u64 = 512 << 10;

/// A file to write.
pub(super) struct Job {
    /// Its directory, open.
    pub dir: Arc<OwnedFd>,
    pub tmp: CString,
    /// Renamed into place at once: the final name, whether what is there
    /// may be replaced (`--force`), and the local path for messages.
    pub install: Option<(CString, bool)>,
    pub path: PathBuf,
    /// Its index below the destination (for reporting).
    pub index: Vec<u8>,
    /// The content to write; `None`: the file is there under `tmp`,
    /// only to be renamed (its volumes are now verified).
    pub data: Option<Vec<u8>>,
    /// The content's size.
    pub bytes: u64,
    /// Owner (when restoring ownership), mode, mtime.
    pub owner: Option<(u32, u32)>,
    pub mode: u32,
    pub mtime: i64,
}

/// What a job did: the content's size, or why it failed (nothing is left
/// under the temporary name then).
pub(super) struct Done {
    pub index: Vec<u8>,
    pub tmp: CString,
    pub installed: bool,
    pub result: Result<u64>,
}

pub(super) struct Writers {
    jobs: Option<SyncSender<Vec<Job>>>,
    done: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
    /// Jobs not yet handed over, and their content's size.
    batch: Vec<Job>,
    batch_bytes: u64,
    /// Jobs handed over and not yet collected.
    in_flight: usize,
}

impl Writers {
    pub fn new() -> Writers {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 4);
        let (jobs, rx) = sync_channel::<Vec<Job>>(QUEUE);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let (done_tx, done) = sync_channel::<Done>((QUEUE + n) * BATCH);
        let mut threads = Vec::new();
        for _ in 0..n {
            let (rx, done_tx) = (rx.clone(), done_tx.clone());
            let t = std::thread::Builder::new().name("dup-write".into()).spawn(move || {
                loop {
                    let jobs = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok(jobs) = jobs else { return };
                    for job in jobs {
                        if done_tx.send(run(job)).is_err() {
                            return;
                        }
                    }
                }
            });
            if let Ok(t) = t {
                threads.push(t);
            }
        }
        let jobs = (!threads.is_empty()).then_some(jobs);
        Writers { jobs, done, threads, batch: Vec::new(), batch_bytes: 0, in_flight: 0 }
    }

    /// Takes a job: into the batch for the threads, handed over when full
    /// or when they have nothing else to do; run here when no thread takes
    /// jobs. What is done meanwhile goes to `each`.
    pub fn submit(&mut self, job: Job, each: &mut dyn FnMut(Done)) {
        if self.jobs.is_none() {
            return each(run(job));
        }
        self.batch_bytes += job.bytes;
        self.batch.push(job);
        if self.batch.len() >= BATCH || self.batch_bytes >= BATCH_BYTES {
            self.flush(each);
        }
        self.collect(each);
    }

    /// Hands the batch over (or runs it here when the threads are gone).
    fn flush(&mut self, each: &mut dyn FnMut(Done)) {
        if self.batch.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let n = batch.len();
        while let Some(tx) = &self.jobs {
            match tx.try_send(batch) {
                Ok(()) => {
                    self.in_flight += n;
                    return;
                }
                Err(std::sync::mpsc::TrySendError::Full(b)) => {
                    // The queue is full: take a finished job's report (so
                    // the threads never block on theirs), then try again.
                    batch = b;
                    match self.done.recv() {
                        Ok(d) => {
                            self.in_flight -= 1;
                            each(d);
                        }
                        Err(_) => self.jobs = None,
                    }
                }
                Err(std::sync::mpsc::TrySendError::Disconnected(b)) => {
                    batch = b;
                    self.jobs = None;
                }
            }
        }
        for job in batch {
            each(run(job));
        }
    }

    /// Takes what is done, without waiting; hands the batch over when the
    /// threads have run out of work.
    pub fn collect(&mut self, each: &mut dyn FnMut(Done)) {
        while let Ok(d) = self.done.try_recv() {
            self.in_flight -= 1;
            each(d);
        }
        if self.in_flight == 0 {
            self.flush(each);
        }
    }

    /// Waits for every job taken.
    pub fn wait(&mut self, each: &mut dyn FnMut(Done)) {
        self.flush(each);
        while self.in_flight > 0 {
            match self.done.recv() {
                Ok(d) => {
                    self.in_flight -= 1;
                    each(d);
                }
                Err(_) => {
                    self.in_flight = 0;
                }
            }
        }
    }

    pub fn busy(&self) -> bool {
        self.in_flight > 0 || !self.batch.is_empty()
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        // Jobs taken are done, as they were when handed over one by one.
        self.flush(&mut |_| {});
        self.jobs = None;
        // Unblock threads waiting to report, then let them end.
        while self.done.recv().is_ok() {}
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

pub(super) fn run(job: Job) -> Done {
    let installed = job.install.is_some();
    let result = write(&job);
    if result.is_err() {
        super::dest::unlink(job.dir.as_raw_fd(), &job.tmp);
    }
    Done { index: job.index, tmp: job.tmp, installed, result }
}

fn write(job: &Job) -> Result<u64> {
    let dir = job.dir.as_raw_fd();
    if let Some(data) = &job.data {
        let file = create(dir, &job.tmp).map_err(|e| Error::io("creating a temporary file", e))?;
        (&file).write_all(data).map_err(|e| Error::io("writing the restored file", e))?;
        super::dest::apply_ids(file.as_raw_fd(), job.owner, job.mode, job.mtime)
            .map_err(|e| Error::io("setting metadata", e))?;
    }
    if let Some((name, force)) = &job.install {
        super::dest::install_at(dir, &job.tmp, name, &job.path, *force, false)?;
    }
    Ok(job.bytes)
}

/// Creates `name` in `dir`: a name of this process's, so one already there
/// was left by a process that had the same id, and is replaced.
fn create(dir: i32, name: &CString) -> io::Result<File> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    for first in [true, false] {
        // SAFETY: valid descriptor and NUL-terminated name.
        let fd = unsafe { libc::openat(dir, name.as_ptr(), flags, 0o600 as libc::c_uint) };
        if fd >= 0 {
            // SAFETY: a descriptor we just opened and own.
            return Ok(unsafe { File::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if !(first && e.raw_os_error() == Some(libc::EEXIST)) {
            return Err(e);
        }
        // SAFETY: valid descriptor and NUL-terminated name; fails on a directory.
        unsafe { libc::unlinkat(dir, name.as_ptr(), 0) };
    }
    Err(io::Error::from_raw_os_error(libc::EEXIST))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(dir: &std::path::Path, n: usize) -> Vec<Job> {
        let fd: OwnedFd = File::open(dir).unwrap().into();
        let fd = Arc::new(fd);
        (0..n)
            .map(|i| Job {
                dir: fd.clone(),
                tmp: CString::new(format!(".tmp{i}")).unwrap(),
                install: Some((CString::new(format!("f{i}")).unwrap(), false)),
                path: dir.join(format!("f{i}")),
                index: format!("f{i}").into_bytes(),
                bytes: i as u64,
                data: Some(vec![b'x'; i]),
                owner: None,
                mode: 0o640,
                mtime: 1_000_000_000 + i as i64,
            })
            .collect()
    }

    /// Jobs go over in batches: every one taken is reported done once by
    /// `wait`, and `busy` counts a batch not yet handed over.
    #[test]
    fn batched_jobs_are_all_written_and_reported() {
        let t = tempfile::tempdir().unwrap();
        let mut w = Writers::new();
        let mut done = Vec::new();
        for job in jobs(t.path(), 3 * BATCH + 5) {
            w.submit(job, &mut |d| done.push(d));
            assert!(w.busy() || done.len() == 3 * BATCH + 5);
        }
        w.wait(&mut |d| done.push(d));
        assert!(!w.busy());
        assert_eq!(done.len(), 3 * BATCH + 5);
        assert!(done.iter().all(|d| d.installed && d.result.is_ok()));
        for i in 0..3 * BATCH + 5 {
            let m = std::fs::metadata(t.path().join(format!("f{i}"))).unwrap();
            assert_eq!(m.len(), i as u64);
        }
        assert!(!t.path().join(".tmp0").exists());
    }

    /// Dropped without waiting (an error path), the jobs taken are still
    /// written, as when each was handed over at once.
    #[test]
    fn jobs_taken_are_written_when_the_writers_are_dropped() {
        let t = tempfile::tempdir().unwrap();
        let mut w = Writers::new();
        for job in jobs(t.path(), 3) {
            w.submit(job, &mut |_| {});
        }
        drop(w);
        for i in 0..3 {
            assert!(t.path().join(format!("f{i}")).exists(), "f{i}");
        }
    }
}
