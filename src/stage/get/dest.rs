//! Writing a restored tree into a directory without ever leaving it.
//!
//! Every item is created relative to an open descriptor of its parent
//! directory (`*at` system calls). Parent directories are opened one
//! component at a time with `O_NOFOLLOW | O_DIRECTORY`, so a symlink (or a
//! file) where a directory should be is refused, whatever the archive
//! stored before. Items are created under a fresh temporary name
//! (`O_CREAT | O_EXCL | O_NOFOLLOW` for files), given their content and
//! metadata, then renamed into place; without `--force` the rename never
//! replaces anything (`RENAME_NOREPLACE`). Small files are written and
//! renamed by writer threads ([`super::writer`]). Directories get their
//! mode, owner and times when their contents are done.
//!
//! An OpenPGP volume is restored as it is decrypted, but its integrity
//! check (MDC) and signature come at its end: what is read from it stays
//! under its temporary name (and a directory's metadata unapplied) until
//! every volume it was read from is verified, and is removed if one of them
//! turns out damaged. Nothing unverified is ever renamed into place.

use std::collections::{HashMap, VecDeque};
use std::ffi::{CStr, CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::writer::{self, Done, Job, Writers};
use super::{Content, Reporter, Target, Trust, VolId, show};
use crate::dupfmt::index;
use crate::error::{Error, Kind, Result};
use crate::io::owners;
use crate::joblog::note;
use crate::record::{Entry, FileType};

/// An open directory of the tree being written, with the metadata it gets
/// when it is closed.
struct Level {
    /// Its name in its parent (empty for the destination itself).
    name: Vec<u8>,
    fd: Arc<OwnedFd>,
    meta: Option<Entry>,
    /// The volumes its entry was read from, when one is not verified yet.
    deps: Vec<VolId>,
}

/// Something restored from volumes not verified yet, waiting for them.
struct Pending {
    /// Its index below the destination (`.`: the destination itself).
    path: Vec<u8>,
    deps: Box<[VolId]>,
    what: Waiting,
}

impl Pending {
    fn comps(&self) -> Vec<&[u8]> {
        index::components(&self.path).collect()
    }
}

enum Waiting {
    /// A file, symlink, fifo or device under a temporary name in its directory.
    Item { tmp: CString, bytes: u64 },
    /// A directory's metadata, applied once what is in it is in place.
    DirMeta(Box<Entry>),
}

pub(crate) struct DirTarget {
    dest: PathBuf,
    force: bool,
    /// Set when running as root: ownership is restored.
    owners: Option<Owners>,
    /// The directory holding the destination, and the destination's name in it.
    parent: Option<OwnedFd>,
    dest_name: CString,
    /// The destination was a symlink before the run (the user's own): it
    /// may be followed. One the archive made never is.
    follow_dest: bool,
    /// The restored root was not a directory: nothing can go below it.
    root_is_file: bool,
    /// The open directories from the destination down to the current one.
    stack: Vec<Level>,
    tmp_counter: u64,
    /// Files whose setuid/setgid bits were not restored (not root).
    setid_dropped: u64,
    /// The destination directory, once open (for what waits in `pending`).
    root: Option<Arc<OwnedFd>>,
    /// What waits for its volumes, in the order restored.
    pending: VecDeque<Pending>,
    /// [`Reporter::generation`] when `pending` was last gone through.
    settled_at: u64,
    /// Directories open for committing `pending` (names below the destination).
    cursor: Vec<(Vec<u8>, Arc<OwnedFd>)>,
    /// Small files being written on other threads.
    writers: Writers,
    /// Directories whose metadata waits for the files being written.
    deferred: Vec<(Arc<OwnedFd>, Entry)>,
    /// A full or read-only file system, found by a writer thread.
    fatal: Option<Error>,
}

/// Directories whose metadata may wait for the writer threads.
const MAX_DEFERRED: usize = 64;

impl DirTarget {
    /// Checks the destination: it must be absent or an empty directory
    /// unless `force`. Nothing is created before the first item.
    pub fn new(dest: PathBuf, force: bool, numeric_owner: bool) -> Result<DirTarget> {
        let shown = dest.display().to_string();
        if !force {
            match fs::symlink_metadata(&dest) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&shown, e)),
                Ok(_) => {
                    let empty_dir = fs::read_dir(&dest).map(|mut d| d.next().is_none()).unwrap_or(false);
                    if !empty_dir {
                        return Err(Error::other(format!("{shown} already exists and is not an empty directory"))
                            .hint("restore into a new or empty directory, or pass --force to restore over it"));
                    }
                }
            }
        }
        let abs = std::path::absolute(&dest).map_err(|e| Error::io(&shown, e))?;
        let abs = match abs.file_name() {
            Some(_) if !abs.ends_with("..") => abs,
            _ => fs::canonicalize(&abs).map_err(|e| Error::io(&shown, e))?,
        };
        let name = abs
            .file_name()
            .ok_or_else(|| Error::usage(format!("{shown}: cannot restore onto /; name a directory below it")))?;
        let follow_dest = fs::symlink_metadata(&abs).is_ok_and(|m| m.file_type().is_symlink());
        let dest_name = CString::new(name.as_bytes()).map_err(|_| Error::usage("DEST holds a NUL byte"))?;
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        Ok(DirTarget {
            dest: abs,
            force,
            owners: root.then(|| Owners::new(numeric_owner)),
            parent: None,
            dest_name,
            follow_dest,
            root_is_file: false,
            stack: Vec::new(),
            tmp_counter: 0,
            setid_dropped: 0,
            root: None,
            pending: VecDeque::new(),
            settled_at: 0,
            cursor: Vec::new(),
            writers: Writers::new(),
            deferred: Vec::new(),
            fatal: None,
        })
    }

    /// The directory holding the destination (created if missing).
    fn parent_fd(&mut self) -> Result<RawFd> {
        if self.parent.is_none() {
            let p = self.dest.parent().unwrap_or(Path::new("/"));
            fs::create_dir_all(p).map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
            let c = CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::usage("DEST holds a NUL byte"))?;
            self.parent = Some(open_dir(libc::AT_FDCWD, &c, true).map_err(|e| Error::io(p.display(), e))?);
        }
        Ok(self.parent.as_ref().expect("opened above").as_raw_fd())
    }

    /// The local path of a relative index (for messages and tree removal).
    fn local(&self, rel: &[&[u8]]) -> PathBuf {
        let mut p = self.dest.clone();
        for c in rel {
            p.push(OsStr::from_bytes(c));
        }
        p
    }

    /// Closes open directories down to `depth` levels, giving each its
    /// metadata. A file system that takes no more writes ends the run.
    fn close_to(&mut self, depth: usize, rep: &Reporter) -> Result<()> {
        while self.stack.len() > depth {
            let path = join(&self.stack[1..].iter().map(|l| l.name.as_slice()).collect::<Vec<_>>());
            let mut lvl = self.stack.pop().expect("len > depth");
            let waits = rep.trust(&lvl.deps) != Trust::Verified
                || self.pending.back().is_some_and(|p| index::is_within(&p.path, &path));
            if waits && let Some(meta) = lvl.meta.take() {
                self.pending.push_back(Pending { path, deps: lvl.deps.into(), what: Waiting::DirMeta(Box::new(meta)) });
                continue;
            }
            if let Some(meta) = lvl.meta {
                if self.writers.busy() {
                    // Its files may still be being written (their times would change its mtime).
                    self.deferred.push((lvl.fd, meta));
                    if self.deferred.len() >= MAX_DEFERRED {
                        self.wait_writers(rep)?;
                    }
                    continue;
                }
                self.dir_meta(lvl.fd.as_raw_fd(), &meta, rep)?;
            }
        }
        Ok(())
    }

    /// Gives a directory its metadata.
    fn dir_meta(&mut self, fd: RawFd, meta: &Entry, rep: &Reporter) -> Result<()> {
        if let Err(e) = apply_fd(fd, meta, self.owners.as_mut()) {
            let what = format!("{}: setting the directory's metadata", self.local_index(&meta.path).display());
            let e = Error::io(what, e);
            if e.kind == Kind::Unwritable {
                return Err(e);
            }
            rep.item_problem(&meta.path, &e);
        }
        Ok(())
    }

    /// Counts or reports what the writer threads finished.
    fn take_done(&mut self, done: Vec<Done>, rep: &Reporter) {
        for d in done {
            match d.result {
                Ok(n) if d.installed => rep.item(&d.index, n),
                Ok(_) => {}
                Err(e) => {
                    if !d.installed {
                        // It was to wait for its volumes: it no longer does.
                        let at = self.pending.iter().rposition(|p| {
                            matches!(&p.what, Waiting::Item { tmp, .. } if *tmp == d.tmp) && p.path == d.index
                        });
                        if let Some(i) = at {
                            self.pending.remove(i);
                        }
                    }
                    let shown = self.local_index(&d.index).display().to_string();
                    if e.kind == Kind::Unwritable {
                        let e = if e.message.starts_with(&shown) { e } else { e.context(shown) };
                        self.fatal.get_or_insert(e);
                    } else {
                        rep.item_problem(&d.index, &e);
                    }
                }
            }
        }
    }

    /// Takes what the writer threads finished so far.
    fn poll_writers(&mut self, rep: &Reporter) -> Result<()> {
        let mut done = Vec::new();
        self.writers.collect(&mut |d| done.push(d));
        self.take_done(done, rep);
        self.fatal.take().map_or(Ok(()), Err)
    }

    /// Waits for the writer threads, then gives the directories that
    /// waited for them their metadata.
    fn wait_writers(&mut self, rep: &Reporter) -> Result<()> {
        let mut done = Vec::new();
        self.writers.wait(&mut |d| done.push(d));
        self.take_done(done, rep);
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        for (fd, meta) in std::mem::take(&mut self.deferred) {
            self.dir_meta(fd.as_raw_fd(), &meta, rep)?;
        }
        Ok(())
    }

    /// The local path of an index relative to the destination.
    fn local_index(&self, index: &[u8]) -> PathBuf {
        self.local(&index::components(index).collect::<Vec<_>>())
    }

    /// Makes the destination directory the bottom of the stack.
    fn open_dest(&mut self, meta: Option<Entry>, deps: Vec<VolId>) -> Result<()> {
        let parent = self.parent_fd()?;
        let name = self.dest_name.clone();
        let fd = self.make_dir(parent, &name, self.follow_dest, &[])?;
        self.root = Some(Arc::new(fd.try_clone().map_err(|e| Error::io(self.dest.display(), e))?));
        self.stack.push(Level { name: Vec::new(), fd: Arc::new(fd), meta, deps });
        Ok(())
    }

    /// Creates (or, when it is already a directory, reuses) the directory
    /// `name` in `dir` and opens it. `follow`: it may be reached through a
    /// symlink (the destination the user gave).
    fn make_dir(&self, dir: RawFd, name: &CStr, follow: bool, rel: &[&[u8]]) -> Result<OwnedFd> {
        let what = |e: io::Error| Error::io(self.local(rel).display(), e);
        // SAFETY: valid descriptor and NUL-terminated name.
        if unsafe { libc::mkdirat(dir, name.as_ptr(), 0o700) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(what(e));
            }
            match open_dir(dir, name, follow) {
                Ok(fd) => {
                    sweep_stale(fd.as_raw_fd(), &self.local(rel));
                    return Ok(fd);
                }
                Err(_) if self.force => {
                    remove_at(dir, name, &self.local(rel)).map_err(what)?;
                    // SAFETY: as above.
                    if unsafe { libc::mkdirat(dir, name.as_ptr(), 0o700) } != 0 {
                        return Err(what(io::Error::last_os_error()));
                    }
                }
                Err(_) => {
                    return Err(Error::other(format!(
                        "{} exists and is not a directory; not replaced",
                        self.local(rel).display()
                    ))
                    .hint("pass --force to replace what is in the way"));
                }
            }
        }
        open_dir(dir, name, follow).map_err(what)
    }

    /// Opens the parent directories of `comps` (creating missing ones), and
    /// returns the descriptor of the last. A component that is not a real
    /// directory (a symlink, a file) is refused.
    fn open_parents(&mut self, comps: &[&[u8]], rep: &Reporter) -> Result<Option<RawFd>> {
        let parent = &comps[..comps.len() - 1];
        // Keep the open levels that are a prefix of the parent path.
        let mut keep = 1;
        while keep < self.stack.len() && keep - 1 < parent.len() && self.stack[keep].name == parent[keep - 1] {
            keep += 1;
        }
        self.close_to(keep, rep)?;
        for i in self.stack.len() - 1..parent.len() {
            let c = cstring(parent[i])?;
            let top = self.stack.last().expect("the destination is open").fd.as_raw_fd();
            let mut opened = open_dir(top, &c, false);
            if opened.as_ref().is_err_and(|e| e.raw_os_error() == Some(libc::ENOENT)) && self.writers.busy() {
                // What is there may be a file still being written.
                self.wait_writers(rep)?;
                opened = open_dir(top, &c, false);
            }
            let fd = match opened {
                Ok(fd) => {
                    sweep_stale(fd.as_raw_fd(), &self.local(&parent[..=i]));
                    fd
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    // The directory's own entry was lost: make a plain one.
                    self.make_dir(top, &c, false, &parent[..=i])?
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                    rep.problem(
                        Kind::Corrupt,
                        format!(
                            "refused {}: {} is not a directory (a symlink?); writing through it could leave {}",
                            show(&comps.join(&b'/')),
                            show(&parent[..=i].join(&b'/')),
                            self.dest.display()
                        ),
                    );
                    return Ok(None);
                }
                Err(e) => return Err(Error::io(self.local(&parent[..=i]).display(), e)),
            };
            self.stack.push(Level { name: parent[i].to_vec(), fd: Arc::new(fd), meta: None, deps: Vec::new() });
        }
        Ok(Some(self.stack.last().expect("the destination is open").fd.as_raw_fd()))
    }

    /// A fresh temporary name in `dir`.
    fn tmp_name(&mut self) -> CString {
        self.tmp_counter += 1;
        CString::new(format!(".dup-get.{}.{}", std::process::id(), self.tmp_counter)).expect("no NUL in the name")
    }

    /// A new empty file under a temporary name in `dir`.
    fn create_tmp(&mut self, dir: RawFd) -> Result<(File, CString)> {
        loop {
            let name = self.tmp_name();
            let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            // SAFETY: valid descriptor and NUL-terminated name.
            let fd = unsafe { libc::openat(dir, name.as_ptr(), flags, 0o600 as libc::c_uint) };
            if fd >= 0 {
                // SAFETY: a descriptor we just opened and own.
                return Ok((unsafe { File::from_raw_fd(fd) }, name));
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(Error::io("creating a temporary file", e));
            }
        }
    }

    /// Writes a non-directory item at `name` in `dir`; `None` when it
    /// waits for its volumes to be verified.
    fn place(
        &mut self,
        dir: RawFd,
        name: &CStr,
        entry: &Entry,
        content: Option<Content>,
        rel: &[&[u8]],
        rep: &Reporter,
    ) -> Result<Option<u64>> {
        let mut bytes = 0;
        let tmp = match entry.ftype {
            FileType::File => {
                let mut content = content.ok_or_else(|| Error::other("a regular file without content"))?;
                let small = content.diffs.is_empty() && content.base_size.is_some_and(|n| n <= writer::SMALL);
                if small && !rel.is_empty() {
                    return self.hand_over(name, entry, content, rel, rep);
                }
                let ((file, tmp), size) =
                    content.apply(|| self.create_tmp(dir), |(f, _)| f, |(_, n)| unlink(dir, &n))?;
                bytes = size;
                if let Err(e) = apply_fd(file.as_raw_fd(), entry, self.owners.as_mut()) {
                    unlink(dir, &tmp);
                    return Err(Error::io("setting metadata", e));
                }
                tmp
            }
            FileType::Dir | FileType::Socket => {
                return Err(Error::other(format!("a {} cannot be placed here", entry.ftype.name())));
            }
            _ => {
                let tmp = self.tmp_name();
                if let Err(e) = make_special(dir, &tmp, entry) {
                    let device = matches!(entry.ftype, FileType::Char | FileType::Block);
                    if device && self.owners.is_none() && e.raw_os_error() == Some(libc::EPERM) {
                        return Err(Error::other(format!(
                            "a {} device node cannot be made when not running as root; not restored",
                            entry.ftype.name()
                        )));
                    }
                    return Err(Error::io(format!("creating the {}", entry.ftype.name()), e));
                }
                if let Err(e) = apply_at(dir, &tmp, entry, self.owners.as_mut()) {
                    unlink(dir, &tmp);
                    return Err(Error::io("setting metadata", e));
                }
                tmp
            }
        };
        let deps = rep.unverified_deps();
        if !deps.is_empty() {
            self.pending.push_back(Pending { path: join(rel), deps: deps.into(), what: Waiting::Item { tmp, bytes } });
            rep.set_waiting(self.pending.len());
            return Ok(None);
        }
        if let Err(e) = self.install(dir, &tmp, name, rel) {
            unlink(dir, &tmp);
            return Err(e);
        }
        Ok(Some(bytes))
    }

    /// Reads a small file's content and hands it to the writer threads;
    /// it is counted when they are done with it (or, when it waits for its
    /// volumes, when it is put in place).
    fn hand_over(
        &mut self,
        name: &CStr,
        entry: &Entry,
        mut content: Content,
        rel: &[&[u8]],
        rep: &Reporter,
    ) -> Result<Option<u64>> {
        let mut data = Vec::with_capacity(content.base_size.unwrap_or(0) as usize);
        (&mut content.base)
            .take(writer::SMALL + 1)
            .read_to_end(&mut data)
            .map_err(|e| crate::error::content_error("reading the backup", e))?;
        let tmp = self.tmp_name();
        let deps = rep.unverified_deps();
        let index = join(rel);
        let job = Job {
            dir: self.stack.last().expect("the parents are open").fd.clone(),
            tmp: tmp.clone(),
            install: deps.is_empty().then(|| (name.to_owned(), self.force)),
            path: self.local(rel),
            index: index.clone(),
            owner: self.owners.as_mut().map(|o| o.ids(entry)),
            mode: entry.mode,
            mtime: entry.mtime,
            bytes: data.len() as u64,
            data: Some(data),
        };
        if !deps.is_empty() {
            let bytes = job.bytes;
            self.pending.push_back(Pending { path: index, deps: deps.into(), what: Waiting::Item { tmp, bytes } });
            rep.set_waiting(self.pending.len());
        }
        self.submit(job, rep).map(|()| None)
    }

    /// The directory at `comps` below the destination, opened one
    /// component at a time as [`DirTarget::open_parents`] does.
    fn dir_at(&mut self, comps: &[&[u8]]) -> Result<RawFd> {
        // The cursor (or the root) keeps the descriptor open.
        self.dir_arc(comps).map(|fd| fd.as_raw_fd())
    }

    /// [`DirTarget::dir_at`], shared.
    fn dir_arc(&mut self, comps: &[&[u8]]) -> Result<Arc<OwnedFd>> {
        let root = self.root.clone().ok_or_else(|| Error::other("the destination is not open"))?;
        let mut keep = 0;
        while keep < self.cursor.len() && keep < comps.len() && self.cursor[keep].0 == comps[keep] {
            keep += 1;
        }
        self.cursor.truncate(keep);
        for (i, c) in comps.iter().enumerate().skip(keep) {
            let top = self.cursor.last().map_or(root.as_raw_fd(), |(_, fd)| fd.as_raw_fd());
            let fd =
                open_dir(top, &cstring(c)?, false).map_err(|e| Error::io(self.local(&comps[..=i]).display(), e))?;
            self.cursor.push((c.to_vec(), Arc::new(fd)));
        }
        Ok(self.cursor.last().map_or(root, |(_, fd)| fd.clone()))
    }

    /// The directory holding `comps` and its name there.
    fn parent_of(&mut self, comps: &[&[u8]]) -> Result<(RawFd, CString)> {
        match comps.split_last() {
            None => Ok((self.parent_fd()?, self.dest_name.clone())),
            Some((last, parent)) => Ok((self.dir_at(parent)?, cstring(last)?)),
        }
    }

    /// Puts in place what waits for volumes that are now verified, and
    /// removes what came from volumes that turned out damaged. `all`:
    /// every stream has ended, so nothing is left waiting.
    fn settle(&mut self, rep: &Reporter, all: bool) -> Result<()> {
        if self.pending.is_empty() || (!all && rep.generation() == self.settled_at) {
            return Ok(());
        }
        self.settled_at = rep.generation();
        // What waits may still be being written.
        self.wait_writers(rep)?;
        // Directories may have been replaced (--force) since the last time.
        self.cursor.clear();
        let mut kept: VecDeque<Pending> = VecDeque::new();
        // Verified directories' metadata, given once their files are renamed.
        let mut dirs = Vec::new();
        while let Some(p) = self.pending.pop_front() {
            let trust = match rep.trust(&p.deps) {
                Trust::Pending if all => Trust::Lost,
                t => t,
            };
            match trust {
                Trust::Pending => kept.push_back(p),
                Trust::Lost => {
                    if all && rep.trust(&p.deps) == Trust::Pending {
                        rep.problem(
                            Kind::Corrupt,
                            format!("{}: not restored: its volume was not read to its end", show(&p.path)),
                        );
                    }
                    if matches!(p.what, Waiting::DirMeta(_)) {
                        // Removed when empty: nothing of it may be being renamed.
                        self.wait_writers(rep)?;
                    }
                    self.discard(p);
                }
                Trust::Verified => {
                    let inside = kept.back().is_some_and(|k| index::is_within(&k.path, &p.path));
                    match p.what {
                        Waiting::DirMeta(_) if inside => kept.push_back(p),
                        Waiting::DirMeta(_) => dirs.push(p),
                        Waiting::Item { .. } if p.path != index::ROOT => self.hand_rename(p, rep)?,
                        Waiting::Item { .. } => self.commit(p, rep)?,
                    }
                }
            }
        }
        self.wait_writers(rep)?;
        for p in dirs {
            self.commit(p, rep)?;
        }
        self.pending = kept;
        self.cursor.clear();
        rep.set_waiting(self.pending.len());
        Ok(())
    }

    /// Hands a verified item to the writer threads to be renamed into place.
    fn hand_rename(&mut self, p: Pending, rep: &Reporter) -> Result<()> {
        let Pending { path, what: Waiting::Item { tmp, bytes }, .. } = p else {
            return Err(Error::other("not an item"));
        };
        let rel: Vec<&[u8]> = index::components(&path).collect();
        let (last, parent) = rel.split_last().expect("not the root");
        let dir = match self.dir_arc(parent) {
            Ok(d) => d,
            Err(e) if e.kind == Kind::Unwritable => return Err(e),
            Err(e) => {
                rep.item_problem(&path, &e);
                return Ok(());
            }
        };
        let job = Job {
            dir,
            tmp,
            install: Some((cstring(last)?, self.force)),
            path: self.local(&rel),
            index: path.clone(),
            data: None,
            bytes,
            owner: None,
            mode: 0,
            mtime: 0,
        };
        self.submit(job, rep)
    }

    /// Hands a job to the writer threads (or runs it here without them).
    fn submit(&mut self, job: Job, rep: &Reporter) -> Result<()> {
        let mut done = Vec::new();
        self.writers.submit(job, &mut |d| done.push(d));
        self.take_done(done, rep);
        self.fatal.take().map_or(Ok(()), Err)
    }

    /// Puts a verified item in place (or gives a directory its metadata).
    fn commit(&mut self, p: Pending, rep: &Reporter) -> Result<()> {
        let rel = p.comps();
        let done = match &p.what {
            Waiting::Item { tmp, bytes } => self.parent_of(&rel).and_then(|(dir, name)| {
                self.install(dir, tmp, &name, &rel).inspect_err(|_| unlink(dir, tmp)).map(|()| Some(*bytes))
            }),
            Waiting::DirMeta(meta) => self.dir_at(&rel).and_then(|fd| {
                apply_fd(fd, meta, self.owners.as_mut()).map(|()| None).map_err(|e| {
                    Error::io(format!("{}: setting the directory's metadata", self.local(&rel).display()), e)
                })
            }),
        };
        match done {
            Ok(Some(bytes)) => rep.item(&p.path, bytes),
            Ok(None) => {}
            Err(e) if e.kind == Kind::Unwritable => return Err(e),
            Err(e) => rep.item_problem(&p.path, &e),
        }
        Ok(())
    }

    /// Removes what was restored from a damaged volume: an item's
    /// temporary file, a directory that is left empty (what was in it
    /// comes before it and is gone).
    fn discard(&mut self, p: Pending) {
        log::debug!("{}: not restored: read from a damaged volume", show(&p.path));
        let rel = p.comps();
        match &p.what {
            Waiting::Item { tmp, .. } => {
                if let Ok((dir, _)) = self.parent_of(&rel) {
                    unlink(dir, tmp);
                }
            }
            Waiting::DirMeta(_) if !rel.is_empty() => {
                self.cursor.clear();
                if let Ok((dir, name)) = self.parent_of(&rel) {
                    // SAFETY: valid descriptor and NUL-terminated name; fails on a non-empty directory.
                    unsafe { libc::unlinkat(dir, name.as_ptr(), libc::AT_REMOVEDIR) };
                }
            }
            Waiting::DirMeta(_) => {}
        }
    }

    /// Renames `tmp` to `name`; replaces what is there only with --force (or
    /// an empty directory that is the destination itself).
    fn install(&mut self, dir: RawFd, tmp: &CStr, name: &CStr, rel: &[&[u8]]) -> Result<()> {
        install_at(dir, tmp, name, &self.local(rel), self.force, rel.is_empty())
    }

    /// Restores one item; `None` when it was refused (and reported).
    fn item_inner(&mut self, mut entry: Entry, content: Option<Content>, rep: &Reporter) -> Result<Option<u64>> {
        if self.owners.is_none() && entry.ftype != FileType::Dir && entry.mode & 0o6000 != 0 {
            // Without root the file is the user's, not its stored owner's:
            // setuid/setgid would hand the user's rights to whoever runs it.
            entry.mode &= !0o6000;
            self.setid_dropped += 1;
            if self.setid_dropped == 1 {
                note!(
                    log::Level::Warn,
                    "{}: setuid/setgid bits not restored (not running as root, the file is not its stored \
                     owner's); further such files are counted at the end",
                    show(&entry.path)
                );
            }
        }
        let comps: Vec<&[u8]> = index::components(&entry.path).collect();
        let Some((last, _)) = comps.split_last() else {
            // The restored root: the destination itself.
            if entry.ftype == FileType::Dir {
                return self.open_dest(Some(entry.clone()), rep.unverified_deps()).map(|_| Some(0));
            }
            let parent = self.parent_fd()?;
            let name = self.dest_name.clone();
            self.root_is_file = true;
            return self.place(parent, &name, &entry, content, &[], rep);
        };
        if self.root_is_file {
            rep.problem(Kind::Corrupt, format!("refused {}: the restored root is not a directory", show(&entry.path)));
            return Ok(None);
        }
        if self.stack.is_empty() {
            // The root's own entry was lost or refused.
            self.open_dest(None, Vec::new())?;
        }
        let Some(dir) = self.open_parents(&comps, rep)? else {
            return Ok(None);
        };
        let name = cstring(last)?;
        if entry.ftype == FileType::Dir {
            let fd = self.make_dir(dir, &name, false, &comps)?;
            let deps = rep.unverified_deps();
            self.stack.push(Level { name: last.to_vec(), fd: Arc::new(fd), meta: Some(entry.clone()), deps });
            return Ok(Some(0));
        }
        self.place(dir, &name, &entry, content, &comps, rep)
    }
}

impl Target for DirTarget {
    fn item(&mut self, entry: Entry, content: Option<Content<'_>>, rep: &Reporter) -> Result<()> {
        self.poll_writers(rep)?;
        self.settle(rep, false)?;
        let path = entry.path.0.clone();
        match self.item_inner(entry, content, rep) {
            Ok(Some(n)) => rep.item(&path, n),
            Ok(None) => {}
            // A full or read-only file system: every later item would fail too.
            Err(e) if e.kind == Kind::Unwritable => {
                let shown = self.local_index(&path).display().to_string();
                return Err(if e.message.starts_with(&shown) { e } else { e.context(shown) });
            }
            Err(e) => rep.item_problem(&path, &e),
        }
        Ok(())
    }

    fn finish(&mut self, rep: &Reporter) -> Result<()> {
        if self.setid_dropped > 1 {
            note!(
                log::Level::Warn,
                "setuid/setgid bits not restored on {} files (not running as root)",
                self.setid_dropped
            );
        }
        self.close_to(0, rep)?;
        self.wait_writers(rep)?;
        self.settle(rep, true)
    }
}

impl Drop for DirTarget {
    /// A run that stopped early leaves nothing under a temporary name.
    fn drop(&mut self) {
        self.writers.wait(&mut |_| {});
        self.cursor.clear();
        while let Some(p) = self.pending.pop_front() {
            self.discard(p);
        }
    }
}

/// An index from its components (`.` for none).
fn join(comps: &[&[u8]]) -> Vec<u8> {
    if comps.is_empty() { index::ROOT.to_vec() } else { comps.join(&b'/') }
}

fn cstring(b: &[u8]) -> Result<CString> {
    // The item's path is given with the message (Reporter::item_problem).
    CString::new(b).map_err(|_| Error::corrupt("a name with a NUL byte"))
}

/// Opens a directory; `follow`: a symlink to a directory is accepted.
fn open_dir(dir: RawFd, name: &CStr, follow: bool) -> io::Result<OwnedFd> {
    let mut flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    // SAFETY: valid descriptor and NUL-terminated name.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened and own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes from `dir` the temporary files of dup-get processes that are no
/// longer alive (`.dup-get.PID.N`, left by a killed restore). `path` is
/// the directory, for the message.
fn sweep_stale(dir: RawFd, path: &Path) {
    // SAFETY: dup of a descriptor we own; fdopendir takes the copy.
    let d = unsafe { libc::fdopendir(libc::fcntl(dir, libc::F_DUPFD_CLOEXEC, 0)) };
    if d.is_null() {
        return;
    }
    let mut stale = Vec::new();
    loop {
        // SAFETY: `d` is an open directory stream.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: readdir returns a valid entry with a NUL-terminated name.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if let Some(pid) = stale_pid(name.to_bytes())
            // SAFETY: signal 0 only asks whether the process exists.
            && unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        {
            stale.push(name.to_owned());
        }
    }
    // SAFETY: closes the stream (and the copied descriptor).
    unsafe { libc::closedir(d) };
    for name in stale {
        // SAFETY: valid descriptor and NUL-terminated name.
        if unsafe { libc::unlinkat(dir, name.as_ptr(), 0) } == 0 {
            note!(
                log::Level::Info,
                "removed {}, left by a restore that was stopped",
                path.join(OsStr::from_bytes(name.to_bytes())).display()
            );
        }
    }
}

/// The process id in a temporary name of ours (`.dup-get.PID.N`).
fn stale_pid(name: &[u8]) -> Option<i32> {
    let rest = name.strip_prefix(b".dup-get.")?;
    let (pid, n) = std::str::from_utf8(rest).ok()?.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok().filter(|&p: &i32| p > 0)
}

/// Renames `tmp` to `name` in `dir`; replaces what is there only when
/// `force` (or, for the destination itself, an empty directory). `path`
/// is the place, for messages.
pub(super) fn install_at(dir: RawFd, tmp: &CStr, name: &CStr, path: &Path, force: bool, is_dest: bool) -> Result<()> {
    let what = |e: io::Error| Error::io(path.display(), e);
    let first = rename(dir, tmp, name, !force);
    let Err(e) = first else { return Ok(()) };
    let exists = matches!(
        e.raw_os_error(),
        Some(libc::EEXIST) | Some(libc::EISDIR) | Some(libc::ENOTEMPTY) | Some(libc::ENOTDIR)
    );
    if !exists {
        return Err(what(e));
    }
    if force {
        remove_at(dir, name, path).map_err(what)?;
    } else if is_dest {
        // The destination: an empty directory may be replaced by the item.
        // SAFETY: valid descriptor and NUL-terminated name.
        if unsafe { libc::unlinkat(dir, name.as_ptr(), libc::AT_REMOVEDIR) } != 0 {
            return Err(what(io::Error::last_os_error()));
        }
    } else {
        return Err(Error::other(format!("{} already exists; not replaced", path.display()))
            .hint("pass --force to replace what is in the way"));
    }
    rename(dir, tmp, name, false).map_err(what)
}

pub(super) fn unlink(dir: RawFd, name: &CStr) {
    // SAFETY: valid descriptor and NUL-terminated name.
    unsafe { libc::unlinkat(dir, name.as_ptr(), 0) };
}

/// Removes whatever is at `name` in `dir` (a whole tree for a directory;
/// symlinks are removed, never followed). `path` is the same place by path.
fn remove_at(dir: RawFd, name: &CStr, path: &Path) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated name.
    if unsafe { libc::unlinkat(dir, name.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EISDIR) | Some(libc::EPERM) => fs::remove_dir_all(path),
        Some(libc::ENOENT) => Ok(()),
        _ => Err(e),
    }
}

/// `renameat`, or `renameat2(RENAME_NOREPLACE)` when `noreplace`.
fn rename(dir: RawFd, from: &CStr, to: &CStr, noreplace: bool) -> io::Result<()> {
    if noreplace {
        // SAFETY: valid descriptors and NUL-terminated names.
        let r = unsafe { libc::renameat2(dir, from.as_ptr(), dir, to.as_ptr(), libc::RENAME_NOREPLACE) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
            return Err(e);
        }
        // A file system without RENAME_NOREPLACE: check, then rename.
        // SAFETY: an all-zero stat is valid; fstatat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, name and buffer.
        if unsafe { libc::fstatat(dir, to.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } == 0 {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
    }
    // SAFETY: valid descriptors and NUL-terminated names.
    if unsafe { libc::renameat(dir, from.as_ptr(), dir, to.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates a symlink, fifo or device node `name` in `dir`.
fn make_special(dir: RawFd, name: &CStr, e: &Entry) -> io::Result<()> {
    // SAFETY (all three): valid descriptor and NUL-terminated strings.
    let r = match e.ftype {
        FileType::Symlink => {
            let target = e.target.as_ref().map(|t| t.0.clone()).unwrap_or_default();
            let t = CString::new(target)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a symlink target with a NUL byte"))?;
            unsafe { libc::symlinkat(t.as_ptr(), dir, name.as_ptr()) }
        }
        FileType::Fifo => unsafe { libc::mknodat(dir, name.as_ptr(), libc::S_IFIFO | 0o600, 0) },
        FileType::Char | FileType::Block => {
            let kind = if e.ftype == FileType::Char { libc::S_IFCHR } else { libc::S_IFBLK };
            let dev = libc::makedev(e.devmajor.unwrap_or(0), e.devminor.unwrap_or(0));
            unsafe { libc::mknodat(dir, name.as_ptr(), kind | 0o600, dev) }
        }
        _ => return Err(io::Error::other("not a special file")),
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn times(mtime: i64) -> [libc::timespec; 2] {
    [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
        libc::timespec { tv_sec: mtime as libc::time_t, tv_nsec: 0 },
    ]
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Owner (as root), mode and mtime of an open file or directory.
fn apply_fd(fd: RawFd, e: &Entry, owners: Option<&mut Owners>) -> io::Result<()> {
    apply_ids(fd, owners.map(|o| o.ids(e)), e.mode, e.mtime)
}

/// Owner (when given), mode and mtime of an open file or directory.
pub(super) fn apply_ids(fd: RawFd, owner: Option<(u32, u32)>, mode: u32, mtime: i64) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        // SAFETY: fchown on a descriptor we own.
        check(unsafe { libc::fchown(fd, uid, gid) })?;
    }
    // SAFETY: plain system calls on a descriptor we own.
    check(unsafe { libc::fchmod(fd, (mode & 0o7777) as libc::mode_t) })?;
    let ts = times(mtime);
    check(unsafe { libc::futimens(fd, ts.as_ptr()) })
}

/// Owner (as root), mode (not for symlinks) and mtime of `name` in `dir`,
/// never following a symlink.
fn apply_at(dir: RawFd, name: &CStr, e: &Entry, owners: Option<&mut Owners>) -> io::Result<()> {
    if let Some(o) = owners {
        let (uid, gid) = o.ids(e);
        // SAFETY: valid descriptor and NUL-terminated name.
        check(unsafe { libc::fchownat(dir, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })?;
    }
    if e.ftype != FileType::Symlink {
        // The name is the temporary one just made (a fifo or device): no symlink to follow.
        // SAFETY: valid descriptor and NUL-terminated name.
        check(unsafe { libc::fchmodat(dir, name.as_ptr(), (e.mode & 0o7777) as libc::mode_t, 0) })?;
    }
    let ts = times(e.mtime);
    // SAFETY: valid descriptor, name and times.
    check(unsafe { libc::utimensat(dir, name.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

/// User and group names resolved locally (cached), else the stored ids.
struct Owners {
    numeric: bool,
    users: HashMap<String, Option<u32>>,
    groups: HashMap<String, Option<u32>>,
}

impl Owners {
    fn new(numeric: bool) -> Owners {
        Owners { numeric, users: HashMap::new(), groups: HashMap::new() }
    }

    fn ids(&mut self, e: &Entry) -> (u32, u32) {
        if self.numeric {
            return (e.uid, e.gid);
        }
        let uid = match e.uname.as_str() {
            "" => None,
            n => *self.users.entry(n.to_string()).or_insert_with(|| owners::user_id(n)),
        };
        let gid = match e.gname.as_str() {
            "" => None,
            n => *self.groups.entry(n.to_string()).or_insert_with(|| owners::group_id(n)),
        };
        (uid.unwrap_or(e.uid), gid.unwrap_or(e.gid))
    }
}
