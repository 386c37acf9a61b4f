//! The human view of a record stream: one line per record, content shown as
//! its length rather than its bytes.

use crate::names::variant_name;
use crate::record::{Entry, FileType, Record, SetInfo};

/// `ls -l`-style type and permission string.
pub fn mode_string(ftype: FileType, mode: u32) -> String {
    let t = match ftype {
        FileType::File => '-',
        FileType::Dir => 'd',
        FileType::Symlink => 'l',
        FileType::Fifo => 'p',
        FileType::Char => 'c',
        FileType::Block => 'b',
        FileType::Socket => 's',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o40, 'r'),
        (0o20, 'w'),
        (0o10, 'x'),
        (0o4, 'r'),
        (0o2, 'w'),
        (0o1, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        let set = mode & bit != 0;
        s.push(match (special, set, i) {
            (true, true, 8) => 't',
            (true, false, 8) => 'T',
            (true, true, _) => 's',
            (true, false, _) => 'S',
            (false, true, _) => *c,
            (false, false, _) => '-',
        });
    }
    s
}

/// UTC time as `YYYY-MM-DD HH:MM:SS`.
pub fn utc(t: i64) -> String {
    // SAFETY: gmtime_r only writes into the tm we pass.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let tt = t as libc::time_t;
    if unsafe { libc::gmtime_r(&tt, &mut tm) }.is_null() {
        return t.to_string();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

fn entry_line(kind: &str, e: &Entry, content: Option<u64>) -> String {
    let owner = format!(
        "{}/{}",
        if e.uname.is_empty() { e.uid.to_string() } else { e.uname.clone() },
        if e.gname.is_empty() { e.gid.to_string() } else { e.gname.clone() }
    );
    let size = match (e.ftype, e.devmajor, e.devminor) {
        (FileType::Char | FileType::Block, Some(a), Some(b)) => format!("{a},{b}"),
        _ => e.size.to_string(),
    };
    let mut line =
        format!("{kind:<9} {} {owner:<17} {size:>10} {} {}", mode_string(e.ftype, e.mode), utc(e.mtime), e.path);
    if let Some(t) = &e.target {
        line.push_str(&format!(" -> {t}"));
    }
    if e.nlink > 1 && e.ftype != FileType::Dir {
        line.push_str(&format!("  [inode {} links {}]", e.ino, e.nlink));
    }
    if let Some(n) = content {
        line.push_str(&format!("  (+{n} bytes)"));
    }
    line
}

/// A set as a line: status, type, time, volumes.
pub fn set_line(s: &SetInfo) -> String {
    let (t, status) = (variant_name(&s.set_type), variant_name(&s.status));
    let chain = s.chain.map(|c| format!("chain {c}")).unwrap_or_default();
    format!(
        "{:<9} {status:<10} {chain:<8} {t:<4} {}  {:>5} volumes",
        "set",
        crate::dupfmt::time::pretty(s.end),
        s.volumes
    )
}

/// A connection test's answer: `check ok s3://b  (3 files, a backup)`, or
/// what failed.
pub fn check_line(c: &crate::io::storage::Check) -> String {
    if !c.is_ok() {
        return format!("{:<9} {:<10} {}: {}", "check", c.status.as_str(), c.url, c.message);
    }
    let files = c.files.map(|n| format!("{n} files, ")).unwrap_or_default();
    let backup = if c.archive { "a backup" } else { "no backup" };
    format!("{:<9} {:<10} {}  ({files}{backup})", "check", c.status.as_str(), c.url)
}

/// One line for a record; `content` is the length of the chunks that
/// followed it, if any.
pub fn line(rec: &Record, content: Option<u64>) -> String {
    match rec {
        Record::Header { stream, version, producer, source, .. } => {
            let s = variant_name(stream);
            match source {
                Some(src) => format!("# {s} stream, version {version}, from {producer}, source {src}"),
                None => format!("# {s} stream, version {version}, from {producer}"),
            }
        }
        Record::Entry(e) => entry_line("entry", e, content),
        Record::Snapshot(e) => entry_line("snapshot", e, content),
        Record::Diff(e) => entry_line("diff", e, content),
        Record::Signature(e) => entry_line("signature", e, content),
        Record::Deleted { path, .. } => format!("{:<9} {path}", "deleted"),
        Record::Warning { path: Some(p), message } => format!("{:<9} {p}: {message}", "warning"),
        Record::Warning { path: None, message } => format!("{:<9} {message}", "warning"),
        Record::Total { files, bytes } => format!("{:<9} {files} items, {bytes} bytes", "total"),
        Record::Chunk { data, last } => {
            format!("{:<9} {} bytes{}", "chunk", data.0.len(), if *last { " (last)" } else { "" })
        }
        Record::File { name, role, delete, stored, .. } => {
            let role = variant_name(role);
            match (delete, stored, content) {
                (true, _, _) => format!("{:<9} delete {role:<9} {name}", "file"),
                (false, Some(s), _) => format!("{:<9} stored {role:<9} {name}  ({} bytes, resumed)", "file", s.size),
                (false, None, Some(n)) => format!("{:<9} store  {role:<9} {name}  ({n} bytes)", "file"),
                (false, None, None) => format!("{:<9} store  {role:<9} {name}", "file"),
            }
        }
        Record::Set(s) => set_line(s),
        Record::Check(c) => check_line(c),
        Record::End { records } => format!("# end, {records} records"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(mode_string(FileType::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(FileType::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(FileType::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(FileType::File, 0o2640), "-rw-r-S---");
    }

    #[test]
    fn times() {
        assert_eq!(utc(1795665570), "2026-11-26 03:59:30");
        assert_eq!(utc(0), "1970-01-01 00:00:00");
    }
}
