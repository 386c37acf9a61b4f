//! Cancellation: a token a job checks between files and volumes, set by a
//! front end ([`Cancel::cancel`]) or, in the binaries, by SIGINT/SIGTERM
//! ([`Cancel::on_signals`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use crate::error::{Error, Kind, Result};

/// A cancellation token: cheap to clone, every clone the same flag. A job
/// checks it between files and volumes and ends with [`Kind::Interrupted`];
/// a cancelled backup leaves its stored volumes for the next run to resume.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

/// Two tokens are equal when they are clones of one.
impl PartialEq for Cancel {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Cancel {}

impl Cancel {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every job holding this token (or a clone) to stop at its next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(Kind::Interrupted)` once cancelled.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() { Err(interrupted()) } else { Ok(()) }
    }

    /// The process's token, set by the first SIGINT or SIGTERM; a second
    /// one ends the process at once (the default action). For binaries:
    /// install it only where the work checks the token.
    pub fn on_signals() -> Cancel {
        let shared = Cancel::new();
        // One reference leaked on purpose: the handler may run until the process ends.
        let ptr = Arc::into_raw(shared.0.clone()) as *mut AtomicBool;
        SIGNALLED.store(ptr, Ordering::SeqCst);
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: the handler only does async-signal-safe things (atomic
            // operations, signal, raise).
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as usize;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        shared
    }
}

/// Whether SIGINT or SIGTERM reached this process since
/// [`Cancel::on_signals`].
pub fn signalled() -> bool {
    let p = SIGNALLED.load(Ordering::SeqCst);
    // SAFETY: the pointer comes from a leaked Arc and is never freed.
    !p.is_null() && unsafe { &*p }.load(Ordering::SeqCst)
}

/// The flag [`Cancel::on_signals`] gave the signal handler.
static SIGNALLED: AtomicPtr<AtomicBool> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_signal(sig: libc::c_int) {
    let p = SIGNALLED.load(Ordering::SeqCst);
    // SAFETY: the pointer comes from a leaked Arc and is never freed.
    let already = !p.is_null() && unsafe { &*p }.swap(true, Ordering::SeqCst);
    if already || p.is_null() {
        // SAFETY: both are async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

/// The error of a cancelled job.
pub fn interrupted() -> Error {
    Error::new(Kind::Interrupted, "interrupted").hint(
        "run it again: a backup resumes from the volumes it stored \
         (`dup-ls --cleanup URL | dup-put URL` removes them instead)",
    )
}
