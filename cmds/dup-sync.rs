//! dup-sync: bring the local metadata cache into agreement with the backend.

use argh::FromArgs;
use dup::cli::{self, OsArg, Status};
use dup::error::Result;
use dup::stage::sync;

dup::args_with_log_options! {
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
    /// report progress: a bar on a terminal, JSON events on stderr otherwise
    #[argh(switch)]
    progress: bool,
}
}

fn main() {
    let args: Args = cli::args("dup-sync");
    cli::main("dup-sync", || run(&args))
}

fn run(args: &Args) -> Result<Status> {
    let progress = cli::output(&args.output_args(args.progress))?;
    let archive = cli::ArchiveArgs {
        url: &args.url,
        archive_dir: args.archive_dir.as_ref(),
        name: args.name.as_deref(),
        keys: cli::KeyArgs {
            passphrase_file: args.passphrase_file.as_ref(),
            passphrase_fd: args.passphrase_fd,
            key_files: &args.key_file,
            sign_key: args.sign_key.as_deref(),
        },
    }
    .open()?;
    let _lock = archive.cache.lock()?;
    let stats = sync::run(&archive, progress)?;
    for n in &stats.copied {
        log::info!("copied {n} to the cache");
    }
    for n in &stats.removed {
        log::info!("removed {n} from the cache");
    }
    Ok(Status::Ok)
}
