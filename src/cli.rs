//! What every binary shares: argument parsing, logging set-up, standard
//! output as a record stream, and turning the result into a message and an
//! exit code.

use std::ffi::OsString;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::error::{Error, Kind, Result};
use crate::record::{Encoding, StreamKind, Writer};

/// How a run ended when it did not fail.
pub enum Status {
    Ok,
    /// Done, but some inputs were skipped (exit code 3); the message says how many.
    Partial(String),
}

/// Marks a command-line argument that is not UTF-8 (argh takes `&str`): such
/// an argument reaches argh as this marker plus its `\xNN`-escaped form, and
/// [`OsArg`] turns it back into the exact bytes.
const NON_UTF8_MARK: char = '\u{E000}';

/// A command-line value that may be any bytes (paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsArg(pub Vec<u8>);

impl argh::FromArgValue for OsArg {
    fn from_arg_value(value: &str) -> std::result::Result<Self, String> {
        match value.strip_prefix(NON_UTF8_MARK) {
            Some(esc) => crate::record::bytes_unescape(esc).map(OsArg),
            None => Ok(OsArg(value.as_bytes().to_vec())),
        }
    }
}

impl OsArg {
    pub fn as_path(&self) -> &std::path::Path {
        std::path::Path::new(std::ffi::OsStr::from_bytes(&self.0))
    }
}

/// Parses the command line into `T`. `--help` prints help and exits 0; a
/// usage error prints `NAME: message` and exits 2.
pub fn args<T: argh::FromArgs>(name: &str) -> T {
    let raw: Vec<OsString> = std::env::args_os().skip(1).collect();
    let strs: Vec<String> = raw
        .into_iter()
        .map(|a| match a.into_string() {
            Ok(s) => s,
            Err(os) => format!("{NON_UTF8_MARK}{}", crate::record::bytes_escape(&os.into_vec(), true)),
        })
        .collect();
    let refs: Vec<&str> = strs.iter().map(String::as_str).collect();
    match T::from_args(&[name], &refs) {
        Ok(t) => t,
        Err(early) => {
            if early.status.is_ok() {
                print!("{}", early.output);
                std::process::exit(0);
            }
            eprint!("{name}: {}", early.output);
            eprintln!("{name}: try '{name} --help'");
            std::process::exit(Kind::Usage.exit_code());
        }
    }
}

/// Sets up logging (`RUST_LOG`, default: warnings), runs the command, prints
/// its error as `NAME: message` (+ `hint:`) on stderr and exits with the
/// code of its kind.
pub fn main(name: &str, run: impl FnOnce() -> Result<Status>) -> ! {
    crate::io::limit_heap();
    let prefix = name.to_string();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(move |f, rec| writeln!(f, "{prefix}: {}: {}", rec.level().as_str().to_lowercase(), rec.args()))
        .init();
    let code = match run() {
        Ok(Status::Ok) => 0,
        Ok(Status::Partial(msg)) => {
            eprintln!("{name}: {msg}");
            Kind::Partial.exit_code()
        }
        Err(e) => report(name, &e),
    };
    std::process::exit(code)
}

/// Prints an error the way every binary does and returns its exit code.
pub fn report(name: &str, e: &Error) -> i32 {
    if e.kind != Kind::StdoutClosed {
        eprintln!("{name}: {}", e.message);
        if let Some(h) = &e.hint {
            eprintln!("{name}: hint: {h}");
        }
    }
    e.exit_code()
}

/// Buffered standard output.
pub fn stdout() -> BufWriter<io::Stdout> {
    BufWriter::with_capacity(256 * 1024, io::stdout())
}

/// Standard output as a record stream (JSON with `json` or on a terminal).
pub fn stdout_records(json: bool, stream: StreamKind, producer: &str) -> Result<Writer<BufWriter<io::Stdout>>> {
    Writer::new(stdout(), Encoding::for_stdout(json), stream, producer)
}

/// Standard input as a record stream.
pub fn stdin_records() -> Result<crate::record::Reader<io::BufReader<io::Stdin>>> {
    crate::record::Reader::new(io::BufReader::with_capacity(256 * 1024, io::stdin()), "standard input")
}

/// Keys to read an encrypted archive with, from the decryption options every
/// reading binary takes and the environment (`PASSPHRASE`, `GNUPGHOME`);
/// secret keys are looked up in the key files, then the GnuPG keyring, when
/// a file needs them.
pub fn decrypt_keys(
    passphrase_file: Option<&OsArg>,
    passphrase_fd: Option<i32>,
    key_files: &[OsArg],
    sign_key: Option<&str>,
) -> Result<crate::crypto::Keys> {
    use crate::crypto::{KeyEnv, KeyOptions, Keys, Purpose};
    let opts = KeyOptions {
        passphrase_file: passphrase_file.map(|p| p.as_path().to_path_buf()),
        passphrase_fd,
        key_files: key_files.iter().map(|k| k.as_path().to_path_buf()).collect(),
        sign_key: sign_key.map(str::to_string),
        ..KeyOptions::default()
    };
    Keys::build(&opts, &KeyEnv::from_process(), Purpose::Decrypt)
}
