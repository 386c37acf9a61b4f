//! dup-sync: bring the local metadata cache into agreement with the backend.

use argh::FromArgs;
use dup::archive::Archive;
use dup::cli::{self, OsArg, Status};
use dup::error::Result;
use dup::progress;
use dup::stage::sync;

/// Make the local metadata cache of the archive at URL agree with the
/// backend, which is authoritative: copy in the manifests and signatures the
/// cache lacks (manifests plain, signatures as .sigtar.gz, as duplicity keeps
/// them) and remove cache files the backend no longer has.
#[derive(FromArgs)]
struct Args {
    /// archive URL (file:///path)
    #[argh(positional)]
    url: String,
    /// directory of the local metadata caches (default $XDG_CACHE_HOME/dup; ~/.cache/duplicity shares duplicity's)
    #[argh(option)]
    archive_dir: Option<OsArg>,
    /// name of this archive's cache (default: the MD5 of the URL, as duplicity)
    #[argh(option)]
    name: Option<String>,
    /// read the passphrase of an encrypted archive from this file's first line (else $PASSPHRASE)
    #[argh(option)]
    passphrase_file: Option<OsArg>,
    /// read the passphrase from this file descriptor
    #[argh(option)]
    passphrase_fd: Option<i32>,
    /// a secret key file to decrypt with (armored or binary; repeatable; else the GnuPG keyring)
    #[argh(option)]
    key_file: Vec<OsArg>,
    /// require signatures by this key on what is decrypted
    #[argh(option)]
    sign_key: Option<String>,
    /// report progress (a bar on a terminal, JSON events on stderr otherwise)
    #[argh(switch)]
    progress: bool,
    /// write progress events as JSON Lines to this file descriptor
    #[argh(option)]
    log_fd: Option<i32>,
}

fn main() {
    let args: Args = cli::args("dup-sync");
    cli::main("dup-sync", || run(&args))
}

fn run(args: &Args) -> Result<Status> {
    let progress = progress::for_cli(args.progress, args.log_fd)?;
    let keys =
        cli::decrypt_keys(args.passphrase_file.as_ref(), args.passphrase_fd, &args.key_file, args.sign_key.as_deref())?;
    let archive = Archive::open(&args.url, args.archive_dir.as_ref().map(|d| d.as_path()), args.name.as_deref())?
        .with_keys(Some(keys));
    let _lock = archive.cache.lock()?;
    let stats = sync::run(&archive, progress.as_ref())?;
    for n in &stats.copied {
        log::info!("copied {n} to the cache");
    }
    for n in &stats.removed {
        log::info!("removed {n} from the cache");
    }
    Ok(Status::Ok)
}
