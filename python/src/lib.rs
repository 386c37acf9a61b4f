//! `dup._dup`: the verbs of [`dup::api`] for Python. Each call takes its
//! options as keyword arguments, releases the GIL while it works
//! ([`Python::detach`]), and reports through an optional Python callable
//! (called with the GIL taken again). Errors become `dup.Error` subclasses
//! carrying dup's kind, exit code and hint. Nothing is global: each call opens
//! its own archive, so calls in several Python threads run side by side.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
    flag: Arc<AtomicBool>,
}

#[pymethods]
impl Cancel {
    #[new]
    fn new() -> Self {
        Self::default()
    }
    /// Asks the job to stop; it raises `dup.Interrupted` soon after.
    fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }
    /// Whether `cancel()` was called (or a progress callback raised).
    #[getter]
    fn cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// Item events passed to the callback at most this often (the others are
/// all passed: start, finish, file, warning).
const ITEM_INTERVAL: Duration = Duration::from_millis(100);

/// A job's progress sink: each event as a dict to the Python callable. An
/// exception raised by the callable cancels the job and is raised again by
/// the call.
struct PyProgress {
    callback: Option<Py<PyAny>>,
    cancel: Cancel,
    raised: Mutex<Option<PyErr>>,
    last_item: Mutex<Option<Instant>>,
}

impl PyProgress {
    fn new(callback: Option<Bound<'_, PyAny>>, cancel: Option<&Cancel>) -> Self {
        PyProgress {
            callback: callback.map(Bound::unbind),
            cancel: cancel.cloned().unwrap_or_default(),
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

    /// The call's result: the callback's exception first (it caused the
    /// failure), then dup's error as a Python exception.
    fn result<T>(&self, py: Python<'_>, r: dup::Result<T>) -> PyResult<T> {
        if let Some(e) = self.raised.lock().ok().and_then(|mut g| g.take()) {
            return Err(e);
        }
        r.map_err(|e| py_error(py, e))
    }
}

impl Progress for PyProgress {
    fn event(&self, ev: Event) {
        let Some(cb) = &self.callback else { return };
        if self.cancel.cancelled() || (matches!(ev, Event::Item { .. }) && !self.item_due()) {
            return;
        }
        let Ok(value) = serde_json::to_value(&ev) else { return };
        let called = Python::attach(|py| -> PyResult<()> {
            cb.call1(py, (to_py(py, &value)?,))?;
            Ok(())
        });
        if let Err(e) = called {
            if let Ok(mut g) = self.raised.lock() {
                g.get_or_insert(e);
            }
            self.cancel.cancel();
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

/// Any serializable dup value as a Python dict/list.
fn ser_to_py<'py>(py: Python<'py>, v: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(v).map_err(|e| Error::new_err(e.to_string()))?;
    to_py(py, &value)
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

/// Keys from the options: none at all is an unencrypted archive; a
/// passphrase alone, symmetric encryption; recipients, a signing key or
/// key files go through GnuPG's keyring as the binaries do.
struct KeyArgs {
    passphrase: Option<Vec<u8>>,
    sign_passphrase: Option<Vec<u8>>,
    encrypt_keys: Vec<String>,
    sign_key: Option<String>,
    key_files: Vec<std::path::PathBuf>,
}

impl KeyArgs {
    fn keys(self, purpose: Purpose) -> dup::Result<Option<Keys>> {
        if self.encrypt_keys.is_empty() && self.sign_key.is_none() && self.key_files.is_empty() {
            return Ok(self.passphrase.map(Keys::with_passphrase));
        }
        let opts = KeyOptions {
            encrypt_keys: self.encrypt_keys,
            sign_key: self.sign_key,
            key_files: self.key_files,
            prompt: false,
            ..KeyOptions::default()
        };
        let env =
            KeyEnv { passphrase: self.passphrase, sign_passphrase: self.sign_passphrase, ..KeyEnv::from_process() };
        Keys::build(&opts, &env, purpose).map(Some)
    }
}

/// str or bytes, as bytes.
fn secret(v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<u8>>> {
    let Some(v) = v.filter(|v| !v.is_none()) else { return Ok(None) };
    match v.extract::<String>() {
        Ok(s) => Ok(Some(s.into_bytes())),
        Err(_) => Ok(Some(v.extract::<Vec<u8>>()?)),
    }
}

/// The archive options shared by every verb.
#[allow(clippy::too_many_arguments)]
fn archive_options(
    py: Python<'_>,
    url: String,
    archive_dir: Option<std::path::PathBuf>,
    name: Option<String>,
    passphrase: Option<&Bound<'_, PyAny>>,
    encrypt_keys: Option<Vec<String>>,
    sign_key: Option<String>,
    sign_passphrase: Option<&Bound<'_, PyAny>>,
    key_files: Option<Vec<std::path::PathBuf>>,
    purpose: Purpose,
) -> PyResult<ArchiveOptions> {
    let k = KeyArgs {
        passphrase: secret(passphrase)?,
        sign_passphrase: secret(sign_passphrase)?,
        encrypt_keys: encrypt_keys.unwrap_or_default(),
        sign_key,
        key_files: key_files.unwrap_or_default(),
    };
    let keys = py.detach(|| k.keys(purpose)).map_err(|e| py_error(py, e))?;
    Ok(ArchiveOptions { url, archive_dir, name, keys })
}

macro_rules! dict {
    ($py:expr, $($k:literal => $v:expr),* $(,)?) => {{
        let d = PyDict::new($py);
        $( d.set_item($k, $v)?; )*
        d
    }};
}

/// Backs up `source` to `url`; returns what was done (a dict).
#[pyfunction]
#[pyo3(signature = (source, url, *, mode="auto", selection=None, volsize=None, compress=true,
    passphrase=None, encrypt_keys=None, sign_key=None, sign_passphrase=None, key_files=None,
    archive_dir=None, name=None, progress=None, cancel=None))]
#[allow(clippy::too_many_arguments)]
fn backup<'py>(
    py: Python<'py>,
    source: std::path::PathBuf,
    url: String,
    mode: &str,
    selection: Option<Vec<String>>,
    volsize: Option<u64>,
    compress: bool,
    passphrase: Option<&Bound<'py, PyAny>>,
    encrypt_keys: Option<Vec<String>>,
    sign_key: Option<String>,
    sign_passphrase: Option<&Bound<'py, PyAny>>,
    key_files: Option<Vec<std::path::PathBuf>>,
    archive_dir: Option<std::path::PathBuf>,
    name: Option<String>,
    progress: Option<Bound<'py, PyAny>>,
    cancel: Option<PyRef<'py, Cancel>>,
) -> PyResult<Bound<'py, PyDict>> {
    let mode = match mode {
        "auto" => BackupMode::Auto,
        "full" => BackupMode::Full,
        "incremental" | "inc" => BackupMode::Incremental,
        _ => return Err(Usage::new_err(format!("mode must be auto, full or incremental, not {mode:?}"))),
    };
    let archive = archive_options(
        py,
        url,
        archive_dir,
        name,
        passphrase,
        encrypt_keys,
        sign_key,
        sign_passphrase,
        key_files,
        Purpose::Both,
    )?;
    let selection =
        dup::stage::scan::select::options_from_args(selection.unwrap_or_default().into_iter().map(Into::into))
            .map_err(|e| py_error(py, e))?;
    let mut o = BackupOptions::new(source, archive.url.clone());
    o.keys = archive.keys.clone();
    o.archive = archive;
    o.mode = mode;
    o.selection = selection;
    o.compress = compress;
    if let Some(v) = volsize {
        o.volsize = v;
    }
    let prog = PyProgress::new(progress, cancel.as_deref());
    let r = py.detach(|| api::backup(&o, &prog));
    let r = prog.result(py, r)?;
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

/// The archive's backup sets, chains oldest first (a list of dicts).
#[pyfunction]
#[pyo3(signature = (url, *, passphrase=None, key_files=None, archive_dir=None, name=None))]
fn snapshots<'py>(
    py: Python<'py>,
    url: String,
    passphrase: Option<&Bound<'py, PyAny>>,
    key_files: Option<Vec<std::path::PathBuf>>,
    archive_dir: Option<std::path::PathBuf>,
    name: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let a = archive_options(py, url, archive_dir, name, passphrase, None, None, None, key_files, Purpose::Decrypt)?;
    let sets = py.detach(|| api::snapshots(&a)).map_err(|e| py_error(py, e))?;
    ser_to_py(py, &sets)
}

/// The files present at `time` (None: the latest), as dicts; with `path`,
/// only that directory's direct children.
#[pyfunction]
#[pyo3(signature = (url, *, time=None, path=None, passphrase=None, key_files=None, archive_dir=None, name=None))]
#[allow(clippy::too_many_arguments)]
fn files_at<'py>(
    py: Python<'py>,
    url: String,
    time: Option<&Bound<'py, PyAny>>,
    path: Option<String>,
    passphrase: Option<&Bound<'py, PyAny>>,
    key_files: Option<Vec<std::path::PathBuf>>,
    archive_dir: Option<std::path::PathBuf>,
    name: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let t = parse_time(time)?;
    let a = archive_options(py, url, archive_dir, name, passphrase, None, None, None, key_files, Purpose::Decrypt)?;
    // "" and "." are the root.
    let dir = path.map(|p| match p.trim_matches('/') {
        "." => String::new(),
        d => d.to_string(),
    });
    let mut entries = Vec::new();
    let r = py.detach(|| {
        api::files_at(&a, t, |e| {
            let keep = match &dir {
                None => true,
                Some(d) => {
                    let p = e.path.0.as_slice();
                    let rest = match d.is_empty() {
                        true => (p != b".").then_some(p),
                        false => p.strip_prefix(d.as_bytes()).and_then(|rest| rest.strip_prefix(b"/")),
                    };
                    rest.is_some_and(|rest| !rest.is_empty() && !rest.contains(&b'/'))
                }
            };
            if keep {
                entries.push(e);
            }
            Ok(())
        })
    });
    r.map_err(|e| py_error(py, e))?;
    ser_to_py(py, &entries)
}

/// Restores the backup at `time` (None: the latest), or only `path` of it,
/// into `dest`. Raises when anything was skipped.
#[pyfunction]
#[pyo3(signature = (url, dest, *, path=None, time=None, force=false, passphrase=None, key_files=None,
    archive_dir=None, name=None, progress=None, cancel=None))]
#[allow(clippy::too_many_arguments)]
fn restore<'py>(
    py: Python<'py>,
    url: String,
    dest: std::path::PathBuf,
    path: Option<String>,
    time: Option<&Bound<'py, PyAny>>,
    force: bool,
    passphrase: Option<&Bound<'py, PyAny>>,
    key_files: Option<Vec<std::path::PathBuf>>,
    archive_dir: Option<std::path::PathBuf>,
    name: Option<String>,
    progress: Option<Bound<'py, PyAny>>,
    cancel: Option<PyRef<'py, Cancel>>,
) -> PyResult<Bound<'py, PyDict>> {
    use dup::stage::get;
    let t = parse_time(time)?;
    let a = archive_options(py, url, archive_dir, name, passphrase, None, None, None, key_files, Purpose::Decrypt)?;
    let opts = get::Options {
        url: a.url,
        time: t,
        path: path.map(String::into_bytes),
        archive_dir: a.archive_dir,
        name: a.name,
        keys: a.keys,
    };
    let prog = PyProgress::new(progress, cancel.as_deref());
    let r = py.detach(|| {
        let s = get::run(&opts, get::Action::Restore { dest, force, numeric_owner: false }, &prog)?;
        match s.error() {
            Some(e) => Err(e),
            None => Ok(s),
        }
    });
    let s = prog.result(py, r)?;
    Ok(dict!(py,
        "time" => s.time, "sets" => s.sets, "volumes" => s.volumes, "volume_bytes" => s.volume_bytes,
        "items" => s.items, "bytes" => s.bytes,
    ))
}

/// Tests that the backend answers (lists, writes, reads back, deletes a
/// probe); returns a dict with `status` ("ok" or what failed), `message`,
/// `hint`, never raising for an unreachable backend.
#[pyfunction]
fn test_connection<'py>(py: Python<'py>, url: String) -> PyResult<Bound<'py, PyAny>> {
    let a = ArchiveOptions::new(url);
    let c = py.detach(|| api::test_connection(&a)).map_err(|e| py_error(py, e))?;
    ser_to_py(py, &c)
}

#[pymodule]
fn _dup(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Cancel>()?;
    m.add_function(wrap_pyfunction!(backup, m)?)?;
    m.add_function(wrap_pyfunction!(snapshots, m)?)?;
    m.add_function(wrap_pyfunction!(files_at, m)?)?;
    m.add_function(wrap_pyfunction!(restore, m)?)?;
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
