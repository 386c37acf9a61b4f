//! What every binary shares: argument parsing, logging set-up, standard
//! output as a record stream, and turning the result into a message and an
//! exit code.

use std::ffi::OsString;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use std::sync::{Arc, OnceLock};

use crate::archive::Archive;
use crate::error::{Error, Kind, Result};
use crate::progress::{Bar, DupLog, Event, Fanout, JsonLines, Level, Meter, Progress};
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

/// Sets up logging (`RUST_LOG`, default: warnings, on stderr; and every
/// message to the log of [`output`]), runs the command, prints its error as
/// `NAME: message` (+ `hint:`) on stderr and exits with the code of its kind.
/// A run that failed after SIGINT or SIGTERM (see
/// [`crate::cancel::Cancel::on_signals`]) was interrupted, whatever its
/// error (the stages around it stopped too: a broken stream, a closed
/// output): exit 130, saying that the next run resumes.
pub fn main(name: &str, run: impl FnOnce() -> Result<Status>) -> ! {
    crate::io::limit_heap();
    crate::io::widen_pipes();
    init_logging(name);
    let code = match run() {
        Ok(Status::Ok) => 0,
        Ok(Status::Partial(msg)) => {
            if let Some(o) = OUTPUT.get() {
                o.log(Level::Warning, crate::progress::code::GENERIC, &msg);
            }
            stderr_line(&format!("{name}: {msg}"));
            Kind::Partial.exit_code()
        }
        Err(e) if crate::cancel::signalled() && e.kind != Kind::Interrupted => {
            log::debug!("after the signal: {}", e.message);
            report(name, &crate::cancel::interrupted())
        }
        Err(e) => report(name, &e),
    };
    if let Some(bar) = OUTPUT.get().and_then(|o| o.bar.as_ref()) {
        bar.end();
    }
    std::process::exit(code)
}

/// Prints an error the way every binary does (and logs it, duplicity's
/// code being the exit code) and returns its exit code.
pub fn report(name: &str, e: &Error) -> i32 {
    if e.kind != Kind::StdoutClosed {
        let mut text = e.message.clone();
        if let Some(h) = &e.hint {
            text.push_str("\nhint: ");
            text.push_str(h);
        }
        if let Some(o) = OUTPUT.get() {
            o.log(Level::Error, e.exit_code() as u32, &text);
        }
        for line in text.lines() {
            stderr_line(&format!("{name}: {line}"));
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

/// The options that say which archive and the keys to read it with, as
/// every reading binary takes them (argh has no flatten: each binary
/// declares the fields and fills this).
pub struct ArchiveArgs<'a> {
    pub url: &'a str,
    pub archive_dir: Option<&'a OsArg>,
    pub name: Option<&'a str>,
    pub keys: KeyArgs<'a>,
}

/// The key options of a reading binary.
#[derive(Default)]
pub struct KeyArgs<'a> {
    pub passphrase_file: Option<&'a OsArg>,
    pub passphrase_fd: Option<i32>,
    pub key_files: &'a [OsArg],
    pub sign_key: Option<&'a str>,
}

impl KeyArgs<'_> {
    /// The options as the crypto layer takes them.
    pub fn options(&self) -> crate::crypto::KeyOptions {
        crate::crypto::KeyOptions {
            passphrase_file: self.passphrase_file.map(|p| p.as_path().to_path_buf()),
            passphrase_fd: self.passphrase_fd,
            key_files: self.key_files.iter().map(|k| k.as_path().to_path_buf()).collect(),
            sign_key: self.sign_key.map(str::to_string),
            ..Default::default()
        }
    }

    /// Keys to read an encrypted archive with, from these options and the
    /// environment (`PASSPHRASE`, `GNUPGHOME`); secret keys are looked up in
    /// the key files, then the GnuPG keyring, when a file needs them.
    pub fn decrypt(&self) -> Result<crate::crypto::Keys> {
        use crate::crypto::{KeyEnv, Keys, Purpose};
        Keys::build(&self.options(), &KeyEnv::from_process(), Purpose::Decrypt)
    }
}

impl ArchiveArgs<'_> {
    /// The archive's local cache.
    pub fn cache(&self) -> Result<crate::io::cache::Cache> {
        crate::io::cache::Cache::open(self.archive_dir.map(OsArg::as_path), self.name, self.url)
    }

    /// The archive, with its cache and the keys to decrypt it.
    pub fn open(&self) -> Result<Archive> {
        let keys = self.keys.decrypt()?;
        Ok(Archive::open(self.url, self.archive_dir.map(OsArg::as_path), self.name)?.with_keys(Some(keys)))
    }
}

/// The progress and log options every binary takes: `--progress` (a bar on
/// a terminal, JSON events on stderr otherwise), `--log-fd N` and
/// `--log-file FILE` (every message and event, in duplicity's log-fd format
/// or with `--log-json` as JSON Lines).
#[derive(Default)]
pub struct OutputArgs<'a> {
    pub progress: bool,
    pub log_fd: Option<i32>,
    pub log_file: Option<&'a OsArg>,
    pub log_json: bool,
    /// `--log-level`: the least severe level the logs get (default info).
    pub log_level: Option<&'a str>,
}

/// Declares a binary's arguments (argh): its own fields, then the log
/// options every binary takes (argh has no flatten), with `output_args` to
/// hand them, and `--progress` when the binary has it, to [`output`].
#[macro_export]
macro_rules! args_with_log_options {
    // With the options that say which archive and its keys too (the reading
    // binaries), and `archive_args` to hand them to [`ArchiveArgs`].
    (archive_keys; $(#[$m:meta])* struct $name:ident { $($fields:tt)* }) => {
        $crate::args_with_log_options! {
            $(#[$m])*
            struct $name {
                $($fields)*
                /// directory of the local metadata caches (default $XDG_CACHE_HOME/dup; ~/.cache/duplicity shares duplicity's)
                #[argh(option, arg_name = "DIR")]
                archive_dir: Option<$crate::cli::OsArg>,
                /// name of this archive's cache (default: the MD5 of the URL, as duplicity)
                #[argh(option)]
                name: Option<String>,
                /// read the passphrase of an encrypted archive from this file's first line (else $PASSPHRASE)
                #[argh(option)]
                passphrase_file: Option<$crate::cli::OsArg>,
                /// read the passphrase from this file descriptor
                #[argh(option)]
                passphrase_fd: Option<i32>,
                /// a secret key file to decrypt with (armored or binary; repeatable; else the GnuPG keyring)
                #[argh(option)]
                key_file: Vec<$crate::cli::OsArg>,
                /// require what is decrypted to be signed by this key
                #[argh(option)]
                sign_key: Option<String>,
            }
        }

        impl $name {
            /// Which archive (at `url`) and the keys to read it with.
            fn archive_args<'a>(&'a self, url: &'a str) -> $crate::cli::ArchiveArgs<'a> {
                $crate::cli::ArchiveArgs {
                    url,
                    archive_dir: self.archive_dir.as_ref(),
                    name: self.name.as_deref(),
                    keys: $crate::cli::KeyArgs {
                        passphrase_file: self.passphrase_file.as_ref(),
                        passphrase_fd: self.passphrase_fd,
                        key_files: &self.key_file,
                        sign_key: self.sign_key.as_deref(),
                    },
                }
            }
        }
    };
    ($(#[$m:meta])* struct $name:ident { $($fields:tt)* }) => {
        $(#[$m])*
        struct $name {
            $($fields)*
            /// write every message and event to this file descriptor, in duplicity's log-fd format (or JSON Lines with --log-json)
            #[argh(option, arg_name = "N")]
            log_fd: Option<i32>,
            /// append every message and event to this file, as --log-fd
            #[argh(option, arg_name = "FILE")]
            log_file: Option<$crate::cli::OsArg>,
            /// write --log-fd and --log-file as JSON Lines (the events of dup-records(5))
            #[argh(switch)]
            log_json: bool,
            /// the least severe messages --log-fd and --log-file get: error, warning, notice, info (the default) or debug
            #[argh(option, arg_name = "LEVEL")]
            log_level: Option<String>,
        }

        impl $name {
            /// The log options, and `progress`, for `cli::output`.
            fn output_args(&self, progress: bool) -> $crate::cli::OutputArgs<'_> {
                $crate::cli::OutputArgs {
                    progress,
                    log_fd: self.log_fd,
                    log_file: self.log_file.as_ref(),
                    log_json: self.log_json,
                    log_level: self.log_level.as_deref(),
                }
            }
        }
    };
}

/// Where a binary's events and messages go; set once by [`output`].
struct Output {
    /// Progress events: the bar or JSON on stderr, and the logs.
    meter: Meter<Fanout>,
    /// The logs only (log records).
    logs: Vec<Arc<dyn Progress + Send + Sync>>,
    /// The least severe level the logs get.
    level: Level,
    bar: Option<Arc<Bar>>,
}

impl Output {
    fn log(&self, level: Level, code: u32, message: &str) {
        if level > self.level {
            return;
        }
        for l in &self.logs {
            l.event(Event::Log { level, code, message: message.to_string() });
        }
    }
}

static OUTPUT: OnceLock<Output> = OnceLock::new();
static NAME: OnceLock<String> = OnceLock::new();

/// The progress sink of this binary, from its options: the events go
/// through one [`Meter`] to a bar (`--progress` on a terminal) or JSON Lines
/// on stderr (`--progress` otherwise), and to the logs (`--log-fd`,
/// `--log-file`), which get every log message too. Warnings go to stderr as
/// well (unless RUST_LOG silences them).
pub fn output(args: &OutputArgs) -> Result<&'static dyn Progress> {
    use std::io::IsTerminal;
    use std::os::fd::FromRawFd;
    let level = match args.log_level {
        Some(l) => Level::parse(l).ok_or_else(|| {
            Error::usage(format!("--log-level {l}: not a level")).hint("give error, warning, notice, info or debug")
        })?,
        None => Level::Info,
    };
    let mut logs: Vec<Arc<dyn Progress + Send + Sync>> = Vec::new();
    let sink = |w: Box<dyn Write + Send + Sync>| -> Arc<dyn Progress + Send + Sync> {
        if args.log_json { Arc::new(JsonLines::new(w)) } else { Arc::new(DupLog::new(w)) }
    };
    if let Some(fd) = args.log_fd {
        // SAFETY: fcntl only inspects the descriptor.
        if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            return Err(Error::usage(format!("--log-fd {fd}: not an open file descriptor (3 or more)")));
        }
        // SAFETY: the descriptor is open (checked above) and handed to us for this purpose.
        logs.push(sink(Box::new(unsafe { std::fs::File::from_raw_fd(fd) })));
    }
    if let Some(path) = args.log_file {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path.as_path())
            .map_err(|e| Error::io(format!("opening the log file {}", path.as_path().display()), e))?;
        logs.push(sink(Box::new(f)));
    }
    let tty = std::io::stderr().is_terminal();
    let bar = (args.progress && tty).then(|| Arc::new(Bar::for_stderr()));
    let mut sinks: Vec<Box<dyn Progress + Send>> = Vec::new();
    if let Some(b) = &bar {
        let b = b.clone();
        sinks.push(Box::new(move |e: Event| b.event(e)));
    } else {
        if args.progress {
            sinks.push(Box::new(JsonLines::new(io::stderr())));
        }
        // Warnings as the log would have shown them.
        if STDERR_WARN.get().copied().unwrap_or(true) {
            sinks.push(Box::new(|e: Event| {
                if let Event::Warning { path, message } = e {
                    let name = NAME.get().map(String::as_str).unwrap_or("dup");
                    let p = path.map(|p| format!("{p}: ")).unwrap_or_default();
                    stderr_line(&format!("{name}: warn: {p}{message}"));
                }
            }));
        }
    }
    for l in &logs {
        let l = l.clone();
        sinks.push(Box::new(move |e: Event| {
            if e.level() <= level {
                l.event(e)
            }
        }));
    }
    let out = Output { meter: Meter::new(Fanout(sinks)), logs, level, bar };
    OUTPUT.set(out).map_err(|_| Error::other("the output is set up once"))?;
    Ok(&OUTPUT.get().expect("set above").meter)
}

/// Whether RUST_LOG shows warnings on stderr (set by [`main`]).
static STDERR_WARN: OnceLock<bool> = OnceLock::new();

/// A line on stderr, above the bar if one is drawn.
fn stderr_line(line: &str) {
    match OUTPUT.get().and_then(|o| o.bar.as_ref()) {
        Some(bar) => bar.message(line),
        None => eprintln!("{line}"),
    }
}

/// The `log` records of the program: on stderr as RUST_LOG says (default:
/// warnings), and in the logs of [`output`] as --log-level says (default:
/// info), whatever RUST_LOG.
struct Logger {
    env: env_logger::Logger,
    name: String,
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        self.env.enabled(m) || to_logs(m)
    }

    fn log(&self, r: &log::Record) {
        if self.env.matches(r) {
            stderr_line(&format!("{}: {}: {}", self.name, r.level().as_str().to_lowercase(), r.args()));
        }
        if to_logs(r.metadata())
            && let Some(o) = OUTPUT.get()
        {
            o.log(Level::from_log(r.level()), crate::progress::code::GENERIC, &r.args().to_string());
        }
    }

    fn flush(&self) {}
}

/// Whether a record goes to the logs: at their level, and from dup itself
/// unless it is a warning or an error (the libraries' chatter stays out).
fn to_logs(m: &log::Metadata) -> bool {
    let ours = m.target().starts_with("dup") || m.level() <= log::Level::Warn;
    ours && OUTPUT.get().is_some_and(|o| Level::from_log(m.level()) <= o.level)
}

fn init_logging(name: &str) {
    let _ = NAME.set(name.to_string());
    let env = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).build();
    let _ = STDERR_WARN.set(env.filter() >= log::LevelFilter::Warn);
    // Debug records reach the logs only when RUST_LOG asks for them.
    let max = env.filter().max(log::LevelFilter::Info);
    if log::set_boxed_logger(Box::new(Logger { env, name: name.to_string() })).is_ok() {
        log::set_max_level(max);
    }
}
