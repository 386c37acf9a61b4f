//! Paths inside a backup ("indexes") and duplicity's order over them.
//!
//! An index is the raw bytes of a path relative to the backup root, with
//! components joined by `/`; the root is `.`. Duplicity orders indexes as
//! tuples of components compared byte-wise (FORMAT-duplicity.md §3.6), which
//! is the order of a depth-first walk with each directory's names sorted as
//! bytes, and not the order of the joined strings (`a/b` < `a b`).

use std::cmp::Ordering;

/// The root's index.
pub const ROOT: &[u8] = b".";

/// The components of an index; the root has none.
pub fn components(index: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = if index == ROOT { &b""[..] } else { index };
    body.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

/// Duplicity's order: component-wise byte comparison.
pub fn cmp(a: &[u8], b: &[u8]) -> Ordering {
    components(a).cmp(components(b))
}

/// Joins a parent index and a child name.
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent == ROOT || parent.is_empty() {
        return name.to_vec();
    }
    let mut v = Vec::with_capacity(parent.len() + 1 + name.len());
    v.extend_from_slice(parent);
    v.push(b'/');
    v.extend_from_slice(name);
    v
}

/// Normalises an index given by a user or read from an archive: drops empty
/// and `.` components; returns `None` when a component is `..` (never
/// accepted: it would point outside the backup root). The root is `.`.
pub fn normalize(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => continue,
            b".." => return None,
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    if out.is_empty() {
        out.extend_from_slice(ROOT);
    }
    Some(out)
}

/// True when `index` is `prefix` or lies under it.
pub fn is_within(index: &[u8], prefix: &[u8]) -> bool {
    let mut i = components(index);
    components(prefix).all(|p| i.next() == Some(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_componentwise() {
        let mut v: Vec<&[u8]> =
            vec![b"a0", b"a.b", b"a-b", b"a b", b"a/z", b"a/b0", b"a/b/c", b"a/b", b"a", b"A", b"."];
        v.sort_by(|a, b| cmp(a, b));
        let want: Vec<&[u8]> = vec![b".", b"A", b"a", b"a/b", b"a/b/c", b"a/b0", b"a/z", b"a b", b"a-b", b"a.b", b"a0"];
        assert_eq!(v, want);
    }

    #[test]
    fn normalize_refuses_dotdot() {
        assert_eq!(normalize(b"./a//b/"), Some(b"a/b".to_vec()));
        assert_eq!(normalize(b""), Some(b".".to_vec()));
        assert_eq!(normalize(b"a/../b"), None);
        assert_eq!(normalize(b"/abs/x"), Some(b"abs/x".to_vec()));
    }

    #[test]
    fn within() {
        assert!(is_within(b"a/b", b"a"));
        assert!(is_within(b"a", b"a"));
        assert!(!is_within(b"ab", b"a"));
        assert!(is_within(b"x", b"."));
    }
}
