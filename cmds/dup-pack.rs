//! dup-pack: cut a change stream into difftar volumes, the signature tar and the manifest.

use argh::FromArgs;
use dup::cli::{self, OsArg, Status};
use dup::dupfmt::names::Naming;
use dup::dupfmt::time;
use dup::error::{Error, Result};
use dup::record::StreamKind;
use dup::{pack, progress};

/// Read a change stream (from dup-delta) on standard input and write
/// duplicity's archive files as file records: the difftar volumes as each is
/// full, then the signature tar, then the manifest. A stream whose header
/// names a basis time becomes an incremental set from that time, otherwise a
/// full set.
#[derive(FromArgs)]
struct Args {
    /// volume size in MiB (default 200)
    #[argh(option, default = "200")]
    volsize: u64,
    /// store volumes and signatures without gzip
    #[argh(switch)]
    no_compression: bool,
    /// time of this backup, in duplicity's time syntax (default: now)
    #[argh(option)]
    time: Option<String>,
    /// encrypt with a passphrase ($PASSPHRASE, --passphrase-file or --passphrase-fd; asked on a terminal)
    #[argh(switch)]
    encrypt: bool,
    /// encrypt to this public key (key ID, fingerprint or email in the GnuPG keyring, or a key file; repeatable)
    #[argh(option)]
    encrypt_key: Vec<String>,
    /// encrypt to this public key without writing its key ID (repeatable)
    #[argh(option)]
    hidden_encrypt_key: Vec<String>,
    /// sign with this secret key ($SIGN_PASSPHRASE unlocks it)
    #[argh(option)]
    sign_key: Option<String>,
    /// a key file to find keys in before the GnuPG keyring (repeatable)
    #[argh(option)]
    key_file: Vec<OsArg>,
    /// read the passphrase from this file's first line
    #[argh(option)]
    passphrase_file: Option<OsArg>,
    /// read the passphrase from this file descriptor
    #[argh(option)]
    passphrase_fd: Option<i32>,
    /// host name written in the manifest (default: this machine's)
    #[argh(option)]
    hostname: Option<String>,
    /// write JSON Lines instead of CBOR
    #[argh(switch)]
    json: bool,
    /// report progress (a bar on a terminal, JSON events on stderr otherwise)
    #[argh(switch)]
    progress: bool,
    /// write progress events as JSON Lines to this file descriptor
    #[argh(option)]
    log_fd: Option<i32>,
}

fn main() {
    let args: Args = cli::args("dup-pack");
    cli::main("dup-pack", || run(&args))
}

fn run(args: &Args) -> Result<Status> {
    if args.volsize == 0 {
        return Err(Error::usage("--volsize must be at least 1 (MiB)"));
    }
    let progress = progress::for_cli(args.progress, args.log_fd)?;
    let t = args.time.as_deref().map(|s| time::parse_time(s, time::now())).transpose()?;
    let opts = pack::Options {
        volsize: args.volsize.saturating_mul(1 << 20),
        compress: !args.no_compression,
        time: t,
        naming: Naming::default(),
        hostname: args.hostname.clone().unwrap_or_else(pack::hostname),
        localdir: None,
        keys: encryption_keys(args)?,
    };
    let mut input = cli::stdin_records()?;
    let out = cli::stdout_records(args.json, StreamKind::Files, "dup-pack")?;
    let (_, stats) = pack::run(&mut input, out, &opts, progress.as_ref())?;
    log::info!("{} volumes, {} bytes", stats.volumes, stats.volume_bytes);
    Ok(Status::Ok)
}

/// The keys to encrypt with, when any encryption option is given.
fn encryption_keys(args: &Args) -> Result<Option<dup::crypto::Keys>> {
    use dup::crypto::{KeyEnv, KeyOptions, Keys, Purpose};
    let public = !args.encrypt_key.is_empty() || !args.hidden_encrypt_key.is_empty();
    if !(args.encrypt || public || args.sign_key.is_some()) {
        return Ok(None);
    }
    let opts = KeyOptions {
        encrypt_keys: args.encrypt_key.clone(),
        hidden_encrypt_keys: args.hidden_encrypt_key.clone(),
        sign_key: args.sign_key.clone(),
        key_files: args.key_file.iter().map(|k| k.as_path().to_path_buf()).collect(),
        passphrase_file: args.passphrase_file.as_ref().map(|p| p.as_path().to_path_buf()),
        passphrase_fd: args.passphrase_fd,
        ..KeyOptions::default()
    };
    Ok(Some(Keys::build(&opts, &KeyEnv::from_process(), Purpose::Encrypt)?))
}
