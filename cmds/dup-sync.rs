//! dup-sync: bring the local metadata cache into agreement with the backend.

use argh::FromArgs;
use dup::cli::{self, Status};
use dup::error::Result;
use dup::stage::sync;

dup::args_with_log_options! {
archive_keys;
/// Make the local metadata cache of the archive at URL agree with the
/// backend, which is authoritative: copy in the manifests and signatures the
/// cache lacks (manifests plain, signatures as .sigtar.gz, as duplicity keeps
/// them) and remove cache files the backend no longer has.
#[derive(FromArgs)]
struct Args {
    /// archive URL (file:///path)
    #[argh(positional)]
    url: String,
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
    let archive = args.archive_args(&args.url).open()?;
    let _lock = archive.cache.lock()?;
    let stats = sync::run(&archive, progress, &dup::cancel::Cancel::on_signals())?;
    for n in &stats.copied {
        log::info!("copied {n} to the cache");
    }
    for n in &stats.removed {
        log::info!("removed {n} from the cache");
    }
    Ok(Status::Ok)
}
