//! Spooled uploads as one memory-mapped buffer (file-backed pages the
//! kernel can drop), for backends that take a file in one request.

use std::fs::File;
use std::io;

use opendal::Buffer;

/// A read-only memory map of a whole file; unmapped when the last buffer
/// referring to it is dropped.
pub(super) struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
    _file: File,
}

// SAFETY: the mapping is read-only and owned; nothing else writes the
// (unlinked, private) file while it is mapped.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: ptr/len describe a live PROT_READ mapping owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping created in mapped_buffer, once.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// opendal's byte type, named through its buffer (no extra dependency).
pub(super) type Bytes = <Buffer as Iterator>::Item;

/// The first `len` bytes of `file` as one buffer backed by a memory map.
pub(super) fn mapped_buffer(file: File, len: u64) -> io::Result<Buffer> {
    use std::os::fd::AsRawFd;
    let len = usize::try_from(len).map_err(|_| io::Error::other("file too large to map"))?;
    if len == 0 {
        return Ok(Buffer::new());
    }
    // SAFETY: a fresh read-only private mapping of an open file we own.
    let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: advice on the mapping just created.
    unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
    Ok(Buffer::from(Bytes::from_owner(Mapped { ptr, len, _file: file })))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn mapped_buffers() {
        let mut f = crate::io::spool::temp_file().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let b = mapped_buffer(f, data.len() as u64).unwrap();
        assert_eq!(b.to_vec(), data);
        let c = b.clone();
        drop(b);
        assert_eq!(c.len(), data.len());
    }
}
