//! Backends: opendal behind one small blocking interface.
//!
//! URLs follow duplicity (`file:///abs/path`, `file://relative/path`). Each
//! [`Storage`] owns its tokio runtime (opendal is async inside), so several
//! can live in one process with no shared state.

use std::io::{self, Read};
use std::sync::Arc;

use opendal::layers::{LoggingLayer, RetryLayer};

use crate::error::{Error, Kind, Result};

/// A backend holding one archive (a flat directory of archive files).
pub struct Storage {
    op: opendal::blocking::Operator,
    url: String,
    can_rename: bool,
    // Declared last: dropped after the operator that uses it.
    _rt: Arc<tokio::runtime::Runtime>,
}

/// Prefix of the temporary names files are written under before being
/// renamed into place; duplicity and dup ignore such names.
pub const TEMP_PREFIX: &str = ".dup-tmp.";

/// A parsed backend URL: opendal's scheme and its configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub scheme: String,
    pub config: Vec<(String, String)>,
}

/// Parses a duplicity-style URL.
pub fn parse_url(url: &str) -> Result<Target> {
    let bad = |why: &str| {
        Error::usage(format!("{url}: {why}")).hint("URLs look like file:///absolute/path or file://relative/path")
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("not a URL (no scheme://)"))?;
    match scheme {
        "file" => {
            if rest.is_empty() {
                return Err(bad("no path after file://"));
            }
            let root = if rest.starts_with('/') {
                rest.to_string()
            } else {
                let cwd = std::env::current_dir().map_err(|e| Error::io("current directory", e))?;
                cwd.join(rest).to_string_lossy().into_owned()
            };
            Ok(Target {
                scheme: "fs".into(),
                config: vec![("root".into(), root)],
            })
        }
        other => Err(Error::usage(format!(
            "{url}: the backend '{other}://' is not supported by this build"
        ))
        .hint("supported: file://")),
    }
}

fn backend_error(url: &str, what: &str, e: opendal::Error) -> Error {
    let kind = match e.kind() {
        opendal::ErrorKind::NotFound => Kind::Corrupt,
        _ => Kind::Other,
    };
    let hint = match e.kind() {
        opendal::ErrorKind::NotFound => "the file is missing on the backend; `dup-ls URL` shows what the archive holds",
        opendal::ErrorKind::PermissionDenied => "check the credentials and permissions for the backend",
        _ => "check that the backend is reachable and try again",
    };
    Error::new(kind, format!("{url}: {what}: {}", e.kind())).hint(format!("{hint} ({e})"))
}

impl Storage {
    /// Connects to the backend at `url` (creating a `file://` directory).
    pub fn open(url: &str) -> Result<Storage> {
        let target = parse_url(url)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dup-storage")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the storage runtime", e))?;
        let _guard = rt.enter();
        let op = opendal::Operator::via_iter(target.scheme.as_str(), target.config.clone())
            .map_err(|e| backend_error(url, "opening the backend", e))?
            .layer(RetryLayer::new().with_jitter().with_max_times(4))
            .layer(LoggingLayer::default());
        let can_rename = op.info().capability().rename;
        let op = opendal::blocking::Operator::new(op).map_err(|e| backend_error(url, "opening the backend", e))?;
        drop(_guard);
        Ok(Storage {
            op,
            url: url.to_string(),
            can_rename,
            _rt: Arc::new(rt),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Names and sizes of the files at the archive's top level.
    pub fn list(&self) -> Result<Vec<(String, u64)>> {
        let entries = self.op.list("").map_err(|e| backend_error(&self.url, "listing", e))?;
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
        self.op.stat(name).map_err(|e| backend_error(&self.url, &what, e))?;
        let r = self.op.reader(name).map_err(|e| backend_error(&self.url, &what, e))?;
        r.into_std_read(..).map_err(|e| backend_error(&self.url, &what, e))
    }

    /// Stores `data` under `name`, atomically where the backend can rename
    /// (written under a temporary name first); returns the bytes written.
    pub fn put(&self, name: &str, mut data: impl Read) -> Result<u64> {
        let what = format!("writing {name}");
        let tmp = if self.can_rename {
            format!("{TEMP_PREFIX}{name}.{}", std::process::id())
        } else {
            name.into()
        };
        let result = (|| -> Result<u64> {
            let w = self.op.writer(&tmp).map_err(|e| backend_error(&self.url, &what, e))?;
            let mut w = w.into_std_write();
            let n = io::copy(&mut data, &mut w).map_err(|e| io_error(&self.url, &what, e))?;
            w.close().map_err(|e| io_error(&self.url, &what, e))?;
            if tmp != name {
                self.op
                    .rename(&tmp, name)
                    .map_err(|e| backend_error(&self.url, &what, e))?;
            }
            Ok(n)
        })();
        if result.is_err() && tmp != name {
            let _ = self.op.delete(&tmp);
        }
        result
    }

    /// Removes one file (absent files are not an error).
    pub fn delete(&self, name: &str) -> Result<()> {
        self.op
            .delete(name)
            .map_err(|e| backend_error(&self.url, &format!("deleting {name}"), e))
    }
}

fn io_error(url: &str, what: &str, e: io::Error) -> Error {
    // Errors from reading the data being stored come back wrapped; keep their kind.
    if e.get_ref().is_some_and(|i| i.is::<Error>()) {
        return crate::record::content_error(what, e);
    }
    Error::other(format!("{url}: {what}: {e}")).hint("check that the backend is reachable and has space")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("file:///tmp/x").unwrap().config,
            vec![("root".to_string(), "/tmp/x".to_string())]
        );
        assert!(parse_url("/tmp/x").is_err());
        assert!(parse_url("file://").is_err());
        assert_eq!(parse_url("gopher://x").unwrap_err().kind, Kind::Usage);
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
        let _ = std::fs::remove_dir_all(dir);
    }
}
