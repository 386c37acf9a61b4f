//! One error type for the whole project, and the one place where an error
//! becomes an exit code.

use std::fmt;

/// What went wrong, in the terms a user (and a script) acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Anything without a more specific kind.
    Other,
    /// Bad command line.
    Usage,
    /// Some source files could not be read; the rest was done.
    Partial,
    /// No backup (chain, set, file) matches what was asked.
    NoBackup,
    /// Another process holds the lock.
    Locked,
    /// Wrong passphrase or missing secret key.
    Crypto,
    /// A volume (or other archive file) is missing or corrupt.
    Corrupt,
    /// A record stream is malformed, truncated or of another version.
    Stream,
    /// A local file system takes no more writes: no space left, quota
    /// exceeded, or mounted read-only (`ENOSPC`, `EDQUOT`, `EROFS`). Going
    /// on with the next item cannot help, so a run ends at once.
    Unwritable,
    /// A connection test (dup-ls --check): the backend cannot be reached.
    Unreachable,
    /// A connection test: the backend refused the credentials.
    AuthRefused,
    /// A connection test: logged in, but not allowed to list or write there.
    PermissionDenied,
    /// A connection test: the bucket or path does not exist.
    NotFound,
    /// Interrupted by a signal.
    Interrupted,
    /// Standard output was closed by the reader (`| head`): not a failure.
    StdoutClosed,
}

impl Kind {
    /// The documented exit code of each kind (DESIGN.md, man/dup.7).
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::StdoutClosed => 0,
            Kind::Other | Kind::Stream | Kind::Unwritable => 1,
            Kind::Usage => 2,
            Kind::Partial => 3,
            Kind::NoBackup => 10,
            Kind::Locked => 11,
            Kind::Crypto => 12,
            Kind::Corrupt => 13,
            Kind::Unreachable => 14,
            Kind::AuthRefused => 15,
            Kind::PermissionDenied => 16,
            Kind::NotFound => 17,
            Kind::Interrupted => 130,
        }
    }
}

/// An error with its kind, a message saying what happened, and optionally a
/// hint saying what to do next.
#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    pub hint: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), hint: None }
    }
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(Kind::Other, message)
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }
    pub fn stream(message: impl Into<String>) -> Self {
        Self::new(Kind::Stream, message)
    }
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(Kind::Corrupt, message)
    }
    /// Adds what the user should do next.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    /// Prefixes the message with where it happened (`reading foo: ...`).
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
    /// An I/O error on `what` (a path, a volume name...).
    pub fn io(what: impl fmt::Display, e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Self::new(Kind::StdoutClosed, format!("{what}: {e}"));
        }
        if is_unwritable(&e) {
            return Self::new(Kind::Unwritable, format!("{what}: {e}"));
        }
        Self::other(format!("{what}: {e}"))
    }
    pub fn exit_code(&self) -> i32 {
        self.kind.exit_code()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Whether `e` says the file system takes no more writes (no space, over
/// quota, read-only): see [`Kind::Unwritable`].
pub fn is_unwritable(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EROFS))
}

/// The [`Error`] an `io::Error` carries (record content readers, tar
/// streams and the like pass theirs through `io::Error::other`), or the
/// `io::Error` itself when it carries none.
pub fn carried(e: std::io::Error) -> std::result::Result<Error, std::io::Error> {
    if !e.get_ref().is_some_and(|i| i.is::<Error>()) {
        return Err(e);
    }
    match e.into_inner().map(|i| i.downcast::<Error>()) {
        Some(Ok(err)) => Ok(*err),
        Some(Err(other)) => Err(std::io::Error::other(other)),
        None => Err(std::io::Error::other("an I/O error without details")),
    }
}

/// Converts an I/O error from a reader or writer that carries an [`Error`]
/// (a record stream's content, a volume's compressor) back into that error,
/// or else an I/O error on `what`.
pub fn content_error(what: impl fmt::Display, e: std::io::Error) -> Error {
    carried(e).unwrap_or_else(|e| Error::io(what, e))
}

/// Adds context to any fallible result.
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::io(what, e))
    }
}

impl<T> Context<T> for Result<T> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.context(what))
    }
}
