//! dup-sync: bring the local metadata cache into agreement with the backend.

use argh::FromArgs;
use dup::cache::Cache;
use dup::cli::{self, OsArg, Status};
use dup::dupfmt::names::Naming;
use dup::error::Result;
use dup::storage::Storage;
use dup::{progress, sync};

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
    let storage = Storage::open(&args.url)?;
    let cache = Cache::open(args.archive_dir.as_ref().map(|d| d.as_path()), args.name.as_deref(), &args.url)?;
    let _lock = cache.lock()?;
    let stats = sync::run(&storage, &cache, &Naming::default(), progress.as_ref())?;
    for n in &stats.copied {
        log::info!("copied {n} to the cache");
    }
    for n in &stats.removed {
        log::info!("removed {n} from the cache");
    }
    Ok(Status::Ok)
}
