//! The log of a job. Library code reports its messages (backend retries,
//! resumed sets, unchecked volumes...) with [`note!`]: each goes to the
//! `log` facade (in the binaries: stderr and --log-file/--log-fd) and,
//! inside an [`crate::api`] call, to that call's [`Progress`] sink as a
//! `log` event. The sink is per thread: [`run`] sets it for the job's
//! thread, [`inherit`] carries it into the threads a job starts, so two
//! jobs in one process keep their messages apart (nothing global).

use std::cell::RefCell;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

use crate::progress::{Event, Level, Progress, code};

/// Where a job's messages go: a channel to the thread that calls the job's
/// [`Progress`]. Cheap to clone, `'static`: a backend's retry callback holds one.
#[derive(Clone, Debug)]
pub struct JobLog(Sender<Event>);

impl JobLog {
    /// Sends a message; after the job ended it is dropped.
    pub fn send(&self, level: log::Level, message: String) {
        let _ = self.0.send(Event::Log { level: Level::from_log(level), code: code::GENERIC, message });
    }
}

thread_local! {
    static CURRENT: RefCell<Option<JobLog>> = const { RefCell::new(None) };
}

/// The job log of this thread, if it runs a job of the API.
pub fn current() -> Option<JobLog> {
    CURRENT.with_borrow(Clone::clone)
}

/// Runs `f` with `log` as this thread's job log, restoring the previous one after.
pub fn scoped<T>(log: Option<JobLog>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<JobLog>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.set(self.0.take());
        }
    }
    let _restore = Restore(CURRENT.replace(log));
    f()
}

/// `f` for another thread, with this thread's job log.
pub fn inherit<T>(f: impl FnOnce() -> T + Send) -> impl FnOnce() -> T + Send {
    let log = current();
    move || scoped(log, f)
}

/// Sends a message to this thread's job log, if it has one ([`note!`]).
pub fn send(level: log::Level, message: impl FnOnce() -> String) {
    CURRENT.with_borrow(|c| {
        if let Some(l) = c {
            l.send(level, message())
        }
    })
}

/// Runs `f` as a job on a thread of its own, passing the messages it notes
/// to `progress` on this thread as they come. The job's thread is outside
/// any tokio runtime, where the blocking backends may be used.
pub fn run<T: Send>(progress: &dyn Progress, f: impl FnOnce() -> T + Send) -> std::thread::Result<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        let job = s.spawn(move || scoped(Some(JobLog(tx)), f));
        // A clone left in a thread that outlives the job keeps the channel
        // open: the job's end, not the channel's, ends the loop.
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(e) => progress.event(e),
                Err(RecvTimeoutError::Timeout) if !job.is_finished() => {}
                Err(_) => break,
            }
        }
        let r = job.join();
        rx.try_iter().for_each(|e| progress.event(e));
        r
    })
}

/// Logs a message through the `log` facade and to the job log of the
/// thread ([`send`]): `note!(log::Level::Warn, "...", args)`.
macro_rules! note {
    ($level:expr, $($arg:tt)+) => {{
        let level: log::Level = $level;
        log::log!(level, $($arg)+);
        $crate::joblog::send(level, || format!($($arg)+));
    }};
}
pub(crate) use note;

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn a_jobs_threads_log_to_its_sink_only() {
        let seen = Mutex::new(Vec::new());
        let sink = |e: Event| {
            if let Event::Log { message, .. } = e {
                seen.lock().unwrap().push(message)
            }
        };
        note!(log::Level::Warn, "outside any job");
        let r = run(&sink, || {
            note!(log::Level::Warn, "in the job");
            std::thread::scope(|s| s.spawn(inherit(|| note!(log::Level::Info, "in a thread {}", 2))).join().unwrap());
            // A thread started without inherit has no sink.
            std::thread::spawn(|| note!(log::Level::Warn, "lost")).join().unwrap();
            7
        });
        assert_eq!(r.unwrap(), 7);
        assert_eq!(*seen.lock().unwrap(), ["in the job", "in a thread 2"]);
        assert!(current().is_none(), "the sink ends with the job");
    }

    #[test]
    fn a_leaked_sender_does_not_hold_the_job() {
        let t = std::time::Instant::now();
        let r = run(&crate::progress::Silent, || {
            let l = current().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(5));
                l.send(log::Level::Warn, "late".into())
            });
        });
        assert!(r.is_ok());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}
