//! Walking a source tree the way duplicity 0.8 does: depth first, each
//! directory's names sorted as bytes (so paths come in duplicity's order,
//! FORMAT-duplicity.md §3.6), with duplicity's selection ([`select`]).
//!
//! Each directory is read once: its names are listed and sorted, each is
//! lstat'ed relative to the open directory, and the directory is closed. The
//! walk keeps a stack of these listings, one per level, so memory follows the
//! depth of the tree and its largest directory, not its size; the buffers
//! are reused from one directory to the next.
//!
//! As duplicity: the root is always emitted (as `.`), symbolic links are
//! not followed (not even the root), sockets are skipped, and regular files
//! and directories that cannot be read are skipped with a warning.

pub mod select;

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int};
use std::io;
use std::os::unix::ffi::OsStrExt;

use self::select::{Candidate, Root, Selection, Verdict};
use crate::dupfmt::index;
use crate::error::{Error, Result};
use crate::io::owners;
use crate::joblog::note;
use crate::record::{Entry, FileType, PathBytes, Record};

/// What a walk emitted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub entries: u64,
    /// Items skipped because they could not be read.
    pub warnings: u64,
}

/// The root of a walk.
pub struct Source {
    /// Duplicity's name for it ([`select::canonical`]).
    name: Vec<u8>,
    meta: Meta,
    ftype: FileType,
    target: Option<Vec<u8>>,
}

impl Source {
    /// Looks at `src` without following a final symbolic link.
    pub fn open(src: &[u8]) -> Result<Source> {
        let name = select::canonical(src);
        let shown = PathBytes(name.clone());
        let mut cbuf = Vec::new();
        let cname = c_path(&mut cbuf, &name).map_err(|e| Error::io(&shown, e))?;
        // SAFETY: `st` is written by lstat before it is read.
        let st = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::lstat(cname.as_ptr(), &mut st) != 0 {
                let e = io::Error::last_os_error();
                return Err(Error::io(&shown, e).hint("give an existing directory to back up"));
            }
            st
        };
        let meta = Meta::from_stat(&st);
        let ftype = meta.ftype().ok_or_else(|| Error::usage(format!("{shown}: a socket cannot be backed up")))?;
        let target = if ftype == FileType::Symlink {
            note!(
                log::Level::Warn,
                "{shown} is a symbolic link: only the link is listed (give the directory it points to)"
            );
            let t = std::fs::read_link(std::ffi::OsStr::from_bytes(&name)).map_err(|e| Error::io(&shown, e))?;
            Some(t.into_os_string().into_encoded_bytes())
        } else {
            None
        };
        Ok(Source { name, meta, ftype, target })
    }

    /// The source directory as duplicity names it (its manifests' `Localdir`).
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The root as the selection sees it.
    pub fn root(&self) -> Root<'_> {
        Root { path: &self.name, ftype: self.ftype, dev: self.meta.dev }
    }
}

/// Walks `src`, passing `out` an `entry` record for each selected item in
/// duplicity's order, and a `warning` record for each item skipped because
/// it could not be read (also logged). Stops at the first error of `out`.
pub fn walk(src: &Source, sel: &Selection, out: impl FnMut(&Record) -> Result<()>) -> Result<Summary> {
    walk_with(src, sel, Emitter::new(out))
}

/// How long [`walk_counted`] waits for its count before it starts the walk:
/// a small tree gets its total first, a large one while it is walked.
const COUNT_HEAD_START: std::time::Duration = std::time::Duration::from_millis(300);

/// Like [`walk`], with a `total` record (the count of the entries and of the
/// regular files' bytes it will write) as soon as a second, quiet walk made
/// alongside has counted them: a progress bar's total without a pass before.
pub fn walk_counted(src: &Source, sel: &Selection, mut out: impl FnMut(&Record) -> Result<()>) -> Result<Summary> {
    use std::sync::mpsc;
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(move || {
            let (mut files, mut bytes) = (0u64, 0u64);
            let counted = walk_with(
                src,
                sel,
                Emitter::quiet(|r: &Record| {
                    if let Record::Entry(e) = r {
                        files += 1;
                        if e.ftype == FileType::File {
                            bytes += e.size;
                        }
                    }
                    Ok(())
                }),
            );
            let _ = tx.send(counted.map(|_| Record::Total { files, bytes }));
        });
        let mut total = rx.recv_timeout(COUNT_HEAD_START).ok();
        let mut pending = true;
        walk(src, sel, |rec| {
            if pending {
                if total.is_none() {
                    total = rx.try_recv().ok();
                }
                if let Some(t) = total.take() {
                    pending = false;
                    // A count that failed gives no total; the walk says why.
                    if let Ok(t) = t {
                        out(&t)?;
                    }
                }
            }
            out(rec)
        })
    })
}

fn walk_with<F: FnMut(&Record) -> Result<()>>(src: &Source, sel: &Selection, mut emit: Emitter<F>) -> Result<Summary> {
    emit.entry(index::ROOT, &src.meta, src.ftype, src.target.as_deref())?;
    if src.ftype == FileType::Dir {
        Walker {
            sel,
            emit: &mut emit,
            full: src.name.clone(),
            index: Vec::new(),
            cbuf: Vec::new(),
            reader: Reader::current(),
        }
        .run()?;
    }
    Ok(emit.summary)
}

/// A file's metadata, as lstat gives it.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    /// `st_mtime` (rounded down) and its nanoseconds.
    mtime: i64,
    mtime_nsec: i64,
    rdev: u64,
    dev: u64,
    ino: u64,
    nlink: u64,
}

impl Meta {
    // The stat field types differ between targets.
    #[allow(clippy::unnecessary_cast)]
    fn from_stat(st: &libc::stat) -> Meta {
        Meta {
            mode: st.st_mode as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size.max(0) as u64,
            mtime: st.st_mtime as i64,
            mtime_nsec: st.st_mtime_nsec as i64,
            rdev: st.st_rdev as u64,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            nlink: st.st_nlink as u64,
        }
    }

    /// The type, or `None` for a socket (or an unknown type): not stored.
    fn ftype(&self) -> Option<FileType> {
        Some(match self.mode & libc::S_IFMT {
            libc::S_IFREG => FileType::File,
            libc::S_IFDIR => FileType::Dir,
            libc::S_IFLNK => FileType::Symlink,
            libc::S_IFIFO => FileType::Fifo,
            libc::S_IFCHR => FileType::Char,
            libc::S_IFBLK => FileType::Block,
            _ => return None,
        })
    }
}

/// One name in a directory listing.
#[derive(Debug, Clone, Copy)]
struct Child {
    /// Where the name is in [`Listing::names`] (a NUL follows it).
    name_at: u32,
    name_len: u32,
    /// Metadata, or the errno of lstat (or of readlink for a link).
    meta: std::result::Result<Meta, c_int>,
    /// A link's target in [`Listing::targets`].
    target_at: u32,
    target_len: u32,
    /// For a regular file: 0 when readable, else the errno of access(R_OK).
    unreadable: c_int,
}

/// A directory's sorted listing, and where the walk is in it.
#[derive(Default)]
struct Listing {
    names: Vec<u8>,
    targets: Vec<u8>,
    children: Vec<Child>,
    /// The next child to look at.
    next: usize,
    /// Lengths of this directory's full name and index in the walker's buffers.
    full_len: usize,
    index_len: usize,
    /// This directory's metadata, to emit it late when it was only scanned.
    meta: Option<Meta>,
}

/// `len` bytes at `at` in `buf`.
fn span(buf: &[u8], at: u32, len: u32) -> &[u8] {
    &buf[at as usize..(at + len) as usize]
}

impl Listing {
    fn name(&self, c: &Child) -> &[u8] {
        span(&self.names, c.name_at, c.name_len)
    }

    fn target(&self, c: &Child) -> &[u8] {
        span(&self.targets, c.target_at, c.target_len)
    }

    fn contains(&self, name: &[u8]) -> bool {
        self.children.binary_search_by(|c| self.name(c).cmp(name)).is_ok()
    }

    /// Reads the directory `path`: names sorted as bytes, each lstat'ed.
    fn read(&mut self, path: &CStr, reader: Reader) -> io::Result<()> {
        self.names.clear();
        self.targets.clear();
        self.children.clear();
        self.next = 0;
        let mut dir = Dir::open(path)?;
        while let Some(name) = dir.next_name()? {
            if name == b"." || name == b".." {
                continue;
            }
            let name_at =
                u32::try_from(self.names.len()).map_err(|_| io::Error::other("directory listing too large"))?;
            self.names.extend_from_slice(name);
            self.names.push(0);
            self.children.push(Child {
                name_at,
                name_len: name.len() as u32,
                meta: Err(0),
                target_at: 0,
                target_len: 0,
                unreadable: 0,
            });
        }
        let names = &self.names;
        self.children
            .sort_unstable_by(|a, b| span(names, a.name_at, a.name_len).cmp(span(names, b.name_at, b.name_len)));
        for c in &mut self.children {
            // SAFETY: the name is NUL-terminated in `names`, which is not
            // modified while the pointer is used.
            let cname = unsafe { CStr::from_ptr(names.as_ptr().add(c.name_at as usize).cast()) };
            c.meta = dir.lstat(cname);
            match c.meta.map(|m| (m, m.ftype())) {
                Ok((m, Some(FileType::Symlink))) => {
                    let at = self.targets.len();
                    match dir.read_link(cname, m.size, &mut self.targets) {
                        Ok(()) => {
                            c.target_at = at as u32;
                            c.target_len = (self.targets.len() - at) as u32;
                        }
                        Err(e) => c.meta = Err(e),
                    }
                }
                Ok((m, Some(FileType::File))) => c.unreadable = reader.check(&dir, cname, &m),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Who runs the walk: tells which regular files access(2) must be asked
/// about (duplicity skips those the real user cannot read). The shortcuts
/// ignore what only the file system or a security module would refuse,
/// which the reader of the file copes with anyway (a file can also change
/// between the walk and its reading).
#[derive(Debug, Clone, Copy)]
enum Reader {
    /// Real uid 0 with a capability to read any file.
    Privileged,
    /// The files of this real uid are readable when their owner may read them.
    User(u32),
}

impl Reader {
    fn current() -> Reader {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        if uid == 0 && can_read_anything() { Reader::Privileged } else { Reader::User(uid) }
    }

    /// 0 when the regular file `name` in `dir`, of metadata `m`, can be read; else an errno.
    fn check(self, dir: &Dir, name: &CStr, m: &Meta) -> c_int {
        match self {
            Reader::Privileged => 0,
            Reader::User(uid) if m.uid == uid => {
                if m.mode & 0o400 != 0 {
                    0
                } else {
                    libc::EACCES
                }
            }
            Reader::User(_) => dir.access_read(name),
        }
    }
}

/// Whether the permitted capabilities (which access(2) uses for root)
/// include CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH.
fn can_read_anything() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let caps = status.lines().find_map(|l| l.strip_prefix("CapPrm:"));
    caps.and_then(|v| u64::from_str_radix(v.trim(), 16).ok()).is_some_and(|c| c & (1 << 1 | 1 << 2) != 0)
}

/// An open directory (closed on drop).
struct Dir(*mut libc::DIR);

impl Dir {
    fn open(path: &CStr) -> io::Result<Dir> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: plain system calls on a NUL-terminated path; the fd is
        // owned by the DIR (or closed here when fdopendir fails).
        unsafe {
            let fd = libc::open(path.as_ptr(), flags);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let dir = libc::fdopendir(fd);
            if dir.is_null() {
                let e = io::Error::last_os_error();
                libc::close(fd);
                return Err(e);
            }
            Ok(Dir(dir))
        }
    }

    fn fd(&self) -> c_int {
        // SAFETY: self.0 is an open DIR.
        unsafe { libc::dirfd(self.0) }
    }

    /// The next name (`None` at the end).
    fn next_name(&mut self) -> io::Result<Option<&[u8]>> {
        // SAFETY: self.0 is an open DIR; the entry readdir returns stays
        // valid until the next readdir, which `&mut self` orders after the
        // returned borrow.
        unsafe {
            set_errno(0);
            let ent = libc::readdir(self.0);
            if ent.is_null() {
                let e = io::Error::last_os_error();
                return if e.raw_os_error() == Some(0) { Ok(None) } else { Err(e) };
            }
            Ok(Some(CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes()))
        }
    }

    fn lstat(&self, name: &CStr) -> std::result::Result<Meta, c_int> {
        // SAFETY: `st` is written by fstatat before it is read.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstatat(self.fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) != 0 {
                return Err(errno());
            }
            Ok(Meta::from_stat(&st))
        }
    }

    /// Appends the target of link `name` (of lstat size `hint`) to `out`.
    fn read_link(&self, name: &CStr, hint: u64, out: &mut Vec<u8>) -> std::result::Result<(), c_int> {
        let start = out.len();
        let mut room = (hint as usize).clamp(64, 1 << 16) + 1;
        loop {
            out.resize(start + room, 0);
            // SAFETY: the buffer has `room` writable bytes at `start`.
            let n = unsafe {
                libc::readlinkat(self.fd(), name.as_ptr(), out.as_mut_ptr().add(start).cast::<c_char>(), room)
            };
            if n < 0 {
                out.truncate(start);
                return Err(errno());
            }
            if (n as usize) < room {
                out.truncate(start + n as usize);
                return Ok(());
            }
            room *= 2;
        }
    }

    /// 0 when `name` can be read by the real user (as duplicity checks), else the errno.
    fn access_read(&self, name: &CStr) -> c_int {
        // SAFETY: plain system call on a NUL-terminated name.
        if unsafe { libc::faccessat(self.fd(), name.as_ptr(), libc::R_OK, 0) } == 0 { 0 } else { errno() }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: self.0 is an open DIR, closed once.
        unsafe { libc::closedir(self.0) };
    }
}

fn errno() -> c_int {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

fn set_errno(v: c_int) {
    // SAFETY: the thread's errno location is always valid.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    unsafe {
        *libc::__errno_location() = v
    };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    unsafe {
        *libc::__error() = v
    };
}

/// `path` as a C string in `buf`.
fn c_path<'b>(buf: &'b mut Vec<u8>, path: &[u8]) -> io::Result<&'b CStr> {
    buf.clear();
    buf.extend_from_slice(path);
    buf.push(0);
    CStr::from_bytes_with_nul(buf).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))
}

/// The walk over the directories below the root.
struct Walker<'a, F> {
    sel: &'a Selection,
    emit: &'a mut Emitter<F>,
    /// Full name of the current item as duplicity names it (root name + `/` + index).
    full: Vec<u8>,
    /// Index of the current item (empty at the root).
    index: Vec<u8>,
    cbuf: Vec<u8>,
    reader: Reader,
}

impl<F: FnMut(&Record) -> Result<()>> Walker<'_, F> {
    fn run(mut self) -> Result<()> {
        let mut levels = vec![Listing { full_len: self.full.len(), ..Listing::default() }];
        if let Err(e) = self.list(&mut levels[0]) {
            self.emit.warning(index::ROOT, &self.full, format!("cannot list the directory: {e}"))?;
        }
        let mut depth = 0;
        // The first of the directories being scanned (levels pending..=depth)
        // that are not emitted yet: they are, before anything found inside.
        let mut pending: Option<usize> = None;
        loop {
            if levels.len() == depth + 1 {
                levels.push(Listing::default());
            }
            let (upper, lower) = levels.split_at_mut(depth + 1);
            let lvl = &mut upper[depth];
            let Some(&child) = lvl.children.get(lvl.next) else {
                if depth == 0 {
                    return Ok(());
                }
                if pending == Some(depth) {
                    pending = None;
                }
                depth -= 1;
                continue;
            };
            lvl.next += 1;
            let lvl = &upper[depth];
            self.set_path(lvl, lvl.name(&child));
            let meta = match child.meta {
                Ok(m) => m,
                Err(libc::ENOENT) => {
                    if !self.emit.quiet {
                        note!(log::Level::Info, "{} vanished during the walk", PathBytes(self.full.clone()));
                    }
                    continue;
                }
                Err(e) => {
                    let msg = format!("cannot read its metadata: {}", io::Error::from_raw_os_error(e));
                    self.emit.warning(&self.index, &self.full, msg)?;
                    continue;
                }
            };
            let Some(ftype) = meta.ftype() else {
                if !self.emit.quiet {
                    note!(log::Level::Info, "skipping socket {}", PathBytes(self.full.clone()));
                }
                continue;
            };
            let is_dir = ftype == FileType::Dir;
            let sub = &mut lower[0];
            // Read a directory's listing before selecting it only when a rule looks into it.
            let mut listed = None;
            let verdict = if self.sel.is_empty() {
                Verdict::Include
            } else {
                if is_dir && self.sel.needs_listing() {
                    listed = Some(self.list(sub));
                }
                let path = String::from_utf8_lossy(&self.full);
                let sub = &*sub;
                let contains = |name: &[u8]| listed.as_ref().and_then(|r| r.as_ref().ok()).map(|_| sub.contains(name));
                let c = Candidate { path: &path, ftype, dev: meta.dev, mtime: meta.mtime, contains: &contains };
                self.sel.select(&c)
            };
            if verdict == Verdict::Exclude || (verdict == Verdict::Scan && !is_dir) {
                continue;
            }
            if child.unreadable != 0 {
                let msg = format!("cannot be read: {}", io::Error::from_raw_os_error(child.unreadable));
                self.emit.warning(&self.index, &self.full, msg)?;
                continue;
            }
            if is_dir {
                let listed = match listed {
                    Some(r) => r,
                    None => self.list(sub),
                };
                if let Err(e) = listed {
                    self.emit.warning(&self.index, &self.full, format!("cannot list the directory: {e}"))?;
                    continue;
                }
                sub.full_len = self.full.len();
                sub.index_len = self.index.len();
                sub.meta = Some(meta);
            }
            if verdict == Verdict::Include {
                if let Some(first) = pending.take() {
                    for l in &upper[first..=depth] {
                        if let Some(m) = &l.meta {
                            self.emit.entry(&self.index[..l.index_len], m, FileType::Dir, None)?;
                        }
                    }
                }
                let target = (ftype == FileType::Symlink).then(|| upper[depth].target(&child));
                self.emit.entry(&self.index, &meta, ftype, target)?;
            }
            if is_dir {
                depth += 1;
                if verdict == Verdict::Scan && pending.is_none() {
                    pending = Some(depth);
                }
            }
        }
    }

    /// Reads the listing of the current item (a directory) into `into`.
    fn list(&mut self, into: &mut Listing) -> io::Result<()> {
        let path = c_path(&mut self.cbuf, &self.full)?;
        into.read(path, self.reader)
    }

    /// Points the path buffers at `name` in the directory of `lvl`.
    fn set_path(&mut self, lvl: &Listing, name: &[u8]) {
        self.full.truncate(lvl.full_len);
        if self.full.last() != Some(&b'/') {
            self.full.push(b'/');
        }
        self.full.extend_from_slice(name);
        self.index.truncate(lvl.index_len);
        if !self.index.is_empty() {
            self.index.push(b'/');
        }
        self.index.extend_from_slice(name);
    }
}

/// Writes entry and warning records, reusing one entry's buffers.
struct Emitter<F> {
    out: F,
    /// Log nothing (a count beside the real walk).
    quiet: bool,
    entry: Entry,
    owners: Owners,
    summary: Summary,
}

impl<F: FnMut(&Record) -> Result<()>> Emitter<F> {
    fn new(out: F) -> Self {
        Emitter {
            out,
            quiet: false,
            entry: Entry::new(Vec::new(), FileType::File),
            owners: Owners::default(),
            summary: Summary::default(),
        }
    }

    fn entry(&mut self, path: &[u8], m: &Meta, ftype: FileType, target: Option<&[u8]>) -> Result<()> {
        let e = &mut self.entry;
        e.path.0.clear();
        e.path.0.extend_from_slice(path);
        e.ftype = ftype;
        e.mode = m.mode & 0o7777;
        e.uid = m.uid;
        e.gid = m.gid;
        e.uname.clear();
        e.uname.push_str(self.owners.user(m.uid));
        e.gname.clear();
        e.gname.push_str(self.owners.group(m.gid));
        // Python's int(st_mtime), as duplicity: towards zero.
        e.mtime = if m.mtime < 0 && m.mtime_nsec > 0 { m.mtime + 1 } else { m.mtime };
        e.size = if ftype == FileType::File { m.size } else { 0 };
        e.target = target.map(|t| PathBytes(t.to_vec()));
        let dev = matches!(ftype, FileType::Char | FileType::Block);
        e.devmajor = dev.then(|| libc::major(m.rdev));
        e.devminor = dev.then(|| libc::minor(m.rdev));
        e.dev = m.dev;
        e.ino = m.ino;
        e.nlink = m.nlink;
        let rec = Record::Entry(std::mem::replace(&mut self.entry, Entry::new(Vec::new(), FileType::File)));
        let r = (self.out)(&rec);
        if let Record::Entry(e) = rec {
            self.entry = e;
        }
        self.summary.entries += 1;
        r
    }

    fn quiet(out: F) -> Self {
        Emitter { quiet: true, ..Emitter::new(out) }
    }

    fn warning(&mut self, path: &[u8], full: &[u8], message: String) -> Result<()> {
        if !self.quiet {
            note!(log::Level::Warn, "{}: {message}", PathBytes(full.to_vec()));
        }
        self.summary.warnings += 1;
        (self.out)(&Record::Warning { path: Some(PathBytes(path.to_vec())), message })
    }
}

/// User and group names by id, each looked up once.
#[derive(Default)]
struct Owners {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Owners {
    fn user(&mut self, uid: u32) -> &str {
        self.users.entry(uid).or_insert_with(|| owners::user_name(uid))
    }

    fn group(&mut self, gid: u32) -> &str {
        self.groups.entry(gid).or_insert_with(|| owners::group_name(gid))
    }
}
