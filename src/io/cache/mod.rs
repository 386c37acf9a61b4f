//! The local metadata cache, in duplicity's layout (FORMAT-duplicity.md
//! §1.8): `<archive-dir>/<name>/` holding plain manifests and
//! `.sigtar.gz` signatures, so `--archive-dir ~/.cache/duplicity` shares
//! duplicity's own cache.

pub mod index;
pub mod journal;
pub mod seek;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use md5::{Digest, Md5};

use crate::dupfmt::names::{FileKind, FileName, Naming, Suffix};
use crate::error::{Context, Error, Kind, Result};

/// The cache directory of one archive.
pub struct Cache {
    dir: PathBuf,
}

/// Default archive dir: `$XDG_CACHE_HOME/dup`, else `~/.cache/dup`.
pub fn default_archive_dir() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("dup"),
        _ => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
            PathBuf::from(home).join(".cache").join("dup")
        }
    }
}

/// duplicity's backup name for a URL: the MD5 of the URL exactly as given.
pub fn backup_name(url: &str) -> String {
    crate::dupfmt::hex(&Md5::digest(url.as_bytes()))
}

/// Held while a job changes the archive; released on drop.
///
/// Two locks exclude each other: an fcntl lock on `lockfile` (as duplicity
/// takes it) for other processes, and an entry in a process-wide registry
/// for other jobs of this process, which fcntl does not see (its locks
/// belong to the process, and closing any descriptor of the file would
/// release them).
pub struct Lock {
    file: Option<File>,
    key: PathBuf,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // The fcntl lock first: the next job of this process may take the
        // lock as soon as the registry lets it.
        drop(self.file.take());
        held().lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

/// The locks jobs of this process hold: the lock file's canonical path →
/// who holds it.
fn held() -> &'static Mutex<HashMap<PathBuf, String>> {
    static HELD: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    HELD.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The process holding an fcntl lock on `file`, as "process PID (NAME)".
fn fcntl_holder(file: &File) -> Option<String> {
    // SAFETY: fcntl on an fd we own, with a zeroed flock struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) } != 0
        || fl.l_type == libc::F_UNLCK as libc::c_short
    {
        return None;
    }
    let pid = fl.l_pid;
    match fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(name) => Some(format!("process {pid} ({})", name.trim_end())),
        Err(_) => Some(format!("process {pid}")),
    }
}

impl Cache {
    /// Opens (creating) the cache of the archive at `url`. The directories
    /// it creates are mode 0700: the cache holds plaintext metadata (paths,
    /// owners, signatures) even of an encrypted archive. Existing ones are
    /// left as they are (`--archive-dir` may name a directory shared on
    /// purpose, such as duplicity's).
    pub fn open(archive_dir: Option<&Path>, name: Option<&str>, url: &str) -> Result<Cache> {
        let base = archive_dir.map(Path::to_path_buf).unwrap_or_else(default_archive_dir);
        let name = name.map(str::to_string).unwrap_or_else(|| backup_name(url));
        let dir = base.join(name);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .context(format!("creating the cache directory {}", dir.display()))?;
        Ok(Cache { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Takes the archive's lock for this program (see [`Cache::lock_for`]).
    pub fn lock(&self) -> Result<Lock> {
        let program = std::env::current_exe().ok().and_then(|p| p.file_name()?.to_str().map(str::to_string));
        self.lock_for(program.as_deref().unwrap_or("a job"))
    }

    /// Takes the archive's lock for `job` (a few words saying what it is,
    /// shown to whoever finds the lock taken): `lockfile`, with an fcntl
    /// lock as duplicity takes it, and the process's own registry. Fails
    /// with [`Kind::Locked`], naming the holder, when another process or
    /// another job of this process holds it.
    pub fn lock_for(&self, job: &str) -> Result<Lock> {
        let path = self.path("lockfile");
        let key = fs::canonicalize(&self.dir).map(|d| d.join("lockfile")).unwrap_or_else(|_| path.clone());
        {
            let mut held = held().lock().unwrap_or_else(|p| p.into_inner());
            if let Some(holder) = held.get(&key) {
                return Err(Error::new(
                    Kind::Locked,
                    format!("another job of this process holds the lock {}: {holder}", path.display()),
                )
                .hint("wait for that job to finish; one archive takes one job at a time"));
            }
            let thread = std::thread::current();
            let since = crate::dupfmt::time::to_compact(crate::dupfmt::time::now());
            let holder = match thread.name() {
                Some(t) => format!("{job} (thread {t}, since {since})"),
                None => format!("{job} (since {since})"),
            };
            held.insert(key.clone(), holder);
        }
        // From here the registry entry is released by the lock's drop.
        let mut lock = Lock { file: None, key };
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .context(format!("opening {}", path.display()))?;
        // SAFETY: fcntl on an fd we own, with a zeroed flock struct.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as _;
        fl.l_whence = libc::SEEK_SET as _;
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) } != 0 {
            let e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
                let holder = fcntl_holder(&file).unwrap_or_else(|| "another process".into());
                return Err(Error::new(Kind::Locked, format!("{holder} holds the lock {}", path.display()))
                    .hint("wait for the other dup or duplicity run to finish"));
            }
            return Err(Error::io(format!("locking {}", path.display()), e));
        }
        lock.file = Some(file);
        Ok(lock)
    }

    /// Names of the files in the cache (not the lock).
    pub fn list(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).context(format!("listing {}", self.dir.display()))? {
            let e = e.context(format!("listing {}", self.dir.display()))?;
            if let Ok(name) = e.file_name().into_string()
                && name != "lockfile"
                && !name.starts_with(crate::io::storage::TEMP_PREFIX)
            {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Writes a file atomically (temporary name, fsync, rename).
    pub fn write(&self, name: &str, mut data: impl Read) -> Result<u64> {
        let tmp = self.path(&format!("{}{name}.{}", crate::io::storage::TEMP_PREFIX, std::process::id()));
        let dest = self.path(name);
        let result = (|| -> Result<u64> {
            let mut f = File::create(&tmp).context(format!("creating {}", tmp.display()))?;
            let n = io::copy(&mut data, &mut f).map_err(|e| crate::error::content_error(tmp.display(), e))?;
            f.flush().and_then(|_| f.sync_all()).context(format!("writing {}", tmp.display()))?;
            fs::rename(&tmp, &dest).context(format!("renaming {} into place", dest.display()))?;
            Ok(n)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Writes a file atomically, as [`Cache::write`], with what `fill` writes.
    pub fn write_with(&self, name: &str, fill: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
        let tmp = self.path(&format!("{}{name}.{}", crate::io::storage::TEMP_PREFIX, std::process::id()));
        let dest = self.path(name);
        let result = (|| -> Result<()> {
            let mut f = File::create(&tmp).context(format!("creating {}", tmp.display()))?;
            fill(&mut f)?;
            f.sync_all().context(format!("writing {}", tmp.display()))?;
            fs::rename(&tmp, &dest).context(format!("renaming {} into place", dest.display()))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Opens a cached file.
    pub fn open_file(&self, name: &str) -> Result<File> {
        let p = self.path(name);
        File::open(&p).context(format!("opening {}", p.display()))
    }

    /// Removes a cached file (absent is fine).
    pub fn remove(&self, name: &str) -> Result<()> {
        match fs::remove_file(self.path(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(Error::io(format!("removing {name} from the cache"), e))
            }
            _ => Ok(()),
        }
    }
}

/// The name a manifest or signature has in the cache: manifests plain,
/// signatures `.sigtar.gz` (FORMAT-duplicity.md §1.8).
pub fn cache_name(naming: &Naming, f: &FileName) -> Option<String> {
    cache_file(f).map(|c| naming.format(&c))
}

/// The parsed form of [`cache_name`].
pub fn cache_file(f: &FileName) -> Option<FileName> {
    let suffix = match f.kind {
        FileKind::FullManifest | FileKind::IncManifest => Suffix::None,
        FileKind::FullSig | FileKind::NewSig => Suffix::Gzip,
        _ => return None,
    };
    Some(FileName { suffix, partial: false, ..*f })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn name_is_md5_of_url() {
        // printf %s "file:///some/dir" | md5sum
        assert_eq!(backup_name("file:///some/dir"), "c3eb606a2f808eb2ca510d94c2c7889f");
    }

    #[test]
    fn new_cache_directories_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("xdg").join("dup");
        let c = Cache::open(Some(&base), None, "file:///x").unwrap();
        for d in [tmp.path().join("xdg"), base.clone(), c.dir().to_path_buf()] {
            let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{} is {mode:o}", d.display());
        }
        // An existing directory keeps its mode.
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
        Cache::open(Some(&shared), Some("n"), "file:///x").unwrap();
        assert_eq!(fs::metadata(&shared).unwrap().permissions().mode() & 0o777, 0o755);
    }

    #[test]
    fn lock_is_seen_by_other_processes_and_write_is_atomic() {
        let base = std::env::temp_dir().join(format!("dup-cache-test-{}", std::process::id()));
        let c = Cache::open(Some(&base), Some("n"), "file:///x").unwrap();
        c.write("a.manifest", &b"hello"[..]).unwrap();
        assert_eq!(c.list().unwrap(), vec!["a.manifest".to_string()]);
        let try_lock = || {
            // duplicity locks with fcntl.lockf (through fasteners).
            let script = "import fcntl,sys; f=open(sys.argv[1],'a'); fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB)";
            std::process::Command::new("python3").args(["-c", script]).arg(c.path("lockfile")).output()
        };
        let held = c.lock_for("the first job").unwrap();
        // Another job of this process is refused, naming the holder, and
        // leaves the process's fcntl lock in place.
        let e = c.lock().err().expect("a second job of the process is refused");
        assert_eq!(e.kind, Kind::Locked);
        assert!(e.message.contains("this process") && e.message.contains("the first job"), "{}", e.message);
        if let Ok(out) = try_lock() {
            assert!(!out.status.success(), "another process took the lock we hold");
            drop(held);
            assert!(try_lock().unwrap().status.success());
        } else {
            drop(held);
        }
        drop(c.lock().expect("free again once dropped"));
        c.remove("a.manifest").unwrap();
        c.remove("a.manifest").unwrap();
        let _ = fs::remove_dir_all(base);
    }
}
