//! A throwaway GnuPG home and what the tests ask gpg about its files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::run_with_stdin;

/// A GnuPG home in /tmp (short: the agent's socket may live in it); its
/// agent is stopped on drop.
pub struct GpgHome {
    dir: tempfile::TempDir,
}

impl GpgHome {
    /// An empty home (mode 0700), its directory named `prefix...`.
    pub fn new(prefix: &str) -> GpgHome {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp").unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        GpgHome { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `name` in the home's directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `gpg --batch --no-tty ARGS` on this home (LC_ALL=C), `stdin` fed to it.
    pub fn gpg_with_input(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", self.path()).env("LC_ALL", "C").args(["--batch", "--no-tty"]).args(args);
        run_with_stdin(&mut cmd, stdin)
    }

    /// `gpg --batch --no-tty ARGS` on this home, nothing on stdin.
    pub fn gpg(&self, args: &[&str]) -> Output {
        self.gpg_with_input(args, b"")
    }

    /// Like [`GpgHome::gpg`], failing the test unless gpg succeeds; its stdout.
    pub fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.gpg(args);
        assert!(out.status.success(), "gpg {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// Makes a key (`--quick-gen-key UID ALGO...`, `algo` split at spaces)
    /// with `passphrase` (may be empty); returns its fingerprint.
    pub fn gen_key(&self, uid: &str, algo: &str, passphrase: &str) -> String {
        let mut args = vec!["--pinentry-mode", "loopback", "--passphrase", passphrase, "--quick-gen-key", uid];
        args.extend(algo.split(' '));
        self.ok(&args);
        self.fingerprint(uid)
    }

    /// The fingerprint of the first key matching `uid`.
    pub fn fingerprint(&self, uid: &str) -> String {
        let list = String::from_utf8(self.ok(&["--with-colons", "--list-keys", uid])).unwrap();
        list.lines().find(|l| l.starts_with("fpr:")).unwrap().split(':').nth(9).unwrap().to_string()
    }

    /// `gpg --list-packets FILE`, with `passphrase` if given: the listing.
    pub fn list_packets(&self, file: &Path, passphrase: Option<&str>) -> String {
        let mut args = vec!["--pinentry-mode", "loopback"];
        if let Some(p) = passphrase {
            args.extend(["--passphrase", p]);
        }
        args.extend(["--list-packets", file.to_str().unwrap()]);
        String::from_utf8_lossy(&self.gpg(&args).stdout).into_owned()
    }

    /// `gpg --status-fd 2 -d FILE`, with `passphrase` if given.
    pub fn decrypt(&self, file: &Path, passphrase: Option<&str>) -> Output {
        let mut args = vec!["--pinentry-mode", "loopback", "--status-fd", "2"];
        if let Some(p) = passphrase {
            args.extend(["--passphrase", p]);
        }
        args.extend(["-d", file.to_str().unwrap()]);
        self.gpg(&args)
    }

    /// Stops the home's gpg-agent (and any other GnuPG daemon of it).
    pub fn kill_agent(&self) {
        let _ = Command::new("gpgconf").env("GNUPGHOME", self.path()).args(["--kill", "all"]).output();
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        self.kill_agent();
    }
}

/// The packet kinds of a `gpg --list-packets` listing, as gpg names them
/// (`symkey enc packet`, `encrypted data packet`, ...).
pub fn packet_kinds(listing: &str) -> Vec<String> {
    listing.lines().filter(|l| l.starts_with(':')).map(|l| l[1..].split(':').next().unwrap().to_string()).collect()
}
