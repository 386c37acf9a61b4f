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

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use opendal::layers::{LoggingInterceptor, LoggingLayer, RetryEvent, RetryLayer, TimeoutLayer};
use opendal::options::WriteOptions;
use opendal::raw::{self, Operation, oio};
use opendal::{Buffer, ErrorKind};

use crate::error::{Error, Kind, Result};
use crate::record::content_error;
use crate::spool::{Spool, SpoolReader};

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

/// A backend dup reads: an opendal service, compiled in by the cargo
/// feature of the same name (Cargo.toml's `[features]`).
#[derive(Debug)]
pub struct Backend {
    /// The cargo feature, and opendal's service name (`Target::scheme`).
    pub feature: &'static str,
    /// Its URL schemes, as messages list them.
    pub schemes: &'static [&'static str],
    /// Other URL schemes it reads (duplicity's spellings, not listed).
    pub aliases: &'static [&'static str],
    /// Whether this build has it.
    pub compiled: bool,
}

/// Every backend dup knows, compiled in or not (fs, s3, sftp and webdav are
/// the default features; gcs and azblob are opt-in).
pub const BACKENDS: &[Backend] = &[
    Backend { feature: "fs", schemes: &["file"], aliases: &[], compiled: cfg!(feature = "fs") },
    Backend { feature: "s3", schemes: &["s3", "s3+http"], aliases: &["boto3+s3"], compiled: cfg!(feature = "s3") },
    Backend { feature: "sftp", schemes: &["sftp", "scp"], aliases: &[], compiled: cfg!(feature = "sftp") },
    Backend { feature: "webdav", schemes: &["webdav", "webdavs"], aliases: &[], compiled: cfg!(feature = "webdav") },
    Backend { feature: "gcs", schemes: &["gs"], aliases: &[], compiled: cfg!(feature = "gcs") },
    Backend { feature: "azblob", schemes: &["azure"], aliases: &[], compiled: cfg!(feature = "azblob") },
];

/// The backend reading URLs of `scheme` (without `://`).
fn backend_of(scheme: &str) -> Option<&'static Backend> {
    BACKENDS.iter().find(|b| b.schemes.contains(&scheme) || b.aliases.contains(&scheme))
}

/// The URL schemes this build reads, for messages: `file://, s3://, ...`.
pub fn schemes() -> String {
    let all: Vec<String> =
        BACKENDS.iter().filter(|b| b.compiled).flat_map(|b| b.schemes).map(|s| format!("{s}://")).collect();
    if all.is_empty() { "none".into() } else { all.join(", ") }
}

/// What this build reads, and which features would add the rest.
fn supported_hint() -> String {
    let missing: Vec<String> = BACKENDS
        .iter()
        .filter(|b| !b.compiled)
        .map(|b| {
            let s: Vec<String> = b.schemes.iter().map(|s| format!("{s}://")).collect();
            format!("{} (feature {})", s.join(", "), b.feature)
        })
        .collect();
    let mut h = format!("supported: {}", schemes());
    if !missing.is_empty() {
        h.push_str(&format!("; not built in: {}", missing.join(", ")));
    }
    h.push_str(" (see dup-backends(7))");
    h
}

/// Looks up an environment variable (the process environment by default;
/// front ends can pass their own).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A parsed backend URL: opendal's scheme and its configuration.
#[derive(Clone, PartialEq)]
pub struct Target {
    pub scheme: String,
    pub config: Vec<(String, String)>,
}

const SECRET_KEYS: &[&str] = &["password", "secret_access_key", "session_token", "account_key", "sas_token"];

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<(&str, &str)> = self
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), if SECRET_KEYS.contains(&k.as_str()) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("Target").field("scheme", &self.scheme).field("config", &shown).finish()
    }
}

impl Target {
    /// The value of one configuration key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.config.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.config.iter_mut().find(|(k, _)| k == key) {
            Some(kv) => kv.1 = value,
            None => self.config.push((key.to_string(), value)),
        }
    }
}

/// Parses a duplicity-style URL, with credentials from the process environment.
pub fn parse_url(url: &str) -> Result<Target> {
    parse_url_with(url, &process_env)
}

/// The parts of `scheme://[user[:password]@]host[:port][/path]`.
#[derive(Debug, Default, PartialEq)]
struct Parts {
    user: Option<String>,
    password: Option<String>,
    host: String,
    port: Option<u16>,
    /// Everything after the authority, without its first `/`.
    path: String,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn split_url(rest: &str) -> std::result::Result<Parts, String> {
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((u, p)) => (Some(percent_decode(u)), Some(percent_decode(p))),
            None => (Some(percent_decode(u)), None),
        },
        None => (None, None),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("an IPv6 address needs its closing ]")?;
        (format!("[{h}]"), after.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().map_err(|_| format!("'{p}' is not a port number"))?),
        None => None,
    };
    if host.is_empty() {
        return Err("no host name".into());
    }
    Ok(Parts { user: user.filter(|u| !u.is_empty()), password, host, port, path: path.to_string() })
}

/// Parses a duplicity-style URL; environment variables are read through `env`.
/// A URL of a backend this build does not have is a usage error naming the
/// cargo feature that adds it.
pub fn parse_url_with(url: &str, env: Env) -> Result<Target> {
    if let Some((scheme, _)) = url.split_once("://")
        && let Some(b) = backend_of(scheme)
        && !b.compiled
    {
        return Err(Error::usage(format!("{}: this dup was built without the {} backend", redact(url), b.feature))
            .hint(format!("rebuild with `cargo build --release --features {}` (see dup-backends(7))", b.feature)));
    }
    parse_target(url, env)
}

/// [`parse_url_with`] for any backend, compiled in or not.
fn parse_target(url: &str, env: Env) -> Result<Target> {
    let shown = redact(url);
    let bad =
        |why: &str| Error::usage(format!("{shown}: {why}")).hint(format!("see dup-backends(7); {}", supported_hint()));
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
            Ok(Target { scheme: "fs".into(), config: vec![("root".into(), root)] })
        }
        "s3" | "s3+http" | "boto3+s3" => parse_s3(scheme, rest, env).map_err(|why| bad(&why)),
        "sftp" | "scp" => {
            let p = split_url(rest).map_err(|why| bad(&why))?;
            if p.password.is_some() {
                return Err(bad("passwords are not supported for sftp:// (dup runs the ssh client in batch mode)")
                    .hint(
                        "log in with a key: ssh-agent, IdentityFile in ~/.ssh/config, or DUP_SSH_KEY=/path/to/key; \
                     remove the password from the URL",
                    ));
            }
            let endpoint = match p.port {
                Some(port) => format!("ssh://{}:{port}", p.host),
                None => format!("ssh://{}", p.host),
            };
            // duplicity: sftp://host/rel is relative to the login directory,
            // sftp://host//abs absolute; a relative root is resolved at open.
            let mut config = vec![("endpoint".to_string(), endpoint), ("root".to_string(), p.path.clone())];
            if let Some(u) = p.user {
                config.push(("user".into(), u));
            }
            if let Some(k) = env("DUP_SSH_KEY") {
                config.push(("key".into(), k));
            }
            let strategy = env("DUP_SSH_KNOWN_HOSTS").unwrap_or_else(|| "strict".into());
            if !["strict", "add", "accept"].contains(&strategy.as_str()) {
                return Err(Error::usage(format!("DUP_SSH_KNOWN_HOSTS={strategy}: use strict, add or accept")));
            }
            config.push(("known_hosts_strategy".into(), strategy));
            Ok(Target { scheme: "sftp".into(), config })
        }
        "webdav" | "webdavs" => {
            let p = split_url(rest).map_err(|why| bad(&why))?;
            let http = if scheme == "webdavs" { "https" } else { "http" };
            let endpoint = match p.port {
                Some(port) => format!("{http}://{}:{port}", p.host),
                None => format!("{http}://{}", p.host),
            };
            let mut config = vec![("endpoint".to_string(), endpoint), ("root".to_string(), format!("/{}", p.path))];
            if let Some(u) = p.user {
                config.push(("username".into(), u));
                if let Some(pw) = p.password.or_else(|| env("FTP_PASSWORD")) {
                    config.push(("password".into(), pw));
                }
            }
            Ok(Target { scheme: "webdav".into(), config })
        }
        "gs" => parse_gcs(&shown, rest, env),
        "azure" => parse_azure(&shown, rest, env),
        other => Err(Error::usage(format!("{shown}: the backend '{other}://' is not supported by this build"))
            .hint(supported_hint())),
    }
}

/// The S3 endpoint given by the environment, if any.
fn s3_endpoint_env(env: Env) -> Option<String> {
    ["DUP_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"].iter().find_map(|k| env(k))
}

/// `s3://bucket[/prefix]` with the endpoint from the environment (or AWS);
/// duplicity 0.8's `s3://host[:port]/bucket[/prefix]` when no endpoint is set
/// and the first part has a dot or a port; `s3+http://bucket[/prefix]`.
fn parse_s3(scheme: &str, rest: &str, env: Env) -> std::result::Result<Target, String> {
    let rest = rest.trim_end_matches('/');
    let (first, after) = rest.split_once('/').unwrap_or((rest, ""));
    if first.is_empty() {
        return Err("no bucket name".into());
    }
    let mut endpoint = s3_endpoint_env(env);
    let (bucket, prefix) = if scheme == "s3" && endpoint.is_none() && (first.contains('.') || first.contains(':')) {
        let http = if env("DUP_S3_UNENCRYPTED_CONNECTION").is_some_and(|v| v != "0") { "http" } else { "https" };
        endpoint = Some(format!("{http}://{first}"));
        let (b, p) = after.split_once('/').unwrap_or((after, ""));
        if b.is_empty() {
            return Err(format!("no bucket name after the host {first}"));
        }
        (b, p)
    } else {
        (first, after)
    };
    if bucket.contains(':') || bucket.contains('@') {
        return Err(format!("'{bucket}' is not a bucket name"));
    }
    let region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into());
    let mut config = vec![
        ("bucket".to_string(), bucket.to_string()),
        ("root".to_string(), format!("/{prefix}")),
        ("region".to_string(), region),
        // Never ask the EC2 instance metadata service (a request off this host).
        ("disable_ec2_metadata".to_string(), "true".to_string()),
    ];
    if let Some(e) = endpoint {
        config.push(("endpoint".into(), e.trim_end_matches('/').to_string()));
    }
    match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(ak), Some(sk)) => {
            config.push(("access_key_id".into(), ak));
            config.push(("secret_access_key".into(), sk));
            if let Some(t) = env("AWS_SESSION_TOKEN") {
                config.push(("session_token".into(), t));
            }
            // Only these keys: no ~/.aws files.
            config.push(("disable_config_load".into(), "true".into()));
        }
        // Like boto3: the shared files ~/.aws/credentials and ~/.aws/config.
        _ => {
            if let Some(p) = env("AWS_PROFILE") {
                config.push(("profile".into(), p));
            }
        }
    }
    Ok(Target { scheme: "s3".into(), config })
}

/// `gs://bucket[/prefix]`, duplicity's Google Cloud Storage form, with the
/// credentials file (a service account key) named by
/// `GOOGLE_APPLICATION_CREDENTIALS` and the endpoint from `DUP_GCS_ENDPOINT`
/// (or Google's). Nothing else is read: no gcloud files, no metadata server.
/// With an endpoint set and no credentials, requests go unsigned (emulators).
fn parse_gcs(shown: &str, rest: &str, env: Env) -> Result<Target> {
    let usage = |why: String| {
        Error::usage(format!("{shown}: {why}")).hint("the form is gs://bucket[/prefix] (see dup-backends(7))")
    };
    let rest = rest.trim_end_matches('/');
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(usage("no bucket name".into()));
    }
    if bucket.contains([':', '@']) {
        return Err(usage(format!("'{bucket}' is not a bucket name")));
    }
    let mut config = vec![
        ("bucket".to_string(), bucket.to_string()),
        ("root".to_string(), format!("/{prefix}")),
        // Only the credentials named here: no ~/.config/gcloud, and never a
        // request to the GCE metadata server.
        ("disable_config_load".to_string(), "true".to_string()),
        ("disable_vm_metadata".to_string(), "true".to_string()),
    ];
    let endpoint = env("DUP_GCS_ENDPOINT");
    match (env("GOOGLE_APPLICATION_CREDENTIALS"), &endpoint) {
        (Some(path), _) => {
            if !std::path::Path::new(&path).is_file() {
                return Err(Error::usage(format!("{shown}: GOOGLE_APPLICATION_CREDENTIALS={path}: no such file"))
                    .hint("set it to the path of the service account key (JSON) for the bucket"));
            }
            config.push(("credential_path".into(), path));
        }
        (None, Some(_)) => config.push(("skip_signature".into(), "true".into())),
        (None, None) => {
            return Err(Error::usage(format!(
                "{shown}: no Google Cloud credentials: GOOGLE_APPLICATION_CREDENTIALS is not set"
            ))
            .hint(
                "set GOOGLE_APPLICATION_CREDENTIALS to the path of a service account key (JSON) that may use the \
                 bucket; duplicity's GS_ACCESS_KEY_ID and GS_SECRET_ACCESS_KEY (HMAC keys) are not read \
                 (see dup-backends(7))",
            ));
        }
    }
    if let Some(e) = endpoint {
        config.push(("endpoint".into(), e.trim_end_matches('/').to_string()));
    }
    Ok(Target { scheme: "gcs".into(), config })
}

/// Where the Azure credentials come from, for messages.
const AZURE_CREDENTIALS_HINT: &str = "set AZURE_CONNECTION_STRING (as for duplicity; or \
     AZURE_STORAGE_CONNECTION_STRING), or AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY (see dup-backends(7))";

/// Azure's development storage (Azurite): its documented account and key.
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Azure credentials and endpoint, from the environment.
struct AzureAccess {
    account: Option<String>,
    key: Option<String>,
    sas: Option<String>,
    endpoint: Option<String>,
    /// The variables they came from, for messages.
    source: String,
}

/// `azure://container[/prefix]`: duplicity's `azure://container`, plus an
/// optional prefix. Credentials: a connection string (`AZURE_CONNECTION_STRING`,
/// which duplicity 0.8 reads, or `AZURE_STORAGE_CONNECTION_STRING`), else an
/// account and key (`AZURE_STORAGE_ACCOUNT` and `AZURE_STORAGE_KEY`, or
/// duplicity 0.7's `AZURE_ACCOUNT_NAME` and `AZURE_ACCOUNT_KEY`). The
/// endpoint: `DUP_AZBLOB_ENDPOINT`, else the connection string's, else the
/// account's in Azure's public cloud.
fn parse_azure(shown: &str, rest: &str, env: Env) -> Result<Target> {
    let usage = |why: String| {
        Error::usage(format!("{shown}: {why}")).hint("the form is azure://container[/prefix] (see dup-backends(7))")
    };
    let rest = rest.trim_end_matches('/');
    let (container, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if container.is_empty() {
        return Err(usage("no container name".into()));
    }
    if !azure_container_name(container) {
        return Err(usage(format!(
            "'{container}' is not an Azure container name (3 to 63 lowercase letters, digits and single dashes, \
             starting and ending with a letter or digit)"
        )));
    }
    let creds = |why: String| Error::usage(format!("{shown}: {why}")).hint(AZURE_CREDENTIALS_HINT);
    let access = azure_access(env).map_err(creds)?;
    if let Some(a) = &access.account
        && (!(3..=24).contains(&a.len()) || !a.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
    {
        return Err(creds(format!(
            "'{a}' (in {}) is not a storage account name (3 to 24 lowercase letters and digits)",
            access.source
        )));
    }
    if let Some(k) = &access.key {
        use base64::Engine;
        if base64::engine::general_purpose::STANDARD.decode(k).is_err() {
            return Err(creds(format!("the account key in {} is not base64", access.source)));
        }
    }
    let endpoint = match env("DUP_AZBLOB_ENDPOINT").or(access.endpoint) {
        Some(e) => e.trim_end_matches('/').to_string(),
        None => {
            return Err(creds(format!(
                "no blob endpoint: {} has neither BlobEndpoint nor AccountName (or set DUP_AZBLOB_ENDPOINT)",
                access.source
            )));
        }
    };
    let mut config = vec![
        ("container".to_string(), container.to_string()),
        ("root".to_string(), format!("/{prefix}")),
        ("endpoint".to_string(), endpoint),
    ];
    if let Some(a) = access.account {
        config.push(("account_name".into(), a));
    }
    match (access.sas, access.key) {
        (Some(sas), _) => config.push(("sas_token".into(), sas)),
        (None, Some(key)) => config.push(("account_key".into(), key)),
        (None, None) => unreachable!("azure_access returns a key or a SAS token"),
    }
    Ok(Target { scheme: "azblob".into(), config })
}

/// duplicity's rule for container names (Azure's).
fn azure_container_name(name: &str) -> bool {
    let b = name.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (3..=63).contains(&b.len())
        && ok(&b[0])
        && ok(&b[b.len() - 1])
        && b.iter().all(|c| ok(c) || *c == b'-')
        && !name.contains("--")
}

/// The Azure credentials in the environment; an error says what is missing
/// (never a secret's value).
fn azure_access(env: Env) -> std::result::Result<AzureAccess, String> {
    for var in ["AZURE_CONNECTION_STRING", "AZURE_STORAGE_CONNECTION_STRING"] {
        if let Some(conn) = env(var) {
            return azure_connection_string(var, &conn);
        }
    }
    let account = ["AZURE_STORAGE_ACCOUNT", "AZURE_ACCOUNT_NAME"].into_iter().find_map(|k| env(k).map(|v| (k, v)));
    let key = ["AZURE_STORAGE_KEY", "AZURE_ACCOUNT_KEY"].into_iter().find_map(|k| env(k).map(|v| (k, v)));
    match (account, key) {
        (Some((avar, a)), Some((kvar, k))) => Ok(AzureAccess {
            endpoint: Some(format!("https://{a}.blob.core.windows.net")),
            account: Some(a),
            key: Some(k),
            sas: None,
            source: format!("{avar} and {kvar}"),
        }),
        (Some((var, _)), None) => Err(format!("{var} is set but no account key (AZURE_STORAGE_KEY)")),
        (None, Some((var, _))) => Err(format!("{var} is set but no account name (AZURE_STORAGE_ACCOUNT)")),
        (None, None) => Err("no Azure credentials in the environment".into()),
    }
}

/// An Azure Storage connection string, `Key=Value;...` (keys compared
/// without case): `AccountName` and `AccountKey`, or
/// `SharedAccessSignature`; `BlobEndpoint`, or the endpoint built from
/// `DefaultEndpointsProtocol`, `AccountName` and `EndpointSuffix`; or
/// `UseDevelopmentStorage=true` (Azurite on 127.0.0.1:10000, or
/// `DevelopmentStorageProxyUri`).
fn azure_connection_string(var: &'static str, conn: &str) -> std::result::Result<AzureAccess, String> {
    let mut fields = std::collections::HashMap::new();
    for field in conn.split(';').map(str::trim).filter(|f| !f.is_empty()) {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| format!("{var}: a field has no '=' (the form is Key=Value;Key=Value...)"))?;
        fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let get = |k: &str| fields.get(k).filter(|v| !v.is_empty()).cloned();
    if get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        let account = get("accountname").unwrap_or_else(|| AZURITE_ACCOUNT.into());
        let proxy = get("developmentstorageproxyuri").unwrap_or_else(|| "http://127.0.0.1:10000".into());
        return Ok(AzureAccess {
            endpoint: Some(format!("{}/{account}", proxy.trim_end_matches('/'))),
            account: Some(account),
            key: Some(get("accountkey").unwrap_or_else(|| AZURITE_KEY.into())),
            sas: None,
            source: var.into(),
        });
    }
    let account = get("accountname");
    let endpoint = match (get("blobendpoint"), &account) {
        (Some(e), _) => Some(e),
        (None, Some(a)) => {
            let protocol = get("defaultendpointsprotocol").unwrap_or_else(|| "https".into()).to_ascii_lowercase();
            if protocol != "http" && protocol != "https" {
                return Err(format!("{var}: DefaultEndpointsProtocol={protocol}: use https or http"));
            }
            let suffix = get("endpointsuffix").unwrap_or_else(|| "core.windows.net".into());
            Some(format!("{protocol}://{a}.blob.{suffix}"))
        }
        (None, None) => None,
    };
    let access = AzureAccess {
        key: get("accountkey"),
        sas: get("sharedaccesssignature"),
        account,
        endpoint,
        source: var.into(),
    };
    if access.sas.is_none() && (access.account.is_none() || access.key.is_none()) {
        return Err(format!("{var} has neither AccountName and AccountKey nor SharedAccessSignature"));
    }
    Ok(access)
}

/// The URL with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..end];
    match authority.rfind('@') {
        Some(at) if authority[..at].contains(':') => {
            let user = &authority[..at].split_once(':').map(|(u, _)| u).unwrap_or_default();
            format!("{scheme}://{user}:***@{}", &rest[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Retries and timeouts, from `DUP_NUM_RETRIES` and `DUP_TIMEOUT`
/// (duplicity's --num-retries and --timeout).
#[derive(Debug, Clone, Copy)]
struct Settings {
    retries: usize,
    timeout: Duration,
}

impl Settings {
    fn from_env(env: Env) -> Result<Settings> {
        let num = |key: &str, default: u64| -> Result<u64> {
            match env(key) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| Error::usage(format!("{key}={v}: not a number"))),
            }
        };
        let retries = num("DUP_NUM_RETRIES", 5)? as usize;
        let secs = num("DUP_TIMEOUT", 30)?;
        if secs == 0 {
            return Err(Error::usage("DUP_TIMEOUT=0: the timeout must be at least one second"));
        }
        Ok(Settings { retries, timeout: Duration::from_secs(secs) })
    }
}

/// Bytes per request part: S3 multipart parts (and GCS's, Azure's blocks),
/// and reads from the source.
const S3_PART: usize = 8 << 20;
const WRITE_CHUNK: usize = 1 << 20;
/// S3 parts in flight at once.
const S3_CONCURRENT: usize = 4;
/// An I/O call may take its size at this rate on top of the timeout.
const MIN_RATE: u64 = 64 << 10;

/// Whether `t` is an object store taking uploads in parts (S3, GCS, Azure).
fn object_store(t: &Target) -> bool {
    matches!(t.scheme.as_str(), "s3" | "gcs" | "azblob")
}

/// The most bytes one request carries (a multipart part, a read chunk).
fn piece(t: &Target) -> usize {
    if object_store(t) { S3_PART } else { WRITE_CHUNK }
}

/// How long one I/O call moving `bytes` may take: the timeout, plus the
/// time to move them at a slow but working rate.
fn io_timeout(settings: &Settings, bytes: impl TryInto<u64>) -> Duration {
    settings.timeout + Duration::from_secs(bytes.try_into().unwrap_or(u64::MAX) / MIN_RATE)
}

/// opendal's operation log, at debug level: failures are reported once, by
/// the caller, with what to check.
#[derive(Debug, Clone, Copy)]
struct DebugLog;

impl LoggingInterceptor for DebugLog {
    fn log(
        &self,
        info: &opendal::raw::ServiceInfo,
        operation: Operation,
        context: &[(&str, &str)],
        message: &str,
        err: Option<&opendal::Error>,
    ) {
        if !log::log_enabled!(target: "dup::storage", log::Level::Debug) {
            return;
        }
        let ctx: Vec<String> = context.iter().map(|(k, v)| format!("{k}={v}")).collect();
        match err {
            Some(e) => {
                log::debug!(target: "dup::storage", "{} {operation} {} {message}: {e}", info.scheme(), ctx.join(" "))
            }
            None => log::debug!(target: "dup::storage", "{} {operation} {} {message}", info.scheme(), ctx.join(" ")),
        }
    }
}

/// Whether `e` is a refusal that asking again cannot change: opendal's
/// `PermissionDenied`, or an HTTP 401 or 403 from any service. opendal's
/// WebDAV service marks 403 as temporary (some servers answer it for a
/// locked file), which made `dup-ls --check` on a read-only path back off
/// for most of a minute; 5xx answers and connection errors stay temporary.
fn is_refusal(e: &opendal::Error) -> bool {
    if e.kind() == ErrorKind::PermissionDenied {
        return true;
    }
    // The response's head, in the error's context (opendal's
    // `with_error_response_context`).
    let text = e.to_string();
    text.contains("Parts { status: 401,") || text.contains("Parts { status: 403,")
}

/// `e`, marked permanent (never retried) when it is a refusal.
fn refusal_permanent(e: opendal::Error) -> opendal::Error {
    if is_refusal(&e) { e.set_permanent() } else { e }
}

/// Below [`RetryLayer`]: marks refusals permanent (see [`is_refusal`]), in
/// the operations and in the readers, writers, listers and deleters they
/// return, so that the retry layer gives up on them at once.
#[derive(Debug, Clone, Copy)]
struct RefusalLayer;

impl raw::Layer for RefusalLayer {
    fn apply_service(&self, inner: raw::Servicer) -> raw::Servicer {
        Arc::new(RefusalService { inner })
    }
}

#[derive(Debug)]
struct RefusalService {
    inner: raw::Servicer,
}

impl raw::Service for RefusalService {
    type Reader = Refusals<oio::Reader>;
    type Writer = Refusals<oio::Writer>;
    type Lister = Refusals<oio::Lister>;
    type Deleter = Refusals<oio::Deleter>;
    type Copier = Refusals<oio::Copier>;
    type Composer = oio::Composer;

    fn info(&self) -> raw::ServiceInfo {
        self.inner.info()
    }

    fn capability(&self) -> opendal::Capability {
        self.inner.capability()
    }

    async fn create_dir(
        &self,
        ctx: &opendal::OperationContext,
        path: &str,
        args: raw::OpCreateDir,
    ) -> opendal::Result<raw::RpCreateDir> {
        self.inner.create_dir(ctx, path, args).await.map_err(refusal_permanent)
    }

    async fn stat(
        &self,
        ctx: &opendal::OperationContext,
        path: &str,
        args: raw::OpStat,
    ) -> opendal::Result<raw::RpStat> {
        self.inner.stat(ctx, path, args).await.map_err(refusal_permanent)
    }

    fn read(&self, ctx: &opendal::OperationContext, path: &str, args: raw::OpRead) -> opendal::Result<Self::Reader> {
        self.inner.read(ctx, path, args).map(Refusals).map_err(refusal_permanent)
    }

    fn write(&self, ctx: &opendal::OperationContext, path: &str, args: raw::OpWrite) -> opendal::Result<Self::Writer> {
        self.inner.write(ctx, path, args).map(Refusals).map_err(refusal_permanent)
    }

    fn delete(&self, ctx: &opendal::OperationContext) -> opendal::Result<Self::Deleter> {
        self.inner.delete(ctx).map(Refusals).map_err(refusal_permanent)
    }

    fn list(&self, ctx: &opendal::OperationContext, path: &str, args: raw::OpList) -> opendal::Result<Self::Lister> {
        self.inner.list(ctx, path, args).map(Refusals).map_err(refusal_permanent)
    }

    fn copy(
        &self,
        ctx: &opendal::OperationContext,
        from: &str,
        to: &str,
        args: raw::OpCopy,
    ) -> opendal::Result<Self::Copier> {
        self.inner.copy(ctx, from, to, args).map(Refusals).map_err(refusal_permanent)
    }

    fn compose(
        &self,
        ctx: &opendal::OperationContext,
        to: &str,
        args: raw::OpCompose,
    ) -> opendal::Result<Self::Composer> {
        self.inner.compose(ctx, to, args)
    }

    async fn rename(
        &self,
        ctx: &opendal::OperationContext,
        from: &str,
        to: &str,
        args: raw::OpRename,
    ) -> opendal::Result<raw::RpRename> {
        self.inner.rename(ctx, from, to, args).await.map_err(refusal_permanent)
    }

    async fn restore(
        &self,
        ctx: &opendal::OperationContext,
        path: &str,
        args: raw::OpRestore,
    ) -> opendal::Result<raw::RpRestore> {
        self.inner.restore(ctx, path, args).await.map_err(refusal_permanent)
    }

    async fn presign(
        &self,
        ctx: &opendal::OperationContext,
        path: &str,
        args: raw::OpPresign,
    ) -> opendal::Result<raw::RpPresign> {
        self.inner.presign(ctx, path, args).await.map_err(refusal_permanent)
    }
}

/// A reader, writer, lister, deleter or copier of [`RefusalService`].
struct Refusals<T>(T);

impl<T: oio::Read> oio::Read for Refusals<T> {
    async fn open(&self, range: opendal::BytesRange) -> opendal::Result<(raw::RpRead, Box<dyn oio::ReadStreamDyn>)> {
        let (rp, stream) = self.0.open(range).await.map_err(refusal_permanent)?;
        Ok((rp, Box::new(Refusals(stream)) as Box<dyn oio::ReadStreamDyn>))
    }

    async fn read(&self, range: opendal::BytesRange) -> opendal::Result<(raw::RpRead, Buffer)> {
        self.0.read(range).await.map_err(refusal_permanent)
    }
}

impl<T: oio::ReadStream> oio::ReadStream for Refusals<T> {
    async fn read(&mut self) -> opendal::Result<Buffer> {
        self.0.read().await.map_err(refusal_permanent)
    }
}

impl<T: oio::Write> oio::Write for Refusals<T> {
    async fn write(&mut self, bs: Buffer) -> opendal::Result<()> {
        self.0.write(bs).await.map_err(refusal_permanent)
    }

    async fn copy_from(&mut self, path: &str, args: raw::OpRead, range: opendal::BytesRange) -> opendal::Result<()> {
        self.0.copy_from(path, args, range).await.map_err(refusal_permanent)
    }

    async fn close(&mut self) -> opendal::Result<opendal::Metadata> {
        self.0.close().await.map_err(refusal_permanent)
    }

    async fn abort(&mut self) -> opendal::Result<()> {
        self.0.abort().await.map_err(refusal_permanent)
    }
}

impl<T: oio::List> oio::List for Refusals<T> {
    async fn next(&mut self) -> opendal::Result<Option<oio::Entry>> {
        self.0.next().await.map_err(refusal_permanent)
    }
}

impl<T: oio::Delete> oio::Delete for Refusals<T> {
    async fn delete(&mut self, path: &str, args: raw::OpDelete) -> opendal::Result<()> {
        self.0.delete(path, args).await.map_err(refusal_permanent)
    }

    async fn close(&mut self) -> opendal::Result<()> {
        self.0.close().await.map_err(refusal_permanent)
    }
}

impl<T: oio::Copy> oio::Copy for Refusals<T> {
    async fn next(&mut self) -> opendal::Result<Option<usize>> {
        self.0.next().await.map_err(refusal_permanent)
    }

    async fn close(&mut self) -> opendal::Result<opendal::Metadata> {
        self.0.close().await.map_err(refusal_permanent)
    }

    async fn abort(&mut self) -> opendal::Result<()> {
        self.0.abort().await.map_err(refusal_permanent)
    }
}

fn build(target: &Target, settings: &Settings, url: &str, io_timeout: Duration) -> opendal::Result<opendal::Operator> {
    let url = url.to_string();
    let retries = settings.retries;
    let notify = move |ev: RetryEvent<'_>| {
        log::warn!(
            "{url}: {} failed ({}); retry {} of {retries} in {:.1} s",
            ev.op,
            cause(ev.err),
            ev.attempt,
            ev.retry_after.as_secs_f64()
        );
    };
    // Timeout below retry: each attempt is timed out on its own; refusals
    // are made permanent below retry too, so that they are not retried.
    Ok(opendal::Operator::via_iter(target.scheme.as_str(), target.config.clone())?
        .layer(RefusalLayer)
        .layer(
            TimeoutLayer::new().with_timeout(settings.timeout.max(Duration::from_secs(5))).with_io_timeout(io_timeout),
        )
        .layer(
            RetryLayer::new()
                .with_jitter()
                .with_factor(2.0)
                .with_min_delay(Duration::from_secs(1))
                .with_max_delay(Duration::from_secs(30))
                .with_max_times(retries)
                .with_notify(notify),
        )
        .layer(LoggingLayer::new(DebugLog)))
}

impl Storage {
    /// Connects to the backend at `url` (creating a `file://` directory),
    /// with credentials from the process environment.
    pub fn open(url: &str) -> Result<Storage> {
        Self::open_with(url, &process_env)
    }

    /// Like [`Storage::open`], reading environment variables through `env`.
    pub fn open_with(url: &str, env: Env) -> Result<Storage> {
        Self::connect(url, env)?.or_else(Check::into_error)
    }

    /// Opens the backend; the inner error is a server's answer (only SFTP
    /// with a relative path talks to the server here), the outer one a
    /// wrong URL or setting.
    fn connect(url: &str, env: Env) -> Result<std::result::Result<Storage, Check>> {
        let mut target = parse_url_with(url, env)?;
        let shown = redact(url);
        let settings = Settings::from_env(env)?;
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
        let op = build(&target, &settings, &shown, io_timeout(&settings, piece(&target)))
            .map_err(|e| open_error(&shown, &target, e))?;
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
            if self.multi_write { self.put_stream(tmp, data, what) } else { self.put_once(tmp, data, what) }
        })
    }

    /// Like [`Storage::put`], for content already spooled (backends that
    /// take a file in one request send the spool as it is, with no copy).
    pub fn put_spool(&self, name: &str, spool: Spool) -> Result<u64> {
        self.put_via(name, |tmp, what| {
            let n = spool.len();
            let r = spool.into_reader().map_err(|e| Error::io("reading the spooled upload", e))?;
            if self.multi_write { self.put_stream(tmp, r, what) } else { self.send_once(tmp, r, n, what) }
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

    /// Streams `data` in chunks (S3/GCS multipart, Azure blocks, fs, sftp);
    /// aborts on error.
    fn put_stream(&self, path: &str, mut data: impl Read, what: &str) -> Result<u64> {
        let opts = if object_store(&self.target) {
            WriteOptions { chunk: Some(S3_PART), concurrent: self.part_concurrency, ..Default::default() }
        } else {
            WriteOptions::default()
        };
        let piece = piece(&self.target);
        let mut w = self.rt.block_on(self.op.writer_options(path, opts)).map_err(|e| self.error(what, e))?;
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

    /// Tests the connection the way a backup uses it: lists the archive,
    /// then writes, reads back and deletes a small probe file under a
    /// temporary name (which readers ignore).
    pub fn check(&self) -> Check {
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
        let listing = match self.blocking.list("") {
            Ok(v) => v,
            Err(e) if e.kind() == ErrorKind::NotFound && !is_missing_bucket(&e) => Vec::new(),
            Err(e) => return fail(c, "listing", e),
        };
        let naming = crate::dupfmt::names::Naming::default();
        let names: Vec<&str> = listing.iter().filter(|e| !e.metadata().is_dir()).map(|e| e.name()).collect();
        c.files = Some(names.len());
        c.archive = names.iter().any(|n| naming.parse(n).is_some_and(|f| f.is_manifest()));
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
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Unreachable => "unreachable",
            CheckStatus::AuthRefused => "auth_refused",
            CheckStatus::PermissionDenied => "permission_denied",
            CheckStatus::NotFound => "not_found",
            CheckStatus::Failed => "failed",
        }
    }

    fn phrase(self) -> &'static str {
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
    /// Whether a backup (a manifest) is there.
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

    fn into_error<T>(self) -> Result<T> {
        let e = Error::other(format!("{}: {}", self.url, self.message));
        Err(match self.hint {
            Some(h) => e.hint(h),
            None => e,
        })
    }
}

/// Opens the backend at `url` and checks it (see [`Storage::check`]). An
/// error means the URL or the settings are wrong (a usage error); every
/// answer of the server is a [`Check`].
pub fn test_connection(url: &str) -> Result<Check> {
    test_connection_with(url, &process_env)
}

/// Like [`test_connection`], reading environment variables through `env`.
pub fn test_connection_with(url: &str, env: Env) -> Result<Check> {
    Ok(match Storage::connect(url, env)? {
        Ok(s) => s.check(),
        Err(c) => c,
    })
}

/// The innermost error message: what the server or the system said.
fn cause(e: &opendal::Error) -> String {
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
fn error_text(e: &opendal::Error) -> String {
    let text = format!("{e:?}");
    let end = text.find("\nBacktrace:\n").unwrap_or(text.len());
    text[..end].to_lowercase()
}

/// Whether `e` says the bucket (S3, GCS) or container (Azure) is missing,
/// rather than a file.
fn is_missing_bucket(e: &opendal::Error) -> bool {
    let text = error_text(e);
    ["nosuchbucket", "containernotfound", "bucket does not exist"].iter().any(|w| text.contains(w))
}

/// Which of the check answers an error is.
fn classify(e: &opendal::Error) -> CheckStatus {
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
fn hint(status: CheckStatus, t: &Target) -> String {
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

/// The ssh command line that reaches an SFTP target, for hints.
fn ssh_command(t: &Target) -> String {
    let (host, port) = ssh_host_port(t);
    let mut cmd = String::from("ssh");
    if let Some(p) = port {
        cmd.push_str(&format!(" -p {p}"));
    }
    if let Some(k) = t.get("key") {
        cmd.push_str(&format!(" -i {k}"));
    }
    match t.get("user") {
        Some(u) => cmd.push_str(&format!(" {u}@{host}")),
        None => cmd.push_str(&format!(" {host}")),
    }
    cmd
}

/// Host and port of an SFTP target's `ssh://host[:port]` endpoint.
fn ssh_host_port(t: &Target) -> (&str, Option<&str>) {
    let endpoint = t.get("endpoint").unwrap_or_default().trim_start_matches("ssh://");
    let (host, port) = match endpoint.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, Some(p)),
        _ => (endpoint, None),
    };
    (host.trim_start_matches('[').trim_end_matches(']'), port)
}

fn open_error(url: &str, t: &Target, e: opendal::Error) -> Error {
    if e.kind() == ErrorKind::ConfigInvalid {
        return Error::usage(format!("{url}: {}", cause(&e))).hint("see dup-backends(7)");
    }
    backend_error(url, t, "opening the backend", e)
}

fn backend_error(url: &str, t: &Target, what: &str, e: opendal::Error) -> Error {
    log::debug!("{url}: {what}: {e:?}");
    if e.kind() == ErrorKind::NotFound && !is_missing_bucket(&e) {
        return Error::new(Kind::Corrupt, format!("{url}: {what}: the file is missing on the backend"))
            .hint("`dup-ls URL` shows what the archive holds");
    }
    let status = classify(&e);
    Error::other(format!("{url}: {what}: {}: {}", status.phrase(), cause(&e))).hint(hint(status, t))
}

/// A read-only memory map of a whole file; unmapped when the last buffer
/// referring to it is dropped.
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
    _file: File,
}

// SAFETY: the mapping is read-only and owned; nothing else writes the
// (unlinked, private) file while it is mapped.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: ptr/len describe a live PROT_READ mapping owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping created in mapped_buffer, once.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// opendal's byte type, named through its buffer (no extra dependency).
type Bytes = <Buffer as Iterator>::Item;

/// The first `len` bytes of `file` as one buffer backed by a memory map.
fn mapped_buffer(file: File, len: u64) -> io::Result<Buffer> {
    use std::os::fd::AsRawFd;
    let len = usize::try_from(len).map_err(|_| io::Error::other("file too large to map"))?;
    if len == 0 {
        return Ok(Buffer::new());
    }
    // SAFETY: a fresh read-only private mapping of an open file we own.
    let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: advice on the mapping just created.
    unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
    Ok(Buffer::from(Bytes::from_owner(Mapped { ptr, len, _file: file })))
}

/// The login directory on an SFTP server (duplicity's relative paths start
/// there): asks the server's SFTP subsystem for the real path of `.`,
/// through the same `ssh` client opendal runs.
fn sftp_home(t: &Target, settings: &Settings) -> std::result::Result<String, (CheckStatus, String)> {
    let (host, port) = ssh_host_port(t);
    let strict = match t.get("known_hosts_strategy") {
        Some("add") => "accept-new",
        Some("accept") => "no",
        _ => "yes",
    };
    let mut cmd = Command::new("ssh");
    cmd.args(["-o", "BatchMode=yes", "-o"])
        .arg(format!("StrictHostKeyChecking={strict}"))
        .arg("-o")
        .arg(format!("ConnectTimeout={}", settings.timeout.as_secs()));
    if let Some(p) = port {
        cmd.args(["-p", p]);
    }
    if let Some(u) = t.get("user") {
        cmd.args(["-l", u]);
    }
    if let Some(k) = t.get("key") {
        cmd.args(["-o", "IdentitiesOnly=yes", "-i", k]);
    }
    cmd.args(["-s", host, "sftp"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let failed = |e: io::Error| (CheckStatus::Failed, format!("running ssh: {e}"));
    let mut child = cmd.spawn().map_err(failed)?;
    let (Some(to), Some(from)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err((CheckStatus::Failed, "running ssh: no pipes".into()));
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(sftp_realpath_dot(to, from));
    });
    // ssh's ConnectTimeout covers connecting; this, a server that stalls.
    let talk = rx
        .recv_timeout(settings.timeout + Duration::from_secs(5))
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the SFTP server")));
    let _ = child.kill();
    let output = child.wait_with_output().map_err(failed)?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    match talk {
        Ok(Some(home)) if home.starts_with('/') => Ok(home),
        Ok(_) => {
            let low = stderr.to_lowercase();
            let status = if ["permission denied", "host key verification failed", "too many authentication"]
                .iter()
                .any(|w| low.contains(w))
            {
                CheckStatus::AuthRefused
            } else if ["connection refused", "timed out", "could not resolve", "unreachable", "no route"]
                .iter()
                .any(|w| low.contains(w))
            {
                CheckStatus::Unreachable
            } else {
                CheckStatus::Failed
            };
            Err((status, if stderr.is_empty() { "ssh ended without an answer".into() } else { stderr }))
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Err((CheckStatus::Unreachable, e.to_string())),
        Err(e) => Err((CheckStatus::Failed, e.to_string())),
    }
}

/// Sends SSH_FXP_INIT and SSH_FXP_REALPATH "." and returns the answer; None
/// when ssh ended first (its stderr says why).
fn sftp_realpath_dot(mut to: impl Write, mut from: impl Read) -> io::Result<Option<String>> {
    let mut out = Vec::new();
    // INIT: length 5, type 1, version 3.
    out.extend_from_slice(&5u32.to_be_bytes());
    out.push(1);
    out.extend_from_slice(&3u32.to_be_bytes());
    // REALPATH: length 10, type 16, id 1, the string ".".
    out.extend_from_slice(&10u32.to_be_bytes());
    out.push(16);
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&1u32.to_be_bytes());
    out.push(b'.');
    if to.write_all(&out).and_then(|_| to.flush()).is_err() {
        return Ok(None);
    }
    let mut packet = || -> io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        if from.read_exact(&mut len).is_err() {
            return Ok(None);
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > 1 << 20 {
            return Err(io::Error::other("oversized SFTP packet"));
        }
        let mut p = vec![0u8; len];
        from.read_exact(&mut p)?;
        Ok(Some(p))
    };
    let Some(_version) = packet()? else { return Ok(None) };
    let Some(p) = packet()? else { return Ok(None) };
    // NAME: type 104, id, count, then the first name as a string.
    if p.first() != Some(&104) || p.len() < 13 {
        return Err(io::Error::other("the server did not resolve its login directory"));
    }
    let n = u32::from_be_bytes([p[9], p[10], p[11], p[12]]) as usize;
    let name = p.get(13..13 + n).ok_or_else(|| io::Error::other("short SFTP reply"))?;
    Ok(Some(String::from_utf8_lossy(name).into_owned()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Parses `url` with only `vars` set, for any backend (compiled in or not).
    fn parse(url: &str, vars: &[(&str, &str)]) -> Result<Target> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse_target(url, &move |k: &str| map.get(k).cloned())
    }

    fn cfg(t: &Target) -> Vec<(&str, &str)> {
        let mut v: Vec<(&str, &str)> = t.config.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        v.sort();
        v
    }

    #[test]
    fn urls() {
        assert_eq!(parse_url("file:///tmp/x").unwrap().config, vec![("root".to_string(), "/tmp/x".to_string())]);
        assert!(parse_url("/tmp/x").is_err());
        assert!(parse_url("file://").is_err());
        let e = parse_url("gopher://x").unwrap_err();
        assert_eq!(e.kind, Kind::Usage);
        assert!(e.hint.unwrap().contains("s3://"));
        assert_eq!(
            parse_url("ftp://u:secret@h/x").unwrap_err().message,
            "ftp://u:***@h/x: the backend 'ftp://' is not supported by this build"
        );
    }

    #[test]
    fn s3_urls() {
        let keys = [("AWS_ACCESS_KEY_ID", "AK"), ("AWS_SECRET_ACCESS_KEY", "SK")];
        // duplicity 0.8: host and port in the URL.
        let t = parse("s3://127.0.0.1:9000/bucket/some/prefix", &keys).unwrap();
        assert_eq!(
            cfg(&t),
            vec![
                ("access_key_id", "AK"),
                ("bucket", "bucket"),
                ("disable_config_load", "true"),
                ("disable_ec2_metadata", "true"),
                ("endpoint", "https://127.0.0.1:9000"),
                ("region", "us-east-1"),
                ("root", "/some/prefix"),
                ("secret_access_key", "SK"),
            ]
        );
        let t = parse("s3://s3.example.com/b", &[("DUP_S3_UNENCRYPTED_CONNECTION", "1")]).unwrap();
        assert_eq!(t.get("endpoint"), Some("http://s3.example.com"));
        assert_eq!(t.get("bucket"), Some("b"));
        assert_eq!(t.get("root"), Some("/"));
        assert_eq!(t.get("disable_config_load"), None);
        // Bucket form: the endpoint from the environment, or AWS.
        let env = [("AWS_ENDPOINT_URL", "http://127.0.0.1:1/"), ("AWS_DEFAULT_REGION", "eu-west-3")];
        let t = parse("s3://my.bucket/p/q/", &env).unwrap();
        assert_eq!((t.get("bucket"), t.get("root")), (Some("my.bucket"), Some("/p/q")));
        assert_eq!((t.get("endpoint"), t.get("region")), (Some("http://127.0.0.1:1"), Some("eu-west-3")));
        let t = parse("s3+http://bucket/x", &[("AWS_REGION", "r1"), ("AWS_DEFAULT_REGION", "r2")]).unwrap();
        assert_eq!((t.get("bucket"), t.get("endpoint"), t.get("region")), (Some("bucket"), None, Some("r1")));
        let t = parse("s3://bucket", &[("DUP_S3_ENDPOINT", "http://a:1"), ("AWS_ENDPOINT_URL", "http://b:2")]).unwrap();
        assert_eq!(t.get("endpoint"), Some("http://a:1"));
        assert_eq!(parse("s3://", &[]).unwrap_err().kind, Kind::Usage);
        assert_eq!(parse("s3://host.example.com/", &[]).unwrap_err().kind, Kind::Usage);
        // Secrets never show in Debug.
        let t = parse("s3://b", &keys).unwrap();
        assert!(!format!("{t:?}").contains("SK"));
    }

    #[test]
    fn sftp_and_webdav_urls() {
        let t = parse("sftp://alice@host.example:2222/backups/x", &[("DUP_SSH_KEY", "/k")]).unwrap();
        assert_eq!(
            cfg(&t),
            vec![
                ("endpoint", "ssh://host.example:2222"),
                ("key", "/k"),
                ("known_hosts_strategy", "strict"),
                ("root", "backups/x"),
                ("user", "alice"),
            ]
        );
        let t = parse("scp://h//abs/path", &[("DUP_SSH_KNOWN_HOSTS", "add")]).unwrap();
        assert_eq!(
            (t.get("root"), t.get("user"), t.get("known_hosts_strategy")),
            (Some("/abs/path"), None, Some("add"))
        );
        let e = parse("sftp://u:pw@h/x", &[]).unwrap_err();
        assert_eq!(e.kind, Kind::Usage);
        assert!(!e.message.contains("pw@"), "{}", e.message);
        assert_eq!(parse("sftp://h:99999/x", &[]).unwrap_err().kind, Kind::Usage);
        assert_eq!(parse("sftp://[::1]:22/x", &[]).unwrap().get("endpoint"), Some("ssh://[::1]:22"));

        let t = parse("webdav://bob:p%40ss@dav.example:8080/remote/dir", &[("FTP_PASSWORD", "other")]).unwrap();
        assert_eq!(
            cfg(&t),
            vec![
                ("endpoint", "http://dav.example:8080"),
                ("password", "p@ss"),
                ("root", "/remote/dir"),
                ("username", "bob"),
            ]
        );
        let t = parse("webdavs://bob@dav.example/d", &[("FTP_PASSWORD", "from-env")]).unwrap();
        assert_eq!((t.get("endpoint"), t.get("password")), (Some("https://dav.example"), Some("from-env")));
        assert!(!format!("{t:?}").contains("from-env"));
    }

    #[test]
    fn gcs_urls() {
        let key = tempfile::NamedTempFile::new().unwrap();
        let key_path = key.path().to_str().unwrap();
        let creds = [("GOOGLE_APPLICATION_CREDENTIALS", key_path)];
        let t = parse("gs://my-bucket/backups/laptop/", &creds).unwrap();
        assert_eq!(
            cfg(&t),
            vec![
                ("bucket", "my-bucket"),
                ("credential_path", key_path),
                ("disable_config_load", "true"),
                ("disable_vm_metadata", "true"),
                ("root", "/backups/laptop"),
            ]
        );
        assert_eq!(t.scheme, "gcs");
        let t = parse("gs://b", &creds).unwrap();
        assert_eq!((t.get("bucket"), t.get("root"), t.get("endpoint")), (Some("b"), Some("/"), None));
        // An endpoint (an emulator): with the key, or unsigned without one.
        let t = parse("gs://b/p", &[creds[0], ("DUP_GCS_ENDPOINT", "http://127.0.0.1:4443/")]).unwrap();
        assert_eq!((t.get("endpoint"), t.get("skip_signature")), (Some("http://127.0.0.1:4443"), None));
        let t = parse("gs://b/p", &[("DUP_GCS_ENDPOINT", "http://127.0.0.1:4443")]).unwrap();
        assert_eq!((t.get("credential_path"), t.get("skip_signature")), (None, Some("true")));
        // No credentials: a usage error naming the variable; duplicity's HMAC keys are not read.
        let e = parse("gs://b/p", &[("GS_ACCESS_KEY_ID", "GOOG1"), ("GS_SECRET_ACCESS_KEY", "hmac")]).unwrap_err();
        assert_eq!(e.kind, Kind::Usage);
        assert!(e.message.starts_with("gs://b/p: ") && e.message.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{e:?}");
        assert!(e.hint.as_deref().unwrap().contains("GS_ACCESS_KEY_ID"), "{e:?}");
        assert!(!format!("{e:?}").contains("hmac"));
        let e = parse("gs://b", &[("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")]).unwrap_err();
        assert_eq!(e.kind, Kind::Usage);
        assert!(e.message.contains("/nonexistent/key.json: no such file"), "{}", e.message);
        for bad in ["gs://", "gs:///x", "gs://u@b/x", "gs://b:1/x"] {
            assert_eq!(parse(bad, &creds).unwrap_err().kind, Kind::Usage, "{bad}");
        }
    }

    #[test]
    fn azure_urls() {
        let key = "c2VjcmV0LWtleQ=="; // base64 "secret-key"
        let portal = format!(
            "DefaultEndpointsProtocol=https;AccountName=acct1;AccountKey={key};EndpointSuffix=core.windows.net"
        );
        let t = parse("azure://backups/laptop/home/", &[("AZURE_CONNECTION_STRING", &portal)]).unwrap();
        assert_eq!(t.scheme, "azblob");
        assert_eq!(
            cfg(&t),
            vec![
                ("account_key", key),
                ("account_name", "acct1"),
                ("container", "backups"),
                ("endpoint", "https://acct1.blob.core.windows.net"),
                ("root", "/laptop/home"),
            ]
        );
        assert!(!format!("{t:?}").contains(key), "{t:?}");
        // duplicity's form: the container alone.
        assert_eq!(parse("azure://backups", &[("AZURE_CONNECTION_STRING", &portal)]).unwrap().get("root"), Some("/"));
        // Azurite, a SAS token with its endpoint, keys in any case, newlines.
        let t = parse("azure://c01", &[("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")]).unwrap();
        assert_eq!(
            (t.get("endpoint"), t.get("account_name"), t.get("account_key")),
            (Some("http://127.0.0.1:10000/devstoreaccount1"), Some("devstoreaccount1"), Some(AZURITE_KEY))
        );
        let sas = "BlobEndpoint=https://acct1.blob.core.windows.net/;\nsharedaccesssignature=sv=2022-11-02&sig=abc%3D";
        let t = parse("azure://c01", &[("AZURE_CONNECTION_STRING", sas)]).unwrap();
        assert_eq!(
            cfg(&t),
            vec![
                ("container", "c01"),
                ("endpoint", "https://acct1.blob.core.windows.net"),
                ("root", "/"),
                ("sas_token", "sv=2022-11-02&sig=abc%3D"),
            ]
        );
        assert!(!format!("{t:?}").contains("sig=abc"), "{t:?}");
        // Account and key; duplicity 0.8's connection string comes first; DUP_AZBLOB_ENDPOINT wins.
        let pair = [("AZURE_STORAGE_ACCOUNT", "acct2"), ("AZURE_STORAGE_KEY", key)];
        let t = parse("azure://c01/p", &pair).unwrap();
        assert_eq!(
            (t.get("account_name"), t.get("account_key"), t.get("endpoint")),
            (Some("acct2"), Some(key), Some("https://acct2.blob.core.windows.net"))
        );
        let t = parse("azure://c01/p", &[pair[0], pair[1], ("AZURE_CONNECTION_STRING", &portal)]).unwrap();
        assert_eq!(t.get("account_name"), Some("acct1"));
        let t = parse("azure://c01/p", &[pair[0], pair[1], ("DUP_AZBLOB_ENDPOINT", "http://127.0.0.1:10000/acct2/")])
            .unwrap();
        assert_eq!(t.get("endpoint"), Some("http://127.0.0.1:10000/acct2"));
        let old = [("AZURE_ACCOUNT_NAME", "acct3"), ("AZURE_ACCOUNT_KEY", key)];
        assert_eq!(parse("azure://c01", &old).unwrap().get("account_name"), Some("acct3"));
        // Missing or malformed credentials: usage errors that never show a secret.
        let usage = |url: &str, vars: &[(&str, &str)]| {
            let e = parse(url, vars).unwrap_err();
            assert_eq!(e.kind, Kind::Usage, "{e:?}");
            assert!(!format!("{e:?}").contains("c2VjcmV0") && !format!("{e:?}").contains("!!"), "{e:?}");
            e
        };
        let e = usage("azure://c01", &[]);
        assert!(e.message.contains("no Azure credentials"), "{}", e.message);
        assert!(e.hint.unwrap().contains("AZURE_CONNECTION_STRING"));
        usage("azure://c01", &[pair[0]]);
        usage("azure://c01", &[pair[1]]);
        usage("azure://c01", &[pair[0], ("AZURE_STORAGE_KEY", "not base64!!")]);
        usage("azure://c01", &[("AZURE_STORAGE_ACCOUNT", "Bad_Name"), pair[1]]);
        usage("azure://c01", &[("AZURE_CONNECTION_STRING", "AccountName=acct1")]);
        usage("azure://c01", &[("AZURE_CONNECTION_STRING", "AccountName=acct1;garbage")]);
        usage("azure://c01", &[("AZURE_CONNECTION_STRING", "SharedAccessSignature=sv=1&sig=x")]);
        // Container names follow Azure's (and duplicity's) rules.
        for bad in ["azure://", "azure://ab", "azure://Backups", "azure://a--b", "azure://-ab", "azure://a_b/x"] {
            let e = usage(bad, &pair);
            assert!(e.hint.unwrap().contains("azure://container"), "{bad}");
        }
    }

    #[test]
    fn backends_not_built() {
        let key = tempfile::NamedTempFile::new().unwrap();
        let vars = |k: &str| match k {
            "GOOGLE_APPLICATION_CREDENTIALS" => Some(key.path().to_str().unwrap().to_string()),
            "AZURE_CONNECTION_STRING" => Some("UseDevelopmentStorage=true".to_string()),
            _ => None,
        };
        for (url, feature) in [
            ("file:///tmp/x", "fs"),
            ("s3://bucket/x", "s3"),
            ("boto3+s3://bucket/x", "s3"),
            ("sftp://h/x", "sftp"),
            ("webdavs://h/x", "webdav"),
            ("gs://bucket/x", "gcs"),
            ("azure://container/x", "azblob"),
        ] {
            let b = backend_of(url.split_once("://").unwrap().0).unwrap();
            assert_eq!(b.feature, feature);
            match parse_url_with(url, &vars) {
                Ok(t) => assert!(b.compiled && t.scheme == feature, "{url}"),
                Err(e) => {
                    assert!(!b.compiled, "{url}: {e:?}");
                    assert_eq!(e.kind, Kind::Usage);
                    assert_eq!(e.message, format!("{url}: this dup was built without the {feature} backend"));
                    assert!(e.hint.unwrap().contains(&format!("cargo build --release --features {feature}`")));
                    assert!(!schemes().contains(b.schemes[0]) && supported_hint().contains(b.feature));
                }
            }
        }
        assert_eq!(schemes().contains("gs://"), cfg!(feature = "gcs"));
        assert_eq!(schemes().contains("azure://"), cfg!(feature = "azblob"));
        assert_eq!(schemes().contains("s3+http://"), cfg!(feature = "s3"));
    }

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

    #[test]
    fn redacts() {
        assert_eq!(redact("webdav://u:p@h/x:y@z"), "webdav://u:***@h/x:y@z");
        assert_eq!(redact("sftp://u@h/x"), "sftp://u@h/x");
        assert_eq!(redact("file:///a:b@c"), "file:///a:b@c");
    }

    #[test]
    fn settings() {
        let s = Settings::from_env(&|k: &str| (k == "DUP_TIMEOUT").then(|| "7".to_string())).unwrap();
        assert_eq!((s.retries, s.timeout), (5, Duration::from_secs(7)));
        assert_eq!(Settings::from_env(&|_: &str| Some("x".into())).unwrap_err().kind, Kind::Usage);
    }

    #[test]
    fn shareable_between_threads() {
        // dup-put could upload volumes from several threads through one Storage.
        fn check<T: Send + Sync>() {}
        check::<Storage>();
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
        let c = s.check();
        assert_eq!((c.status, c.files, c.archive), (CheckStatus::Ok, Some(0), false), "{c:?}");
        assert!(s.list().unwrap().is_empty(), "the probe is gone");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The storage operations against a real or emulated server, run by
    /// hand (dup-backends(7), BUILD FEATURES), such as
    /// `DUP_LIVE_URL=azure://c01/x AZURE_CONNECTION_STRING=UseDevelopmentStorage=true
    /// cargo test --features azblob --lib storage::tests::live -- --ignored`.
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
        let c = s.check();
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

    #[test]
    fn mapped_buffers() {
        let mut f = crate::spool::temp_file().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let b = mapped_buffer(f, data.len() as u64).unwrap();
        assert_eq!(b.to_vec(), data);
        let c = b.clone();
        drop(b);
        assert_eq!(c.len(), data.len());
    }

    #[test]
    fn refusals_are_permanent() {
        let response = |status: u16| format!("Parts {{ status: {status}, version: HTTP/1.1, headers: {{}} }}");
        // WebDAV's 403: PermissionDenied, marked temporary by opendal.
        let webdav_403 = opendal::Error::new(ErrorKind::PermissionDenied, "<title>403 Forbidden</title>")
            .with_context("response", response(403))
            .set_temporary();
        // A 401 or 403 whatever kind the service gave it.
        let status_401 = opendal::Error::new(ErrorKind::Unexpected, "unauthorized")
            .with_context("response", response(401))
            .set_temporary();
        let status_403 = opendal::Error::new(ErrorKind::Unexpected, "forbidden")
            .with_context("response", response(403))
            .set_temporary();
        // SFTP's permission denied has no HTTP status.
        let sftp = opendal::Error::new(ErrorKind::PermissionDenied, "permission denied");
        for e in [webdav_403, status_401, status_403, sftp] {
            assert!(is_refusal(&e), "{e}");
            let e = refusal_permanent(e);
            assert!(e.is_permanent() && !e.is_temporary(), "{e}");
        }
        // Server errors and lost connections are still retried; other
        // answers keep their status.
        let status_503 = opendal::Error::new(ErrorKind::Unexpected, "busy (status: 403 once)")
            .with_context("response", response(503))
            .set_temporary();
        let connection = opendal::Error::new(ErrorKind::Unexpected, "error sending request")
            .with_context("called", "send")
            .set_temporary();
        let rate = opendal::Error::new(ErrorKind::RateLimited, "slow down")
            .with_context("response", response(429))
            .set_temporary();
        for e in [status_503, connection, rate] {
            assert!(!is_refusal(&e), "{e}");
            assert!(refusal_permanent(e).is_temporary());
        }
        let missing = opendal::Error::new(ErrorKind::NotFound, "gone").with_context("response", response(404));
        assert!(!is_refusal(&missing) && refusal_permanent(missing).is_permanent());
    }
}
