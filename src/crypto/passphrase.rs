//! Passphrases: from a file descriptor, a file, the environment, or a
//! no-echo prompt on the terminal; never logged.

use std::io::{self, Read, Write};

use sequoia_openpgp as openpgp;

use openpgp::crypto::Password;

use super::{KeyEnv, KeyOptions, usage_io};
use crate::error::{Error, Result};

/// The main passphrase from `--passphrase-fd`, `--passphrase-file` or
/// `PASSPHRASE`, in that order.
pub(super) fn main_passphrase(opts: &KeyOptions, env: &KeyEnv) -> Result<Option<Password>> {
    if let Some(fd) = opts.passphrase_fd {
        return read_fd_line(fd).map(|p| Some(Password::from(p)));
    }
    if let Some(f) = &opts.passphrase_file {
        let data = std::fs::read(f).map_err(|e| usage_io(format!("reading the passphrase file {}", f.display()), e))?;
        let line = data.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        return Ok(Some(Password::from(line)));
    }
    Ok(env.passphrase.clone().map(Password::from))
}

/// Reads one line from a file descriptor, a byte at a time so nothing after
/// the newline is consumed. The descriptor stays open.
pub(super) fn read_fd_line(fd: i32) -> Result<Vec<u8>> {
    let mut line = Vec::new();
    loop {
        let mut b = 0u8;
        // SAFETY: reads at most one byte into a valid, owned byte.
        let n = unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::usage(format!("reading the passphrase from descriptor {fd}: {e}")));
        }
        if n == 0 || b == b'\n' {
            break;
        }
        line.push(b);
        if line.len() > 65536 {
            return Err(Error::usage(format!("descriptor {fd}: the passphrase line is too long")));
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(line)
}

/// Asks for a new passphrase (twice when `confirm`); None without a
/// terminal.
pub(super) fn ask_new(confirm: bool) -> Result<Option<Password>> {
    let Some(p) = prompt_tty("GnuPG passphrase for encryption: ") else { return Ok(None) };
    if p.map(|b| b.is_empty()) {
        return Err(Error::usage("an empty passphrase was entered"));
    }
    if confirm {
        let Some(again) = prompt_tty("Retype the passphrase to confirm: ") else { return Ok(None) };
        if p != again {
            return Err(Error::usage("the two passphrases differ"));
        }
    }
    Ok(Some(p))
}

/// Puts the terminal back as it was, also on early returns.
pub(super) struct EchoGuard {
    pub(super) fd: i32,
    pub(super) saved: libc::termios,
}

impl Drop for EchoGuard {
    fn drop(&mut self) {
        // SAFETY: restores attributes read from the same open descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSAFLUSH, &self.saved) };
    }
}

/// Sets `progress::PROMPTING` while it lives.
struct Asking;

impl Asking {
    fn start() -> Asking {
        crate::progress::PROMPTING.store(true, std::sync::atomic::Ordering::Relaxed);
        Asking
    }
}

impl Drop for Asking {
    fn drop(&mut self) {
        crate::progress::PROMPTING.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Reads a line from the controlling terminal with echo off. None when
/// there is no terminal.
pub(super) fn prompt_tty(prompt: &str) -> Option<Password> {
    use std::os::fd::AsRawFd;
    let mut tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").ok()?;
    let fd = tty.as_raw_fd();
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(fd) } != 1 {
        return None;
    }
    // SAFETY: termios is plain data; tcgetattr fills it from an open tty.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    let guard = (unsafe { libc::tcgetattr(fd, &mut saved) } == 0).then(|| {
        let mut t = saved;
        t.c_lflag &= !libc::ECHO;
        t.c_lflag |= libc::ECHONL;
        // SAFETY: sets attributes on the same open descriptor.
        unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &t) };
        EchoGuard { fd, saved }
    });
    // A progress bar draws nothing while the prompt waits (progress::PROMPTING).
    let _asking = Asking::start();
    if crate::progress::leave_bar_line() {
        tty.write_all(b"\n").ok()?;
    }
    tty.write_all(prompt.as_bytes()).ok()?;
    tty.flush().ok()?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match tty.read(&mut b) {
            Ok(0) => break,
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    drop(guard);
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Some(Password::from(line))
}
