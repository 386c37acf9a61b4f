//! Backends: opendal behind one small blocking interface.
//!
//! URLs follow duplicity (man/dup-backends.7): `file://`, `s3://`,
//! `s3+http://`, `sftp://` (`scp://`), `webdav://`, `webdavs://`, `gs://`,
//! `azure://`. Each backend is an opendal service compiled in by a cargo
//! feature of the same name as the service (see [`BACKENDS`]); URLs of every
//! backend parse in every build, and opening one that is not compiled in is a
//! usage error saying which feature to build with.
//! Credentials come from the environment duplicity users already set and are
//! never logged; messages show URLs without their password. Each [`Storage`]
//! owns its tokio runtime (opendal is async inside), so several can live in
//! one process with no shared state.

mod check;
mod layers;
mod mmap;
mod sftp;
mod url;

use std::io::{self, Read};
use std::sync::Arc;

use opendal::options::WriteOptions;
use opendal::{Buffer, ErrorKind};

pub use self::check::{CHECK_TIMEOUT, Check, CheckStatus, MarksBackup, test_connection, test_connection_with};
use self::check::{backend_error, hint, is_missing_bucket, open_error};
use self::layers::{S3_CONCURRENT, S3_PART, Settings, WRITE_CHUNK, build, io_timeout, object_store, part_size, piece};
use self::mmap::mapped_buffer;
use self::sftp::sftp_home;
pub use self::url::{BACKENDS, Backend, Target, parse_url, parse_url_with, redact, schemes};
use crate::error::{Error, Result, content_error};
use crate::io::spool::{Spool, SpoolReader};

/// A backend holding one archive (a flat directory of archive files).
pub struct Storage {
    op: opendal::Operator,
    blocking: opendal::blocking::Operator,
    /// The URL without its password, for messages.
    url: String,
    target: Target,
    settings: Settings,
    can_rename: bool,
    /// False for backends that take a file in one request (WebDAV).
    multi_write: bool,
    /// Parts of one S3 upload in flight at once.
    part_concurrency: usize,
    // Declared last: dropped after the operators that use it.
    rt: Arc<tokio::runtime::Runtime>,
}

/// Prefix of the temporary names files are written under before being
/// renamed into place; duplicity and dup ignore such names.
pub const TEMP_PREFIX: &str = ".dup-tmp.";

/// Looks up an environment variable (the process environment by default;
/// front ends can pass their own).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Storage {
    /// Connects to the backend at `url` (creating a `file://` directory),
    /// with credentials from the process environment.
    pub fn open(url: &str) -> Result<Storage> {
        Self::open_with(url, &process_env)
    }

    /// Like [`Storage::open`], reading environment variables through `env`.
    pub fn open_with(url: &str, env: Env) -> Result<Storage> {
        Self::connect(url, env, false)?.or_else(Check::into_error)
    }

    /// Opens the backend; the inner error is a server's answer (only SFTP
    /// with a relative path talks to the server here), the outer one a
    /// wrong URL or setting. `probe`: for a connection test, which makes
    /// no retries and waits at most [`check::CHECK_TIMEOUT`] for each request.
    fn connect(url: &str, env: Env, probe: bool) -> Result<std::result::Result<Storage, Check>> {
        let mut target = parse_url_with(url, env)?;
        let shown = redact(url);
        let mut settings = Settings::from_env(env)?;
        if probe {
            settings.retries = 0;
            settings.timeout = settings.timeout.min(check::CHECK_TIMEOUT);
        }
        if target.scheme == "sftp" && !target.get("root").unwrap_or_default().starts_with('/') {
            let home = match sftp_home(&target, &settings) {
                Ok(h) => h,
                Err((status, detail)) => {
                    return Ok(Err(Check {
                        status,
                        url: shown,
                        message: format!("finding the login directory: {}: {detail}", status.phrase()),
                        hint: Some(hint(status, &target)),
                        files: None,
                        archive: false,
                    }));
                }
            };
            let rel = target.get("root").unwrap_or_default().to_string();
            target.set("root", format!("{}/{rel}", home.trim_end_matches('/')));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dup-storage")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the storage runtime", e))?;
        let guard = rt.enter();
        // A connection test's requests are small: no allowance for their size.
        let io_t = if probe { settings.timeout } else { io_timeout(&settings, piece(&target)) };
        let op = build(&target, &settings, &shown, io_t).map_err(|e| open_error(&shown, &target, e))?;
        let cap = op.info().capability();
        let blocking = opendal::blocking::Operator::new(op.clone()).map_err(|e| open_error(&shown, &target, e))?;
        drop(guard);
        Ok(Ok(Storage {
            op,
            blocking,
            url: shown,
            can_rename: cap.rename,
            multi_write: cap.write_can_multi,
            part_concurrency: S3_CONCURRENT,
            target,
            settings,
            rt: Arc::new(rt),
        }))
    }

    /// Whether the archive is a local directory (`file://`): reading a
    /// file costs no round trips, so nothing is gained by fetching ahead.
    pub fn is_local(&self) -> bool {
        self.target.scheme == "fs"
    }

    /// The URL, without its password.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn error(&self, what: &str, e: opendal::Error) -> Error {
        backend_error(&self.url, &self.target, what, e)
    }

    /// Names and sizes of the files at the archive's top level (none when
    /// the archive's directory does not exist yet).
    pub fn list(&self) -> Result<Vec<(String, u64)>> {
        let entries = match self.blocking.list("") {
            Ok(v) => v,
            Err(e) if e.kind() == ErrorKind::NotFound && !is_missing_bucket(&e) => return Ok(Vec::new()),
            Err(e) => return Err(self.error("listing", e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let name = e.name();
            if e.metadata().is_dir() || name.is_empty() || name.ends_with('/') {
                continue;
            }
            out.push((name.to_string(), e.metadata().content_length()));
        }
        out.sort();
        Ok(out)
    }

    /// A streaming reader of one file.
    pub fn reader(&self, name: &str) -> Result<impl Read + use<>> {
        let what = format!("reading {name}");
        // Readers open lazily; stat first so a missing file is reported here.
        self.blocking.stat(name).map_err(|e| self.error(&what, e))?;
        let r = self.blocking.reader(name).map_err(|e| self.error(&what, e))?;
        r.into_std_read(..).map_err(|e| self.error(&what, e))
    }

    /// Stores `data` under `name`, atomically where the backend can rename
    /// (written under a temporary name first; S3 objects appear only when
    /// complete); returns the bytes written. Nothing is left on failure.
    pub fn put(&self, name: &str, data: impl Read) -> Result<u64> {
        self.put_via(name, |tmp, what| {
            if self.multi_write { self.put_stream(tmp, data, None, what) } else { self.put_once(tmp, data, what) }
        })
    }

    /// Like [`Storage::put`], for content already spooled (backends that
    /// take a file in one request send the spool as it is, with no copy).
    pub fn put_spool(&self, name: &str, spool: Spool) -> Result<u64> {
        self.put_via(name, |tmp, what| {
            let n = spool.len();
            let r = spool.into_reader().map_err(|e| Error::io("reading the spooled upload", e))?;
            if self.multi_write { self.put_stream(tmp, r, Some(n), what) } else { self.send_once(tmp, r, n, what) }
        })
    }

    /// Sets how many parts of one S3 upload are in flight at once (default
    /// 4); callers that upload several files at once lower it to bound memory.
    pub fn set_part_concurrency(&mut self, n: usize) {
        self.part_concurrency = n.max(1);
    }

    /// Writes through `send(path, what)` under a temporary name (where the
    /// backend can rename), then renames it to `name`.
    fn put_via(&self, name: &str, send: impl FnOnce(&str, &str) -> Result<u64>) -> Result<u64> {
        let what = format!("writing {name}");
        let tmp = if self.can_rename { format!("{TEMP_PREFIX}{name}.{}", std::process::id()) } else { name.into() };
        let mut result = send(&tmp, &what);
        if result.is_ok() && tmp != name {
            result = self.rename(&tmp, name).map_err(|e| self.error(&what, e)).and(result);
        }
        if result.is_err() && tmp != name {
            let _ = self.blocking.delete(&tmp);
        }
        result
    }

    /// Streams `data` (`len` bytes, when known) in chunks (S3/GCS multipart,
    /// Azure blocks, fs, sftp); aborts on error.
    fn put_stream(&self, path: &str, mut data: impl Read, len: Option<u64>, what: &str) -> Result<u64> {
        let part = part_size(len);
        let opts = if object_store(&self.target) {
            WriteOptions { chunk: Some(part), concurrent: self.part_concurrency, ..Default::default() }
        } else {
            WriteOptions::default()
        };
        // Parts larger than usual get time for their size.
        let op = if object_store(&self.target) && part > S3_PART {
            let _guard = self.rt.enter();
            build(&self.target, &self.settings, &self.url, io_timeout(&self.settings, part as u64))
                .map_err(|e| self.error(what, e))?
        } else {
            self.op.clone()
        };
        // Handed over in 1 MiB pieces, which the writer gathers into parts
        // without copying: a part-sized piece would be a third part's worth
        // of memory per upload, read while one waits and one is sent.
        let piece = WRITE_CHUNK;
        let mut w = self.rt.block_on(op.writer_options(path, opts)).map_err(|e| self.error(what, e))?;
        let mut n = 0u64;
        let copied = loop {
            let mut buf = Vec::with_capacity(piece);
            match (&mut data).take(piece as u64).read_to_end(&mut buf) {
                Err(e) => break Err(content_error(what, e)),
                Ok(0) => break Ok(()),
                Ok(k) => {
                    n += k as u64;
                    if let Err(e) = self.rt.block_on(w.write(buf)) {
                        break Err(self.error(what, e));
                    }
                }
            }
        };
        match copied.and_then(|()| self.rt.block_on(w.close()).map_err(|e| self.error(what, e))) {
            Ok(_) => Ok(n),
            Err(e) => {
                if let Err(a) = self.rt.block_on(w.abort()) {
                    log::debug!("{}: aborting the upload of {path}: {a}", self.url);
                }
                Err(e)
            }
        }
    }

    /// Backends that take a file in one request (WebDAV): the data is spooled
    /// to an unlinked temporary file, mapped into memory (file-backed pages
    /// the kernel can drop, not heap) and sent in one write.
    fn put_once(&self, path: &str, mut data: impl Read, what: &str) -> Result<u64> {
        let mut spool = Spool::new();
        let n = io::copy(&mut data, &mut spool).map_err(|e| content_error(what, e))?;
        let r = spool.into_reader().map_err(|e| Error::io("spooling the upload", e))?;
        self.send_once(path, r, n, what)
    }

    /// Sends `n` spooled bytes in one write.
    fn send_once(&self, path: &str, spooled: SpoolReader, n: u64, what: &str) -> Result<u64> {
        let buf = match spooled {
            SpoolReader::Mem(c) => Buffer::from(c.into_inner()),
            SpoolReader::File(f) => {
                mapped_buffer(f.into_inner(), n).map_err(|e| Error::io("spooling the upload", e))?
            }
        };
        // The whole upload is one call: give it time for its size.
        let op = if n > piece(&self.target) as u64 {
            let _guard = self.rt.enter();
            let t = io_timeout(&self.settings, n);
            build(&self.target, &self.settings, &self.url, t).map_err(|e| self.error(what, e))?
        } else {
            self.op.clone()
        };
        self.rt.block_on(op.write(path, buf)).map_err(|e| self.error(what, e))?;
        Ok(n)
    }

    fn rename(&self, from: &str, to: &str) -> opendal::Result<()> {
        match self.blocking.rename(from, to) {
            // SFTP servers without posix-rename refuse to replace a file.
            Err(e) if self.target.scheme == "sftp" && e.kind() != ErrorKind::NotFound => {
                if self.blocking.exists(to)? {
                    self.blocking.delete(to)?;
                    return self.blocking.rename(from, to);
                }
                Err(e)
            }
            r => r,
        }
    }

    /// Removes one file (absent files are not an error).
    pub fn delete(&self, name: &str) -> Result<()> {
        self.blocking.delete(name).map_err(|e| self.error(&format!("deleting {name}"), e))
    }
}

#[cfg(test)]
mod tests {

    use crate::error::Kind;

    use super::*;

    #[test]
    fn shareable_between_threads() {
        // dup-put could upload volumes from several threads through one Storage.
        fn check<T: Send + Sync>() {}
        check::<Storage>();
    }

    /// A backend's retries reach the job log of the thread that opened it
    /// (an API call's progress sink), though they run on the storage runtime.
    #[test]
    fn retries_reach_the_job_log() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = "s3://bucket/x";
        let env = |k: &str| match k {
            "DUP_S3_ENDPOINT" => Some(format!("http://127.0.0.1:{port}")),
            "DUP_NUM_RETRIES" => Some("1".to_string()),
            "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("test".to_string()),
            _ => None,
        };
        let seen = std::sync::Mutex::new(Vec::new());
        let sink = |e: crate::progress::Event| {
            if let crate::progress::Event::Log { message, .. } = e {
                seen.lock().unwrap().push(message)
            }
        };
        let listed = crate::joblog::run(&sink, || Storage::open_with(url, &env)?.list()).unwrap();
        assert!(listed.is_err(), "nothing listens on {port}");
        let seen = seen.into_inner().unwrap();
        assert!(seen.iter().any(|m| m.contains("retry 1 of 1")), "{seen:?}");
    }

    #[test]
    fn put_list_read_delete() {
        let dir = std::env::temp_dir().join(format!("dup-storage-test-{}", std::process::id()));
        let url = format!("file://{}", dir.display());
        let s = Storage::open(&url).unwrap();
        let data = vec![7u8; 300_000];
        assert_eq!(s.put("a.bin", &data[..]).unwrap(), 300_000);
        assert_eq!(s.list().unwrap(), vec![("a.bin".to_string(), 300_000)]);
        let mut back = Vec::new();
        s.reader("a.bin").unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        s.delete("a.bin").unwrap();
        assert!(s.list().unwrap().is_empty());
        assert_eq!(s.reader("a.bin").err().unwrap().kind, Kind::Corrupt);
        let c = s.check(&|n| n.ends_with(".manifest"));
        assert_eq!((c.status, c.files, c.archive), (CheckStatus::Ok, Some(0), false), "{c:?}");
        assert!(s.list().unwrap().is_empty(), "the probe is gone");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The storage operations against a real or emulated server, run by
    /// hand (dup-backends(7), BUILD FEATURES), such as
    /// `DUP_LIVE_URL=azure://c01/x AZURE_CONNECTION_STRING=UseDevelopmentStorage=true
    /// cargo test --features azblob --lib io::storage::tests::live -- --ignored`.
    #[test]
    #[ignore = "needs a server: set DUP_LIVE_URL"]
    fn live() {
        let url = std::env::var("DUP_LIVE_URL").expect("DUP_LIVE_URL");
        let s = Storage::open(&url).unwrap();
        let small = vec![7u8; 300_000];
        // Several parts (S3, GCS) or blocks (Azure), the last one short.
        let big: Vec<u8> = (0..2 * S3_PART + 12345).map(|i| (i % 251) as u8).collect();
        let names = ["dup-live-a.bin", "dup-live-big.bin"];
        for (name, data) in names.iter().zip([&small, &big]) {
            assert_eq!(s.put(name, &data[..]).unwrap(), data.len() as u64, "{name}");
        }
        let listed = s.list().unwrap();
        for (name, data) in names.iter().zip([&small, &big]) {
            assert!(listed.contains(&(name.to_string(), data.len() as u64)), "{name} in {listed:?}");
            let mut back = Vec::new();
            s.reader(name).unwrap().read_to_end(&mut back).unwrap();
            assert!(back == **data, "{name} read back differs");
        }
        // Replacing a file; a failed upload leaves nothing.
        assert_eq!(s.put(names[0], &b"new"[..]).unwrap(), 3);
        let mut back = Vec::new();
        s.reader(names[0]).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, b"new");
        assert!(s.put("dup-live-broken.bin", (&big[..]).chain(FailingReader)).is_err());
        for name in names {
            s.delete(name).unwrap();
        }
        let left: Vec<String> =
            s.list().unwrap().into_iter().map(|(n, _)| n).filter(|n| n.contains("dup-live-")).collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(s.reader(names[0]).err().unwrap().kind, Kind::Corrupt);
        let c = s.check(&|n| n.ends_with(".manifest"));
        assert_eq!(c.status, CheckStatus::Ok, "{c:?}");
    }

    #[test]
    fn failed_input_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("dup-storage-fail-{}", std::process::id()));
        let s = Storage::open(&format!("file://{}", dir.display())).unwrap();
        let broken = (&[1u8; 5000][..]).chain(FailingReader);
        assert!(s.put("x.bin", broken).is_err());
        assert!(s.list().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    struct FailingReader;
    impl Read for FailingReader {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("input broke"))
        }
    }
}
