//! Where bytes go and come from, knowing nothing of records:
//!
//! * [`storage`]: backends (opendal) behind one small blocking interface;
//! * [`cache`]: the local metadata cache, in duplicity's layout;
//! * [`spool`]: write-then-read buffers that spill to disk;
//! * [`pipe`]: bounded in-process pipes between threads;
//! * [`parblock`]: block-parallel compression into an ordered writer;
//! * [`owners`]: user and group names and ids (passwd, group).

pub mod cache;
pub mod owners;
pub mod parblock;
pub mod pipe;
pub mod spool;
pub mod storage;

/// Buffers of 256 KiB and more (compression blocks, volume pieces) get
/// pages of their own, returned to the system when freed. glibc would
/// otherwise raise that threshold after the first such free and keep
/// them in its heaps: dup-pack peaked 20 MiB higher.
pub fn limit_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

/// A mutex's guard, also after a panic elsewhere (what it guards stays
/// consistent: buffers and writers, no invariants across a panic).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
