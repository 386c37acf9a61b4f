//! What a backend's failure means: its class, the server's words, what to
//! check next; and the connection check ([`Storage::check`]).

use std::time::Duration;

use opendal::ErrorKind;

use super::layers::{build, object_store};
use super::sftp::{sftp_missing, ssh_command};
use super::{Env, Storage, TEMP_PREFIX, Target, parse_url_with, process_env, redact};
use crate::error::{Error, Kind, Result};

impl Storage {
    /// Tests the connection the way a backup uses it: lists the archive,
    /// then writes, reads back and deletes a small probe file under a
    /// temporary name (which readers ignore). `marks_backup` tells which
    /// listed names show that a backup is there ([`Check::archive`]). An
    /// archive directory that does not exist is [`CheckStatus::NotFound`],
    /// and is not made.
    pub fn check(&self, marks_backup: MarksBackup) -> Check {
        let mut c = Check {
            status: CheckStatus::Ok,
            url: self.url.clone(),
            message: String::new(),
            hint: None,
            files: None,
            archive: false,
        };
        let fail = |mut c: Check, what: &str, e: opendal::Error| {
            c.status = classify(&e);
            c.message = format!("{what}: {}: {}", c.status.phrase(), cause(&e));
            c.hint = Some(hint(c.status, &self.target));
            c
        };
        // A directory that is not there is not made (by the probe below):
        // it may be a drive that is not mounted, or a typo.
        if self.root_is_missing() {
            return missing(c);
        }
        let listing = match self.blocking.list("") {
            Ok(v) => v,
            Err(e) if e.kind() == ErrorKind::NotFound && !is_missing_bucket(&e) => return missing(c),
            Err(e) => return fail(c, "listing", e),
        };
        let names: Vec<&str> = listing.iter().filter(|e| !e.metadata().is_dir()).map(|e| e.name()).collect();
        c.files = Some(names.len());
        c.archive = names.iter().any(|n| marks_backup(n));
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let probe = format!("{TEMP_PREFIX}check.{}.{nanos}", std::process::id());
        let body: Vec<u8> = format!("dup connection test {nanos}\n").into_bytes();
        if let Err(e) = self.blocking.write(&probe, body.clone()) {
            return fail(c, "writing a test file", e);
        }
        let back = self.blocking.read(&probe).map(|b| b.to_vec());
        let deleted = self.blocking.delete(&probe);
        match back {
            Err(e) => return fail(c, "reading the test file back", e),
            Ok(b) if b != body => {
                c.status = CheckStatus::Failed;
                c.message = format!("the test file {probe} read back differs from what was written");
                c.hint = Some("the server does not store files faithfully; check it".into());
                return c;
            }
            Ok(_) => {}
        }
        if let Err(e) = deleted {
            return fail(c, "deleting the test file", e);
        }
        c
    }
}

/// The answer of [`Storage::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Listing, writing, reading and deleting work.
    Ok,
    /// No connection: refused, timed out, unknown host.
    Unreachable,
    /// The server refused the credentials (key, password, signature).
    AuthRefused,
    /// Logged in, but not allowed to list or write here.
    PermissionDenied,
    /// The bucket or path does not exist.
    NotFound,
    /// Anything else.
    Failed,
}

impl CheckStatus {
    /// Its name in the check record (`ok`, `auth_refused`, ...).
    pub fn as_str(self) -> &'static str {
        crate::names::variant_name(&self)
    }

    pub(super) fn phrase(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Unreachable => "cannot connect",
            CheckStatus::AuthRefused => "login refused",
            CheckStatus::PermissionDenied => "permission denied",
            CheckStatus::NotFound => "not found",
            CheckStatus::Failed => "failed",
        }
    }
}

/// What [`Storage::check`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Check {
    pub status: CheckStatus,
    /// The URL, without its password.
    pub url: String,
    /// What failed, and the server's or system's words (empty when ok).
    pub message: String,
    /// What to check next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Files at the archive's top level, when listing worked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<usize>,
    /// Whether a backup is there (a name the caller's [`MarksBackup`]
    /// accepts, such as a manifest).
    pub archive: bool,
}

impl Check {
    pub fn is_ok(&self) -> bool {
        self.status == CheckStatus::Ok
    }

    /// The error kind of a failed check, which sets the exit code of
    /// `dup-ls --check` (man/dup-ls.1): 14 unreachable, 15 authentication
    /// refused, 16 permission denied, 17 not found, 1 anything else.
    pub fn error_kind(&self) -> Kind {
        match self.status {
            CheckStatus::Ok | CheckStatus::Failed => Kind::Other,
            CheckStatus::Unreachable => Kind::Unreachable,
            CheckStatus::AuthRefused => Kind::AuthRefused,
            CheckStatus::PermissionDenied => Kind::PermissionDenied,
            CheckStatus::NotFound => Kind::NotFound,
        }
    }

    /// The check as an error (exit code 1) unless it is ok.
    pub fn into_result(self) -> Result<Check> {
        if self.is_ok() { Ok(self) } else { Self::into_error(self) }
    }

    pub(super) fn into_error<T>(self) -> Result<T> {
        let e = Error::other(format!("{}: {}", self.url, self.message));
        Err(match self.hint {
            Some(h) => e.hint(h),
            None => e,
        })
    }
}

/// Whether a file name at the archive's top level shows that a backup is
/// there; storage does not know the names, its caller does.
pub type MarksBackup<'a> = &'a dyn Fn(&str) -> bool;

impl Storage {
    /// Whether the archive's directory is known not to exist (WebDAV, SFTP,
    /// file://; object stores have no directories). WebDAV lists a missing
    /// directory as empty and opendal takes its root for granted, so the
    /// directory is looked up from its parent; opendal's SFTP connections
    /// make their root, so SFTP is asked outside opendal.
    fn root_is_missing(&self) -> bool {
        if object_store(&self.target) {
            return false;
        }
        let Some(root) = self.target.get("root").map(|r| r.trim_end_matches('/').to_string()) else {
            return false;
        };
        if self.target.scheme == "sftp" {
            return sftp_missing(&self.target, &self.settings, if root.is_empty() { "/" } else { &root });
        }
        let Some((parent, name)) = root.rsplit_once('/').filter(|(_, n)| !n.is_empty()) else {
            return false;
        };
        let mut t = self.target.clone();
        t.set("root", if parent.is_empty() { "/" } else { parent });
        let parent_op = {
            let _guard = self.rt.enter();
            build(&t, &self.settings, &self.url, self.settings.timeout).and_then(opendal::blocking::Operator::new)
        };
        let Ok(parent_op) = parent_op else {
            return false;
        };
        matches!(parent_op.stat(&format!("{name}/")), Err(e) if e.kind() == ErrorKind::NotFound)
    }
}

/// The longest a connection test waits for one request (less when
/// `DUP_TIMEOUT` is lower); it makes no retries.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the backend at `url` and checks it (see [`Storage::check`]),
/// without retries and waiting at most [`CHECK_TIMEOUT`] for each request,
/// so that an unreachable server is answered within seconds. Nothing is
/// created: a `file://` directory (or a WebDAV or SFTP one) that does not
/// exist is [`CheckStatus::NotFound`]. An error means the URL or the
/// settings are wrong (a usage error); every answer of the server is a
/// [`Check`].
pub fn test_connection(url: &str, marks_backup: MarksBackup) -> Result<Check> {
    test_connection_with(url, &process_env, marks_backup)
}

/// Like [`test_connection`], reading environment variables through `env`.
pub fn test_connection_with(url: &str, env: Env, marks_backup: MarksBackup) -> Result<Check> {
    let target = parse_url_with(url, env)?;
    // Opening a file:// storage makes its directory: look first.
    if target.scheme == "fs"
        && let Some(root) = target.get("root")
        && !std::path::Path::new(root).is_dir()
    {
        let c = Check {
            status: CheckStatus::NotFound,
            url: redact(url),
            message: String::new(),
            hint: None,
            files: None,
            archive: false,
        };
        return Ok(missing(c));
    }
    Ok(match Storage::connect(url, env, true)? {
        Ok(s) => s.check(marks_backup),
        Err(c) => c,
    })
}

/// The answer for an archive directory that does not exist (nothing is made).
fn missing(mut c: Check) -> Check {
    c.status = CheckStatus::NotFound;
    c.message = "listing: not found: the directory does not exist (nothing was created)".into();
    c.hint = Some(
        "a first backup creates it; if a backup should be there, check the path (a typo? a drive that is not \
         mounted?)"
            .into(),
    );
    c
}

/// The innermost error message: what the server or the system said.
pub(super) fn cause(e: &opendal::Error) -> String {
    let mut msg = e.message().to_string();
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        let text = s.to_string();
        if !text.is_empty() {
            msg = text;
        }
        src = s.source();
    }
    // An HTML error page: its title says it.
    if let (Some(a), Some(b)) = (msg.find("<title>"), msg.find("</title>"))
        && a + 7 <= b
    {
        msg = msg[a + 7..b].to_string();
    }
    let msg = msg.trim().replace('\n', " ");
    if msg.len() > 300 {
        let mut end = 300;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        return format!("{}...", &msg[..end]);
    }
    msg
}

/// An error's message, context and sources, lowercased, for matching words:
/// its Debug form without the backtrace opendal adds when RUST_BACKTRACE is
/// set (whose frames, `TimeoutLayer`'s among them, would match "timeout").
pub(super) fn error_text(e: &opendal::Error) -> String {
    let text = format!("{e:?}");
    let end = text.find("\nBacktrace:\n").unwrap_or(text.len());
    text[..end].to_lowercase()
}

/// Whether `e` says the bucket (S3, GCS) or container (Azure) is missing,
/// rather than a file.
pub(super) fn is_missing_bucket(e: &opendal::Error) -> bool {
    let text = error_text(e);
    ["nosuchbucket", "containernotfound", "bucket does not exist"].iter().any(|w| text.contains(w))
}

/// Which of the check answers an error is.
pub(super) fn classify(e: &opendal::Error) -> CheckStatus {
    let text = error_text(e);
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    let auth = [
        "signaturedoesnotmatch",
        "invalidaccesskeyid",
        "invalidtoken",
        "expiredtoken",
        "status: 401",
        "unauthorized",
        "permission denied (publickey",
        "permission denied (password",
        "host key verification failed",
        "no valid credential",
        // Azure (Azurite says AuthorizationFailure with the same words); Google's token endpoint.
        "authenticationfailed",
        "server failed to authenticate",
        "noauthenticationinformation",
        "invalid_grant",
        "too many authentication failures",
    ];
    match e.kind() {
        _ if is_missing_bucket(e) => CheckStatus::NotFound,
        ErrorKind::NotFound => CheckStatus::NotFound,
        ErrorKind::PermissionDenied if has(&auth) => CheckStatus::AuthRefused,
        ErrorKind::PermissionDenied => CheckStatus::PermissionDenied,
        _ if has(&auth) => CheckStatus::AuthRefused,
        _ if has(&[
            "connection refused",
            "timed out",
            "timeout",
            "dns error",
            "could not resolve",
            "name or service not known",
            "failed to lookup",
            "network is unreachable",
            "no route to host",
            "connection reset",
            "error sending request",
            "tcp connect error",
            "connection closed",
            "connectionaborted",
            "connection aborted",
        ]) =>
        {
            CheckStatus::Unreachable
        }
        _ => CheckStatus::Failed,
    }
}

/// What to check, for each kind of failure and backend.
pub(super) fn hint(status: CheckStatus, t: &Target) -> String {
    let endpoint = match (t.get("endpoint"), t.scheme.as_str()) {
        (Some(e), _) => e.to_string(),
        (None, "s3") => "the AWS endpoint for AWS_REGION".into(),
        (None, "gcs") => "https://storage.googleapis.com".into(),
        (None, _) => "the server".into(),
    };
    let scheme = t.scheme.as_str();
    match (status, scheme) {
        (CheckStatus::Unreachable, "s3") => format!(
            "check that the S3 server at {endpoint} is up and reachable (the host and port in the URL, or \
             DUP_S3_ENDPOINT / AWS_ENDPOINT_URL); DUP_TIMEOUT and DUP_NUM_RETRIES set how long dup waits"
        ),
        (CheckStatus::Unreachable, "sftp") => {
            format!("check that `{}` connects from here (host, port, network; ~/.ssh/config applies)", ssh_command(t))
        }
        (CheckStatus::Unreachable, "gcs" | "azblob") => format!(
            "check that {endpoint} is reachable from here ({} overrides it); DUP_TIMEOUT and DUP_NUM_RETRIES set \
             how long dup waits",
            if scheme == "gcs" { "DUP_GCS_ENDPOINT" } else { "DUP_AZBLOB_ENDPOINT" }
        ),
        (CheckStatus::Unreachable, _) => format!(
            "check that the server at {endpoint} is up and reachable; DUP_TIMEOUT and DUP_NUM_RETRIES set how long dup waits"
        ),
        (CheckStatus::AuthRefused, "s3") => {
            "the server refused the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and \
             AWS_SESSION_TOKEN, AWS_REGION)"
                .into()
        }
        (CheckStatus::AuthRefused, "sftp") => "ssh could not log in: check the key (ssh-agent, IdentityFile in \
             ~/.ssh/config, DUP_SSH_KEY), the user in the URL, and that the host key is in ~/.ssh/known_hosts \
             (DUP_SSH_KNOWN_HOSTS=add accepts a new host)"
            .into(),
        (CheckStatus::AuthRefused, "gcs") => "the credentials were refused: check the key file named by \
             GOOGLE_APPLICATION_CREDENTIALS (a service account key that is not disabled or deleted)"
            .into(),
        (CheckStatus::AuthRefused, "azblob") => "the server refused the credentials: check the account name and \
             key or the SAS token (and its expiry) in AZURE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT and \
             AZURE_STORAGE_KEY"
            .into(),
        (CheckStatus::AuthRefused, _) => {
            "the server refused the login: check the user in the URL and the password (in the URL or FTP_PASSWORD)"
                .into()
        }
        (CheckStatus::PermissionDenied, "s3") => {
            "the credentials were accepted but may not list or write here: check the bucket policy for this key".into()
        }
        (CheckStatus::PermissionDenied, "gcs") => "the credentials were accepted but may not list or write here: \
             check the service account's roles on the bucket (Storage Object Admin, or list, create, get and delete \
             on objects)"
            .into(),
        (CheckStatus::PermissionDenied, "azblob") => "the credentials were accepted but may not list or write \
             here: check the SAS token's permissions (read, add, create, write, delete, list) or the account's \
             network rules"
            .into(),
        (CheckStatus::PermissionDenied, _) => {
            "the login was accepted but may not list or write here: check the permissions of the path".into()
        }
        (CheckStatus::NotFound, "s3") => {
            "the bucket does not exist: check its name and region, or create it (dup does not create buckets)".into()
        }
        (CheckStatus::NotFound, "gcs") => {
            "the bucket does not exist: check its name, or create it (dup does not create buckets)".into()
        }
        (CheckStatus::NotFound, "azblob") => "the container does not exist: check its name and the storage \
             account, or create it (dup does not create containers; duplicity did)"
            .into(),
        (CheckStatus::NotFound, _) => "the path does not exist on the server: check the URL".into(),
        _ => "check that the backend is reachable and try again".into(),
    }
}

pub(super) fn open_error(url: &str, t: &Target, e: opendal::Error) -> Error {
    if e.kind() == ErrorKind::ConfigInvalid {
        return Error::usage(format!("{url}: {}", cause(&e))).hint("see dup-backends(7)");
    }
    backend_error(url, t, "opening the backend", e)
}

pub(super) fn backend_error(url: &str, t: &Target, what: &str, e: opendal::Error) -> Error {
    log::debug!("{url}: {what}: {e:?}");
    if e.kind() == ErrorKind::NotFound && !is_missing_bucket(&e) {
        return Error::new(Kind::Corrupt, format!("{url}: {what}: the file is missing on the backend"))
            .hint("`dup-ls URL` shows what the archive holds");
    }
    let status = classify(&e);
    Error::other(format!("{url}: {what}: {}: {}", status.phrase(), cause(&e))).hint(hint(status, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Named so that, under RUST_BACKTRACE=1, the backtrace opendal captures
    /// for an unexpected error has a frame containing "timeout".
    #[test]
    fn classify_ignores_timeout_in_backtrace() {
        let response = |status: u16| format!("Parts {{ status: {status}, version: HTTP/1.1, headers: {{}} }}");
        let bad_request =
            opendal::Error::new(ErrorKind::Unexpected, "invalid uploadType").with_context("response", response(400));
        assert_eq!(classify(&bad_request), CheckStatus::Failed, "{bad_request:?}");
        let timed_out = opendal::Error::new(ErrorKind::Unexpected, "operation timeout reached");
        assert_eq!(classify(&timed_out), CheckStatus::Unreachable);
        // GCS's and Azure's missing bucket or container; Azure's refused key.
        for text in [
            r#"GcsError { code: 404, message: "The specified bucket does not exist." }"#,
            r#"code: "ContainerNotFound""#,
        ] {
            let e = opendal::Error::new(ErrorKind::NotFound, text);
            assert!(is_missing_bucket(&e) && classify(&e) == CheckStatus::NotFound, "{text}");
        }
        assert!(!is_missing_bucket(&opendal::Error::new(ErrorKind::NotFound, "BlobNotFound")));
        let azure = opendal::Error::new(ErrorKind::PermissionDenied, r#"AzblobError { code: "AuthenticationFailed" }"#);
        assert_eq!(classify(&azure), CheckStatus::AuthRefused);
        let azurite = opendal::Error::new(
            ErrorKind::PermissionDenied,
            r#"AzblobError { code: "AuthorizationFailure", message: "Server failed to authenticate the request." }"#,
        );
        assert_eq!(classify(&azurite), CheckStatus::AuthRefused);
        let firewall = opendal::Error::new(
            ErrorKind::PermissionDenied,
            r#"AzblobError { code: "AuthorizationFailure", message: "This request is not authorized to perform this operation." }"#,
        );
        assert_eq!(classify(&firewall), CheckStatus::PermissionDenied);
    }
}
