//! `dup._dup`: the verbs of [`dup::api`] for Python. Each call takes its
//! options as keyword arguments, releases the GIL while it works
//! ([`Python::detach`]), and reports through an optional Python callable
//! (called with the GIL taken again). Errors become `dup.Error` subclasses
//! carrying dup's kind, exit code and hint. Nothing is global: each call opens
//! its own archive, so calls in several Python threads run side by side.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use dup::api::{self, ArchiveOptions, BackupMode, BackupOptions};
use dup::crypto::{KeyEnv, KeyOptions, Keys, Purpose};
use dup::dupfmt::time;
use dup::progress::{Event, Progress};
use dup::{Error as DupError, Kind};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pyo3::{IntoPyObjectExt, PyTypeInfo};

create_exception!(dup, Error, PyException, "A dup error: .kind (str), .exit_code (int), .hint (str or None).");
create_exception!(dup, Usage, Error, "Bad options (exit code 2).");
create_exception!(dup, Partial, Error, "Some source files could not be read; the rest was done (3).");
create_exception!(dup, NoBackup, Error, "No backup (chain, set, file) matches what was asked (10).");
create_exception!(dup, Locked, Error, "Another job holds the archive (11).");
create_exception!(dup, Crypto, Error, "Wrong passphrase or missing secret key (12).");
create_exception!(dup, Corrupt, Error, "A volume or other archive file is missing or corrupt (13).");
create_exception!(dup, Unwritable, Error, "A local file system takes no more writes (1).");
create_exception!(dup, Unreachable, Error, "The backend cannot be reached (14).");
create_exception!(dup, AuthRefused, Error, "The backend refused the credentials (15).");
create_exception!(dup, PermissionDenied, Error, "Not allowed to list or write there (16).");
create_exception!(dup, NotFound, Error, "The bucket or path does not exist (17).");
create_exception!(dup, Interrupted, Error, "The job was cancelled (130); a backup resumes on the next call.");

/// The Python exception of a dup error: its class and `.kind` follow
/// `e.kind`; `.exit_code` is the binaries' exit code for it.
fn py_error(py: Python<'_>, e: DupError) -> PyErr {
    let (name, ty) = match e.kind {
        Kind::Usage => ("usage", Usage::type_object(py)),
        Kind::Partial => ("partial", Partial::type_object(py)),
        Kind::NoBackup => ("no_backup", NoBackup::type_object(py)),
        Kind::Locked => ("locked", Locked::type_object(py)),
        Kind::Crypto => ("crypto", Crypto::type_object(py)),
        Kind::Corrupt => ("corrupt", Corrupt::type_object(py)),
        Kind::Unwritable => ("unwritable", Unwritable::type_object(py)),
        Kind::Unreachable => ("unreachable", Unreachable::type_object(py)),
        Kind::AuthRefused => ("auth_refused", AuthRefused::type_object(py)),
        Kind::PermissionDenied => ("permission_denied", PermissionDenied::type_object(py)),
        Kind::NotFound => ("not_found", NotFound::type_object(py)),
        Kind::Interrupted => ("interrupted", Interrupted::type_object(py)),
        Kind::Stream => ("stream", Error::type_object(py)),
        Kind::StdoutClosed => ("stdout_closed", Error::type_object(py)),
        Kind::Other => ("other", Error::type_object(py)),
    };
    let err = PyErr::from_type(ty, e.message.clone());
    let v = err.value(py);
    let set = || -> PyResult<()> {
        v.setattr("kind", name)?;
        v.setattr("exit_code", e.kind.exit_code())?;
        v.setattr("hint", e.hint.as_deref())?;
        v.setattr("message", &e.message)
    };
    match set() {
        Ok(()) => err,
        Err(failed) => failed,
    }
}

/// A cancellation token: `cancel()` asks the job(s) it was given to stop.
#[pyclass(module = "dup", frozen)]
#[derive(Clone, Default)]
struct Cancel {
    token: api::Cancel,
}

#[pymethods]
impl Cancel {
    #[new]
    fn new() -> Self {
        Self::default()
    }
    /// Asks the job to stop at its next check; it raises `dup.Interrupted`
    /// (a backup keeps what it stored and the next backup resumes it).
    fn cancel(&self) {
        self.token.cancel();
    }
    /// Whether `cancel()` was called (or a progress callback raised).
    #[getter]
    fn cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// Item events passed to the callback at most this often (all the others
/// are passed).
const ITEM_INTERVAL: Duration = Duration::from_millis(100);

/// How often a waiting call lets Python run its signal handlers (Ctrl-C).
const SIGNAL_INTERVAL: Duration = Duration::from_millis(50);

/// A job's sink: each event as a dict to the `progress` callable, and those
/// that carry a message (warnings, log lines) to the `log` callable too. An
/// exception raised by either (or by a signal handler, Ctrl-C) cancels the
/// job and is raised by the call.
struct PyProgress {
    progress: Option<Py<PyAny>>,
    log: Option<Py<PyAny>>,
    cancel: api::Cancel,
    raised: Mutex<Option<PyErr>>,
    last_item: Mutex<Option<Instant>>,
}

impl PyProgress {
    fn new(progress: Option<Bound<'_, PyAny>>, log: Option<Bound<'_, PyAny>>, cancel: Option<&Cancel>) -> Self {
        PyProgress {
            progress: progress.filter(|p| !p.is_none()).map(Bound::unbind),
            log: log.filter(|l| !l.is_none()).map(Bound::unbind),
            cancel: cancel.map(|c| c.token.clone()).unwrap_or_default(),
            raised: Mutex::new(None),
            last_item: Mutex::new(None),
        }
    }

    fn item_due(&self) -> bool {
        let Ok(mut last) = self.last_item.lock() else { return false };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < ITEM_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Runs `job` without the GIL, in a thread of its own while the calling
    /// thread watches for signals (Python runs its handlers, Ctrl-C's
    /// KeyboardInterrupt, only on the main thread, and only holding the
    /// GIL); the job's result, or the exception that stopped it (a
    /// callback's or a signal handler's), or dup's error as a Python exception.
    fn run<T: Send>(
        &self,
        py: Python<'_>,
        job: impl FnOnce(&dyn Progress, &api::Cancel) -> dup::Result<T> + Send,
    ) -> PyResult<T> {
        let r = py.detach(|| {
            std::thread::scope(|s| {
                let caller = std::thread::current();
                let worker = s.spawn(move || {
                    let r = job(self, &self.cancel);
                    caller.unpark();
                    r
                });
                while !worker.is_finished() {
                    std::thread::park_timeout(SIGNAL_INTERVAL);
                    if let Err(e) = Python::attach(|py| py.check_signals()) {
                        self.stop(e);
                    }
                }
                worker.join().unwrap_or_else(|_| Err(DupError::other("the job panicked")))
            })
        });
        if let Some(e) = self.raised.lock().ok().and_then(|mut g| g.take()) {
            return Err(e);
        }
        r.map_err(|e| py_error(py, e))
    }

    /// Cancels the job because of `e`, the first such exception kept.
    fn stop(&self, e: PyErr) {
        if let Ok(mut g) = self.raised.lock() {
            g.get_or_insert(e);
        }
        self.cancel.cancel();
    }
}

impl Progress for PyProgress {
    fn event(&self, ev: Event) {
        if self.progress.is_none() && self.log.is_none() {
            return;
        }
        if matches!(ev, Event::Item { .. }) && (self.progress.is_none() || !self.item_due()) {
            return;
        }
        let Ok(value) = serde_json::to_value(&ev) else { return };
        let called = Python::attach(|py| -> PyResult<()> {
            if self.raised.lock().map(|g| g.is_some()).unwrap_or(true) {
                return Ok(());
            }
            let d = to_py(py, &value)?;
            if let Some(cb) = &self.progress {
                cb.call1(py, (&d,))?;
            }
            if let (true, Some(cb)) = (value.get("message").is_some(), &self.log) {
                cb.call1(py, (&d,))?;
            }
            Ok(())
        });
        if let Err(e) = called {
            self.stop(e);
        }
    }
}

/// A JSON value as the Python object json.loads would make.
fn to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value;
    match v {
        Value::Null => Ok(py.None().into_bound(py)),
        Value::Bool(b) => b.into_bound_py_any(py),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.into_bound_py_any(py),
            (_, Some(i)) => i.into_bound_py_any(py),
            _ => n.as_f64().unwrap_or(f64::NAN).into_bound_py_any(py),
        },
        Value::String(s) => s.into_bound_py_any(py),
        Value::Array(a) => {
            let l = PyList::empty(py);
            for x in a {
                l.append(to_py(py, x)?)?;
            }
            Ok(l.into_any())
        }
        Value::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, to_py(py, x)?)?;
            }
            Ok(d.into_any())
        }
    }
}

/// Any serializable dup value as Python dicts and lists.
fn ser_to_py<'py>(py: Python<'py>, v: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(v).map_err(|e| Error::new_err(e.to_string()))?;
    to_py(py, &value)
}

/// A path of the backup as Python's `os.fsdecode` gives it (bytes that are
/// not UTF-8 as surrogates, so `os.fsencode` gives them back).
fn py_path<'py>(py: Python<'py>, p: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(p).into_bound_py_any(py)
}

/// A path given by Python (str, bytes or os.PathLike) as bytes.
fn path_bytes(p: std::path::PathBuf) -> Vec<u8> {
    use std::os::unix::ffi::OsStringExt;
    p.into_os_string().into_vec()
}

/// A file of the backup as a dict: the fields of dup-ls --json, the
/// paths as str.
fn entry_to_py<'py>(py: Python<'py>, e: &api::Entry) -> PyResult<Bound<'py, PyAny>> {
    let d = ser_to_py(py, e)?;
    d.set_item("path", py_path(py, &e.path)?)?;
    if let Some(t) = &e.target {
        d.set_item("target", py_path(py, t)?)?;
    }
    Ok(d)
}

/// A time as duplicity takes it: Unix seconds (int), or a string in
/// duplicity's time syntax ("now", "3D", "2026-12-01T10:00:00", ...).
fn parse_time(t: Option<&Bound<'_, PyAny>>) -> PyResult<Option<i64>> {
    let Some(t) = t.filter(|t| !t.is_none()) else { return Ok(None) };
    if let Ok(secs) = t.extract::<i64>() {
        return Ok(Some(secs));
    }
    let s: String = t.extract()?;
    time::parse_time(&s, time::now()).map(Some).map_err(|e| py_error(t.py(), e))
}

/// str or bytes, as bytes.
fn secret(v: Option<Bound<'_, PyAny>>) -> PyResult<Option<Vec<u8>>> {
    let Some(v) = v.filter(|v| !v.is_none()) else { return Ok(None) };
    match v.extract::<String>() {
        Ok(s) => Ok(Some(s.into_bytes())),
        Err(_) => Ok(Some(v.extract::<Vec<u8>>()?)),
    }
}

/// The archive from `url` and the keyword options every verb shares:
/// `archive_dir`, `name` (the cache), and the keys: `passphrase` alone is
/// symmetric encryption; `encrypt_keys`, `sign_key` (+ `sign_passphrase`)
/// and `key_files` go through key files and GnuPG's keyring as the binaries
/// do; none of them, an unencrypted archive. Another key is a TypeError.
fn archive_from(
    py: Python<'_>,
    url: String,
    kw: Option<&Bound<'_, PyDict>>,
    purpose: Purpose,
) -> PyResult<ArchiveOptions> {
    let kw = match kw {
        Some(k) => k.copy()?,
        None => PyDict::new(py),
    };
    let take = |k: &str| -> PyResult<Option<Bound<'_, PyAny>>> {
        let v = kw.get_item(k)?;
        kw.del_item(k).ok();
        Ok(v.filter(|v| !v.is_none()))
    };
    let archive_dir = take("archive_dir")?.map(|v| v.extract::<std::path::PathBuf>()).transpose()?;
    let name = take("name")?.map(|v| v.extract::<String>()).transpose()?;
    let passphrase = secret(take("passphrase")?)?;
    let sign_passphrase = secret(take("sign_passphrase")?)?;
    let encrypt_keys = take("encrypt_keys")?.map(|v| v.extract::<Vec<String>>()).transpose()?.unwrap_or_default();
    let sign_key = take("sign_key")?.map(|v| v.extract::<String>()).transpose()?;
    let key_files = take("key_files")?.map(|v| v.extract::<Vec<std::path::PathBuf>>()).transpose()?.unwrap_or_default();
    if let Some((k, _)) = kw.iter().next() {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!("unexpected keyword argument {k}")));
    }
    let keys = if encrypt_keys.is_empty() && sign_key.is_none() && key_files.is_empty() {
        passphrase.map(Keys::with_passphrase)
    } else {
        let opts = KeyOptions { encrypt_keys, sign_key, key_files, prompt: false, ..KeyOptions::default() };
        let env = KeyEnv { passphrase, sign_passphrase, ..KeyEnv::from_process() };
        Some(py.detach(|| Keys::build(&opts, &env, purpose)).map_err(|e| py_error(py, e))?)
    };
    Ok(ArchiveOptions { url, archive_dir, name, keys })
}

macro_rules! dict {
    ($py:expr, $($k:literal => $v:expr),* $(,)?) => {{
        let d = PyDict::new($py);
        $( d.set_item($k, $v)?; )*
        d
    }};
}

fn backup_report<'py>(py: Python<'py>, r: &api::BackupReport) -> PyResult<Bound<'py, PyDict>> {
    let c = &r.changes;
    Ok(dict!(py,
        "full" => r.full,
        "time" => r.time,
        "warnings" => r.warnings,
        "new" => c.new, "changed" => c.changed, "deleted" => c.deleted, "unchanged" => c.unchanged,
        "files_read" => c.files_read, "bytes_read" => c.bytes_read, "bytes_out" => c.bytes_out,
        "volumes" => r.packed.volumes, "volume_bytes" => r.packed.volume_bytes,
        "stored" => r.stored.stored, "stored_bytes" => r.stored.bytes,
        "skipped" => r.stored.skipped, "skipped_bytes" => r.stored.skipped_bytes,
    ))
}

fn restore_report<'py>(py: Python<'py>, r: &api::RestoreReport) -> PyResult<Bound<'py, PyDict>> {
    Ok(dict!(py,
        "time" => r.time, "sets" => r.sets, "volumes" => r.volumes, "volume_bytes" => r.volume_bytes,
        "items" => r.items, "bytes" => r.bytes,
    ))
}

fn delete_report<'py>(py: Python<'py>, r: &api::DeleteReport) -> PyResult<Bound<'py, PyDict>> {
    Ok(dict!(py, "files" => &r.files, "notes" => &r.notes, "deleted" => r.deleted))
}

fn change_to_py<'py>(py: Python<'py>, c: &api::Change) -> PyResult<Bound<'py, PyDict>> {
    let kind = match c.kind {
        api::ChangeKind::New => "new",
        api::ChangeKind::Changed => "changed",
        api::ChangeKind::Deleted => "deleted",
    };
    Ok(dict!(py, "path" => py_path(py, &c.path)?, "kind" => kind, "time" => c.time))
}

/// Backs up `source` to `url`: a full when there is no chain (or
/// `mode="full"`, or the chain began before `full_if_older_than`), else an
/// incremental; an interrupted backup is resumed. Returns what was done.
#[pyfunction]
#[pyo3(signature = (source, url, *, mode="auto", selection=None, full_if_older_than=None, volsize=None,
    compress=true, progress=None, log=None, cancel=None, **archive))]
#[allow(clippy::too_many_arguments)]
fn backup<'py>(
    py: Python<'py>,
    source: std::path::PathBuf,
    url: String,
    mode: &str,
    selection: Option<Vec<String>>,
    full_if_older_than: Option<&Bound<'py, PyAny>>,
    volsize: Option<u64>,
    compress: bool,
    progress: Option<Bound<'py, PyAny>>,
    log: Option<Bound<'py, PyAny>>,
    cancel: Option<PyRef<'py, Cancel>>,
    archive: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let mode = match mode {
        "auto" => BackupMode::Auto,
        "full" => BackupMode::Full,
        "incremental" | "inc" => BackupMode::Incremental,
        _ => return Err(Usage::new_err(format!("mode must be auto, full or incremental, not {mode:?}"))),
    };
    let mut o = BackupOptions::new(source, "");
    o.archive = archive_from(py, url, archive, Purpose::Both)?;
    o.mode = mode;
    o.full_if_older_than = parse_time(full_if_older_than)?;
    o.selection =
        dup::stage::scan::select::options_from_args(selection.unwrap_or_default().into_iter().map(Into::into))
            .map_err(|e| py_error(py, e))?;
    o.compress = compress;
    if let Some(v) = volsize {
        o.volsize = v;
    }
    let r = PyProgress::new(progress, log, cancel.as_deref()).run(py, |p, c| api::backup(&o, p, c))?;
    backup_report(py, &r)
}

/// The archive's backup sets: chains oldest first, each full then its
/// incrementals, then orphaned and incomplete sets (dicts: `type`, `start`,
/// `end` the set's time, `chain`, `status`, `volumes`, `encrypted`,
/// `compressed`, `files`, `size` in bytes on the backend).
#[pyfunction]
#[pyo3(signature = (url, *, cancel=None, **archive))]
fn snapshots<'py>(
    py: Python<'py>,
    url: String,
    cancel: Option<PyRef<'py, Cancel>>,
    archive: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyList>> {
    let a = archive_from(py, url, archive, Purpose::Decrypt)?;
    let sets = PyProgress::new(None, None, cancel.as_deref()).run(py, |p, c| api::snapshots(&a, p, c))?;
    let out = PyList::empty(py);
    for s in &sets {
        let d = ser_to_py(py, &s.info)?;
        d.set_item("size", s.size)?;
        out.append(d)?;
    }
    Ok(out)
}

/// The items present at `time` (None: the newest set), the whole tree or,
/// with `path`, one directory's items ("." the root), in duplicity's order,
/// as dicts (`path`, `type`, `mode`, `uid`, `gid`, `uname`, `gname`,
/// `mtime`, `size`, `target`). No volume is read. With `each`, each dict
/// goes to that callable as it is read (memory stays flat whatever the
/// tree) and the count is returned; an exception in it stops the listing.
#[pyfunction]
#[pyo3(signature = (url, *, time=None, path=None, each=None, cancel=None, **archive))]
#[allow(clippy::too_many_arguments)]
fn files_at<'py>(
    py: Python<'py>,
    url: String,
    time: Option<&Bound<'py, PyAny>>,
    path: Option<std::path::PathBuf>,
    each: Option<Bound<'py, PyAny>>,
    cancel: Option<PyRef<'py, Cancel>>,
    archive: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let o = api::FilesOptions {
        archive: archive_from(py, url, archive, Purpose::Decrypt)?,
        time: parse_time(time)?,
        dir: path.map(path_bytes),
    };
    let prog = PyProgress::new(None, None, cancel.as_deref());
    if let Some(each) = each.map(Bound::unbind) {
        let n = prog.run(py, |p, c| {
            api::files_at(&o, p, c, |e| {
                Python::attach(|py| each.call1(py, (entry_to_py(py, &e)?,)).map(drop)).map_err(|err| {
                    prog.stop(err);
                    DupError::new(Kind::Interrupted, "the listing's callable raised")
                })
            })
        })?;
        return n.into_bound_py_any(py);
    }
    let mut entries = Vec::new();
    prog.run(py, |p, c| {
        api::files_at(&o, p, c, |e| {
            entries.push(e);
            Ok(())
        })
    })?;
    let out = PyList::empty(py);
    for e in &entries {
        out.append(entry_to_py(py, e)?)?;
    }
    Ok(out.into_any())
}

/// What the set at `time` (None: the newest) added, changed and deleted
/// (regular files, as duplicity's --show-changes-in-set): dicts with
/// `path`, `kind` ("new", "changed", "deleted") and `time`.
#[pyfunction]
#[pyo3(signature = (url, *, time=None, cancel=None, **archive))]
fn changes<'py>(
    py: Python<'py>,
    url: String,
    time: Option<&Bound<'py, PyAny>>,
    cancel: Option<PyRef<'py, Cancel>>,
    archive: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyList>> {
    let o = api::ChangesOptions { archive: archive_from(py, url, archive, Purpose::Decrypt)?, time: parse_time(time)? };
    let list = PyProgress::new(None, None, cancel.as_deref()).run(py, |p, c| api::changes(&o, p, c))?;
    let out = PyList::empty(py);
    for c in &list {
        out.append(change_to_py(py, c)?)?;
    }
    Ok(out)
}

/// The sets that stored or deleted `path` (a regular file), oldest first,
/// as duplicity's --file-changed: dicts as `changes` gives them.
#[pyfunction]
#[pyo3(signature = (url, path, *, cancel=None, **archive))]
fn file_history<'py>(
    py: Python<'py>,
    url: String,
    path: std::path::PathBuf,
    cancel: Option<PyRef<'py, Cancel>>,
    archive: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyList>> {
    let o = api::HistoryOptions { archive: archive_from(py, url, archive, Purpose::Decrypt)?, path: path_bytes(path) };
    let list = PyProgress::new(None, None, cancel.as_deref()).run(py, |p, c| api::file_history(&o, p, c))?;
    let out = PyList::empty(py);
    for c in &list {
        out.append(change_to_py(py, c)?)?;
    }
    Ok(out)
}

/// Restores the backup at `time` (None: the newest), or only `path` of it,
/// to `dest` (absent or empty unless `force`; the file itself when `path`
/// is a file). Raises when anything was skipped, after restoring the rest.
#[pyfunction]
#[pyo3(signature = (url, dest, *, path=None, time=None, force=false, numeric_owner=false,
    progress=None, log=None, cancel=None, **archive))]
#[allow(clippy::too_many_arguments)]
fn restore<'py>(
    py: Python<'py>,
    url: String,
    dest: std::path::PathBuf,
    path: Option<std::path::PathBuf>,
    time: Option<&Bound<'py, PyAny>>,
    force: bool,
    numeric_owner: bool,
    progress: Option<Bound<'py, PyAny>>,
    log: Option<Bound<'py, PyAny>>,
    cancel: Option<PyRef<'py, Cancel>>,
    archive: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let o = api::RestoreOptions {
        archive: archive_from(py, url, archive, Purpose::Decrypt)?,
        time: parse_time(time)?,
        path: path.map(path_bytes),
        dest,
        force,
        numeric_owner,
    };
    let r = PyProgress::new(progress, log, cancel.as_deref()).run(py, |p, c| api::restore(&o, p, c))?;
    restore_report(py, &r)
}

/// Compares the backup at `time` (or `path` of it) with the local tree
/// `source`; returns the restore counters plus `differences` (dicts with
/// `path` and `what`, a list of phrases) and `difference_count`.
#[pyfunction]
#[pyo3(signature = (url, source, *, path=None, time=None, compare_data=false, progress=None, log=None,
    cancel=None, **archive))]
#[allow(clippy::too_many_arguments)]
fn verify<'py>(
    py: Python<'py>,
    url: String,
    source: std::path::PathBuf,
    path: Option<std::path::PathBuf>,
    time: Option<&Bound<'py, PyAny>>,
    compare_data: bool,
    progress: Option<Bound<'py, PyAny>>,
    log: Option<Bound<'py, PyAny>>,
    cancel: Option<PyRef<'py, Cancel>>,
    archive: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let o = api::VerifyOptions {
        archive: archive_from(py, url, archive, Purpose::Decrypt)?,
        time: parse_time(time)?,
        path: path.map(path_bytes),
        source,
        compare_data,
    };
    let r = PyProgress::new(progress, log, cancel.as_deref()).run(py, |p, c| api::verify(&o, p, c))?;
    let d = restore_report(py, &r.read)?;
    let diffs = PyList::empty(py);
    for x in &r.differences {
        diffs.append(dict!(py, "path" => py_path(py, &x.path)?, "what" => &x.what))?;
    }
    d.set_item("differences", diffs)?;
    d.set_item("difference_count", r.difference_count)?;
    Ok(d)
}

/// Deletes old backups as duplicity does; give exactly one policy:
/// `older_than` (a time: remove-older-than), `keep_full` (N:
/// remove-all-but-n-full), `keep_inc_of_full` (N:
/// remove-all-inc-of-but-n-full) or `cleanup=True`. With `dry_run` only
/// says what would go. Returns `files` (in deletion order), `notes`,
/// `deleted`.
#[pyfunction]
#[pyo3(signature = (url, *, older_than=None, keep_full=None, keep_inc_of_full=None, cleanup=false,
    dry_run=false, progress=None, log=None, cancel=None, **archive))]
#[allow(clippy::too_many_arguments)]
fn delete<'py>(
    py: Python<'py>,
    url: String,
    older_than: Option<&Bound<'py, PyAny>>,
    keep_full: Option<usize>,
    keep_inc_of_full: Option<usize>,
    cleanup: bool,
    dry_run: bool,
    progress: Option<Bound<'py, PyAny>>,
    log: Option<Bound<'py, PyAny>>,
    cancel: Option<PyRef<'py, Cancel>>,
    archive: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    use api::Policy;
    let older_than = parse_time(older_than)?;
    let policies: Vec<Policy> = [
        older_than.map(Policy::OlderThan),
        keep_full.map(Policy::AllButNFull),
        keep_inc_of_full.map(Policy::AllIncOfButNFull),
        cleanup.then_some(Policy::Cleanup),
    ]
    .into_iter()
    .flatten()
    .collect();
    let [policy] = policies[..] else {
        return Err(Usage::new_err("give exactly one of older_than, keep_full, keep_inc_of_full and cleanup=True"));
    };
    let o = api::DeleteOptions { archive: archive_from(py, url, archive, Purpose::Decrypt)?, policy, dry_run };
    let r = PyProgress::new(progress, log, cancel.as_deref()).run(py, |p, c| api::delete(&o, p, c))?;
    delete_report(py, &r)
}

/// Writes a full backup of the state at `time` (None: the newest set) from
/// the archive itself, so the chain's incrementals are no longer needed;
/// with `drop_old`, then deletes that chain (others stay; refused for a
/// time before the chain's end). Returns `from` (the
/// state's time), `backup` (as `backup` returns it) and `dropped` (as
/// `delete` returns it, or None).
#[pyfunction]
#[pyo3(signature = (url, *, time=None, drop_old=false, volsize=None, compress=true, progress=None, log=None,
    cancel=None, **archive))]
#[allow(clippy::too_many_arguments)]
fn coalesce<'py>(
    py: Python<'py>,
    url: String,
    time: Option<&Bound<'py, PyAny>>,
    drop_old: bool,
    volsize: Option<u64>,
    compress: bool,
    progress: Option<Bound<'py, PyAny>>,
    log: Option<Bound<'py, PyAny>>,
    cancel: Option<PyRef<'py, Cancel>>,
    archive: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let mut o = api::CoalesceOptions::new(archive_from(py, url, archive, Purpose::Both)?);
    o.time = parse_time(time)?;
    o.drop_old = drop_old;
    o.compress = compress;
    if let Some(v) = volsize {
        o.volsize = v;
    }
    let r = PyProgress::new(progress, log, cancel.as_deref()).run(py, |p, c| api::coalesce(&o, p, c))?;
    let dropped = r.dropped.as_ref().map(|d| delete_report(py, d)).transpose()?;
    Ok(dict!(py, "from" => r.from, "backup" => backup_report(py, &r.backup)?, "dropped" => dropped))
}

/// Tests that the backend at `url` answers (lists, writes, reads back and
/// deletes a probe, within seconds): a dict with `status` ("ok",
/// "unreachable", "auth_refused", "permission_denied", "not_found"),
/// `message`, `hint`, `files` and `archive` (whether a backup is there).
/// A failing backend is an answer, not an exception.
#[pyfunction]
#[pyo3(signature = (url, *, cancel=None))]
fn test_connection<'py>(
    py: Python<'py>,
    url: String,
    cancel: Option<PyRef<'py, Cancel>>,
) -> PyResult<Bound<'py, PyAny>> {
    let a = ArchiveOptions::new(url);
    let c = PyProgress::new(None, None, cancel.as_deref()).run(py, |p, c| api::test_connection(&a, p, c))?;
    ser_to_py(py, &c)
}

#[pymodule]
fn _dup(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Cancel>()?;
    m.add_function(wrap_pyfunction!(backup, m)?)?;
    m.add_function(wrap_pyfunction!(snapshots, m)?)?;
    m.add_function(wrap_pyfunction!(files_at, m)?)?;
    m.add_function(wrap_pyfunction!(changes, m)?)?;
    m.add_function(wrap_pyfunction!(file_history, m)?)?;
    m.add_function(wrap_pyfunction!(restore, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(delete, m)?)?;
    m.add_function(wrap_pyfunction!(coalesce, m)?)?;
    m.add_function(wrap_pyfunction!(test_connection, m)?)?;
    m.add("Error", py.get_type::<Error>())?;
    m.add("Usage", py.get_type::<Usage>())?;
    m.add("Partial", py.get_type::<Partial>())?;
    m.add("NoBackup", py.get_type::<NoBackup>())?;
    m.add("Locked", py.get_type::<Locked>())?;
    m.add("Crypto", py.get_type::<Crypto>())?;
    m.add("Corrupt", py.get_type::<Corrupt>())?;
    m.add("Unwritable", py.get_type::<Unwritable>())?;
    m.add("Unreachable", py.get_type::<Unreachable>())?;
    m.add("AuthRefused", py.get_type::<AuthRefused>())?;
    m.add("PermissionDenied", py.get_type::<PermissionDenied>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("Interrupted", py.get_type::<Interrupted>())?;
    Ok(())
}
