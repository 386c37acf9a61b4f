//! `--verify`: the restored tree compared with a local one, item by item
//! (type, mode, mtime, size, symlink target, device numbers; content with
//! `compare_data`), streaming, without writing anything but temporary files
//! for files stored as deltas.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Content, Reporter, Target};
use crate::dupfmt::index;
use crate::dupfmt::time::to_compact;
use crate::error::{Error, Result, content_error};
use crate::record::{Entry, FileType, PathBytes};

/// How one item of the backup differs from the local tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The item's path relative to the restored root (`.` for the root).
    pub path: PathBytes,
    /// What differs, one phrase each ("mode 0644 in the backup, 0600 locally").
    pub what: Vec<String>,
}

pub(crate) struct VerifyTarget<'a> {
    src: PathBuf,
    compare_data: bool,
    report: &'a mut dyn FnMut(&Difference),
}

impl<'a> VerifyTarget<'a> {
    pub fn new(src: PathBuf, compare_data: bool, report: &'a mut dyn FnMut(&Difference)) -> Self {
        VerifyTarget { src, compare_data, report }
    }
}

fn local_type(t: fs::FileType) -> FileType {
    if t.is_symlink() {
        FileType::Symlink
    } else if t.is_dir() {
        FileType::Dir
    } else if t.is_fifo() {
        FileType::Fifo
    } else if t.is_char_device() {
        FileType::Char
    } else if t.is_block_device() {
        FileType::Block
    } else if t.is_socket() {
        FileType::Socket
    } else {
        FileType::File
    }
}

impl VerifyTarget<'_> {
    /// The differences of one item; `Err` when it could not be compared.
    fn compare(&self, e: &Entry, content: Option<Content>, local: &Path) -> Result<Vec<String>> {
        let md = match fs::symlink_metadata(local) {
            Ok(md) => md,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(vec!["missing locally".into()]),
            Err(err) => return Err(Error::io(local.display(), err)),
        };
        let lt = local_type(md.file_type());
        if lt != e.ftype {
            return Ok(vec![format!("a {} in the backup, a {} locally", e.ftype.name(), lt.name())]);
        }
        let mut what = Vec::new();
        if e.ftype != FileType::Symlink {
            let mode = md.mode() & 0o7777;
            if mode != e.mode {
                what.push(format!("mode {:04o} in the backup, {mode:04o} locally", e.mode));
            }
            if md.mtime() != e.mtime {
                what.push(format!("mtime {} in the backup, {} locally", to_compact(e.mtime), to_compact(md.mtime())));
            }
        }
        match e.ftype {
            FileType::Symlink => {
                let t = fs::read_link(local).map_err(|err| Error::io(local.display(), err))?;
                let want = e.target.as_ref().map(|t| t.0.as_slice()).unwrap_or_default();
                if t.as_os_str().as_bytes() != want {
                    what.push(format!(
                        "points to {} in the backup, to {} locally",
                        PathBytes(want.to_vec()),
                        PathBytes(t.as_os_str().as_bytes().to_vec())
                    ));
                }
            }
            FileType::Char | FileType::Block => {
                let (major, minor) = (libc::major(md.rdev()), libc::minor(md.rdev()));
                if (Some(major), Some(minor)) != (e.devmajor, e.devminor) {
                    what.push(format!(
                        "device {},{} in the backup, {major},{minor} locally",
                        e.devmajor.unwrap_or(0),
                        e.devminor.unwrap_or(0)
                    ));
                }
            }
            FileType::File => {
                let mut c = content.ok_or_else(|| Error::other("a regular file without content"))?;
                let (size, same) = self.file(&mut c, local)?;
                if size != md.len() {
                    what.push(format!("{size} bytes in the backup, {} locally", md.len()));
                } else if same == Some(false) {
                    what.push("content differs".into());
                }
            }
            _ => {}
        }
        Ok(what)
    }

    /// The backed-up file's size, and (with `compare_data`) whether its
    /// content equals the local file's.
    fn file(&self, c: &mut Content, local: &Path) -> Result<(u64, Option<bool>)> {
        let staged;
        let mut r: Box<dyn Read + '_> = if c.diffs.is_empty() {
            Box::new(&mut c.base)
        } else {
            let temp = || crate::io::spool::temp_file().map_err(|e| Error::io("creating a temporary file", e));
            let (mut f, _) = c.apply(temp, |f| f, drop)?;
            super::sets::rewind(&mut f).map_err(|e| Error::io("reading a temporary file", e))?;
            staged = f;
            Box::new(&staged)
        };
        if !self.compare_data {
            let n = io::copy(&mut r, &mut io::sink()).map_err(|e| content_error("reading the backup", e))?;
            return Ok((n, None));
        }
        let mut f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(local)
            .map_err(|e| Error::io(local.display(), e))?;
        same_content(&mut r, &mut f, local)
    }
}

/// Reads `backup` to its end; returns its length and whether `local` holds
/// the same bytes.
fn same_content(backup: &mut dyn Read, local: &mut File, path: &Path) -> Result<(u64, Option<bool>)> {
    let mut a = vec![0u8; 64 << 10];
    let mut b = vec![0u8; 64 << 10];
    let mut n = 0u64;
    let mut same = true;
    loop {
        let got = backup.read(&mut a).map_err(|e| content_error("reading the backup", e))?;
        if got == 0 {
            break;
        }
        n += got as u64;
        if same {
            let mut filled = 0;
            while filled < got {
                match local.read(&mut b[filled..got]) {
                    Ok(0) => break,
                    Ok(k) => filled += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io(path.display(), e)),
                }
            }
            same = filled == got && a[..got] == b[..got];
        }
    }
    if same {
        let extra = local.read(&mut b[..1]).map_err(|e| Error::io(path.display(), e))?;
        same = extra == 0;
    }
    Ok((n, Some(same)))
}

impl Target for VerifyTarget<'_> {
    fn item(&mut self, entry: Entry, content: Option<Content<'_>>, rep: &Reporter) -> Result<()> {
        let local =
            if entry.path.0 == index::ROOT { self.src.clone() } else { self.src.join(OsStr::from_bytes(&entry.path)) };
        match self.compare(&entry, content, &local) {
            Ok(what) => {
                rep.item(&entry.path, 0);
                if !what.is_empty() {
                    rep.difference();
                    (self.report)(&Difference { path: entry.path.clone(), what });
                }
            }
            Err(e) => rep.item_problem(&entry.path, &e),
        }
        Ok(())
    }

    fn finish(&mut self, _: &Reporter) -> Result<()> {
        Ok(())
    }
}
