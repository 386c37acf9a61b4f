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

/// What [`widen_pipes`] asks for: the most Linux gives a user by default
/// (/proc/sys/fs/pipe-max-size).
pub const PIPE_SIZE: i32 = 1 << 20;

/// Standard input and output that are pipes get 1 MiB buffers instead of
/// 64 KiB: a stage that writes 256 KiB records then waits for the next
/// stage four times less often (dup-delta into a reader: 3.6 -> 1.8 s on
/// the bench's 1 GiB corpus). The kernel may refuse (a user over the
/// pipe-user-pages limits); the pipe then keeps its size.
pub fn widen_pipes() {
    #[cfg(target_os = "linux")]
    for fd in [0, 1] {
        // SAFETY: fstat and fcntl only inspect and resize the descriptor's pipe.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) == 0
                && st.st_mode & libc::S_IFMT == libc::S_IFIFO
                && libc::fcntl(fd, libc::F_GETPIPE_SZ) < PIPE_SIZE
            {
                libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_SIZE);
            }
        }
    }
}

/// A mutex's guard, also after a panic elsewhere (what it guards stays
/// consistent: buffers and writers, no invariants across a panic).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    /// The pipes of a pipeline get 1 MiB (or what the kernel allows).
    #[cfg(target_os = "linux")]
    #[test]
    fn stdout_pipe_is_widened() {
        use std::process::{Command, Stdio};
        // A child whose stdout is a pipe reports its size after widening:
        // this test binary run again, filtered to the helper below.
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .args(["--exact", "io::tests::report_pipe_size", "--nocapture", "--test-threads=1"])
            .env("DUP_REPORT_PIPE", "1")
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let size: i32 = text
            .lines()
            .find_map(|l| l.split("pipe size ").nth(1))
            .unwrap_or_else(|| panic!("no size reported: {text}"))
            .trim()
            .parse()
            .unwrap();
        let max: i32 = std::fs::read_to_string("/proc/sys/fs/pipe-max-size").unwrap().trim().parse().unwrap();
        assert_eq!(size, super::PIPE_SIZE.min(max));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn report_pipe_size() {
        if std::env::var_os("DUP_REPORT_PIPE").is_none() {
            return;
        }
        super::widen_pipes();
        // SAFETY: F_GETPIPE_SZ only reads the size.
        let n = unsafe { libc::fcntl(1, libc::F_GETPIPE_SZ) };
        println!("pipe size {n}");
    }
}
