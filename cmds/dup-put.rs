//! dup-put: store archive files on a backend (manifest last), or delete them.

use argh::FromArgs;
use dup::cli::{self, OsArg, Status};
use dup::dupfmt::names::Naming;
use dup::error::{Error, Result};
use dup::io::storage::Storage;
use dup::progress::{Event, Summary};
use dup::stage::put;

dup::args_with_log_options! {
/// Read a stream of archive files (from dup-pack, or deletions selected by
/// dup-ls) on standard input and apply it to the backend at URL: volumes are
/// uploaded several at a time, a manifest strictly last (once every volume
/// it lists is stored with the SHA1 it lists), and the cache gets its copy
/// of each manifest and signature. A file an interrupted earlier run already
/// stored (same name, size and SHA1) is not sent again. If the stream breaks
/// before its manifest, the files this run stored for that set are removed
/// again; if the backend fails, they are kept for the next run to resume.
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
    /// uploads in flight at once (default 4)
    #[argh(option, default = "put::DEFAULT_CONCURRENCY")]
    concurrency: usize,
    /// report progress: a bar on a terminal, JSON events on stderr otherwise
    #[argh(switch)]
    progress: bool,
}
}

const MAX_CONCURRENCY: usize = 64;

fn main() {
    let args: Args = cli::args("dup-put");
    cli::main("dup-put", || run(&args))
}

fn run(args: &Args) -> Result<Status> {
    if args.concurrency == 0 || args.concurrency > MAX_CONCURRENCY {
        return Err(Error::usage(format!("--concurrency must be between 1 and {MAX_CONCURRENCY}")));
    }
    let cancel = dup::cancel::Cancel::on_signals();
    let progress = cli::output(&args.output_args(args.progress))?;
    let mut storage = Storage::open(&args.url)?;
    // About four S3 parts in flight in all, each buffered in memory.
    storage.set_part_concurrency(4 / args.concurrency);
    let which = cli::ArchiveArgs {
        url: &args.url,
        archive_dir: args.archive_dir.as_ref(),
        name: args.name.as_deref(),
        keys: cli::KeyArgs::default(),
    };
    let cache = which.cache()?;
    let _lock = cache.lock()?;
    let mut input = cli::stdin_records()?;
    let opts = put::Options { concurrency: args.concurrency, cancel };
    let started = std::time::Instant::now();
    let stats = put::run_with(&mut input, &storage, Some(&cache), &Naming::default(), progress, &opts)?;
    log::info!(
        "stored {} files ({} bytes), skipped {} already stored ({} bytes), deleted {}",
        stats.stored,
        stats.bytes,
        stats.skipped,
        stats.skipped_bytes,
        stats.deleted
    );
    progress.event(Event::Summary(Summary {
        stage: "put".into(),
        bytes_stored: Some(stats.bytes),
        elapsed_seconds: started.elapsed().as_secs(),
        ..Summary::default()
    }));
    Ok(Status::Ok)
}
