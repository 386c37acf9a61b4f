//! SFTP through the `ssh` client: the login directory relative paths start
//! from, and the ssh command line hints show.

use std::io::{self, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::layers::Settings;
use super::{CheckStatus, Target};

/// The ssh command line that reaches an SFTP target, for hints.
pub(super) fn ssh_command(t: &Target) -> String {
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
pub(super) fn ssh_host_port(t: &Target) -> (&str, Option<&str>) {
    let endpoint = t.get("endpoint").unwrap_or_default().trim_start_matches("ssh://");
    let (host, port) = match endpoint.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, Some(p)),
        _ => (endpoint, None),
    };
    (host.trim_start_matches('[').trim_end_matches(']'), port)
}

/// The login directory on an SFTP server (duplicity's relative paths start
/// there): asks the server's SFTP subsystem for the real path of `.`,
/// through the same `ssh` client opendal runs.
pub(super) fn sftp_home(t: &Target, settings: &Settings) -> std::result::Result<String, (CheckStatus, String)> {
    // REALPATH: type 16, id 1, the string ".".
    let p = sftp_request(t, settings, &sftp_packet(16, b"."))?;
    // NAME: type 104, id, count, then the first name as a string.
    if p.first() != Some(&104) || p.len() < 13 {
        return Err((CheckStatus::Failed, "the server did not resolve its login directory".into()));
    }
    let n = u32::from_be_bytes([p[9], p[10], p[11], p[12]]) as usize;
    match p.get(13..13 + n) {
        Some(name) if name.starts_with(b"/") => Ok(String::from_utf8_lossy(name).into_owned()),
        _ => Err((CheckStatus::Failed, "short SFTP reply".into())),
    }
}

/// Whether the SFTP server says `path` does not exist (SSH_FXP_STAT answered
/// with SSH_FX_NO_SUCH_FILE). Asked outside opendal, whose connections make
/// their root directory.
pub(super) fn sftp_missing(t: &Target, settings: &Settings, path: &str) -> bool {
    // STAT: type 17; the answer STATUS (101): id, then the code (2: no such file).
    matches!(sftp_request(t, settings, &sftp_packet(17, path.as_bytes())), Ok(p) if p.first() == Some(&101)
        && p.get(5..9) == Some(&2u32.to_be_bytes()[..]))
}

/// An SFTP request of `kind` with id 1 and one string argument.
fn sftp_packet(kind: u8, arg: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(13 + arg.len());
    p.extend_from_slice(&(9 + arg.len() as u32).to_be_bytes());
    p.push(kind);
    p.extend_from_slice(&1u32.to_be_bytes());
    p.extend_from_slice(&(arg.len() as u32).to_be_bytes());
    p.extend_from_slice(arg);
    p
}

/// Sends one request (after SSH_FXP_INIT) over `ssh -s sftp` and returns the
/// answer's packet. A failure says why: unreachable, login refused...
fn sftp_request(
    t: &Target,
    settings: &Settings,
    request: &[u8],
) -> std::result::Result<Vec<u8>, (CheckStatus, String)> {
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
    let request = request.to_vec();
    std::thread::spawn(move || {
        let _ = tx.send(sftp_talk(to, from, &request));
    });
    // ssh's ConnectTimeout covers connecting; this, a server that stalls.
    let talk = rx
        .recv_timeout(settings.timeout + Duration::from_secs(5))
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the SFTP server")));
    let _ = child.kill();
    let output = child.wait_with_output().map_err(failed)?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    match talk {
        Ok(Some(answer)) => Ok(answer),
        Ok(None) => {
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

/// Sends SSH_FXP_INIT and `request`, and returns the answer to the request;
/// None when ssh ended first (its stderr says why).
fn sftp_talk(mut to: impl Write, mut from: impl Read, request: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    // INIT: length 5, type 1, version 3.
    out.extend_from_slice(&5u32.to_be_bytes());
    out.push(1);
    out.extend_from_slice(&3u32.to_be_bytes());
    out.extend_from_slice(request);
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
    packet()
}
