//! The user's GnuPG keyring, read by running `gpg --export` and
//! `--export-secret-keys` (never by parsing the keybox).

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use sequoia_openpgp as openpgp;

use openpgp::cert::{Cert, CertParser};
use openpgp::crypto::Password;
use openpgp::parse::Parse;

use super::KeyEnv;
use crate::error::{Error, Result};

pub(super) struct Gpg {
    pub(super) binary: PathBuf,
    pub(super) home: Option<PathBuf>,
}

/// What `gpg --export-secret-keys` gave, and whether it skipped keys for
/// want of a (right) passphrase.
pub(super) struct Export {
    pub(super) certs: Vec<Cert>,
    pub(super) need: bool,
    pub(super) bad: bool,
}

impl Gpg {
    pub(super) fn new(binary: Option<PathBuf>, env: &KeyEnv) -> Gpg {
        let home = env.gnupghome.clone().or_else(|| env.home.as_ref().map(|h| h.join(".gnupg")));
        Gpg { binary: binary.unwrap_or_else(|| "gpg".into()), home }
    }

    pub(super) fn home_label(&self) -> String {
        match &self.home {
            Some(h) => format!("in {}", h.display()),
            None => "(default GNUPGHOME)".into(),
        }
    }

    /// Runs gpg with status lines on stderr; the passphrase, if any, goes
    /// through a pipe (`--passphrase-fd 0`), never the command line.
    pub(super) fn run(&self, args: &[&str], passphrase: Option<&Password>) -> Result<(Vec<u8>, String)> {
        let mut cmd = Command::new(&self.binary);
        if let Some(h) = &self.home {
            cmd.env("GNUPGHOME", h);
        }
        cmd.env("LC_ALL", "C").env("LANGUAGE", "C");
        cmd.args(["--batch", "--no-tty", "--status-fd", "2", "--pinentry-mode", "loopback", "--passphrase-fd", "0"]);
        cmd.args(args);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            let what = format!("running {} to read the GnuPG keyring", self.binary.display());
            if e.kind() == io::ErrorKind::NotFound {
                Error::usage(format!("{what}: not found")).hint("install GnuPG, or give the keys as key files")
            } else {
                Error::io(what, e)
            }
        })?;
        let mut stdin = child.stdin.take();
        let mut input = passphrase.map(|p| p.map(|b| b.to_vec())).unwrap_or_default();
        input.push(b'\n');
        let writer = std::thread::spawn(move || {
            if let Some(s) = stdin.as_mut() {
                let _ = s.write_all(&input);
            }
            // Wipe our copy of the passphrase.
            input.iter_mut().for_each(|b| *b = 0);
        });
        let out = child.wait_with_output().map_err(|e| Error::io(format!("running {}", self.binary.display()), e))?;
        let _ = writer.join();
        Ok((out.stdout, String::from_utf8_lossy(&out.stderr).into_owned()))
    }

    pub(super) fn export_public(&self, spec: &str) -> Result<Vec<Cert>> {
        let spec = gpg_spec(spec);
        let (out, _) = self.run(&["--export", "--", &spec], None)?;
        parse_certs(&out)
    }

    pub(super) fn export_secret(&self, spec: Option<&str>, passphrase: Option<&Password>) -> Result<Export> {
        let spec = spec.map(gpg_spec);
        let mut args = vec!["--export-secret-keys"];
        if let Some(s) = &spec {
            args.extend(["--", s.as_str()]);
        }
        let (out, status) = self.run(&args, passphrase)?;
        let mut ex =
            Export { certs: if out.is_empty() { Vec::new() } else { parse_certs(&out)? }, need: false, bad: false };
        // "[GNUPG:] ERROR export_keys.secret CODE": libgpg-error codes
        // 11 (bad passphrase) and 177 (no passphrase).
        for line in status.lines() {
            let Some(rest) = line.strip_prefix("[GNUPG:] ERROR export_keys.secret ") else { continue };
            match rest.trim().parse::<u32>().map(|c| c & 0xffff) {
                Ok(11) => ex.bad = true,
                Ok(177) => ex.need = true,
                _ => {}
            }
        }
        Ok(ex)
    }
}

/// An email alone matches exactly (gpg would match it as a substring).
pub(super) fn gpg_spec(spec: &str) -> String {
    let s = spec.trim();
    if s.contains('@') && !s.contains('<') && !s.contains(' ') && !s.starts_with('=') {
        format!("<{s}>")
    } else {
        s.to_string()
    }
}

pub(super) fn parse_certs(data: &[u8]) -> Result<Vec<Cert>> {
    let mut out = Vec::new();
    for c in CertParser::from_bytes(data).map_err(|e| Error::other(format!("reading keys from gpg: {e}")))? {
        out.push(c.map_err(|e| Error::other(format!("reading keys from gpg: {e}")))?);
    }
    Ok(out)
}
