//! Duplicity-style URLs parsed into an opendal service and its settings,
//! with credentials from the environment; which backends this build has.

use std::fmt;

use super::{Env, process_env};
use crate::error::{Error, Result};

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
pub(super) fn backend_of(scheme: &str) -> Option<&'static Backend> {
    BACKENDS.iter().find(|b| b.schemes.contains(&scheme) || b.aliases.contains(&scheme))
}

/// The URL schemes this build reads, for messages: `file://, s3://, ...`.
pub fn schemes() -> String {
    let all: Vec<String> =
        BACKENDS.iter().filter(|b| b.compiled).flat_map(|b| b.schemes).map(|s| format!("{s}://")).collect();
    if all.is_empty() { "none".into() } else { all.join(", ") }
}

/// What this build reads, and which features would add the rest.
pub(super) fn supported_hint() -> String {
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

/// A parsed backend URL: opendal's scheme and its configuration.
#[derive(Clone, PartialEq)]
pub struct Target {
    pub scheme: String,
    pub config: Vec<(String, String)>,
}

pub(super) const SECRET_KEYS: &[&str] = &["password", "secret_access_key", "session_token", "account_key", "sas_token"];

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

    pub(super) fn set(&mut self, key: &str, value: impl Into<String>) {
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
pub(super) struct Parts {
    user: Option<String>,
    password: Option<String>,
    host: String,
    port: Option<u16>,
    /// Everything after the authority, without its first `/`.
    path: String,
}

pub(super) fn percent_decode(s: &str) -> String {
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

pub(super) fn split_url(rest: &str) -> std::result::Result<Parts, String> {
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
pub(super) fn parse_target(url: &str, env: Env) -> Result<Target> {
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
pub(super) fn s3_endpoint_env(env: Env) -> Option<String> {
    ["DUP_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"].iter().find_map(|k| env(k))
}

/// `s3://bucket[/prefix]` with the endpoint from the environment (or AWS);
/// duplicity 0.8's `s3://host[:port]/bucket[/prefix]` when no endpoint is set
/// and the first part has a dot or a port; `s3+http://bucket[/prefix]`.
pub(super) fn parse_s3(scheme: &str, rest: &str, env: Env) -> std::result::Result<Target, String> {
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
pub(super) fn parse_gcs(shown: &str, rest: &str, env: Env) -> Result<Target> {
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
pub(super) const AZURE_CREDENTIALS_HINT: &str = "set AZURE_CONNECTION_STRING (as for duplicity; or \
     AZURE_STORAGE_CONNECTION_STRING), or AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY (see dup-backends(7))";

/// Azure's development storage (Azurite): its documented account and key.
pub(super) const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub(super) const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Azure credentials and endpoint, from the environment.
pub(super) struct AzureAccess {
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
pub(super) fn parse_azure(shown: &str, rest: &str, env: Env) -> Result<Target> {
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
pub(super) fn azure_container_name(name: &str) -> bool {
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
pub(super) fn azure_access(env: Env) -> std::result::Result<AzureAccess, String> {
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
pub(super) fn azure_connection_string(var: &'static str, conn: &str) -> std::result::Result<AzureAccess, String> {
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

#[cfg(test)]
mod tests {
    use crate::error::Kind;
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

    #[test]
    fn redacts() {
        assert_eq!(redact("webdav://u:p@h/x:y@z"), "webdav://u:***@h/x:y@z");
        assert_eq!(redact("sftp://u@h/x"), "sftp://u@h/x");
        assert_eq!(redact("file:///a:b@c"), "file:///a:b@c");
    }
}
