//! dup-put: store archive files on a backend (manifest last), or delete them.

use argh::FromArgs;
use dup::cache::Cache;
use dup::cli::{self, OsArg, Status};
use dup::dupfmt::names::Naming;
use dup::error::Result;
use dup::storage::Storage;
use dup::{progress, put};

/// Read a stream of archive files (from dup-pack, or deletions selected by
/// dup-ls) on standard input and apply it to the backend at URL, in stream
/// order: files are written under a temporary name and renamed into place, a
/// manifest only once every volume it lists is stored, and the cache gets its
/// copy of each manifest and signature. If the stream breaks before its
/// manifest, the files this run stored for that set are removed again.
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
    let args: Args = cli::args("dup-put");
    cli::main("dup-put", || run(&args))
}

fn run(args: &Args) -> Result<Status> {
    let progress = progress::for_cli(args.progress, args.log_fd)?;
    let storage = Storage::open(&args.url)?;
    let cache = Cache::open(args.archive_dir.as_ref().map(|d| d.as_path()), args.name.as_deref(), &args.url)?;
    let _lock = cache.lock()?;
    let mut input = cli::stdin_records()?;
    let stats = put::run(&mut input, &storage, Some(&cache), &Naming::default(), progress.as_ref())?;
    log::info!("stored {} files ({} bytes), deleted {}", stats.stored, stats.bytes, stats.deleted);
    Ok(Status::Ok)
}
