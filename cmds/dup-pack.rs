//! dup-pack: cut a change stream into difftar volumes, the signature tar and the manifest.

use argh::FromArgs;
use dup::cli::{self, OsArg, Status};
use dup::dupfmt::names::Naming;
use dup::dupfmt::time;
use dup::error::{Error, Kind, Result};
use dup::io::storage::Storage;
use dup::record::StreamKind;
use dup::stage::pack;

dup::args_with_log_options! {
/// Read a change stream (from dup-delta) on standard input and write
/// duplicity's archive files as file records: the difftar volumes as each is
/// full, then the signature tar, then the manifest. A stream whose header
/// names a basis time becomes an incremental set from that time, otherwise a
/// full set. As with duplicity, the archive is encrypted by default:
/// symmetrically with $PASSPHRASE (or --passphrase-file, --passphrase-fd;
/// asked on a terminal), or to --encrypt-key; --no-encryption writes a plain
/// (gzip) archive.
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
    /// encrypt with a passphrase ($PASSPHRASE, --passphrase-file or --passphrase-fd; asked on a terminal); the default when no --encrypt-key is given
    #[argh(switch)]
    encrypt: bool,
    /// write a plain archive (gzip or --no-compression), not encrypted
    #[argh(switch)]
    no_encryption: bool,
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
    /// deflate level, 0-9, of gzip and of the compression inside OpenPGP (default 5)
    #[argh(option, default = "pack::DEFAULT_LEVEL")]
    compress_level: u32,
    /// continue the unfinished set an interrupted run of this backup left at this URL (its time; volumes packed again to the same content are not sent again), per dup-put's journal in the cache
    #[argh(option)]
    resume: Option<String>,
    /// directory of the local metadata caches (default $XDG_CACHE_HOME/dup), for --resume
    #[argh(option)]
    archive_dir: Option<OsArg>,
    /// name of this archive's cache (default: the MD5 of the URL, as duplicity), for --resume
    #[argh(option)]
    name: Option<String>,
    /// for an incremental, do not check the passphrase against the one dup-sig opened the chain with
    #[argh(switch)]
    no_check_passphrase: bool,
    /// host name written in the manifest (default: this machine's)
    #[argh(option)]
    hostname: Option<String>,
    /// write JSON Lines instead of CBOR
    #[argh(switch)]
    json: bool,
    /// report progress: a bar on a terminal, JSON events on stderr otherwise
    #[argh(switch)]
    progress: bool,
}
}

fn main() {
    let args: Args = cli::args("dup-pack");
    cli::main("dup-pack", || run(&args))
}

fn run(args: &Args) -> Result<Status> {
    if args.compress_level > 9 {
        return Err(Error::usage(format!("--compress-level {} is not a level (0-9)", args.compress_level)));
    }
    if args.volsize == 0 {
        return Err(Error::usage("--volsize must be at least 1 (MiB)"));
    }
    let progress = cli::output(&args.output_args(args.progress))?;
    let t = args.time.as_deref().map(|s| time::parse_time(s, time::now())).transpose()?;
    // The stream's header says whether this is a full (a new chain: a
    // passphrase asked on the terminal is asked twice) or an incremental.
    let mut input = cli::stdin_records()?;
    let new_chain = input.head().basis_time.is_none();
    let opts = pack::Options {
        volsize: args.volsize.saturating_mul(1 << 20),
        compress: !args.no_compression,
        compress_level: args.compress_level,
        time: t,
        naming: Naming::default(),
        hostname: args.hostname.clone().unwrap_or_else(pack::hostname),
        localdir: None,
        keys: encryption_keys(args, new_chain)?,
        resume: match &args.resume {
            Some(url) => {
                let which = cli::ArchiveArgs {
                    url,
                    archive_dir: args.archive_dir.as_ref(),
                    name: args.name.as_deref(),
                    keys: cli::KeyArgs::default(),
                };
                let cache = which.cache()?;
                Some(pack::Resume::load(&Storage::open(url)?, &cache)?)
            }
            None => None,
        },
        check_passphrase: !args.no_check_passphrase,
        cancel: dup::cancel::Cancel::on_signals(),
    };
    let out = cli::stdout_records(args.json, StreamKind::Files, "dup-pack")?;
    let (_, stats) = pack::run(&mut input, out, &opts, progress)?;
    log::info!("{} volumes, {} bytes", stats.volumes, stats.volume_bytes);
    Ok(Status::Ok)
}

/// The keys to encrypt with: symmetric with a passphrase unless keys are
/// named (the default, as duplicity's), none with --no-encryption.
fn encryption_keys(args: &Args, new_chain: bool) -> Result<Option<dup::crypto::Keys>> {
    use dup::crypto::{KeyEnv, KeyOptions, Keys, Purpose};
    let given: Vec<&str> = [
        (args.encrypt, "--encrypt"),
        (!args.encrypt_key.is_empty(), "--encrypt-key"),
        (!args.hidden_encrypt_key.is_empty(), "--hidden-encrypt-key"),
        (args.sign_key.is_some(), "--sign-key"),
        (!args.key_file.is_empty(), "--key-file"),
        (args.passphrase_file.is_some(), "--passphrase-file"),
        (args.passphrase_fd.is_some(), "--passphrase-fd"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if args.no_encryption {
        if !given.is_empty() {
            return Err(Error::usage(format!("--no-encryption contradicts {}", given.join(", ")))
                .hint("leave out --no-encryption for an encrypted archive, or the other options for a plain one"));
        }
        return Ok(None);
    }
    let opts = KeyOptions {
        encrypt_keys: args.encrypt_key.clone(),
        hidden_encrypt_keys: args.hidden_encrypt_key.clone(),
        sign_key: args.sign_key.clone(),
        key_files: args.key_file.iter().map(|k| k.as_path().to_path_buf()).collect(),
        passphrase_file: args.passphrase_file.as_ref().map(|p| p.as_path().to_path_buf()),
        passphrase_fd: args.passphrase_fd,
        confirm: new_chain,
        ..KeyOptions::default()
    };
    let env = KeyEnv::from_process();
    let implicit = given.is_empty();
    Keys::build(&opts, &env, Purpose::Encrypt).map(Some).map_err(|e| {
        // With no option at all, say that encryption is the default and how
        // to get a plain archive instead.
        let no_passphrase = e.kind == Kind::Usage && e.message.starts_with("encryption needs a passphrase");
        if !(implicit && no_passphrase) {
            return e;
        }
        Error::usage("the archive is encrypted by default, and no passphrase was given (nor a terminal to ask on)").hint(
            "set PASSPHRASE (or use --passphrase-file/--passphrase-fd), or pass --no-encryption for a plain archive",
        )
    })
}
