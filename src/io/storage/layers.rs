//! The operator each backend is built as: retries with backoff (refusals
//! not retried), timeouts that grow with the size of a call, and opendal's
//! log at debug level.

use std::sync::Arc;
use std::time::Duration;

use opendal::layers::{LoggingInterceptor, LoggingLayer, RetryEvent, RetryLayer, TimeoutLayer};
use opendal::raw::{self, Operation, oio};
use opendal::{Buffer, ErrorKind};

use super::check::cause;
use super::{Env, Target};
use crate::error::{Error, Result};

/// Retries and timeouts, from `DUP_NUM_RETRIES` and `DUP_TIMEOUT`
/// (duplicity's --num-retries and --timeout).
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    pub(super) retries: usize,
    pub(super) timeout: Duration,
}

impl Settings {
    pub(super) fn from_env(env: Env) -> Result<Settings> {
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
/// and reads from the source. S3's smallest part (rclone's default too): an
/// upload holds its part being filled and those in flight, so with 8 MiB
/// parts dup-put's 4 uploads at once peaked at 94 MiB; with 5 MiB, 4
/// uploads of 4 parts in flight in all stay near 50 MiB.
pub(super) const S3_PART: usize = 5 << 20;
/// The most parts an S3 multipart upload may have.
const MAX_PARTS: u64 = 10_000;
pub(super) const WRITE_CHUNK: usize = 1 << 20;
/// S3 parts in flight at once.
pub(super) const S3_CONCURRENT: usize = 4;
/// An I/O call may take its size at this rate on top of the timeout.
pub(super) const MIN_RATE: u64 = 64 << 10;

/// Whether `t` is an object store taking uploads in parts (S3, GCS, Azure).
pub(super) fn object_store(t: &Target) -> bool {
    matches!(t.scheme.as_str(), "s3" | "gcs" | "azblob")
}

/// The part size of an object store upload of `len` bytes: [`S3_PART`], or
/// more when `len` needs more than [`MAX_PARTS`] of those (a volume over
/// 48 GiB); unknown sizes get [`S3_PART`].
pub(super) fn part_size(len: Option<u64>) -> usize {
    let need = len.map_or(0, |n| n.div_ceil(MAX_PARTS)).next_multiple_of(1 << 20);
    usize::try_from(need).unwrap_or(usize::MAX).max(S3_PART)
}

/// The most bytes one request carries (a multipart part, a read chunk).
pub(super) fn piece(t: &Target) -> usize {
    if object_store(t) { S3_PART } else { WRITE_CHUNK }
}

/// How long one I/O call moving `bytes` may take: the timeout, plus the
/// time to move them at a slow but working rate.
pub(super) fn io_timeout(settings: &Settings, bytes: impl TryInto<u64>) -> Duration {
    settings.timeout + Duration::from_secs(bytes.try_into().unwrap_or(u64::MAX) / MIN_RATE)
}

/// opendal's operation log, at debug level: failures are reported once, by
/// the caller, with what to check.
#[derive(Debug, Clone, Copy)]
pub(super) struct DebugLog;

impl LoggingInterceptor for DebugLog {
    fn log(
        &self,
        info: &opendal::raw::ServiceInfo,
        operation: Operation,
        context: &[(&str, &str)],
        message: &str,
        err: Option<&opendal::Error>,
    ) {
        if !log::log_enabled!(target: "dup::io::storage", log::Level::Debug) {
            return;
        }
        let ctx: Vec<String> = context.iter().map(|(k, v)| format!("{k}={v}")).collect();
        match err {
            Some(e) => {
                log::debug!(target: "dup::io::storage", "{} {operation} {} {message}: {e}", info.scheme(), ctx.join(" "))
            }
            None => {
                log::debug!(target: "dup::io::storage", "{} {operation} {} {message}", info.scheme(), ctx.join(" "))
            }
        }
    }
}

/// Whether `e` is a refusal that asking again cannot change: opendal's
/// `PermissionDenied`, or an HTTP 401 or 403 from any service. opendal's
/// WebDAV service marks 403 as temporary (some servers answer it for a
/// locked file), which made `dup-ls --check` on a read-only path back off
/// for most of a minute; 5xx answers and connection errors stay temporary.
pub(super) fn is_refusal(e: &opendal::Error) -> bool {
    if e.kind() == ErrorKind::PermissionDenied {
        return true;
    }
    // The response's head, in the error's context (opendal's
    // `with_error_response_context`).
    let text = e.to_string();
    text.contains("Parts { status: 401,") || text.contains("Parts { status: 403,")
}

/// `e`, marked permanent (never retried) when it is a refusal.
pub(super) fn refusal_permanent(e: opendal::Error) -> opendal::Error {
    if is_refusal(&e) { e.set_permanent() } else { e }
}

/// Below [`RetryLayer`]: marks refusals permanent (see [`is_refusal`]), in
/// the operations and in the readers, writers, listers and deleters they
/// return, so that the retry layer gives up on them at once.
#[derive(Debug, Clone, Copy)]
pub(super) struct RefusalLayer;

impl raw::Layer for RefusalLayer {
    fn apply_service(&self, inner: raw::Servicer) -> raw::Servicer {
        Arc::new(RefusalService { inner })
    }
}

#[derive(Debug)]
pub(super) struct RefusalService {
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
pub(super) struct Refusals<T>(T);

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

pub(super) fn build(
    target: &Target,
    settings: &Settings,
    url: &str,
    io_timeout: Duration,
) -> opendal::Result<opendal::Operator> {
    let url = url.to_string();
    let retries = settings.retries;
    // Retries run on the storage runtime's threads: the job log of the
    // thread that opened the backend is taken along.
    let job = crate::joblog::current();
    let notify = move |ev: RetryEvent<'_>| {
        let m = format!(
            "{url}: {} failed ({}); retry {} of {retries} in {:.1} s",
            ev.op,
            cause(ev.err),
            ev.attempt,
            ev.retry_after.as_secs_f64()
        );
        log::warn!("{m}");
        if let Some(j) = &job {
            j.send(log::Level::Warn, m);
        }
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
        .layer(LoggingLayer::new(DebugLog))
        .with_context(http_context()?))
}

/// The operator's HTTP transport: reqwest over rustls with ring and the
/// system's certificate store, one client per storage, set on the operator
/// rather than installed process-wide.
fn http_context() -> opendal::Result<opendal::OperationContext> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let tls_error =
        |e: &dyn std::fmt::Display| opendal::Error::new(ErrorKind::ConfigInvalid, format!("setting up TLS: {e}"));
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map_err(|e| tls_error(&e))?
        .with_no_client_auth();
    let client = reqwest::Client::builder().tls_backend_preconfigured(tls).build().map_err(|e| tls_error(&e))?;
    let transport = opendal_http_transport_reqwest::ReqwestTransport::new(client);
    Ok(opendal::OperationContext::new().with_http_transport(opendal::HttpTransporter::new(transport)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    /// S3's smallest part while 10 000 of them hold the object, then larger
    /// whole MiB.
    #[test]
    fn part_sizes_fit_s3_limits() {
        assert_eq!(part_size(None), 5 << 20);
        assert_eq!(part_size(Some(200 << 20)), 5 << 20);
        assert_eq!(part_size(Some(MAX_PARTS * (5 << 20))), 5 << 20);
        for len in [MAX_PARTS * (5 << 20) + 1, 100 << 30, 5 << 40] {
            let p = part_size(Some(len)) as u64;
            assert!(len.div_ceil(p) <= MAX_PARTS && p.is_multiple_of(1 << 20) && p > 5 << 20, "{len}: {p}");
        }
    }

    #[test]
    fn settings() {
        let s = Settings::from_env(&|k: &str| (k == "DUP_TIMEOUT").then(|| "7".to_string())).unwrap();
        assert_eq!((s.retries, s.timeout), (5, Duration::from_secs(7)));
        assert_eq!(Settings::from_env(&|_: &str| Some("x".into())).unwrap_err().kind, Kind::Usage);
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
