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
//! the restore's thread counts or reports. Whatever depends on the files
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

/// Jobs queued for the threads (at most `SMALL` each).
const QUEUE: usize = 32;

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
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
    /// Jobs handed over and not yet collected.
    outstanding: usize,
}

impl Writers {
    pub fn new() -> Writers {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 4);
        let (jobs, rx) = sync_channel::<Job>(QUEUE);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let (done_tx, done) = sync_channel::<Done>(QUEUE + n);
        let mut threads = Vec::new();
        for _ in 0..n {
            let (rx, done_tx) = (rx.clone(), done_tx.clone());
            let t = std::thread::Builder::new().name("dup-write".into()).spawn(move || {
                loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    if done_tx.send(run(job)).is_err() {
                        return;
                    }
                }
            });
            if let Ok(t) = t {
                threads.push(t);
            }
        }
        Writers { jobs: (!threads.is_empty()).then_some(jobs), done, threads, outstanding: 0 }
    }

    /// Hands a job over; gives it back when no thread takes jobs. Takes
    /// what is done meanwhile, to `each`.
    pub fn submit(&mut self, job: Job, each: &mut dyn FnMut(Done)) -> Option<Job> {
        let Some(tx) = &self.jobs else { return Some(job) };
        let mut job = job;
        loop {
            match tx.try_send(job) {
                Ok(()) => break,
                Err(std::sync::mpsc::TrySendError::Full(j)) => {
                    // The queue is full: take a finished job's report (so
                    // the threads never block on theirs), then try again.
                    job = j;
                    match self.done.recv() {
                        Ok(d) => {
                            self.outstanding -= 1;
                            each(d);
                        }
                        Err(_) => return Some(job),
                    }
                }
                Err(std::sync::mpsc::TrySendError::Disconnected(j)) => return Some(j),
            }
        }
        self.outstanding += 1;
        self.collect(each);
        None
    }

    /// Takes what is done, without waiting.
    pub fn collect(&mut self, each: &mut dyn FnMut(Done)) {
        while let Ok(d) = self.done.try_recv() {
            self.outstanding -= 1;
            each(d);
        }
    }

    /// Waits for every job handed over.
    pub fn wait(&mut self, each: &mut dyn FnMut(Done)) {
        while self.outstanding > 0 {
            match self.done.recv() {
                Ok(d) => {
                    self.outstanding -= 1;
                    each(d);
                }
                Err(_) => {
                    self.outstanding = 0;
                }
            }
        }
    }

    pub fn busy(&self) -> bool {
        self.outstanding > 0
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
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
