//! User and group names and ids in the local databases (passwd, group,
//! through NSS): the scan names owners, a restore maps names back to ids.

use std::ffi::{CStr, CString, c_char, c_int};

/// The name of user `uid`; "" when there is none.
pub fn user_name(uid: u32) -> String {
    // SAFETY: getpwuid_r writes only into `pw` and `buf` (of the given length).
    let call = |pw: *mut libc::passwd, buf, len, res| unsafe { libc::getpwuid_r(uid, pw, buf, len, res) };
    lookup(call, |pw| name_of(pw.pw_name)).unwrap_or_default()
}

/// The name of group `gid`; "" when there is none.
pub fn group_name(gid: u32) -> String {
    // SAFETY: getgrgid_r writes only into `gr` and `buf` (of the given length).
    let call = |gr: *mut libc::group, buf, len, res| unsafe { libc::getgrgid_r(gid, gr, buf, len, res) };
    lookup(call, |gr| name_of(gr.gr_name)).unwrap_or_default()
}

/// The id of the user called `name`, if there is one.
pub fn user_id(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: getpwnam_r writes only into `pw` and `buf` (of the given length).
    let call = |pw: *mut libc::passwd, buf, len, res| unsafe { libc::getpwnam_r(c.as_ptr(), pw, buf, len, res) };
    lookup(call, |pw| Some(pw.pw_uid))
}

/// The id of the group called `name`, if there is one.
pub fn group_id(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: getgrnam_r writes only into `gr` and `buf` (of the given length).
    let call = |gr: *mut libc::group, buf, len, res| unsafe { libc::getgrnam_r(c.as_ptr(), gr, buf, len, res) };
    lookup(call, |gr| Some(gr.gr_gid))
}

/// A name a found record points to (into the lookup's buffer).
fn name_of(p: *const c_char) -> Option<String> {
    // SAFETY: on success the name is NULL or a NUL-terminated string in the buffer.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Runs a `get*_r` lookup, growing its buffer as needed (up to 1 MiB);
/// `read` takes what is wanted from the record found. None when not found
/// or on an error.
fn lookup<T, R>(
    call: impl Fn(*mut T, *mut c_char, usize, *mut *mut T) -> c_int,
    read: impl Fn(&T) -> Option<R>,
) -> Option<R> {
    let mut buf = vec![0 as c_char; 1024];
    loop {
        // SAFETY: T is a plain C struct (passwd/group), valid when zeroed.
        let mut rec: T = unsafe { std::mem::zeroed() };
        let mut res: *mut T = std::ptr::null_mut();
        let rc = call(&mut rec, buf.as_mut_ptr(), buf.len(), &mut res);
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || res.is_null() {
            return None;
        }
        return read(&rec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_both_ways() {
        assert_eq!(user_name(0), "root");
        assert_eq!(group_name(0), "root");
        assert_eq!(user_id("root"), Some(0));
        assert_eq!(group_id("root"), Some(0));
    }

    #[test]
    fn unknown_names_and_ids() {
        assert_eq!(user_id("no-such-user-dup-test"), None);
        assert_eq!(group_id("no-such-group-dup-test"), None);
        assert_eq!(user_id("nul\0inside"), None);
        assert_eq!(user_name(4_000_000_000), "");
        assert_eq!(group_name(4_000_000_000), "");
    }
}
